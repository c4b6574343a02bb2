//! `warbler app list|create|get|suspend|resume|delete`: apps over the management API.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::remote::{field, print, Authed, CliError, ServerArgs};

#[derive(Debug, Args)]
pub struct AppArgs {
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
    command: AppCommand,
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// List apps (name, state, creation time).
    List,
    /// Create an app; prints its client key and signing secret (shown once).
    Create { name: String },
    /// Show one app with its limits.
    Get { name: String },
    /// Suspend an app: its keys and devices are refused, its sessions closed.
    Suspend { name: String },
    /// Resume a suspended app.
    Resume { name: String },
    /// Delete an app with all its keys, devices and messages.
    Delete { name: String },
}

pub async fn run(args: AppArgs) -> Result<(), CliError> {
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
        AppCommand::List => {
            let reply = admin
                .call(Method::GET, "/v1/apps?limit=1000", None, StatusCode::OK)
                .await?;
            print(json, &reply, || {
                let mut out = format!("{:<32}  {:<9}  CREATED", "APP", "STATE");
                for app in reply["apps"].as_array().into_iter().flatten() {
                    let id = field(app, "id");
                    let created = field(app, "created_at");
                    let _ = write!(out, "\n{id:<32}  {:<9}  {created}", state(app));
                }
                out
            });
        }
        AppCommand::Create { name } => {
            let body = json!({ "name": name });
            let reply = admin
                .call(Method::POST, "/v1/apps", Some(body), StatusCode::CREATED)
                .await?;
            print(json, &reply, || {
                format!(
                    "created app {}\nclient key:     {}\nsigning secret: {}\n(both are shown only now)",
                    field(&reply, "id"),
                    field(&reply, "client_key"),
                    field(&reply, "signing_secret")
                )
            });
        }
        AppCommand::Get { name } => {
            let path = format!("/v1/apps/{name}");
            let reply = admin.call(Method::GET, &path, None, StatusCode::OK).await?;
            print(json, &reply, || {
                format!(
                    "app {}\nstate:   {}\ncreated: {}\nlimits:  {}",
                    field(&reply, "id"),
                    state(&reply),
                    field(&reply, "created_at"),
                    reply["limits"]
                )
            });
        }
        AppCommand::Suspend { name } => set_suspended(&admin, json, &name, true).await?,
        AppCommand::Resume { name } => set_suspended(&admin, json, &name, false).await?,
        AppCommand::Delete { name } => {
            let path = format!("/v1/apps/{name}");
            admin
                .call(Method::DELETE, &path, None, StatusCode::NO_CONTENT)
                .await?;
            print(json, &json!({"id": name, "deleted": true}), || {
                format!("deleted app {name}")
            });
        }
    }
    Ok(())
}

async fn set_suspended(
    admin: &Authed,
    json: bool,
    name: &str,
    suspended: bool,
) -> Result<(), CliError> {
    let path = format!("/v1/apps/{name}");
    let body = json!({ "suspended": suspended });
    let reply = admin
        .call(Method::PATCH, &path, Some(body), StatusCode::OK)
        .await?;
    print(json, &reply, || format!("app {name} is {}", state(&reply)));
    Ok(())
}

fn state(app: &Value) -> &'static str {
    if app["suspended"] == json!(true) {
        "suspended"
    } else {
        "active"
    }
}

impl AppArgs {
    pub(super) fn json(&self) -> bool {
        self.server.json
    }
}
