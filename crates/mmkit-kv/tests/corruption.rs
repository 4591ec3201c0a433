//! Corruption sweeps over every kind of page, and bad input: each case is
//! a clear error, never a panic or an out-of-bounds read.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mmkit_kv::{Db, Durability, Error, MAX_KEY_LEN, PAGE};

/// A database with several tables, a multi-level tree, overflow values,
/// big keys, a separator in an overflow run and free pages.
fn build(path: &Path) {
    let db = Db::options().create(true).durability(Durability::Immediate).open(path).unwrap();
    let mut w = db.write().unwrap();
    let mut t = w.table("many").unwrap();
    for i in 0u32..3000 {
        t.put(i.to_be_bytes(), vec![i as u8; 40]).unwrap();
    }
    let mut t = w.table("big").unwrap();
    t.put("overflow", vec![9u8; 50_000]).unwrap();
    t.put(vec![b'k'; MAX_KEY_LEN], "long key").unwrap();
    // Keys too long for a leaf (each in a run with its value) between two
    // fat inline entries: the leaf splits between two long keys, and the
    // separator, as long, lives in a run of its own in the branch.
    let mut t = w.table("long").unwrap();
    t.put("o", [1u8; 1300]).unwrap();
    t.put("q", [2u8; 1300]).unwrap();
    for i in 0u8..LONG_KEYS {
        let mut k = vec![b'p'; 1400];
        k.push(i);
        t.put(k, [i]).unwrap();
    }
    w.commit().unwrap();
    let mut w = db.write().unwrap();
    let mut t = w.table("many").unwrap();
    for i in 0u32..500 {
        t.delete(i.to_be_bytes()).unwrap();
    }
    w.commit().unwrap();
    // These tests damage the data file alone: with everything synced into
    // it, the redo log has nothing to add and goes.
    db.sync().unwrap();
    drop(db);
    std::fs::remove_file(mmkit_kv::log_path(path)).unwrap();
}

/// Keys of the `long` table that live in runs.
const LONG_KEYS: u8 = 50;

/// Reads everything; errors are fine, panics are not.
fn read_all(db: &Db) -> Result<u64, Error> {
    let r = db.read()?;
    let mut n = 0;
    for name in r.tables()? {
        let t = r.table(&name)?;
        for e in t.iter() {
            e?;
            n += 1;
        }
        for e in t.iter().rev() {
            e?;
        }
        t.get(5u32.to_be_bytes())?;
        t.get([b'p'; 1401])?;
    }
    Ok(n)
}

#[test]
fn every_page_kind_corrupted_is_an_error_naming_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    build(&path);
    let pristine = std::fs::read(&path).unwrap();
    let report = Db::open(&path).unwrap().check().unwrap();
    // Two leaves, their branch, a run per long key and the separator's.
    let long = report.tables.iter().find(|t| t.0 == "long").unwrap();
    assert_eq!(long.2, 3 + LONG_KEYS as u64 + 1, "{report:?}");
    let pages = report.pages as usize;
    let (mut detected, mut meta_fallbacks) = (0, 0);
    for page in 0..pages {
        for at in [0usize, 2, 4, 8, 12, 16, 17, 24, 40, PAGE / 2, PAGE - 30, PAGE - 1] {
            let copy = dir.path().join("copy");
            let mut bytes = pristine.clone();
            bytes[page * PAGE + at] ^= 0x5a;
            std::fs::write(&copy, &bytes).unwrap();
            let _ = std::fs::remove_file(mmkit_kv::lock_path(&copy));
            // Opened cold: a damaged meta falls back to an earlier commit.
            let db = match Db::open(&copy) {
                Ok(db) => db,
                Err(e) => panic!("page {page} byte {at}: open failed: {e}"),
            };
            let checked = db.check();
            let read = read_all(&db);
            match checked {
                Err(e) => {
                    assert!(e.is_corruption(), "page {page} byte {at}: {e}");
                    let msg = e.to_string();
                    let in_run = msg.split("pages ").nth(1).and_then(|r| {
                        let (a, b) = r.trim_end_matches(')').split_once("..=")?;
                        Some((a.parse::<usize>().ok()?..=b.parse::<usize>().ok()?).contains(&page))
                    });
                    assert!(
                        msg.contains(&format!("page {page} ")) || in_run == Some(true),
                        "page {page} byte {at}: {e}"
                    );
                    detected += 1;
                }
                Ok(report) => {
                    // An unused byte, or a meta page that was not the
                    // newest: the data must be intact.
                    assert!(read.is_ok(), "page {page} byte {at}: check passed but reading failed: {read:?}");
                    if page < 4 && report.txnid < 3 {
                        meta_fallbacks += 1;
                    }
                }
            }
            drop(db);
        }
    }
    assert!(detected > pages, "only {detected} corruptions detected over {pages} pages");
    assert!(meta_fallbacks > 0, "a torn newest meta falls back to the previous commit");
}

