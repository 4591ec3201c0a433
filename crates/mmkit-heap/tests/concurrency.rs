//! Threads of one process against each other: lock-free readers and
//! `check` while writers insert, remove and resize.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mmkit_heap::*;

fn heap(dir: &tempfile::TempDir) -> Heap {
    HeapOptions::new().size(1 << 20).max_size(1 << 30).create(dir.path().join("h")).unwrap()
}

/// `check` (and `stat`) take every lock, and a map insert allocates its
/// out-of-line entry and frees a replaced one holding its stripe: a check
/// meanwhile counts no block as leaked on a healthy heap.
#[test]
fn check_during_out_of_line_inserts_reports_no_leak() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let m = h.map::<str, [u8]>("m").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (m, stop) = (h.map::<str, [u8]>("m").unwrap(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                m.insert(&format!("key-{}", i % 64), &[i as u8; 100]).unwrap();
                i += 1;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut dirty = None;
    let mut checks = 0;
    while Instant::now() < deadline {
        let r = h.check(false).unwrap();
        checks += 1;
        if !r.is_clean() {
            dirty = Some((r.leaked_blocks, r.errors));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(m);
    assert!(dirty.is_none(), "check #{checks} of a healthy heap: {dirty:?}");
}

/// The same under `check(true)`: the repair frees nothing that a writer
/// is about to link into the map or to free.
#[test]
fn repair_during_out_of_line_inserts_keeps_the_map_intact() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let m = h.map::<str, [u8]>("m").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let writer = {
        let (m, stop, errors) = (h.map::<str, [u8]>("m").unwrap(), stop.clone(), errors.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            let mut first = None;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = m.insert(&format!("key-{}", i % 64), &[(i % 64) as u8; 100]) {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first.get_or_insert(e.to_string());
                }
                i += 1;
            }
            first
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut repairs = Vec::new();
    while Instant::now() < deadline && repairs.is_empty() {
        let r = h.check(true).unwrap();
        repairs.extend(r.repairs.into_iter().filter(|s| s.contains("leaked")));
    }
    // Let the writer run on the damaged heap for a while.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let first_error = writer.join().unwrap();
    let mut wrong = Vec::new();
    for k in 0..64u8 {
        match m.get(&format!("key-{k}")) {
            Ok(Some(v)) if v == vec![k; 100] => {}
            other => wrong.push((k, format!("{other:?}").chars().take(60).collect::<String>())),
        }
    }
    let report = h.check(false).unwrap();
    assert!(
        repairs.is_empty() && errors.load(Ordering::Relaxed) == 0 && wrong.is_empty() && report.is_clean(),
        "repairs {repairs:?}\nwriter errors {} (first {first_error:?})\nwrong values {wrong:?}\ncheck after: {:?}",
        errors.load(Ordering::Relaxed),
        report.errors
    );
}

/// Readers check every answer while a writer inserts (resizing many
/// times), overwrites and removes: a key once inserted below the
/// watermark is always found with its value.
fn readers_during_resizes<K: ?Sized + Bytes + 'static, V: ?Sized + Bytes + 'static>(
    key: impl Fn(u64) -> Box<K> + Send + Sync + Copy + 'static,
    value: impl Fn(u64) -> Box<V> + Send + Sync + Copy + 'static,
    decode: impl Fn(&V::Owned) -> u64 + Send + Sync + Copy + 'static,
) where
    V::Owned: std::fmt::Debug,
{
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let m = h.map::<K, V>("m").unwrap();
    let hi = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (m, hi, stop) = (h.map::<K, V>("m").unwrap(), hi.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) && k < 5_000_000 {
                m.insert(&key(k), &value(k)).unwrap();
                // A churning range of keys that come and go (tombstones).
                let churn = 1 << 40 | k;
                m.insert(&key(churn), &value(churn)).unwrap();
                if k >= 8 {
                    m.remove(&key(1 << 40 | (k - 8))).unwrap();
                }
                hi.store(k + 1, Ordering::Release);
                k += 1;
            }
        })
    };
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut bad = Vec::new();
    let mut reads = 0u64;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && bad.len() < 5 {
        let top = hi.load(Ordering::Acquire);
        if top == 0 {
            continue;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = rng % top;
        match m.get(&key(k)) {
            Ok(Some(v)) if decode(&v) == k => {}
            other => bad.push(format!("get({k}) with {top} inserted: {other:?}")),
        }
        let absent = 1 << 50 | k;
        match m.get(&key(absent)) {
            Ok(None) => {}
            other => bad.push(format!("get(absent {absent}): {other:?}")),
        }
        if reads % 64 == 0 {
            let ks: Vec<Box<K>> = (0..40).map(|i| key((k + i * 7919) % top)).collect();
            let refs: Vec<&K> = ks.iter().map(|b| &**b).collect();
            match m.get_many(&refs) {
                Ok(vs) => {
                    for (i, v) in vs.iter().enumerate() {
                        let want = (k + i as u64 * 7919) % top;
                        if v.as_ref().map(decode) != Some(want) {
                            bad.push(format!("get_many[{want}]: {v:?}"));
                        }
                    }
                }
                Err(e) => bad.push(format!("get_many: {e}")),
            }
        }
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(reads > 0 && hi.load(Ordering::Relaxed) > 0);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn fixed_size_readers_during_resizes() {
    readers_during_resizes::<u64, u64>(Box::new, |k| Box::new(k.wrapping_mul(3)), |v| v / 3);
}

#[test]
fn out_of_line_readers_during_resizes() {
    readers_during_resizes::<str, [u8]>(
        |k| format!("a rather long key number {k}").into_boxed_str(),
        |k| {
            let mut v = k.to_le_bytes().to_vec();
            v.resize(40 + (k % 50) as usize, 0xab);
            v.into_boxed_slice()
        },
        |v| u64::from_le_bytes(v[..8].try_into().unwrap()),
    );
}

/// `capacity()` during resizes is always a table's size: the descriptor's
/// words are read as one consistent set, never the new table with a size
/// not yet written.
#[test]
fn capacity_during_resizes_is_a_table_size() {
    let dir = tempfile::tempdir().unwrap();
    let h = heap(&dir);
    let m = h.map::<u64, u64>("m").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (m, stop) = (h.map::<u64, u64>("m").unwrap(), stop.clone());
        std::thread::spawn(move || {
            for round in 0..200u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for k in 0..20_000u64 {
                    m.insert(&(round << 32 | k), &k).unwrap();
                }
                for k in 0..20_000u64 {
                    m.remove(&(round << 32 | k)).unwrap();
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = Vec::new();
    while Instant::now() < deadline && seen.is_empty() {
        let c = m.capacity().unwrap();
        if !c.is_power_of_two() || c < 16 {
            seen.push(c);
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(seen.is_empty(), "capacity() returned {seen:?}");
}
