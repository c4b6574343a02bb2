//! Console users and roles (owners only): `GET|POST /v1/admin/users`,
//! `PATCH|DELETE /v1/admin/users/{user}`. The last owner can be neither demoted nor deleted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, patch};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::domain::{format_rfc3339_ms, now_ms, validate_app_name};
use crate::store::records::{Role, UserRecord};
use crate::store::ConsoleOp;

use super::admin::audit;
use super::console_auth::new_password_hash;
use super::extract::{Admin, ApiJson};
use super::{policy, ApiError, AppState, Method, RouteTable};

/// Most apps one user may be given.
pub const MAX_USER_APPS: usize = 100;

pub fn routes(t: &mut RouteTable) {
    t.add(
        "/v1/admin/users",
        &[Method::GET, Method::POST],
        get(list_users).post(create_user),
    );
    t.add(
        "/v1/admin/users/{user}",
        &[Method::PATCH, Method::DELETE],
        patch(update_user).delete(delete_user),
    );
}

/// Logins: 1–64 of `a-z A-Z 0-9 . _ @ -`.
fn validate_login(login: &str) -> Result<(), ApiError> {
    let ok = !login.is_empty()
        && login.len() <= 64
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "user: 1-64 characters of letters, digits, '.', '_', '@', '-'",
        ))
    }
}

fn user_view(u: &UserRecord) -> serde_json::Value {
    json!({
        "user": u.login,
        "role": policy::role_name(u.role),
        "apps": u.apps,
        "created_at": format_rfc3339_ms(u.created_at_ms),
    })
}

/// Checks the apps named for a user exist; owners need none (they see all).
fn checked_apps(state: &AppState, role: Role, apps: Vec<String>) -> Result<Vec<String>, ApiError> {
    if role == Role::Owner {
        return Ok(Vec::new());
    }
    let mut apps = apps;
    apps.sort_unstable();
    apps.dedup();
    if apps.len() > MAX_USER_APPS {
        return Err(ApiError::invalid(format!("apps: at most {MAX_USER_APPS}")));
    }
    for app in &apps {
        validate_app_name(app).map_err(|e| ApiError::invalid(format!("apps: {}", e.0)))?;
        if state.store.app(app)?.is_none() {
            return Err(ApiError::invalid(format!("apps: no app named {app}")));
        }
    }
    Ok(apps)
}

async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let users: Vec<_> = state.store.console_users()?.iter().map(user_view).collect();
    Ok(Json(json!({ "users": users })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    user: String,
    password: String,
    role: Role,
    #[serde(default)]
    apps: Vec<String>,
}

async fn create_user(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<impl IntoResponse, ApiError> {
    validate_login(&body.user)?;
    let apps = checked_apps(&state, body.role, body.apps)?;
    let password_hash = new_password_hash("password", body.password).await?;
    let record = UserRecord {
        login: body.user.clone(),
        password_hash,
        role: body.role,
        apps,
        created_at_ms: now_ms(),
    };
    let user = state
        .store
        .console(ConsoleOp::CreateUser(record))
        .await
        .map_err(|e| ApiError::from_store(e, "user"))?;
    tracing::info!(user = %user.login, by = %admin.actor, "console user created");
    audit(&state, &admin, "user.create", None, Some(&user.login)).await?;
    Ok((StatusCode::CREATED, Json(user_view(&user))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    role: Option<Role>,
    apps: Option<Vec<String>>,
    password: Option<String>,
}

async fn update_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(login): Path<String>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<serde_json::Value>, ApiError> {
    validate_login(&login).map_err(|_| ApiError::not_found("user not found"))?;
    let current = state
        .store
        .console_user(&login)?
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    let role = body.role.unwrap_or(current.role);
    let apps = checked_apps(&state, role, body.apps.unwrap_or(current.apps))?;
    let hash = match body.password {
        Some(p) => Some(new_password_hash("password", p).await?),
        None => None,
    };
    let new_password = hash.is_some();
    let user = state
        .store
        .console(ConsoleOp::UpdateUser {
            login: login.clone(),
            update: Box::new(move |u| {
                u.role = role;
                u.apps = apps;
                if let Some(h) = hash {
                    u.password_hash = h;
                }
            }),
        })
        .await
        .map_err(|e| ApiError::from_store(e, "user"))?;
    if new_password {
        let keep = admin.session.as_ref().map(|s| s.key);
        state.console.remove_user(&login, keep.as_ref());
    }
    tracing::info!(user = %login, by = %admin.actor, "console user updated");
    audit(&state, &admin, "user.update", None, Some(&login)).await?;
    Ok(Json(user_view(&user)))
}

/// Takes a deleted app out of every user's apps, so a new app of the same name is not
/// visible to the old app's users.
pub(super) async fn forget_app(state: &AppState, app: &str) -> Result<(), ApiError> {
    for user in state.store.console_users()? {
        if !user.apps.iter().any(|a| a == app) {
            continue;
        }
        let gone = app.to_owned();
        let update = Box::new(move |u: &mut UserRecord| u.apps.retain(|a| *a != gone));
        match state
            .store
            .console(ConsoleOp::UpdateUser {
                login: user.login,
                update,
            })
            .await
        {
            Ok(_) | Err(crate::store::StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn delete_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(login): Path<String>,
) -> Result<StatusCode, ApiError> {
    validate_login(&login).map_err(|_| ApiError::not_found("user not found"))?;
    state
        .store
        .console(ConsoleOp::DeleteUser(login.clone()))
        .await
        .map_err(|e| ApiError::from_store(e, "user"))?;
    state.console.remove_user(&login, None);
    tracing::info!(user = %login, by = %admin.actor, "console user deleted");
    audit(&state, &admin, "user.delete", None, Some(&login)).await?;
    Ok(StatusCode::NO_CONTENT)
}
