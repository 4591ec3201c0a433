//! The API end to end in one process, and bad input.

use std::time::Duration;

use mmkit_heap::*;

fn heap(dir: &tempfile::TempDir) -> Heap {
    HeapOptions::new().size(256 << 10).max_size(256 << 20).create(dir.path().join("h")).unwrap()
}

fn clean(h: &Heap) -> CheckReport {
    let r = clean_but_leaks(h);
    assert!(r.is_clean(), "{:#?}", r.errors);
    r
}

#[test]
fn objects_round_trip_across_handles() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let m = h.map::<u64, u64>("m").unwrap();
    for i in 0..1000 {
        assert_eq!(m.insert(&i, &(i * 2)).unwrap(), None);
    }
    assert_eq!(m.insert(&5, &7).unwrap(), Some(10));
    assert_eq!(m.len().unwrap(), 1000);
    let v = h.vec::<u32>("v").unwrap();
    v.extend_from_slice(&[1, 2, 3]).unwrap();
    h.string("s").unwrap().set("héllo").unwrap();
    let b = h.find_or_init("b", || [1u8; 100]).unwrap();
    b.update(|mut x| {
        x[0] = 9;
        x
    })
    .unwrap();

    let again = Heap::open(dir.path().join("h")).unwrap();
    assert_eq!(again.map::<u64, u64>("m").unwrap().get(&5).unwrap(), Some(7));
    assert_eq!(again.vec::<u32>("v").unwrap().to_vec().unwrap(), [1, 2, 3]);
    assert_eq!(again.string("s").unwrap().get().unwrap(), "héllo");
    assert_eq!(again.find::<[u8; 100]>("b").unwrap().unwrap().get().unwrap()[0], 9);
    let names: Vec<String> = again.objects().unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names.len(), 4);
    let r = clean(&again);
    assert!(r.stat.used > 0 && r.stat.objects.len() == 4);
}

#[test]
fn types_are_checked_by_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    h.find_or_init("x", || 1u64).unwrap();
    assert!(matches!(h.find::<i64>("x"), Err(Error::TypeMismatch { .. })));
    assert!(matches!(h.vec::<u64>("x"), Err(Error::TypeMismatch { .. })));
    assert!(matches!(h.map::<u64, u32>("x"), Err(Error::TypeMismatch { .. })));
    h.map::<u64, u64>("m").unwrap();
    assert!(matches!(h.map::<u64, u32>("m"), Err(Error::TypeMismatch { .. })));
    assert!(h.find::<u64>("missing").unwrap().is_none());
    assert!(matches!(h.vec::<u8>(""), Err(Error::InvalidName { .. })));
    assert!(matches!(h.vec::<u8>(&"x".repeat(97)), Err(Error::InvalidName { .. })));
}

#[test]
fn remove_frees_everything_and_stale_handles_fail() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let before = clean(&h).stat.used;
    let m = h.map::<str, [u8]>("m").unwrap();
    for i in 0..300 {
        m.insert(&format!("key-{i}"), &vec![1u8; i % 50]).unwrap();
    }
    let v = h.vec::<u64>("v").unwrap();
    v.extend_from_slice(&[7; 5000]).unwrap();
    assert!(h.remove("m").unwrap());
    assert!(h.remove("v").unwrap());
    assert!(!h.remove("v").unwrap());
    assert!(matches!(m.get("key-1"), Err(Error::Removed { .. })));
    assert!(matches!(v.push(&1), Err(Error::Removed { .. })));
    // Removed headers stay (retired) until a repair frees them; then only
    // the registry table stays.
    clean(&h);
    let repaired = h.check(true).unwrap();
    assert!(repaired.repairs.iter().any(|r| r.contains("removed object")), "{:?}", repaired.repairs);
    let after = clean(&h).stat.used;
    assert!(after <= before + 16 * 256, "{before} -> {after}");
}

