//! Crash recovery at the protocol's hardest points, made deterministic:
//! a claim taken by a process that then died is forged directly in the
//! files (tail `fetch_add` plus a producer-table entry with a dead
//! process's token), exactly as a SIGKILL right after the `fetch_add`
//! leaves it. The random-SIGKILL tests in `multiprocess.rs` hit these
//! windows only by chance.

use std::sync::atomic::Ordering;
use std::time::Duration;

use mmkit_queue::format::*;
use mmkit_queue::*;
use mmkit_region::{Access, MapOptions, Mode};
use mmkit_sync::ProcessToken;

/// The token of a process that has exited (and been reaped).
fn dead_token() -> u64 {
    let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
    let token = ProcessToken::of_pid(child.id()).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!token.is_alive());
    token.to_raw()
}

/// Forges a claim of `bytes` by a dead producer in segment 0: the claim
/// is taken, the producer slot says CLAIMING, and nothing else happened.
fn forge_dead_claim(dir: &std::path::Path, bytes: u64) -> (u64, u64) {
    let meta = MapOptions::new().mode(Mode::ReadWrite).map_path(dir.join("meta")).unwrap();
    let slot = PRODUCER_TABLE + 100 * PRODUCER_SLOT_SIZE;
    meta.atomic_u64(slot).unwrap().store(dead_token(), Ordering::SeqCst);
    meta.atomic_u64(slot + 8).unwrap().store(7 << 2 | PRODUCER_CLAIMING, Ordering::SeqCst);
    let seg = MapOptions::new().mode(Mode::ReadWrite).map_path(dir.join("00000000000000000000.seg")).unwrap();
    let old = seg.atomic_u64(SEG_TAIL).unwrap().fetch_add((1 << 32) + bytes, Ordering::SeqCst);
    split_tail(old)
}

fn read_all(q: &Queue) -> Vec<Vec<u8>> {
    let mut r = q.reader(Start::Beginning).unwrap();
    r.set_wait_policy(WaitPolicy::PARK);
    let mut out = Vec::new();
    while let Some(rec) = r.next_timeout(Some(Duration::from_millis(300))).unwrap() {
        out.push(rec.to_vec());
    }
    out
}

#[test]
fn claimant_dead_right_after_fetch_add_becomes_padding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(4096).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    p.append(b"one").unwrap();
    let (seq, _) = forge_dead_claim(&path, frame_size(100));
    let after = p.append(b"two").unwrap();
    assert_eq!(index_seq(after) as u64, seq + 1);
    assert_eq!(read_all(&q), vec![b"one".to_vec(), b"two".to_vec()]);
    assert!(matches!(q.read_at(make_index(0, seq as u32), &mut Vec::new()), Err(Error::Abandoned { .. })));
    let report = q.check().unwrap();
    assert_eq!((report.messages, report.abandoned, report.pending), (2, 1, 0), "{report:?}");
}

/// A queue of 4 KiB segments holding `[0]`, `[1]` and `[2]`, and the
/// producer that appended them.
fn queue_of_three() -> (tempfile::TempDir, std::path::PathBuf, Queue, Producer) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(4096).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..3u8 {
        p.append(&[i]).unwrap();
    }
    (dir, path, q, p)
}

#[test]
fn first_failing_claimant_dead_before_sealing_the_segment() {
    let (_dir, path, q, mut p) = queue_of_three();
    // A claim too large for the rest of the segment: its claimant should
    // have written the end-of-segment frame, but died first.
    forge_dead_claim(&path, 4000);
    // The next claim fails too (not first, so it writes no end frame) and
    // moves on to segment 1.
    let next = p.append(b"next").unwrap();
    assert_eq!(index_segment(next), 1);
    // Readers seal segment 0 where the dead claim began and go on.
    assert_eq!(read_all(&q), vec![vec![0], vec![1], vec![2], b"next".to_vec()]);
    let report = q.check().unwrap();
    assert!(report.is_clean() && report.pending == 0, "{report:?}");
    assert_eq!(report.messages, 4);
}

