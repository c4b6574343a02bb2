//! Request extractors: bounded strict JSON bodies, and bearer authentication for API keys,
//! client keys and admin tokens (the management principal is in
//! [`super::principal`]). Every credential check goes through [`credential`].

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::auth::{parse_token, verify_secret, TokenKind};
use crate::store::records::{CredentialRecord, Scope};

use super::{ApiError, AppState};

/// A JSON body: size-bounded, unknown fields refused, errors naming the field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The body is JSON whatever Content-Type says (curl -d sends a form type).
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body parsed like [`ApiJson`], with the raw bytes kept (for request hashing).
pub struct RawJson<T> {
    pub value: T,
    pub bytes: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for RawJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        let value = parse_json(&bytes)?;
        Ok(Self { value, bytes })
    }
}

/// A request body, size-bounded, to be parsed by the handler (which may borrow from it).
pub struct BodyBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for BodyBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_body(req, state).await.map(BodyBytes)
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "the request body is larger than {} bytes",
                super::MAX_BODY_BYTES
            ))
        } else {
            ApiError::invalid("the request body could not be read")
        }
    })
}

/// Parses strict JSON, naming the offending field in the error.
///
/// # Errors
/// `invalid_request` with the JSON path and serde's reason.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." || path == "?" {
            ApiError::invalid(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::invalid(format!("{path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Finds and verifies a credential of the given kind from the request headers.
pub(super) fn credential(
    state: &AppState,
    parts: &Parts,
    expected: TokenKind,
) -> Result<CredentialRecord, ApiError> {
    let peer = parts
        .extensions
        .get::<crate::server::PeerAddr>()
        .map(|p| p.0.ip());
    let limit = state.config.borrow().server.auth_failures_per_minute;
    if let Some(ip) = peer {
        if let Err(wait) = state.auth_throttle.check(&ip, limit) {
            return Err(ApiError::rate_limited(
                "too many failed authentications from this address; wait",
                wait,
            ));
        }
    }
    let result = check_credential(state, &parts.headers, expected);
    if let (Err(e), Some(ip)) = (&result, peer) {
        // Only a presented credential that fails counts: a missing one is not a guess.
        if e.status == axum::http::StatusCode::UNAUTHORIZED && bearer(&parts.headers).is_some() {
            state.auth_throttle.failed(ip);
        }
    }
    result
}

fn check_credential(
    state: &AppState,
    headers: &HeaderMap,
    expected: TokenKind,
) -> Result<CredentialRecord, ApiError> {
    let token = bearer(headers)
        .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer credential"))?;
    let bad = || ApiError::unauthenticated("the credential is invalid or revoked");
    let (kind, id, secret) = parse_token(token).ok_or_else(bad)?;
    if kind != expected {
        return Err(match (expected, kind) {
            (TokenKind::AdminToken, TokenKind::ApiKey) => {
                ApiError::forbidden("API keys cannot use the management API")
            }
            _ => ApiError::unauthenticated(format!(
                "this endpoint needs {}",
                match expected {
                    TokenKind::ApiKey => "an API key",
                    TokenKind::ClientKey => "the app's client key",
                    TokenKind::AdminToken => "an admin token",
                    TokenKind::Device => "a device token",
                }
            )),
        });
    }
    let record = state.store.credential(id)?.ok_or_else(bad)?;
    if Some(record.kind) != kind.credential_kind() || !verify_secret(secret, &record.secret_sha256)
    {
        return Err(bad());
    }
    Ok(record)
}

/// The app a credential belongs to, refusing suspended or vanished apps.
fn live_app(state: &AppState, record: &CredentialRecord) -> Result<String, ApiError> {
    let bad = || ApiError::unauthenticated("the credential is invalid or revoked");
    let app = record.app.clone().ok_or_else(bad)?;
    let app_record = state.store.app(&app)?.ok_or_else(bad)?;
    if app_record.suspended {
        return Err(ApiError::forbidden("the app is suspended"));
    }
    Ok(app)
}

/// A caller holding a server API key.
pub struct ApiKey {
    pub app: String,
    pub key_id: String,
    pub scopes: Vec<Scope>,
}

impl ApiKey {
    /// # Errors
    /// `forbidden` when the key lacks the scope.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            let name = match scope {
                Scope::Push => "push",
                Scope::Read => "read",
                Scope::Manage => "manage",
            };
            Err(ApiError::forbidden(format!(
                "this API key lacks the {name} scope"
            )))
        }
    }
}

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let record = credential(state, parts, TokenKind::ApiKey)?;
        let app = live_app(state, &record)?;
        Ok(Self {
            app,
            key_id: record.id,
            scopes: record.scopes,
        })
    }
}

/// A caller holding an app's client key (device registration only).
pub struct ClientKey {
    pub app: String,
}

impl FromRequestParts<AppState> for ClientKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let record = credential(state, parts, TokenKind::ClientKey)?;
        Ok(Self {
            app: live_app(state, &record)?,
        })
    }
}

pub use super::principal::Admin;

/// A device, by its token in `Authorization: Bearer …` or (for browsers' `EventSource`,
/// which cannot set headers) the `token` query parameter. The same check as WebSocket.
pub struct Device(pub crate::gateway::DeviceIdentity);

#[derive(serde::Deserialize)]
struct TokenParam {
    token: Option<String>,
}

impl FromRequestParts<AppState> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let from_query = axum::extract::Query::<TokenParam>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.token);
        let token = match (bearer(&parts.headers), from_query.as_deref()) {
            (Some(t), _) | (None, Some(t)) => t.to_owned(),
            (None, None) => {
                return Err(ApiError::unauthenticated(
                    "missing device token (Authorization: Bearer … or ?token=…)",
                ))
            }
        };
        match crate::gateway::authenticate_device(&state.store, &token) {
            Ok(id) => Ok(Self(id)),
            Err(crate::gateway::DeviceAuthError::Unauthenticated) => {
                Err(ApiError::unauthenticated("the device token is invalid"))
            }
            Err(crate::gateway::DeviceAuthError::Suspended) => {
                Err(ApiError::forbidden("the app is suspended"))
            }
            Err(crate::gateway::DeviceAuthError::Store(e)) => Err(e.into()),
        }
    }
}