#[test]
fn allocator_grows_the_segment_and_reports_full() {
    let dir = tempfile::tempdir().unwrap();
    let h = HeapOptions::new().size(256 << 10).max_size(4 << 20).create(dir.path().join("h")).unwrap();
    let mut blocks = Vec::new();
    let err = loop {
        match h.alloc(100_000, 8) {
            Ok(b) => blocks.push(b),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    assert!(blocks.len() >= 30, "{}", blocks.len());
    assert!(h.size() > 3 << 20);
    for b in blocks {
        h.free(b, 100_000, 8).unwrap();
    }
    let r = clean(&h);
    assert_eq!(r.stat.fragmentation, 0.0);
    assert_eq!(r.stat.used, 0);
}

/// A large block grows where it lies into a free run after it (split
/// when longer) or into the uncarved top, and refuses when the pages
/// after it are taken; the grown block frees with its new size.
#[test]
fn blocks_grow_in_place_into_free_pages_only() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let (a, b, c) = (h.alloc(20_000, 8).unwrap(), h.alloc(40_000, 8).unwrap(), h.alloc(20_000, 8).unwrap());
    h.write(Offset::<u64>::from_raw(a.raw() + 19_992), &7).unwrap();
    assert!(!h.grow_in_place(a, 20_000, 30_000, 8).unwrap(), "b is after a");
    h.free(b, 40_000, 8).unwrap();
    assert!(h.grow_in_place(a, 20_000, 30_000, 8).unwrap(), "into part of b's run");
    assert!(h.grow_in_place(a, 30_000, 60_000, 8).unwrap(), "into the rest of it");
    assert!(!h.grow_in_place(a, 60_000, 70_000, 8).unwrap(), "c is after a now");
    assert_eq!(h.read(Offset::<u64>::from_raw(a.raw() + 19_992)).unwrap(), 7);
    assert!(h.grow_in_place(c, 20_000, 300_000, 8).unwrap(), "c ends the heap: it grows the segment");
    assert!(h.free(a, 20_000, 8).unwrap_err().is_corrupt(), "a has its new size");
    assert!(h.grow_in_place(a, 20_000, 90_000, 8).unwrap_err().is_corrupt(), "nor its old one here");
    assert!(!h.grow_in_place(h.alloc(100, 8).unwrap(), 100, 50_000, 8).unwrap(), "small blocks do not grow");
    let r = clean_but_leaks(&h);
    assert_eq!(r.leaked_blocks, 3, "a, c and the small block, reachable from no object");
    h.free(a, 60_000, 8).unwrap();
    h.free(c, 300_000, 8).unwrap();
    assert_eq!(clean_but_leaks(&h).leaked_blocks, 1);
}

/// A map table grows in place into a free run that held other data: the
/// slots it gains are zeroed (garbage there would read as keys), the
/// table does not move, and dense keys need no migration at all.
#[test]
fn a_map_table_grows_in_place_over_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let m = h.map_with_capacity::<u64, u64>("m", 1000).unwrap();
    let junk = h.alloc(1 << 20, 64).unwrap();
    for i in (0..1 << 20).step_by(8) {
        h.write(Offset::<u64>::from_raw(junk.raw() + i), &u64::MAX).unwrap();
    }
    h.free(junk, 1 << 20, 64).unwrap();
    let size = h.size();
    for k in 0..20_000u64 {
        m.insert(&k, &(k * 3)).unwrap();
    }
    assert_eq!(m.capacity().unwrap(), 32_768);
    assert_eq!(h.size(), size, "the table took the freed run: the heap did not grow");
    assert_eq!(m.len().unwrap(), 20_000);
    let mut all = m.entries().unwrap();
    all.sort_unstable();
    assert!(all.iter().enumerate().all(|(i, &(k, v))| k == i as u64 && v == k * 3), "a key lost or made up");
    assert!(h.check(false).unwrap().is_clean());
}

/// A table at the top of a heap at its largest size cannot grow in place,
/// but a free run lower down holds the larger table: the resize moves
/// there instead of failing every insert.
#[test]
fn a_table_that_cannot_grow_in_place_moves_into_a_free_run() {
    let dir = tempfile::tempdir().unwrap();
    let h = HeapOptions::new().size(256 << 10).max_size(2 << 20).create(dir.path().join("h")).unwrap();
    let room = h.alloc(1 << 20, 64).unwrap();
    let m = h.map_with_capacity::<u64, u64>("m", 3000).unwrap();
    h.free(room, 1 << 20, 64).unwrap();
    for k in 0..20_000u64 {
        m.insert(&k, &(k * 3)).unwrap();
    }
    assert_eq!(m.capacity().unwrap(), 32_768);
    assert!((0..20_000u64).all(|k| m.get(&k).unwrap() == Some(k * 3)));
    clean(&h);
}