#[test]
fn random_garbage_pages_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    build(&path);
    let pristine = std::fs::read(&path).unwrap();
    let mut seed = 0x853c49e6748fea9bu64;
    for round in 0..200 {
        let mut bytes = pristine.clone();
        let page = 4 + (round % (bytes.len() / PAGE - 4));
        for _ in 0..1 + round % 50 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = page * PAGE + (seed as usize % PAGE);
            bytes[at] = (seed >> 32) as u8;
        }
        let copy = dir.path().join("copy");
        std::fs::write(&copy, &bytes).unwrap();
        // Warm open: the lock file trusts the newest meta, so readers meet
        // the damage directly.
        if let Ok(db) = Db::open(&copy) {
            let _ = read_all(&db);
            let _ = db.check();
        }
    }
}

#[test]
fn not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text");
    std::fs::write(&path, vec![b'x'; 4 * PAGE]).unwrap();
    let e = Db::open(&path).unwrap_err();
    assert!(matches!(e, Error::NotADatabase { .. }), "{e}");
    assert!(e.to_string().contains("not an mmkit-kv database"), "{e}");
    std::fs::write(&path, b"short").unwrap();
    assert!(matches!(Db::open(&path).unwrap_err(), Error::NotADatabase { .. }));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(Db::open(&path).unwrap_err(), Error::NotADatabase { .. }));
    // Nothing was written to it.
    assert_eq!(std::fs::read(&path).unwrap(), b"");
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = Db::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
}

#[test]
fn missing_database_without_create() {
    let dir = tempfile::tempdir().unwrap();
    let e = Db::options().open(dir.path().join("nope")).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(!dir.path().join("nope").exists());
}

#[test]
fn other_format_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Db::open(&path).unwrap());
    let pristine = std::fs::read(&path).unwrap();
    let supported = mmkit_kv::FORMAT_VERSION;
    // A newer file, and older ones (versions 1 and 2 had 16 KiB pages):
    // each is a clear error, and nothing is written to the file.
    for (found, word) in [(9u32, "newer"), (1, "older"), (2, "older")] {
        let mut bytes = pristine.clone();
        for slot in 0..4 {
            bytes[slot * PAGE + 4..slot * PAGE + 8].copy_from_slice(&found.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let _ = std::fs::remove_file(mmkit_kv::lock_path(&path));
        let e = Db::open(&path).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedVersion { found: f, supported: s, .. } if f == found && s == supported),
            "{e}"
        );
        assert!(e.to_string().contains(word), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}

#[test]
fn corrupt_lock_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Db::open(&path).unwrap());
    std::fs::write(mmkit_kv::lock_path(&path), vec![0xab; 65536]).unwrap();
    let e = Db::open(&path).unwrap_err();
    assert!(e.to_string().contains("not an mmkit-kv lock file"), "{e}");
}

/// A short foreign file where the lock file goes is refused as "not an
/// mmkit-kv lock file" and left as it was, not first grown to the lock
/// file's 64 KiB.
#[test]
fn short_foreign_lock_file_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Db::open(&path).unwrap());
    let lock = mmkit_kv::lock_path(&path);
    for foreign in [&b"notes"[..], b"some text that is not a lock file\n"] {
        std::fs::write(&lock, foreign).unwrap();
        let e = Db::open(&path).unwrap_err();
        assert!(e.to_string().contains("not an mmkit-kv lock file"), "{e}");
        let after = std::fs::read(&lock).unwrap();
        assert!(after == foreign, "the foreign file is now {} bytes", after.len());
    }
}

