//! The connection server: the registry of live sessions ([`registry`]), the
//! transport-independent session core ([`session`]), the client protocol frames
//! ([`protocol`]) and the WebSocket adapter ([`ws`]).
//!
//! Invariant: the store is the source of truth; the outbox is only a fast path. A session
//! that overflows its outbox catches up from the store by sequence, never skipping.

pub mod acks;
pub mod client_ops;
pub mod poll;
pub mod protocol;
pub mod registry;
pub mod session;
pub mod sse;
pub mod unconfirmed;
pub mod wire;
#[cfg(test)]
mod wire_tests;
pub mod ws;
pub mod ws_conn;

pub use registry::{Registry, SessionHandle};
pub use session::{authenticate_device, DeviceAuthError, DeviceIdentity, SessionSettings};