#[test]
fn live_claimant_is_never_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(4096).open(&path).unwrap();
    let mut a = q.producer().unwrap();
    let mut b = q.producer().unwrap();
    a.append(b"first").unwrap();
    let mut claim = a.claim(5).unwrap(); // held by a live producer
    b.append(b"third").unwrap();
    let mut r = q.reader(Start::Beginning).unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload(), b"first");
    assert!(r.next_timeout(Some(Duration::from_millis(30))).unwrap().is_none());
    claim.copy_from_slice(b"secnd");
    claim.commit().unwrap();
    assert_eq!(r.next_timeout(Some(Duration::from_secs(1))).unwrap().unwrap().payload(), b"secnd");
    assert_eq!(r.next().unwrap().unwrap().payload(), b"third");
}

/// A queue of 64 KiB segments holding `n` messages `[i; 10]`, appended
/// and committed by a producer that has since gone, and a writable mapping
/// of its segment 0 to damage it with.
fn queue_of_tens(n: u8) -> (tempfile::TempDir, std::path::PathBuf, Queue, mmkit_region::Mapping) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..n {
        p.append(&[i; 10]).unwrap();
    }
    drop(p);
    let seg =
        MapOptions::new().mode(Mode::ReadWrite).map_path(path.join("00000000000000000000.seg")).unwrap();
    (dir, path, q, seg)
}

#[test]
fn stale_tail_after_a_machine_crash_never_overwrites_frames() {
    stale_tail_case(&[b"after the crash"]);
}

/// The same through `append_batch`, whose frames go in runs under the lease.
#[test]
fn stale_tail_never_overwritten_by_a_batch() {
    stale_tail_case(&[b"after", b"the", b"crash"]);
}

/// After a power loss the page holding the tail may be older on disk than
/// the frames after it. Simulates it by winding the tail back, then
/// appends `msgs` (one `append`, or one `append_batch`): they must go to a
/// new segment, and every old frame stays readable.
fn stale_tail_case(msgs: &[&[u8]]) {
    let (_dir, path, q, seg) = queue_of_tens(10);
    let tail = seg.atomic_u64(SEG_TAIL).unwrap();
    let (count, offset) = split_tail(tail.load(Ordering::SeqCst));
    assert_eq!(count, 10);
    tail.store(4 << 32 | (offset - 6 * frame_size(10)), Ordering::SeqCst);
    drop(q);

    let q = Queue::open(&path).unwrap();
    let mut p = q.producer().unwrap();
    let new = if msgs.len() == 1 { vec![p.append(msgs[0]).unwrap()] } else { p.append_batch(msgs).unwrap() };
    for i in &new {
        assert_eq!(index_segment(*i), 1, "the old frames were not overwritten: a new segment was started");
    }
    let mut want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10]).collect();
    want.extend(msgs.iter().map(|m| m.to_vec()));
    assert_eq!(read_all(&q), want);
    // `check` counts what readers read, the frames past the seal too.
    let report = q.check().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.messages, want.len() as u64, "{report:?}");
}

/// A seal that finds junk where its end frame would go (bytes a machine
/// crash left past a stale tail) leaves the junk there: readers must move
/// on to the next segment at the final count, as `check` does, instead of
/// reporting the junk as a corrupt record.
#[test]
fn junk_past_the_final_count_is_not_read() {
    let (_dir, path, _, seg) = queue_of_tens(5);
    let (_, offset) = split_tail(seg.atomic_u64(SEG_TAIL).unwrap().load(Ordering::SeqCst));
    for junk in [0xabab_abab_abab_abab, 0x0000_0000_4000_ffff, 0x0000_0001_8000_0010] {
        seg.atomic_u64(offset).unwrap().store(junk, Ordering::SeqCst);
        let q = Queue::open(&path).unwrap();
        let mut p = q.producer().unwrap();
        let next = p.append(b"next").unwrap();
        assert!(index_segment(next) >= 1, "appended over the junk");
        drop(p);
        let mut want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
        want.push(b"next".to_vec());
        let got = read_all(&q);
        assert_eq!(&got[..5], &want[..5], "junk {junk:#x}");
        assert_eq!(got.last(), want.last(), "junk {junk:#x}");
        assert!(q.check().unwrap().is_clean(), "junk {junk:#x}");
    }
}

