//! Background threads end with what started them. A file of its own: the
//! test counts this process's threads by name, which other tests running
//! at the same time in one binary would disturb.

use std::time::{Duration, Instant};

use mmkit_queue::{Queue, Retention};

/// How many of this process's threads are named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}

/// Waits up to 5 s for `done`.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_producers_prefault_helper_and_retention_threads_end_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let segment = 1u64 << 20;
    let retention = Retention { max_total_bytes: Some(2 * segment), ..Retention::default() };
    let q = Queue::options()
        .create(true)
        .segment_size(segment)
        .retention(retention)
        .open(dir.path().join("q"))
        .unwrap();
    let mut p = q.producer().unwrap();
    let msg = [7u8; 1000];
    // Appending hands the pages ahead to the producer's helper, and every
    // rollover asks for a retention pass.
    let started = Instant::now();
    while threads_named("mmkit-prefault") == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "no prefault helper started");
        for _ in 0..100 {
            p.append(&msg).unwrap();
        }
    }
    for _ in 0..20_000 {
        p.append(&msg).unwrap();
    }
    assert_eq!(threads_named("mmkit-prefault"), 1, "one helper per producer, not one per chunk");
    drop(p);
    eventually("the prefault helper outlived its producer", || threads_named("mmkit-prefault") == 0);
    // Retention passes run on a thread per request burst, and segments
    // retention deleted are closed on threads of their own: none lingers.
    eventually("a retention pass never ended", || threads_named("mmkit-retention") == 0);
    eventually("a closing thread never ended", || threads_named("mmkit-close") == 0);
    drop(q);
}
