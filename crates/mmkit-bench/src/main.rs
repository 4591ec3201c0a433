//! `mmkit-bench`: mmkit measured side by side with its peers, in one run.
//!
//! Every suite prints tables of medians and ratios, peers measured in the
//! same run.

mod array;
mod bridge;
mod heap;
mod kv;
mod machine;
mod queue;
mod region;
mod sync;

use clap::{Parser, Subcommand};

/// Benchmarks of mmkit against its peers.
#[derive(Debug, Parser)]
#[command(name = "mmkit-bench", after_help = "Example:\n  cargo run --release -p mmkit-bench -- region")]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// Mapping layer: scans, random reads, copy, residency.
    Region(region::Args),
    /// Synchronization: lock costs and wake latency.
    Sync(sync::Args),
    /// The queue against raw rings, sockets, pipes, crossbeam, yaque, queue-file, NATS.
    Queue(queue::Args),
    /// Arrays against numpy.memmap.
    Array(array::Args),
    /// The shared heap against Boost.Interprocess and std.
    Heap(heap::Args),
    /// The key-value store against LMDB (heed), redb, mmkv and fjall.
    Kv(kv::Args),
    /// Mirrors to NATS JetStream against async-nats publishing on its own.
    Bridge(bridge::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.suite {
        Suite::Region(a) => region::run(a),
        Suite::Sync(a) => sync::run(a),
        Suite::Queue(a) => queue::run(a),
        Suite::Array(a) => array::run(a),
        Suite::Heap(a) => heap::run(a),
        Suite::Kv(a) => kv::run(a),
        Suite::Bridge(a) => bridge::run(a),
    };
    if let Err(e) = result {
        eprintln!("mmkit-bench: {e}");
        std::process::exit(1);
    }
}