/// A claim that finds junk seals the segment at its own sequence number,
/// but a claim taken at the same time past the junk, at a clean offset,
/// succeeds: its message must still be read. Simulated by turning message
/// 4 of 6 into junk and sealing there.
#[test]
fn a_message_committed_past_a_seal_at_junk_is_still_read() {
    let (_dir, _, q, seg) = queue_of_tens(6);
    let fourth = SEGMENT_HEADER + 4 * frame_size(10);
    seg.atomic_u64(fourth).unwrap().store(0xabab_abab_abab_abab, Ordering::SeqCst);
    seg.atomic_u64(SEG_FINAL_COUNT).unwrap().store(4, Ordering::SeqCst);
    let want: Vec<Vec<u8>> = [0u8, 1, 2, 3, 5].iter().map(|&i| vec![i; 10]).collect();
    assert_eq!(read_all(&q), want);
    // `check` reads on past the seal as readers do, and counts it.
    let report = q.check().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.messages, 5);
    // Damage past the seal is reported as readers would meet it.
    let fifth = fourth + frame_size(10);
    seg.write_at(fifth + FRAME_HEADER, &[9u8; 10]).unwrap();
    let report = q.check().unwrap();
    assert_eq!((report.messages, report.corrupt.len()), (4, 1), "{report:?}");
    assert_eq!(report.corrupt[0].offset, fifth);
}

#[test]
fn a_dead_producers_whole_batch_claim_becomes_one_padding_frame() {
    const CLAIMS: u64 = 100_000;
    const DONE: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(32 << 20).open(&path).unwrap();
    let before = q.producer().unwrap().append(b"before").unwrap();
    // A dead producer's batch of 100 000 frames: claimed and recorded, the
    // first ten committed, as a SIGKILL in the middle of filling leaves it.
    let DeadBatch { seg, first: seq, start, token: dead } = forge_dead_batch(&path, CLAIMS, 16);
    let bytes = frame_size(16);
    for k in 0..DONE {
        let (c, offset) = (seq + k, start + k * bytes);
        let payload = [k as u8; 16];
        seg.write_at(offset + FRAME_HEADER, &payload).unwrap();
        let crc = record_crc(&payload, make_index(0, c as u32), 0);
        seg.atomic_u32(seg.len() as u64 - 4 * (c + 1)).unwrap().store(offset as u32, Ordering::SeqCst);
        seg.atomic_u64(offset).unwrap().store(state_word(KIND_MESSAGE, 16, crc), Ordering::SeqCst);
    }
    let after = q.producer().unwrap().append(b"after").unwrap();
    assert_eq!(after, make_index(0, (seq + CLAIMS) as u32));

    // `check` names the dead claim: where it starts, its size, its pid.
    let report = q.check().unwrap();
    assert!(!report.is_clean(), "{report:?}");
    assert_eq!(report.dead, CLAIMS - DONE);
    let claim = &report.claims[0];
    assert_eq!(
        (claim.first, claim.claims, claim.alive),
        (make_index(0, (seq + DONE) as u32), Some(CLAIMS - DONE), false)
    );
    assert_eq!(claim.pid, Some(ProcessToken::from_raw(dead).pid()));

    // A non-blocking poller gets past it on its own: the first poll at
    // the claim waits, a poll after the stall slice recovers it.
    let mut r = q.reader(Start::Beginning).unwrap();
    assert_eq!(r.next().unwrap().unwrap().index(), before);
    for k in 0..DONE {
        assert_eq!(r.next().unwrap().unwrap().payload(), &[k as u8; 16]);
    }
    assert!(r.next().unwrap().is_none());
    std::thread::sleep(Duration::from_millis(5));
    let rec = r.next().unwrap().expect("the message after the dead claim");
    assert_eq!((rec.index(), rec.payload()), (after, &b"after"[..]));
    // One padding frame covers the rest of the claim.
    let word = seg.atomic_u64(start + DONE * bytes).unwrap().load(Ordering::SeqCst);
    assert_eq!(
        FrameWord::decode(word),
        FrameWord::Padding { bytes: ((CLAIMS - DONE) * bytes) as u32, claims: (CLAIMS - DONE) as u32 }
    );
    assert!(matches!(
        q.read_at(make_index(0, (seq + 777) as u32), &mut Vec::new()),
        Err(Error::Abandoned { .. })
    ));
    let report = q.check().unwrap();
    assert!(report.is_clean() && report.abandoned == CLAIMS - DONE, "{report:?}");
}

