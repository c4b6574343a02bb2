//! Bad input: every malformed push and device registration is refused with the right status,
//! code and field, in the contract's error shape, and leaves nothing behind.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use warbler::client::Reply;

use crate::harness::*;

/// Asserts `{"error":{"code","message"}}` and nothing else; returns (code, message).
pub fn error_parts(reply: &Reply, what: &str) -> (String, String) {
    let body = &reply.body;
    let top = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: error body is not an object: {body}"));
    assert_eq!(
        top.keys().collect::<Vec<_>>(),
        ["error"],
        "{what}: only `error` at the top: {body}"
    );
    let err = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: `error` is not an object: {body}"));
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message"], "{what}: {body}");
    let code = err["code"].as_str().expect("code is a string");
    let message = err["message"].as_str().expect("message is a string");
    assert!(
        !code.is_empty()
            && code
                .split('_')
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())),
        "{what}: code {code:?} is not snake_case"
    );
    assert!(!message.is_empty(), "{what}: empty message");
    (code.to_owned(), message.to_owned())
}

enum Body {
    Json(Value),
    Raw(Vec<u8>),
}

struct Case {
    name: &'static str,
    body: Body,
    status: StatusCode,
    code: &'static str,
    /// Substrings the message must contain (the field it names, the limit it quotes).
    mentions: &'static [&'static str],
}

