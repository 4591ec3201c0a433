//! Segment recycling: retired segments become zeroed spares that new
//! segments are built from, never while a live process may read them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mmkit_queue::{Queue, Reader, Retention, Start, index_segment};

const SEGMENT: u64 = 16 << 10;

fn open(dir: &Path) -> Queue {
    Queue::options().create(true).segment_size(SEGMENT).max_message_size(512).open(dir).unwrap()
}

fn payload(i: u32) -> Vec<u8> {
    let len = 8 + (i as usize * 7) % 120;
    (0..len).map(|k| (i as usize * 31 + k) as u8).collect()
}

fn drain(r: &mut Reader) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        out.push((rec.index(), rec.to_vec()));
    }
    out
}

fn spares(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(".spare-"))
        .collect()
}

fn inodes(dir: &Path, pred: impl Fn(&str) -> bool) -> HashSet<u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| pred(e.file_name().to_str().unwrap()))
        // `d_ino`, not a stat: files are renamed and deleted meanwhile.
        .map(|e| std::os::unix::fs::DirEntryExt::ino(&e))
        .collect()
}

/// A queue in a new directory, filled into its fifth segment, and its
/// producer.
fn four_segments() -> (tempfile::TempDir, Queue, mmkit_queue::Producer) {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir.path().join("q"));
    let mut p = q.producer().unwrap();
    while index_segment(p.append(&payload(1)).unwrap()) < 4 {}
    (dir, q, p)
}

fn keep_two() -> Retention {
    Retention { max_total_bytes: Some(2 * SEGMENT), ..Retention::default() }
}

#[test]
fn retired_segments_are_reused_and_carry_no_stale_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = open(&path);
    let mut p = q.producer().unwrap();
    let mut next = 0u32;
    let mut append_until_segment = |p: &mut mmkit_queue::Producer, seg: u64| {
        while index_segment(p.append(&payload(next)).unwrap()) < seg {
            next += 1;
        }
        next += 1;
    };
    append_until_segment(&mut p, 5);
    // As after a machine crash that lost the tail word's last write-back:
    // the tails on disk say "nothing used" though the frames are there.
    for s in 0..3u64 {
        let f = std::fs::OpenOptions::new().write(true).open(path.join(format!("{s:020}.seg"))).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &256u64.to_le_bytes(), 64).unwrap();
    }
    let report = q.apply_retention(&keep_two()).unwrap();
    assert!(report.recycled > 0, "{report:?}");
    assert!(report.recycled <= 4, "at most four spares are kept: {report:?}");
    assert_eq!(spares(&path).len(), report.recycled);
    let spare_inodes = inodes(&path, |n| n.starts_with(".spare-"));
    // Spares are zeroed: no byte of the old frames survives.
    for s in spares(&path) {
        assert!(std::fs::read(&s).unwrap().iter().all(|&b| b == 0), "{s:?} is not zeroed");
    }
    // New segments are built from the spares.
    append_until_segment(&mut p, 8);
    let reused = inodes(&path, |n| n.ends_with(".seg") && !n.starts_with('.'));
    assert!(!spare_inodes.is_disjoint(&reused), "a spare became a segment");
    // Everything retained reads back exactly, checksums included.
    let mut r = q.reader(Start::Beginning).unwrap();
    let got = drain(&mut r);
    let first = q.first_index().unwrap();
    assert_eq!(got.first().unwrap().0, first);
    let n = got.len() as u32;
    for (k, (_, bytes)) in got.iter().enumerate() {
        assert_eq!(bytes, &payload(next - n + k as u32), "message {k} of {n}");
    }
    assert!(q.check().unwrap().is_clean());
}