#[test]
fn an_unrecorded_dead_claim_is_padded_up_to_the_next_live_claim_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&path).unwrap();
    let mut a = q.producer().unwrap();
    a.append(b"one").unwrap();
    // Dead right after its `fetch_add`: no record, no index slot.
    let (dead_seq, dead_off) = forge_dead_claim(&path, frame_size(100));
    // A live producer's claim right after it: recorded, nothing written in
    // the segment yet (no index slot either).
    let mut b = q.producer().unwrap();
    let mut claim = b.claim(5).unwrap();
    assert_eq!(index_seq(claim.index()) as u64, dead_seq + 1);
    let three = a.append(b"three").unwrap();

    let mut r = q.reader(Start::Beginning).unwrap();
    r.set_wait_policy(WaitPolicy::PARK);
    assert_eq!(r.next().unwrap().unwrap().payload(), b"one");
    assert!(r.next_timeout(Some(Duration::from_millis(50))).unwrap().is_none());
    // The dead run was padded exactly to where the live claim starts.
    let seg =
        MapOptions::new().mode(Mode::ReadWrite).map_path(path.join("00000000000000000000.seg")).unwrap();
    let word = seg.atomic_u64(dead_off).unwrap().load(Ordering::SeqCst);
    assert_eq!(FrameWord::decode(word), FrameWord::Padding { bytes: frame_size(100) as u32, claims: 1 });
    let pending = r.pending_claim().unwrap().expect("the live claim blocks");
    assert!(pending.alive && pending.index == claim.index(), "{pending:?}");
    claim.copy_from_slice(b"two!!");
    claim.commit().unwrap();
    assert_eq!(r.next_timeout(Some(Duration::from_secs(1))).unwrap().unwrap().payload(), b"two!!");
    let rec = r.next().unwrap().unwrap();
    assert_eq!((rec.index(), rec.payload()), (three, &b"three"[..]));
}

/// A producer that moved the active segment on and died before creating
/// it leaves `active` naming a file that does not exist. Everything that
/// looks for the end of the queue gets past it: the end is the start of
/// that segment, and whoever appends or reads next creates it.
#[test]
fn producer_dead_between_moving_active_and_creating_the_segment() {
    let (_dir, path, q, p) = queue_of_three();
    drop(p);
    drop(q);
    // What the producer did before it died: sealed segment 0 at its tail
    // (the end frame, then the final count), then moved `active` on.
    mmkit_queue::fuzzing::seal_first_segment_and_move_on(&path).unwrap();
    let q = Queue::open(&path).unwrap();
    assert_eq!(q.end_index().unwrap(), make_index(1, 0));
    let stat = q.stat().unwrap();
    assert_eq!(stat.end_index, make_index(1, 0));
    let mut tail = q.reader(Start::End).unwrap();
    let report = q.check().unwrap();
    assert_eq!(report.messages, 3, "{report:?}");
    assert_eq!(q.last_index().unwrap(), Some(make_index(0, 2)));
    assert_eq!(q.seek_time(u64::MAX).unwrap(), make_index(1, 0));
    q.sync().unwrap();
    q.apply_retention(&Retention { max_total_bytes: Some(1 << 30), ..Retention::default() }).unwrap();
    let mut c = q.cursor("c").unwrap();
    c.seek(q.end_index().unwrap()).unwrap();
    c.commit().unwrap();
    let at = q.producer().unwrap().append(b"after").unwrap();
    assert_eq!(at, make_index(1, 0));
    let got = tail.next_timeout(Some(Duration::from_secs(5))).unwrap().unwrap();
    assert_eq!((got.index(), got.payload()), (at, &b"after"[..]));
    assert_eq!(read_all(&q), vec![vec![0], vec![1], vec![2], b"after".to_vec()]);
}

