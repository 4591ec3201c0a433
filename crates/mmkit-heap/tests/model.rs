//! Properties against models: the allocator (no overlap, alignment, no
//! leak, every byte accounted), the vector and the map against `std`.

use std::collections::HashMap;

use mmkit_heap::*;
use proptest::prelude::*;

fn heap() -> (tempfile::TempDir, Heap) {
    let dir = tempfile::tempdir().unwrap();
    let h = HeapOptions::new().size(256 << 10).max_size(1 << 30).create(dir.path().join("h")).unwrap();
    (dir, h)
}

fn accounted(h: &Heap) -> CheckReport {
    let r = h.check(false).unwrap();
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    let s = &r.stat;
    assert_eq!(s.header + s.used + s.free + s.overhead, s.size, "{s:?}");
    r
}

#[derive(Debug, Clone)]
enum AllocOp {
    Alloc(u64, u64),
    Free(usize),
    /// Grows live block i (mod the count) by this many bytes, in place.
    Grow(usize, u64),
}

fn alloc_op() -> impl Strategy<Value = AllocOp> {
    prop_oneof![
        3 => (prop_oneof![1u64..200, 200u64..9000, 9000u64..70_000], prop::sample::select(vec![1u64, 8, 16, 32, 64]))
            .prop_map(|(s, a)| AllocOp::Alloc(s, a)),
        2 => any::<usize>().prop_map(AllocOp::Free),
        1 => (any::<usize>(), 0u64..70_000).prop_map(|(i, more)| AllocOp::Grow(i, more)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn allocator_never_overlaps_misaligns_or_leaks(ops in prop::collection::vec(alloc_op(), 1..150)) {
        let (_d, h) = heap();
        let mut live: Vec<(u64, u64, u64, u8)> = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                AllocOp::Alloc(size, align) => {
                    let off = h.alloc(size, align).unwrap().raw();
                    prop_assert_eq!(off % align, 0);
                    let mine = (off, off + block_size(size, align));
                    for &(o, s, a, _) in &live {
                        let theirs = (o, o + block_size(s, a));
                        prop_assert!(mine.1 <= theirs.0 || theirs.1 <= mine.0, "{mine:?} overlaps {theirs:?}");
                    }
                    let fill = n as u8;
                    h.write(Offset::<u8>::from_raw(off), &fill).unwrap();
                    h.write(Offset::<u8>::from_raw(off + size - 1), &fill).unwrap();
                    live.push((off, size, align, fill));
                }
                AllocOp::Free(i) if !live.is_empty() => {
                    let (off, size, align, fill) = live.swap_remove(i % live.len());
                    prop_assert_eq!(h.read(Offset::<u8>::from_raw(off)).unwrap(), fill);
                    prop_assert_eq!(h.read(Offset::<u8>::from_raw(off + size - 1)).unwrap(), fill);
                    h.free(Offset::from_raw(off), size, align).unwrap();
                }
                AllocOp::Grow(i, more) if !live.is_empty() => {
                    let i = i % live.len();
                    let (off, size, align, fill) = live[i];
                    let new_size = size + more;
                    if h.grow_in_place(Offset::from_raw(off), size, new_size, align).unwrap() {
                        let mine = (off, off + block_size(new_size, align));
                        for (j, &(o, s, a, _)) in live.iter().enumerate() {
                            let theirs = (o, o + block_size(s, a));
                            let apart = mine.1 <= theirs.0 || theirs.1 <= mine.0;
                            prop_assert!(j == i || apart, "grown {mine:?} overlaps {theirs:?}");
                        }
                        prop_assert_eq!(h.read(Offset::<u8>::from_raw(off + size - 1)).unwrap(), fill);
                        h.write(Offset::<u8>::from_raw(off + new_size - 1), &fill).unwrap();
                        live[i].1 = new_size;
                    }
                }
                AllocOp::Free(_) | AllocOp::Grow(..) => {}
            }
        }
        // Raw blocks are unreachable from the registry: each counts as a leak.
        let r = accounted(&h);
        prop_assert_eq!(r.leaked_blocks, live.len() as u64);
        for (off, size, align, _) in live.drain(..) {
            h.free(Offset::from_raw(off), size, align).unwrap();
        }
        let r = accounted(&h);
        prop_assert_eq!(r.stat.used, 0);
        prop_assert_eq!(r.leaked_blocks, 0);
        // Empty slabs go back to the run allocator; then nothing is carved.
        let r = h.check(true).unwrap();
        prop_assert!(r.is_clean(), "{:?}", r.errors);
        prop_assert_eq!(r.stat.free + r.stat.header, r.stat.size);
    }
}

