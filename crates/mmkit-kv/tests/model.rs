//! Model tests: every API call against a `BTreeMap` per table, across
//! commits, aborts and reopenings, with large keys and values.

use std::collections::BTreeMap;
use std::ops::Bound;

use mmkit_kv::{Db, Durability, MAX_KEY_LEN};
use proptest::prelude::*;

type Model = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, Vec<u8>, Vec<u8>),
    Delete(u8, Vec<u8>),
    DeleteRange(u8, Vec<u8>, Vec<u8>),
    Clear(u8),
    DropTable(u8),
    Commit,
    Abort,
    Reopen,
    Shrink,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(0u8..4, 0..6),
        2 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => (0usize..3).prop_map(|n| vec![b'k'; MAX_KEY_LEN - n]),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..30),
        1 => (0usize..70_000).prop_map(|n| (0..n).map(|i| (i * 7) as u8).collect()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => (0u8..3, key(), value()).prop_map(|(t, k, v)| Op::Put(t, k, v)),
        12 => (0u8..3, key()).prop_map(|(t, k)| Op::Delete(t, k)),
        2 => (0u8..3, key(), key()).prop_map(|(t, a, b)| Op::DeleteRange(t, a, b)),
        1 => (0u8..3).prop_map(Op::Clear),
        1 => (0u8..3).prop_map(Op::DropTable),
        8 => Just(Op::Commit),
        2 => Just(Op::Abort),
        1 => Just(Op::Reopen),
        1 => Just(Op::Shrink),
    ]
}

fn name(t: u8) -> String {
    format!("t{t}")
}

/// Compares every table of `db`'s last commit with `model`, forwards,
/// backwards, by point lookups and by a few ranges.
fn compare(db: &Db, model: &Model) {
    let r = db.read().unwrap();
    let names: Vec<String> = model.keys().cloned().collect();
    assert_eq!(r.tables().unwrap(), names);
    for (name, m) in model {
        let t = r.table(name).unwrap();
        assert_eq!(t.len(), m.len() as u64, "len of {name}");
        let got: Vec<(Vec<u8>, Vec<u8>)> =
            t.iter().map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<_, _>>().unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(got, want, "forward scan of {name}");
        let back: Vec<Vec<u8>> = t.iter().rev().map(|e| e.unwrap().0.to_vec()).collect();
        let want_back: Vec<Vec<u8>> = m.keys().rev().cloned().collect();
        assert_eq!(back, want_back, "reverse scan of {name}");
        for (k, v) in m.iter().take(20) {
            assert_eq!(t.get(k).unwrap(), Some(v.as_slice()));
        }
        assert_eq!(t.first().unwrap().map(|(k, _)| k.to_vec()), m.keys().next().cloned());
        assert_eq!(t.last().unwrap().map(|(k, _)| k.to_vec()), m.keys().next_back().cloned());
        for (lo, hi) in [(vec![1u8], vec![2u8]), (vec![0, 1], vec![3]), (vec![], vec![1, 1])] {
            let got: Vec<Vec<u8>> = t.range(lo.clone()..hi.clone()).map(|e| e.unwrap().0.to_vec()).collect();
            let want: Vec<Vec<u8>> = m.range(lo.clone()..hi.clone()).map(|(k, _)| k.clone()).collect();
            assert_eq!(got, want, "range {lo:?}..{hi:?}");
            let got: Vec<Vec<u8>> =
                t.range(lo.clone()..=hi.clone()).rev().map(|e| e.unwrap().0.to_vec()).collect();
            let want: Vec<Vec<u8>> = m.range(lo.clone()..=hi.clone()).rev().map(|(k, _)| k.clone()).collect();
            assert_eq!(got, want, "reverse range {lo:?}..={hi:?}");
        }
        let got: Vec<Vec<u8>> = t.prefix([1u8]).map(|e| e.unwrap().0.to_vec()).collect();
        let want: Vec<Vec<u8>> = m.keys().filter(|k| k.first() == Some(&1)).cloned().collect();
        assert_eq!(got, want, "prefix scan");
    }
    drop(r);
    let report = db.check().unwrap();
    assert_eq!(report.leaked_pages, 0, "{report:?}");
}

