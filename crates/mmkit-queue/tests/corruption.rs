//! Corruption sweeps: random byte flips in segment and meta files must
//! give errors, never panics or out-of-bounds reads.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use mmkit_queue::*;

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn build(dir: &Path) -> Vec<u64> {
    let q = Queue::options().create(true).segment_size(4096).max_message_size(300).open(dir).unwrap();
    let mut p = q.producer().unwrap();
    let mut idx = Vec::new();
    for i in 0..150u32 {
        idx.push(p.append(&vec![i as u8; (i % 50) as usize]).unwrap());
        if i % 40 == 0 {
            drop(p.claim(20).unwrap()); // padding frames too
        }
    }
    let mut c = q.cursor("c").unwrap();
    for _ in 0..30 {
        c.next().unwrap();
    }
    c.commit().unwrap();
    idx
}

/// Reads a possibly corrupt queue from the start with `read` (which
/// returns a payload's length), skipping corrupt records, until it ends or
/// fails; counts the errors in `errs`. It must make progress: at most
/// 10,000 reads.
fn drain(
    q: &Queue,
    errs: &std::cell::Cell<usize>,
    mut read: impl FnMut(&mut Reader) -> Result<Option<usize>>,
) {
    let Ok(mut r) = q.reader(Start::Beginning) else { return };
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 10_000, "reader does not make progress");
        match read(&mut r) {
            Ok(Some(len)) => assert!(len <= 300),
            Ok(None) => return,
            Err(Error::CorruptRecord { .. }) => {
                errs.set(errs.get() + 1);
                if r.skip().is_err() {
                    return;
                }
            }
            Err(_) => {
                errs.set(errs.get() + 1);
                return;
            }
        }
    }
}

/// Uses every read path of a possibly corrupt queue; only errors allowed.
fn exercise(dir: &Path, indices: &[u64]) -> usize {
    let dbg = |s: &str| {
        if std::env::var("MMKQ_DEBUG").is_ok() {
            eprintln!("  {s}");
        }
    };
    let q = match Queue::open(dir) {
        Ok(q) => q,
        Err(_) => return 1,
    };
    let errs = std::cell::Cell::new(0);
    let count = |r: Result<()>| {
        if r.is_err() {
            errs.set(errs.get() + 1);
        }
    };
    dbg("read_at");
    let mut buf = Vec::new();
    for &i in indices.iter().step_by(7) {
        count(q.read_at(i, &mut buf).map(|_| ()));
    }
    dbg("check");
    count(q.check().map(|r| assert!(r.segments > 0 || !r.is_clean())));
    count(q.stat().map(|_| ()));
    count(q.seek_time(12345).map(|_| ()));
    dbg("reader");
    drain(&q, &errs, |r| r.next().map(|rec| rec.map(|rec| rec.len())));
    dbg("next_into");
    let mut out = [0u8; 300];
    drain(&q, &errs, |r| r.next_into(&mut out, Some(std::time::Duration::ZERO)).map(|c| c.map(|c| c.len)));
    dbg("cursor");
    count(q.cursor("c").map(|_| ()));
    dbg("producer");
    count(q.reader(Start::End).map(|_| ()));
    if let Ok(mut p) = q.producer() {
        count(p.append(b"after corruption").map(|_| ()));
    }
    errs.get()
}

