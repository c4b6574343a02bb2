//! Client protocol frames (JSON text). Server → client `message` frames are encoded once in
//! the store ([`crate::domain::encode_message_frame`]); the rest are built here.

use serde::Deserialize;

use crate::domain::{IdList, MAX_BATCH_IDS};

/// Largest client frame accepted, in bytes.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// A frame sent by a client.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    Hello { token: String },
    Ack { ids: IdList },
    Opened { ids: IdList },
    Subscribe { topics: Vec<String> },
    Unsubscribe { topics: Vec<String> },
}

/// Every field any client frame has, read in one pass. An internally tagged enum would make
/// serde buffer the whole frame and copy every string twice; acks arrive once per batch of
/// deliveries per device, so they are read straight into their fields and checked after.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    token: Option<String>,
    ids: Option<IdList>,
    topics: Option<Vec<String>>,
}

/// Why a client frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is larger than {MAX_CLIENT_FRAME} bytes")]
    TooLarge,
    #[error("frame is not valid: {0}")]
    Invalid(String),
    #[error("ids: at most {MAX_BATCH_IDS} per frame")]
    TooManyIds,
}

impl ClientFrame {
    /// Parses and bounds a client frame.
    ///
    /// # Errors
    /// A [`FrameError`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        if text.len() > MAX_CLIENT_FRAME {
            return Err(FrameError::TooLarge);
        }
        let f: Fields<'_> =
            serde_json::from_str(text).map_err(|e| FrameError::Invalid(e.to_string()))?;
        let frame = Self::from_fields(f)?;
        match &frame {
            Self::Ack { ids } | Self::Opened { ids } if ids.len() > MAX_BATCH_IDS => {
                Err(FrameError::TooManyIds)
            }
            Self::Subscribe { topics } | Self::Unsubscribe { topics } if topics.len() > 64 => {
                Err(FrameError::Invalid("topics: at most 64 per frame".into()))
            }
            _ => Ok(frame),
        }
    }

    /// The frame its `type` names, with exactly that type's field.
    fn from_fields(f: Fields<'_>) -> Result<Self, FrameError> {
        let kind = f.kind.as_ref();
        match (kind, f.token, f.ids, f.topics) {
            ("hello", Some(token), None, None) => Ok(Self::Hello { token }),
            ("ack", None, Some(ids), None) => Ok(Self::Ack { ids }),
            ("opened", None, Some(ids), None) => Ok(Self::Opened { ids }),
            ("subscribe", None, None, Some(topics)) => Ok(Self::Subscribe { topics }),
            ("unsubscribe", None, None, Some(topics)) => Ok(Self::Unsubscribe { topics }),
            ("hello" | "ack" | "opened" | "subscribe" | "unsubscribe", token, ids, topics) => {
                let expected = match kind {
                    "hello" => "token",
                    "ack" | "opened" => "ids",
                    _ => "topics",
                };
                let extra = [
                    ("token", token.is_some()),
                    ("ids", ids.is_some()),
                    ("topics", topics.is_some()),
                ]
                .into_iter()
                .find(|&(name, set)| set && name != expected);
                Err(FrameError::Invalid(match extra {
                    Some((name, _)) => format!("unknown field `{name}` in a `{kind}` frame"),
                    None => format!("missing field `{expected}`"),
                }))
            }
            _ => Err(FrameError::Invalid(format!(
                "unknown variant `{kind}`, expected one of `hello`, `ack`, `opened`, \
                 `subscribe`, `unsubscribe`"
            ))),
        }
    }
}

/// `{"type":"welcome","device_id":…,"heartbeat":…}`
#[must_use]
pub fn welcome(device_id: &str, heartbeat_secs: u64) -> String {
    serde_json::json!({"type": "welcome", "device_id": device_id, "heartbeat": heartbeat_secs})
        .to_string()
}

/// `{"type":"gap","dropped":N}`: N messages were dropped by the mailbox cap.
#[must_use]
pub fn gap(dropped: u64) -> String {
    serde_json::json!({"type": "gap", "dropped": dropped}).to_string()
}

/// `{"type":"error","code":…,"message":…}`
#[must_use]
pub fn error(code: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "code": code, "message": message}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_strictly() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ack","ids":["msg_1"]}"#),
            Ok(ClientFrame::Ack {
                ids: ["msg_1"].into_iter().collect()
            })
        );
        assert!(ClientFrame::parse(r#"{"type":"ack","ids":[],"x":1}"#).is_err());
        assert!(ClientFrame::parse(r#"{"type":"nope"}"#).is_err());
        assert!(ClientFrame::parse("not json").is_err());
        let many = serde_json::json!({"type":"ack","ids": vec!["msg_1"; MAX_BATCH_IDS + 1]});
        assert_eq!(
            ClientFrame::parse(&many.to_string()),
            Err(FrameError::TooManyIds)
        );
    }

    #[test]
    fn each_type_takes_exactly_its_own_field() {
        let ok = [
            (
                r#"{"type":"hello","token":"t"}"#,
                ClientFrame::Hello { token: "t".into() },
            ),
            (
                r#"{"ids":["a"],"type":"opened"}"#,
                ClientFrame::Opened {
                    ids: ["a"].into_iter().collect(),
                },
            ),
            (
                r#"{"type":"subscribe","topics":["n"]}"#,
                ClientFrame::Subscribe {
                    topics: vec!["n".into()],
                },
            ),
            (
                r#"{"type":"unsubscribe","topics":[]}"#,
                ClientFrame::Unsubscribe { topics: vec![] },
            ),
            (
                r#"{"type":"\u0061ck","ids":[]}"#,
                ClientFrame::Ack {
                    ids: IdList::default(),
                },
            ),
        ];
        for (text, frame) in ok {
            assert_eq!(ClientFrame::parse(text), Ok(frame), "{text}");
        }
        let refused = [
            (r#"{"type":"ack"}"#, "missing field `ids`"),
            (r#"{"type":"hello"}"#, "missing field `token`"),
            (
                r#"{"type":"ack","ids":[],"token":"t"}"#,
                "unknown field `token`",
            ),
            (
                r#"{"type":"hello","token":"t","topics":[]}"#,
                "unknown field `topics`",
            ),
            (r#"{"type":"subscribe","ids":[]}"#, "unknown field `ids`"),
            (r#"{"type":"ack","ids":[],"ids":[]}"#, "duplicate field"),
            (r#"{"type":7,"ids":[]}"#, "invalid type"),
            (r#"{"ids":[]}"#, "missing field `type`"),
            (r#"{"type":"welcome"}"#, "unknown variant `welcome`"),
            (r#"{"type":"ack","ids":[1]}"#, "invalid type"),
        ];
        for (text, why) in refused {
            match ClientFrame::parse(text) {
                Err(FrameError::Invalid(msg)) => assert!(msg.contains(why), "{text}: {msg}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
