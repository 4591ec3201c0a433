//! Producer-only speed: how fast one thread appends 64-byte messages, and
//! how fast one thread reads them back.
//!
//! `cargo run --release -p mmkit-queue --example append_only -- [MESSAGES] [batch]`
//!
//! With `batch`, messages are appended with `append_batch`, 256 at a time.

use std::time::Instant;

use mmkit_queue::{Queue, Start};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map_or(Ok(5_000_000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let q =
        Queue::options().create(true).segment_size(512 << 20).timestamps(false).open(dir.path().join("q"))?;
    let batch = std::env::args().nth(2).is_some_and(|a| a == "batch");
    let mut p = q.producer()?;
    let msg = [7u8; 64];
    let batch_of: Vec<&[u8]> = vec![&msg; 256];
    let (t, user0) = (Instant::now(), user_cpu());
    if batch {
        for _ in 0..n / 256 {
            p.append_batch(&batch_of)?;
        }
    } else {
        for _ in 0..n {
            p.append(&msg)?;
        }
    }
    let w = t.elapsed().as_secs_f64();
    let user = user_cpu() - user0;
    let mut r = q.reader(Start::Beginning)?;
    let t = Instant::now();
    let mut got = 0;
    while r.next()?.is_some() {
        got += 1;
    }
    let rd = t.elapsed().as_secs_f64();
    println!(
        "append: {:.1} ns/msg ({:.2} M/s; user CPU {:.1} ns/msg); read: {:.1} ns/msg ({:.2} M/s), {got} read",
        w * 1e9 / n as f64,
        n as f64 / w / 1e6,
        user * 1e9 / n as f64,
        rd * 1e9 / n as f64,
        n as f64 / rd / 1e6
    );
    Ok(())
}

/// This process's user CPU time, in seconds: the appends' own work, without
/// the kernel's for the fresh pages they write (which dominates on some VMs).
fn user_cpu() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` only writes the struct it is given; a zeroed
    // `rusage` is a valid value of the type, so it is initialised whether
    // or not the call succeeds. rustix has no getrusage, hence libc.
    let (rc, ru) = unsafe { (libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()), ru.assume_init()) };
    if rc != 0 {
        return f64::NAN;
    }
    ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 * 1e-6
}
