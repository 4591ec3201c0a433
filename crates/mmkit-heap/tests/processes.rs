//! Real processes: the test binary re-runs itself with `MMKH_ROLE` set.
//! Workers are SIGKILLed at every named step of every kind of operation
//! (`MMKIT_HEAP_CRASH`, the `crash-points` feature) and at random moments;
//! the survivors go on, and `check` finds every structure consistent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmkit_heap::*;

const K: u64 = 1_000_003;

/// A child killed when dropped, so a failing test leaves none behind.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(role: &str, heap: &Path, envs: &[(&str, String)]) -> Kid {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env("MMKH_ROLE", role)
        .env("MMKH_HEAP", heap)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Kid(cmd.spawn().unwrap())
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

/// Entry point of every child process.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MMKH_ROLE") else { return };
    let heap = Heap::open(env("MMKH_HEAP")).unwrap();
    let seed: u64 = env("MMKH_SEED").parse().unwrap_or(1);
    let ops: u64 = env("MMKH_OPS").parse().unwrap_or(u64::MAX);
    match role.as_str() {
        "worker" => worker(&heap, seed, ops),
        "owner" => owner(&heap, env("MMKH_ID").parse().unwrap()),
        "reader" => reader(&heap),
        "dense-reader" => dense_reader(&heap),
        "opener" => (0..ops).for_each(|_| drop(Heap::open(env("MMKH_HEAP")).unwrap())),
        "insert" => {
            let k: u64 = env("MMKH_KEY").parse().unwrap();
            heap.map::<u64, u64>("ints").unwrap().insert(&k, &(k * K)).unwrap();
        }
        "vec-grow" => {
            let v = heap.vec::<u64>("big").unwrap();
            for k in 0..ops {
                v.push(&k).unwrap();
            }
        }
        "dense-run" => {
            // A large block from the start: every resize may grow in place.
            let m = heap.map_with_capacity::<u64, u64>("dense", 1000).unwrap();
            for k in 0..ops {
                for k in dense_keys(k, seed == 1) {
                    m.insert(&k, &(k * K)).unwrap();
                }
            }
        }
        "insert-run" => {
            let (ints, strs) =
                (heap.map::<u64, u64>("ints").unwrap(), heap.map::<str, [u8]>("strs").unwrap());
            for k in 0..ops {
                ints.insert(&k, &(k * K)).unwrap();
                strs.insert(&key(k), &blob(k)).unwrap();
            }
        }
        _ => std::process::exit(2),
    }
    std::process::exit(0);
}