/// Integer keys whose values are stored out of line sit in their home
/// lines as inline ones do: `check` reads their keys from the entries and
/// finds the dense mark right, before and after a growth in place.
#[test]
fn a_dense_map_of_out_of_line_values_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let m = h.map_with_capacity::<u64, [u8]>("blobs", 300).unwrap();
    for k in 0..2000u64 {
        m.insert(&k, &[k as u8; 40]).unwrap();
        if k == 100 || k == 1999 {
            clean(&h);
        }
    }
    assert_eq!(m.get(&1234).unwrap(), Some(vec![1234u64 as u8; 40]));
}

/// A key moved by a resize and then removed, while the resize is still
/// under way and nobody writes: its lookup answers at once (it used to
/// meet the key's moved slot round after round until it gave up).
#[test]
fn a_key_moved_then_removed_is_absent_during_a_resize() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let m = h.map_with_capacity::<str, u64>("m", 12_000).unwrap();
    let cap = m.capacity().unwrap();
    let mut n = 0u64;
    while m.capacity().unwrap() == cap {
        m.insert(&format!("key {n}"), &n).unwrap();
        n += 1;
    }
    // Each remove first moves a chunk of the old table.
    for k in 0..10 {
        assert_eq!(m.remove(&format!("key {k}")).unwrap(), Some(k));
    }
    for k in 0..n {
        let want = (k >= 10).then_some(k);
        assert_eq!(m.get(&format!("key {k}")).unwrap(), want, "key {k}");
    }
    clean(&h);
}

fn clean_but_leaks(h: &Heap) -> CheckReport {
    let r = h.check(false).unwrap();
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    let s = &r.stat;
    assert_eq!(s.header + s.used + s.free + s.overhead, s.size, "every byte accounted: {s:?}");
    r
}

/// A vector at the top of the heap grows without moving. Moving would
/// leave each earlier buffer free below the last one (16 KiB + 32 KiB +
/// ... : about as many bytes as the last buffer); growing in place leaves
/// only the free blocks of the slabs its small buffers came from, and the
/// gap it may have started in.
#[test]
fn a_vector_grows_in_place_and_reserves() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let v = h.vec::<u64>("v").unwrap();
    let below_top = |r: &CheckReport| r.stat.free - r.stat.largest_free;
    for i in 0..100_000 {
        v.push(&i).unwrap();
    }
    let r = clean(&h);
    let buffer = r.stat.objects[0].bytes;
    assert!(below_top(&r) < buffer, "{:?}", r.stat);
    v.reserve(400_000).unwrap();
    assert!(v.capacity().unwrap() >= 500_000);
    assert_eq!(v.len().unwrap(), 100_000);
    assert_eq!(below_top(&clean(&h)), below_top(&r), "reserve grew it in place too");
    assert!(v.reserve(usize::MAX).is_err());
    assert_eq!(v.to_vec().unwrap(), (0..100_000).collect::<Vec<u64>>());
}

#[test]
fn bad_frees_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let a = h.alloc(40, 8).unwrap();
    assert!(h.free(a, 100, 8).unwrap_err().is_corrupt());
    assert!(h.free(Offset::from_raw(a.raw() + 8), 40, 8).unwrap_err().is_corrupt());
    h.free(a, 40, 8).unwrap();
    assert!(h.free(a, 40, 8).unwrap_err().is_corrupt(), "double free");
    let big = h.alloc(50_000, 64).unwrap();
    assert_eq!(big.raw() % 64, 0);
    assert!(h.free(big, 50_001, 64).unwrap_err().is_corrupt());
    h.free(big, 50_000, 64).unwrap();
    assert!(h.alloc(8, 128).is_err());
    assert!(h.alloc(8, 3).is_err());
    clean(&h);
}

