//! Producers SIGKILLed while they hold large batch claims (100 000 frames a
//! claim), with real processes; then every read path (a waiting reader, a
//! non-blocking poller, a named cursor, a consumer-group member, `check`
//! and `repair`) must deliver every acknowledged message, in order, with
//! nothing torn or duplicated. Each path reads its own copy of the queue as
//! the kills left it, so each one meets the dead claims itself.
//!
//! Also: parked readers and producers that come and go, across processes,
//! in a ping-pong where every single wake-up matters (no lost wake-up).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use mmkit_queue::*;

/// Messages per `append_batch`: one claim each under the shared protocol.
const BATCH: u32 = 100_000;

#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MMKQ_ROLE") else { return };
    let dir = PathBuf::from(env("MMKQ_DIR"));
    let code = match role.as_str() {
        "batcher" => run_batcher(&dir),
        "bigwriter" => run_bigwriter(&dir),
        "pinger" => run_pinger(&dir),
        "ponger" => run_ponger(&dir),
        _ => 2,
    };
    std::process::exit(code);
}

/// Appends batches of `BATCH` small messages for ever; after each batch
/// returns, appends "id first_i last_index" to the acks file (the batch is
/// acknowledged then).
fn run_batcher(dir: &Path) -> i32 {
    let id: u32 = env("MMKQ_ID").parse().unwrap();
    let q = Queue::open(dir).unwrap();
    let mut p = q.producer().unwrap();
    let mut acks = std::fs::OpenOptions::new().create(true).append(true).open(env("MMKQ_ACKS")).unwrap();
    for b in 0u32.. {
        let msgs: Vec<Vec<u8>> =
            (0..BATCH).map(|k| sized_payload(id, b * BATCH + k, 12 + (k % 9) as usize)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let indices = p.append_batch(&refs).unwrap();
        let last = indices.last().copied().unwrap();
        acks.write_all(format!("{id} {} {last}\n", b * BATCH + BATCH - 1).as_bytes()).unwrap();
    }
    0
}

/// Size of the big writer's messages: copying one takes long enough that
/// most kills land inside a copy.
const BIG: usize = 256 << 10;

/// Alone on the queue (so it holds the single-producer lease), appends big
/// messages for ever.
fn run_bigwriter(dir: &Path) -> i32 {
    let q = Queue::open(dir).unwrap();
    let mut p = q.producer().unwrap();
    assert!(p.is_exclusive());
    for i in 0u32.. {
        p.append(&sized_payload(7, i, BIG)).unwrap();
    }
    0
}

/// Whether the bytes past the tail of the active segment are the start of
/// a frame whose copy was cut off: state word 0, payload bytes written.
fn copy_cut_off(qdir: &Path) -> bool {
    let q = Queue::open(qdir).unwrap();
    // Not the last file: the producer creates the next segment early.
    let active = index_segment(q.end_index().unwrap());
    // A kill between moving the active segment on and creating its file
    // leaves no file: not the case looked for.
    let Ok(image) = std::fs::read(qdir.join(format!("{active:020}.seg"))) else { return false };
    let (_, offset) = mmkit_queue::format::split_tail(u64::from_le_bytes(image[64..72].try_into().unwrap()));
    let at = offset as usize;
    let state_word = image.get(at..at + 8);
    let payload = image.get(at + 16..at + 16 + BIG);
    state_word == Some(&[0; 8][..]) && payload.is_some_and(|p| p.iter().any(|&b| b != 0))
}

/// A lease holder SIGKILLed in the middle of copying a frame leaves the
/// bytes it copied past the tail (its state word stays 0: the commit
/// comes last). The next producer's shorter frames must not leave them
/// where the following frame's state word goes: before, the producer took
/// them for frames a machine crash left behind and sealed the segment,
/// and readers stopped at the junk with `CorruptRecord`.
#[test]
fn a_lease_holder_killed_mid_copy_leaves_nothing_in_the_way() {
    let mut seed = 0x0001_ea5e_c0b1;
    let dir = tempfile::tempdir().unwrap();
    let qdir = (0..40)
        .map(|k| {
            let qdir = dir.path().join(format!("q{k}"));
            Queue::options().create(true).segment_size(16 << 20).open(&qdir).unwrap();
            let mut kid = child("bigwriter", &[("MMKQ_DIR", qdir.display().to_string())]);
            std::thread::sleep(Duration::from_millis(20 + rng(&mut seed) % 40));
            assert!(kid.try_wait().unwrap().is_none(), "the writer exited by itself");
            kill(&mut kid);
            qdir
        })
        .find(|qdir| copy_cut_off(qdir))
        .expect("no kill landed inside a copy in 40 tries");
    let q = Queue::open(&qdir).unwrap();
    let before = q.end_index().unwrap();
    let mut p = q.producer().unwrap();
    let mut mine = vec![p.append(b"short").unwrap(), p.append(b"and short").unwrap()];
    mine.extend(p.append_batch(&[b"a", b"batch", b"of short ones"]).unwrap());
    drop(p);
    for &i in &mine {
        assert_eq!(index_segment(i), index_segment(before), "the segment was sealed at the junk");
    }
    let mut r = q.reader(Start::Beginning).unwrap();
    let mut big = 0u32;
    let mut tail = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        if rec.len() == BIG {
            assert_eq!(verify(rec.payload()), (7, big));
            big += 1;
        } else {
            tail.push(rec.to_vec());
        }
    }
    assert_eq!(tail, [&b"short"[..], b"and short", b"a", b"batch", b"of short ones"]);
    let report = q.check().unwrap();
    assert!(report.is_clean() && report.corrupt.is_empty(), "{report:?}");
}

