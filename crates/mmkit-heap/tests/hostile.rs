//! Hostile writes made while handles are attached, or to fields the
//! fuzzer's image never reaches: each gives an error (or is repaired), and
//! never aborts, hangs, or writes over the segment header. Found by a
//! review of the crate; each test failed before its fix.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mmkit_heap::layout::*;
use mmkit_heap::{Heap, HeapOptions};

fn poke(path: &Path, at: u64, v: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&v.to_le_bytes(), at).unwrap();
}

fn peek(path: &Path, at: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path).unwrap().read_exact_at(&mut b, at).unwrap();
    u64::from_le_bytes(b)
}

fn create(path: &Path, size: u64, max: u64) -> Heap {
    HeapOptions::new()
        .size(size)
        .max_size(max)
        .lock_wait(Some(Duration::from_millis(50)))
        .create(path)
        .unwrap()
}

/// A new heap of 1 MiB (up to 16 MiB) in a new directory.
fn small() -> (tempfile::TempDir, PathBuf, Heap) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let heap = create(&path, 1 << 20, 16 << 20);
    (dir, path, heap)
}

/// The registry entry named `name` (entries are 256 bytes: name length
/// at 56, name at 64; docs/heap-format.md).
fn entry_of(path: &Path, name: &str) -> u64 {
    let (table, cap) = (peek(path, REG_TABLE), peek(path, REG_CAP));
    (0..cap)
        .map(|i| table + i * 256)
        .find(|&at| {
            let mut b = vec![0u8; name.len()];
            std::fs::File::open(path).unwrap().read_exact_at(&mut b, at + 64).unwrap();
            peek(path, at + 56) == name.len() as u64 && b == name.as_bytes()
        })
        .unwrap()
}

fn object_of(heap: &Heap, name: &str) -> u64 {
    heap.objects().unwrap().into_iter().find(|o| o.name == name).unwrap().offset
}

#[test]
fn an_entry_naming_offset_zero_is_refused_not_removed_over_the_header() {
    let (_dir, path, heap) = small();
    heap.find_or_init("b", || 1u64).unwrap();
    poke(&path, entry_of(&path, "b") + 48, 0);
    assert!(heap.remove("b").unwrap_err().is_corrupt());
    assert!(Heap::open(&path).is_ok(), "the heap header is intact");
}

#[test]
fn a_dead_initializers_entry_at_offset_zero_is_not_taken_over() {
    let (_dir, path, heap) = small();
    heap.find_or_init("b", || 1u64).unwrap();
    let e = entry_of(&path, "b");
    poke(&path, e, 1); // initializing
    poke(&path, e + 8, 0); // by nobody alive
    poke(&path, e + 48, 0); // at offset 0
    assert!(heap.find_or_init("b", || 0x4141_4141u64).unwrap_err().is_corrupt());
    // And an entry whose header size is not the type's.
    poke(&path, e + 48, object_of_fresh(&heap));
    poke(&path, e + 32, 8);
    assert!(heap.find_or_init("b", || 1u64).unwrap_err().is_corrupt());
    assert!(Heap::open(&path).is_ok(), "the heap header is intact");
}

/// An allocated block past the header, for an entry to name.
fn object_of_fresh(heap: &Heap) -> u64 {
    heap.alloc(64, 64).unwrap().raw()
}

#[test]
fn a_vector_element_size_changed_after_attach_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let heap = create(&path, 1 << 20, 1 << 36);
    let v = heap.vec::<u64>("v").unwrap();
    v.push(&1).unwrap();
    let off = object_of(&heap, "v");
    poke(&path, off + 8, 0); // element size
    poke(&path, off + 32, 1 << 36); // capacity
    poke(&path, off + 24, 1 << 36); // length
    assert!(v.to_vec().unwrap_err().is_corrupt());
    assert!(v.len().unwrap_err().is_corrupt());
    assert!(v.push(&2).unwrap_err().is_corrupt());
}