fn run(ops: Vec<Op>, durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let open = || Db::options().create(true).durability(durability).open(&path).unwrap();
    let mut db = open();
    let mut committed: Model = BTreeMap::new();
    let mut pending = committed.clone();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let mut w = db.write().unwrap();
        let mut end = Op::Commit;
        for op in ops.by_ref() {
            match op {
                Op::Put(t, k, v) => {
                    w.table(&name(t)).unwrap().put(&k, &v).unwrap();
                    pending.entry(name(t)).or_default().insert(k, v);
                }
                Op::Delete(t, k) => {
                    let had = pending.get_mut(&name(t)).and_then(|m| m.remove(&k)).is_some();
                    let got = match w.existing_table(&name(t)) {
                        Ok(mut tm) => tm.delete(&k).unwrap(),
                        Err(mmkit_kv::Error::NoSuchTable { .. }) => false,
                        Err(e) => panic!("{e}"),
                    };
                    assert_eq!(got, had);
                }
                Op::DeleteRange(t, a, b) => {
                    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                    let n = w.table(&name(t)).unwrap().delete_range(lo.clone()..hi.clone()).unwrap();
                    let m = pending.entry(name(t)).or_default();
                    let gone: Vec<_> =
                        m.range((Bound::Included(lo), Bound::Excluded(hi))).map(|(k, _)| k.clone()).collect();
                    assert_eq!(n, gone.len() as u64);
                    for k in gone {
                        m.remove(&k);
                    }
                }
                Op::Clear(t) => {
                    w.table(&name(t)).unwrap().clear().unwrap();
                    pending.insert(name(t), BTreeMap::new());
                }
                Op::DropTable(t) => {
                    let had = pending.remove(&name(t)).is_some();
                    assert_eq!(w.drop_table(&name(t)).unwrap(), had);
                }
                other => {
                    end = other;
                    break;
                }
            }
        }
        match end {
            Op::Abort => {
                drop(w);
                pending = committed.clone();
            }
            Op::Shrink => {
                w.commit().unwrap();
                committed = pending.clone();
                db.shrink().unwrap();
            }
            Op::Reopen => {
                w.commit().unwrap();
                committed = pending.clone();
                drop(db);
                db = open();
            }
            _ => {
                w.commit().unwrap();
                committed = pending.clone();
            }
        }
        compare(&db, &committed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_a_btreemap(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops, Durability::Eventual);
    }

    #[test]
    fn matches_a_btreemap_immediate(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, Durability::Immediate);
    }
}

/// Enough sorted and random keys to build a three-level tree, with
/// deletes that empty whole leaves, checked against the model.
#[test]
fn large_trees_split_and_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::options().create(true).durability(Durability::Eventual).open(dir.path().join("db")).unwrap();
    let mut model = BTreeMap::new();
    let mut w = db.write().unwrap();
    let mut t = w.table("big").unwrap();
    for i in 0u64..60_000 {
        let k = (i.wrapping_mul(0x9E3779B97F4A7C15)).to_be_bytes().to_vec();
        let v = vec![i as u8; (i % 200) as usize];
        t.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    w.commit().unwrap();
    let mut w = db.write().unwrap();
    let mut t = w.table("big").unwrap();
    let keys: Vec<_> = model.keys().cloned().collect();
    for k in keys.iter().step_by(3).chain(keys[1000..20_000].iter()) {
        if model.remove(k).is_some() {
            assert!(t.delete(k).unwrap());
        }
    }
    w.commit().unwrap();
    let mut all = BTreeMap::new();
    all.insert("big".to_string(), model);
    compare(&db, &all);
}

/// Deleting what the end of the file holds shrinks the file (by itself,
/// once the free list is large), and the data left is intact.
#[test]
fn file_shrinks_when_its_tail_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Immediate).open(&path).unwrap();
    let mut w = db.write().unwrap();
    w.table("keep").unwrap().put("a", "b").unwrap();
    for i in 0u32..200 {
        w.table("big").unwrap().put(i.to_be_bytes(), vec![i as u8; 60_000]).unwrap();
    }
    w.commit().unwrap();
    let grown = std::fs::metadata(&path).unwrap().len();
    let mut w = db.write().unwrap();
    w.drop_table("big").unwrap();
    w.commit().unwrap();
    // One more commit lets the dropped pages be reused or cut.
    let mut w = db.write().unwrap();
    w.table("keep").unwrap().put("c", "d").unwrap();
    w.commit().unwrap();
    let cut = db.shrink().unwrap();
    assert!(cut > 0);
    let shrunk = std::fs::metadata(&path).unwrap().len();
    assert!(shrunk * 10 < grown, "{grown} -> {shrunk} bytes");
    assert_eq!(db.check().unwrap().leaked_pages, 0);
    let r = db.read().unwrap();
    assert_eq!(r.table("keep").unwrap().get("c").unwrap(), Some(&b"d"[..]));
    drop(r);
    // Growing again after the cut works, in this handle and a new one.
    let mut w = db.write().unwrap();
    w.table("big").unwrap().put("x", vec![1u8; 100_000]).unwrap();
    w.commit().unwrap();
    drop(db);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.read().unwrap().table("big").unwrap().get("x").unwrap().map(<[u8]>::len), Some(100_000));
    assert_eq!(db.check().unwrap().leaked_pages, 0);
}

