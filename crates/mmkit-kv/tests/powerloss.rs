//! Power-loss simulation. The file is imaged after every commit (after its
//! `fdatasync`, in Immediate mode, that image is what the disk holds);
//! a power cut between two sync points leaves any subset of the writes
//! made since the last one, sector by sector. Each such mix is opened cold
//! (no lock file, as after a reboot) and must be a commit the model knows:
//! the last durable one or a later whole one in Immediate mode, some
//! consistent earlier commit in Eventual mode.

use std::collections::BTreeMap;
use std::path::Path;

use mmkit_kv::{Db, Durability};

type State = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;
const SECTOR: usize = 512;

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn state(db: &Db) -> State {
    let r = db.read().unwrap();
    let mut s = State::new();
    for name in r.tables().unwrap() {
        let t = r.table(&name).unwrap();
        let m = t.iter().map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<_, _>>().unwrap();
        s.insert(name, m);
    }
    s
}

/// One commit of random puts and deletes, some values in overflow pages.
fn mutate(db: &Db, seed: &mut u64, d: Durability) {
    let mut w = db.write().unwrap();
    for _ in 0..1 + rng(seed) % 30 {
        let table = format!("t{}", rng(seed) % 3);
        let key = (rng(seed) % 200).to_be_bytes();
        let mut t = w.table(&table).unwrap();
        if rng(seed) % 4 == 0 {
            t.delete(key).unwrap();
        } else {
            let len = if rng(seed) % 10 == 0 { 20_000 } else { (rng(seed) % 100) as usize };
            t.put(key, vec![rng(seed) as u8; len]).unwrap();
        }
    }
    w.commit_with(d).unwrap();
}

/// `old` with each sector replaced, with probability `p` in 1000, by the
/// same sector of `new`.
fn mix(old: &[u8], new: &[u8], p: u64, seed: &mut u64) -> Vec<u8> {
    let mut out = new.to_vec();
    for (i, chunk) in out.chunks_mut(SECTOR).enumerate() {
        let at = i * SECTOR;
        if rng(seed) % 1000 >= p {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = old.get(at + j).copied().unwrap_or(0);
            }
        }
    }
    out
}

/// Opens `image` cold and returns its state, after a full check.
fn recover(dir: &Path, n: usize, image: &[u8]) -> State {
    let path = dir.join(format!("image-{n}"));
    std::fs::write(&path, image).unwrap();
    let db = Db::options().open(&path).unwrap_or_else(|e| panic!("image {n} does not open: {e}"));
    let report = db.check().unwrap_or_else(|e| panic!("image {n} recovered to a corrupt commit: {e}"));
    assert_eq!(report.leaked_pages, 0, "image {n}: {report:?}");
    let s = state(&db);
    drop(db);
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(mmkit_kv::lock_path(&path));
    s
}

#[test]
fn immediate_recovers_the_last_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Immediate).open(&path).unwrap();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut images = vec![(std::fs::read(&path).unwrap(), state(&db))];
    for _ in 0..25 {
        mutate(&db, &mut seed, Durability::Immediate);
        images.push((std::fs::read(&path).unwrap(), state(&db)));
    }
    let mut n = 0;
    let mut outcomes = [0usize; 2];
    for k in 0..images.len() - 1 {
        let (old, old_state) = &images[k];
        let (new, new_state) = &images[k + 1];
        for p in [0, 100, 500, 900, 999, 1000] {
            n += 1;
            let got = recover(dir.path(), n, &mix(old, new, p, &mut seed));
            assert!(got == *old_state || got == *new_state, "image {n} (commit {k}, p {p}) is no commit");
            outcomes[(got == *new_state) as usize] += 1;
        }
    }
    // Both outcomes happen: the sweep really cut commits in half.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

#[test]
fn eventual_recovers_a_consistent_earlier_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Eventual).open(&path).unwrap();
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut n = 0;
    for _round in 0..3 {
        // A sync point: everything so far is durable.
        db.sync().unwrap();
        let durable = std::fs::read(&path).unwrap();
        let mut states = vec![state(&db)];
        for _ in 0..15 {
            mutate(&db, &mut seed, Durability::Eventual);
            states.push(state(&db));
            let now = std::fs::read(&path).unwrap();
            for p in [0, 300, 700, 1000] {
                n += 1;
                let got = recover(dir.path(), n, &mix(&durable, &now, p, &mut seed));
                assert!(states.contains(&got), "image {n} (p {p}) is not a commit since the last sync");
                if p == 0 {
                    assert_eq!(got, states[0], "nothing written since the sync: the synced commit");
                }
                if p == 1000 {
                    assert_eq!(&got, states.last().unwrap(), "every write kept: the last commit");
                }
            }
        }
    }
}
