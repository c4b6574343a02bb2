//! The management principal: an owner's admin token (`Authorization: Bearer`) or a console
//! session (cookie). Extracting it authenticates, defends cookie requests against CSRF,
//! and applies the [`policy`](super::policy) table to the matched route and its `{app}`.

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use subtle::ConstantTimeEq;

use crate::auth::TokenKind;
use crate::store::records::{CredentialKind, Role};

use super::extract::{bearer, credential};
use super::session::{cookie_value, key_of, SessionKey};
use super::{policy, ApiError, AppState};

/// The header a cookie-authenticated state-changing request must carry, holding the
/// session's CSRF token (from the login answer or `GET /v1/admin/me`).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A console session behind a principal.
#[derive(Debug, Clone)]
pub struct SessionRef {
    pub key: SessionKey,
    pub login: String,
    pub csrf: String,
}

/// Who is calling the management API, already checked against the route's policy.
#[derive(Debug, Clone)]
pub struct Admin {
    /// For logs and the audit log: the admin token's id, or `user:<login>`.
    pub actor: String,
    /// Where the request came from, when known.
    pub peer: Option<std::net::SocketAddr>,
    pub role: Role,
    /// The apps it may see; `None` means all (owners and admin tokens).
    pub apps: Option<Vec<String>>,
    /// The console session, when authenticated by cookie.
    pub session: Option<SessionRef>,
}

impl Admin {
    /// Whether this principal may see the app at all.
    #[must_use]
    pub fn sees_app(&self, app: &str) -> bool {
        self.apps
            .as_ref()
            .is_none_or(|apps| apps.iter().any(|a| a == app))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<crate::server::PeerAddr>()
            .map(|p| p.0);
        let principal = if bearer(&parts.headers).is_some() {
            let record = credential(state, parts, TokenKind::AdminToken)?;
            if record.kind != CredentialKind::AdminToken {
                return Err(ApiError::unauthenticated(
                    "the credential is invalid or revoked",
                ));
            }
            Self {
                actor: record.id,
                peer,
                role: Role::Owner,
                apps: None,
                session: None,
            }
        } else {
            let principal = from_session(state, &parts.headers, peer)?;
            if !is_safe(&parts.method) {
                check_csrf(
                    &parts.headers,
                    parts
                        .uri
                        .authority()
                        .map(axum::http::uri::Authority::as_str),
                    &principal,
                )?;
            }
            principal
        };
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("the path could not be decoded"))?;
        let app = params
            .iter()
            .find(|(name, _)| *name == "app")
            .map(|(_, v)| v.to_owned());
        policy::authorize(
            principal.role,
            principal.apps.as_deref(),
            parts.method.as_str(),
            &route,
            app.as_deref(),
        )?;
        Ok(principal)
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn from_session(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Result<Admin, ApiError> {
    let value = cookie_value(headers).ok_or_else(|| {
        ApiError::unauthenticated("sign in, or send Authorization: Bearer <admin token>")
    })?;
    let key = key_of(value);
    let expired = || ApiError::unauthenticated("the session has ended; sign in again");
    let session = state
        .console
        .touch(&key, crate::domain::now_ms())
        .ok_or_else(expired)?;
    let Some(user) = state.store.console_user(&session.login)? else {
        state.console.remove(&key);
        return Err(expired());
    };
    Ok(Admin {
        actor: format!("user:{}", user.login),
        peer,
        role: user.role,
        apps: (user.role != Role::Owner).then_some(user.apps),
        session: Some(SessionRef {
            key,
            login: user.login,
            csrf: session.csrf,
        }),
    })
}

/// Whether the request's `Origin` (or, without one, `Sec-Fetch-Site`) says it came from
/// this server's own pages. Used for the login too.
pub fn same_origin(headers: &HeaderMap, authority: Option<&str>) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(authority);
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => host.is_some_and(|h| origin == format!("https://{h}")),
        None => headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "same-origin"),
    }
}

fn check_csrf(
    headers: &HeaderMap,
    authority: Option<&str>,
    principal: &Admin,
) -> Result<(), ApiError> {
    if !same_origin(headers, authority) {
        return Err(ApiError::forbidden(
            "cross-site request refused: Origin must be this server",
        ));
    }
    let expected = principal
        .session
        .as_ref()
        .map(|s| s.csrf.as_bytes())
        .unwrap_or_default();
    let presented = headers
        .get(CSRF_HEADER)
        .map(axum::http::HeaderValue::as_bytes)
        .unwrap_or_default();
    if expected.is_empty() || !bool::from(presented.ct_eq(expected)) {
        return Err(ApiError::forbidden(
            "missing or wrong X-CSRF-Token header (from the login answer or /v1/admin/me)",
        ));
    }
    Ok(())
}
