//! Integration tests: the real server in-process (or the real binary) on 127.0.0.1:0 with a
//! temporary data dir, driven through real TLS, HTTP and WebSocket clients.

// Test code favours plain matches and keeps large connection types unboxed.
#![allow(clippy::single_match_else, clippy::large_enum_variant)]

mod harness;

mod bad_input;
mod broadcast_storage;
mod cli_tools;
mod delivery;
mod durability;
mod mailbox_cap;
mod management;
mod packaged;
mod routes;
mod schedule_cancel_idem;
mod slow_consumer;
mod stats;
mod topics;
mod transports;
mod ttl_collapse;
mod ws_http2;