#[test]
fn key_too_long_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let mut w = db.write().unwrap();
    let e = w.table("t").unwrap().put(vec![1u8; MAX_KEY_LEN + 1], "v").unwrap_err();
    assert!(matches!(e, Error::KeyTooLong { len, max: MAX_KEY_LEN } if len == MAX_KEY_LEN + 1), "{e}");
    assert!(matches!(w.table("").unwrap_err(), Error::InvalidName { .. }));
    assert!(matches!(w.table(&"x".repeat(300)).unwrap_err(), Error::InvalidName { .. }));
    // The failed put left the transaction usable.
    w.table("t").unwrap().put(vec![1u8; MAX_KEY_LEN], "v").unwrap();
    w.commit().unwrap();
    let r = db.read().unwrap();
    assert_eq!(r.table("t").unwrap().len(), 1);
    let e = r.table("missing").unwrap_err();
    assert!(matches!(&e, Error::NoSuchTable { name } if name == "missing"), "{e}");
}

#[test]
fn read_only_handle_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Db::open(&path).unwrap());
    let db = Db::options().read_only(true).open(&path).unwrap();
    let e = db.write().unwrap_err();
    assert!(matches!(e, Error::ReadOnly { .. }), "{e}");
    assert!(db.read().is_ok());
}

/// A built database in a new directory (as `db`), and its bytes.
fn built_image() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    build(&dir.path().join("db"));
    let bytes = std::fs::read(dir.path().join("db")).unwrap();
    (dir, bytes)
}