/// A committed message longer than the queue's maximum, whatever its
/// checksum, is no frame: readers report it, and so does `check`, which
/// used to count it as a good message.
#[test]
fn a_message_longer_than_the_maximum_is_corrupt_for_readers_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(1 << 16).max_message_size(64).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    p.append(b"one").unwrap();
    p.append(b"two").unwrap();
    drop(p);
    // A third message of 100 bytes, committed, with a valid checksum.
    let seg =
        MapOptions::new().mode(Mode::ReadWrite).map_path(path.join("00000000000000000000.seg")).unwrap();
    let tail = seg.atomic_u64(SEG_TAIL).unwrap();
    let (seq, offset) = split_tail(tail.load(Ordering::SeqCst));
    let payload = [7u8; 100];
    seg.write_at(offset + FRAME_HEADER, &payload).unwrap();
    let crc = record_crc(&payload, make_index(0, seq as u32), 0);
    seg.atomic_u32(seg.len() as u64 - 4 * (seq + 1)).unwrap().store(offset as u32, Ordering::SeqCst);
    seg.atomic_u64(offset).unwrap().store(state_word(KIND_MESSAGE, 100, crc), Ordering::SeqCst);
    tail.store((seq + 1) << 32 | (offset + frame_size(100)), Ordering::SeqCst);

    let mut r = q.reader(Start::Beginning).unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload(), b"one");
    assert_eq!(r.next().unwrap().unwrap().payload(), b"two");
    assert!(matches!(r.next(), Err(Error::CorruptRecord { .. })));
    let report = q.check().unwrap();
    assert_eq!((report.messages, report.corrupt.len()), (2, 1), "{report:?}");
    assert!(report.corrupt[0].reason.contains("impossible length 100"), "{report:?}");
}

/// Every way of polling without blocking for long: `next`, `next_timeout`
/// with a zero or a very short timeout (shorter than the policy's spin, so
/// the read never reaches its wait), `next_into` with a zero timeout, and
/// a group member's `next_timeout` with a zero timeout.
#[derive(Clone, Copy, Debug)]
enum Poller {
    Next,
    TimeoutZero,
    TimeoutShort,
    IntoZero,
    GroupZero,
}

