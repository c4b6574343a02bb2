//! The command line: one file per subcommand; `run` maps the parsed command to an exit code.

mod bench;
mod ca;
mod config_cmd;
mod health;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for bad input (sysexits `EX_USAGE` / `EX_DATAERR` family).
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "warbler",
    version,
    about = "A private push cloud in one binary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (API, connection server, queue) on one HTTPS port.
    Serve(serve::ServeArgs),
    /// Work with the local certificate authority.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Check a configuration file, or print the commented default one.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Load-test a running server: push throughput and latency, idle connection memory.
    Bench(bench::BenchArgs),
    /// Ask a running server whether it is ready (`/readyz`): exit 0 if it is, 1 if not.
    Health(health::HealthArgs),
}

/// Runs the parsed command.
#[must_use]
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Ca(cmd) => ca::run(cmd),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Bench(args) => bench::run(args),
        Command::Health(args) => health::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warbler: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