#[test]
fn typed_offsets_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let o = h.alloc_value(&0x1234u64).unwrap();
    assert_eq!(h.read(o).unwrap(), 0x1234);
    h.write(o, &5).unwrap();
    assert_eq!(h.read(o).unwrap(), 5);
    assert!(h.read(Offset::<u64>::from_raw(o.raw() + 4)).is_err(), "misaligned");
    assert!(h.read(Offset::<u64>::from_raw(8)).is_err(), "inside the header");
    assert!(h.read(Offset::<u64>::from_raw(1 << 40)).is_err(), "past the end");
    h.free_value(o).unwrap();
}

#[test]
fn open_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("not-a-heap");
    std::fs::write(&p, vec![7u8; 100_000]).unwrap();
    let e = Heap::open(&p).unwrap_err();
    assert!(matches!(e, Error::NotAHeap { .. }), "{e}");
    assert!(e.to_string().contains("not an mmkit heap"));
    std::fs::write(&p, b"short").unwrap();
    assert!(matches!(Heap::open(&p), Err(Error::NotAHeap { .. })));
    let e = Heap::open(dir.path().join("missing")).unwrap_err();
    assert!(matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
    assert!(matches!(Heap::open(dir.path()), Err(Error::NotAHeap { .. })));
    heap(&dir);
    assert!(matches!(heap_again(&dir), Err(Error::AlreadyExists { .. })));
    // An older (versions 1 and 2: other probe orders; 3: moves logged; 4:
    // no vector capacity rolled forward; 5: map tables never grown in
    // place) or newer version is refused with a clear error, not misread.
    let hp = dir.path().join("h");
    for version in [1u8, 2, 3, 4, 5, 7] {
        let mut bytes = std::fs::read(&hp).unwrap();
        bytes[8] = version;
        std::fs::write(&hp, &bytes).unwrap();
        let e = Heap::open(&hp).unwrap_err();
        assert!(matches!(e, Error::Incompatible { .. }), "{e}");
        assert!(e.to_string().contains(&format!("version {version}")), "{e}");
    }
    assert!(HeapOptions::new().size(1 << 30).max_size(1 << 20).create(dir.path().join("x")).is_err());
}

fn heap_again(dir: &tempfile::TempDir) -> Result<Heap> {
    HeapOptions::new().create(dir.path().join("h"))
}

#[test]
fn files_have_mode_0600_and_shm_works() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let mode = std::fs::metadata(h.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let name = format!("mmkit-heap-test-{}", std::process::id());
    let s = HeapOptions::new().size(256 << 10).create_shm(&name).unwrap();
    s.vec::<u8>("v").unwrap().push(&1).unwrap();
    let o = HeapOptions::new().open_or_create_shm(&name).unwrap();
    assert_eq!(o.vec::<u8>("v").unwrap().to_vec().unwrap(), [1]);
    let mode = std::fs::metadata(o.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    Heap::unlink_shm(&name).unwrap();
    assert!(Heap::open_shm(&name).is_err());
}

#[test]
fn open_or_create_races_create_one_heap() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("raced");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || {
                let h = HeapOptions::new().size(256 << 10).open_or_create(&p).unwrap();
                h.find_or_init("winner", || i as u64).unwrap().get().unwrap()
            })
        })
        .collect();
    let got: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(got.iter().all(|&g| g == got[0]), "{got:?}");
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1);
}

#[test]
fn strings_and_byte_keys() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let m = h.map::<[u8], str>("m").unwrap();
    let long = "x".repeat(10_000);
    m.insert(b"", "empty key").unwrap();
    m.insert(b"long", &long).unwrap();
    assert_eq!(m.get(b"").unwrap().as_deref(), Some("empty key"));
    assert_eq!(m.get(b"long").unwrap().unwrap().len(), 10_000);
    assert_eq!(m.insert(b"long", "short").unwrap().unwrap().len(), 10_000);
    assert_eq!(m.get(b"long").unwrap().as_deref(), Some("short"));
    let mut all = m.entries().unwrap();
    all.sort();
    assert_eq!(all.len(), 2);
    clean(&h);
}

