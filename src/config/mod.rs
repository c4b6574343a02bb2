//! Configuration: the schema with defaults and documentation ([`schema`]), loading from a
//! TOML file with command-line overrides, validation that returns every error found, and
//! the commented default file ([`DEFAULT_CONFIG_TOML`]).

mod default_file;
pub mod reload;
mod schema;

pub use default_file::DEFAULT_CONFIG_TOML;

pub use schema::{
    Config, GatewayConfig, LimitsConfig, LogConfig, LogFormat, ServerConfig, StorageConfig,
    StorageDurability, TlsConfig, TlsMode,
};

use std::path::Path;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("config is not valid:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads and validates a TOML file. An empty file is refused: it is far more often a
    /// truncated write than an intent to run on defaults.
    ///
    /// # Errors
    /// When the file cannot be read, does not parse, or fails validation.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        if text.trim().is_empty() {
            return Err(ConfigError::Parse {
                path: shown,
                message: "the file is empty".into(),
            });
        }
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown,
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }
}

/// The loud warning logged whenever the service runs (or reloads) with `tls.mode = "off"`.
pub fn warn_plaintext() {
    tracing::warn!(
        "TLS IS OFF (tls.mode = \"off\"): every token, key, password and message crosses the \
         network in clear text. Use this only behind a TLS-terminating proxy on a trusted link."
    );
}
