//! What the client subcommands (`send`, `listen`, `app`, `key`) share: where the server is
//! and which CA to trust, where credentials come from (flag, environment, or the data dir's
//! `initial-credentials.json`), one error type with its exit codes, and JSON or text output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use hyper::StatusCode;

use crate::app::InitialCredentials;
use crate::client::{Client, ClientError};

/// Exit codes of the client subcommands (documented in `docs/cli.md`).
pub mod exit {
    /// Anything not listed below (an unexpected reply, a local I/O error).
    pub const FAILURE: u8 = 1;
    /// Bad command line or local input (clap uses 2 as well), or a credential not found.
    pub const USAGE: u8 = 2;
    /// The server refused the request as invalid (`invalid_request`, `payload_too_large`).
    pub const INVALID_REQUEST: u8 = 3;
    /// `unauthenticated`: the credential is missing, wrong, of the wrong kind or revoked.
    pub const UNAUTHENTICATED: u8 = 4;
    /// `forbidden`: a missing scope, a suspended app.
    pub const FORBIDDEN: u8 = 5;
    /// `not_found`: no such app, key, device or message.
    pub const NOT_FOUND: u8 = 6;
    /// `conflict`: the name is taken, or an idempotency key was reused differently.
    pub const CONFLICT: u8 = 7;
    /// `rate_limited` or `unavailable`: retry later.
    pub const RETRY_LATER: u8 = 8;
    /// The server could not be reached (refused, reset, TLS handshake failed).
    pub const UNREACHABLE: u8 = 10;
}

/// Where the server is and how to trust it; shared by every client subcommand.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Server base URL.
    #[arg(
        long,
        global = true,
        env = "WARBLER_URL",
        default_value = "https://127.0.0.1:8443"
    )]
    pub url: String,
    /// The server's data directory: its `tls/ca.crt` and `initial-credentials.json` supply
    /// the CA and any credential not given otherwise.
    #[arg(
        long,
        global = true,
        env = "WARBLER_DATA",
        default_value = "warbler-data"
    )]
    pub data_dir: PathBuf,
    /// CA certificate (PEM) to trust. Default DATA_DIR/tls/ca.crt.
    #[arg(long, global = true, env = "WARBLER_CA")]
    pub ca: Option<PathBuf>,
    /// Print results as JSON (one object per line) for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ServerArgs {
    /// An HTTPS client trusting the chosen CA.
    pub fn client(&self) -> Result<Client, CliError> {
        let ca = self
            .ca
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls").join("ca.crt"));
        if !ca.exists() {
            return Err(CliError::Usage(format!(
                "CA certificate {} not found: pass --ca FILE or --data-dir DIR",
                ca.display()
            )));
        }
        Client::new(&self.url, &ca).map_err(|e| match e {
            ClientError::Url(u) => {
                CliError::Usage(format!("--url {u}: expected https://HOST:PORT"))
            }
            other => CliError::Client(other),
        })
    }

    /// A credential from the flag/environment value, or else from the data dir's
    /// `initial-credentials.json` (`pick` chooses the field); `what` names it in errors.
    pub fn credential(
        &self,
        given: Option<&str>,
        what: &str,
        pick: impl Fn(InitialCredentials) -> String,
    ) -> Result<String, CliError> {
        if let Some(v) = given {
            return Ok(v.to_owned());
        }
        let path = self.data_dir.join("initial-credentials.json");
        let text = std::fs::read_to_string(&path).map_err(|_| {
            CliError::Usage(format!(
                "no {what}: pass it as a flag, in the environment, or point --data-dir at a data \
                 dir holding initial-credentials.json (looked for {})",
                path.display()
            ))
        })?;
        let creds: InitialCredentials = serde_json::from_str(&text)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        Ok(pick(creds))
    }
}

/// Why a client subcommand failed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The exit code for this failure.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::Client(ClientError::Api { code, status, .. }) => match code.as_str() {
                "invalid_request" | "payload_too_large" => exit::INVALID_REQUEST,
                "unauthenticated" => exit::UNAUTHENTICATED,
                "forbidden" => exit::FORBIDDEN,
                "not_found" => exit::NOT_FOUND,
                "conflict" => exit::CONFLICT,
                "rate_limited" | "unavailable" => exit::RETRY_LATER,
                _ if *status == StatusCode::SERVICE_UNAVAILABLE => exit::RETRY_LATER,
                _ => exit::FAILURE,
            },
            Self::Client(e) if e.is_unreachable() => exit::UNREACHABLE,
            Self::Client(_) | Self::Other(_) => exit::FAILURE,
        }
    }
}

/// Runs an async client subcommand on a small runtime and turns its outcome into an exit
/// code, printing a failure once: `warbler: error: CODE (STATUS): MESSAGE` on stderr, or,
/// with `--json`, `{"error":{"code","message","status"}}` on stdout as well.
pub fn finish<F>(json: bool, work: F) -> anyhow::Result<ExitCode>
where
    F: std::future::Future<Output = Result<(), CliError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(work) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            if json {
                let (code, message, status) = match &e {
                    CliError::Client(ClientError::Api {
                        status,
                        code,
                        message,
                    }) => (code.clone(), message.clone(), Some(status.as_u16())),
                    CliError::Client(c) if c.is_unreachable() => {
                        ("unreachable".into(), c.to_string(), None)
                    }
                    CliError::Usage(m) => ("usage".into(), m.clone(), None),
                    other => ("failure".into(), other.to_string(), None),
                };
                let body = serde_json::json!({"error": {"code": code, "message": message, "status": status}});
                println!("{body}");
            }
            match &e {
                CliError::Client(c) if c.is_unreachable() => {
                    eprintln!("warbler: error: cannot reach the server: {c}");
                }
                _ => eprintln!("warbler: error: {e}"),
            }
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

/// Prints `value` as one JSON line when `json`, else the `text` lines.
pub fn print(json: bool, value: &serde_json::Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

/// A string field of a JSON object, or "" (for text output).
#[must_use]
pub fn field<'a>(value: &'a serde_json::Value, name: &str) -> &'a str {
    value[name].as_str().unwrap_or("")
}

/// A client with one bearer credential, for commands that make several calls.
pub struct Authed {
    pub client: Client,
    pub token: String,
}

impl Authed {
    /// One call; the reply body when the status is `expected`.
    pub async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<serde_json::Value>,
        expected: StatusCode,
    ) -> Result<serde_json::Value, CliError> {
        Ok(self
            .client
            .call_expecting(method, path, Some(&self.token), body.as_ref(), expected)
            .await?)
    }
}
