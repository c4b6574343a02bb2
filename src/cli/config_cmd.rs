//! `warbler config check FILE`: validate a configuration file with the `WARBLER_…`
//! environment laid over it (exit 0 or 64);
//! `warbler config print-default`: print the commented default file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::{Config, ConfigError, EnvLayer, TlsMode, DEFAULT_CONFIG_TOML};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (with the WARBLER_… environment laid over it); prints
    /// what is wrong and exits 64 if anything is.
    Check { file: PathBuf },
    /// Print the commented default configuration (every key, its meaning and default).
    PrintDefault,
}

#[allow(clippy::unnecessary_wraps)] // Same signature as every subcommand.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => match EnvLayer::from_process_env()
            .map_err(ConfigError::from)
            .and_then(|env| Ok((Config::load(Some(&file), &env)?, env)))
        {
            Ok((config, env)) => {
                for s in env.settings() {
                    eprintln!(
                        "note: {} is set by {} (the environment wins over the file)",
                        s.key, s.var
                    );
                }
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