/// Every message (p, i) a read path delivered, in delivery order.
type Seen = Vec<(u32, u32)>;

/// Checks what one read path delivered: no duplicates, each producer's
/// messages in order and without gaps up to the last one seen, every
/// acknowledged batch present, and the final message last.
fn audit(path: &str, seen: &Seen, acked: &[(u32, u32, u64)]) {
    let set: HashSet<(u32, u32)> = seen.iter().copied().collect();
    assert_eq!(set.len(), seen.len(), "{path}: duplicates");
    let mut next: HashMap<u32, u32> = HashMap::new();
    for &(p, i) in seen {
        let want = next.entry(p).or_insert(0);
        // A dead producer's claim may hold the rest of a batch, but a
        // producer's committed messages come in order and without gaps:
        // batches are committed frame after frame.
        assert_eq!(i, *want, "{path}: producer {p} out of order or with a gap");
        *want = i + 1;
    }
    for &(p, last_i, _) in acked {
        assert!(next.get(&p).is_some_and(|&n| n > last_i), "{path}: acknowledged ({p}, {last_i}) lost");
    }
    assert_eq!(seen.last(), Some(&(u32::MAX, 0)), "{path}: the final message is not last");
}

/// Reads everything up to the final message with `next`, which blocks or
/// polls as the path does.
fn drain(path: &str, mut next: impl FnMut() -> Option<Vec<u8>>) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Some(v) = next() else { continue };
        seen.push(verify(&v));
        if seen.last() == Some(&(u32::MAX, 0)) {
            return seen;
        }
    }
    panic!("{path}: stuck after {} messages", seen.len());
}

/// Runs `producers` batchers at once and SIGKILLs each at a random moment
/// (most of a batcher's time is spent inside a claim), then appends the
/// final message. Returns the acknowledged batches.
fn kill_batchers(qdir: &Path, acks: &Path, producers: u32, first_id: u32, seed: &mut u64) {
    let mut kids: Vec<Kid> = (0..producers)
        .map(|k| {
            child(
                "batcher",
                &[
                    ("MMKQ_DIR", qdir.display().to_string()),
                    ("MMKQ_ID", (first_id + k).to_string()),
                    ("MMKQ_ACKS", acks.display().to_string()),
                ],
            )
        })
        .collect();
    for kid in &mut kids {
        std::thread::sleep(Duration::from_millis(30 + rng(seed) % 60));
        assert!(kid.try_wait().unwrap().is_none(), "a batcher exited by itself");
        kill(kid);
    }
}

