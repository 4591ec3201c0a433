//! Power-loss simulation. The file is imaged after every commit (after its
//! `fdatasync` of the data file, that image is what the disk holds); a
//! power cut between two sync points leaves any subset of the writes made
//! since the last one, sector by sector. Each such mix is opened cold (no
//! lock file, as after a reboot) and must be a commit the model knows: the
//! last durable one or a later whole one in Immediate mode, some
//! consistent earlier commit in Eventual mode. With the redo log, the data
//! file on disk is any mix of its image when the log's chain began and its
//! image now, and the log is exactly as synced (or, for a commit cut in
//! half, a mix of the log before and after it).

use std::collections::{BTreeMap, HashSet};
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
    recover_with_log(dir, n, image, None)
}

/// Opens `image`, with `log` as its redo log, cold.
fn recover_with_log(dir: &Path, n: usize, image: &[u8], log: Option<&[u8]>) -> State {
    let path = dir.join(format!("image-{n}"));
    std::fs::write(&path, image).unwrap();
    if let Some(log) = log {
        std::fs::write(mmkit_kv::log_path(&path), log).unwrap();
    }
    let db = Db::options().open(&path).unwrap_or_else(|e| panic!("image {n} does not open: {e}"));
    let report = db.check().unwrap_or_else(|e| panic!("image {n} recovered to a corrupt commit: {e}"));
    assert_eq!(report.leaked_pages, 0, "image {n}: {report:?}");
    let s = state(&db);
    drop(db);
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(mmkit_kv::lock_path(&path));
    let _ = std::fs::remove_file(mmkit_kv::log_path(&path));
    s
}

/// Without the redo log, every Immediate commit syncs the data file.
#[test]
fn immediate_recovers_the_last_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Immediate).log_size(0).open(&path).unwrap();
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

/// The data file's images by commit, the log's bytes, and the states.
struct Logged {
    data: BTreeMap<u64, Vec<u8>>,
    states: BTreeMap<u64, State>,
    log: Vec<u8>,
}

impl Logged {
    fn new(db: &Db, path: &Path) -> Logged {
        let mut l = Logged { data: BTreeMap::new(), states: BTreeMap::new(), log: Vec::new() };
        l.snap(db, path);
        l
    }
    fn snap(&mut self, db: &Db, path: &Path) {
        let t = db.last_commit();
        self.data.insert(t, std::fs::read(path).unwrap());
        self.states.insert(t, state(db));
        self.log = std::fs::read(mmkit_kv::log_path(path)).unwrap_or_default();
    }
}

/// Immediate commits through the redo log, with a log small enough that
/// chains start over and big commits go to the data file instead. After
/// every commit, any write-back of the data file since the chain's base,
/// with the log as synced, must give exactly the last commit; a record cut
/// in half gives the last commit or the one before it.
#[test]
fn logged_commits_survive_any_write_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db =
        Db::options().create(true).durability(Durability::Immediate).log_size(256 << 10).open(&path).unwrap();
    let mut seed = 0xD1B54A32D192ED03u64;
    let mut l = Logged::new(&db, &path);
    let (mut n, mut bases, mut unlogged) = (0, std::collections::BTreeSet::new(), 0);
    for _ in 0..40 {
        let log_before = l.log.clone();
        mutate(&db, &mut seed, Durability::Immediate);
        l.snap(&db, &path);
        let t = db.last_commit();
        let stat = db.stat().unwrap();
        // Where the data file was last synced: the chain's base, or this
        // commit when it was synced into the data file instead.
        let flushed = match stat.log_chain {
            Some(c) if c.last == t => {
                bases.insert(c.first - 1);
                c.first - 1
            }
            _ => {
                unlogged += 1;
                t
            }
        };
        let (old, now) = (&l.data[&flushed], &l.data[&t]);
        for p in [0, 100, 500, 900, 1000] {
            n += 1;
            let got = recover_with_log(dir.path(), n, &mix(old, now, p, &mut seed), Some(&l.log));
            assert!(
                got == l.states[&t],
                "image {n} (commit {t}, flushed {flushed}, p {p}) lost the last commit"
            );
        }
        for p in [200, 800] {
            n += 1;
            let log = mix(&log_before, &l.log, p, &mut seed);
            let got = recover_with_log(dir.path(), n, &mix(old, now, 500, &mut seed), Some(&log));
            assert!(
                got == l.states[&t] || got == l.states[&(t - 1)],
                "image {n} (torn record of {t}) is no commit"
            );
        }
    }
    assert!(bases.len() >= 3, "chains started over: {bases:?}");
    assert!(unlogged > 0, "some commits were too big for the log");
}