#[test]
fn random_byte_flips_give_errors_never_panics() {
    let base = tempfile::tempdir().unwrap();
    let pristine = base.path().join("pristine");
    let indices = build(&pristine);
    // Listed before `exercise`, whose producer may leave a helper building
    // the next segment under a temporary name that is gone a moment later.
    let files: Vec<_> = std::fs::read_dir(&pristine)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(exercise(&pristine, &indices), 0, "a clean queue reads without errors");
    let mut seed = 0x2545f4914f6cdd1d;
    let mut detected = 0;
    for round in 0..250 {
        let dir = base.path().join(format!("r{round}"));
        common::copy_queue(&pristine, &dir);
        let file = dir.join(&files[(rng(&mut seed) % files.len() as u64) as usize]);
        let mut bytes = std::fs::read(&file).unwrap();
        // Flip bytes where things live: headers, frames and index slots.
        for _ in 0..1 + rng(&mut seed) % 4 {
            let at = match rng(&mut seed) % 3 {
                0 => rng(&mut seed) % 512,
                1 => rng(&mut seed) % bytes.len() as u64,
                _ => bytes.len() as u64 - 1 - rng(&mut seed) % 512,
            } as usize;
            bytes[at] ^= 1 << (rng(&mut seed) % 8);
        }
        std::fs::write(&file, &bytes).unwrap();
        if std::env::var("MMKQ_DEBUG").is_ok() {
            eprintln!("round {round}: {}", file.display());
        }
        let result = catch_unwind(AssertUnwindSafe(|| exercise(&dir, &indices)));
        match result {
            Ok(errors) => detected += usize::from(errors > 0),
            Err(_) => panic!("round {round}: panic on a corrupt {}", file.display()),
        }
        // A producer may still be precreating a segment in the background.
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(detected > 50, "most flips are detected ({detected}/250)");
}

#[test]
fn truncated_and_garbage_files_are_errors() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("q");
    let indices = build(&dir);
    let seg0 = dir.join("00000000000000000000.seg");
    std::fs::write(&seg0, b"short").unwrap();
    assert!(exercise(&dir, &indices) > 0);
    std::fs::write(dir.join("meta"), vec![0xAB; 100]).unwrap();
    assert!(matches!(Queue::open(&dir), Err(Error::BadMagic { .. })));
    std::fs::write(dir.join("meta"), b"").unwrap();
    assert!(matches!(Queue::open(&dir), Err(Error::Corrupt { .. })));
}

#[test]
fn fuzz_parser_logic_on_random_and_real_inputs() {
    // The same entry points as fuzz/fuzz_targets/{meta_header,segment_frames}.rs.
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("q");
    build(&dir);
    let meta = std::fs::read(dir.join("meta")).unwrap();
    let seg = std::fs::read(dir.join("00000000000000000000.seg")).unwrap();
    let mut seed = 99;
    for input in [&meta, &seg] {
        mmkit_queue::format::fuzz_parse(input);
        for _ in 0..300 {
            let mut v = input.clone();
            for _ in 0..1 + rng(&mut seed) % 8 {
                let at = (rng(&mut seed) % v.len() as u64) as usize;
                v[at] = rng(&mut seed) as u8;
            }
            let cut = (rng(&mut seed) % (v.len() as u64 + 1)) as usize;
            mmkit_queue::format::fuzz_parse(&v);
            mmkit_queue::format::fuzz_parse(&v[..cut]);
            let p = std::path::Path::new("x");
            if let Ok(h) = mmkit_queue::format::MetaHeader::parse(&v, p) {
                assert_eq!(mmkit_queue::format::MetaHeader::parse(&h.encode(), p).unwrap(), h);
            }
        }
    }
    // A well-formed header (valid CRC) claiming impossible sizes.
    for capacity in [0u64, 100, 200, 4095, 4096, 1 << 40] {
        let h = mmkit_queue::format::SegmentHeader { number: 0, capacity, created_ns: 1, flags: 0 };
        let mut v = h.encode().to_vec();
        v.resize(capacity.min(8192) as usize, 0xff);
        mmkit_queue::format::fuzz_parse(&v);
        v.resize(64, 0);
        mmkit_queue::format::fuzz_parse(&v);
    }
    for len in 0..200 {
        let v: Vec<u8> = (0..len).map(|_| rng(&mut seed) as u8).collect();
        mmkit_queue::format::fuzz_parse(&v);
    }
}

/// A segment number beyond the index space in the meta file's active or
/// first word is an error for producers and readers, never an overflow.
#[test]
fn segment_numbers_beyond_the_index_space_are_errors() {
    for (word, value) in
        [(format::META_ACTIVE, u64::MAX), (format::META_ACTIVE, 1 << 32), (format::META_FIRST, u64::MAX)]
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let q = Queue::options().create(true).segment_size(64 << 10).open(&path).unwrap();
        q.producer().unwrap().append(b"first").unwrap();
        drop(q);
        let meta = std::fs::OpenOptions::new().write(true).open(path.join("meta")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&meta, &value.to_le_bytes(), word).unwrap();
        let q = Queue::open(&path).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let appended = q.producer().and_then(|mut p| p.append(b"second"));
            let read = q.reader(Start::End).map(|_| ());
            (appended.is_err(), read.is_err())
        }));
        let (append_failed, read_failed) = outcome.expect("no panic");
        assert!(
            append_failed && read_failed,
            "word {word} = {value:#x}: append {append_failed}, read {read_failed}"
        );
    }
}

/// Runs `f` on a thread; its result, or a panic saying `what` hung when it
/// takes longer than `secs`.
fn within<T: Send + 'static>(what: &str, secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: hung"),
    }
}

