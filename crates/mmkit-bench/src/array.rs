//! The `array` suite. (Skeleton; being written.)

/// Options of the `array` suite.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the suite and prints its table.
pub fn run(_args: Args) -> Result<(), Box<dyn std::error::Error>> {
    Ok(())
}
