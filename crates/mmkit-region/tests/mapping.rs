//! The core Mapping: offsets, tail pages, modes, fork, flush, advise,
//! populate, protect, huge pages, and a property test against std::fs.

use std::sync::atomic::Ordering;

use mmkit_region::{
    Access, Advice, Error, HugePages, MapOptions, Mapping, Mode, Protection, Share, UncheckedAdvice,
    page_size,
};
use proptest::prelude::*;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect()
}

fn pattern_file(len: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pattern");
    let data = pattern(len);
    std::fs::write(&path, &data).unwrap();
    (dir, path, data)
}

#[test]
fn unaligned_offsets_and_lengths() {
    let (_dir, path, data) = pattern_file(5 * 4096 + 77);
    let page = page_size();
    for offset in [0, 1, 17, page - 1, page, page + 1, 2 * page + 333, data.len() - 1] {
        for len in [1, 7, page - 1, page, page + 1, data.len() - offset] {
            if offset + len > data.len() {
                continue;
            }
            let map = MapOptions::new().offset(offset as u64).len(len).map_path(&path).unwrap();
            assert_eq!(map.len(), len);
            let mut buf = vec![0u8; len];
            map.read_at(0, &mut buf).unwrap();
            assert_eq!(buf, &data[offset..offset + len], "offset {offset} len {len}");
            let (raw, raw_len) = map.raw_parts();
            assert_eq!(raw as usize % page, 0, "the kernel mapping starts on a page");
            assert_eq!(map.as_ptr() as usize - raw as usize, offset % page);
            assert!(raw_len >= len + offset % page);
        }
    }
}

#[test]
fn tail_page_semantics() {
    let (_dir, path, _data) = pattern_file(5000);
    let map = MapOptions::new().mode(Mode::ReadWrite).map_path(&path).unwrap();
    assert_eq!(map.len(), 5000);
    let mut one = [0u8; 1];
    map.read_at(4999, &mut one).unwrap();
    assert!(matches!(map.read_at(5000, &mut one), Err(Error::OutOfBounds { .. })));
    assert!(matches!(map.write_at(4999, b"ab"), Err(Error::OutOfBounds { .. })));
    // The kernel maps the whole last page: past EOF it reads zeros, and
    // writes there never reach the file.
    let (raw, raw_len) = map.raw_parts();
    assert_eq!(raw_len, 5000, "raw_parts reports the requested bytes, not whole pages");
    // SAFETY: the second page of the mapping is mapped in full by the kernel
    // (the file covers part of it); this process is its only user.
    unsafe {
        let tail = raw.add(5000);
        assert_eq!(tail.read_volatile(), 0);
        tail.write_volatile(0xEE);
        assert_eq!(tail.read_volatile(), 0xEE);
    }
    map.flush().unwrap();
    drop(map);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 5000, "the file does not grow");
}

#[test]
fn copy_on_write_never_reaches_the_file() {
    let (_dir, path, data) = pattern_file(3 * 4096);
    let cow = MapOptions::new().mode(Mode::CopyOnWrite).map_path(&path).unwrap();
    let shared = MapOptions::new().mode(Mode::ReadWrite).map_path(&path).unwrap();
    cow.write_at(4096, b"private!").unwrap();
    let mut buf = [0u8; 8];
    cow.read_at(4096, &mut buf).unwrap();
    assert_eq!(&buf, b"private!");
    shared.read_at(4096, &mut buf).unwrap();
    assert_eq!(buf, data[4096..4104]);
    cow.flush().unwrap();
    drop(cow);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // A shared writer does reach the file.
    shared.write_at(0, b"shared").unwrap();
    shared.flush().unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[..6], b"shared");
}

fn fork_and_store(word: &std::sync::atomic::AtomicU64, value: u64) {
    // SAFETY: the child only does async-signal-safe work (an atomic store
    // to already-mapped memory and `_exit`), as required after `fork` in a
    // multi-threaded process.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        word.store(value, Ordering::SeqCst);
        // SAFETY: `_exit` is async-signal-safe and skips atexit handlers.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

#[test]
fn shared_anonymous_memory_survives_fork_and_private_does_not() {
    let shared = Mapping::anonymous(4096, Share::Shared).unwrap();
    fork_and_store(shared.atomic_u64(64).unwrap(), 42);
    assert_eq!(shared.load_u64(64, Ordering::SeqCst).unwrap(), 42);

    let private = Mapping::anonymous(4096, Share::Private).unwrap();
    fork_and_store(private.atomic_u64(64).unwrap(), 42);
    assert_eq!(private.load_u64(64, Ordering::SeqCst).unwrap(), 0);
}

#[test]
fn flush_ranges() {
    let (_dir, path, _) = pattern_file(10 * 4096);
    let map = MapOptions::new().mode(Mode::ReadWrite).map_path(&path).unwrap();
    map.write_at(4095, b"across").unwrap();
    map.flush_range(4095, 6).unwrap();
    map.flush_async_range(1, 1).unwrap();
    map.flush_range(0, 0).unwrap();
    map.flush_async().unwrap();
    map.flush().unwrap();
    assert!(matches!(map.flush_range(10 * 4096 - 1, 2), Err(Error::OutOfBounds { .. })));
    assert_eq!(&std::fs::read(&path).unwrap()[4095..4101], b"across");

    // Unaligned start offset: flush still covers the right pages.
    let inner = MapOptions::new().mode(Mode::ReadWrite).offset(100).len(9000).map_path(&path).unwrap();
    inner.write_at(8990, b"0123456789").unwrap();
    inner.flush_range(8990, 10).unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[9090..9100], b"0123456789");
}