/// Logged Immediate commits mixed with Eventual ones, Group ones and
/// explicit syncs: whatever the data file wrote back, the cold open gives
/// the last durable commit or a later whole one.
#[test]
fn logged_and_unlogged_commits_mix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).log_size(256 << 10).open(&path).unwrap();
    let mut seed = 0x94D049BB133111EBu64;
    let mut l = Logged::new(&db, &path);
    let mut n = 0;
    for _ in 0..60 {
        let d = match rng(&mut seed) % 4 {
            0 => Durability::Eventual,
            1 => Durability::Group,
            _ => Durability::Immediate,
        };
        mutate(&db, &mut seed, d);
        if rng(&mut seed) % 10 == 0 {
            db.sync().unwrap();
        }
        l.snap(&db, &path);
        let stat = db.stat().unwrap();
        let t = stat.txnid;
        let old = &l.data[&stat.flushed];
        for p in [0, 500, 1000] {
            n += 1;
            let got = recover_with_log(dir.path(), n, &mix(old, &l.data[&t], p, &mut seed), Some(&l.log));
            let ok = l.states.range(stat.durable..=t).any(|(_, s)| *s == got);
            assert!(
                ok,
                "image {n} (commit {t}, durable {}, flushed {}, p {p}) is no commit since the durable one",
                stat.durable, stat.flushed
            );
        }
    }
}

/// Damage anywhere in the log ends the chain at the record before it:
/// the open gives a commit of the chain (or its base), never an error or
/// a panic.
#[test]
fn a_damaged_log_ends_the_chain_where_it_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).open(&path).unwrap();
    db.sync().unwrap();
    let mut seed = 0xBF58476D1CE4E5B9u64;
    let mut l = Logged::new(&db, &path);
    let base = db.last_commit();
    for _ in 0..12 {
        let mut w = db.write().unwrap();
        w.table("t").unwrap().put(rng(&mut seed).to_be_bytes(), [7u8; 90]).unwrap();
        w.commit().unwrap();
        l.snap(&db, &path);
    }
    let chain = db.stat().unwrap().log_chain.unwrap();
    assert_eq!((chain.first, chain.last), (base + 1, db.last_commit()), "every commit is in the chain");
    let old = &l.data[&base];
    let starts = record_starts(&l.log, chain.bytes);
    assert_eq!(starts.len(), 12);
    for n in 0..60 {
        let mut log = l.log.clone();
        let at = (rng(&mut seed) as usize) % chain.bytes as usize;
        log[at] ^= 1 << (rng(&mut seed) % 8);
        let got = recover_with_log(dir.path(), n, old, Some(&log));
        assert!(l.states.values().any(|s| *s == got), "byte {at}: no commit of the chain");
        // Exactly the records before the damaged one were replayed.
        let k = starts.iter().rposition(|&s| s <= at).unwrap() as u64;
        assert!(got == l.states[&(base + k)], "byte {at} (record {k}): not the commit before it");
    }
}

/// Where each record of the log's first `bytes` bytes starts (the length
/// of a record of n pages, as kv-format.md gives it).
fn record_starts(log: &[u8], bytes: u64) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < bytes as usize {
        starts.push(at);
        let n = record_len(log, at);
        at += (176 + 8 * n).div_ceil(4096) * 4096 + 4096 * n;
    }
    starts
}

/// The page count of the record at byte `at` of a log.
fn record_len(log: &[u8], at: usize) -> usize {
    u32::from_le_bytes(log[at + 40..at + 44].try_into().unwrap()) as usize
}

