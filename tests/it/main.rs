//! Integration tests: the real server in-process (or the real binary) on 127.0.0.1:0 with a
//! temporary data dir, driven through real TLS, HTTP and WebSocket clients.

mod harness;

mod delivery;
mod management;
mod topics;
mod broadcast_storage;