#[test]
fn advice() {
    let (_dir, path, _) = pattern_file(16 * 4096);
    let map = MapOptions::new().map_path(&path).unwrap();
    for advice in [
        Advice::Normal,
        Advice::Random,
        Advice::Sequential,
        Advice::WillNeed,
        Advice::DontFork,
        Advice::DoFork,
        Advice::Cold,
    ] {
        map.advise(advice).unwrap_or_else(|e| panic!("{advice:?}: {e}"));
    }
    map.advise_range(Advice::WillNeed, 4097, 10).unwrap();
    let anon = Mapping::anonymous(4 << 20, Share::Private).unwrap();
    anon.advise(Advice::HugePage).unwrap();
    anon.advise(Advice::NoHugePage).unwrap();

    anon.write_at(0, b"gone soon").unwrap();
    // SAFETY: no slice or pointer into `anon` is held.
    unsafe { anon.advise_unchecked(UncheckedAdvice::DontNeed, 0, 4096) }.unwrap();
    let mut buf = [1u8; 9];
    anon.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [0u8; 9], "DONTNEED on private anonymous memory zeroes it");
}

#[test]
fn populate_prefaults() {
    let (_dir, path, data) = pattern_file(64 * 4096);
    for mode in [Mode::ReadOnly, Mode::ReadWrite, Mode::CopyOnWrite] {
        let map = MapOptions::new().mode(mode).map_path(&path).unwrap();
        map.populate().unwrap();
        let populated = MapOptions::new().mode(mode).populate(true).map_path(&path).unwrap();
        let mut buf = vec![0u8; data.len()];
        populated.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, data);
    }
    // Fresh anonymous memory has no pages until touched; populate faults
    // in every one of them.
    let anon = Mapping::anonymous(1 << 20, Share::Shared).unwrap();
    assert_eq!(anon.residency().unwrap().resident_pages, 0);
    anon.populate().unwrap();
    let after = anon.residency().unwrap();
    assert_eq!(after.resident_pages, after.total_pages, "populate must fault in every page");
}

#[test]
fn protect_changes_what_is_allowed() {
    let mut map = Mapping::anonymous(8192, Share::Private).unwrap();
    map.write_at(0, b"rw").unwrap();
    map.protect(Protection::READ).unwrap();
    assert_eq!(map.protection(), Protection::READ);
    assert!(matches!(map.write_at(0, b"x"), Err(Error::ReadOnly { .. })));
    assert!(matches!(map.atomic_u64(0), Err(Error::ReadOnly { .. })));
    let mut buf = [0u8; 2];
    map.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"rw");
    map.protect(Protection::READ | Protection::WRITE).unwrap();
    map.write_at(0, b"ok").unwrap();

    let (_dir, path, _) = pattern_file(4096);
    let mut ro = MapOptions::new().map_path(&path).unwrap();
    assert!(matches!(ro.protect(Protection::READ | Protection::WRITE), Err(Error::ReadOnly { .. })));
    ro.protect(Protection::READ).unwrap();
}

/// Without PROT_READ the checked accessors must fail cleanly, not fault.
#[test]
fn checked_access_to_unreadable_pages_is_an_error() {
    let mut map = Mapping::anonymous(8192, Share::Private).unwrap();
    map.write_at(0, b"hidden").unwrap();
    map.protect(Protection::empty()).unwrap();
    let mut buf = [0u8; 6];
    assert!(matches!(map.read_at(0, &mut buf), Err(Error::OutOfBounds { .. })));
    assert!(matches!(map.load_u64(0, Ordering::Acquire), Err(Error::OutOfBounds { .. })));
    assert!(map.write_at(0, b"x").is_err());
    assert!(map.atomic_u32(0).is_err());
    assert!(map.fill_at(0, 4, 0).is_err());
    assert!(matches!(map.populate(), Err(Error::Invalid { .. })));
    map.flush().unwrap();
    map.protect(Protection::READ).unwrap();
    map.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"hidden");
}

