//! `mmkit demo`: a short tour on a temporary directory. (Skeleton.)

use crate::{CliError, CliResult};

/// Arguments of `mmkit demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  cargo run --release -p mmkit-cli -- demo")]
pub struct DemoArgs {}

/// Runs the demo: the region tour, then the queue and array sections.
pub fn run(_args: DemoArgs) -> CliResult<()> {
    let dir = tempfile::tempdir()
        .map_err(|e| CliError::io("create temporary directory", std::env::temp_dir(), e))?;
    crate::queue_cmd::demo(dir.path())?;
    crate::array_cmd::demo(dir.path())?;
    Ok(())
}
