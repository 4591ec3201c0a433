//! `mmkit`: the command-line face of mmkit.
//!
//! Each command family lives in its own module; this file only parses and
//! dispatches, and turns any error into one line on stderr and exit code 1.

mod array_cmd;
mod demo;
mod error;
mod queue_cmd;
mod region_cmds;

use clap::{Parser, Subcommand};

pub use error::{CliError, CliResult};

/// Memory-mapped data toolkit.
#[derive(Debug, Parser)]
#[command(name = "mmkit", version, about, long_about = None, after_help = "Example:\n  mmkit demo\n  mmkit resident --json /var/lib/data")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Page-cache residency of files, as vmtouch reports it.
    Resident(region_cmds::ResidentArgs),
    /// Copy a file as fast as this machine allows, atomically.
    Cp(region_cmds::CpArgs),
    /// POSIX named shared memory segments.
    #[command(subcommand)]
    Shm(region_cmds::ShmCommand),
    /// The persistent multi-process queue.
    #[command(subcommand)]
    Queue(queue_cmd::QueueCommand),
    /// numpy-compatible .npy arrays.
    #[command(subcommand)]
    Array(array_cmd::ArrayCommand),
    /// A short tour of mmkit on a temporary directory, with measurements.
    Demo(demo::DemoArgs),
}

fn run(cli: Cli) -> CliResult<()> {
    match cli.command {
        Command::Resident(args) => region_cmds::resident(args),
        Command::Cp(args) => region_cmds::cp(args),
        Command::Shm(cmd) => region_cmds::shm(cmd),
        Command::Queue(cmd) => queue_cmd::run(cmd),
        Command::Array(cmd) => array_cmd::run(cmd),
        Command::Demo(args) => demo::run(args),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("mmkit: {}", error::one_line(&err));
        std::process::exit(1);
    }
}
