//! Blocking reads: a reader parked on an in-progress claim is woken by the
//! commit (or the abort) rather than by a timer, under every wait policy,
//! and record timestamps come from a clock that tracks the real one.

use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mmkit_queue::*;

fn queue(dir: &std::path::Path) -> Queue {
    Queue::options().create(true).segment_size(1 << 20).open(dir.join("q")).unwrap()
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// A producer thread claims, lets the reader start waiting on the claim,
/// then commits (or aborts and appends another message); the reader must
/// return that message, whatever its policy.
fn reader_wakes_on(policy: WaitPolicy, abort: bool) {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(dir.path());
    let mut r = q.reader(Start::Beginning).unwrap();
    r.set_wait_policy(policy);
    let (claimed_tx, claimed_rx) = mpsc::channel();
    let q2 = q.clone();
    let t = std::thread::spawn(move || {
        let mut p = q2.producer().unwrap();
        let mut c = p.claim(5).unwrap();
        c.copy_from_slice(b"first");
        claimed_tx.send(()).unwrap();
        // Long enough for the reader to spin, park and wake at least once.
        std::thread::sleep(Duration::from_millis(30));
        if abort {
            drop(c);
            p.append(b"second").unwrap();
        } else {
            c.commit().unwrap();
        }
    });
    claimed_rx.recv().unwrap();
    let rec = r.next_timeout(Some(Duration::from_secs(20))).unwrap().expect("woken by the commit");
    assert_eq!(rec.payload(), if abort { &b"second"[..] } else { &b"first"[..] });
    t.join().unwrap();
    assert!(r.next().unwrap().is_none());
}

#[test]
fn parked_reader_wakes_on_commit() {
    for policy in [WaitPolicy::PARK, WaitPolicy::BALANCED, WaitPolicy::SPIN] {
        reader_wakes_on(policy, false);
    }
}

#[test]
fn parked_reader_wakes_on_abort() {
    for policy in [WaitPolicy::PARK, WaitPolicy::BALANCED] {
        reader_wakes_on(policy, true);
    }
}

#[test]
fn idle_reader_times_out_and_then_reads() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(dir.path());
    let mut r = q.reader(Start::End).unwrap();
    // Several park slices in a row without a message, then one arrives.
    assert!(r.next_timeout(Some(Duration::from_millis(100))).unwrap().is_none());
    let q2 = q.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(90));
        q2.producer().unwrap().append(b"late").unwrap();
    });
    let rec = r.next_timeout(None).unwrap().expect("a message");
    assert_eq!(rec.payload(), b"late");
    t.join().unwrap();
}

#[test]
fn timestamps_track_the_real_clock_and_increase() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(dir.path());
    let mut p = q.producer().unwrap();
    let mut r = q.reader(Start::Beginning).unwrap();
    let mut last = 0;
    for i in 0..20_000u32 {
        let before = now_ns();
        p.append(&i.to_le_bytes()).unwrap();
        let after = now_ns();
        let rec = r.next().unwrap().unwrap();
        let ts = rec.timestamp();
        assert!(ts >= last, "timestamps of one producer never go back");
        // Generous bounds: the cheap clock is re-anchored every millisecond.
        assert!(ts + 5_000_000 >= before && ts <= after + 5_000_000, "{before} <= {ts} <= {after}");
        last = ts;
        if i % 5000 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Seek by time still finds the first record at or after a timestamp.
    let mid = q.read_at(q.first_index().unwrap() + 10_000, &mut Vec::new()).unwrap();
    let found = q.seek_time(mid.timestamp).unwrap();
    let at = q.read_at(found, &mut Vec::new()).unwrap();
    assert!(at.timestamp >= mid.timestamp && found <= mid.index);
}