/// A handle's lookups cache the table they last checked; another handle
/// growing the table, or removing the map, must never leave them reading
/// the old one. Two threads share the reading handle, so the cache is also
/// filled concurrently.
#[test]
fn lookups_follow_resizes_and_removal_made_through_other_handles() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let reader = h.map::<u64, u64>("m").unwrap();
    let writer = Heap::open(dir.path().join("h")).unwrap().map::<u64, u64>("m").unwrap();
    assert_eq!(reader.get(&1).unwrap(), None);
    let done = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut k = 0u64;
                while done.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    // A key is there with its value, or not yet there.
                    if let Some(v) = reader.get(&k).unwrap() {
                        assert_eq!(v, k * 3);
                    }
                    k = (k + 7919) % 20_000;
                }
            });
        }
        for i in 0..20_000u64 {
            writer.insert(&i, &(i * 3)).unwrap();
            if i % 1000 == 0 {
                for j in (0..=i).step_by(97) {
                    assert_eq!(reader.get(&j).unwrap(), Some(j * 3), "key {j} after {i} inserts");
                }
                assert_eq!(reader.get(&(i + 1)).unwrap(), None);
            }
        }
        done.store(1, std::sync::atomic::Ordering::Release);
    });
    for j in 0..20_000u64 {
        assert_eq!(reader.get(&j).unwrap(), Some(j * 3));
    }
    assert!(h.remove("m").unwrap());
    assert!(matches!(reader.get(&5), Err(Error::Removed { .. })));
    // A new map under the same name is a new object; the old handle stays
    // removed rather than reading the new table.
    let again = h.map::<u64, u64>("m").unwrap();
    again.insert(&5, &1).unwrap();
    assert!(matches!(reader.get(&5), Err(Error::Removed { .. })));
}

/// `reserve` grows the table once, for the keys held and those to come,
/// while another handle writes; what cannot be had is an error that
/// changes nothing; a bulk load into an empty map reserves for itself.
#[test]
fn reserve_sizes_the_table_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = HeapOptions::new().size(1 << 20).max_size(64 << 20).create(dir.path().join("heap")).unwrap();
    let m = h.map::<u64, u64>("m").unwrap();
    let other = Heap::open(dir.path().join("heap")).unwrap().map::<u64, u64>("m").unwrap();
    m.insert(&1, &10).unwrap();
    m.reserve(50_000).unwrap();
    let cap = m.capacity().unwrap();
    assert!(cap >= 50_001 * 4 / 3, "{cap}");
    assert_eq!(other.get(&1).unwrap(), Some(10));
    for k in 2..50_002u64 {
        other.insert(&k, &(k * 10)).unwrap();
    }
    assert_eq!(m.capacity().unwrap(), cap, "no resize for the keys reserved");
    m.reserve(0).unwrap();
    m.reserve(1).unwrap();
    assert_eq!(m.capacity().unwrap(), cap);

    // Past the largest table, or past what the heap can hold: an error,
    // and the map as it was.
    assert!(matches!(m.reserve(usize::MAX), Err(Error::Invalid { .. })));
    let err = m.reserve(10_000_000).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    assert_eq!(m.capacity().unwrap(), cap);
    assert_eq!(m.len().unwrap(), 50_001);
    assert_eq!(m.get(&50_001).unwrap(), Some(500_010));

    // A bulk load into an empty map sizes its table once, for all pairs.
    let bulk = h.map::<u64, u64>("bulk").unwrap();
    let pairs: Vec<(u64, u64)> = (0..50_001u64).map(|k| (k, k)).collect();
    assert_eq!(bulk.insert_many(&pairs).unwrap(), 50_001);
    assert_eq!(bulk.capacity().unwrap(), cap);
    assert_eq!(bulk.get(&777).unwrap(), Some(777));
    // Room for a million keys is more than the heap has, but a million
    // pairs of one key need none: the reservation is only a hint.
    let same = h.map::<u64, u64>("same").unwrap();
    assert!(matches!(same.reserve(1_000_000), Err(Error::OutOfMemory { .. })));
    let pairs: Vec<(u64, u64)> = (0..1_000_000u64).map(|v| (7, v)).collect();
    assert_eq!(same.insert_many(&pairs).unwrap(), 1);
    assert_eq!(same.get(&7).unwrap(), Some(999_999));
    clean(&h);
}