#[test]
fn batch_claims_of_killed_producers_cost_no_read_path_anything() {
    let mut seed = 0x05ee_d0fb_a7c4;
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(32 << 20).open(&qdir).unwrap();
    let acks = dir.path().join("acks");
    // Three producers at once use the shared protocol (batch claims); one
    // alone holds the single-producer lease (frame after frame). Rounds
    // until a 100 000-frame claim was left behind by a kill, and one whose
    // record names its producer (see below: a kill can leave a claim
    // unrecorded, and then only other rounds can show a named one).
    let mut dead_claims = HashMap::new();
    for round in 0..8u32 {
        let producers = if round == 1 { 1 } else { 3 };
        kill_batchers(&qdir, &acks, producers, round * 10, &mut seed);
        let report = q.check().unwrap();
        assert!(report.corrupt.is_empty(), "{report:?}");
        assert!(report.claims.iter().all(|c| !c.alive), "every producer is dead: {report:?}");
        assert_eq!(report.is_clean(), report.dead == 0, "check calls a queue with dead claims clean");
        dead_claims.extend(report.claims.into_iter().map(|c| (c.first, c)));
        if round >= 1 && dead_claims.values().any(|c: &ClaimInfo| c.pid.is_some()) {
            break;
        }
    }
    assert!(!dead_claims.is_empty(), "no kill landed inside a batch claim");
    for c in dead_claims.values() {
        assert!(c.claims.is_some_and(|n| n <= BATCH as u64), "{c:?}");
    }
    // A producer records its claim a few stores after its `fetch_add`; a
    // kill between them (rare) leaves the claim without a pid to name.
    assert!(
        dead_claims.values().any(|c| c.pid.is_some()),
        "no dead claim names its producer: {dead_claims:?}"
    );
    let mut p = q.producer().unwrap();
    p.append(&sized_payload(u32::MAX, 0, 8)).unwrap();
    drop(p);
    let acked = parse_acks(&acks);
    assert!(!acked.is_empty(), "no batch was acknowledged");

    // Every path on its own copy, as the kills left it.
    let copies: Vec<PathBuf> = (0..5).map(|k| dir.path().join(format!("copy{k}"))).collect();
    for c in &copies {
        copy_queue(&qdir, c);
    }
    let waiting = {
        let q = Queue::open(&copies[0]).unwrap();
        let mut r = q.reader(Start::Beginning).unwrap();
        r.set_wait_policy(WaitPolicy::PARK);
        drain("waiting reader", || r.next_timeout(Some(Duration::from_secs(5))).unwrap().map(|r| r.to_vec()))
    };
    audit("waiting reader", &waiting, &acked);
    let polled = {
        let q = Queue::open(&copies[1]).unwrap();
        let mut r = q.reader(Start::Beginning).unwrap();
        drain("non-blocking poller", || {
            let v = r.next().unwrap().map(|r| r.to_vec());
            if v.is_none() {
                std::thread::sleep(Duration::from_micros(200));
            }
            v
        })
    };
    audit("non-blocking poller", &polled, &acked);
    let cursor = {
        let q = Queue::open(&copies[2]).unwrap();
        let mut c = q.cursor("audit").unwrap();
        let seen = drain("named cursor", || {
            let v = c.next_timeout(Some(Duration::from_secs(5))).unwrap().map(|r| r.to_vec());
            c.commit().unwrap();
            v
        });
        assert_eq!(q.cursors().unwrap()[0].lag, 0);
        seen
    };
    audit("named cursor", &cursor, &acked);
    let group = {
        let q = Queue::open(&copies[3]).unwrap();
        let mut m = q.group("audit").unwrap();
        drain("group member", || m.next_timeout(Some(Duration::from_secs(5))).unwrap().map(|r| r.to_vec()))
    };
    audit("group member", &group, &acked);
    assert_eq!(waiting, polled);
    assert_eq!(waiting, cursor);
    assert_eq!(waiting, group);

    // `check` reports the dead claims (segment, indices, pid) and is not
    // clean; `repair` pads them; then the queue is clean and reads the same.
    let q = Queue::open(&copies[4]).unwrap();
    let before = q.check().unwrap();
    assert!(!before.is_clean() && before.dead > 0, "{before:?}");
    let repaired = q.repair().unwrap();
    assert!(repaired.claims.iter().all(|c| c.repaired), "{repaired:?}");
    let after = q.check().unwrap();
    assert!(after.is_clean() && after.dead == 0 && after.pending == 0, "{after:?}");
    assert_eq!(after.abandoned, before.dead + before.abandoned);
    assert_eq!(after.messages as usize, waiting.len());
    let mut r = q.reader(Start::Beginning).unwrap();
    let repaired_read = drain("after repair", || r.next().unwrap().map(|r| r.to_vec()));
    assert_eq!(repaired_read, waiting);
    eprintln!(
        "{} messages delivered on every path; {} acked batches; dead claims: {:?}",
        waiting.len(),
        acked.len(),
        dead_claims.values().map(|c| c.claims).collect::<Vec<_>>()
    );
}

