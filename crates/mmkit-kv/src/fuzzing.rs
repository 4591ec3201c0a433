//! Entry points for the cargo-fuzz targets in `fuzz/` (not a public API).

use crate::page::{NoRuns, PAGE, Page, PageMut};

/// Decodes `data` (zero-padded to a page) as a tree page and exercises
/// every accessor and, when the header is valid, removal of each entry:
/// any bytes give values or errors, never a panic or an out-of-bounds
/// access.
pub fn fuzz_page(data: &[u8]) {
    let mut b = vec![0u8; PAGE];
    let n = data.len().min(PAGE);
    b[..n].copy_from_slice(&data[..n]);
    let Ok(page) = Page::new(&b) else { return };
    let _ = page.checksum();
    let probe: &[u8] = data.get(..data.len().min(8)).unwrap_or_default();
    let _ = page.search(probe, &NoRuns);
    let _ = page.child_index(probe, &NoRuns);
    let mut removable = Vec::new();
    for i in 0..page.count().min(64) {
        let _ = page.leaf(i);
        let _ = page.branch(i);
        let _ = page.key(i);
        let _ = page.child(i);
        if page.entry_size(i).is_ok() {
            removable.push(i);
        }
    }
    let mut copy = b.clone();
    let mut pm = PageMut(&mut copy);
    if let Some(&i) = removable.first() {
        let _ = pm.remove(i);
    }
}

/// Writes `data` as a database file (the first bytes are the meta pages),
/// opens it cold, reads every table both ways and checks it: errors are
/// fine, panics are not.
pub fn fuzz_file(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("db");
    let mut bytes = data.to_vec();
    bytes.resize(bytes.len().max(4 * PAGE), 0);
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    let Ok(db) = crate::Db::options().reserve(1 << 30).open(&path) else { return };
    let _ = db.check();
    let Ok(r) = db.read() else { return };
    for name in r.tables().unwrap_or_default() {
        let Ok(t) = r.table(&name) else { continue };
        for e in t.iter().take(10_000) {
            if e.is_err() {
                break;
            }
        }
        for e in t.iter().rev().take(10_000) {
            if e.is_err() {
                break;
            }
        }
        let _ = t.get(b"key");
    }
}

/// A database with every kind of page (several tables, a multi-level
/// tree, overflow values, long keys, free pages): its file and its lock
/// file, set up in this boot. Built once per process.
fn warm_template() -> Option<&'static (Vec<u8>, Vec<u8>)> {
    static TEMPLATE: std::sync::OnceLock<Option<(Vec<u8>, Vec<u8>)>> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().ok()?;
            let path = dir.path().join("db");
            {
                let db = crate::Db::options()
                    .create(true)
                    .durability(crate::Durability::Eventual)
                    .open(&path)
                    .ok()?;
                let mut w = db.write().ok()?;
                let mut t = w.table("many").ok()?;
                for i in 0u32..2000 {
                    t.put(i.to_be_bytes(), vec![i as u8; 30]).ok()?;
                }
                t.delete_range(500u32.to_be_bytes()..700u32.to_be_bytes()).ok()?;
                let mut t = w.table("big").ok()?;
                t.put("overflow", vec![7u8; 20_000]).ok()?;
                t.put(vec![b'k'; 2000], "long key").ok()?;
                w.commit().ok()?;
                let mut w = db.write().ok()?;
                w.table("many").ok()?.put(3u32.to_be_bytes(), "rewritten").ok()?;
                w.commit().ok()?;
            }
            let image = std::fs::read(&path).ok()?;
            let lock = std::fs::read(crate::lock_path(&path)).ok()?;
            Some((image, lock))
        })
        .as_ref()
}