/// Loads work on read-only file mappings with every ordering, including
/// the two that `AtomicU64::load` itself would panic on.
#[test]
fn loads_take_any_ordering_on_read_only_memory() {
    let (_dir, path, data) = pattern_file(4096);
    let map = MapOptions::new().map_path(&path).unwrap();
    let want32 = u32::from_ne_bytes(data[8..12].try_into().unwrap());
    let want64 = u64::from_ne_bytes(data[16..24].try_into().unwrap());
    let writable = Mapping::anonymous(4096, Share::Shared).unwrap();
    writable.write_at(0, &data[..64]).unwrap();
    let orders =
        [Ordering::Relaxed, Ordering::Acquire, Ordering::SeqCst, Ordering::Release, Ordering::AcqRel];
    for order in orders {
        for m in [&map, &writable] {
            assert_eq!(m.load_u32(8, order).unwrap(), want32);
            assert_eq!(m.load_u64(16, order).unwrap(), want64);
        }
    }
}

#[test]
fn huge_pages() {
    let thp = MapOptions::new()
        .mode(Mode::ReadWrite)
        .huge(HugePages::Transparent)
        .map_anonymous(4 << 20, Share::Private);
    let thp = thp.unwrap();
    thp.fill_at(0, 4 << 20, 3).unwrap();

    let pool: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let explicit = MapOptions::new()
        .mode(Mode::ReadWrite)
        .huge(HugePages::Explicit)
        .map_anonymous(2 << 20, Share::Private);
    match explicit {
        Ok(map) => {
            assert!(pool > 0, "MAP_HUGETLB succeeded with an empty pool");
            map.write_at(0, b"huge").unwrap();
        }
        Err(e) => {
            eprintln!("note: explicit huge pages unavailable (pool {pool}): {e}");
            assert!(e.to_string().contains("huge"), "{e}");
        }
    }
    let (_dir, path, _) = pattern_file(4096);
    let err = MapOptions::new().huge(HugePages::Explicit).map_path(&path).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
}

#[test]
fn lock_and_unlock() {
    let map = Mapping::anonymous(4096, Share::Private).unwrap();
    map.lock().unwrap();
    map.unlock().unwrap();
}

#[test]
fn atomics_are_shared_between_two_mappings_of_one_file() {
    let (_dir, path, _) = pattern_file(4096);
    let a = MapOptions::new().mode(Mode::ReadWrite).map_path(&path).unwrap();
    let b = MapOptions::new().mode(Mode::ReadWrite).map_path(&path).unwrap();
    a.atomic_u64(8).unwrap().store(7, Ordering::SeqCst);
    assert_eq!(b.atomic_u64(8).unwrap().fetch_add(1, Ordering::SeqCst), 7);
    assert_eq!(a.load_u64(8, Ordering::SeqCst).unwrap(), 8);
    a.atomic_u32(12).unwrap().store(9, Ordering::SeqCst);
    assert_eq!(b.load_u32(12, Ordering::SeqCst).unwrap(), 9);
}

const PROP_LEN: usize = 3 * 4096 + 555;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn windows_match_std_reads(offset in 0usize..=PROP_LEN + 10, len in 0usize..=PROP_LEN + 10,
                               inner_off in 0usize..PROP_LEN, inner_len in 0usize..600) {
        let (_dir, path, data) = pattern_file(PROP_LEN);
        let result = MapOptions::new().offset(offset as u64).len(len).map_path(&path);
        if len == 0 {
            let refused = matches!(result, Err(Error::ZeroLength { .. }) | Err(Error::OutOfBounds { .. }));
            prop_assert!(refused);
        } else if offset + len > PROP_LEN {
            let refused = matches!(result, Err(Error::OutOfBounds { .. }));
            prop_assert!(refused, "{:?}", result.err());
        } else {
            let map = result.unwrap();
            let mut buf = vec![0u8; inner_len];
            let read = map.read_at(inner_off as u64, &mut buf);
            if inner_off + inner_len <= len {
                prop_assert!(read.is_ok());
                let expect = &data[offset + inner_off..offset + inner_off + inner_len];
                prop_assert_eq!(&buf[..], expect);
                // std agrees with the mapping.
                let mut f = std::fs::File::open(&path).unwrap();
                let mut from_std = vec![0u8; inner_len];
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start((offset + inner_off) as u64)).unwrap();
                std::io::Read::read_exact(&mut f, &mut from_std).unwrap();
                prop_assert_eq!(buf, from_std);
            } else {
                let is_oob = matches!(read, Err(Error::OutOfBounds { .. }));
                prop_assert!(is_oob);
            }
        }
    }
}