/// The bad pushes, each aimed at `device` so that, if accepted, it would be delivered.
#[allow(clippy::too_many_lines)] // a table
fn push_cases(device: &str) -> Vec<Case> {
    let to = json!({"device": device});
    let note = json!({"title": "should never arrive"});
    let with = |extra: Value| {
        let mut body = json!({"to": to, "notification": note});
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                body.as_object_mut().expect("object").remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        Body::Json(body)
    };
    let mut too_many: Vec<String> = (0..1000).map(|i| format!("dev_x{i}")).collect();
    too_many.push(device.to_owned());
    let huge = "x".repeat(300 * 1024);
    let max_ttl = 28 * 24 * 3600;
    vec![
        Case {
            name: "malformed JSON",
            body: Body::Raw(
                format!(r#"{{"to": {{"device": "{device}"}}, "notification": "#).into_bytes(),
            ),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &[],
        },
        Case {
            name: "trailing garbage after the JSON",
            body: Body::Raw(
                format!(r#"{{"to": {{"device": "{device}"}}, "data": {{}}}} x"#).into_bytes(),
            ),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &[],
        },
        Case {
            name: "empty body",
            body: Body::Raw(Vec::new()),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &[],
        },
        Case {
            name: "a JSON array",
            body: Body::Json(json!([{"to": to, "notification": note}])),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &[],
        },
        Case {
            name: "unknown top-level field",
            body: with(json!({"colour": "red"})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["colour"],
        },
        Case {
            name: "unknown notification field",
            body: with(json!({"notification": {"title": "t", "colour": "red"}})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["notification", "colour"],
        },
        Case {
            name: "unknown target field",
            body: with(json!({"to": {"device": device, "shard": 1}})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["to", "shard"],
        },
        Case {
            name: "no `to` at all",
            body: with(json!({"to": null})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["to"],
        },
        Case {
            name: "no target",
            body: with(json!({"to": {}})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["to"],
        },
        Case {
            name: "two targets",
            body: with(json!({"to": {"device": device, "user": "alice"}})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["to"],
        },
        Case {
            name: "`to` is a string",
            body: with(json!({"to": device})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["to"],
        },
        Case {
            name: "bad device id",
            body: with(json!({"to": {"device": "device-1"}})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["to.device"],
        },
        Case {
            name: "a bad id among good ones",
            body: with(json!({"to": {"devices": [device, "dev_a/b"]}})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["to.devices"],
        },
        Case {
            name: "devices list over 1000",
            body: with(json!({"to": {"devices": too_many}})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["to.devices", "1000"],
        },
        Case {
            name: "empty devices",
            body: with(json!({"to": {"devices": []}})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["to.devices"],
        },
        Case {
            name: "empty users",
            body: with(json!({"to": {"users": []}})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["to.users"],
        },
        Case {
            name: "an unknown (well-formed) device",
            body: with(json!({"to": {"device": "dev_doesnotexist"}})),
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            mentions: &[],
        },
        Case {
            name: "body over 256 KiB",
            body: with(json!({"data": {"blob": huge}})),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            mentions: &["262144"],
        },
        Case {
            name: "notification + data over 4096 bytes",
            body: with(json!({
                "notification": {"title": "t".repeat(2000)},
                "data": {"k": "d".repeat(2100)},
            })),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            mentions: &["4096"],
        },
        Case {
            name: "ttl above the maximum",
            body: with(json!({"ttl": max_ttl + 1})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["ttl"],
        },
        Case {
            name: "neither notification nor data",
            body: with(json!({"notification": null})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["notification", "data"],
        },
        Case {
            name: "ttl of the wrong JSON type",
            body: with(json!({"ttl": "1h"})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["ttl"],
        },
        Case {
            name: "negative ttl",
            body: with(json!({"ttl": -1})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["ttl"],
        },
        Case {
            name: "unknown priority",
            body: with(json!({"priority": "urgent"})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["priority"],
        },
        Case {
            name: "data that is not an object",
            body: with(json!({"data": [1, 2]})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["data"],
        },
        Case {
            name: "negative badge",
            body: with(json!({"notification": {"badge": -1}})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            mentions: &["notification.badge"],
        },
    ]
}

#[tokio::test]
async fn bad_push_requests_get_the_right_error_and_store_nothing() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let cases = push_cases(&device);
    let mut failures = Vec::new();
    for case in &cases {
        let bytes = match &case.body {
            Body::Json(v) => Bytes::from(v.to_string()),
            Body::Raw(b) => Bytes::from(b.clone()),
        };
        let r = s
            .client
            .raw(Method::POST, "/v1/messages", Some(&s.creds.api_key), bytes)
            .await
            .unwrap_or_else(|e| panic!("{}: request failed: {e}", case.name));
        if r.status != case.status {
            failures.push(format!(
                "{}: expected {}, got {} {}",
                case.name, case.status, r.status, r.body
            ));
            continue;
        }
        let (code, message) = error_parts(&r, case.name);
        if code != case.code {
            failures.push(format!(
                "{}: code {code}, expected {}",
                case.name, case.code
            ));
        }
        for m in case.mentions {
            if !message.contains(m) {
                failures.push(format!(
                    "{}: message {message:?} should name {m:?}",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing was stored: the device, connected all along, got nothing, and a new session
    // (which replays every pending message) gets nothing either.
    assert_silent(&mut conn, Duration::from_millis(500)).await;
    conn.close().await.expect("close");
    let mut conn = s.connect(&token).await;
    assert_silent(&mut conn, Duration::from_millis(300)).await;
    // The device is really listening: a good push arrives, and only it.
    let good = s.push(json!({"device": device}), "good").await;
    assert_eq!(good.status, StatusCode::ACCEPTED, "{}", good.body);
    let got = recv_messages(&mut conn, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0]["id"], good.body["id"]);
    assert_eq!(got[0]["notification"]["title"], "good");
    s.stop().await;
}

#[tokio::test]
async fn message_size_limit_counts_notification_plus_data_to_the_byte() {
    let s = start().await;
    let (device, _token) = s.register(None).await;
    // {"b":"…"} is 8 bytes plus the string: 4088 characters make exactly 4096 bytes.
    let push = |n: usize| json!({"to": {"device": device}, "data": {"b": "x".repeat(n)}});
    let at = s
        .call(
            Method::POST,
            "/v1/messages",
            Some(&s.creds.api_key),
            Some(push(4088)),
        )
        .await;
    assert_eq!(
        at.status,
        StatusCode::ACCEPTED,
        "exactly the limit: {}",
        at.body
    );
    let over = s
        .call(
            Method::POST,
            "/v1/messages",
            Some(&s.creds.api_key),
            Some(push(4089)),
        )
        .await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", over.body);
    let (code, _) = error_parts(&over, "one byte over");
    assert_eq!(code, "payload_too_large");
    s.stop().await;
}

/// Builds an unsigned `alg: none` token by hand.
fn unsigned_token(claims: &Value) -> String {
    fn b64(input: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// (what, body, status, code, what the message must mention)
type RegCase = (&'static str, Value, StatusCode, &'static str, &'static str);

/// Bad registrations, each carrying or aiming for the user `mallory`.
#[allow(clippy::too_many_lines)] // a table
fn registration_cases(secret: &str, valid: &str) -> Vec<RegCase> {
    let exp = now_secs() + 600;
    let claims = json!({"sub": "mallory", "topics": ["news"], "exp": exp});
    let sign = |alg: jsonwebtoken::Algorithm, secret: &str, claims: &Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    let forged = user_token("not-the-apps-secret", &claims);
    let expired = user_token(secret, &json!({"sub": "mallory", "exp": now_secs() - 3600}));
    let none = unsigned_token(&claims);
    let hs512 = sign(jsonwebtoken::Algorithm::HS512, secret, &claims);
    let no_exp = user_token(secret, &json!({"sub": "mallory"}));
    let no_sub = user_token(secret, &json!({"exp": exp}));
    // A valid signature over another payload (more topics).
    let tampered = {
        let parts: Vec<&str> = valid.split('.').collect();
        let other = unsigned_token(&json!({"sub": "mallory", "topics": ["admin"], "exp": exp}));
        let payload = other.split('.').nth(1).expect("payload");
        format!("{}.{}.{}", parts[0], payload, parts[2])
    };

    // (what, body, status, code, the message must mention)
    vec![
        (
            "unknown platform",
            json!({"platform": "windows", "user_token": valid}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "platform",
        ),
        (
            "missing platform",
            json!({"user_token": valid}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "platform",
        ),
        (
            "unknown field",
            json!({"platform": "web", "user_token": valid, "push_token": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "push_token",
        ),
        (
            "user_token of the wrong type",
            json!({"platform": "web", "user_token": 42}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "user_token",
        ),
        (
            "forged",
            json!({"platform": "web", "user_token": forged}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "user_token",
        ),
        (
            "expired",
            json!({"platform": "web", "user_token": expired}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "expired",
        ),
        (
            "alg none",
            json!({"platform": "web", "user_token": none}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "user_token",
        ),
        (
            "HS512",
            json!({"platform": "web", "user_token": hs512}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "user_token",
        ),
        (
            "no exp",
            json!({"platform": "web", "user_token": no_exp}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "user_token",
        ),
        (
            "no sub",
            json!({"platform": "web", "user_token": no_sub}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "user_token",
        ),
        (
            "tampered payload",
            json!({"platform": "web", "user_token": tampered}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "user_token",
        ),
        (
            "not a JWT",
            json!({"platform": "web", "user_token": "hello"}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "user_token",
        ),
        (
            "oversized",
            json!({"platform": "web", "user_token": "a".repeat(5000)}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "user_token",
        ),
    ]
}

/// Creates an app; returns its signing secret, its client key and a new `manage` API key.
async fn app_with_manage_key(s: &TestServer, name: &str) -> (String, String, String) {
    let app = s
        .call(
            Method::POST,
            "/v1/apps",
            Some(&s.creds.admin_token),
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(app.status, StatusCode::CREATED, "{}", app.body);
    let secret = app.body["signing_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let client_key = app.body["client_key"]
        .as_str()
        .expect("client key")
        .to_owned();
    let key = s
        .call(
            Method::POST,
            &format!("/v1/apps/{name}/keys"),
            Some(&s.creds.admin_token),
            Some(json!({"name": "ops", "scopes": ["manage"]})),
        )
        .await
        .body["key"]
        .as_str()
        .expect("key")
        .to_owned();
    (secret, client_key, key)
}

#[tokio::test]
async fn bad_device_registrations_are_refused() {
    let s = start().await;
    // User tokens need the app's signing secret, which only app creation reveals.
    let (secret, client_key, key) = app_with_manage_key(&s, "chat").await;
    let exp = now_secs() + 600;
    let claims = json!({"sub": "mallory", "topics": ["news"], "exp": exp});
    let valid = user_token(&secret, &claims);
    let cases = registration_cases(&secret, &valid);
    let mut failures = Vec::new();
    for (what, body, status, code, mention) in &cases {
        let r = s
            .client
            .call(
                Method::POST,
                "/v1/devices/register",
                Some(&client_key),
                Some(body),
            )
            .await
            .expect("request");
        if r.status != *status {
            failures.push(format!(
                "{what}: expected {status}, got {} {}",
                r.status, r.body
            ));
            continue;
        }
        let (c, message) = error_parts(&r, what);
        if c != *code {
            failures.push(format!("{what}: code {c}, expected {code}"));
        }
        if !message.contains(mention) {
            failures.push(format!(
                "{what}: message {message:?} should mention {mention:?}"
            ));
        }
    }
    // Credentials: none, the API key, another app's client key.
    let body = json!({"platform": "web"});
    for (what, cred) in [
        ("no credential", None),
        ("an API key", Some(key.as_str())),
        ("a garbage key", Some("wck_nope_nope")),
    ] {
        let r = s
            .client
            .call(Method::POST, "/v1/devices/register", cred, Some(&body))
            .await
            .expect("request");
        if r.status != StatusCode::UNAUTHORIZED {
            failures.push(format!("{what}: expected 401, got {} {}", r.status, r.body));
            continue;
        }
        let (c, _) = error_parts(&r, what);
        if c != "unauthenticated" {
            failures.push(format!("{what}: code {c}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let listed = s
        .client
        .call(Method::GET, "/v1/users/mallory/devices", Some(&key), None)
        .await
        .expect("list");
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(
        listed.body["devices"],
        json!([]),
        "no refused registration created a device"
    );
    // The control: the valid token does register and bind.
    let (device, _) = register_with(&s.client, &client_key, Some(&valid)).await;
    let listed = s
        .client
        .call(Method::GET, "/v1/users/mallory/devices", Some(&key), None)
        .await
        .expect("list");
    let devices = listed.body["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{}", listed.body);
    assert_eq!(devices[0]["id"], device.as_str());
    assert_eq!(devices[0]["topics"], json!(["news"]));
    s.stop().await;
}

/// (method, path, credential, body, status, code)
type ShapeCase<'a> = (
    Method,
    &'a str,
    Option<&'a str>,
    Option<Value>,
    StatusCode,
    &'static str,
);

#[allow(clippy::too_many_lines)] // a table
fn shape_cases<'a>(api: &'a str, admin: &'a str, client_key: &'a str) -> Vec<ShapeCase<'a>> {
    vec![
        (
            Method::POST,
            "/v1/messages",
            None,
            Some(json!({})),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            Method::POST,
            "/v1/messages",
            Some(client_key),
            Some(json!({})),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            Method::POST,
            "/v1/messages",
            Some("Basic"),
            Some(json!({})),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            Method::GET,
            "/v1/apps",
            None,
            None,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            Method::GET,
            "/v1/apps",
            Some(api),
            None,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            Method::GET,
            "/v1/apps?limit=lots",
            Some(admin),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/apps",
            Some(admin),
            Some(json!({"name": "Bad Name"})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/apps",
            Some(admin),
            Some(json!({"name": "demo"})),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            Method::DELETE,
            "/v1/apps/nope",
            Some(admin),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/no/such/route",
            None,
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/devices/dev_nope",
            Some(api),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/devices/not-a-device",
            Some(api),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/messages/msg_nope",
            Some(api),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/connect",
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::PATCH,
            "/v1/devices/dev_nope",
            Some(api),
            Some(json!({"colour": 1})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ]
}

#[tokio::test]
async fn every_error_body_is_exactly_code_and_message() {
    let s = start().await;
    let api = s.creds.api_key.as_str();
    let admin = s.creds.admin_token.as_str();
    let client_key = s.creds.client_key.as_str();
    let cases = shape_cases(api, admin, client_key);
    let mut failures = Vec::new();
    for (method, path, cred, body, status, code) in cases {
        let what = format!("{method} {path}");
        match s.client.call(method, path, cred, body.as_ref()).await {
            Err(e) => failures.push(format!("{what}: the body is not JSON: {e}")),
            Ok(r) if r.status != status => {
                failures.push(format!(
                    "{what}: expected {status}, got {} {}",
                    r.status, r.body
                ));
            }
            Ok(r) => {
                let (c, _) = error_parts(&r, &what);
                if c != code {
                    failures.push(format!("{what}: code {c}, expected {code}"));
                }
            }
        }
    }
    // Errors the framework produces before any handler runs have the same shape.
    let odd: Vec<(Method, &str, Option<&str>, StatusCode)> = vec![
        (
            Method::PUT,
            "/v1/messages",
            Some(api),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::DELETE,
            "/v1/devices/register",
            Some(client_key),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/v1/devices/%FF%FE",
            Some(api),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/users/%FF/devices",
            Some(api),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, cred, status) in odd {
        let what = format!("{method} {path}");
        match s.client.call(method, path, cred, None).await {
            Err(e) => failures.push(format!("{what}: the body is not JSON: {e}")),
            Ok(r) if r.status != status => {
                failures.push(format!(
                    "{what}: expected {status}, got {} {}",
                    r.status, r.body
                ));
            }
            Ok(r) if r.body.is_null() => {
                failures.push(format!("{what}: {} with an empty body", r.status));
            }
            Ok(r) => {
                error_parts(&r, &what);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    s.stop().await;
}