/// A hostile or buggy peer: overwrites bytes of the tree, overflow and
/// free-tree pages of a database set up in this boot (`data` is pairs of
/// a 4-byte position and up to 8 bytes), keeping the meta pages, so the
/// open is warm and trusts the page cache as it would a live peer's
/// writes: nothing verifies the checksums (reads do not by default).
/// Then uses every read and write path. Errors are fine; panics, hangs
/// and out-of-bounds accesses are not.
pub fn fuzz_warm(data: &[u8]) {
    let Some((image, lock)) = warm_template() else { return };
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("db");
    let mut bytes = image.clone();
    overwrite(&mut bytes, crate::meta::META_SLOTS as usize * PAGE, data);
    if std::fs::write(&path, &bytes).is_err() || std::fs::write(crate::lock_path(&path), lock).is_err() {
        return;
    }
    exercise_warm(&path, &dir.path().join("copy"));
}

/// Overwrites bytes of `bytes` from `from` on: `data` is pairs of a
/// 4-byte position (taken modulo the length after `from`) and up to 8
/// bytes to write there.
fn overwrite(bytes: &mut [u8], from: usize, data: &[u8]) {
    let body = bytes.len().saturating_sub(from).max(1);
    let mut rest = data;
    while rest.len() >= 4 {
        let at = from + u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize % body;
        let n = (rest.len() - 4).min(8);
        for (k, b) in rest[4..4 + n].iter().enumerate() {
            if let Some(x) = bytes.get_mut(at + k) {
                *x = *b;
            }
        }
        rest = &rest[4 + n..];
    }
}

/// A database synced at the base of a redo-log chain, and the log: the
/// chain started over once, and its records hold inline values, overflow
/// runs and free-tree pages. Built once per process.
fn log_template() -> Option<&'static (Vec<u8>, Vec<u8>)> {
    static TEMPLATE: std::sync::OnceLock<Option<(Vec<u8>, Vec<u8>)>> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().ok()?;
            let path = dir.path().join("db");
            let db = crate::Db::options().create(true).log_size(256 << 10).open(&path).ok()?;
            let mut w = db.write().ok()?;
            for i in 0u32..600 {
                w.table("many").ok()?.put(i.to_be_bytes(), vec![i as u8; 30]).ok()?;
            }
            w.commit().ok()?;
            db.sync().ok()?;
            let image = std::fs::read(&path).ok()?;
            for i in 0u32..10 {
                let mut w = db.write().ok()?;
                let mut t = w.table(if i % 3 == 0 { "big" } else { "many" }).ok()?;
                t.put(i.to_be_bytes(), vec![i as u8; if i % 3 == 0 { 9000 } else { 50 }]).ok()?;
                t.delete((i * 7 + 100).to_be_bytes()).ok()?;
                w.commit().ok()?;
            }
            let log = std::fs::read(crate::log_path(&path)).ok()?;
            Some((image, log))
        })
        .as_ref()
}

/// Recomputes the checksum of each record that the log's headers still
/// delimit, so the fuzzer reaches the replay with records a hostile
/// writer forged, not only with torn ones.
fn reseal(log: &mut [u8]) {
    let mut at = 0;
    while at + PAGE <= log.len() {
        let pages = crate::page::u32_at(log, at + 40) as usize;
        let len = crate::log::Record::len(pages) as usize;
        let Some(rec) = log.get_mut(at..at.saturating_add(len)) else { return };
        let crc = crc32c::crc32c(&rec[4..]);
        rec[..4].copy_from_slice(&crc.to_le_bytes());
        at += len;
    }
}

/// A power loss with a damaged or forged redo log: `data` overwrites
/// bytes of the log (as in `fuzz_warm`; an odd first byte also reseals
/// the records' checksums), which is then replayed by a cold open over
/// the data file as synced at the chain's base. Then reads, checks and
/// writes. Errors are fine; panics and out-of-bounds accesses are not.
pub fn fuzz_log(data: &[u8]) {
    let Some((image, log)) = log_template() else { return };
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("db");
    let mut bytes = log.clone();
    overwrite(&mut bytes, 0, data.get(1..).unwrap_or_default());
    if data.first().is_some_and(|b| b % 2 == 1) {
        reseal(&mut bytes);
    }
    if std::fs::write(&path, image).is_err() || std::fs::write(crate::log_path(&path), &bytes).is_err() {
        return;
    }
    exercise_warm(&path, &dir.path().join("copy"));
}