fn rng(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// The value stored for string key `n`: its length and bytes derive from
/// `n`, so any torn or misplaced value is detected.
fn blob(n: u64) -> Vec<u8> {
    (0..(n * 37 % 200) as usize).map(|i| (n as usize * 31 + i) as u8).collect()
}

fn key(n: u64) -> String {
    format!("key-{n}-{}", "x".repeat((n % 40) as usize))
}

/// Every kind of operation, at random, validating what it reads.
fn worker(heap: &Heap, seed: u64, ops: u64) {
    let mut s = seed.max(1);
    let ints = heap.map::<u64, u64>("ints").unwrap();
    let strs = heap.map::<str, [u8]>("strs").unwrap();
    let v = heap.vec::<u64>("vec").unwrap();
    let text = heap.string("text").unwrap();
    let cell = heap.find_or_init("cell", || [0u64; 8]).unwrap();
    let mut n = 0;
    while n < ops {
        n += 1;
        let r = rng(&mut s);
        let k = rng(&mut s) % 3000;
        match r % 16 {
            0..=2 => {
                ints.insert(&k, &(k * K)).unwrap();
            }
            3 => {
                // A batch: long enough to hold every lock for a while.
                let n = 1 + rng(&mut s) % 600;
                let pairs: Vec<(u64, u64)> = (k..k + n).map(|k| (k % 3000, k % 3000 * K)).collect();
                if r % 3 == 0 {
                    ints.reserve(n as usize * 4).unwrap();
                }
                ints.insert_many(&pairs).unwrap();
            }
            4 => {
                ints.remove(&k).unwrap();
            }
            5..=6 => {
                if let Some(x) = ints.get(&k).unwrap() {
                    assert_eq!(x, k * K, "torn map value");
                }
            }
            7 => {
                strs.insert(&key(k % 500), &blob(k % 500)).unwrap();
            }
            8 => {
                if let Some(b) = strs.remove(&key(k % 500)).unwrap() {
                    assert_eq!(b, blob(k % 500));
                }
            }
            9 => {
                if let Some(b) = strs.get(&key(k % 500)).unwrap() {
                    assert_eq!(b, blob(k % 500), "torn string value");
                }
            }
            10 => {
                if rng(&mut s) % 5 == 0 {
                    v.extend_from_slice(&[k * K; 40]).unwrap();
                } else {
                    v.push(&(k * K)).unwrap();
                }
            }
            11 => {
                let len = v.len().unwrap();
                if len > 0 {
                    v.set((k as usize) % len, &(k * K)).unwrap();
                    if let Some(x) = v.get((r as usize / 7) % len).unwrap() {
                        assert_eq!(x % K, 0, "torn vector element");
                    }
                }
                if len > 5000 {
                    v.truncate(100).unwrap();
                }
            }
            12 => {
                let new = cell.update(|c| {
                    assert!(c.iter().all(|&x| x == c[0]), "torn box");
                    [c[0] + 1; 8]
                });
                new.unwrap();
            }
            13 => {
                if rng(&mut s) % 3 == 0 {
                    text.set(&key(k)).unwrap();
                } else if text.len().unwrap() < 2000 {
                    text.push_str("abc").unwrap();
                } else {
                    text.clear().unwrap();
                }
            }
            14 => {
                // Large blocks: run split and merge, segment growth.
                // Now and then, more than the heap holds: it must grow.
                let size = if k % 20 == 0 && heap.size() < 32 << 20 { heap.size() } else { 9000 + k * 50 };
                let b = heap.alloc(size, 64).unwrap();
                heap.write(Offset::<u64>::from_raw(b.raw()), &k).unwrap();
                heap.free(b, size, 64).unwrap();
            }
            _ => {
                // Named objects come and go.
                let name = format!("obj-{}", k % 40);
                if rng(&mut s) % 4 == 0 {
                    match heap.remove(&name) {
                        // Someone alive is initializing it: that is refused.
                        Ok(_) | Err(Error::Invalid { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    // Another process may remove it at any moment.
                    match heap.find_or_init(&name, || k * K).and_then(|b| b.get()) {
                        Ok(v) => assert_eq!(v % K, 0),
                        Err(Error::Removed { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
    }
}

/// After a crash: every structure is consistent, values are intact, and
/// the repair reclaims whatever the dead process leaked.
fn verify(heap: &Heap, what: &str, max_leaks: u64) -> CheckReport {
    let r = heap.check(false).unwrap();
    assert!(r.errors.is_empty(), "{what}: {:#?}", r.errors);
    let st = &r.stat;
    assert_eq!(st.header + st.used + st.free + st.overhead, st.size, "{what}: bytes unaccounted");
    assert!(r.leaked_blocks <= max_leaks, "{what}: {} blocks leaked: {r:#?}", r.leaked_blocks);
    for (k, v) in heap.map::<u64, u64>("ints").unwrap().entries().unwrap() {
        assert_eq!(v, k * K, "{what}");
    }
    for (k, v) in heap.map::<str, [u8]>("strs").unwrap().entries().unwrap() {
        let n: u64 = k.split('-').nth(1).unwrap().parse().unwrap();
        assert_eq!(v, blob(n), "{what}");
    }
    assert!(heap.vec::<u64>("vec").unwrap().to_vec().unwrap().iter().all(|x| x % K == 0), "{what}");
    let c = heap.find_or_init("cell", || [0u64; 8]).unwrap().get().unwrap();
    assert!(c.iter().all(|&x| x == c[0]), "{what}: torn box");
    let repaired = heap.check(true).unwrap();
    assert!(repaired.is_clean(), "{what}: after repair {:#?}", repaired.errors);
    r
}

fn new_heap(dir: &Path) -> (PathBuf, Heap) {
    let p = dir.join("heap");
    let h = HeapOptions::new().size(256 << 10).max_size(1 << 30).create(&p).unwrap();
    h.map::<u64, u64>("ints").unwrap();
    (p, h)
}

const POINTS: &[&str] = &[
    "txn.commit",
    "alloc.pop",
    "alloc.bump",
    "alloc.new_slab",
    "free.link",
    "run.take",
    "run.grown",
    "run.merge",
    "registry.grow",
    "registry.alloc",
    "registry.init",
    "registry.remove",
    "vec.set",
    "vec.push",
    "vec.grow",
    "vec.switched",
    "vec.assign",
    "map.entry",
    "map.claimed",
    "map.published",
    "map.busy",
    "map.overwrite",
    "map.removed",
    "map.resize_alloc",
    "map.desc",
    "map.moved",
    "map.finished",
    "map.batch",
    "box.write",
];

/// A worker killed at every named step, early and late: each time, this
/// process goes on using every structure at once, and `check` is clean
/// after the repair.
#[test]
fn sigkill_at_every_step_of_every_operation() {
    let mut reached = Vec::new();
    let mut worst = Duration::ZERO;
    for (i, point) in POINTS.iter().enumerate() {
        for n in [1u64, 7] {
            let dir = tempfile::tempdir().unwrap();
            let (p, heap) = new_heap(dir.path());
            let mut kid = spawn(
                "worker",
                &p,
                &[
                    ("MMKIT_HEAP_CRASH", format!("{point}:{n}")),
                    ("MMKH_SEED", (i as u64 * 31 + n).to_string()),
                    ("MMKH_OPS", "4000".into()),
                ],
            );
            let status = kid.0.wait().unwrap();
            let killed = std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL);
            assert!(killed || status.success(), "{point}:{n}: worker failed: {status}");
            if killed && n == 1 {
                reached.push(*point);
            }
            // The survivor goes on at once with every structure.
            let t = Instant::now();
            heap.map::<u64, u64>("ints").unwrap().insert(&5, &(5 * K)).unwrap();
            heap.map::<str, [u8]>("strs").unwrap().insert(&key(3), &blob(3)).unwrap();
            heap.vec::<u64>("vec").unwrap().push(&K).unwrap();
            heap.find_or_init("cell", || [0u64; 8]).unwrap().update(|c| [c[0] + 1; 8]).unwrap();
            heap.string("text").unwrap().push_str("z").unwrap();
            let b = heap.alloc(20_000, 8).unwrap();
            heap.free(b, 20_000, 8).unwrap();
            worst = worst.max(t.elapsed());
            verify(&heap, &format!("{point}:{n}"), 2);
        }
    }
    for point in POINTS {
        assert!(reached.contains(point), "no worker died at {point}");
    }
    eprintln!("slowest first use after a kill: {worst:?}");
}

/// A writer killed between claiming a slot and publishing it, while a
/// writer of another stripe places a key with the same home slot past the
/// busy one: the repair turns the claimed slot into a tombstone, never back
/// into an empty slot that would end the probe before the other key.
#[test]
fn a_dead_claim_never_hides_keys_placed_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let (p, heap) = new_heap(dir.path());
    let ints = heap.map::<u64, u64>("ints").unwrap();
    let cap = ints.capacity().unwrap() as u64;
    // Integer keys are placed by value, their digits of log2(cap) bits
    // summed (docs/heap-format.md): `a` and `a - 1 + cap` share a home
    // slot (asserted by map::tests::home_slots_keep_runs_and_spread_strides).
    // Stripe = (hash_bytes >> 40) % 64.
    let stripe = |k: u64| (hash_bytes(&k.to_le_bytes()) >> 40) % 64;
    let (k1, k2) = (1u64..).map(|a| (a, a - 1 + cap)).find(|&(a, b)| stripe(a) != stripe(b)).unwrap();
    let mut kid =
        spawn("insert", &p, &[("MMKH_KEY", k1.to_string()), ("MMKIT_HEAP_CRASH", "map.claimed:1".into())]);
    let status = kid.0.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    assert_eq!(ints.insert(&k2, &(k2 * K)).unwrap(), None);
    // The lookup meets the busy slot, repairs its stripe, and goes on.
    assert_eq!(ints.get(&k2).unwrap(), Some(k2 * K));
    assert_eq!(ints.get(&k1).unwrap(), None);
    assert_eq!(ints.insert(&k2, &(k2 * K)).unwrap(), Some(k2 * K), "no second copy of k2");
    assert_eq!(ints.len().unwrap(), 1);
    verify(&heap, "dead claim", 0);
}

/// A mover killed between a key's two writes (the copy published in the
/// new table, the old slot not yet marked moved), early and late in the
/// growth of maps of inline and of out-of-line entries: once the
/// migration is finished, every key is there exactly once.
#[test]
fn a_mover_killed_mid_chunk_leaves_no_second_copy() {
    for n in [1u64, 40, 700, 3000] {
        let dir = tempfile::tempdir().unwrap();
        let (p, heap) = new_heap(dir.path());
        let mut kid = spawn(
            "insert-run",
            &p,
            &[("MMKIT_HEAP_CRASH", format!("map.moved:{n}")), ("MMKH_OPS", "6000".into())],
        );
        let status = kid.0.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "moved:{n}");
        let (ints, strs) = (heap.map::<u64, u64>("ints").unwrap(), heap.map::<str, [u8]>("strs").unwrap());
        // More keys, so the survivor finishes the migration.
        for k in 10_000..12_000 {
            ints.insert(&k, &(k * K)).unwrap();
            strs.insert(&key(k), &blob(k)).unwrap();
        }
        let mut keys: Vec<u64> = ints.entries().unwrap().into_iter().map(|(k, _)| k).collect();
        keys.sort_unstable();
        let first = keys.iter().take_while(|&&k| k < 10_000).count();
        assert!(
            keys[..first].iter().enumerate().all(|(i, &k)| i as u64 == k),
            "moved:{n}: a key lost or twice"
        );
        assert_eq!(keys.len(), first + 2000, "moved:{n}");
        assert_eq!(ints.len().unwrap(), keys.len(), "moved:{n}");
        let mut names: Vec<String> = strs.entries().unwrap().into_iter().map(|(k, _)| k).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "moved:{n}: a string key twice");
        assert_eq!(strs.len().unwrap(), all, "moved:{n}");
        verify(&heap, &format!("moved:{n}"), 2);
    }
}

/// A pusher killed inside the allocator's transaction that grows its
/// buffer in place, and between that commit and the new capacity: the
/// vector holds exactly what was pushed before, takes more, and `check`
/// finds the buffer and the capacity in agreement, with nothing leaked.
#[test]
fn a_vector_growing_in_place_survives_a_kill_at_each_step() {
    for point in ["run.extend", "vec.grown"] {
        for n in [1u64, 3] {
            let dir = tempfile::tempdir().unwrap();
            let (p, heap) = new_heap(dir.path());
            let what = format!("{point}:{n}");
            let env = [("MMKIT_HEAP_CRASH", what.clone()), ("MMKH_OPS", "40000".into())];
            let status = spawn("vec-grow", &p, &env).0.wait().unwrap();
            assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{what}");
            let v = heap.vec::<u64>("big").unwrap();
            let got = v.to_vec().unwrap();
            assert!(got.len() >= 1024, "{what}: {} elements, grown in place only past 8 KiB", got.len());
            assert!(got.iter().enumerate().all(|(i, &k)| i as u64 == k), "{what}: not the prefix pushed");
            assert!(v.capacity().unwrap() >= got.len(), "{what}");
            for k in got.len() as u64..50_000 {
                v.push(&k).unwrap();
            }
            assert_eq!(v.to_vec().unwrap(), (0..50_000).collect::<Vec<u64>>(), "{what}");
            verify(&heap, &what, 0);
        }
    }
}

/// Key `k` of the dense run, and with `far` every 64th time a key far
/// past it: those move when the table grows in place, the others stay.
fn dense_keys(k: u64, far: bool) -> impl Iterator<Item = u64> {
    std::iter::once(k).chain((far && k % 64 == 0).then_some(k | 1 << 33))
}

/// A writer killed at each step of a map table's growth in place, early
/// and late: dense keys (the allocator's extension, the grown block
/// before the switch, the switch that moves nothing), and dense keys with
/// a few far ones (the switch, a move, the end of the migration). The
/// survivor finds exactly what was inserted, goes on to grow the table
/// further, and `check` accounts for every byte with no leak.
#[test]
fn a_map_growing_in_place_survives_a_kill_at_each_step() {
    let cases = [
        ("run.extend", 1, false),
        ("run.extend", 3, false),
        ("map.grown", 1, false),
        ("map.grown", 3, true),
        ("map.desc", 1, false),
        ("map.desc", 3, false),
        ("map.desc", 1, true),
        ("map.desc", 2, true),
        ("map.moved", 1, true),
        ("map.moved", 5, true),
        ("map.finished", 1, true),
        ("map.finished", 2, true),
    ];
    for (point, n, far) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (p, heap) = new_heap(dir.path());
        let what = format!("{point}:{n} far {far}");
        let env = [
            ("MMKIT_HEAP_CRASH", format!("{point}:{n}")),
            ("MMKH_OPS", "30000".into()),
            ("MMKH_SEED", u64::from(far).to_string()),
        ];
        let status = spawn("dense-run", &p, &env).0.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{what}");
        let m = heap.map::<u64, u64>("dense").unwrap();
        let got = m.entries().unwrap();
        assert!(got.iter().all(|&(k, v)| v == k * K), "{what}: a torn value");
        assert!(got.len() >= 1536, "{what}: {} keys, before the first resize", got.len());
        assert_eq!(m.len().unwrap(), got.len(), "{what}");
        let all: Vec<u64> = (0..40_000).flat_map(|k| dense_keys(k, far)).collect();
        for k in &all {
            m.insert(k, &(k * K)).unwrap();
        }
        for k in &all {
            assert_eq!(m.get(k).unwrap(), Some(k * K), "{what}: key {k}");
        }
        assert_eq!(m.len().unwrap(), all.len(), "{what}");
        verify(&heap, &what, 0);
    }
}

/// Several workers at once, SIGKILLed at random moments and respawned;
/// the others never stop, and the heap is consistent at the end.
#[test]
fn random_sigkills_among_concurrent_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (p, heap) = new_heap(dir.path());
    let mut seed = 0x9e37_79b9u64 ^ std::process::id() as u64;
    let mut kids: Vec<Kid> =
        (0..3).map(|i| spawn("worker", &p, &[("MMKH_SEED", (i + 1).to_string())])).collect();
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut kills = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5 + rng(&mut seed) % 40));
        let i = (rng(&mut seed) % kids.len() as u64) as usize;
        for k in &mut kids {
            assert!(k.0.try_wait().unwrap().is_none(), "a worker failed on its own");
        }
        let _ = kids[i].0.kill();
        let _ = kids[i].0.wait();
        kills += 1;
        kids[i] = spawn("worker", &p, &[("MMKH_SEED", rng(&mut seed).to_string())]);
        // This process keeps working in between.
        let ints = heap.map::<u64, u64>("ints").unwrap();
        let k = rng(&mut seed) % 3000;
        ints.insert(&k, &(k * K)).unwrap();
        for k in 0..50 {
            if let Some(v) = ints.get(&k).unwrap() {
                assert_eq!(v, k * K);
            }
        }
    }
    for mut k in kids.drain(..) {
        let _ = k.0.kill();
        let _ = k.0.wait();
    }
    verify(&heap, "after random kills", 2 * kills);
    assert!(kills > 10);
}

/// Owners of disjoint key ranges insert, update, remove and read in the
/// same map and vector at once; the result is exact.
fn owner(heap: &Heap, id: u64) {
    let m = heap.map::<u64, u64>("ints").unwrap();
    let v = heap.vec::<u64>("vec").unwrap();
    let base = id * 100_000;
    for k in base..base + 3000 {
        assert_eq!(m.insert(&k, &k).unwrap(), None);
        v.push(&k).unwrap();
    }
    for k in (base..base + 3000).step_by(2) {
        assert_eq!(m.remove(&k).unwrap(), Some(k));
    }
    for k in (base + 1..base + 3000).step_by(2) {
        assert_eq!(m.insert(&k, &(k * K)).unwrap(), Some(k));
        assert_eq!(m.get(&k).unwrap(), Some(k * K));
    }
}

#[test]
fn concurrent_owners_get_exact_results() {
    let dir = tempfile::tempdir().unwrap();
    let (p, heap) = new_heap(dir.path());
    let kids: Vec<Kid> = (0..3).map(|i| spawn("owner", &p, &[("MMKH_ID", i.to_string())])).collect();
    for mut k in kids {
        assert!(k.0.wait().unwrap().success());
    }
    let m = heap.map::<u64, u64>("ints").unwrap();
    assert_eq!(m.len().unwrap(), 3 * 1500);
    let mut entries = m.entries().unwrap();
    entries.sort();
    let want: Vec<(u64, u64)> = (0..3u64)
        .flat_map(|i| (i * 100_000 + 1..i * 100_000 + 3000).step_by(2).map(|k| (k, k * K)))
        .collect();
    assert_eq!(entries, want);
    let mut pushed = heap.vec::<u64>("vec").unwrap().to_vec().unwrap();
    pushed.sort();
    let mut want: Vec<u64> = (0..3u64).flat_map(|i| i * 100_000..i * 100_000 + 3000).collect();
    want.sort();
    assert_eq!(pushed, want);
    assert!(heap.check(false).unwrap().is_clean());
}

/// Opening a heap while another process grows it: the file may grow
/// between the opener's measuring it and its reading the published size,
/// which is then ahead of the length measured; that is growth, not
/// corruption.
#[test]
fn opening_while_another_process_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (p, heap) = new_heap(dir.path());
    let mut kids: Vec<Kid> = (0..2).map(|_| spawn("opener", &p, &[("MMKH_OPS", "1000".into())])).collect();
    let mut exits = Vec::new();
    while !kids.is_empty() {
        // One slab at a time, up to half the reservation.
        if heap.size() < 512 << 20 {
            heap.grow_to(heap.size() + 1).unwrap();
        }
        kids.retain_mut(|k| match k.0.try_wait().unwrap() {
            Some(status) => {
                exits.push(status);
                false
            }
            None => true,
        });
    }
    assert!(exits.iter().all(|s| s.success()), "every open succeeded: {exits:?}");
    assert!(heap.check(false).unwrap().is_clean());
}

