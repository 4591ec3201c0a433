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

#[cfg(test)]
mod tests {
    use super::*;

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
