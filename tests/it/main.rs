//! Integration tests: the real server in-process (or the real binary) on 127.0.0.1:0 with a
//! temporary data dir, driven through real TLS, HTTP and WebSocket clients.

// Test code favours plain matches and keeps large connection types unboxed.
#![allow(clippy::single_match_else, clippy::large_enum_variant)]

mod app_connections;
mod audit;
mod backup_restore;
mod bad_input;
mod batch_push;
mod bench_smoke;
mod broadcast_storage;
mod cli;
mod cli_tools;
mod console_assets;
mod console_auth;
mod console_messages;
mod console_roles;
mod delivery;
mod durability;
mod env_config;
mod harness;
mod hot_reload;
mod lanes;
mod mailbox_cap;
mod management;
mod ops_metrics;
mod packaged;
mod pre_auth;
mod routes;
mod schedule_cancel_idem;
mod sdk_assets;
mod slow_consumer;
mod spawned;
mod stats;
mod tls_off;
mod tls_renew;
mod tls_swap;
mod topics;
mod transports;
mod ttl_collapse;
mod ws_http2;
