//! Console sign-in: `POST /v1/admin/login` (throttled per address and per login name,
//! audited), `POST /v1/admin/logout`, `GET /v1/admin/me`, `POST /v1/admin/password`.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{hash_password, verify_password};
use crate::server::PeerAddr;
use crate::store::records::{Role, UserRecord};
use crate::store::ConsoleOp;

use super::admin::{audit, audit_as};
use super::extract::{Admin, ApiJson};
use super::principal::same_origin;
use super::session::{self, LOGIN_FAILURES_PER_USER};
use super::{policy, ApiError, AppState, Method, RouteTable};

/// Shortest console password.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest console password (bounds the hashing work).
pub const MAX_PASSWORD_BYTES: usize = 256;

pub fn routes(t: &mut RouteTable) {
    t.add("/v1/admin/login", &[Method::POST], post(login));
    t.add("/v1/admin/logout", &[Method::POST], post(logout));
    t.add("/v1/admin/me", &[Method::GET], get(me));
    t.add("/v1/admin/password", &[Method::POST], post(change_password));
}

/// Checked against when the login does not exist, so both cases cost one argon2 run.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("not a real password").unwrap_or_default());

/// Checks a password on a blocking thread (argon2 takes tens of milliseconds).
async fn password_matches(password: String, user: Option<&UserRecord>) -> bool {
    let phc = user.map(|u| u.password_hash.clone());
    tokio::task::spawn_blocking(move || {
        let phc = phc.unwrap_or_else(|| DUMMY_HASH.clone());
        verify_password(&password, &phc)
    })
    .await
    .unwrap_or(false)
}

/// Validates and hashes a new password.
pub(super) async fn new_password_hash(field: &str, password: String) -> Result<String, ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::invalid(format!(
            "{field}: {MIN_PASSWORD_CHARS} characters at least, {MAX_PASSWORD_BYTES} bytes at most"
        )));
    }
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|_| ApiError::unavailable("the password could not be hashed"))?
        .map_err(|_| ApiError::unavailable("the password could not be hashed"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    user: String,
    password: String,
}

/// What the console shows about the signed-in principal.
fn me_body(state: &AppState, admin: &Admin) -> Result<serde_json::Value, ApiError> {
    let apps: Vec<String> = match &admin.apps {
        Some(apps) => apps.clone(),
        None => state
            .store
            .apps(None, 1000)?
            .into_iter()
            .map(|a| a.name)
            .collect(),
    };
    Ok(json!({
        "user": admin.session.as_ref().map(|s| s.login.clone()),
        "role": policy::role_name(admin.role),
        "apps": apps,
        "all_apps": admin.apps.is_none(),
        "csrf_token": admin.session.as_ref().map(|s| s.csrf.clone()),
    }))
}

async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    // A login form posted from another site would sign the victim in as the attacker.
    let authority = uri.authority().map(axum::http::uri::Authority::as_str);
    if headers.contains_key(header::ORIGIN) && !same_origin(&headers, authority) {
        return Err(ApiError::forbidden(
            "cross-site request refused: Origin must be this server",
        ));
    }
    if body.user.is_empty() || body.user.len() > 64 || body.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::unauthenticated("wrong user name or password"));
    }
    let peer = peer.map(|Extension(p)| p.0);
    let per_ip = state.config.borrow().server.auth_failures_per_minute;
    if let Some(ip) = peer.map(|p| p.ip()) {
        if let Err(wait) = state.auth_throttle.check(&ip, per_ip) {
            return Err(ApiError::rate_limited(
                "too many failed sign-ins from this address; wait",
                wait,
            ));
        }
    }
    if let Err(wait) = state
        .console
        .login_failures
        .check(body.user.as_str(), LOGIN_FAILURES_PER_USER)
    {
        return Err(ApiError::rate_limited(
            "too many failed sign-ins for this user; wait",
            wait,
        ));
    }
    let user = state.store.console_user(&body.user)?;
    if !password_matches(body.password, user.as_ref()).await {
        if let Some(ip) = peer.map(|p| p.ip()) {
            state.auth_throttle.failed(ip);
        }
        state.console.login_failures.failed(body.user.clone());
        tracing::info!(user = %body.user, ?peer, "console sign-in failed");
        let actor = format!("user:{}", body.user.escape_debug());
        audit_as(&state, &actor, peer, "login.failed", None, None).await?;
        return Err(ApiError::unauthenticated("wrong user name or password"));
    }
    let Some(user) = user else {
        return Err(ApiError::unauthenticated("wrong user name or password"));
    };
    let (id, csrf) = state.console.create(&user.login, crate::domain::now_ms());
    let actor = format!("user:{}", user.login);
    tracing::info!(user = %user.login, ?peer, "console sign-in");
    audit_as(&state, &actor, peer, "login", None, None).await?;
    let admin = Admin {
        actor,
        peer,
        role: user.role,
        apps: (user.role != Role::Owner).then(|| user.apps.clone()),
        session: Some(super::principal::SessionRef {
            key: session::key_of(&id),
            login: user.login.clone(),
            csrf,
        }),
    };
    let body = me_body(&state, &admin)?;
    let cookie = HeaderValue::from_str(&session::set_cookie(&id))
        .map_err(|_| ApiError::unavailable("the session could not be started"))?;
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

async fn logout(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    if let Some(s) = &admin.session {
        state.console.remove(&s.key);
        audit(&state, &admin, "logout", None, None).await?;
    }
    let cookie = HeaderValue::from_str(&session::clear_cookie())
        .map_err(|_| ApiError::unavailable("the cookie could not be cleared"))?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

async fn me(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(me_body(&state, &admin)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    old: String,
    new: String,
}

async fn change_password(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    let Some(session) = admin.session.clone() else {
        return Err(ApiError::invalid(
            "admin tokens have no password; sign in to the console as a user",
        ));
    };
    if let Err(wait) = state
        .console
        .login_failures
        .check(session.login.as_str(), LOGIN_FAILURES_PER_USER)
    {
        return Err(ApiError::rate_limited(
            "too many wrong passwords for this user; wait",
            wait,
        ));
    }
    let user = state.store.console_user(&session.login)?;
    if body.old.len() > MAX_PASSWORD_BYTES || !password_matches(body.old, user.as_ref()).await {
        state.console.login_failures.failed(session.login.clone());
        audit(&state, &admin, "password.change_failed", None, None).await?;
        return Err(ApiError::forbidden("old: the current password is wrong"));
    }
    let hash = new_password_hash("new", body.new).await?;
    state
        .store
        .console(ConsoleOp::UpdateUser {
            login: session.login.clone(),
            update: Box::new(move |u| u.password_hash = hash),
        })
        .await
        .map_err(|e| ApiError::from_store(e, "user"))?;
    // Other sessions of this user end: whoever knew the old password is out.
    state
        .console
        .remove_user(&session.login, Some(&session.key));
    audit(&state, &admin, "password.change", None, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
