//! The audit log: every management action with who, what, which app, when and from where.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn management_actions_are_logged_newest_first_with_actor_and_address() {
    let s = start().await;
    let admin = s.creds.admin_token.clone();
    s.call(
        Method::POST,
        "/v1/apps",
        Some(&admin),
        Some(json!({"name": "shop"})),
    )
    .await;
    let key = s
        .call(
            Method::POST,
            "/v1/apps/shop/keys",
            Some(&admin),
            Some(json!({"scopes": ["push"]})),
        )
        .await;
    let key_id = key.body["id"].as_str().expect("id").to_owned();
    s.call(
        Method::DELETE,
        &format!("/v1/apps/shop/keys/{key_id}"),
        Some(&admin),
        None,
    )
    .await;
    let (status, _) = s
        .client
        .download("/v1/admin/backup", Some(&admin))
        .await
        .expect("backup");
    assert_eq!(status, StatusCode::OK);
    // A refused action is not logged.
    let dup = s
        .call(
            Method::POST,
            "/v1/apps",
            Some(&admin),
            Some(json!({"name": "shop"})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);

    let log = s
        .call(Method::GET, "/v1/admin/audit", Some(&admin), None)
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.body);
    let entries = log.body["entries"].as_array().expect("entries");
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        vec!["backup.download", "key.revoke", "key.create", "app.create"]
    );
    let revoke = &entries[1];
    assert_eq!(revoke["app"], "shop");
    assert_eq!(revoke["target"], key_id.as_str());
    assert!(revoke["actor"].as_str().expect("actor").starts_with("at_"));
    assert_eq!(revoke["from"], "127.0.0.1");

    let page = s
        .call(Method::GET, "/v1/admin/audit?limit=2", Some(&admin), None)
        .await;
    assert_eq!(page.body["entries"].as_array().expect("entries").len(), 2);
    let denied = s
        .call(Method::GET, "/v1/admin/audit", Some(&s.creds.api_key), None)
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    s.stop().await;
}