/// Every slot of a map aimed at one 16 MiB entry of a 32 MiB heap:
/// `entries` stops once it has copied more than the heap holds.
#[test]
fn slots_aliasing_one_entry_do_not_multiply_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let heap = create(&path, 32 << 20, 64 << 20);
    let m = heap.map_with_capacity::<[u8], [u8]>("m", 1000).unwrap();
    m.insert(b"k", &vec![7u8; 16 << 20]).unwrap();
    let off = object_of(&heap, "m");
    let (table, cap) = (peek(&path, off + 24), peek(&path, off + 32));
    let full = (0..cap).find(|i| peek(&path, table + i * 32) & 7 == 1).unwrap();
    let words: Vec<u64> = (0..4).map(|w| peek(&path, table + full * 32 + 8 * w)).collect();
    for i in 0..cap {
        for (w, v) in words.iter().enumerate() {
            poke(&path, table + i * 32 + 8 * w as u64, *v);
        }
    }
    assert!(m.entries().unwrap_err().is_corrupt());
}

/// A slot whose value length says 1 GiB: lookups allocate nothing of that
/// size (the range is checked first) and end quickly.
#[test]
fn a_huge_value_length_allocates_nothing_before_its_check() {
    let (_dir, path, heap) = small();
    let m = heap.map::<[u8], [u8]>("m").unwrap();
    m.insert(b"k", &[5u8; 100]).unwrap();
    let off = object_of(&heap, "m");
    let (table, cap) = (peek(&path, off + 24), peek(&path, off + 32));
    let i = (0..cap).find(|i| peek(&path, table + i * 32) & 7 == 1).unwrap();
    poke(&path, table + i * 32 + 16, 1 | ((1u64 << 30) - 1) << 32);
    let t = std::time::Instant::now();
    assert!(m.get(b"k").is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(m.entries().unwrap_err().is_corrupt());
}

#[test]
fn a_heap_end_near_the_top_of_the_address_space_gives_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    drop(create(&path, 1 << 20, 16 << 20));
    let heap = Heap::open(&path).unwrap();
    poke(&path, H_SIZE, u64::MAX);
    poke(&path, PH_HEAP_END, u64::MAX - PAGE + 1);
    assert!(heap.alloc(16, 8).is_err());
    assert!(heap.alloc(20_000, 8).is_err());
}

/// One undo-log entry no holder could have written, under a lock whose
/// holder is dead: the log is dropped with an error, and the next locker
/// and `check --repair` get on.
#[test]
fn a_garbage_undo_entry_is_dropped_not_replayed_forever() {
    let (_dir, path, heap) = small();
    heap.find_or_init("b", || 1u64).unwrap();
    poke(&path, REG_LOCK, 0); // owner: none (dead)
    poke(&path, REG_LOCK + 16, 1); // flags: inconsistent
    poke(&path, REG_LOG, 1);
    poke(&path, REG_LOG + 8, 8); // the version word
    assert!(heap.find::<u64>("b").unwrap_err().is_corrupt());
    assert!(heap.find::<u64>("b").unwrap().is_some());
    assert!(heap.check(true).unwrap().errors.is_empty());
    for target in [u64::MAX - 7, 1 << 40, HEADER_SIZE + 3] {
        poke(&path, REG_LOCK + 16, 1);
        poke(&path, REG_LOG, 1);
        poke(&path, REG_LOG + 8, target);
        assert!(heap.find::<u64>("b").is_err(), "target {target}");
        assert!(heap.find::<u64>("b").unwrap().is_some(), "target {target}");
    }
}

/// A writer keeps a one-block cycle at the head of a class's free list
/// while `check --repair` runs (which drops the class locks between its
/// passes): the repair finishes, without walking the list.
#[test]
fn repair_does_not_walk_a_free_list_written_meanwhile() {
    let (_dir, path, heap) = small();
    let v = heap.vec::<u64>("v").unwrap();
    v.extend_from_slice(&vec![0u64; 4096]).unwrap();
    let b = heap.alloc(16, 8).unwrap();
    heap.free(b, 16, 8).unwrap(); // class 0's slab is empty: repair releases it
    let x = peek(&path, object_of(&heap, "v") + 40) + 64;
    poke(&path, x, x);
    let stop = Arc::new(AtomicBool::new(false));
    let hostile = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all_at(&x.to_le_bytes(), CLASS_BASE + C_FREE).unwrap();
            }
        })
    };
    while peek(&path, CLASS_BASE + C_FREE) != x {}
    for _ in 0..3 {
        let _ = heap.check(true);
    }
    stop.store(true, Ordering::Relaxed);
    hostile.join().unwrap();
    // With the head aimed at the vector's data once more and the writer
    // stopped, one repair makes the heap whole again.
    poke(&path, CLASS_BASE + C_FREE, x);
    heap.check(true).unwrap();
    let r = heap.check(false).unwrap();
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
}