#[derive(Debug, Clone)]
enum VecOp {
    Push(u64),
    Extend(Vec<u64>),
    Pop,
    Set(usize, u64),
    Get(usize),
    Truncate(usize),
    Reserve(usize),
    /// Appends to a second vector, whose buffers come and go next to the
    /// first one's (so that it grows in place into freed space, or moves).
    Other(Vec<u64>),
}

fn vec_op() -> impl Strategy<Value = VecOp> {
    prop_oneof![
        4 => any::<u64>().prop_map(VecOp::Push),
        1 => prop::collection::vec(any::<u64>(), 0..300).prop_map(VecOp::Extend),
        2 => Just(VecOp::Pop),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(i, v)| VecOp::Set(i, v)),
        2 => any::<usize>().prop_map(VecOp::Get),
        1 => (0usize..400).prop_map(VecOp::Truncate),
        1 => (0usize..5000).prop_map(VecOp::Reserve),
        1 => prop::collection::vec(any::<u64>(), 0..2000).prop_map(VecOp::Other),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn vector_matches_std(ops in prop::collection::vec(vec_op(), 1..200)) {
        let (_d, h) = heap();
        let (v, w) = (h.vec::<u64>("v").unwrap(), h.vec::<u64>("w").unwrap());
        let (mut model, mut other): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
        for op in ops {
            match op {
                VecOp::Push(x) => { v.push(&x).unwrap(); model.push(x); }
                VecOp::Extend(xs) => { v.extend_from_slice(&xs).unwrap(); model.extend(xs); }
                VecOp::Pop => prop_assert_eq!(v.pop().unwrap(), model.pop()),
                VecOp::Set(i, x) => {
                    let i = if model.is_empty() { i } else { i % (model.len() + 1) };
                    let ok = v.set(i, &x).unwrap();
                    prop_assert_eq!(ok, i < model.len());
                    if ok { model[i] = x; }
                }
                VecOp::Get(i) => {
                    let i = i % (model.len() + 1);
                    prop_assert_eq!(v.get(i).unwrap(), model.get(i).copied());
                }
                VecOp::Truncate(n) => { v.truncate(n).unwrap(); model.truncate(n); }
                VecOp::Reserve(n) => {
                    v.reserve(n).unwrap();
                    prop_assert!(v.capacity().unwrap() >= model.len() + n);
                }
                VecOp::Other(xs) => { w.extend_from_slice(&xs).unwrap(); other.extend(xs); }
            }
            prop_assert_eq!(v.len().unwrap(), model.len());
            prop_assert!(v.capacity().unwrap() >= model.len());
        }
        prop_assert_eq!(v.to_vec().unwrap(), model);
        prop_assert_eq!(w.to_vec().unwrap(), other);
        prop_assert!(accounted(&h).is_clean());
    }

    #[test]
    fn string_matches_std(parts in prop::collection::vec(("[a-zé✓ ]{0,40}", any::<bool>()), 1..40)) {
        let (_d, h) = heap();
        let s = h.string("s").unwrap();
        let mut model = String::new();
        for (p, replace) in parts {
            if replace { s.set(&p).unwrap(); model = p; } else { s.push_str(&p).unwrap(); model.push_str(&p); }
            prop_assert_eq!(s.len().unwrap(), model.len());
        }
        prop_assert_eq!(s.get().unwrap(), model);
        prop_assert!(accounted(&h).is_clean());
    }
}

