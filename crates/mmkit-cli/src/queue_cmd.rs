//! `mmkit queue ...`. (Skeleton; being written.)

use crate::{CliError, CliResult};

/// `mmkit queue ...`.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// Show a queue's segments and cursors.
    Stat {
        /// Queue directory.
        dir: std::path::PathBuf,
    },
}

/// Runs a queue command.
pub fn run(_cmd: QueueCommand) -> CliResult<()> {
    Err(CliError::Other("not yet implemented".into()))
}

/// The queue part of `mmkit demo`, run in `dir`.
pub fn demo(_dir: &std::path::Path) -> CliResult<()> {
    Ok(())
}
