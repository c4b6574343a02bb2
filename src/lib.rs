//! Warbler: a private push cloud in one binary.
//!
//! Codemap (dependency directions point down the list; nothing depends on `app`):
//! - [`domain`]: validated ids, targets and message payloads; no I/O.
//! - [`store`]: the redb store. [`store::tables`] is the whole on-disk format; one writer
//!   thread owns every write and commits in groups; reads run concurrently.
//! - [`auth`]: secrets (generate, hash, constant-time verify), credentials and user tokens.
//! - [`gateway`]: the connection server: the registry of live sessions and the session
//!   state machine (hello → replay → live) with the WebSocket adapter.
//! - [`api`]: the HTTP router, one file per resource, errors in the contract's shape.
//! - [`server`]: the TLS accept loop serving the router over HTTP/1.1 and HTTP/2;
//!   [`lanes`] decides from a connection's first request whether it is served on the
//!   sessions' runtime or on the API's own.
//! - [`tls`], [`fsutil`]: certificate bootstrap and atomic file writes.
//! - [`config`]: the configuration schema, defaults and validation.
//! - [`app`]: the composition root: `App::build` then `App::run`.
//! - [`client`]: a small Rust client of our own API and protocol (CLI, tests, bench).
//! - [`cli`]: one file per subcommand.
//!
//! Invariants: the store knows nothing of HTTP; nothing holds a message only in memory after
//! answering 202; every lookup is keyed by the full tenant scope (typed tuple keys).

pub mod api;
pub mod app;
pub mod archive;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod fsutil;
pub mod gateway;
pub mod lanes;
pub mod metrics;
pub mod net_guard;
pub mod server;
pub mod store;
pub mod tls;