/// A read-only handle cannot replay: it opens when the data file already
/// holds the chain's commits, and says what to do when it does not.
#[test]
fn a_read_only_cold_open_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).open(&path).unwrap();
    db.sync().unwrap();
    let before = std::fs::read(&path).unwrap();
    for i in 0u32..5 {
        let mut w = db.write().unwrap();
        w.table("t").unwrap().put(i.to_be_bytes(), "v").unwrap();
        w.commit().unwrap();
    }
    let (after, log) = (std::fs::read(&path).unwrap(), std::fs::read(mmkit_kv::log_path(&path)).unwrap());
    drop(db);
    let image = dir.path().join("image");
    let put = |data: &[u8]| {
        std::fs::write(&image, data).unwrap();
        std::fs::write(mmkit_kv::log_path(&image), &log).unwrap();
        let _ = std::fs::remove_file(mmkit_kv::lock_path(&image));
    };
    let entries = |db: &Db| db.read().unwrap().table("t").unwrap().len();
    // Everything was written back: the data file alone has the last commit.
    put(&after);
    assert_eq!(entries(&Db::options().read_only(true).open(&image).unwrap()), 5);
    // Nothing was: a read-only open is a clear error, a writable one
    // replays, and then read-only opens see it all.
    put(&before);
    let e = Db::options().read_only(true).open(&image).unwrap_err();
    assert!(e.to_string().contains("open the database once for writing"), "{e}");
    assert_eq!(entries(&Db::open(&image).unwrap()), 5);
    let _ = std::fs::remove_file(mmkit_kv::lock_path(&image));
    assert_eq!(entries(&Db::options().read_only(true).open(&image).unwrap()), 5);
}

/// The page numbers of the record at byte `at` of a log.
fn record_pages(log: &[u8], at: usize) -> Vec<u64> {
    (0..record_len(log, at))
        .map(|i| u64::from_le_bytes(log[at + 176 + 8 * i..][..8].try_into().unwrap()))
        .collect()
}

/// A read-only cold open verifies what the chain's commits wrote, not the
/// whole file: damage to a page written before the chain does not stop it
/// from opening at the chain's end (`check` names that page), and neither
/// does a page the chain wrote and freed again that never reached the
/// disk. Before, it checked the whole file and failed.
#[test]
fn a_read_only_cold_open_verifies_what_the_chain_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Eventual).open(&path).unwrap();
    let mut w = db.write().unwrap();
    for i in 0u32..2000 {
        w.table("old").unwrap().put(i.to_be_bytes(), format!("old value {i:08}")).unwrap();
    }
    w.commit().unwrap();
    db.sync().unwrap();
    drop(db);
    let db = Db::open(&path).unwrap();
    for i in 0u32..5 {
        let mut w = db.write().unwrap();
        w.table("t").unwrap().put(i.to_be_bytes(), "v").unwrap();
        w.commit().unwrap();
    }
    let chain = db.stat().unwrap().log_chain.unwrap();
    let (mut data, log) = (std::fs::read(&path).unwrap(), std::fs::read(mmkit_kv::log_path(&path)).unwrap());
    drop(db);
    let starts = record_starts(&log, chain.bytes);
    assert_eq!(starts.len(), 5);
    let in_chain: HashSet<u64> = starts.iter().flat_map(|&at| record_pages(&log, at)).collect();
    let last: HashSet<u64> = record_pages(&log, starts[4]).into_iter().collect();
    // A page an earlier commit wrote and a later one freed: not on disk.
    let freed = in_chain.iter().copied().find(|p| !last.contains(p)).unwrap();
    data[freed as usize * 4096..][..4096].fill(0);
    // A page of "old", which the chain never wrote: damaged.
    let at = data.windows(18).position(|w| w == b"old value 00001000").unwrap();
    let old = at / 4096;
    assert!(!in_chain.contains(&(old as u64)));
    data[at + 17] ^= 0x01;
    let image = dir.path().join("image");
    std::fs::write(&image, &data).unwrap();
    std::fs::write(mmkit_kv::log_path(&image), &log).unwrap();
    let db = Db::options().read_only(true).open(&image).unwrap();
    let r = db.read().unwrap();
    assert_eq!(r.table("t").unwrap().len(), 5);
    assert_eq!(r.table("old").unwrap().get(0u32.to_be_bytes()).unwrap().unwrap(), b"old value 00000000");
    drop(r);
    let e = db.check().unwrap_err();
    assert!(e.to_string().contains(&format!("page {old} ")), "{e}");
    drop(db);
    // A page the last commit reaches that never reached the disk: only a
    // replay can open it.
    let reached = *last.iter().next().unwrap();
    data[reached as usize * 4096..][..4096].fill(0);
    std::fs::write(&image, &data).unwrap();
    std::fs::remove_file(mmkit_kv::lock_path(&image)).unwrap();
    let e = Db::options().read_only(true).open(&image).unwrap_err();
    assert!(e.to_string().contains("open the database once for writing"), "{e}");
    assert_eq!(Db::open(&image).unwrap().read().unwrap().table("t").unwrap().len(), 5);
}

