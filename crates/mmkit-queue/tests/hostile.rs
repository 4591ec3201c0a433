//! Hostile values written into a live queue's files after a handle checked
//! them at open, or sizes `check` used to trust: each costs at most a walk
//! of one segment, never a hang, an allocation the size of the file, or a
//! producer that fails for good. Found by a review; each test failed
//! before its fix.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use mmkit_queue::{Queue, Start};

/// The tail word's offset in a segment (docs/queue-format.md).
const SEG_TAIL: u64 = 64;

fn seg0(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(dir.join("00000000000000000000.seg")).unwrap()
}

fn tail(dir: &Path) -> u64 {
    let mut b = [0u8; 8];
    seg0(dir).read_exact_at(&mut b, SEG_TAIL).unwrap();
    u64::from_le_bytes(b)
}

fn set_tail(dir: &Path, word: u64) {
    seg0(dir).write_all_at(&word.to_le_bytes(), SEG_TAIL).unwrap();
}

/// `f`'s result, or `None` if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// The tail's count forged to 2^32 - 1 after the handle mapped the
/// segment: `last_index`, `seek_time` and a reader starting at a time
/// used to walk that many claims.
#[test]
fn a_forged_tail_count_costs_no_walk_of_the_index_space() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).timestamps(true).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    p.append_with_timestamp(b"x", 1000).unwrap();
    set_tail(&path, 0xffff_ffff << 32 | (tail(&path) & 0xffff_ffff));
    let limit = Duration::from_secs(20);
    let q2 = q.clone();
    assert_eq!(within(limit, move || q2.last_index().ok()), Some(Some(Some(0))));
    let q2 = q.clone();
    assert!(within(limit, move || q2.seek_time(2000).ok()).is_some());
    let q2 = q.clone();
    assert!(within(limit, move || q2.reader(Start::Time(2000)).is_ok()).is_some());
    drop(p);
}

/// The same forged before open, as high as the open check lets it be.
#[test]
fn a_tail_count_forged_before_open_costs_no_walk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    Queue::options().create(true).open(&path).unwrap().producer().unwrap().append(b"x").unwrap();
    set_tail(&path, (64u64 << 20) << 32 | (tail(&path) & 0xffff_ffff));
    let q = Queue::open(&path).unwrap();
    assert_eq!(within(Duration::from_secs(20), move || q.last_index().ok()), Some(Some(Some(0))));
}

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A segment file enlarged to 1 GiB (sparse): `check` reads the segment's
/// size of it, not the file.
#[test]
fn check_reads_a_segment_not_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&path).unwrap();
    q.producer().unwrap().append(b"x").unwrap();
    seg0(&path).set_len(1 << 30).unwrap();
    let before = peak_rss_kib();
    let report = q.check().unwrap();
    assert!(peak_rss_kib() - before < 256 << 10, "check grew the peak RSS by 256 MiB or more");
    assert_eq!(report.messages, 1);
}

/// A tail offset that is no frame position: the lease holder seals the
/// segment and rolls over, as for a stale tail, instead of failing every
/// append for good.
#[test]
fn a_misaligned_tail_makes_the_lease_holder_roll_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    p.append(b"x").unwrap();
    assert!(p.is_exclusive());
    set_tail(&path, tail(&path) + 4);
    for _ in 0..1000 {
        p.append(b"y").unwrap();
    }
    // The thousand went to the next segment (index = segment << 32 | seq).
    assert_eq!(q.last_index().unwrap(), Some(1 << 32 | 999));
}