/// Writes `value` at `offset` of `file` (visible through every mapping).
fn poke(file: &Path, offset: u64, value: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &value.to_le_bytes(), offset).unwrap();
}

/// A token naming a live process that is no producer of the queue: this
/// test process.
fn live_stranger() -> u64 {
    mmkit_sync::ProcessToken::current_process().to_raw()
}

/// A lease word naming a producer slot whose token names a live process and
/// whose state says "appending under the lease" (a forged or garbage slot)
/// used to make `Queue::producer` wait for that append for ever.
#[test]
fn a_forged_lease_holder_mid_append_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&path).unwrap();
    q.producer().unwrap().append(b"first").unwrap();
    drop(q);
    let meta = path.join("meta");
    poke(&meta, format::META_LEASE, 1); // slot 0 + 1
    poke(&meta, format::PRODUCER_TABLE + format::SLOT_TOKEN, live_stranger());
    poke(&meta, format::PRODUCER_TABLE + format::SLOT_STATE, 7 << 2 | format::PRODUCER_EXCLUSIVE);
    let p = path.clone();
    let r = within("producer() behind a forged lease holder", 60, move || {
        Queue::open(&p).and_then(|q| q.producer()).map(|_| ())
    });
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
}

/// The same forged holder, but the active segment's tail moves while the
/// registration waits (as under a holder in a batch longer than the wait
/// bound): the registration fails only once the tail has stood still for
/// the bound, counted from the move (it used to fail 10 s after it
/// started, whatever the tail did).
#[test]
fn a_lease_holder_whose_tail_moves_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    let seg = path.join(format!("{:020}.seg", 0));
    let tail = || {
        let bytes = std::fs::read(&seg).unwrap();
        u64::from_le_bytes(bytes[format::SEG_TAIL as usize..][..8].try_into().unwrap())
    };
    p.append(b"first").unwrap();
    let one = tail();
    p.append(b"second").unwrap();
    let two = tail();
    drop((p, q));
    let meta = path.join("meta");
    poke(&meta, format::META_LEASE, 1);
    poke(&meta, format::PRODUCER_TABLE + format::SLOT_TOKEN, live_stranger());
    poke(&meta, format::PRODUCER_TABLE + format::SLOT_STATE, 7 << 2 | format::PRODUCER_EXCLUSIVE);
    // Real tail words: the first frame counted, then both (the second is a
    // frame a holder committed and had not counted yet). The tail moves
    // once, 5 s in.
    poke(&seg, format::SEG_TAIL, one);
    let mover = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(5));
        poke(&seg, format::SEG_TAIL, two);
    });
    let started = std::time::Instant::now();
    let p = path.clone();
    let r = within("producer() behind a moving lease holder", 90, move || {
        Queue::open(&p).and_then(|q| q.producer()).map(|_| ())
    });
    let took = started.elapsed();
    mover.join().unwrap();
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
    // The bound counts from the move (5 s), not from the start.
    assert!(took >= std::time::Duration::from_secs(15), "failed after {took:?}, 5 s after the tail moved");
}

/// A group-commit flusher token naming a live process that never flushes
/// (forged, or a stopped flusher) used to keep `wait_durable` waiting for
/// ever: the waiter now flushes itself once the flusher shows no progress.
#[test]
fn a_forged_live_flusher_token_does_not_block_wait_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options()
        .create(true)
        .segment_size(64 << 10)
        .durability(Durability::GroupCommit { interval_us: 1000, max_batch: 0 })
        .open(&path)
        .unwrap();
    let index = q.producer().unwrap().append(b"durable").unwrap();
    poke(&path.join("meta"), format::META_FLUSH_LOCK, live_stranger());
    let r = within("wait_durable behind a forged flusher", 60, move || q.wait_durable(index, None));
    assert!(r.unwrap(), "durable");
}