#[derive(Debug, Clone)]
enum MapOp {
    Insert(u16, u64),
    Remove(u16),
    Get(u16),
    /// `insert_many` of these pairs (keys may repeat: the later wins).
    InsertMany(Vec<(u16, u64)>),
    /// `reserve` room for this many more keys.
    Reserve(u16),
}

fn map_op() -> impl Strategy<Value = MapOp> {
    prop_oneof![
        5 => (0u16..600, any::<u64>()).prop_map(|(k, v)| MapOp::Insert(k, v)),
        2 => (0u16..600).prop_map(MapOp::Remove),
        3 => (0u16..600).prop_map(MapOp::Get),
        1 => prop::collection::vec((0u16..600, any::<u64>()), 0..700).prop_map(MapOp::InsertMany),
        1 => (0u16..2000).prop_map(MapOp::Reserve),
    ]
}

/// The u64 key of `k`: a run of consecutive keys (placed by value in
/// neighbouring slots), and keys whose low 40 bits take three values only
/// (their high bits fold into the placement, so they scatter, and collide
/// as random keys do).
fn int_key(k: u16) -> u64 {
    if k < 300 { u64::from(k) } else { u64::from(k) << 40 | u64::from(k % 3) }
}

/// Variable-size values: short ones inline, long ones out of line.
fn value_of(k: u16, v: u64) -> Vec<u8> {
    let len = (v % 70) as usize;
    (0..len).map(|i| (v as usize + i + k as usize) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn map_matches_std(ops in prop::collection::vec(map_op(), 1..1500)) {
        let (_d, h) = heap();
        let m = h.map::<u64, u64>("m").unwrap();
        let s = h.map::<str, [u8]>("s").unwrap();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let mut smodel: HashMap<String, Vec<u8>> = HashMap::new();
        for op in ops {
            match op {
                MapOp::Insert(k, v) => {
                    prop_assert_eq!(m.insert(&int_key(k), &v).unwrap(), model.insert(int_key(k), v));
                    let key = format!("k{}", "x".repeat(k as usize % 30)) + &k.to_string();
                    let val = value_of(k, v);
                    prop_assert_eq!(s.insert(&key, &val).unwrap(), smodel.insert(key, val));
                }
                MapOp::Remove(k) => {
                    prop_assert_eq!(m.remove(&int_key(k)).unwrap(), model.remove(&int_key(k)));
                    let key = format!("k{}", "x".repeat(k as usize % 30)) + &k.to_string();
                    prop_assert_eq!(s.remove(&key).unwrap(), smodel.remove(&key));
                }
                MapOp::InsertMany(pairs) => {
                    let ints: Vec<(u64, u64)> = pairs.iter().map(|&(k, v)| (int_key(k), v)).collect();
                    let new = ints.iter().filter(|(k, _)| !model.contains_key(k)).map(|p| p.0);
                    let new = new.collect::<std::collections::HashSet<_>>().len();
                    prop_assert_eq!(m.insert_many(&ints).unwrap(), new);
                    model.extend(ints);
                    // Inline and out-of-line values mixed in one call.
                    let strs: Vec<(String, Vec<u8>)> = pairs
                        .iter()
                        .map(|&(k, v)| (format!("k{}", "x".repeat(k as usize % 30)) + &k.to_string(), value_of(k, v)))
                        .collect();
                    let refs: Vec<(&str, &[u8])> = strs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                    let new = strs.iter().filter(|(k, _)| !smodel.contains_key(k)).map(|p| &p.0);
                    let new = new.collect::<std::collections::HashSet<_>>().len();
                    prop_assert_eq!(s.insert_many(&refs).unwrap(), new);
                    smodel.extend(strs);
                }
                MapOp::Reserve(n) => {
                    m.reserve(n as usize).unwrap();
                    s.reserve(n as usize).unwrap();
                    // Room for `n` more without passing 3/4 of the table.
                    prop_assert!((m.len().unwrap() + n as usize) * 4 < m.capacity().unwrap() * 3);
                    prop_assert!((s.len().unwrap() + n as usize) * 4 < s.capacity().unwrap() * 3);
                }
                MapOp::Get(k) => {
                    prop_assert_eq!(m.get(&int_key(k)).unwrap(), model.get(&int_key(k)).copied());
                    let key = format!("k{}", "x".repeat(k as usize % 30)) + &k.to_string();
                    prop_assert_eq!(s.get(&key).unwrap(), smodel.get(&key).cloned());
                }
            }
        }
        prop_assert_eq!(m.len().unwrap(), model.len());
        let mut all = m.entries().unwrap();
        all.sort();
        let mut want: Vec<(u64, u64)> = model.into_iter().collect();
        want.sort();
        prop_assert_eq!(all, want);
        let mut sall = s.entries().unwrap();
        sall.sort();
        let mut swant: Vec<(String, Vec<u8>)> = smodel.into_iter().collect();
        swant.sort();
        prop_assert_eq!(sall, swant);
        prop_assert!(accounted(&h).is_clean());
    }
}

fn dense_op() -> impl Strategy<Value = MapOp> {
    prop_oneof![
        8 => (0u16..3000, any::<u64>()).prop_map(|(k, v)| MapOp::Insert(k, v)),
        2 => (0u16..3000).prop_map(MapOp::Remove),
        3 => (0u16..3000).prop_map(MapOp::Get),
        1 => prop::collection::vec((0u16..3000, any::<u64>()), 0..1500).prop_map(MapOp::InsertMany),
        1 => (0u16..4000).prop_map(MapOp::Reserve),
    ]
}

/// Mostly a run of consecutive keys, and every 16th one far away: a table
/// of them grows in place, moving only the far keys (or none, while no
/// far key is in).
fn dense_key(k: u16) -> u64 {
    if k % 16 == 15 { u64::from(k) << 33 } else { u64::from(k) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// The map alone in its heap, its table a large block from the start,
    /// so that its resizes grow it in place.
    #[test]
    fn a_map_growing_in_place_matches_std(ops in prop::collection::vec(dense_op(), 1..600)) {
        let (_d, h) = heap();
        let m = h.map_with_capacity::<u64, u64>("m", 300).unwrap();
        let mut model: HashMap<u64, u64> = HashMap::new();
        for op in ops {
            match op {
                MapOp::Insert(k, v) => {
                    prop_assert_eq!(m.insert(&dense_key(k), &v).unwrap(), model.insert(dense_key(k), v));
                }
                MapOp::Remove(k) => {
                    prop_assert_eq!(m.remove(&dense_key(k)).unwrap(), model.remove(&dense_key(k)));
                }
                MapOp::InsertMany(pairs) => {
                    let ints: Vec<(u64, u64)> = pairs.iter().map(|&(k, v)| (dense_key(k), v)).collect();
                    let new = ints.iter().filter(|(k, _)| !model.contains_key(k)).map(|p| p.0);
                    let new = new.collect::<std::collections::HashSet<_>>().len();
                    prop_assert_eq!(m.insert_many(&ints).unwrap(), new);
                    model.extend(ints);
                }
                MapOp::Reserve(n) => m.reserve(n as usize).unwrap(),
                MapOp::Get(k) => {
                    prop_assert_eq!(m.get(&dense_key(k)).unwrap(), model.get(&dense_key(k)).copied());
                }
            }
        }
        prop_assert_eq!(m.len().unwrap(), model.len());
        for (k, v) in &model {
            prop_assert_eq!(m.get(k).unwrap(), Some(*v));
        }
        let mut all = m.entries().unwrap();
        all.sort();
        let mut want: Vec<(u64, u64)> = model.into_iter().collect();
        want.sort();
        prop_assert_eq!(all, want);
        prop_assert!(accounted(&h).is_clean());
    }
}