/// Rewrites the meta page in `slot` of `bytes` with `edit` applied, its
/// checksum recomputed: a hostile file, not a torn write.
fn forge_meta(bytes: &mut [u8], slot: usize, edit: impl FnOnce(&mut [u8])) {
    let meta = &mut bytes[slot * PAGE..slot * PAGE + 128];
    edit(meta);
    let crc = crc32c::crc32c(&meta[4..]);
    meta[..4].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_page_count_past_the_file_is_an_error_not_a_huge_allocation() {
    let (dir, mut bytes) = built_image();
    let path = dir.path().join("db");
    // Every commit claims 2^58 pages (its roots stay in range): the
    // checker once sized its bitmap of pages seen by that count, and a
    // cold open aborted asking for 32 PiB.
    for slot in 0..4 {
        if &bytes[slot * PAGE + 8..slot * PAGE + 16] == b"mmkit-kv" {
            forge_meta(&mut bytes, slot, |m| m[40..48].copy_from_slice(&(1u64 << 58).to_le_bytes()));
        }
    }
    std::fs::write(&path, &bytes).unwrap();
    let _ = std::fs::remove_file(mmkit_kv::lock_path(&path));
    // No commit verifies, so the open falls back to the newest one.
    let db = Db::open(&path).unwrap();
    let e = db.check().unwrap_err();
    assert!(e.is_corruption(), "{e}");
    assert!(e.to_string().contains("pages, but the file holds only"), "{e}");
}

#[test]
fn an_overflow_length_near_u64_max_is_an_error_not_a_panic() {
    let (dir, mut bytes) = built_image();
    let path = dir.path().join("db");
    // The leaf entry of `big`'s "overflow" key: flags and key length, the
    // reference's size, the key, then (page, length, checksum) of its run.
    let mut head = vec![8u8, 0x80, 20, 0];
    head.extend_from_slice(b"overflow");
    let at = bytes.windows(head.len()).position(|w| w == head).unwrap() + head.len();
    let run = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    assert_eq!(bytes[at + 8..at + 16], 50_000u64.to_le_bytes());
    // A length that overflows the run's page count: the run's own header
    // agrees, so only the arithmetic stands in the way.
    let len = (u64::MAX - 10).to_le_bytes();
    bytes[at + 8..at + 16].copy_from_slice(&len);
    bytes[run * PAGE + 16..run * PAGE + 24].copy_from_slice(&len);
    std::fs::write(&path, &bytes).unwrap();
    // Warm or cold, the reads (which skip checksums) meet the length.
    let db = Db::open(&path).unwrap();
    let e = db.read().unwrap().table("big").unwrap().get("overflow").unwrap_err();
    assert!(e.is_corruption(), "{e}");
    assert!(e.to_string().contains("overflow run length"), "{e}");
    assert!(db.check().unwrap_err().is_corruption());
}

// Hangs: loops and waits whose exit depends on bytes of the data file or
// the lock file. Each operation runs in a thread; a hang fails the test.

/// Runs `f` in a thread and returns its result; fails with "hung" if it
/// takes longer than `limit`, or "panicked".
fn in_time<T: Send + 'static>(what: &str, limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: hung"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

const HANG_LIMIT: Duration = Duration::from_secs(20);

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The slot of the newest meta page with a valid checksum.
fn newest_slot(bytes: &[u8]) -> usize {
    (0..4)
        .filter(|&s| {
            let m = &bytes[s * PAGE..s * PAGE + 128];
            &m[8..16] == b"mmkit-kv"
                && crc32c::crc32c(&m[4..]) == u32::from_le_bytes(m[..4].try_into().unwrap())
        })
        .max_by_key(|&s| word(bytes, s * PAGE + 24))
        .unwrap()
}

/// Appends `depth` branch pages, each with two entries that both point at
/// the next page, the last at `bottom` (an empty leaf appended after the
/// chain when `None`), and raises every meta's page count to cover them.
/// Returns the top page: a tree with 2^depth paths through few pages, each
/// path within the depth limit, and (no cycle) every checksum left alone.
fn append_chain(bytes: &mut Vec<u8>, depth: usize, bottom: Option<u64>) -> u64 {
    let first = (bytes.len() / PAGE) as u64;
    let bottom = bottom.unwrap_or(first + depth as u64);
    for level in 0..depth as u64 {
        let child = if level + 1 == depth as u64 { bottom } else { first + level + 1 };
        let mut p = vec![0u8; PAGE];
        p[0] = 2; // branch
        p[2..4].copy_from_slice(&2u16.to_le_bytes());
        let upper = PAGE - 32;
        p[4..6].copy_from_slice(&(upper as u16).to_le_bytes());
        p[8..16].copy_from_slice(&1u64.to_le_bytes());
        for i in 0..2 {
            let off = upper + 16 * i;
            p[16 + 6 * i..18 + 6 * i].copy_from_slice(&(off as u16).to_le_bytes());
            p[off..off + 8].copy_from_slice(&child.to_le_bytes());
        }
        bytes.extend_from_slice(&p);
    }
    if bottom == first + depth as u64 {
        let mut leaf = vec![0u8; PAGE];
        leaf[0] = 1;
        leaf[4..6].copy_from_slice(&(PAGE as u16).to_le_bytes());
        bytes.extend_from_slice(&leaf);
    }
    let pages = (bytes.len() / PAGE) as u64;
    for slot in 0..4 {
        if &bytes[slot * PAGE + 8..slot * PAGE + 16] == b"mmkit-kv" {
            forge_meta(bytes, slot, |m| m[40..48].copy_from_slice(&pages.to_le_bytes()));
        }
    }
    first
}

/// Depth of the forged chains: 2^30 paths, hours of walking.
const CHAIN: usize = 30;

#[test]
fn a_catalog_with_exponentially_many_paths_is_an_error_for_readers() {
    let (dir, mut bytes) = built_image();
    let path = dir.path().join("db");
    // The catalog root becomes a chain over an empty leaf: listing the
    // tables (read transactions, `stat`) walked 2^30 paths, finding nothing.
    let top = append_chain(&mut bytes, CHAIN, None);
    for slot in 0..4 {
        if &bytes[slot * PAGE + 8..slot * PAGE + 16] == b"mmkit-kv" {
            forge_meta(&mut bytes, slot, |m| m[48..56].copy_from_slice(&top.to_le_bytes()));
        }
    }
    std::fs::write(&path, &bytes).unwrap();
    // Warm open (the lock file stays): nothing verifies the trees first.
    let p = path.clone();
    let (tables, stat) = in_time("tables/stat", HANG_LIMIT, move || {
        let db = Db::open(&p).unwrap();
        let tables = db.read().unwrap().tables().map(|_| ());
        (tables, db.stat().map(|_| ()))
    });
    for e in [tables.unwrap_err(), stat.unwrap_err()] {
        assert!(e.is_corruption(), "{e}");
        assert!(e.to_string().contains("(a cycle?)"), "{e}");
    }
}

/// Where the live catalog's entry for table `name` keeps its root page
/// (the catalog is one leaf; stale copies of it lie in free pages).
fn table_root_at(bytes: &[u8], name: &str) -> usize {
    let catalog = word(bytes, newest_slot(bytes) * PAGE + 48) as usize;
    let leaf = &bytes[catalog * PAGE..(catalog + 1) * PAGE];
    assert_eq!(leaf[0], 1, "the catalog is one leaf");
    let mut head = vec![name.len() as u8, 0, 24, 0];
    head.extend_from_slice(name.as_bytes());
    catalog * PAGE + leaf.windows(head.len()).position(|w| w == head).unwrap() + head.len()
}

/// The built image with table `many`'s root replaced by a chain over its
/// real root: iterating it yields its entries 2^30 times.
fn many_as_chain() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, mut bytes) = built_image();
    let path = dir.path().join("db");
    let at = table_root_at(&bytes, "many");
    let root = word(&bytes, at);
    let top = append_chain(&mut bytes, CHAIN, Some(root));
    bytes[at..at + 8].copy_from_slice(&top.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    (dir, path)
}

