//! The command line: one file per subcommand; `run` maps the parsed command to an exit code.
//! The client subcommands (`send`, `listen`, `app`, `key`) share [`remote`]: server, CA,
//! credentials, errors and their exit codes (see `docs/cli.md`).

mod app_cmd;
mod bench;
mod ca;
mod completions;
mod config_cmd;
mod health;
mod key;
mod listen;
pub mod remote;
mod restore;
mod send;
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
    /// Rebuild a data dir from a backup archive (offline).
    Restore(restore::RestoreArgs),
    /// Send a push (server API, with an API key).
    Send(send::SendArgs),
    /// Be a device: print messages as they arrive and ack them.
    Listen(listen::ListenArgs),
    /// Manage apps (management API, with the admin token).
    App(app_cmd::AppArgs),
    /// Manage an app's API keys (management API, with the admin token).
    Key(key::KeyArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
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
        Command::Restore(args) => restore::run(args),
        Command::Send(args) => remote::finish(args.json(), send::run(args)),
        Command::Listen(args) => remote::finish(args.json(), listen::run(args)),
        Command::App(args) => remote::finish(args.json(), app_cmd::run(args)),
        Command::Key(args) => remote::finish(args.json(), key::run(args)),
        Command::Completions(args) => completions::run(args),
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
