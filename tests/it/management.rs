//! Management API and isolation: apps, keys, scopes, revocation, other apps' ids.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn apps_and_keys_are_created_listed_and_revoked_at_once() {
    let s = start().await;
    let admin = s.creds.admin_token.clone();
    let r = s
        .call(
            Method::POST,
            "/v1/apps",
            Some(&admin),
            Some(json!({"name": "shop"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], "shop");
    assert!(r.body["client_key"].as_str().unwrap().starts_with("wck_"));
    let dup = s
        .call(
            Method::POST,
            "/v1/apps",
            Some(&admin),
            Some(json!({"name": "shop"})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.body["error"]["code"], "conflict");

    let k = s
        .call(
            Method::POST,
            "/v1/apps/shop/keys",
            Some(&admin),
            Some(json!({"name": "ci", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(k.status, StatusCode::CREATED, "{}", k.body);
    let key = k.body["key"].as_str().unwrap().to_owned();
    let id = k.body["id"].as_str().unwrap().to_owned();
    let listed = s
        .call(Method::GET, "/v1/apps/shop/keys", Some(&admin), None)
        .await;
    let text = listed.body.to_string();
    assert!(text.contains(&id));
    assert!(!text.contains(&key), "secrets are never listed");

    // A read-only key cannot push.
    let push = s
        .client
        .call(
            Method::POST,
            "/v1/messages",
            Some(&key),
            Some(&json!({"to": {"device": "dev_x"}, "data": {}})),
        )
        .await
        .unwrap();
    assert_eq!(push.status, StatusCode::FORBIDDEN);
    assert_eq!(push.body["error"]["code"], "forbidden");
    let status = s
        .client
        .call(Method::GET, "/v1/messages/msg_abc", Some(&key), None)
        .await
        .unwrap();
    assert_eq!(status.status, StatusCode::NOT_FOUND);

    let del = s
        .call(
            Method::DELETE,
            &format!("/v1/apps/shop/keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let after = s
        .client
        .call(Method::GET, "/v1/messages/msg_abc", Some(&key), None)
        .await
        .unwrap();
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "revoked at once");

    let apps = s.call(Method::GET, "/v1/apps", Some(&admin), None).await;
    let names: Vec<&str> = apps.body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["demo", "shop"]);
    let gone = s
        .call(Method::DELETE, "/v1/apps/shop", Some(&admin), None)
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let missing = s
        .call(Method::GET, "/v1/apps/shop", Some(&admin), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn another_apps_key_sees_404_and_missing_or_wrong_credentials_are_refused() {
    let s = start().await;
    let admin = s.creds.admin_token.clone();
    let (device, _token) = s.register(None).await;
    let msg = s.push(json!({"device": device}), "private").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.call(
        Method::POST,
        "/v1/apps",
        Some(&admin),
        Some(json!({"name": "other"})),
    )
    .await;
    let other = s
        .call(
            Method::POST,
            "/v1/apps/other/keys",
            Some(&admin),
            Some(json!({"scopes": ["push", "read", "manage"]})),
        )
        .await
        .body["key"]
        .as_str()
        .unwrap()
        .to_owned();

    for (method, path) in [
        (Method::GET, format!("/v1/messages/{msg}")),
        (Method::GET, format!("/v1/devices/{device}")),
        (Method::PATCH, format!("/v1/devices/{device}")),
        (Method::DELETE, format!("/v1/devices/{device}")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"user": "mallory"}));
        let r = s
            .client
            .call(method.clone(), &path, Some(&other), body.as_ref())
            .await
            .unwrap();
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            r.body
        );
        assert_eq!(r.body["error"]["code"], "not_found");
    }
    let push = s
        .client
        .call(
            Method::POST,
            "/v1/messages",
            Some(&other),
            Some(&json!({"to": {"device": device}, "data": {}})),
        )
        .await
        .unwrap();
    assert_eq!(
        push.status,
        StatusCode::NOT_FOUND,
        "another app's device is not found"
    );
    // The device is untouched.
    let d = s
        .call(
            Method::GET,
            &format!("/v1/devices/{device}"),
            Some(&s.creds.api_key),
            None,
        )
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.body["user"], json!(null));

    let none = s
        .call(Method::GET, &format!("/v1/messages/{msg}"), None, None)
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["error"]["code"], "unauthenticated");
    let forged = s
        .call(
            Method::GET,
            &format!("/v1/messages/{msg}"),
            Some("wak_key_abcdef_notthesecret"),
            None,
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let api_key_on_admin = s
        .call(Method::GET, "/v1/apps", Some(&s.creds.api_key), None)
        .await;
    assert_eq!(
        api_key_on_admin.status,
        StatusCode::FORBIDDEN,
        "API keys cannot manage apps"
    );
    let client_key_push = s
        .call(
            Method::POST,
            "/v1/messages",
            Some(&s.creds.client_key),
            Some(json!({"to": {"device": device}, "data": {}})),
        )
        .await;
    assert_eq!(client_key_push.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn devices_can_be_bound_to_users_read_and_unbound() {
    let s = start().await;
    let (device, _) = s.register(None).await;
    let key = s.creds.api_key.clone();
    let r = s
        .call(
            Method::PATCH,
            &format!("/v1/devices/{device}"),
            Some(&key),
            Some(json!({"user": "alice", "topics": ["news", "news"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["user"], "alice");
    assert_eq!(r.body["topics"], json!(["news"]));
    let listed = s
        .call(Method::GET, "/v1/users/alice/devices", Some(&key), None)
        .await;
    assert_eq!(listed.body["devices"][0]["id"], device.as_str());
    let r = s
        .call(
            Method::PATCH,
            &format!("/v1/devices/{device}"),
            Some(&key),
            Some(json!({"user": null})),
        )
        .await;
    assert_eq!(r.body["user"], json!(null));
    assert_eq!(
        r.body["topics"],
        json!(["news"]),
        "topics untouched when absent"
    );
    let listed = s
        .call(Method::GET, "/v1/users/alice/devices", Some(&key), None)
        .await;
    assert_eq!(listed.body["devices"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn a_device_shows_when_its_last_session_started_also_after_a_restart() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let path = format!("/v1/devices/{device}");
    let before = s
        .call(Method::GET, &path, Some(&s.creds.api_key), None)
        .await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    assert!(before.body["last_seen"].is_null(), "{}", before.body);

    let started = now_secs();
    let conn = s.connect(&token).await;
    let seen = eventually(Duration::from_secs(5), "last_seen set", || async {
        let r = s
            .call(Method::GET, &path, Some(&s.creds.api_key), None)
            .await;
        r.body["last_seen"].as_str().map(str::to_owned)
    })
    .await;
    let at = time::OffsetDateTime::parse(&seen, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
        .unix_timestamp();
    let at = u64::try_from(at).expect("after 1970");
    assert!(
        at + 1 >= started && at <= now_secs() + 1,
        "last_seen {seen} not when the session started"
    );
    drop(conn);

    let creds = s.creds.clone();
    let s = start_in(s.stop().await, |_| {}).await;
    let r = s.call(Method::GET, &path, Some(&creds.api_key), None).await;
    assert_eq!(r.body["last_seen"], seen.as_str(), "lost across a restart");
}