#[test]
fn a_table_with_exponentially_many_paths_is_an_error_not_a_hang() {
    let (_dir, path) = many_as_chain();
    let p = path.clone();
    let (forward, backward) = in_time("iterate", HANG_LIMIT, move || {
        let db = Db::open(&p).unwrap();
        let r = db.read().unwrap();
        let t = r.table("many").unwrap();
        let forward = t.iter().try_fold(0u64, |n, e| e.map(|_| n + 1));
        let backward = t.iter().rev().try_fold(0u64, |n, e| e.map(|_| n + 1));
        (forward, backward)
    });
    for e in [forward.unwrap_err(), backward.unwrap_err()] {
        assert!(e.is_corruption() && e.to_string().contains("(a cycle?)"), "{e}");
    }
    // The writer's walks over the whole tree: clearing it, and moving it
    // out of the tail (shrink).
    let p = path.clone();
    let e = in_time("clear", HANG_LIMIT, move || {
        let db = Db::open(&p).unwrap();
        let mut w = db.write().unwrap();
        w.table("many").unwrap().clear()
    })
    .unwrap_err();
    assert!(e.is_corruption() && e.to_string().contains("(a cycle?)"), "{e}");
    let e = in_time("shrink", HANG_LIMIT, move || Db::open(&path).unwrap().shrink()).unwrap_err();
    assert!(e.is_corruption() && e.to_string().contains("(a cycle?)"), "{e}");
}

#[test]
fn a_class_0_free_record_that_sorts_as_class_1_is_an_error_not_a_hang() {
    let (dir, mut bytes) = built_image();
    let path = dir.path().join("db");
    let free = word(&bytes, newest_slot(&bytes) * PAGE + 64) as usize;
    let leaf = &mut bytes[free * PAGE..(free + 1) * PAGE];
    assert_eq!(leaf[0], 1, "the free tree is one leaf");
    let count = u16::from_le_bytes([leaf[2], leaf[3]]) as usize;
    assert!(count > 0);
    // Every record becomes class 0, freed by a commit far in the future
    // (not reusable), while its slot prefix says class 1: the pool loader
    // skipped the class 0 records by seeking to class 1, landed on the same
    // record, and seeked again, forever, holding the writer lock.
    for i in 0..count {
        let slot = 16 + 6 * i;
        let off = u16::from_le_bytes([leaf[slot], leaf[slot + 1]]) as usize;
        assert_eq!(leaf[off], 17, "free-tree keys are 17 bytes");
        leaf[off + 4] = 0;
        leaf[off + 5..off + 13].fill(0xff);
        leaf[slot + 2..slot + 6].copy_from_slice(&[1, 0xff, 0xff, 0xff]);
    }
    std::fs::write(&path, &bytes).unwrap();
    let e = in_time("put (page allocation)", HANG_LIMIT, move || {
        let db = Db::open(&path).unwrap();
        let mut w = db.write().unwrap();
        let mut t = w.table("many").unwrap();
        (0u32..2000).try_for_each(|i| t.put(i.to_be_bytes(), [7u8; 40]))
    })
    .unwrap_err();
    assert!(e.is_corruption(), "{e}");
    assert!(e.to_string().contains("out of order"), "{e}");
}

