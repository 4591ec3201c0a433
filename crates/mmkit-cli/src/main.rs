//! `mmkit`: the command-line face of mmkit.
//!
//! Each command family lives in its own module; this file only parses and
//! dispatches, and turns any error into one line on stderr and exit code 1.

mod array_cmd;
mod demo;
mod heap_cmd;
mod kv_cmd;
mod queue_cmd;
mod region_cmds;

use clap::{Parser, Subcommand};

pub use mmkit_cli::{CliError, CliResult, error};

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
    #[command(
        subcommand,
        after_help = "Examples:\n  mmkit shm create frames --size 64M\n  mmkit shm list --json"
    )]
    Shm(region_cmds::ShmCommand),
    /// The persistent multi-process queue.
    #[command(
        subcommand,
        after_help = "Examples:\n  mmkit queue create /tmp/q\n  seq 1 1000 | mmkit queue append /tmp/q\n  mmkit queue tail /tmp/q --from-start"
    )]
    Queue(queue_cmd::QueueCommand),
    /// numpy-compatible .npy arrays.
    #[command(
        subcommand,
        after_help = "Examples:\n  mmkit array create points.npy --dtype f32 --shape 1000,3\n  mmkit array stats --json points.npy"
    )]
    Array(array_cmd::ArrayCommand),
    /// Containers shared between processes (growable, crash-robust heaps).
    #[command(
        subcommand,
        after_help = "Examples:\n  mmkit heap create /tmp/app.heap --size 64M\n  mmkit heap stat /tmp/app.heap --json\n  mmkit heap check /tmp/app.heap --repair"
    )]
    Heap(heap_cmd::HeapCommand),
    /// The embedded multi-process key-value store.
    #[command(
        subcommand,
        after_help = "Examples:\n  mmkit kv create /tmp/app.kv\n  mmkit kv put /tmp/app.kv user:1 ada\n  mmkit kv scan /tmp/app.kv --prefix user: --json"
    )]
    Kv(kv_cmd::KvCommand),
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
        Command::Heap(cmd) => heap_cmd::run(cmd),
        Command::Kv(cmd) => kv_cmd::run(cmd),
        Command::Demo(args) => demo::run(args),
    }
}

/// Parses the command line; usage errors become one line, as every other
/// error does, with exit status 2 (help and version print as usual).
fn parse() -> Cli {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("mmkit: {} (see --help)", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    }
}

fn main() {
    let cli = parse();
    if let Err(err) = run(cli) {
        eprintln!("mmkit: {}", error::one_line(&err));
        std::process::exit(err.exit_code());
    }
}
