//! The configuration schema. Every key is optional; defaults are the embedded default
//! service. Unknown keys are errors, so a typo never silently means "default".

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening address and certificate names.
    pub server: ServerConfig,
    /// Durability of the store.
    pub storage: StorageConfig,
    /// TLS mode and certificate files.
    pub tls: TlsConfig,
    /// Default limits for every app.
    pub limits: LimitsConfig,
    /// Connection server settings.
    pub gateway: GatewayConfig,
    /// Logging.
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the one HTTPS port (API, connections, console). Restart to change.
    pub listen: SocketAddr,
    /// Extra names (DNS or IP) for the bootstrapped server certificate.
    pub hostnames: Vec<String>,
    /// Data directory; `--data` overrides it. Default `./warbler-data`.
    pub data_dir: PathBuf,
    /// Most concurrent connections (TLS handshakes included) the server accepts.
    pub max_connections: usize,
    /// Most concurrent connections from one IP address (devices behind one NAT share one).
    pub max_connections_per_ip: usize,
    /// Failed authentications one IP address may make per minute before its requests get
    /// 429 for the rest of that minute (guessing keys and tokens).
    pub auth_failures_per_minute: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            hostnames: Vec::new(),
            data_dir: PathBuf::from("warbler-data"),
            max_connections: 19_000,
            max_connections_per_ip: 10_000,
            auth_failures_per_minute: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageDurability {
    /// Answer 202 only after fsync.
    #[default]
    Immediate,
    /// Answer after an in-memory commit; fsync within ~50 ms.
    Relaxed,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `immediate` (fsync before 202) or `relaxed` (fsync batched on a timer).
    pub durability: StorageDurability,
    /// Milliseconds between sweeps: expiry, due scheduled pushes, old idempotency keys.
    pub sweep_interval_ms: u64,
    /// MiB of memory the store may use to cache database pages (reads and writes). The
    /// server's memory grows up to about this much as the database grows, then stays.
    pub cache_mib: u64,
    /// With `immediate` durability, make pushes, acks and delivery reports durable in the
    /// journal (one small sequential fsync per group commit) instead of in the database file.
    pub journal: bool,
    /// Longest time between checkpoints: durable database commits that empty the journal.
    pub checkpoint_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            durability: StorageDurability::default(),
            sweep_interval_ms: 1000,
            cache_mib: 256,
            journal: true,
            checkpoint_ms: 200,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Bootstrap a CA and a server certificate in the data dir.
    #[default]
    Auto,
    /// Use the certificate and key files below.
    Files,
    /// Plain HTTP, no TLS at all. `warbler serve` refuses it unless `--insecure-plaintext`
    /// is also given, and warns at start and on every reload.
    Off,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `auto`, `files`, or `off` (plain HTTP; needs `warbler serve --insecure-plaintext`).
    /// Restart to change.
    pub mode: TlsMode,
    /// Certificate chain (PEM) in `files` mode.
    pub cert: Option<PathBuf>,
    /// Private key (PEM) in `files` mode.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest `notification` + `data` of one message, in bytes (JSON-encoded).
    pub max_message_bytes: u32,
    /// Pushes per second per app (token bucket, burst of one second); past it 429 with
    /// `Retry-After`. An app may override it (`PATCH /v1/apps/{app}` `limits`).
    pub pushes_per_second: u32,
    /// TTL in seconds when a push names none.
    pub default_ttl: u64,
    /// Largest TTL a push may ask for, in seconds.
    pub max_ttl: u64,
    /// Most live device connections one app may hold at once (all transports); past it new
    /// connections get 429 (or WebSocket close 4029).
    pub max_connections: u64,
    /// Most messages one device's mailbox holds; past it the oldest is dropped and the
    /// device gets a `gap` frame saying how many.
    pub mailbox_cap: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 4096,
            pushes_per_second: 1000,
            default_ttl: 7 * 24 * 3600,
            max_ttl: 28 * 24 * 3600,
            mailbox_cap: 1000,
            max_connections: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Seconds between server pings; a peer silent for twice this long is dropped.
    pub heartbeat_secs: u64,
    /// Messages queued for one session before it falls back to catching up from the store.
    pub outbox_capacity: usize,
    /// Seconds a write to a connection may block before the consumer is cut off as slow.
    pub write_timeout_secs: u64,
    /// Seconds a new WebSocket has to say `hello` when its token is not in a header.
    pub hello_timeout_secs: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 25,
            outbox_capacity: 256,
            write_timeout_secs: 10,
            hello_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `warbler=debug,info`, …
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Checks values serde cannot: ranges and combinations. Returns every problem at once.
    ///
    /// # Errors
    /// `ConfigError::Invalid` listing each problem with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        for h in &self.server.hostnames {
            if h.is_empty() || h.len() > 253 || h.contains(char::is_whitespace) {
                errors.push(format!("server.hostnames: {h:?} is not a host name"));
            }
        }
        if !(10..=60_000).contains(&self.storage.sweep_interval_ms) {
            errors.push("storage.sweep_interval_ms must be between 10 and 60000".into());
        }
        if !(10..=60_000).contains(&self.storage.checkpoint_ms) {
            errors.push("storage.checkpoint_ms must be between 10 and 60000".into());
        }
        if !(8..=65_536).contains(&self.storage.cache_mib) {
            errors.push("storage.cache_mib must be between 8 and 65536".into());
        }
        if self.server.max_connections == 0 || self.server.max_connections_per_ip == 0 {
            errors.push(
                "server.max_connections and server.max_connections_per_ip must be at least 1"
                    .into(),
            );
        }
        if self.server.auth_failures_per_minute == 0 {
            errors.push("server.auth_failures_per_minute must be at least 1".into());
        }
        if self.tls.mode == TlsMode::Files && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            errors.push("tls.cert and tls.key are required when tls.mode = \"files\"".into());
        }
        let l = &self.limits;
        if !(64..=1_048_576).contains(&l.max_message_bytes) {
            errors.push("limits.max_message_bytes must be between 64 and 1048576".into());
        }
        if l.pushes_per_second == 0 {
            errors.push("limits.pushes_per_second must be at least 1".into());
        }
        if l.max_connections == 0 {
            errors.push("limits.max_connections must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&l.mailbox_cap) {
            errors.push("limits.mailbox_cap must be between 1 and 1000000".into());
        }
        if l.max_ttl == 0 || l.default_ttl > l.max_ttl {
            errors.push(
                "limits.default_ttl must be at most limits.max_ttl, which must be > 0".into(),
            );
        }
        let g = &self.gateway;
        if !(1..=3600).contains(&g.heartbeat_secs) {
            errors.push("gateway.heartbeat_secs must be between 1 and 3600".into());
        }
        if !(1..=65_536).contains(&g.outbox_capacity) {
            errors.push("gateway.outbox_capacity must be between 1 and 65536".into());
        }
        if g.write_timeout_secs == 0 || g.hello_timeout_secs == 0 {
            errors.push("gateway timeouts must be at least 1 second".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            errors.push(format!(
                "log.level: {:?} is not a valid filter",
                self.log.level
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_service_and_valid() {
        let c = Config::default();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8443");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("[server]\nlisten_addr = \"x\"").is_err());
        let c: Config =
            toml::from_str("[limits]\nmax_message_bytes = 1\n[tls]\nmode = \"files\"").unwrap();
        let Err(ConfigError::Invalid(errors)) = c.validate() else {
            panic!("should be invalid")
        };
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn contract_example_parses() {
        let text = r#"
[server]
listen = "127.0.0.1:8443"
hostnames = ["push.corp.internal"]
[storage]
durability = "immediate"
[tls]
mode = "auto"
cert = "/etc/warbler/tls/server.crt"
key = "/etc/warbler/tls/server.key"
[limits]
max_message_bytes = 4096
pushes_per_second = 1000
[log]
level = "info"
format = "text"
"#;
        let c: Config = toml::from_str(text).unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.server.hostnames, vec!["push.corp.internal".to_string()]);
    }
}
