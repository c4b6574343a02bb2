//! The role × route matrix over every management route: each console role (scoped to the
//! app `demo`) and an owner, against what each route must allow; and a user of one app
//! never learns another exists (404).

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::console_auth::{admin_login, login, Session};
use crate::harness::{start, TestServer};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Role {
    Viewer,
    Operator,
    Admin,
    Owner,
}

const ROLES: [Role; 4] = [Role::Viewer, Role::Operator, Role::Admin, Role::Owner];

/// (method, path, body, least role) — written out here, independent of the server's table.
fn matrix() -> Vec<(Method, &'static str, Option<Value>, Role)> {
    let push = json!({"to": {"user": "nobody"}, "notification": {"title": "matrix"}});
    vec![
        (Method::GET, "/v1/apps", None, Role::Viewer),
        (
            Method::POST,
            "/v1/apps",
            Some(json!({"name": "m-app"})),
            Role::Owner,
        ),
        (Method::GET, "/v1/apps/demo", None, Role::Viewer),
        (
            Method::PATCH,
            "/v1/apps/demo",
            Some(json!({"limits": {}})),
            Role::Admin,
        ),
        (Method::GET, "/v1/apps/demo/keys", None, Role::Viewer),
        (
            Method::POST,
            "/v1/apps/demo/keys",
            Some(json!({"scopes": ["read"]})),
            Role::Admin,
        ),
        (
            Method::DELETE,
            "/v1/apps/demo/keys/key_nonexistent0",
            None,
            Role::Admin,
        ),
        (Method::POST, "/v1/apps/demo/client-key", None, Role::Admin),
        (
            Method::POST,
            "/v1/apps/demo/signing-secret",
            None,
            Role::Admin,
        ),
        (Method::GET, "/v1/apps/demo/messages", None, Role::Viewer),
        (
            Method::POST,
            "/v1/apps/demo/messages",
            Some(push),
            Role::Operator,
        ),
        (
            Method::GET,
            "/v1/apps/demo/messages/msg_000000000000000000000",
            None,
            Role::Viewer,
        ),
        (
            Method::DELETE,
            "/v1/apps/demo/messages/msg_000000000000000000000",
            None,
            Role::Operator,
        ),
        (
            Method::GET,
            "/v1/apps/demo/devices?user=alice",
            None,
            Role::Viewer,
        ),
        (Method::GET, "/v1/apps/demo/stats", None, Role::Viewer),
        (Method::GET, "/v1/admin/backup", None, Role::Owner),
        (Method::GET, "/v1/admin/audit", None, Role::Admin),
        (Method::GET, "/v1/admin/me", None, Role::Viewer),
        (Method::GET, "/v1/admin/overview", None, Role::Viewer),
        (Method::GET, "/v1/admin/settings", None, Role::Admin),
        (Method::GET, "/v1/admin/ca.crt", None, Role::Viewer),
        (Method::GET, "/v1/admin/users", None, Role::Owner),
        (
            Method::POST,
            "/v1/admin/users",
            Some(
                json!({"user": "m-new", "password": "matrix password", "role": "viewer", "apps": ["demo"]}),
            ),
            Role::Owner,
        ),
        (
            Method::PATCH,
            "/v1/admin/users/viewer1",
            Some(json!({"apps": ["demo"]})),
            Role::Owner,
        ),
        (Method::DELETE, "/v1/admin/users/ghost", None, Role::Owner),
        // Last: it deletes the app the scoped users work in.
        (Method::DELETE, "/v1/apps/demo", None, Role::Owner),
    ]
}

