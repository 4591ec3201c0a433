//! Drop-behind (`OpenOptions::cache_behind`): segments far behind the
//! active one leave the page cache, and every message still reads back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mmkit_queue::*;

const SEGMENT: u64 = 1 << 20;
const MESSAGES: u32 = 8_000;

fn message(i: u32) -> Vec<u8> {
    let mut m = format!("message {i} ").into_bytes();
    m.resize(1000, (i % 251) as u8);
    m
}

fn segment_path(q: &Queue, number: u64) -> PathBuf {
    q.path().join(format!("{number:020}.seg"))
}

/// Whether the kernel can drop this file system's pages at all: tmpfs
/// pages are the data itself.
#[allow(clippy::unnecessary_cast)] // `f_type` is i64 here, u32 or i32 on other targets
fn droppable(dir: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    rustix::fs::statfs(dir).map(|s| s.f_type as i64 != TMPFS_MAGIC).unwrap_or(false)
}

fn resident(path: &Path) -> u64 {
    mmkit_region::residency::of_path(path, false).unwrap().resident_bytes()
}

/// Writes about 8 MiB (eight 1 MiB segments) and returns the queue.
fn fill(dir: &Path, cache_behind: Option<u64>) -> Queue {
    let q = Queue::options()
        .create(true)
        .segment_size(SEGMENT)
        .cache_behind(cache_behind)
        .open(dir.join("q"))
        .unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..MESSAGES {
        p.append(&message(i)).unwrap();
    }
    q
}

fn read_all(q: &Queue) {
    let mut r = q.reader(Start::Beginning).unwrap();
    for i in 0..MESSAGES {
        let rec = r.next().unwrap().unwrap_or_else(|| panic!("message {i} missing"));
        assert_eq!(rec.to_vec(), message(i), "message {i}");
    }
    assert!(r.next().unwrap().is_none());
}

#[test]
fn old_segments_leave_the_page_cache_and_read_back_intact() {
    let dir = tempfile::tempdir().unwrap();
    let q = fill(dir.path(), Some(SEGMENT));
    let active = q.stat().unwrap().segments.last().map(|s| s.number).unwrap();
    assert!(active >= 7, "rolled over into segment {active}");
    let first = segment_path(&q, 0);
    if droppable(dir.path()) {
        // The drop runs on a background thread after the rollover. Pages
        // read since (`stat` reads each segment's header) come back.
        let deadline = Instant::now() + Duration::from_secs(20);
        while resident(&first) > SEGMENT / 16 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(resident(&first) <= SEGMENT / 16, "segment 0 is still cached: {} bytes", resident(&first));
        assert!(resident(&segment_path(&q, active)) > 0, "the active segment stays cached");
        assert!(resident(&segment_path(&q, active - 1)) > 0, "one sealed segment stays cached");
    }
    read_all(&q);
    let report = q.check().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.messages, u64::from(MESSAGES));
}

#[test]
fn without_cache_behind_the_kernel_keeps_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let q = fill(dir.path(), None);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(resident(&segment_path(&q, 0)), SEGMENT, "segment 0 was dropped");
    read_all(&q);
}

#[test]
fn retention_keeps_its_segments_cached_for_recycling() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::options()
        .create(true)
        .segment_size(SEGMENT)
        .cache_behind(Some(SEGMENT))
        .retention(Retention { max_total_bytes: Some(64 * SEGMENT), ..Retention::default() })
        .open(dir.path().join("q"))
        .unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..MESSAGES {
        p.append(&message(i)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(resident(&segment_path(&q, 0)), SEGMENT, "a retained segment was dropped");
}
