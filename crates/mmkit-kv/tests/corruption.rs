//! Corruption sweeps over every kind of page, and bad input: each case is
//! a clear error, never a panic or an out-of-bounds read.

use std::path::Path;

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