/// A redo log left beside a database it does not belong to (the database
/// was deleted and created again, or copied over) is never replayed into
/// it: records carry the database's id.
#[test]
fn another_databases_log_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).open(&path).unwrap();
    for i in 0u32..5 {
        let mut w = db.write().unwrap();
        w.table("t").unwrap().put(i.to_be_bytes(), "old").unwrap();
        w.commit().unwrap();
    }
    drop(db);
    let log = std::fs::read(mmkit_kv::log_path(&path)).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(mmkit_kv::lock_path(&path)).unwrap();
    let db = Db::options().create(true).durability(Durability::Eventual).open(&path).unwrap();
    let mut w = db.write().unwrap();
    w.table("new").unwrap().put("k", "v").unwrap();
    w.commit().unwrap();
    db.sync().unwrap();
    drop(db);
    std::fs::write(mmkit_kv::log_path(&path), &log).unwrap();
    std::fs::remove_file(mmkit_kv::lock_path(&path)).unwrap();
    let db = Db::open(&path).unwrap();
    assert_eq!(db.read().unwrap().tables().unwrap(), ["new"]);
    db.check().unwrap();
}

/// A record header claiming tens of millions of pages, in a sparse log
/// long enough to hold them: the reader rejects the claim from the header
/// (no allocation of its size, no read of its images) and the open goes
/// on without the log.
#[test]
fn a_huge_record_claim_is_rejected_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).open(&path).unwrap();
    db.sync().unwrap();
    let mut w = db.write().unwrap();
    w.table("t").unwrap().put("k", "v").unwrap();
    w.commit().unwrap();
    drop(db);
    let log_path = mmkit_kv::log_path(&path);
    let mut log = std::fs::read(&log_path).unwrap();
    log[40..44].copy_from_slice(&50_000_000u32.to_le_bytes());
    std::fs::write(&log_path, &log).unwrap();
    std::fs::OpenOptions::new().write(true).open(&log_path).unwrap().set_len(300 << 30).unwrap();
    std::fs::remove_file(mmkit_kv::lock_path(&path)).unwrap();
    let db = Db::open(&path).unwrap();
    // The data file held the commit (the page cache kept it): whole.
    assert_eq!(db.read().unwrap().table("t").unwrap().get("k").unwrap(), Some(&b"v"[..]));
    db.check().unwrap();
}

