//! `warbler config check FILE`: validate a configuration file (exit 0 or 64);
//! `warbler config print-default`: print the commented default file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::{Config, TlsMode, DEFAULT_CONFIG_TOML};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file; prints what is wrong and exits 64 if anything is.
    Check { file: PathBuf },
    /// Print the commented default configuration (every key, its meaning and default).
    PrintDefault,
}

#[allow(clippy::unnecessary_wraps)] // Same signature as every subcommand.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => match Config::from_file(&file) {
            Ok(config) => {
                if config.tls.mode == TlsMode::Off {
                    eprintln!(
                        "warning: tls.mode = \"off\" serves plain, unencrypted HTTP; \
                         `warbler serve` refuses it unless --insecure-plaintext is given"
                    );
                }
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(super::EXIT_USAGE))
            }
        },
        ConfigCommand::PrintDefault => {
            print!("{DEFAULT_CONFIG_TOML}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
