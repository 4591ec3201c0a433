//! Background threads end with what started them, and their work is done
//! in place when none can start. A file of its own: the
//! test counts this process's threads by name, which other tests running
//! at the same time in one binary would disturb.

use std::time::{Duration, Instant};

use mmkit_queue::{Queue, Retention};

/// How many of this process's threads are named `name`.
fn threads_named(name: &str) -> usize {
    ids_of_threads_named(name).len()
}

/// The ids of this process's threads named `name`.
fn ids_of_threads_named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The id of the one thread named `name`, once there is exactly one. A
/// thread that a named thread starts carries its creator's name for a
/// moment, until it sets its own: a second one seen is waited out.
fn the_thread_named(name: &str) -> String {
    let mut ids = Vec::new();
    eventually(&format!("not exactly one thread named {name}"), || {
        ids = ids_of_threads_named(name);
        ids.len() == 1
    });
    ids.remove(0)
}

/// Waits up to 5 s for `done`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
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
    let helper = the_thread_named("mmkit-prefault");
    for _ in 0..20_000 {
        p.append(&msg).unwrap();
    }
    // The same thread all along: one helper per producer, not one per chunk.
    assert_eq!(the_thread_named("mmkit-prefault"), helper);
    drop(p);
    eventually("the prefault helper outlived its producer", || threads_named("mmkit-prefault") == 0);
    // Retention passes run on a thread per request burst, and segments
    // retention deleted are closed on threads of their own: none lingers.
    eventually("a retention pass never ended", || threads_named("mmkit-retention") == 0);
    eventually("a closing thread never ended", || threads_named("mmkit-close") == 0);
    drop(q);
}

/// With no thread to be had (the address space limited below what a
/// thread's stack takes), every job that goes to a background thread runs
/// where it was asked for instead: segments are created at the rollover,
/// retention passes run in the producer's append (so the queue still keeps
/// to its bounds), files are deleted in place, and nothing fails. In a
/// child process: the limit would starve the other test of this binary.
#[test]
fn without_threads_the_work_runs_in_place() {
    if let Some(dir) = std::env::var_os("MMKQ_NO_THREADS") {
        return no_threads_child(std::path::Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["without_threads_the_work_runs_in_place", "--exact", "--nocapture", "--test-threads=1"])
        .env("MMKQ_NO_THREADS", dir.path())
        // A smaller stack could still fit under the cap.
        .env_remove("RUST_MIN_STACK")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(stdout.contains("no threads: ok"), "the child did not run the test: {stdout}");
}

fn no_threads_child(dir: &std::path::Path) {
    let segment = 64u64 << 10;
    let retention = Retention { max_total_bytes: Some(4 * segment), ..Retention::default() };
    let path = dir.join("q");
    let q = Queue::options().create(true).segment_size(segment).retention(retention).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    let mut r = q.reader(mmkit_queue::Start::Beginning).unwrap();
    let message = |i: u64| i.to_le_bytes().repeat(12);
    limit_address_space(3 << 19);
    // No thread of this process has ended yet, so glibc has no stack
    // cached to start one without mapping; this says so if that changes.
    assert!(std::thread::Builder::new().spawn(|| {}).is_err(), "a thread still starts: no test");
    let mut read = 0u64;
    for i in 0..20_000u64 {
        p.append(&message(i)).unwrap();
        if i % 100 == 99 || i == 19_999 {
            while let Some(rec) = r.next().unwrap() {
                assert_eq!(rec.payload(), message(read));
                read += 1;
            }
        }
    }
    assert_eq!(read, 20_000);
    // Numbered segments only, not spares waiting to be reused.
    let numbered = |name: &str| name.len() == 24 && name[..20].bytes().all(|b| b.is_ascii_digit());
    let segments = std::fs::read_dir(&path)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| numbered(n) && n.ends_with(".seg")))
        .count();
    assert!(segments <= 6, "{segments} segments: retention did not run");
    assert!(q.check().unwrap().is_clean());
    println!("no threads: ok");
}

/// Caps this process's address space at its size now plus `headroom`
/// bytes, less than the 2 MiB stack a new thread maps.
fn limit_address_space(headroom: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let mut limit = getrlimit(Resource::As);
    limit.current = Some(kib * 1024 + headroom);
    setrlimit(Resource::As, limit).unwrap();
}