/// Polls with `how` (sleeping 200 µs between empty answers) until two
/// messages came or 10 s passed; returns their payloads.
fn poll_two(q: &Queue, how: Poller) -> Vec<Vec<u8>> {
    let mut r = q.reader(Start::Beginning).unwrap();
    let mut m = q.group("g").unwrap();
    let mut buf = [0u8; 64];
    let mut next = || -> Option<Vec<u8>> {
        match how {
            Poller::Next => r.next().unwrap().map(|r| r.to_vec()),
            Poller::TimeoutZero => r.next_timeout(Some(Duration::ZERO)).unwrap().map(|r| r.to_vec()),
            Poller::TimeoutShort => {
                r.next_timeout(Some(Duration::from_micros(20))).unwrap().map(|r| r.to_vec())
            }
            Poller::IntoZero => {
                r.next_into(&mut buf, Some(Duration::ZERO)).unwrap().map(|c| buf[..c.len].to_vec())
            }
            Poller::GroupZero => m.next_timeout(Some(Duration::ZERO)).unwrap().map(|r| r.to_vec()),
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < 2 && std::time::Instant::now() < deadline {
        match next() {
            Some(v) => got.push(v),
            None => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    got
}

/// A poller whose calls are too short to wait never reached the only
/// place a waiting read recovers a dead claim (its wait, after a stall
/// slice), and answered "nothing" for ever while a committed message lay
/// behind the claim. Each call now counts the stall across calls as
/// `next` does, and recovers once it has lasted a slice.
#[test]
fn every_polling_read_gets_past_a_dead_claim() {
    for how in [Poller::Next, Poller::TimeoutZero, Poller::TimeoutShort, Poller::IntoZero, Poller::GroupZero]
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let q = Queue::options().create(true).segment_size(1 << 20).open(&path).unwrap();
        let mut p = q.producer().unwrap();
        p.append(b"one").unwrap();
        forge_dead_claim(&path, frame_size(100));
        p.append(b"two").unwrap();
        drop(p);
        assert_eq!(
            poll_two(&q, how),
            vec![b"one".to_vec(), b"two".to_vec()],
            "{how:?}: stuck at the dead claim"
        );
    }
}

/// Recovering a dead producer's batch claim used to mark every index slot
/// of it abandoned, in the recovering reader's `next()` (6.7 ms for three
/// million claims), and a seek into the padded range walked back over all
/// of them. Now recovery marks the run's first slot and a few links (at
/// most 33, whatever the size), the other slots stay 0, and `read_at`,
/// `seek` and `last_index` find the run through the links. Files whose
/// every slot was marked by older builds still read the same.
#[test]
fn recovering_a_dead_batch_marks_a_few_index_slots_whatever_its_size() {
    const CLAIMS: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(32 << 20).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    let before = p.append(b"before").unwrap();
    // A dead producer's batch of empty messages, claimed and recorded,
    // nothing of it committed.
    let DeadBatch { seg, first, start, .. } = forge_dead_batch(&path, CLAIMS, 0);
    let after = p.append(b"after").unwrap();
    drop(p);

    // The poller recovers the claim on its own (after the stall slice).
    let mut r = q.reader(Start::Beginning).unwrap();
    assert_eq!(r.next().unwrap().unwrap().index(), before);
    assert!(r.next().unwrap().is_none());
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(r.next().unwrap().unwrap().index(), after);
    let slot_of = |c: u64| seg.atomic_u32(seg.len() as u64 - 4 * (c + 1)).unwrap();
    let marked = (first..first + CLAIMS).filter(|&c| slot_of(c).load(Ordering::SeqCst) != 0).count();
    assert!(marked <= 33, "{marked} index slots written for one padded run");

    // Every index of the run is abandoned, and a seek anywhere into it
    // lands on the message after it.
    // (Seeks into a run marked in every slot still walk back over it, as
    // they always did: fewer of them.)
    let check_run = |what: &str, step: usize| {
        let mut r = q.reader(Start::Beginning).unwrap();
        let mut buf = Vec::new();
        for c in (first..first + CLAIMS).step_by(step).chain([first, first + 1, first + CLAIMS - 1]) {
            let index = make_index(0, c as u32);
            assert!(matches!(q.read_at(index, &mut buf), Err(Error::Abandoned { .. })), "{what}: {c}");
            r.seek(index).unwrap();
            assert_eq!(r.next().unwrap().unwrap().index(), after, "{what}: seek to {c}");
        }
        assert_eq!(q.read_at(after, &mut buf).unwrap().index, after);
        assert_eq!(q.last_index().unwrap(), Some(after), "{what}");
        let report = q.check().unwrap();
        assert!(
            report.is_clean() && report.abandoned == CLAIMS && report.messages == 2,
            "{what}: {report:?}"
        );
    };
    check_run("links", 997);
    // As older builds left it: every slot of the run holds the offset.
    for c in first..first + CLAIMS {
        slot_of(c).store(start as u32 | 1 << 31, Ordering::SeqCst);
    }
    check_run("every slot marked", 99_991);
}

/// Forges, in segment 0 of the queue at `path`, a dead producer's batch of
/// `claims` frames of `payload` bytes: claimed from the tail and recorded
/// in producer slot 100 (owner and token a dead process's), nothing
/// committed.
fn forge_dead_batch(path: &std::path::Path, claims: u64, payload: u64) -> DeadBatch {
    let seg =
        MapOptions::new().mode(Mode::ReadWrite).map_path(path.join("00000000000000000000.seg")).unwrap();
    let bytes = frame_size(payload);
    let old = seg.atomic_u64(SEG_TAIL).unwrap().fetch_add((claims << 32) + claims * bytes, Ordering::SeqCst);
    let (first, start) = split_tail(old);
    let meta = MapOptions::new().mode(Mode::ReadWrite).map_path(path.join("meta")).unwrap();
    let slot = PRODUCER_TABLE + 100 * PRODUCER_SLOT_SIZE;
    let dead = dead_token();
    for (field, value) in [
        (SLOT_OWNER, dead),
        (SLOT_SEGMENT, 0),
        (SLOT_CLAIM, first << 32 | claims),
        (SLOT_START, start),
        (SLOT_END, start + claims * bytes),
        (SLOT_STATE, 5 << 2 | PRODUCER_CLAIMED),
        (SLOT_TOKEN, dead),
    ] {
        meta.atomic_u64(slot + field).unwrap().store(value, Ordering::SeqCst);
    }
    DeadBatch { seg, first, start, token: dead }
}

/// What [`forge_dead_batch`] made.
struct DeadBatch {
    /// Segment 0, mapped read-write.
    seg: mmkit_region::Mapping,
    /// The batch's first sequence number.
    first: u64,
    /// Its first frame's offset.
    start: u64,
    /// The dead producer's token.
    token: u64,
}
