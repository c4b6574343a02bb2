//! Push requests as the API receives them, their validation, and the one encoding of a
//! message frame that every session shares.

use serde::{Deserialize, Serialize};

use super::ids::{validate_device_id, validate_topic, validate_user, IdError};

/// The most ids a batch may carry: `devices`/`users` targets and ack frames.
pub const MAX_BATCH_IDS: usize = 1000;

/// The `to` object of a push: exactly one of its fields is set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetInput {
    pub device: Option<String>,
    pub devices: Option<Vec<String>>,
    pub user: Option<String>,
    pub users: Option<Vec<String>>,
    pub topic: Option<String>,
    pub all: Option<bool>,
}

/// A validated target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Devices(Vec<String>),
    Users(Vec<String>),
    Topic(String),
    All,
}

impl Target {
    /// Whether the number of recipients is known when the push is accepted.
    #[must_use]
    pub fn summary(&self) -> String {
        match self {
            Target::Devices(d) if d.len() == 1 => format!("device:{}", d[0]),
            Target::Devices(d) => format!("devices:{}", d.len()),
            Target::Users(u) if u.len() == 1 => format!("user:{}", u[0]),
            Target::Users(u) => format!("users:{}", u.len()),
            Target::Topic(t) => format!("topic:{t}"),
            Target::All => "all".to_owned(),
        }
    }
}

/// The notification part of a message; every field optional, all bounded by the
/// message size limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badge: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Web,
    Android,
    Ios,
    Desktop,
    Iot,
}

/// `POST /v1/messages` body as received.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    pub to: TargetInput,
    pub notification: Option<Notification>,
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    pub ttl: Option<u64>,
    pub priority: Option<Priority>,
    pub collapse_key: Option<String>,
    pub send_at: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A field-level validation failure: which field, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

fn field(field: &'static str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field,
        reason: reason.into(),
    }
}

fn ids(
    field_name: &'static str,
    list: Vec<String>,
    check: fn(&str) -> Result<(), IdError>,
) -> Result<Vec<String>, FieldError> {
    if list.is_empty() {
        return Err(field(field_name, "must not be empty"));
    }
    if list.len() > MAX_BATCH_IDS {
        return Err(field(
            field_name,
            format!("at most {MAX_BATCH_IDS} entries"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for id in list {
        check(&id).map_err(|e| field(field_name, e.0))?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

impl TargetInput {
    /// Checks that exactly one target is named and that its ids are well formed.
    ///
    /// # Errors
    /// A [`FieldError`] naming the offending field.
    pub fn validate(self) -> Result<Target, FieldError> {
        let set = usize::from(self.device.is_some())
            + usize::from(self.devices.is_some())
            + usize::from(self.user.is_some())
            + usize::from(self.users.is_some())
            + usize::from(self.topic.is_some())
            + usize::from(self.all.is_some());
        if set != 1 {
            return Err(field(
                "to",
                "name exactly one of device, devices, user, users, topic, all",
            ));
        }
        if let Some(topic) = self.topic {
            validate_topic(&topic).map_err(|e| field("to.topic", e.0))?;
            return Ok(Target::Topic(topic));
        }
        if let Some(all) = self.all {
            if !all {
                return Err(field("to.all", "must be true"));
            }
            return Ok(Target::All);
        }
        if let Some(d) = self.device {
            return Ok(Target::Devices(ids(
                "to.device",
                vec![d],
                validate_device_id,
            )?));
        }
        if let Some(d) = self.devices {
            return Ok(Target::Devices(ids("to.devices", d, validate_device_id)?));
        }
        if let Some(u) = self.user {
            return Ok(Target::Users(ids("to.user", vec![u], validate_user)?));
        }
        let users = self.users.unwrap_or_default();
        Ok(Target::Users(ids("to.users", users, validate_user)?))
    }
}

#[derive(Serialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification: Option<&'a Notification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    collapse_key: Option<&'a str>,
    priority: Priority,
    sent_at: &'a str,
}

/// What a `message` frame carries besides its id and seq.
#[derive(Debug, Clone, Copy)]
pub struct FrameParts<'a> {
    pub notification: Option<&'a Notification>,
    pub data: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// The topic for topic pushes; `None` for direct pushes and broadcasts.
    pub topic: Option<&'a str>,
    pub collapse_key: Option<&'a str>,
    pub priority: Priority,
    pub sent_at: &'a str,
}

/// Encodes a `message` frame once; every session that delivers it shares these bytes.
///
/// # Errors
/// Only if `serde_json` fails to write into memory, which it does not for these types.
pub fn encode_message_frame(
    id: &str,
    seq: u64,
    parts: FrameParts<'_>,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Frame {
        kind: "message",
        id,
        seq,
        notification: parts.notification,
        data: parts.data,
        topic: parts.topic,
        collapse_key: parts.collapse_key,
        priority: parts.priority,
        sent_at: parts.sent_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(json: &str) -> Result<Target, FieldError> {
        serde_json::from_str::<TargetInput>(json)
            .map_err(|e| field("to", e.to_string()))?
            .validate()
    }

    #[test]
    fn exactly_one_target_is_required() {
        assert!(target("{}").is_err());
        assert!(target(r#"{"device":"dev_a","user":"bob"}"#).is_err());
        assert_eq!(
            target(r#"{"device":"dev_a"}"#),
            Ok(Target::Devices(vec!["dev_a".into()]))
        );
    }

    #[test]
    fn target_lists_are_bounded_and_deduplicated() {
        assert_eq!(
            target(r#"{"users":["a","b","a"]}"#),
            Ok(Target::Users(vec!["a".into(), "b".into()]))
        );
        assert!(target(r#"{"devices":[]}"#).is_err());
        let many: Vec<String> = (0..=MAX_BATCH_IDS).map(|i| format!("dev_{i}")).collect();
        let json = serde_json::json!({ "devices": many }).to_string();
        let err = target(&json).unwrap_err();
        assert_eq!(err.field, "to.devices");
    }

    #[test]
    fn frames_carry_id_seq_and_payload() {
        let n = Notification {
            title: Some("hi".into()),
            ..Notification::default()
        };
        let parts = FrameParts {
            notification: Some(&n),
            data: None,
            topic: Some("news"),
            collapse_key: None,
            priority: Priority::High,
            sent_at: "t",
        };
        let bytes = encode_message_frame("msg_1", 7, parts).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["notification"]["title"], "hi");
        assert!(v.get("data").is_none());
        assert_eq!(v["topic"], "news");
    }
}
