//! Console sign-in over real HTTPS: the cookie's flags, CSRF refusals that change nothing,
//! throttled failed logins, logout, and password changes.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{start, start_with, TestServer};

/// A signed-in console session: the cookie header to send and the CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
    pub origin: String,
}

impl Session {
    /// A request as the console's own pages make it (cookie, Origin, CSRF token).
    pub async fn call(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, bytes) = server
            .request_bytes(
                method,
                path,
                &[
                    ("cookie", &self.cookie),
                    ("origin", &self.origin),
                    ("x-csrf-token", &self.csrf),
                ],
                body,
            )
            .await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

pub fn origin(server: &TestServer) -> String {
    format!("https://localhost:{}", server.addr.port())
}

pub async fn try_login(
    server: &TestServer,
    user: &str,
    password: &str,
) -> crate::harness::RawReply {
    server
        .request(
            Method::POST,
            "/v1/admin/login",
            &[("origin", &origin(server))],
            Some(json!({"user": user, "password": password})),
        )
        .await
}

pub async fn login(server: &TestServer, user: &str, password: &str) -> Session {
    let r = try_login(server, user, password).await;
    assert_eq!(r.status, StatusCode::OK, "login {user}: {:?}", r.body);
    let set_cookie = r.headers["set-cookie"].to_str().expect("ascii");
    let pair = set_cookie.split(';').next().expect("pair").to_owned();
    Session {
        cookie: pair,
        csrf: r.body["csrf_token"]
            .as_str()
            .expect("csrf token")
            .to_owned(),
        origin: origin(server),
    }
}

pub async fn admin_login(server: &TestServer) -> Session {
    let password = server.creds.admin_password.clone();
    login(server, "admin", &password).await
}

#[tokio::test]
async fn login_sets_a_host_only_http_only_secure_strict_cookie_with_an_expiry() {
    let server = start().await;
    let r = try_login(&server, "admin", &server.creds.admin_password.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let cookie = r.headers["set-cookie"].to_str().expect("ascii");
    let (pair, flags) = cookie.split_once("; ").expect("flags");
    let (name, value) = pair.split_once('=').expect("name=value");
    assert_eq!(name, "__Host-warbler_session");
    assert_eq!(value.len(), 64, "256 random bits, hex");
    assert_eq!(
        flags,
        "HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=43200"
    );
    assert_eq!(r.body["user"], "admin");
    assert_eq!(r.body["role"], "owner");
    assert_eq!(r.body["apps"], json!(["demo"]));
    let session = admin_login(&server).await;
    let (status, me) = session
        .call(&server, Method::GET, "/v1/admin/me", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["csrf_token"].as_str(), Some(session.csrf.as_str()));
    server.stop().await;
}

#[tokio::test]
async fn a_cookie_request_without_origin_or_csrf_token_is_refused_and_changes_nothing() {
    let server = start().await;
    let s = admin_login(&server).await;
    let body = Some(json!({"name": "csrf-victim"}));
    let bad_origin = "https://evil.example";
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "no origin",
            vec![("cookie", &s.cookie), ("x-csrf-token", &s.csrf)],
        ),
        (
            "wrong origin",
            vec![
                ("cookie", &s.cookie),
                ("origin", bad_origin),
                ("x-csrf-token", &s.csrf),
            ],
        ),
        (
            "no token",
            vec![("cookie", &s.cookie), ("origin", &s.origin)],
        ),
        (
            "wrong token",
            vec![
                ("cookie", &s.cookie),
                ("origin", &s.origin),
                ("x-csrf-token", "00"),
            ],
        ),
    ];
    for (what, headers) in cases {
        let r = server
            .request(Method::POST, "/v1/apps", &headers, body.clone())
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], "forbidden", "{what}");
    }
    let (status, _) = s
        .call(&server, Method::GET, "/v1/apps/csrf-victim", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was created");
    // Same-origin fetch metadata stands in for a missing Origin; the token is still needed.
    let r = server
        .request(
            Method::POST,
            "/v1/apps",
            &[
                ("cookie", &s.cookie),
                ("sec-fetch-site", "same-origin"),
                ("x-csrf-token", &s.csrf),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // A bearer admin token is not cookie authentication: no CSRF token needed.
    let token = server.creds.admin_token.clone();
    server
        .client
        .call(
            Method::POST,
            "/v1/apps",
            Some(&token),
            Some(&json!({"name": "by-token"})),
        )
        .await
        .expect("call")
        .expect_status(StatusCode::CREATED)
        .expect("token creates");
    // A login form posted from another site is refused too.
    let r = server
        .request(
            Method::POST,
            "/v1/admin/login",
            &[("origin", bad_origin)],
            Some(json!({"user": "admin", "password": server.creds.admin_password})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    server.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_user_name_with_retry_after_and_audited() {
    let server = start().await;
    for _ in 0..10 {
        let r = try_login(&server, "admin", "wrong password!").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = try_login(&server, "admin", &server.creds.admin_password.clone()).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    let wait: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait));
    let token = server.creds.admin_token.clone();
    let audit = server
        .client
        .call(Method::GET, "/v1/admin/audit", Some(&token), None)
        .await
        .expect("call")
        .expect_status(StatusCode::OK)
        .expect("audit");
    let failed = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "login.failed" && e["actor"] == "user:admin")
        .count();
    assert_eq!(failed, 10);
    server.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address_across_user_names() {
    let server = start_with(|c| c.server.auth_failures_per_minute = 3).await;
    for i in 0..3 {
        let r = try_login(&server, &format!("nobody{i}"), "wrong password!").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = try_login(&server, "admin", &server.creds.admin_password.clone()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key("retry-after"));
    server.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let server = start().await;
    let s = admin_login(&server).await;
    let (status, _) = s
        .call(&server, Method::POST, "/v1/admin/logout", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.call(&server, Method::GET, "/v1/admin/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body:?}");
    let (status, _) = s.call(&server, Method::GET, "/v1/apps", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn a_changed_password_works_and_the_old_one_and_other_sessions_stop_working() {
    let server = start().await;
    let old = server.creds.admin_password.clone();
    let s = admin_login(&server).await;
    let other = admin_login(&server).await;
    let (status, body) = s
        .call(
            &server,
            Method::POST,
            "/v1/admin/password",
            Some(json!({"old": old, "new": "short"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "too short: {body:?}");
    let (status, _) = s
        .call(
            &server,
            Method::POST,
            "/v1/admin/password",
            Some(json!({"old": "not it at all", "new": "a brand new passphrase"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "wrong old password");
    let (status, _) = s
        .call(
            &server,
            Method::POST,
            "/v1/admin/password",
            Some(json!({"old": old, "new": "a brand new passphrase"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        try_login(&server, "admin", &old).await.status,
        StatusCode::UNAUTHORIZED
    );
    login(&server, "admin", "a brand new passphrase").await;
    let (status, _) = s.call(&server, Method::GET, "/v1/admin/me", None).await;
    assert_eq!(status, StatusCode::OK, "the session that changed it stays");
    let (status, _) = other.call(&server, Method::GET, "/v1/admin/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "other sessions end");
    server.stop().await;
}

#[tokio::test]
async fn the_last_owner_can_be_neither_deleted_nor_demoted() {
    let server = start().await;
    let s = admin_login(&server).await;
    let (status, _) = s
        .call(&server, Method::DELETE, "/v1/admin/users/admin", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = s
        .call(
            &server,
            Method::PATCH,
            "/v1/admin/users/admin",
            Some(json!({"role": "viewer", "apps": ["demo"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = s
        .call(
            &server,
            Method::POST,
            "/v1/admin/users",
            Some(json!({"user": "second", "password": "second owner pw", "role": "owner"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = s
        .call(&server, Method::DELETE, "/v1/admin/users/admin", None)
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "not the last owner any more"
    );
    let (status, _) = s.call(&server, Method::GET, "/v1/admin/me", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a deleted user's sessions end"
    );
    server.stop().await;
}
