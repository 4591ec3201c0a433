//! Mirrors killed with SIGKILL at random points, and the server killed and
//! restarted mid-stream, while a producer keeps appending: afterwards the
//! stream holds each of the queue's messages exactly once, in order, and
//! so does the queue mirrored back in. The mirrors are real processes: the
//! test binary re-runs itself with `MMKIT_BRIDGE_ROLE` set.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use mmkit_bridge::{InOptions, MirrorIn, MirrorOut, OutOptions, StreamOptions};
use mmkit_queue::Queue;

/// Entry point of the child processes.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MMKIT_BRIDGE_ROLE") else { return };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let (dir, url) = (PathBuf::from(var("MMKIT_BRIDGE_QUEUE")), var("MMKIT_BRIDGE_URL"));
    let q = Queue::open(&dir).unwrap();
    let mut report = |e: mmkit_bridge::Event| eprintln!("{role}: {e:?}");
    let result = match role.as_str() {
        "out" => {
            let mut o = OutOptions::new(url, "CRASH");
            o.create = Some(StreamOptions::default());
            o.ack_timeout = Duration::from_secs(2);
            o.max_in_flight = 64;
            MirrorOut::new(q, o)
                .and_then(|mut m| mmkit_bridge::block_on(m.run(std::future::pending(), &mut report)).unwrap())
        }
        "in" => {
            let mut o = InOptions::new(url, "CRASH");
            o.ack_timeout = Duration::from_secs(2);
            MirrorIn::new(q, o)
                .and_then(|mut m| mmkit_bridge::block_on(m.run(std::future::pending(), &mut report)).unwrap())
        }
        _ => panic!("unknown role {role}"),
    };
    eprintln!("{role} stopped: {result:?}");
    std::process::exit(3);
}

/// A mirror child process, with its stderr in a log file.
struct Mirror {
    child: Child,
    log: PathBuf,
}

impl Mirror {
    fn spawn(role: &str, queue: &Path, url: &str, log: PathBuf) -> Mirror {
        let err = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env("MMKIT_BRIDGE_ROLE", role)
            .env("MMKIT_BRIDGE_QUEUE", queue)
            .env("MMKIT_BRIDGE_URL", url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Mirror { child, log }
    }

    /// SIGKILL; a child that stopped by itself failed.
    fn kill(mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "mirror exited by itself ({status}):\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

#[test]
fn sigkill_at_random_points_and_a_server_restart_lose_and_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut srv) = server(dir.path()) else { return };
    let url = srv.url();
    let (a, b) = (queue(&dir.path().join("a")), queue(&dir.path().join("b")));
    // The stream exists before mirror-in starts (a missing stream is a
    // permanent error for it).
    mirror_out(&a, out_opts(&url, "CRASH")).0.unwrap();
    let total = 12_000u64;
    let done = AtomicBool::new(false);
    let mut rng = Rng::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            // About 2.5 s of appends, in small batches.
            for start in (0..total).step_by(40) {
                fill(&a, "a", start..(start + 40).min(total));
                std::thread::sleep(Duration::from_millis(8));
            }
            done.store(true, Ordering::Release);
        });
        let t0 = Instant::now();
        let mut round = 0;
        let (mut out, mut inb) = (None, None);
        while round < 8 || !done.load(Ordering::Acquire) {
            assert!(t0.elapsed() < Duration::from_secs(60), "took too long");
            let log = |r: &str| dir.path().join(format!("{r}-{round}.log"));
            out.get_or_insert_with(|| Mirror::spawn("out", a.path(), &url, log("out")));
            inb.get_or_insert_with(|| Mirror::spawn("in", b.path(), &url, log("in")));
            std::thread::sleep(Duration::from_millis(30 + rng.below(300)));
            if round == 3 {
                // The server dies mid-stream (SIGKILL too), the mirrors
                // keep trying, and it comes back.
                srv.kill();
                std::thread::sleep(Duration::from_millis(200 + rng.below(300)));
                srv.restart().unwrap();
                std::thread::sleep(Duration::from_millis(rng.below(300)));
            }
            match rng.below(3) {
                0 => out.take().unwrap().kill(),
                1 => inb.take().unwrap().kill(),
                _ => {
                    out.take().unwrap().kill();
                    inb.take().unwrap().kill();
                }
            }
            round += 1;
        }
        for m in [out, inb].into_iter().flatten() {
            m.kill();
        }
    });
    // Finish both directions, then compare.
    mirror_out(&a, out_opts(&url, "CRASH")).0.unwrap();
    let mut opts = in_opts(&url, "CRASH", None);
    opts.ack_timeout = Duration::from_secs(5);
    mirror_in(&b, opts).0.unwrap();
    assert_eq!(payloads(&a).len() as u64, total);
    assert_eq!(stream_messages(&url, "CRASH"), total, "the stream's count equals the queue's");
    assert_stream_is_queue(&read_stream(&url, "CRASH", None), &a);
    assert_eq!(payloads(&b), payloads(&a), "the mirrored-in queue equals the source, in order");
}
