//! Client protocol frames (JSON text). Server → client `message` frames are encoded once in
//! the store ([`crate::domain::encode_message_frame`]); the rest are built here.

use serde::Deserialize;

use crate::domain::MAX_BATCH_IDS;

/// Largest client frame accepted, in bytes.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// A frame sent by a client.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientFrame {
    Hello { token: String },
    Ack { ids: Vec<String> },
    Opened { ids: Vec<String> },
    Subscribe { topics: Vec<String> },
    Unsubscribe { topics: Vec<String> },
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
        let frame: Self =
            serde_json::from_str(text).map_err(|e| FrameError::Invalid(e.to_string()))?;
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
                ids: vec!["msg_1".into()]
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
}