async fn as_role(
    server: &TestServer,
    s: &Session,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> StatusCode {
    let (status, _, _) = server
        .request_bytes(
            method,
            path,
            &[
                ("cookie", &s.cookie),
                ("origin", &s.origin),
                ("x-csrf-token", &s.csrf),
            ],
            body,
        )
        .await;
    status
}

async fn sessions(server: &TestServer) -> Vec<(Role, Session)> {
    let owner = admin_login(server).await;
    for (name, role) in [
        ("viewer1", "viewer"),
        ("operator1", "operator"),
        ("admin1", "admin"),
        ("owner2", "owner"),
    ] {
        let (status, body) = owner
            .call(
                server,
                Method::POST,
                "/v1/admin/users",
                Some(json!({"user": name, "password": "a long password", "role": role, "apps": ["demo"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body:?}");
    }
    let mut out = Vec::new();
    for (name, role) in [
        ("viewer1", Role::Viewer),
        ("operator1", Role::Operator),
        ("admin1", Role::Admin),
        ("owner2", Role::Owner),
    ] {
        out.push((role, login(server, name, "a long password").await));
    }
    out
}

#[tokio::test]
async fn every_role_gets_exactly_the_management_routes_it_should() {
    let server = start().await;
    let sessions = sessions(&server).await;
    let mut failures = Vec::new();
    for (method, path, body, least) in matrix() {
        // Lower roles first, so a route that changes state is refused before it is allowed.
        for role in ROLES {
            let s = &sessions
                .iter()
                .find(|(r, _)| *r == role)
                .expect("session")
                .1;
            let status = as_role(&server, s, method.clone(), path, body.clone()).await;
            let allowed = role >= least;
            let ok = if allowed {
                !matches!(status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED)
            } else {
                status == StatusCode::FORBIDDEN
            };
            if !ok {
                failures.push(format!(
                    "{role:?} {method} {path}: {status} (allowed: {allowed})"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "matrix mismatches:\n{}",
        failures.join("\n")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_user_of_one_app_gets_not_found_for_another_and_sees_only_its_own() {
    let server = start().await;
    let owner = admin_login(&server).await;
    let (status, _) = owner
        .call(
            &server,
            Method::POST,
            "/v1/apps",
            Some(json!({"name": "other"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let sessions = sessions(&server).await;
    for (role, s) in sessions.iter().filter(|(r, _)| *r != Role::Owner) {
        for (method, path) in [
            (Method::GET, "/v1/apps/other"),
            (Method::GET, "/v1/apps/other/keys"),
            (Method::GET, "/v1/apps/other/messages"),
            (Method::GET, "/v1/apps/other/stats"),
            (Method::PATCH, "/v1/apps/other"),
            (Method::POST, "/v1/apps/other/messages"),
            (Method::GET, "/v1/apps/nonexistent"),
        ] {
            let status = as_role(&server, s, method.clone(), path, Some(json!({}))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{role:?} {method} {path}");
        }
        let (status, apps) = s.call(&server, Method::GET, "/v1/apps", None).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = apps["apps"]
            .as_array()
            .expect("apps")
            .iter()
            .filter_map(|a| a["id"].as_str())
            .collect();
        assert_eq!(names, ["demo"], "{role:?} lists only its app");
        let (_, me) = s.call(&server, Method::GET, "/v1/admin/me", None).await;
        assert_eq!(me["apps"], json!(["demo"]));
    }
    // A viewer cannot create anything, even in its own app.
    let viewer = &sessions[0].1;
    let status = as_role(
        &server,
        viewer,
        Method::POST,
        "/v1/apps/demo/keys",
        Some(json!({"scopes": ["push"]})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, keys) = owner
        .call(&server, Method::GET, "/v1/apps/demo/keys", None)
        .await;
    assert_eq!(
        keys["keys"].as_array().map(Vec::len),
        Some(2),
        "no key was added"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_role_change_applies_to_open_sessions_at_once() {
    let server = start().await;
    let owner = admin_login(&server).await;
    let sessions = sessions(&server).await;
    let admin1 = &sessions
        .iter()
        .find(|(r, _)| *r == Role::Admin)
        .expect("admin")
        .1;
    let status = as_role(
        &server,
        admin1,
        Method::POST,
        "/v1/apps/demo/signing-secret",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = owner
        .call(
            &server,
            Method::PATCH,
            "/v1/admin/users/admin1",
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let status = as_role(
        &server,
        admin1,
        Method::POST,
        "/v1/apps/demo/signing-secret",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.stop().await;
}

#[tokio::test]
async fn a_deleted_app_leaves_its_users_so_a_new_app_of_that_name_stays_hidden() {
    let server = start().await;
    let owner = admin_login(&server).await;
    let create = |name: &'static str| json!({ "name": name });
    let (status, _) = owner
        .call(&server, Method::POST, "/v1/apps", Some(create("gone")))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = owner
        .call(
            &server,
            Method::POST,
            "/v1/admin/users",
            Some(json!({"user": "v", "password": "a long password", "role": "viewer", "apps": ["demo", "gone"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let viewer = login(&server, "v", "a long password").await;
    assert_eq!(
        as_role(&server, &viewer, Method::GET, "/v1/apps/gone", None).await,
        StatusCode::OK
    );
    let (status, _) = owner
        .call(&server, Method::DELETE, "/v1/apps/gone", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = owner
        .call(&server, Method::POST, "/v1/apps", Some(create("gone")))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        as_role(&server, &viewer, Method::GET, "/v1/apps/gone", None).await,
        StatusCode::NOT_FOUND
    );
    let (_, users) = owner
        .call(&server, Method::GET, "/v1/admin/users", None)
        .await;
    let v = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["user"] == "v")
        .expect("v")
        .clone();
    assert_eq!(v["apps"], json!(["demo"]));
    server.stop().await;
}
