//! Single-process behaviour: appending, reading, rollover, cursors,
//! random access, errors.

use std::time::Duration;

use mmkit_queue::*;

fn tiny(dir: &std::path::Path) -> Queue {
    Queue::options().create(true).segment_size(4096).max_message_size(512).open(dir.join("q")).unwrap()
}

fn drain(r: &mut Reader) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        out.push((rec.index(), rec.to_vec()));
    }
    out
}

#[test]
fn append_and_read_back_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut p = q.producer().unwrap();
    let mut indices = Vec::new();
    for i in 0..2000u32 {
        let msg = format!("message {i} {}", "x".repeat((i % 97) as usize));
        indices.push(p.append(msg.as_bytes()).unwrap());
    }
    assert!(indices.windows(2).all(|w| w[0] < w[1]), "indices increase");
    assert!(index_segment(*indices.last().unwrap()) > 10, "rolled over many times");
    let mut r = q.reader(Start::Beginning).unwrap();
    let got = drain(&mut r);
    assert_eq!(got.len(), 2000);
    for (i, (idx, payload)) in got.iter().enumerate() {
        assert_eq!(*idx, indices[i]);
        let msg = format!("message {i} {}", "x".repeat(i % 97));
        assert_eq!(payload, msg.as_bytes());
    }
    // Random access by index, O(1).
    let mut buf = Vec::new();
    for (i, &idx) in indices.iter().enumerate().step_by(37) {
        let info = q.read_at(idx, &mut buf).unwrap();
        assert_eq!(info.index, idx);
        assert!(buf.starts_with(format!("message {i} ").as_bytes()));
    }
    assert!(matches!(q.read_at(make_index(9999, 0), &mut buf), Err(Error::NoSuchIndex { .. })));
    let report = q.check().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.messages, 2000);
    // Lag counts across every segment, from the cursor's position on.
    let mut c = q.cursor("all").unwrap();
    assert_eq!(q.cursors().unwrap()[0].lag, 2000);
    for _ in 0..1500 {
        c.next().unwrap().unwrap();
    }
    c.commit().unwrap();
    assert_eq!(q.stat().unwrap().cursors[0].lag, 500);
}

#[test]
fn claim_commit_abort_and_batch() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut p = q.producer().unwrap();
    let mut c = p.claim(3).unwrap();
    c.copy_from_slice(b"abc");
    let a = c.commit().unwrap();
    let mut dropped = p.claim(10).unwrap();
    dropped.fill(7);
    drop(dropped); // abandoned: becomes padding
    let batch: Vec<&[u8]> = (0..300).map(|i| if i % 2 == 0 { &b"even"[..] } else { &b"odd!!"[..] }).collect();
    let idx = p.append_batch(&batch).unwrap();
    assert_eq!(idx.len(), 300);
    let mut r = q.reader(Start::Beginning).unwrap();
    let got = drain(&mut r);
    assert_eq!(got[0], (a, b"abc".to_vec()));
    assert_eq!(got.len(), 301);
    for (i, (index, payload)) in got[1..].iter().enumerate() {
        assert_eq!(*index, idx[i]);
        assert_eq!(payload.as_slice(), batch[i]);
    }
}

/// A batch under the lease is written in runs of at most 1024 frames, each
/// ending at a segment boundary: a long batch of small messages crosses
/// both, and every message comes back once, in order, with its index.
#[test]
fn long_exclusive_batch_crosses_runs_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::options().create(true).segment_size(64 << 10).open(dir.path().join("q")).unwrap();
    let mut p = q.producer().unwrap();
    assert!(p.is_exclusive());
    let msgs: Vec<Vec<u8>> = (0..5000u32).map(|i| i.to_le_bytes().repeat(1 + i as usize % 5)).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let idx = p.append_batch(&refs).unwrap();
    assert!(idx.windows(2).all(|w| w[0] < w[1]));
    assert!(mmkit_queue::index_segment(idx[4999]) > mmkit_queue::index_segment(idx[0]));
    let got = drain(&mut q.reader(Start::Beginning).unwrap());
    assert_eq!(got.len(), msgs.len());
    for ((index, payload), (i, m)) in got.iter().zip(idx.iter().zip(&msgs)) {
        assert_eq!((index, payload), (i, m));
    }
}