/// Keys up to the longest, sharing prefixes longer than a page can hold
/// three times: leaf entries keep such keys in overflow runs, and the
/// separators between them (also that long) go to runs of their own in
/// the branches. Splits, deletes that empty leaves, shrinking, clearing
/// and dropping must keep every key reachable and leak no run.
#[test]
fn long_keys_and_long_separators() {
    let dir = tempfile::tempdir().unwrap();
    let db =
        Db::options().create(true).durability(Durability::Immediate).open(dir.path().join("db")).unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut model = BTreeMap::new();
    for round in 0..4 {
        let mut w = db.write().unwrap();
        let mut t = w.table("long").unwrap();
        for _ in 0..600 {
            // A shared prefix of 1200 to 4000 bytes, then a distinct tail.
            let shared = 1200 + (rng() % 2800) as usize;
            let mut k = vec![b'p'; shared];
            k.extend(rng().to_be_bytes());
            k.truncate(MAX_KEY_LEN);
            let v = vec![round as u8; (rng() % 3000) as usize];
            t.put(&k, &v).unwrap();
            model.insert(k, v);
        }
        // Delete a third, in key order stretches, so whole leaves empty.
        let keys: Vec<_> = model.keys().cloned().collect();
        for k in keys.iter().skip(round * 7).step_by(3).chain(&keys[keys.len() / 4..keys.len() / 3]) {
            if model.remove(k).is_some() {
                assert!(t.delete(k).unwrap());
            }
        }
        w.commit().unwrap();
        let mut all = BTreeMap::new();
        all.insert("long".to_string(), model.clone());
        compare(&db, &all);
    }
    db.shrink().unwrap();
    let mut all = BTreeMap::new();
    all.insert("long".to_string(), model.clone());
    compare(&db, &all);
    let mut w = db.write().unwrap();
    w.table("long").unwrap().clear().unwrap();
    w.table("other").unwrap().put(vec![b'q'; MAX_KEY_LEN], "v").unwrap();
    w.commit().unwrap();
    let mut w = db.write().unwrap();
    w.drop_table("other").unwrap();
    w.commit().unwrap();
    let report = db.check().unwrap();
    assert_eq!(report.leaked_pages, 0, "{report:?}");
    assert_eq!(report.tables, [("long".to_string(), 0, 0)]);
}

/// Eventual commits after a durable one keep the durable commit's pages
/// they replace (a power loss falls back to it), recorded in the free
/// tree; after a sync those pages are reused instead of growing the file.
#[test]
fn eventual_commits_hold_the_durable_pages_until_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let db =
        Db::options().create(true).durability(Durability::Immediate).open(dir.path().join("db")).unwrap();
    let key = |i: u32| i.wrapping_mul(2_654_435_761).to_be_bytes();
    let mut model = BTreeMap::new();
    let mut w = db.write().unwrap();
    let mut t = w.table("t").unwrap();
    for i in 0..20_000u32 {
        t.put(key(i), [i as u8; 40]).unwrap();
        model.insert(key(i).to_vec(), vec![i as u8; 40]);
    }
    w.commit().unwrap();
    // Each Eventual commit replaces a leaf of the durable commit: held.
    let mut round = |db: &Db, from: u32| {
        for i in (from..from + 400).map(|i| i * 47 % 20_000) {
            let mut w = db.write().unwrap();
            w.table("t").unwrap().put(key(i), [7u8; 40]).unwrap();
            w.commit_with(Durability::Eventual).unwrap();
            model.insert(key(i).to_vec(), vec![7u8; 40]);
        }
    };
    round(&db, 0);
    let held = db.stat().unwrap();
    assert!(held.free_pages >= 50, "{held:?}");
    assert_eq!(db.check().unwrap().leaked_pages, 0);
    db.sync().unwrap();
    round(&db, 400);
    let after = db.stat().unwrap();
    assert!(after.pages <= held.pages + 16, "held pages were not reused: {held:?} then {after:?}");
    assert_eq!(db.check().unwrap().leaked_pages, 0);
    let mut all = BTreeMap::new();
    all.insert("t".to_string(), model);
    compare(&db, &all);
}
