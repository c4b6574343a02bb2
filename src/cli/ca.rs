//! `warbler ca export`: print the local CA certificate for clients to trust.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the CA certificate (PEM) of a data dir to stdout.
    Export {
        /// Data directory. Default ./warbler-data.
        #[arg(long, env = "WARBLER_DATA", default_value = "warbler-data")]
        data: PathBuf,
    },
}

pub fn run(cmd: CaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Export { data } => {
            let path = data.join("tls").join("ca.crt");
            let pem = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {} (has `warbler serve` run on this data dir?)",
                    path.display()
                )
            })?;
            print!("{pem}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