#[test]
fn a_segment_mapped_by_a_live_reader_is_deleted_not_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = open(&path);
    let mut p = q.producer().unwrap();
    let mut sent = Vec::new();
    for i in 0.. {
        let idx = p.append(&payload(i)).unwrap();
        sent.push((idx, payload(i)));
        if index_segment(idx) >= 4 {
            break;
        }
    }
    // Another handle (its own pin) reading segment 0.
    let other = Queue::open(&path).unwrap();
    let mut slow = other.reader(Start::Beginning).unwrap();
    let first = slow.next().unwrap().unwrap().to_vec();
    assert_eq!(first, sent[0].1);
    let report = q.apply_retention(&keep_two()).unwrap();
    assert!(report.deleted.contains(&0), "{report:?}");
    assert_eq!(report.recycled, 0, "every retired segment is pinned by the slow reader: {report:?}");
    // Reuse anything that was there: appending more must not disturb it.
    for i in 0..2000 {
        p.append(&payload(10_000 + i)).unwrap();
    }
    // The slow reader still reads segment 0 intact from its mapping.
    let rest = drain(&mut slow);
    let seg0: Vec<_> = rest.iter().filter(|(i, _)| index_segment(*i) == 0).collect();
    assert_eq!(seg0.len(), sent.iter().filter(|(i, _)| index_segment(*i) == 0).count() - 1);
    for (idx, bytes) in seg0 {
        assert_eq!(&sent.iter().find(|(i, _)| i == idx).unwrap().1, bytes);
    }
}

#[test]
fn a_dead_process_pins_nothing() {
    let (dir, q, _p) = four_segments();
    let path = dir.path().join("q");
    // A child maps segment 0 through a reader, says so, and is killed.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env("MMKQ_RECYCLE_DIR", &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The test harness prints its own lines first; keep the pipe open
    // (in `_out`) so the child's later writes cannot fail.
    let mut _out = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert!(_out.any(|l| l.unwrap().ends_with("reading")), "the child never started reading");
    // While it lives, its pin keeps segment 0 from being recycled.
    let policy = Retention { max_total_bytes: Some(4 * SEGMENT), ..Retention::default() };
    let report = q.apply_retention(&policy).unwrap();
    assert_eq!((report.deleted.clone(), report.recycled), (vec![0], 0), "{report:?}");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    // Dead: its pin no longer counts.
    let report = q.apply_retention(&keep_two()).unwrap();
    assert!(report.recycled > 0, "{report:?}");
}

#[test]
fn recycling_can_be_turned_off() {
    let (dir, q, _p) = four_segments();
    let path = dir.path().join("q");
    let segments = inodes(&path, |n| !n.starts_with('.') && n.ends_with(".seg"));
    let report = q.apply_retention(&Retention { recycle: false, ..keep_two() }).unwrap();
    assert!(!report.deleted.is_empty());
    assert_eq!(report.recycled, 0);
    // Not `spares(..).is_empty()`: the producer's background creation of
    // the next segment may lose a race to its rollover and leave a spare
    // of its own (a new file, never one retention deleted).
    let spare_inodes = inodes(&path, |n| n.starts_with(".spare-"));
    assert!(spare_inodes.is_disjoint(&segments), "a deleted segment became a spare");
}

#[test]
fn a_spare_of_another_size_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = open(&path);
    let odd = path.join(".spare-1.seg");
    std::fs::write(&odd, vec![0xAB; 8192]).unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..2000 {
        p.append(&payload(i)).unwrap();
    }
    assert!(!odd.exists(), "the wrong-sized spare was taken and discarded");
    let mut r = q.reader(Start::Beginning).unwrap();
    assert_eq!(drain(&mut r).len(), 2000);
    assert!(q.check().unwrap().is_clean());
}

