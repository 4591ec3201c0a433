//! `mmkit resident`, `mmkit cp`, `mmkit shm`. (Skeleton; being written.)

use crate::{CliError, CliResult};

/// Arguments of `mmkit resident`.
#[derive(Debug, clap::Args)]
pub struct ResidentArgs {
    /// Files or directories.
    pub paths: Vec<std::path::PathBuf>,
}

/// Arguments of `mmkit cp`.
#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// Source file.
    pub src: std::path::PathBuf,
    /// Destination file.
    pub dst: std::path::PathBuf,
}

/// `mmkit shm ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ShmCommand {
    /// List segments under /dev/shm.
    List,
}

/// Runs `mmkit resident`.
pub fn resident(_args: ResidentArgs) -> CliResult<()> {
    Err(CliError::Other("not yet implemented".into()))
}

/// Runs `mmkit cp`.
pub fn cp(_args: CpArgs) -> CliResult<()> {
    Err(CliError::Other("not yet implemented".into()))
}

/// Runs `mmkit shm`.
pub fn shm(_cmd: ShmCommand) -> CliResult<()> {
    Err(CliError::Other("not yet implemented".into()))
}