/// Readers keep reading while this process grows the map (rehashes) and
/// the segment (fallocate) many times over; they map the new range on
/// first touch and never see a wrong value.
fn reader(heap: &Heap) {
    let m = heap.map::<u64, u64>("ints").unwrap();
    let v = heap.vec::<u64>("vec").unwrap();
    let done = heap.find_or_init("done", || 0u64).unwrap();
    let mut s = 7u64;
    loop {
        let finished = done.get().unwrap() == 1;
        for _ in 0..1000 {
            let k = rng(&mut s) % 200_000;
            if let Some(x) = m.get(&k).unwrap() {
                assert_eq!(x, k * K);
            }
        }
        if let Some(x) = v.get((rng(&mut s) % 1000) as usize).unwrap() {
            assert_eq!(x % K, 0);
        }
        if finished {
            for k in 0..200_000 {
                assert_eq!(m.get(&k).unwrap(), Some(k * K), "key {k} missing after growth");
            }
            return;
        }
    }
}

/// Looks up keys the writer of `dense` has published as inserted (every
/// key below `progress`, far ones included), until it is done: none may
/// be missing at any moment of a resize.
fn dense_reader(heap: &Heap) {
    let m = heap.map::<u64, u64>("dense").unwrap();
    let progress = heap.find_or_init("progress", || 0u64).unwrap();
    let mut s = 11u64;
    let mut looked = 0u64;
    loop {
        let p = progress.get().unwrap();
        if p == u64::MAX {
            assert!(looked > 10_000, "only {looked} lookups");
            return;
        }
        for _ in 0..200 {
            // Mostly the far keys, which are the ones that move.
            let k = (rng(&mut s) % p.max(1)) & !63;
            for k in dense_keys(k, true).filter(|_| p > 0) {
                assert_eq!(m.get(&k).unwrap(), Some(k * K), "key {k} missing at progress {p}");
                looked += 1;
            }
        }
    }
}

