//! Configuration: the schema with defaults and documentation ([`schema`]), loading from a
//! TOML file with command-line overrides, validation that returns every error found, and
//! the commented default file ([`DEFAULT_CONFIG_TOML`]).

mod default_file;
pub mod env;
pub mod reload;
mod schema;

pub use default_file::DEFAULT_CONFIG_TOML;
pub use env::{EnvError, EnvLayer};

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
    #[error(transparent)]
    Env(#[from] EnvError),
}

impl Config {
    /// Reads and validates a TOML file alone (no environment layer). An empty file is
    /// refused: it is far more often a truncated write than an intent to run on defaults.
    ///
    /// # Errors
    /// When the file cannot be read, does not parse, or fails validation.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::load(Some(path), &EnvLayer::default())
    }

    /// The file (or, without one, the built-in defaults) with the environment layer laid
    /// over it, then validated. Errors caused by a variable name it.
    ///
    /// # Errors
    /// When the file cannot be read or does not parse, a variable's value does not fit its
    /// key, or the result fails validation.
    pub fn load(path: Option<&Path>, env: &EnvLayer) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        env.apply(&mut table);
        let config = Self::deserialize_merged(table, env)?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid(errors) => ConfigError::Invalid(
                errors
                    .into_iter()
                    .map(|message| name_variables(message, env))
                    .collect(),
            ),
            other => other,
        })?;
        Ok(config)
    }

    /// The schema read from a merged table; an error at a key the environment set names
    /// its variable.
    fn deserialize_merged(table: toml::Table, env: &EnvLayer) -> Result<Self, ConfigError> {
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            match env.var_for(&key) {
                Some(var) => ConfigError::Env(EnvError {
                    var: var.to_owned(),
                    message: e.inner().to_string(),
                }),
                None => ConfigError::Parse {
                    path: "the configuration".into(),
                    message: format!("{key}: {}", e.inner()),
                },
            }
        })
    }
}

/// Reads `path` as a TOML table. The file is first parsed alone into the schema, so its
/// own errors keep their line and column.
fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let parse_error = |message: String| ConfigError::Parse {
        path: shown.clone(),
        message,
    };
    if text.trim().is_empty() {
        return Err(parse_error("the file is empty".into()));
    }
    toml::from_str::<Config>(&text).map_err(|e| parse_error(e.to_string()))?;
    toml::from_str::<toml::Table>(&text).map_err(|e| parse_error(e.to_string()))
}

/// Adds "(set by WARBLER_…)" to a validation message about a key the environment set.
fn name_variables(message: String, env: &EnvLayer) -> String {
    let vars: Vec<&str> = env
        .settings()
        .iter()
        .filter(|s| message.contains(&s.key))
        .map(|s| s.var.as_str())
        .collect();
    if vars.is_empty() {
        message
    } else {
        format!("{message} (set by {})", vars.join(", "))
    }
}

/// The loud warning logged whenever the service runs (or reloads) with `tls.mode = "off"`.
pub fn warn_plaintext() {
    tracing::warn!(
        "TLS IS OFF (tls.mode = \"off\"): every token, key, password and message crosses the \
         network in clear text. Use this only behind a TLS-terminating proxy on a trusted link."
    );
}