/// A class's bump range aimed at an allocated block: allocation drops
/// it (never handing out the block), the check reports it, the repair
/// rebuilds the class from its bitmaps, and the class allocates again.
#[test]
fn a_bump_range_over_allocated_blocks_is_repaired() {
    let (_dir, path, heap) = small();
    let v = heap.vec::<u8>("keep").unwrap();
    v.extend_from_slice(&[1u8; 16]).unwrap();
    let b = peek(&path, object_of(&heap, "keep") + 40);
    poke(&path, CLASS_BASE + C_BUMP, b);
    poke(&path, CLASS_BASE + C_BUMP_END, b + 16 * 4);
    assert!(!heap.check(false).unwrap().errors.is_empty(), "the check sees the bump range");
    // Allocation drops the range and goes on with a new slab.
    assert_ne!(heap.alloc(16, 8).unwrap().raw(), b);
    let r = heap.check(true).unwrap();
    assert!(r.repairs.iter().any(|r| r.contains("free list of class 16")), "{:?}", r.repairs);
    for _ in 0..5000 {
        let a = heap.alloc(16, 8).unwrap();
        assert_ne!(a.raw(), b, "a block of the vector handed out");
    }
    assert_eq!(v.to_vec().unwrap(), [1u8; 16]);
    assert!(heap.check(false).unwrap().errors.is_empty());
}

/// Bin heads near the top of the address space (found by the fuzzer): a
/// run freed into such a bin drops the bin instead of linking to it, and
/// the repair rebuilds the bins.
#[test]
fn a_garbage_bin_head_is_dropped_not_linked() {
    let (_dir, path, heap) = small();
    let a = heap.alloc(100_000, 8).unwrap();
    let b = heap.alloc(20_000, 8).unwrap();
    for bin in 0..NBINS as u64 {
        poke(&path, PH_BINS + 8 * bin, u64::MAX - 3);
    }
    heap.free(a, 100_000, 8).unwrap();
    heap.free(b, 20_000, 8).unwrap();
    let big = heap.alloc(60_000, 8).unwrap();
    heap.free(big, 60_000, 8).unwrap();
    heap.check(true).unwrap();
    let r = heap.check(false).unwrap();
    assert!(r.is_clean(), "{:#?}", r.errors);
}

/// A dense mark forged on a map whose keys are not all in their home line
/// (it would make the next growth in place keep a far key where lookups
/// in the larger table never look): `check` reports it, the repair clears
/// it, and the growth then keeps every key.
#[test]
fn a_forged_dense_mark_is_found_and_cleared() {
    let (_dir, path, heap) = small();
    let m = heap.map_with_capacity::<u64, u64>("m", 300).unwrap();
    let keys: Vec<u64> = (0..380).chain([1 << 33]).collect();
    for k in &keys {
        m.insert(k, &(k * 3)).unwrap();
    }
    let off = object_of(&heap, "m");
    assert_eq!(peek(&path, off + 96), 0, "the far key cleared the mark");
    poke(&path, off + 96, 1);
    let r = heap.check(false).unwrap();
    assert!(r.errors.iter().any(|e| e.contains("marked dense")), "{:#?}", r.errors);
    let fixed = heap.check(true).unwrap();
    assert!(fixed.repairs.iter().any(|e| e.contains("cleared the mark")), "{fixed:#?}");
    assert!(heap.check(false).unwrap().is_clean());
    for k in 380..2000u64 {
        m.insert(&k, &(k * 3)).unwrap();
    }
    for k in keys.iter().chain(&(380..2000).collect::<Vec<u64>>()) {
        assert_eq!(m.get(k).unwrap(), Some(k * 3), "key {k}");
    }
}