#[test]
fn readers_from_end_index_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut p = q.producer().unwrap();
    let mut idx = Vec::new();
    for i in 0..500u64 {
        idx.push(p.append_with_timestamp(&i.to_le_bytes(), 1000 + i * 10).unwrap());
    }
    let mut end = q.reader(Start::End).unwrap();
    assert!(end.next().unwrap().is_none());
    let late = p.append(b"late").unwrap();
    assert_eq!(end.next().unwrap().unwrap().index(), late);

    let mut from = q.reader(Start::Index(idx[123])).unwrap();
    assert_eq!(from.next().unwrap().unwrap().payload(), &123u64.to_le_bytes());

    assert_eq!(q.seek_time(1000 + 250 * 10).unwrap(), idx[250]);
    assert_eq!(q.seek_time(1000 + 250 * 10 - 3).unwrap(), idx[250]);
    assert_eq!(q.seek_time(0).unwrap(), idx[0]);
    let mut t = q.reader(Start::Time(1000 + 400 * 10)).unwrap();
    assert_eq!(t.next().unwrap().unwrap().index(), idx[400]);
}

#[test]
fn blocking_read_wakes_on_append_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut r = q.reader(Start::Beginning).unwrap();
    r.set_wait_policy(WaitPolicy::PARK);
    assert!(r.next_timeout(Some(Duration::from_millis(20))).unwrap().is_none());
    let q2 = q.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        q2.producer().unwrap().append(b"wake").unwrap()
    });
    let rec = r.next_timeout(Some(Duration::from_secs(10))).unwrap().unwrap();
    assert_eq!(rec.payload(), b"wake");
    t.join().unwrap();
}

#[test]
fn named_cursor_resumes_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut p = q.producer().unwrap();
    for i in 0..100u32 {
        p.append(&i.to_le_bytes()).unwrap();
    }
    {
        let mut c = q.cursor("c1").unwrap();
        for _ in 0..40 {
            c.next().unwrap().unwrap();
        }
        c.commit().unwrap();
        for _ in 0..10 {
            c.next().unwrap().unwrap(); // read but not committed
        }
    }
    let q = Queue::open(dir.path().join("q")).unwrap();
    let mut c = q.cursor("c1").unwrap();
    assert_eq!(c.next().unwrap().unwrap().payload(), &40u32.to_le_bytes());
    let info = q.cursors().unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].name, "c1");
    assert_eq!(info[0].lag, 60);
    assert!(q.delete_cursor("c1").unwrap());
    assert!(q.cursors().unwrap().is_empty());
    assert!(matches!(q.cursor(""), Err(Error::InvalidName { .. })));
    assert!(matches!(q.cursor(&"x".repeat(49)), Err(Error::InvalidName { .. })));
}

#[test]
fn group_members_share_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut p = q.producer().unwrap();
    for i in 0..300u32 {
        p.append(&i.to_le_bytes()).unwrap();
    }
    let mut a = q.group("g").unwrap();
    let mut b = q.group("g").unwrap();
    let mut seen = Vec::new();
    let mut taken = [0usize; 2];
    loop {
        let mut progress = false;
        for (k, m) in [&mut a, &mut b].into_iter().enumerate() {
            if let Some(r) = m.next_timeout(Some(Duration::from_millis(1))).unwrap() {
                seen.push(u32::from_le_bytes(r.payload().try_into().unwrap()));
                taken[k] += 1;
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    assert!(taken.iter().all(|&n| n > 0), "both members took work: {taken:?}");
    seen.sort_unstable();
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
    let groups = q.stat().unwrap().groups;
    assert_eq!((groups.len(), groups[0].lag), (1, 0), "{groups:?}");
}

#[test]
fn message_too_large_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut p = q.producer().unwrap();
    let e = p.append(&[0u8; 513]).unwrap_err();
    assert!(matches!(e, Error::MessageTooLarge { len: 513, max: 512 }), "{e}");
    assert!(matches!(p.claim(10_000), Err(Error::MessageTooLarge { len: 10_000, max: 512 })));
    let e = p.append_batch(&[b"ok", &[0u8; 600]]).unwrap_err();
    assert!(matches!(e, Error::MessageTooLarge { len: 600, max: 512 }), "{e}");
    // A rejected batch appends nothing, not even its valid part.
    assert!(q.reader(Start::Beginning).unwrap().next().unwrap().is_none());
    p.append(&[0u8; 512]).unwrap();
}

#[test]
fn bad_options_and_bad_directories() {
    let dir = tempfile::tempdir().unwrap();
    let e = Queue::options().create(true).segment_size(1000).open(dir.path().join("a")).unwrap_err();
    assert!(matches!(e, Error::InvalidOption(_)), "{e}");
    let e = Queue::options()
        .create(true)
        .segment_size(4096)
        .max_message_size(4096)
        .open(dir.path().join("b"))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOption(_)), "{e}");
    let e = Queue::open(dir.path().join("missing")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let e = Queue::open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::NotAQueue { .. }), "{e}");
    tiny(dir.path());
    assert!(matches!(Queue::create(dir.path().join("q")), Err(Error::AlreadyExists { .. })));
}