/// A bulk load through several resizes, with a second handle (as another
/// process would have) reading and writing in between: every pair lands,
/// later duplicates win, and the heap checks clean.
#[test]
fn insert_many_loads_through_resizes() {
    let dir = tempfile::tempdir().unwrap();
    let h = HeapOptions::new().size(1 << 20).max_size(1 << 30).create(dir.path().join("heap")).unwrap();
    let m = h.map::<u64, u64>("m").unwrap();
    let other = Heap::open(dir.path().join("heap")).unwrap().map::<u64, u64>("m").unwrap();
    let mut added = 0;
    for first in (0..200_000u64).step_by(1500) {
        let pairs: Vec<(u64, u64)> = (first..first + 1500).map(|k| (k % 200_000, k)).collect();
        added += m.insert_many(&pairs).unwrap();
        assert_eq!(other.get(&first).unwrap(), Some(first));
        other.insert(&(first + 1), &(first + 1)).unwrap();
    }
    // The last batch wraps round to keys 0..999 again: not new.
    assert_eq!(added, 200_000);
    assert_eq!(m.len().unwrap(), 200_000);
    assert_eq!(m.insert_many(&[(7u64, 1u64), (7, 2)]).unwrap(), 0);
    assert_eq!(m.get(&7).unwrap(), Some(2));
    for k in (0..200_000u64).step_by(997) {
        assert!(m.get(&k).unwrap().is_some(), "{k}");
    }
    clean(&h);
}

/// Opening a vector or string by name reads only its element layout,
/// which never changes: a `set` in another thread (or process), half-way
/// through switching buffers, is no corruption to it. (The random-kill
/// test once failed on this: an open saw the new, shorter capacity with
/// the old length.)
#[test]
fn opening_a_string_while_another_thread_sets_it_sees_no_torn_header() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let text = h.string("text").unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let long = "x".repeat(41);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..100_000 {
                text.set(if i % 2 == 0 { &long } else { "short" }).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let mut opened = 0u64;
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            h.string("text").unwrap();
            opened += 1;
        }
        assert!(opened > 0);
    });
    clean(&h);
}

/// A map that once held many keys and was then emptied: the resize that
/// the next inserts start moves a large old table one chunk (1024 slots)
/// per write, and every insert meanwhile goes to the new table, which
/// must have room for them and not only for the few keys left.
#[test]
fn inserts_during_a_long_migration_after_mass_removal_fit_the_new_table() {
    let dir = tempfile::tempdir().unwrap();
    let h = HeapOptions::new().size(1 << 20).max_size(1 << 30).create(dir.path().join("h")).unwrap();
    let m = h.map_with_capacity::<u64, u64>("m", 49_000).unwrap();
    let cap = m.capacity().unwrap();
    assert_eq!(cap, 65536);
    // Just under 3/4 used.
    let n = (cap as u64) * 3 / 4 - 1;
    for k in 0..n {
        m.insert(&k, &k).unwrap();
    }
    assert_eq!(m.capacity().unwrap(), cap, "no resize yet");
    for k in 0..n {
        assert_eq!(m.remove(&k).unwrap(), Some(k));
    }
    assert_eq!(m.len().unwrap(), 0);
    // New keys: one that lands on an empty slot pushes `used` to 3/4, and
    // the next write starts the resize.
    let mut failures = Vec::new();
    for i in 0..400u64 {
        let k = 1_000_000 + i;
        if let Err(e) = m.insert(&k, &i) {
            failures.push(format!("insert #{i} (map of {} keys): {e}", m.len().unwrap()));
        }
    }
    let (first, last) = (failures.first().cloned(), failures.last().cloned());
    let check = h.check(false).unwrap();
    assert!(
        failures.is_empty() && check.is_clean(),
        "{} of 400 inserts failed; first: {first:?}; last: {last:?}; check: {:?}",
        failures.len(),
        check.errors
    );
    for i in 0..400u64 {
        assert_eq!(m.get(&(1_000_000 + i)).unwrap(), Some(i));
    }
}

