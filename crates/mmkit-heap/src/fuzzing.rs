//! Entry points shared by the `cargo fuzz` targets and the tests. Not a
//! stable API.

use std::path::Path;

use crate::layout::HEADER_SIZE;
use crate::{Heap, HeapOptions};

/// Builds a small heap at `path` with every kind of object in it.
pub fn build(path: &Path) -> crate::Result<Heap> {
    let heap = HeapOptions::new().size(1 << 20).max_size(16 << 20).create(path)?;
    let map = heap.map::<u64, u64>("ints")?;
    for i in 0..200u64 {
        map.insert(&i, &(i * 3))?;
    }
    for i in 0..50u64 {
        map.remove(&(i * 2))?;
    }
    let strings = heap.map::<str, [u8]>("strings")?;
    for i in 0..60u32 {
        strings.insert(&format!("key number {i}"), &vec![i as u8; (i * 7) as usize % 300])?;
    }
    let v = heap.vec::<u32>("vec")?;
    // Past 8 KiB: the buffer is a run of pages, which grows in place.
    for i in 0..3000u32 {
        v.push(&i)?;
    }
    heap.string("text")?.set("hello, heap")?;
    heap.find_or_init("counter", || 7u64)?;
    // A table of pages at the top of the heap, three quarters full of
    // consecutive keys: its next resize grows it in place.
    let dense = heap.map_with_capacity::<u64, u64>("dense", 300)?;
    for i in 0..380u64 {
        dense.insert(&i, &i)?;
    }
    let big = heap.alloc(20_000, 8)?;
    heap.free(big, 20_000, 8)?;
    Ok(heap)
}

/// Uses every read and write path of a possibly corrupt heap; only errors
/// are allowed (the caller checks for panics and hangs). A lock word may
/// name a live process (the fuzzer's own, or init), which would hold the
/// lock forever: locks are waited for 20 ms at most.
pub fn exercise(path: &Path) {
    let options = HeapOptions::new().lock_wait(Some(std::time::Duration::from_millis(20)));
    let Ok(heap) = options.open(path) else { return };
    let _ = heap.stat();
    let _ = heap.objects();
    if let Ok(map) = heap.map::<u64, u64>("ints") {
        for i in 0..40u64 {
            let _ = map.get(&i);
        }
        let _ = map.insert(&1000, &1);
        let _ = map.remove(&3);
        // Again, through the table the handle cached before the writes.
        for i in 0..40u64 {
            let _ = map.get(&i);
        }
        let _ = map.get_many(&[1u64, 2, 1000]);
        let _ = map.insert_many(&[(5u64, 1u64), (2000, 2), (5, 3)]);
        let _ = map.len();
        let _ = map.entries();
    }
    if let Ok(map) = heap.map::<u64, u64>("dense") {
        // A far key, which moves when the table grows, then the resize.
        let _ = map.insert(&(1 << 33), &1);
        for i in 380..420u64 {
            let _ = map.insert(&i, &i);
        }
        let _ = map.get(&(1 << 33));
        let _ = map.get(&7);
    }
    if let Ok(map) = heap.map::<str, [u8]>("strings") {
        let _ = map.get("key number 3");
        let _ = map.insert("new key that is long enough", b"value");
        let _ = map.entries();
    }
    if let Ok(v) = heap.vec::<u32>("vec") {
        let _ = v.get(10);
        let _ = v.push(&1);
        let _ = v.set(3, &9);
        let _ = v.to_vec();
        let _ = v.pop();
        let _ = v.reserve(5000);
    }
    if let Ok(s) = heap.string("text") {
        let _ = s.get();
        let _ = s.push_str("!");
    }
    if let Ok(Some(b)) = heap.find::<u64>("counter") {
        let _ = b.get();
        let _ = b.update(|v| v + 1);
    }
    if let Ok(b) = heap.alloc(100, 8) {
        let _ = heap.free(b, 100, 8);
    }
    if let Ok(b) = heap.alloc(30_000, 8) {
        let _ = heap.grow_in_place(b, 30_000, 70_000, 8);
    }
    let _ = heap.check(true);
    let _ = heap.check(false);
}

/// The fuzz target: overwrites bytes of a freshly built heap image with
/// `data` (pairs of a position selector and a byte run), then exercises it.
pub fn heap_image(data: &[u8]) {
    let Ok(dir) = tempfile_dir() else { return };
    let path = dir.join("heap");
    if build(&path).is_err() {
        return;
    }
    let Ok(mut image) = std::fs::read(&path) else { return };
    let mut rest = data;
    while rest.len() >= 4 {
        let at = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let n = (rest.len() - 4).min(8);
        let at = if at % 2 == 0 { at % HEADER_SIZE as usize } else { at % image.len() };
        for (k, b) in rest[4..4 + n].iter().enumerate() {
            if let Some(x) = image.get_mut(at + k) {
                *x = *b;
            }
        }
        rest = &rest[4 + n..];
    }
    if std::fs::write(&path, &image).is_ok() {
        exercise(&path);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mmkit-heap-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