#[test]
fn wrong_magic_and_version_are_reported() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    tiny(dir.path());
    let meta = dir.path().join("q/meta");
    let f = std::fs::OpenOptions::new().write(true).open(&meta).unwrap();
    f.write_all_at(&3u32.to_le_bytes(), 8).unwrap();
    let e = Queue::open(dir.path().join("q")).unwrap_err();
    assert!(matches!(e, Error::UnsupportedVersion { found: 3, supported: 2, .. }), "{e}");
    assert!(e.to_string().contains("newer"), "{e}");
    // Version 1 queues (before the single-producer lease) are refused too:
    // a version-1 producer would not honour the lease.
    f.write_all_at(&1u32.to_le_bytes(), 8).unwrap();
    let e = Queue::open(dir.path().join("q")).unwrap_err();
    assert!(matches!(e, Error::UnsupportedVersion { found: 1, supported: 2, .. }), "{e}");
    assert!(e.to_string().contains("older"), "{e}");
    f.write_all_at(b"NOTAQUEU", 0).unwrap();
    let e = Queue::open(dir.path().join("q")).unwrap_err();
    assert!(matches!(e, Error::BadMagic { .. }), "{e}");
}

#[test]
fn durability_modes_acknowledge() {
    let dir = tempfile::tempdir().unwrap();
    for (i, mode) in [
        Durability::OsManaged,
        Durability::SyncEveryMessage,
        Durability::GroupCommit { interval_us: 200, max_batch: 64 },
    ]
    .into_iter()
    .enumerate()
    {
        let q = Queue::options()
            .create(true)
            .segment_size(1 << 16)
            .durability(mode)
            .open(dir.path().join(format!("d{i}")))
            .unwrap();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut p = q.producer().unwrap();
                    for _ in 0..50 {
                        let idx = p.append_durable(b"durable").unwrap();
                        assert!(q.wait_durable(idx, Some(Duration::from_secs(0))).unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(q.check().unwrap().messages, 150);
    }
}

#[test]
fn retention_deletes_old_segments_but_respects_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut c = q.cursor("slow").unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..1000u32 {
        p.append(&i.to_le_bytes()).unwrap();
    }
    let mut live = q.reader(Start::Beginning).unwrap();
    let first = live.next().unwrap().unwrap().to_vec();
    assert_eq!(first, 0u32.to_le_bytes());
    let policy = Retention { max_total_bytes: Some(4096 * 3), ..Retention::default() };
    assert!(q.apply_retention(&policy).unwrap().deleted.is_empty(), "the cursor pins everything");
    for _ in 0..900 {
        c.next().unwrap().unwrap();
    }
    c.commit().unwrap();
    let report = q.apply_retention(&policy).unwrap();
    assert!(!report.deleted.is_empty(), "{report:?} {:?}", q.stat().unwrap());
    assert!(q.first_index().unwrap() > 0);
    // The reader that had segment 0 mapped keeps reading it.
    // It finishes the mapped segment, then continues at the first
    // retained segment: no error, indices still increasing.
    let rest = drain(&mut live);
    let seg0 = rest.iter().filter(|(i, _)| index_segment(*i) == 0).count();
    assert!(seg0 > 50, "read the rest of the mapped, deleted segment 0 ({seg0})");
    assert!(rest.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(rest.last().unwrap().1, 999u32.to_le_bytes());
    // New readers start at the first retained segment.
    let mut fresh = q.reader(Start::Beginning).unwrap();
    assert!(fresh.next().unwrap().is_some());
    assert!(matches!(q.read_at(make_index(0, 0), &mut Vec::new()), Err(Error::NoSuchIndex { .. })));
    let stat = q.stat().unwrap();
    assert_eq!(stat.segments.first().unwrap().number, index_segment(q.first_index().unwrap()));
}

/// A minimal executor: parks the thread until the waker fires.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let mut polls = 0;
    loop {
        polls += 1;
        assert!(polls < 100, "busy polling ({polls} polls)");
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_secs(5));
    }
}

