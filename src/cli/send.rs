//! `warbler send`: one push from the command line (`POST /v1/messages` with an API key).

use clap::{ArgGroup, Args};
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::remote::{field, print, CliError, ServerArgs};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["device", "devices", "user", "users", "topic", "all"])))]
pub struct SendArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// API key with scope `push`. Default: the data dir's initial key.
    #[arg(long, env = "WARBLER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Send to one device (`dev_…`).
    #[arg(long)]
    device: Option<String>,
    /// Send to these devices (comma-separated).
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
    /// Send to every device of this user.
    #[arg(long)]
    user: Option<String>,
    /// Send to every device of these users (comma-separated).
    #[arg(long, value_delimiter = ',')]
    users: Vec<String>,
    /// Send to every device subscribed to this topic.
    #[arg(long)]
    topic: Option<String>,
    /// Send to every device of the app.
    #[arg(long)]
    all: bool,
    /// Notification title.
    #[arg(long)]
    title: Option<String>,
    /// Notification body.
    #[arg(long)]
    body: Option<String>,
    /// Data payload: a JSON object.
    #[arg(long, value_name = "JSON")]
    data: Option<String>,
    /// Time to live in seconds (0: only to devices connected now).
    #[arg(long)]
    ttl: Option<u64>,
    /// `high` or `normal`.
    #[arg(long)]
    priority: Option<String>,
    /// A newer message with this key replaces an undelivered older one.
    #[arg(long)]
    collapse_key: Option<String>,
    /// Send later, at this RFC 3339 time.
    #[arg(long)]
    send_at: Option<String>,
    /// The same key again returns the first answer and sends nothing more.
    #[arg(long)]
    idempotency_key: Option<String>,
}

impl SendArgs {
    fn body(&self) -> Result<Value, CliError> {
        let to = if let Some(d) = &self.device {
            json!({"device": d})
        } else if !self.devices.is_empty() {
            json!({"devices": self.devices})
        } else if let Some(u) = &self.user {
            json!({"user": u})
        } else if !self.users.is_empty() {
            json!({"users": self.users})
        } else if let Some(t) = &self.topic {
            json!({"topic": t})
        } else {
            json!({"all": true})
        };
        let mut body = Map::new();
        body.insert("to".into(), to);
        let mut notification = Map::new();
        for (name, value) in [("title", &self.title), ("body", &self.body)] {
            if let Some(v) = value {
                notification.insert(name.into(), json!(v));
            }
        }
        if !notification.is_empty() {
            body.insert("notification".into(), Value::Object(notification));
        }
        if let Some(text) = &self.data {
            let data: Value = serde_json::from_str(text)
                .map_err(|e| CliError::Usage(format!("--data is not JSON: {e}")))?;
            if !data.is_object() {
                return Err(CliError::Usage("--data must be a JSON object".into()));
            }
            body.insert("data".into(), data);
        }
        if let Some(ttl) = self.ttl {
            body.insert("ttl".into(), json!(ttl));
        }
        for (name, value) in [
            ("priority", &self.priority),
            ("collapse_key", &self.collapse_key),
            ("send_at", &self.send_at),
            ("idempotency_key", &self.idempotency_key),
        ] {
            if let Some(v) = value {
                body.insert(name.into(), json!(v));
            }
        }
        Ok(Value::Object(body))
    }
}

pub async fn run(args: SendArgs) -> Result<(), CliError> {
    let body = args.body()?;
    let key = args
        .server
        .credential(args.api_key.as_deref(), "API key", |c| c.api_key)?;
    let client = args.server.client()?;
    let reply = client
        .call_expecting(
            Method::POST,
            "/v1/messages",
            Some(&key),
            Some(&body),
            StatusCode::ACCEPTED,
        )
        .await?;
    print(args.server.json, &reply, || {
        let recipients = reply["recipients"]
            .as_u64()
            .map_or_else(|| "every subscriber".to_owned(), |n| n.to_string());
        format!("accepted {} for {recipients}", field(&reply, "id"))
    });
    Ok(())
}

impl SendArgs {
    pub(super) fn json(&self) -> bool {
        self.server.json
    }
}