#[test]
fn range_delete_over_keys_the_search_cannot_find_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = Db::open(&path).unwrap();
        let mut w = db.write().unwrap();
        let mut t = w.table("t").unwrap();
        t.put("b", "vb").unwrap();
        t.put("c", "vc").unwrap();
        w.commit().unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    // Slot prefixes stay "b", "c"; the keys become "c", "a". Iterating
    // yields "c" then "a", a search finds neither (so neither is deleted),
    // and seeking past "a" lands on "c" again: the batch loop of
    // `delete_range` went round forever.
    for (from, to) in [(b'c', b'a'), (b'b', b'c')] {
        let entry = [1, 0, 2, 0, from, b'v', from];
        let at = bytes.windows(7).position(|w| w == entry).unwrap();
        bytes[at + 4] = to;
    }
    std::fs::write(&path, &bytes).unwrap();
    let e = in_time("delete_range", HANG_LIMIT, move || {
        let db = Db::open(&path).unwrap();
        let mut w = db.write().unwrap();
        w.table("t").unwrap().delete_range::<&[u8], _>(..)
    })
    .unwrap_err();
    assert!(e.is_corruption(), "{e}");
    assert!(e.to_string().contains("out of order"), "{e}");
}

/// Lock file offsets (docs/kv-format.md).
const L_SYNC_OWNER: usize = 96;
const L_COMMITS_SEQ: usize = 128;

#[test]
fn a_group_commit_does_not_wait_forever_for_a_forged_syncer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Db::open(&path).unwrap());
    // The group-commit sync mutex "held" by pid 1 (start time unknown):
    // alive, and never releasing it. A Group commit waited for that
    // syncer's `fdatasync` forever; it can always sync by itself.
    let lock = mmkit_kv::lock_path(&path);
    let mut lb = std::fs::read(&lock).unwrap();
    lb[L_SYNC_OWNER..L_SYNC_OWNER + 8].copy_from_slice(&1u64.to_le_bytes());
    std::fs::write(&lock, &lb).unwrap();
    let p = path.clone();
    let txnid = in_time("group commit", HANG_LIMIT, move || {
        let db = Db::options().durability(Durability::Group).open(&p).unwrap();
        let mut w = db.write().unwrap();
        w.table("t").unwrap().put("k", "v").unwrap();
        w.commit()
    })
    .unwrap();
    assert_eq!(txnid, 2);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.read().unwrap().table("t").unwrap().get("k").unwrap(), Some(&b"v"[..]));
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: `rusage` is plain integers, for which all-zero is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn a_commit_counter_ahead_of_the_last_commit_does_not_make_waiters_spin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Db::open(&path).unwrap());
    // The commit counter far ahead of `current` (garbage, or a cold open
    // that fell back to an older commit: the counter only ever rises).
    // Waiting for the next commit returned at once with a commit id that
    // does not exist, so `Watch::wait` spun on a core until the timeout.
    let lock = mmkit_kv::lock_path(&path);
    let mut lb = std::fs::read(&lock).unwrap();
    lb[L_COMMITS_SEQ..L_COMMITS_SEQ + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&lock, &lb).unwrap();
    let db = Db::open(&path).unwrap();
    let last = db.last_commit();
    let started = Instant::now();
    assert_eq!(db.wait_for_commit(last, Some(Duration::from_millis(200))).unwrap(), last);
    assert!(started.elapsed() >= Duration::from_millis(150));
    let mut watch = db.watch("t", "k", false).unwrap();
    let cpu = thread_cpu();
    assert!(watch.wait(Some(Duration::from_millis(500))).unwrap().is_empty());
    let used = thread_cpu() - cpu;
    assert!(used < Duration::from_millis(200), "the watcher spun: {used:?} of CPU in 500 ms");
    // A real commit still wakes it.
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            let mut w = db.write().unwrap();
            w.table("t").unwrap().put("k", "v").unwrap();
            w.commit().unwrap();
        });
        let changes = watch.wait(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(changes.len(), 1);
    });
}