#[test]
fn async_read_wakes_without_busy_polling() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut r = q.reader(Start::Beginning).unwrap();
    let q2 = q.clone();
    let t = std::thread::spawn(move || {
        let mut p = q2.producer().unwrap();
        for i in 0..3u8 {
            std::thread::sleep(Duration::from_millis(30));
            p.append(&[i]).unwrap();
        }
    });
    for i in 0..3u8 {
        let got = block_on(async { r.next_async().await.map(|rec| rec.to_vec()) }).unwrap();
        assert_eq!(got, vec![i]);
    }
    t.join().unwrap();
}

#[test]
fn full_cursor_and_group_tables_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    for i in 0..256 {
        q.cursor(&format!("c{i}")).unwrap();
    }
    // An existing name still opens; a new one finds no slot.
    assert_eq!(q.cursor("c255").unwrap().name(), "c255");
    let e = q.cursor("one too many").unwrap_err();
    assert!(matches!(e, Error::TableFull { table: "cursor", capacity: 256, .. }), "{e}");
    for i in 0..16 {
        q.group(&format!("g{i}")).unwrap();
    }
    assert_eq!(q.group("g15").unwrap().group_name(), "g15");
    let e = q.group("one too many").unwrap_err();
    assert!(matches!(e, Error::TableFull { table: "group", capacity: 16, .. }), "{e}");
    assert_eq!((q.cursors().unwrap().len(), q.stat().unwrap().groups.len()), (256, 16));
}

#[test]
fn metadata_travels_with_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::options().create(true).segment_size(64 << 10).open(dir.path().join("q")).unwrap();
    assert_eq!(q.last_index().unwrap(), None);
    let mut a = q.producer().unwrap();
    let i0 = a.append_with_meta(b"origin=7", b"payload").unwrap();
    let i1 = a.append(b"plain").unwrap();
    // A second producer: the same through the shared protocol, and batches.
    let mut b = q.producer().unwrap();
    let i2 = b.append_with_meta(b"", b"empty meta").unwrap();
    let batch = b.append_batch_with_meta(&[(b"m3", b"p3"), (&[0xff; 300], b"")]).unwrap();
    assert!(b.append_with_meta(&[0; MAX_META + 1], b"x").is_err());
    assert_eq!(q.last_index().unwrap(), Some(batch[1]));
    let want: Vec<(u64, &[u8], &[u8])> = vec![
        (i0, b"origin=7", b"payload"),
        (i1, b"", b"plain"),
        (i2, b"", b"empty meta"),
        (batch[0], b"m3", b"p3"),
        (batch[1], &[0xff; 300], b""),
    ];
    let mut r = q.reader(Start::Beginning).unwrap();
    let mut g = q.group("g").unwrap();
    for (index, meta, payload) in &want {
        let rec = r.next().unwrap().unwrap();
        assert_eq!((rec.index(), rec.meta(), rec.payload()), (*index, *meta, *payload));
        let rec = g.next_timeout(Some(std::time::Duration::from_secs(1))).unwrap().unwrap();
        assert_eq!((rec.index(), rec.meta(), rec.payload()), (*index, *meta, *payload));
        let mut buf = Vec::new();
        let info = q.read_at(*index, &mut buf).unwrap();
        assert_eq!((info.len, buf.as_slice()), (payload.len(), *payload), "read_at gives the payload only");
    }
    assert!(q.check().unwrap().is_clean());
}

