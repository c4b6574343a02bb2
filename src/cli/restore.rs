//! `warbler restore --from FILE --data DIR`: rebuild an empty data dir from a backup (offline).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup archive (from `GET /v1/admin/backup`).
    #[arg(long)]
    pub from: PathBuf,
    /// The data dir to create; it must not exist or be empty.
    #[arg(long)]
    pub data: PathBuf,
}

#[allow(clippy::unnecessary_wraps)] // Same signature as every subcommand.
pub fn run(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    match crate::archive::restore(&args.from, &args.data) {
        Ok(r) => {
            println!(
                "restored {} rows (backup of {}) into {}",
                r.manifest.rows,
                r.manifest.created_at,
                args.data.display()
            );
            println!(
                "start it with: warbler serve --data {}",
                args.data.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("warbler: restore failed: {e}");
            Ok(ExitCode::from(super::EXIT_USAGE))
        }
    }
}