/// An initializer that returns an error (here: the heap cannot hold the
/// table asked for) gives the name up: another thread opens it (running
/// its own initializer) or removes it, instead of waiting for a live
/// process that will never finish it.
#[test]
fn a_failed_initializer_gives_the_name_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let h = HeapOptions::new().size(1 << 20).max_size(4 << 20).create(&path).unwrap();
    let first = h.map_with_capacity::<u64, u64>("m", 1_000_000);
    assert!(matches!(first, Err(Error::OutOfMemory { .. })), "{first:?}");

    // Another thread, with a bounded wait so the test ends.
    let bounded = HeapOptions::new().lock_wait(Some(Duration::from_secs(2))).open(&path).unwrap();
    let other = std::thread::spawn(move || {
        let opened = bounded.map::<u64, u64>("m").map(|_| ());
        let removed = bounded.remove("m");
        (opened, removed)
    })
    .join()
    .unwrap();
    assert!(other.0.is_ok(), "another thread cannot open the name: {:?}", other.0);
    assert!(other.1.is_ok(), "another thread cannot remove the name: {:?}", other.1);
}

/// A heap handle opened before another handle (or process) grew the heap
/// maps only the old length: `check` and `remove` of an object created
/// past it map the rest before they take the object's locks.
#[test]
fn check_from_a_handle_that_has_not_mapped_the_grown_part() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let first = HeapOptions::new().size(1 << 20).max_size(1 << 30).create(&path).unwrap();
    // The registry table lands in the first megabyte.
    first.vec::<u64>("a").unwrap().push(&1).unwrap();
    // Two handles opened now, as processes that started before the growth.
    let early_check = Heap::open(&path).unwrap();
    let early_remove = Heap::open(&path).unwrap();
    let size_before = first.size();

    let other = Heap::open(&path).unwrap();
    other.vec::<u8>("filler").unwrap().extend_from_slice(&vec![0u8; 3 << 20]).unwrap();
    let late = other.vec::<[u8; 4000]>("late").unwrap();
    late.push(&[7; 4000]).unwrap();
    assert!(other.size() > size_before);
    assert!(other.check(false).unwrap().is_clean());

    let r = early_check.check(false).unwrap();
    let removed = early_remove.remove("late");
    let listed = other.objects().unwrap().iter().any(|o| o.name == "late");
    let after = other.check(false).unwrap();
    assert!(
        r.errors.is_empty() && removed.is_ok(),
        "check from an early handle: {:?}\nremove from an early handle: {removed:?} (name still listed: {listed}; \
         leaked blocks after: {})",
        r.errors,
        after.leaked_blocks
    );
}

/// A FIFO where a heap file is expected is refused at once as "not a
/// regular file" instead of blocking in open(2) until a writer appears.
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let p = fifo.clone();
    let t = std::thread::spawn(move || {
        let _ = tx.send(Heap::open(&p).map(drop));
    });
    let r = rx.recv_timeout(Duration::from_secs(10));
    if r.is_err() {
        // Unblock the opener so the thread ends.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    }
    t.join().unwrap();
    let err = r.expect("Heap::open blocked on a FIFO").unwrap_err();
    assert!(matches!(err, Error::NotAHeap { reason: "not a regular file", .. }), "{err}");
}

/// A map's table carved from space no block ever used is not written
/// again (it holds the zeros the file grew with), while one that reuses
/// a freed block is zeroed: a map created where a removed map's table
/// was starts empty, not with the old slots.
#[test]
fn tables_in_reused_space_start_empty() {
    let dir = tempfile::tempdir().unwrap();
    let h = HeapOptions::new().size(1 << 20).max_size(1 << 30).create(dir.path().join("h")).unwrap();
    for round in 0..4u64 {
        let m = h.map_with_capacity::<u64, u64>("m", 20_000).unwrap();
        assert_eq!(m.len().unwrap(), 0, "round {round}");
        assert!(m.entries().unwrap().is_empty(), "round {round}");
        for k in 0..2000 {
            assert_eq!(m.get(&k).unwrap(), None, "round {round}, key {k}");
            m.insert(&k, &(k + round)).unwrap();
        }
        assert_eq!(m.get(&1999).unwrap(), Some(1999 + round));
        drop(m);
        assert!(h.remove("m").unwrap());
    }
    assert!(h.check(false).unwrap().is_clean());
}