/// A segment below the active one whose end (end-of-segment frame and
/// final count) is missing, as after a machine crash that lost the
/// segment's header page but kept the meta file's active segment: no
/// producer ever writes there again, so readers (and `tail --until end`,
/// which loops on `next`/`next_timeout`/`pending_claim`) waited for ever.
#[test]
fn an_unsealed_segment_below_the_active_one_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(4096).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    let mut later = Vec::new();
    for i in 0u8.. {
        let index = p.append(&[i; 40]).unwrap();
        if index_segment(index) == 1 {
            later.push(index);
            if later.len() == 5 {
                break;
            }
        }
    }
    drop(p);
    drop(q);
    // Unseal segment 0: zero its end-of-segment frame and its final count.
    let seg0 = path.join("00000000000000000000.seg");
    let image = std::fs::read(&seg0).unwrap();
    let word = |at: u64| u64::from_le_bytes(image[at as usize..at as usize + 8].try_into().unwrap());
    let (count, offset) = format::split_tail(word(format::SEG_TAIL));
    assert_eq!(format::FrameWord::decode(word(offset)), format::FrameWord::EndOfSegment);
    assert_eq!(word(format::SEG_FINAL_COUNT), count);
    poke(&seg0, offset, 0);
    poke(&seg0, format::SEG_FINAL_COUNT, u64::MAX);

    let p = path.clone();
    let (errors, read) = within("tail --until end over an unsealed segment", 60, move || {
        // What `mmkit queue tail` does without `--follow`.
        let q = Queue::open(&p).unwrap();
        let end = q.end_index().unwrap();
        let mut r = q.reader(Start::Beginning).unwrap();
        let (mut errors, mut read) = (0, Vec::new());
        while r.position() < end {
            match r.next() {
                Ok(Some(rec)) => read.push(rec.index()),
                Ok(None) => {
                    if let Ok(Some(rec)) = r.next_timeout(Some(std::time::Duration::from_millis(100))) {
                        read.push(rec.index());
                    } else if r.pending_claim().is_ok_and(|c| c.is_some_and(|c| c.alive)) {
                        panic!("a live claim?");
                    }
                }
                Err(Error::CorruptRecord { .. }) => {
                    errors += 1;
                    r.skip().unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        (errors, read)
    });
    assert_eq!(errors, 1, "the missing end is reported once");
    assert!(later.iter().all(|i| read.contains(i)), "the next segment is read after skipping");

    // `check` agrees with the readers, and `repair` seals the segment where
    // its claims end: then readers go on without an error.
    let q = Queue::open(&path).unwrap();
    let report = q.check().unwrap();
    assert!(!report.is_clean() && report.corrupt.iter().any(|c| c.segment == 0), "{report:?}");
    assert!(q.repair().unwrap().is_clean());
    assert!(q.check().unwrap().is_clean());
    let mut r = q.reader(Start::Beginning).unwrap();
    let mut seen = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        seen.push(rec.index());
    }
    assert!(later.iter().all(|i| seen.contains(i)), "read past segment 0 into segment 1");
}

/// A flipped payload byte is a `CorruptRecord` from `next_into`, never
/// the damaged bytes; `skip` gets past it to the next record.
#[test]
fn next_into_never_returns_a_record_whose_crc_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&path).unwrap();
    let mut p = q.producer().unwrap();
    let first = p.append(&[1u8; 40]).unwrap();
    p.append(&[2u8; 40]).unwrap();
    let third = p.append(&[3u8; 40]).unwrap();
    // The second frame's payload: frames start after the segment header.
    let payload = format::SEGMENT_HEADER + format::frame_size(40) + format::FRAME_HEADER;
    let seg = path.join("00000000000000000000.seg");
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x55], payload + 7).unwrap();
    let mut r = q.reader(Start::Beginning).unwrap();
    let mut out = [0u8; 64];
    assert_eq!(r.next_into(&mut out, None).unwrap().map(|c| c.index), Some(first));
    let e = r.next_into(&mut out, None).unwrap_err();
    assert!(matches!(e, Error::CorruptRecord { .. }), "{e}");
    r.skip().unwrap();
    let got = r.next_into(&mut out, None).unwrap().expect("the third record");
    assert_eq!((got.index, &out[..got.len]), (third, &[3u8; 40][..]));
}

/// `check` pins each segment before reading it, and pins rely on the meta
/// file's first retained segment. One beyond the active segment (which
/// retention never makes) is reported, and the segments are read anyway,
/// not skipped as retired.
#[test]
fn a_first_segment_beyond_the_active_one_is_reported_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(64 << 10).open(&path).unwrap();
    q.producer().unwrap().append(b"first").unwrap();
    drop(q);
    poke(&path.join("meta"), format::META_FIRST, 5);
    let report = Queue::open(&path).unwrap().check().unwrap();
    assert_eq!((report.segments, report.messages), (1, 1), "{report:?}");
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    assert!(report.corrupt[0].reason.contains("beyond the active segment"), "{report:?}");
}
