//! Who may call which management route: one table from (method, route) to the permission
//! it needs, and one function deciding role × app scope × permission. The [`Admin`]
//! extractor applies it to every management request before the handler runs, so no handler
//! can forget; a route missing from the table is refused (a test checks none is missing).
//!
//! [`Admin`]: super::extract::Admin

use crate::store::records::Role;

use super::ApiError;

/// What a management route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Any signed-in console user or admin token (own session, own password).
    Session,
    /// Read an app's data (viewer and up, in its apps).
    Read,
    /// Send and cancel pushes (operator and up, in its apps).
    Send,
    /// Change an app: limits, keys, devices (admin and up, in its apps); outside an app,
    /// server-wide reads that admins need (audit of their apps, settings).
    Manage,
    /// Owners only: create and delete apps, users, backups.
    Owner,
}

impl Permission {
    /// The least role that holds it.
    #[must_use]
    pub const fn least_role(self) -> Role {
        match self {
            Self::Session | Self::Read => Role::Viewer,
            Self::Send => Role::Operator,
            Self::Manage => Role::Admin,
            Self::Owner => Role::Owner,
        }
    }
}

/// Routes that need no principal (the login itself).
pub const PUBLIC: &[(&str, &str)] = &[("POST", "/v1/admin/login")];

/// Every management route (method, route as registered) and what it needs.
pub const POLICY: &[(&str, &str, Permission)] = &[
    ("GET", "/v1/apps", Permission::Read),
    ("POST", "/v1/apps", Permission::Owner),
    ("GET", "/v1/apps/{app}", Permission::Read),
    ("PATCH", "/v1/apps/{app}", Permission::Manage),
    ("DELETE", "/v1/apps/{app}", Permission::Owner),
    ("GET", "/v1/apps/{app}/keys", Permission::Read),
    ("POST", "/v1/apps/{app}/keys", Permission::Manage),
    ("DELETE", "/v1/apps/{app}/keys/{id}", Permission::Manage),
    ("POST", "/v1/apps/{app}/client-key", Permission::Manage),
    ("POST", "/v1/apps/{app}/signing-secret", Permission::Manage),
    ("GET", "/v1/apps/{app}/messages", Permission::Read),
    ("POST", "/v1/apps/{app}/messages", Permission::Send),
    ("GET", "/v1/apps/{app}/messages/{id}", Permission::Read),
    ("DELETE", "/v1/apps/{app}/messages/{id}", Permission::Send),
    ("GET", "/v1/apps/{app}/devices", Permission::Read),
    ("PATCH", "/v1/apps/{app}/devices/{id}", Permission::Manage),
    ("DELETE", "/v1/apps/{app}/devices/{id}", Permission::Manage),
    ("GET", "/v1/apps/{app}/stats", Permission::Read),
    ("GET", "/v1/admin/backup", Permission::Owner),
    ("GET", "/v1/admin/audit", Permission::Manage),
    ("POST", "/v1/admin/logout", Permission::Session),
    ("GET", "/v1/admin/me", Permission::Session),
    ("POST", "/v1/admin/password", Permission::Session),
    ("GET", "/v1/admin/overview", Permission::Session),
    ("GET", "/v1/admin/settings", Permission::Manage),
    ("GET", "/v1/admin/ca.crt", Permission::Session),
    ("GET", "/v1/admin/users", Permission::Owner),
    ("POST", "/v1/admin/users", Permission::Owner),
    ("PATCH", "/v1/admin/users/{user}", Permission::Owner),
    ("DELETE", "/v1/admin/users/{user}", Permission::Owner),
];

/// The permission a route needs, if it is in the table.
#[must_use]
pub fn permission(method: &str, route: &str) -> Option<Permission> {
    POLICY
        .iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map(|(_, _, p)| *p)
}

const fn rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Operator => 1,
        Role::Admin => 2,
        Role::Owner => 3,
    }
}

/// Whether a role holds a permission (app scope aside).
#[must_use]
pub const fn role_allows(role: Role, permission: Permission) -> bool {
    rank(role) >= rank(permission.least_role())
}

/// Decides one request: a route outside the table is forbidden; an app outside the
/// principal's scope is `not_found` (its existence is never revealed), checked before the
/// role; then the role must hold the route's permission (else `forbidden`).
///
/// `apps` is `None` for principals that see every app (owners, admin tokens).
///
/// # Errors
/// `forbidden` or `not_found` as above.
pub fn authorize(
    role: Role,
    apps: Option<&[String]>,
    method: &str,
    route: &str,
    app: Option<&str>,
) -> Result<(), ApiError> {
    let Some(needed) = permission(method, route) else {
        return Err(ApiError::forbidden("no access policy covers this route"));
    };
    if let (Some(app), Some(scope)) = (app, apps) {
        if !scope.iter().any(|a| a == app) {
            return Err(ApiError::not_found("app not found"));
        }
    }
    if !role_allows(role, needed) {
        return Err(ApiError::forbidden(format!(
            "the {} role cannot do this",
            role_name(role)
        )));
    }
    Ok(())
}

#[must_use]
pub const fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Operator => "operator",
        Role::Viewer => "viewer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_management_route_has_exactly_one_policy_or_is_public() {
        for (path, methods) in super::super::route_list() {
            if !(path.starts_with("/v1/apps") || path.starts_with("/v1/admin")) {
                continue;
            }
            for m in methods {
                let m = m.as_str();
                let public = PUBLIC.contains(&(m, path));
                let entries = POLICY
                    .iter()
                    .filter(|(pm, pp, _)| *pm == m && *pp == path)
                    .count();
                assert!(
                    public ^ (entries == 1),
                    "{m} {path}: needs exactly one policy entry (or be public)"
                );
            }
        }
        let served = super::super::route_list();
        for (m, p, _) in POLICY {
            assert!(
                served
                    .iter()
                    .any(|(sp, sm)| sp == p && sm.iter().any(|x| x.as_str() == *m)),
                "policy for a route that is not served: {m} {p}"
            );
        }
    }

    #[test]
    fn scope_is_checked_before_role_and_roles_nest() {
        let apps = vec!["a".to_owned()];
        let scoped = Some(apps.as_slice());
        let r = authorize(Role::Viewer, scoped, "PATCH", "/v1/apps/{app}", Some("b"));
        assert_eq!(r.map_err(|e| e.code), Err("not_found"));
        let r = authorize(Role::Viewer, scoped, "PATCH", "/v1/apps/{app}", Some("a"));
        assert_eq!(r.map_err(|e| e.code), Err("forbidden"));
        assert!(authorize(Role::Admin, scoped, "PATCH", "/v1/apps/{app}", Some("a")).is_ok());
        assert!(authorize(Role::Owner, None, "GET", "/v1/nowhere", None).is_err());
        for p in [
            Permission::Session,
            Permission::Read,
            Permission::Send,
            Permission::Manage,
            Permission::Owner,
        ] {
            assert!(role_allows(Role::Owner, p));
        }
        assert!(!role_allows(Role::Operator, Permission::Manage));
        assert!(role_allows(Role::Operator, Permission::Send));
        assert!(!role_allows(Role::Viewer, Permission::Send));
    }
}
