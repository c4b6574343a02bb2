//! A small Rust client of the Warbler API and connection protocol.
