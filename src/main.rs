//! The `warbler` binary: parse the command line, run it, exit with its code.

use clap::Parser;

/// jemalloc instead of glibc's malloc: about 10 % less server CPU per push and per fan-out
/// delivery, and the same memory per idle connection (docs/benchmarks.md, "Eleventh
/// session"). mimalloc, tried before, cost memory per connection.
///
/// Built with an arena per CPU instead of one per thread (`.cargo/config.toml`): the server
/// has more threads than cores (the sessions' and the API's runtimes, the store writer), and
/// with an arena per thread, memory one runtime freed (registering devices over the API)
/// could not serve the other's allocations (sessions), which cost ~0.13 KiB per idle
/// connection (docs/benchmarks.md, "Twentieth session"). `_RJEM_MALLOC_CONF` in the
/// environment still adds to or overrides it.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    warbler::cli::run(warbler::cli::Cli::parse())
}