/// Readers in other processes look keys up while this one grows a map in
/// place (dense keys, a few far ones that move): every key already
/// inserted is found at every moment.
#[test]
fn lookups_never_miss_while_a_table_grows_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (p, heap) = new_heap(dir.path());
    let progress = heap.find_or_init("progress", || 0u64).unwrap();
    let m = heap.map_with_capacity::<u64, u64>("dense", 1000).unwrap();
    let kids: Vec<Kid> = (0..2).map(|_| spawn("dense-reader", &p, &[])).collect();
    let start = heap.size();
    for k in 0..300_000u64 {
        for k in dense_keys(k, true) {
            m.insert(&k, &(k * K)).unwrap();
        }
        if k % 256 == 255 {
            progress.set(&(k + 1)).unwrap();
        }
    }
    progress.set(&u64::MAX).unwrap();
    for mut k in kids {
        assert!(k.0.wait().unwrap().success(), "a reader failed");
    }
    // Grown in place: the heap never held two tables at once (a 16 MiB
    // table, and 8 MiB more for the one before it if moved).
    assert!(heap.size() < start + (20 << 20), "{} -> {}", start, heap.size());
    verify(&heap, "dense growth", 0);
}

#[test]
fn growth_while_others_read() {
    let dir = tempfile::tempdir().unwrap();
    let (p, heap) = new_heap(dir.path());
    heap.find_or_init("done", || 0u64).unwrap();
    let start_size = heap.size();
    let kids: Vec<Kid> = (0..2).map(|_| spawn("reader", &p, &[])).collect();
    let m = heap.map::<u64, u64>("ints").unwrap();
    let v = heap.vec::<u64>("vec").unwrap();
    for k in 0..200_000u64 {
        m.insert(&k, &(k * K)).unwrap();
        if k % 10 == 0 {
            v.push(&(k * K)).unwrap();
        }
    }
    heap.find::<u64>("done").unwrap().unwrap().set(&1).unwrap();
    for mut k in kids {
        assert!(k.0.wait().unwrap().success(), "a reader failed");
    }
    assert!(heap.size() > 16 * start_size, "{} -> {}", start_size, heap.size());
    assert!(heap.check(false).unwrap().is_clean());
}