/// Every path, on a database whose pages may be garbage.
fn exercise_warm(path: &std::path::Path, copy: &std::path::Path) {
    let Ok(db) = crate::Db::options().durability(crate::Durability::Eventual).open(path) else { return };
    let _ = db.stat();
    let _ = db.check();
    if let Ok(r) = db.read() {
        for name in r.tables().unwrap_or_default() {
            let Ok(t) = r.table(&name) else { continue };
            let _ = t.len();
            let _ = (t.first(), t.last(), t.get(3u32.to_be_bytes()));
            let _ = t.iter().take(5000).take_while(|e| e.is_ok()).count();
            let _ = t.iter().rev().take(5000).take_while(|e| e.is_ok()).count();
            let _ = t.range(100u32.to_be_bytes()..900u32.to_be_bytes()).take_while(|e| e.is_ok()).count();
            let _ = t.prefix([0u8, 0]).take_while(|e| e.is_ok()).count();
        }
    }
    let write = || -> crate::Result<()> {
        let mut w = db.write()?;
        let mut t = w.table("many")?;
        t.put(5u32.to_be_bytes(), "new")?;
        t.delete(7u32.to_be_bytes())?;
        t.delete_range(1000u32.to_be_bytes()..1100u32.to_be_bytes())?;
        w.table("big")?.clear()?;
        w.drop_table("many")?;
        w.commit()?;
        Ok(())
    };
    let _ = write();
    let _ = db.shrink();
    let _ = db.compact_to(copy);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs `warm_image` found, kept as found. Each overflowed where
    /// overflow checks are on (the fuzz build, `cargo test` in debug):
    /// - a table whose stored entry count is 0 losing a key on `delete`
    ///   (the count now saturates, as does `put`'s).
    #[test]
    fn warm_image_findings() {
        fuzz_warm(&[0xf6, 0x0f, 0x02, 0x2f, 0x8a, 0xc4, 0x10, 0x00]);
    }

    /// The fuzz entry points on random and mutated inputs, so CI runs them.
    #[test]
    fn fuzz_entry_points_survive_garbage() {
        let mut seed = 0x9E3779B97F4A7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let len = (next() % 600) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            fuzz_page(&data);
            // A plausible header: leaf, a few entries.
            let mut page = data.clone();
            page.resize(64, 0);
            page[0] = 1;
            page[2] = (next() % 8) as u8;
            page[3] = 0;
            page[4..6].copy_from_slice(&((16000 + next() % 384) as u16).to_le_bytes());
            fuzz_page(&page);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = crate::Db::open(&path).unwrap();
            let mut w = db.write().unwrap();
            for i in 0u32..300 {
                w.table("t").unwrap().put(i.to_be_bytes(), vec![i as u8; (i % 50) as usize]).unwrap();
            }
            w.commit().unwrap();
        }
        let good = std::fs::read(&path).unwrap();
        fuzz_file(&good);
        assert!(warm_template().is_some(), "the warm template builds");
        assert!(log_template().is_some_and(|(_, log)| !log.is_empty()), "the log template builds");
        for _ in 0..30 {
            let len = (next() % 200) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            fuzz_log(&data);
        }
        fuzz_warm(&[]);
        for _ in 0..30 {
            let len = (next() % 200) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            fuzz_warm(&data);
        }
        for _ in 0..20 {
            let mut bad = good.clone();
            for _ in 0..(1 + next() % 20) {
                let at = (next() as usize) % bad.len();
                bad[at] = next() as u8;
            }
            fuzz_file(&bad);
        }
    }
}
