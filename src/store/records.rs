//! Records kept in the store's tables: JSON values, except message records (binary, see
//! `message_codec`).

use serde::{Deserialize, Serialize};

use crate::domain::Platform;

/// Per-app overrides of the configured limits; `None` means "use the default".
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox_cap: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushes_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppRecord {
    pub name: String,
    pub created_at_ms: u64,
    pub suspended: bool,
    /// HS256 secret for user tokens. Kept in clear: the server must sign-check with it.
    pub signing_secret: String,
    pub limits: AppLimits,
    /// Whether devices may subscribe to topics themselves with a `subscribe` frame.
    #[serde(default)]
    pub allow_client_subscribe: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Push,
    Read,
    Manage,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A server API key of one app, with scopes.
    ApiKey,
    /// An app's client key: registers devices, nothing else.
    ClientKey,
    /// An owner's admin token for the management API.
    AdminToken,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CredentialRecord {
    pub id: String,
    pub kind: CredentialKind,
    /// The app it belongs to; `None` for admin tokens.
    pub app: Option<String>,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Operator,
    Viewer,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub login: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
    pub apps: Vec<String>,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: String,
    pub app: String,
    pub platform: Platform,
    pub user: Option<String>,
    pub topics: Vec<String>,
    /// Hex SHA-256 of the device token's secret part.
    pub token_sha256: String,
    pub created_at_ms: u64,
    pub last_seen_ms: Option<u64>,
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Stored for its recipients (or sent live, with TTL 0).
    #[default]
    Accepted,
    /// Waiting in the schedule for `send_at`.
    Scheduled,
    /// Cancelled before (full) delivery.
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: String,
    /// 0 while scheduled.
    pub seq: u64,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub target: String,
    pub targeted: u64,
    pub delivered: u64,
    pub acked: u64,
    pub opened: u64,
    pub expired: u64,
    /// Mailbox entries still holding this message; its body is deleted at zero.
    pub pending: u64,
    /// The topic log holding it (`$all` for broadcasts); `None` for direct messages.
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub lifecycle: Lifecycle,
    #[serde(default)]
    pub send_at_ms: Option<u64>,
    #[serde(default)]
    pub collapse_key: Option<String>,
    /// Undelivered copies replaced by a newer message with the same collapse key.
    #[serde(default)]
    pub replaced: u64,
    /// Copies dropped because a device's mailbox was full (each told by a `gap` frame).
    #[serde(default)]
    pub dropped: u64,
    /// Copies removed by cancellation (or because their device was deleted).
    #[serde(default)]
    pub cancelled: u64,
    /// TTL 0: offered to connected devices only, never stored.
    #[serde(default)]
    pub live_only: bool,
    /// The start of the notification's title ([`TITLE_KEPT_CHARS`] characters at most), kept
    /// with the counts so the console can name a push after its body is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Characters of a notification title kept in its message record.
pub const TITLE_KEPT_CHARS: usize = 120;

/// The part of a title a message record keeps.
#[must_use]
pub fn kept_title(title: Option<&str>) -> Option<String> {
    title.map(|t| t.chars().take(TITLE_KEPT_CHARS).collect())
}

/// The first answer to a push with an idempotency key, kept for 24 hours.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// SHA-256 of the canonical request, to tell a retry from a different request.
    pub request_sha256: String,
    pub id: String,
    pub recipients: Option<u64>,
    pub created_at_ms: u64,
    /// The send time of a scheduled push, part of the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at_ms: Option<u64>,
}

/// One management action: who did what, to which app, when, from where.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub at_ms: u64,
    /// The credential (admin token or API key id) or console user that acted.
    pub actor: String,
    /// A dotted verb, e.g. `app.create`, `key.revoke`, `backup.download`.
    pub action: String,
    pub app: Option<String>,
    /// The object acted on (key id, device id, …), when there is one.
    pub target: Option<String>,
    /// The remote address of the request.
    pub peer: Option<String>,
}
