//! `warbler config check FILE`: validate a configuration file (exit 0 or 64).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file; prints what is wrong and exits 64 if anything is.
    Check { file: PathBuf },
}

#[allow(clippy::unnecessary_wraps)] // Same signature as every subcommand.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => match Config::from_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(super::EXIT_USAGE))
            }
        },
    }
}