/// Writes `value` at `at` in the lock file of the database at `path`.
fn poke_lock(path: &Path, at: u64, value: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(mmkit_kv::lock_path(path)).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &value.to_le_bytes(), at).unwrap();
}

/// Lock-file tokens naming a live process that does not have the database
/// open (forged, or left by an earlier boot whose pid and start time a
/// process of this boot happens to match): the writer mutex, the sync
/// mutex and a reader slot. The first opener is alone (nobody holds the
/// open lock), so it forgets them instead of waiting for that process,
/// whether the lock file says it was set up in this boot or not.
#[test]
fn the_first_opener_forgets_forged_holders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    build(&path);
    let mut stranger = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let token = u64::from(stranger.id()); // start time unknown: alive while the pid is
    for state in [0, 1] {
        poke_lock(&path, 64, token); // writer mutex owner
        poke_lock(&path, 96, token); // sync mutex owner
        poke_lock(&path, 256, token); // reader slot 0: token, snapshot 1
        poke_lock(&path, 264, 1);
        poke_lock(&path, 184, 1); // reader high-water mark: slot 0 in use
        poke_lock(&path, 192, state); // 1 = set up in this boot
        let p = path.clone();
        let stat = in_time("open and commit past forged holders", HANG_LIMIT, move || {
            let db = Db::options().durability(Durability::Group).open(&p).unwrap();
            let mut w = db.write().unwrap();
            w.table("fresh").unwrap().put("k", "v").unwrap();
            w.commit().unwrap();
            db.stat().unwrap()
        });
        assert_eq!(stat.readers, 0, "state {state}: the forged reader is gone");
        assert!(stat.tables.iter().any(|(t, _)| t == "fresh"));
    }
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

/// A version 1 lock file (before the open lock) is upgraded by an opener
/// that is alone, and a fresh set-up follows (as after a reboot).
#[test]
fn a_version_1_lock_file_is_upgraded_when_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    build(&path);
    let entries = Db::open(&path).unwrap().read().unwrap().table("many").unwrap().len();
    poke_lock(&path, 8, 1);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.read().unwrap().table("many").unwrap().len(), entries);
    let head = std::fs::read(mmkit_kv::lock_path(&path)).unwrap();
    assert_eq!(u32::from_le_bytes(head[8..12].try_into().unwrap()), 3);
}

/// The tree pages of `kind` (1 leaf, 2 branch) in a file image.
fn pages_of_kind(bytes: &[u8], kind: u8) -> Vec<usize> {
    (4..bytes.len() / PAGE).filter(|&p| bytes[p * PAGE] == kind).collect()
}

/// Runs one put of `key` on a writer thread: a corrupt page the writer
/// edits must be a corruption error, never a panic (it holds the writer
/// lock).
fn put_on_a_thread(db: &Db, key: &str) {
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            let mut w = db.write()?;
            w.table("t")?.put(key, "x")?;
            w.commit()
        })
        .join()
    });
    match outcome {
        Ok(Ok(_)) => panic!("the writer edited a corrupt page without an error"),
        Ok(Err(e)) => assert!(e.is_corruption(), "{e}"),
        Err(_) => panic!("the writer panicked on a corrupt page"),
    }
}

