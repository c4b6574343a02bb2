//! The `warbler` binary: parse the command line, run it, exit with its code.

use clap::Parser;

/// mimalloc instead of the C library's allocator: a connection's handshake leaves
/// short-lived buffers behind, and glibc's malloc kept them as resident memory between
/// long-lived allocations (about 20 KiB per idle connection); mimalloc returns freed pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    warbler::cli::run(warbler::cli::Cli::parse())
}