/// A shrink with Eventual durability: the commit that cuts the free tail
/// is on disk (in the data file) before the file is truncated. After a
/// power cut the disk holds the short file and every meta up to the last
/// `fdatasync` (`stat().flushed`), not necessarily a later one; every
/// older meta counts pages past the end of the short file, so a cut commit
/// not yet on disk left only metas that cannot be written on.
#[test]
fn an_eventual_shrink_syncs_its_cut_before_truncating() {
    const PAGE: usize = mmkit_kv::PAGE;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Eventual).open(&path).unwrap();
    let mut w = db.write().unwrap();
    let mut t = w.table("t").unwrap();
    for i in 0u32..600 {
        t.put(i.to_be_bytes(), vec![i as u8; 3000]).unwrap();
    }
    w.table("keep").unwrap().put("a", "b").unwrap();
    w.commit().unwrap();
    let mut w = db.write().unwrap();
    w.table("t").unwrap().clear().unwrap();
    w.commit().unwrap();
    db.sync().unwrap();
    let metas_before = std::fs::read(&path).unwrap()[..4 * PAGE].to_vec();
    assert!(db.shrink().unwrap() > 0, "shrink cut nothing");
    let flushed = db.stat().unwrap().flushed;
    drop(db);

    // The disk after a power cut: the short file, with each meta slot
    // written after the last sync as it was before the shrink.
    let mut image = std::fs::read(&path).unwrap();
    for s in 0..4 {
        let m = &image[s * PAGE..s * PAGE + 32];
        if &m[8..16] == b"mmkit-kv" && u64::from_le_bytes(m[24..32].try_into().unwrap()) > flushed {
            image[s * PAGE..(s + 1) * PAGE].copy_from_slice(&metas_before[s * PAGE..(s + 1) * PAGE]);
        }
    }
    let lost = dir.path().join("lost");
    std::fs::write(&lost, &image).unwrap();

    let db = Db::options().durability(Durability::Eventual).open(&lost).unwrap();
    assert_eq!(db.read().unwrap().table("keep").unwrap().get("a").unwrap(), Some(&b"b"[..]));
    let mut w = db.write().unwrap();
    w.table("keep").unwrap().put("c", "d").expect("the recovered database takes writes");
    w.commit().expect("the recovered database takes commits");
    db.check().unwrap();
}

/// A power cut wrote a commit's meta back but not its new pages. A
/// read-only opener that is first after the reboot rejects that commit
/// but cannot wipe its meta, so it leaves the lock file not ready: the
/// next read-write opener recovers cold (verifying, and wiping the meta)
/// instead of trusting the page cache and publishing the newest meta with
/// a valid checksum, the very commit rejected.
#[test]
fn a_read_only_cold_open_leaves_recovery_to_the_next_writable_open() {
    read_only_cold_open_then_writable_open(false);
}

/// The same, with the read-only handle still open: the writable opener
/// is not alone, finds the lock file not ready, and recovers under the
/// writer mutex.
#[test]
fn a_writable_open_beside_a_read_only_cold_open_recovers_too() {
    read_only_cold_open_then_writable_open(true);
}

fn read_only_cold_open_then_writable_open(keep_read_only: bool) {
    const PAGE: usize = mmkit_kv::PAGE;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Eventual).open(&path).unwrap();
    let mut w = db.write().unwrap();
    w.table("t").unwrap().put("a", "1").unwrap();
    w.commit().unwrap();
    db.sync().unwrap();
    let mut w = db.write().unwrap();
    w.table("t").unwrap().put("b", "2").unwrap();
    let damaged = w.commit().unwrap();
    drop(db);
    // The damaged commit's pages read back as zeros (never written back).
    let mut bytes = std::fs::read(&path).unwrap();
    for pg in bytes.chunks_exact_mut(PAGE).skip(4) {
        if (pg[0] == 1 || pg[0] == 2) && u64::from_le_bytes(pg[8..16].try_into().unwrap()) == damaged {
            pg.fill(0);
        }
    }
    std::fs::write(&path, &bytes).unwrap();
    std::fs::remove_file(mmkit_kv::lock_path(&path)).unwrap();

    let ro = Db::options().read_only(true).open(&path).unwrap();
    assert!(ro.read().unwrap().txnid() < damaged, "the read-only cold open rejected the damaged commit");
    let ro = keep_read_only.then_some(ro);
    let db = Db::options().durability(Durability::Eventual).open(&path).unwrap();
    let r = db.read().unwrap();
    assert!(r.txnid() < damaged, "the read-write open published the rejected commit");
    assert_eq!(r.table("t").unwrap().get("a").unwrap(), Some(&b"1"[..]));
    drop(r);
    db.check().unwrap();
    drop(ro);
}