/// A table of 400 keys: one branch page (its root) over leaves.
fn one_branch_table(path: &Path) -> Vec<u8> {
    let db = Db::options().create(true).durability(Durability::Eventual).open(path).unwrap();
    let mut w = db.write().unwrap();
    let mut t = w.table("t").unwrap();
    for i in 0u32..400 {
        t.put(format!("key{i:06}"), [1u8; 40]).unwrap();
    }
    w.commit().unwrap();
    drop(db);
    std::fs::read(path).unwrap()
}

/// Writes page `p` of `bytes` back to the file at `path`.
fn write_page(path: &Path, bytes: &[u8], p: usize) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&bytes[p * PAGE..(p + 1) * PAGE], (p * PAGE) as u64).unwrap();
}

/// A branch entry that starts 8 bytes before the page end holds its child
/// but not its checksum. Its separator is never read (entry 0 stands for
/// minus infinity), so only the writer, which rewrites child and checksum
/// after copying the page, reaches past the page end: it reports the page
/// as corrupt, as readers do.
#[test]
fn a_branch_entry_cut_by_the_page_end_is_an_error_for_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut bytes = one_branch_table(&path);
    let branches = pages_of_kind(&bytes, 2);
    assert_eq!(branches.len(), 1, "one branch page, the root of t");
    let b = branches[0];
    let page = &mut bytes[b * PAGE..(b + 1) * PAGE];
    let off0 = u16::from_le_bytes([page[16], page[17]]) as usize;
    assert_eq!(off0, PAGE - 16, "entry 0 of the root is the last entry");
    let child0: [u8; 8] = page[off0..off0 + 8].try_into().unwrap();
    page[16..18].copy_from_slice(&((PAGE - 8) as u16).to_le_bytes());
    page[PAGE - 8..].copy_from_slice(&child0);
    write_page(&path, &bytes, b);

    // Warm open (this boot set the lock file up): nothing is verified.
    let db = Db::options().durability(Durability::Eventual).open(&path).unwrap();
    let read = db.read().unwrap().table("t").unwrap().get("\0").map(|_| ());
    assert!(read.is_err(), "readers see the page as corrupt");
    put_on_a_thread(&db, "\0");
}

/// Two slots of a leaf naming the same entry (with the gap that leaves
/// in the entry area) pass every read, and the writer, which moves
/// entries by the sizes and offsets the page states, never panics on it:
/// the entries it moves to a new page at a split take more room than the
/// page has, which is an error. (It does not check every page's layout
/// before editing it: that halved small commits' throughput.)
#[test]
fn leaf_slots_sharing_an_entry_never_panic_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut bytes = one_branch_table(&path);
    let leaves = pages_of_kind(&bytes, 1);
    let l = *leaves
        .iter()
        .find(|&&p| u16::from_le_bytes([bytes[p * PAGE + 2], bytes[p * PAGE + 3]]) > 2)
        .unwrap();
    let page = &mut bytes[l * PAGE..(l + 1) * PAGE];
    // Slot 1 (6 bytes: offset, key prefix) becomes a copy of slot 0.
    let slot0: [u8; 6] = page[16..22].try_into().unwrap();
    page[22..28].copy_from_slice(&slot0);
    write_page(&path, &bytes, l);

    let db = Db::options().durability(Durability::Eventual).open(&path).unwrap();
    // A key that lands in the damaged leaf: just after its first key.
    let page_first = {
        let off = u16::from_le_bytes([bytes[l * PAGE + 16], bytes[l * PAGE + 17]]) as usize;
        let klen = (u16::from_le_bytes([bytes[l * PAGE + off], bytes[l * PAGE + off + 1]]) & 0x1fff) as usize;
        String::from_utf8(bytes[l * PAGE + off + 4..l * PAGE + off + 4 + klen].to_vec()).unwrap()
    };
    // Many puts that land there, so the damaged leaf splits.
    let outcome = std::thread::scope(|s| {
        s.spawn(|| -> mmkit_kv::Result<()> {
            for i in 0..200 {
                let mut w = db.write()?;
                w.table("t")?.put(format!("{page_first}+{i:03}"), [2u8; 40])?;
                w.commit()?;
            }
            Ok(())
        })
        .join()
    });
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => assert!(e.is_corruption(), "{e}"),
        Err(_) => panic!("the writer panicked on a corrupt page"),
    }
}
