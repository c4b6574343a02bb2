//! The `warbler` binary: parse the command line, run it, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    warbler::cli::run(warbler::cli::Cli::parse())
}
