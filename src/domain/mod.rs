//! Validated domain types: ids, names, targets and message payloads. No I/O here.

mod id_list;
mod ids;
mod message;
mod time;

pub use id_list::IdList;
pub use ids::{
    random_id, random_secret, time_ordered_id, validate_app_name, validate_device_id,
    validate_message_id, validate_topic, validate_user, IdError,
};
pub use message::{
    encode_message_frame, FrameParts, MessageInput, Notification, Platform, Priority, Target,
    TargetInput, MAX_BATCH_IDS,
};
pub use time::{format_rfc3339_ms, now_ms};
