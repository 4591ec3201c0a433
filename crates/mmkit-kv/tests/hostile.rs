//! Hostile values written into a live database's files after a handle
//! checked them: a lowered `current`, a forged free count, a page header
//! rewritten after it was validated. Each gives an error or is repaired;
//! none makes this process's writer overwrite a live snapshot, nor a read
//! panic. Found by a review; each test failed before its fix.

use std::os::unix::fs::FileExt;
use std::path::Path;

use mmkit_kv::{Db, Durability, PAGE};

/// (slot, txnid) of every meta slot holding the magic (docs/kv-format.md).
fn metas(path: &Path) -> Vec<(u64, u64)> {
    let f = std::fs::File::open(path).unwrap();
    (0..4u64)
        .filter_map(|s| {
            let mut b = [0u8; 128];
            f.read_exact_at(&mut b, s * PAGE as u64).unwrap();
            (&b[8..16] == b"mmkit-kv").then(|| (s, u64::from_le_bytes(b[24..32].try_into().unwrap())))
        })
        .collect()
}

/// Rewrites the u64 at `at` of the meta in `slot`, with a valid checksum.
fn forge_meta(path: &Path, slot: u64, at: usize, v: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 128];
    f.read_exact_at(&mut b, slot * PAGE as u64).unwrap();
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let crc = crc32c::crc32c(&b[4..]);
    b[..4].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&b, slot * PAGE as u64).unwrap();
}

fn immediate(path: &Path) -> Db {
    Db::options().create(true).durability(Durability::Immediate).open(path).unwrap()
}

/// `current` in the lock file (offset 160) moved back one commit, to a
/// meta still in its slot: the writer used to base on it and reuse pages
/// the newer commit took, under a reader of this process.
#[test]
fn a_lowered_current_is_repaired_not_built_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = immediate(&path);
    for v in ["v1v1", "v2v2", "v3v3"] {
        let mut w = db.write().unwrap();
        w.table("t").unwrap().put("k", v).unwrap();
        w.commit().unwrap();
    }
    let r = db.read().unwrap();
    let t = r.table("t").unwrap();
    let val: &[u8] = t.get("k").unwrap().unwrap();
    let last = r.txnid();
    let (slot, prev) = *metas(&path).iter().find(|m| m.1 == last - 1).unwrap();
    let lock = std::fs::OpenOptions::new().write(true).open(mmkit_kv::lock_path(&path)).unwrap();
    lock.write_all_at(&(prev << 2 | slot).to_le_bytes(), 160).unwrap();
    let mut w = db.write().unwrap();
    assert_eq!(w.txnid(), last + 1, "based on the newest commit");
    w.table("t").unwrap().put("k", "v4v4").unwrap();
    w.commit().unwrap();
    assert_eq!(val, b"v3v3", "the reader's value changed under it");
}

/// The current meta's free count (offset 80) forged to 0, checksum and
/// all: the next commit that takes a free-tree record gets an error, not
/// an underflow.
#[test]
fn a_forged_free_count_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = immediate(&path);
    let mut w = db.write().unwrap();
    let mut t = w.table("t").unwrap();
    for i in 0u32..3000 {
        t.put(i.to_be_bytes(), [7u8; 40]).unwrap();
    }
    w.commit().unwrap();
    let mut w = db.write().unwrap();
    let mut t = w.table("t").unwrap();
    for i in 0u32..500 {
        t.delete(i.to_be_bytes()).unwrap();
    }
    w.commit().unwrap();
    let (slot, _) = *metas(&path).iter().max_by_key(|m| m.1).unwrap();
    forge_meta(&path, slot, 80, 0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut w = db.write()?;
        w.table("t")?.put("x", "y")?;
        w.commit()
    }));
    let r = r.expect("no panic");
    assert!(r.is_err_and(|e| e.is_corruption()));
}

/// A peer flips a leaf's `upper` (offset 4) between garbage and its real
/// value while a verifying reader reads it: the header was checked once,
/// and every slice is cut with what was checked.
#[test]
fn a_page_header_rewritten_after_its_check_does_not_panic_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Eventual).open(&path).unwrap();
    let mut w = db.write().unwrap();
    w.table("t").unwrap().put("needle-key", "needle-value").unwrap();
    w.commit().unwrap();
    drop(db);
    let bytes = std::fs::read(&path).unwrap();
    let leaf = (4..bytes.len() / PAGE)
        .find(|&p| {
            let b = &bytes[p * PAGE..(p + 1) * PAGE];
            b[0] == 1 && b.windows(12).any(|w| w == b"needle-value")
        })
        .unwrap();
    let upper = [bytes[leaf * PAGE + 4], bytes[leaf * PAGE + 5]];
    let db = Db::options().verify_reads(true).open(&path).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let panicked = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all_at(&[0xff, 0xff], (leaf * PAGE + 4) as u64).unwrap();
                f.write_all_at(&upper, (leaf * PAGE + 4) as u64).unwrap();
            }
        });
        let start = std::time::Instant::now();
        let mut panicked = false;
        while start.elapsed() < std::time::Duration::from_secs(3) && !panicked {
            let r = db.read().unwrap();
            let t = r.table("t").unwrap();
            panicked = (0..1000).any(|_| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let _ = t.get("needle-key");
                }))
                .is_err()
            });
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        panicked
    });
    assert!(!panicked, "a read panicked");
}
