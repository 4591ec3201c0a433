//! `mmkit array ...`. (Skeleton; being written.)

use crate::{CliError, CliResult};

/// `mmkit array ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ArrayCommand {
    /// Show an .npy file's header.
    Info {
        /// The .npy file.
        file: std::path::PathBuf,
    },
}

/// Runs an array command.
pub fn run(_cmd: ArrayCommand) -> CliResult<()> {
    Err(CliError::Other("not yet implemented".into()))
}

/// The array part of `mmkit demo`, run in `dir`.
pub fn demo(_dir: &std::path::Path) -> CliResult<()> {
    Ok(())
}