/// Many laps of a bounded queue: a child process appends with retention
/// applied at every rollover, so files are recycled again and again and
/// both processes open them through the mappings they already have. Every
/// message must arrive exactly, in order.
#[test]
fn laps_of_recycled_segments_read_back_exactly_across_processes() {
    const N: u32 = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = open(&path);
    let mut cursor = q.cursor("laps").unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_producer_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env("MMKQ_RECYCLE_PRODUCE", &path)
        .env("MMKQ_RECYCLE_COUNT", N.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen_inodes = HashSet::new();
    for i in 0..N {
        let rec = cursor.next_timeout(Some(Duration::from_secs(30))).unwrap().expect("message within 30 s");
        assert_eq!(rec.payload(), payload(i), "message {i}");
        if i % 64 == 0 {
            cursor.commit().unwrap();
            seen_inodes.extend(inodes(&path, |n| n.ends_with(".seg") && !n.starts_with('.')));
        }
    }
    assert!(child.wait().unwrap().success());
    let segments = q.stat().unwrap().segments.last().unwrap().number;
    assert!(segments > 40, "the run spans many laps: {segments} segments");
    // How many files are recycled depends on timing (a segment the reader
    // may still have mapped is deleted instead), but some must be.
    assert!(
        (seen_inodes.len() as u64) < segments * 9 / 10,
        "files were reused: {} files for {segments} segments",
        seen_inodes.len()
    );
    assert!(spares(&path).len() <= 4, "at most four spares are kept");
}

/// The producer of the laps test.
#[test]
fn child_producer_entry() {
    let Some(dir) = std::env::var_os("MMKQ_RECYCLE_PRODUCE") else { return };
    let n: u32 = std::env::var("MMKQ_RECYCLE_COUNT").unwrap().parse().unwrap();
    let q = Queue::options().retention(keep_two()).open(dir).unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..n {
        p.append(&payload(i)).unwrap();
        // Paced so that the reader keeps up even on a loaded machine: a
        // segment the reader still maps is deleted, not recycled, and a
        // reader two segments behind left nothing to recycle (CI once saw
        // 169 files for 170 segments).
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Entry point of the child processes.
#[test]
fn child_entry() {
    let Some(dir) = std::env::var_os("MMKQ_RECYCLE_DIR") else { return };
    let q = Queue::open(dir).unwrap();
    let mut r = q.reader(Start::Beginning).unwrap();
    assert!(r.next().unwrap().is_some());
    println!("reading");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn the_pin_table_is_bounded_and_dropped_handles_free_their_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let mut handles = vec![open(&path)];
    while handles.len() < mmkit_queue::format::PIN_SLOTS {
        handles.push(Queue::open(&path).unwrap());
    }
    let err = Queue::open(&path).unwrap_err();
    assert!(matches!(err, mmkit_queue::Error::TableFull { table: "pin", .. }), "{err}");
    handles.pop();
    let again = Queue::open(&path).unwrap();
    assert!(again.reader(Start::Beginning).is_ok());
}

/// Runs `check` from fresh handles (as `mmkit queue check` does: nothing
/// mapped, nothing pinned) over and over for up to `runs` checks or 3 s
/// while a producer appends to the queue at `path` through `q`; returns
/// the first check's corruption findings, if any check had some.
fn check_while_appending(q: &Queue, path: &Path, runs: usize) -> Option<Vec<mmkit_queue::CorruptInfo>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (q, stop) = (q.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut p = q.producer().unwrap();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                p.append(&payload(i)).unwrap();
                i = i.wrapping_add(1);
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut bad = None;
    for _ in 0..runs {
        if std::time::Instant::now() >= deadline {
            break;
        }
        let report = Queue::open(path).unwrap().check().unwrap();
        if !report.corrupt.is_empty() {
            bad = Some(report.corrupt);
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.join().unwrap();
    bad
}

/// `check` read each segment file before pinning it, so retention could
/// recycle the oldest one (rename it, zero it, reuse it as a new segment)
/// while `check` read it, and a healthy queue was reported corrupt (bad
/// magic, checksum mismatches, a wrong segment number); the CLI exited 1.
/// Without the fix this failed within a few hundred checks.
#[test]
fn check_on_a_live_queue_that_recycles_segments_reports_no_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    // Segments large enough for reading one to take a while: the window.
    const BIG: u64 = 256 << 10;
    let keep = Retention { max_total_bytes: Some(3 * BIG), ..Retention::default() };
    let q = Queue::options().create(true).segment_size(BIG).retention(keep).open(&path).unwrap();
    let bad = check_while_appending(&q, &path, 3000);
    assert!(bad.is_none(), "check on a healthy queue reported corruption: {bad:?}");
    assert!(index_segment(q.first_index().unwrap()) > 3, "retention retired nothing meanwhile");
}

/// The same without retention: `check` reads the segments producers are
/// writing, and never takes a record in the making for a damaged one.
#[test]
fn check_on_a_live_queue_reports_no_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = open(&path);
    let bad = check_while_appending(&q, &path, 3000);
    assert!(bad.is_none(), "check on a healthy queue reported corruption: {bad:?}");
}
