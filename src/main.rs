//! The `warbler` binary: parse the command line, run it, exit with its code.

use clap::Parser;

/// jemalloc instead of glibc's malloc: about 10 % less server CPU per push and per fan-out
/// delivery, and the same memory per idle connection (docs/benchmarks.md, "Eleventh
/// session"). mimalloc, tried before, cost memory per connection.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    warbler::cli::run(warbler::cli::Cli::parse())
}
