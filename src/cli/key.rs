//! `warbler key list|create|revoke`: an app's API keys over the management API.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use hyper::{Method, StatusCode};
use serde_json::json;

use super::remote::{field, print, Authed, CliError, ServerArgs};

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Admin token. Default: the data dir's initial owner token.
    #[arg(
        long,
        global = true,
        env = "WARBLER_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// List the app's API keys and client key (never their secrets).
    List { app: String },
    /// Create an API key; prints it (shown once).
    Create {
        app: String,
        /// A name to recognise the key by.
        #[arg(long, default_value = "api key")]
        name: String,
        /// Scopes, comma-separated: push, read, manage.
        #[arg(long, value_delimiter = ',', default_value = "push")]
        scopes: Vec<String>,
    },
    /// Revoke a key by id (`key_…`, or `ck_…` for the client key); it stops working at once.
    Revoke { app: String, id: String },
}

pub async fn run(args: KeyArgs) -> Result<(), CliError> {
    let token = args
        .server
        .credential(args.admin_token.as_deref(), "admin token", |c| {
            c.admin_token
        })?;
    let admin = Authed {
        client: args.server.client()?,
        token,
    };
    let json = args.server.json;
    match args.command {
        KeyCommand::List { app } => {
            let keys = format!("/v1/apps/{app}/keys");
            let reply = admin.call(Method::GET, &keys, None, StatusCode::OK).await?;
            print(json, &reply, || {
                let mut out = format!("{:<28}  {:<10}  {:<18}  NAME", "ID", "KIND", "SCOPES");
                for key in reply["keys"].as_array().into_iter().flatten() {
                    let scopes: Vec<&str> = key["scopes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str())
                        .collect();
                    let _ = write!(
                        out,
                        "\n{:<28}  {:<10}  {:<18}  {}",
                        field(key, "id"),
                        field(key, "kind"),
                        scopes.join(","),
                        field(key, "name")
                    );
                }
                out
            });
        }
        KeyCommand::Create { app, name, scopes } => {
            let keys = format!("/v1/apps/{app}/keys");
            let body = json!({ "name": name, "scopes": scopes });
            let reply = admin
                .call(Method::POST, &keys, Some(body), StatusCode::CREATED)
                .await?;
            print(json, &reply, || {
                format!(
                    "created {}\nkey: {}\n(shown only now)",
                    field(&reply, "id"),
                    field(&reply, "key")
                )
            });
        }
        KeyCommand::Revoke { app, id } => {
            let path = format!("/v1/apps/{app}/keys/{id}");
            admin
                .call(Method::DELETE, &path, None, StatusCode::NO_CONTENT)
                .await?;
            print(json, &json!({"id": id, "revoked": true}), || {
                format!("revoked {id}")
            });
        }
    }
    Ok(())
}

impl KeyArgs {
    pub(super) fn json(&self) -> bool {
        self.server.json
    }
}