/// `next_into` copies each payload into the caller's buffer, across
/// segments and through records with metadata; a buffer too small is an
/// error that leaves the reader at the record.
#[test]
fn next_into_copies_into_the_callers_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut p = q.producer().unwrap();
    let mut want = Vec::new();
    for i in 0..300u32 {
        let msg = vec![i as u8; 1 + (i as usize * 7) % 60];
        let at = if i % 50 == 7 { p.append_with_meta(b"meta", &msg) } else { p.append(&msg) }.unwrap();
        want.push((at, msg));
    }
    let mut r = q.reader(Start::Beginning).unwrap();
    let mut buf = [0u8; 64];
    for (at, msg) in &want {
        if msg.len() > 40 {
            let e = r.next_into(&mut buf[..40], None).unwrap_err();
            assert!(matches!(e, Error::BufferTooSmall { len, capacity: 40 } if len == msg.len()), "{e}");
        }
        let got = r.next_into(&mut buf, None).unwrap().expect("a record");
        assert_eq!((got.index, &buf[..got.len]), (*at, &msg[..]));
    }
    assert_eq!(r.next_into(&mut buf, Some(std::time::Duration::from_millis(10))).unwrap(), None);
}

/// A seal time is shared memory that any process can write: one before
/// the segment's creation (here 1970) or far in the future is not
/// trusted, and `max_age` counts from the successor's creation instead,
/// as for a segment sealed without one. Trusting 1970 deleted a segment
/// sealed a moment ago; trusting the future would keep it for ever.
#[test]
fn an_impossible_seal_time_neither_deletes_early_nor_keeps_for_ever() {
    use std::os::unix::fs::FileExt;
    for forged in [1u64, u64::MAX / 2] {
        let dir = tempfile::tempdir().unwrap();
        let q = tiny(dir.path());
        let mut p = q.producer().unwrap();
        while index_segment(p.append(&[1u8; 100]).unwrap()) == 0 {}
        let sealed = dir.path().join("q").join("00000000000000000000.seg");
        let f = std::fs::OpenOptions::new().write(true).open(&sealed).unwrap();
        f.write_all_at(&forged.to_le_bytes(), format::SEG_SEALED_AT).unwrap();
        let policy = Retention { max_age: Some(Duration::from_secs(1)), ..Retention::default() };
        let report = q.apply_retention(&policy).unwrap();
        assert!(report.deleted.is_empty(), "seal time {forged}: deleted at once: {report:?}");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(q.apply_retention(&policy).unwrap().deleted, [0], "seal time {forged}: kept");
    }
}

/// `max_age` counts from when a segment was sealed, not from when its
/// successor was built: a producer builds the next segment once the
/// current one is half full, which in a slow queue can be days before the
/// seal. Retention used the successor's creation time, and deleted a
/// segment as soon as it was sealed, messages only just written included.
#[test]
fn max_age_counts_from_the_seal_not_from_the_next_segments_creation() {
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let q = tiny(dir.path());
    let mut p = q.producer().unwrap();
    let msg = [1u8; 100];
    let next = dir.path().join("q").join("00000000000000000001.seg");
    // Past half of segment 0, then wait for segment 1 to be built ahead.
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(index_segment(p.append(&msg).unwrap()), 0);
    }
    while !next.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "segment 1 was never built ahead");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(1200));
    // Fill segment 0 up: the append that does not fit seals it.
    while index_segment(p.append(&msg).unwrap()) == 0 {}
    let policy = Retention { max_age: Some(Duration::from_secs(1)), ..Retention::default() };
    let report = q.apply_retention(&policy).unwrap();
    assert!(report.deleted.is_empty(), "segment 0 was sealed just now: {report:?}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(q.apply_retention(&policy).unwrap().deleted, [0]);
}