/// One side of the ping-pong: appends its messages to `data` one at a
/// time, and after each waits, parked, for both pongers' acknowledgements
/// on `acks`.
fn run_pinger(dir: &Path) -> i32 {
    let id: u32 = env("MMKQ_ID").parse().unwrap();
    let count: u32 = env("MMKQ_COUNT").parse().unwrap();
    let data = Queue::open(dir.join("data")).unwrap();
    let acks = Queue::open(dir.join("acks")).unwrap();
    let mut p = data.producer().unwrap();
    let mut r = acks.reader(Start::End).unwrap();
    r.set_wait_policy(WaitPolicy::PARK);
    r.set_park_slice(Duration::from_secs(3600));
    let mut seed = id as u64 * 7919 + 1;
    for i in 0..count {
        let index = p.append(&sized_payload(id, i, 16)).unwrap();
        let mut heard = HashSet::new();
        while heard.len() < 2 {
            let Some(rec) = r.next_timeout(Some(Duration::from_secs(30))).unwrap() else {
                eprintln!("pinger {id}: no acknowledgement of message {i} ({index:#x}) within 30 s");
                return 3;
            };
            let (ponger, acked) = verify(rec.payload());
            if acked == index as u32 {
                heard.insert(ponger);
            }
        }
        // Sometimes let the pongers fall asleep before the next message.
        if rng(&mut seed) % 4 == 0 {
            std::thread::sleep(Duration::from_micros(rng(&mut seed) % 2000));
        }
    }
    0
}

/// The other side: reads `data` parked (an hour-long park slice, so only a
/// wake-up gets it going again) and acknowledges every message on `acks`.
fn run_ponger(dir: &Path) -> i32 {
    let id: u32 = env("MMKQ_ID").parse().unwrap();
    let total: u32 = env("MMKQ_COUNT").parse().unwrap();
    let data = Queue::open(dir.join("data")).unwrap();
    let acks = Queue::open(dir.join("acks")).unwrap();
    let mut r = data.reader(Start::Beginning).unwrap();
    r.set_wait_policy(WaitPolicy::PARK);
    r.set_park_slice(Duration::from_secs(3600));
    let mut p = acks.producer().unwrap();
    let mut seed = id as u64 * 104729 + 3;
    for n in 0..total {
        let Some(rec) = r.next_timeout(Some(Duration::from_secs(30))).unwrap() else {
            eprintln!("ponger {id}: message {n} did not wake it within 30 s (position {:#x})", r.position());
            return 3;
        };
        verify(rec.payload());
        p.append(&sized_payload(id, rec.index() as u32, 16)).unwrap();
        if rng(&mut seed) % 8 == 0 {
            std::thread::sleep(Duration::from_micros(rng(&mut seed) % 1500));
        }
    }
    0
}

#[test]
fn parked_readers_and_producers_that_come_and_go_lose_no_wake_up() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["data", "acks"] {
        Queue::options().create(true).segment_size(64 << 10).open(dir.path().join(name)).unwrap();
    }
    fn arg(k: &str, v: u32) -> (&str, String) {
        (k, v.to_string())
    }
    let base = ("MMKQ_DIR", dir.path().display().to_string());
    // Alone (the lease), then two at once (the shared protocol, the lease
    // taken away mid-stream), then alone again (taken back at a rollover).
    let schedule: [(u32, u32, u64); 4] = [(1, 1500, 0), (2, 1500, 100), (3, 1000, 0), (4, 1000, 0)];
    let total: u32 = schedule.iter().map(|s| s.1).sum();
    let mut pongers: Vec<Kid> = (1..=2)
        .map(|id| child("ponger", &[base.clone(), arg("MMKQ_ID", id), arg("MMKQ_COUNT", total)]))
        .collect();
    let pinger = |id, count| child("pinger", &[base.clone(), arg("MMKQ_ID", id), arg("MMKQ_COUNT", count)]);
    let finish = |mut k: Kid, what: &str| {
        let status = k.wait().unwrap();
        assert!(status.success(), "{what} failed: {status:?}");
    };
    let p1 = pinger(schedule[0].0, schedule[0].1);
    std::thread::sleep(Duration::from_millis(schedule[1].2));
    let p2 = pinger(schedule[1].0, schedule[1].1);
    finish(p1, "pinger 1");
    let p3 = pinger(schedule[2].0, schedule[2].1);
    finish(p2, "pinger 2");
    finish(p3, "pinger 3");
    finish(pinger(schedule[3].0, schedule[3].1), "pinger 4");
    for (k, p) in pongers.drain(..).enumerate() {
        finish(p, &format!("ponger {}", k + 1));
    }
}
