//! TLS for Warbler: local CA bootstrap on disk, renewal of its server certificate, live
//! swaps in `files` mode, and rustls server/client configuration.

mod bootstrap;
mod config;
mod records;
#[cfg(test)]
mod records_tests;
pub mod reload;
pub mod renew;
pub mod stream;
#[cfg(test)]
mod stream_tests;

pub use bootstrap::{ensure_bootstrap, BootstrapOutcome, TlsPaths};
pub use config::{
    client_config_trusting, server_config, TlsError, ALPN_H2, ALPN_HTTP11, PROTOCOL_VERSIONS,
};
