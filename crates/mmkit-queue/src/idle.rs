//! Mappings of segments a queue handle no longer uses, kept so that a
//! segment file recycled under a new number (see `recycle`) is opened
//! through the mapping this process already has.
//!
//! Why: recycling saves the kernel the allocation of fresh pages, but a new
//! mapping still has to fault every page into this process's page tables
//! (on ext4 with a `page_mkwrite` call per page), which at tens of millions
//! of messages a second costs more than the appends. Reusing the old
//! mapping, whose page-table entries are still there, costs nothing. It is
//! what Aeron gets from mapping its term buffers once.
//!
//! Identity: an entry is found by the file's device and inode number. The
//! entry's open mapping keeps its inode alive, so the filesystem cannot
//! give that inode number to another file meanwhile: a match is the same
//! file, under whatever name it now has, and a shared mapping of it shows
//! exactly what a fresh one would.
//!
//! Cost: an idle mapping of a file retention deleted (rather than
//! recycled) keeps that file's storage allocated. Entries whose file has no
//! name left are dropped whenever the handle maps or drops a segment, at
//! most [`MAX_IDLE`] are kept, and none are kept until retention has
//! retired some segment of the queue (before that nothing is recycled).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use mmkit_region::Mapping;

/// How many idle mappings a queue handle keeps at most: enough for the
/// segments retained between a segment's last use and its recycling in
/// common retention settings (a few retained segments plus up to four
/// spares, `recycle::MAX_SPARES`).
pub(crate) const MAX_IDLE: usize = 12;

/// What identifies a segment file's mapping: device, inode and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
}

impl FileKey {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey { dev: meta.dev(), ino: meta.ino(), len: meta.len() }
    }
}

/// A mapping no `Segment` uses, with the file it maps.
pub(crate) struct IdleMapping {
    pub(crate) key: FileKey,
    pub(crate) map: Mapping,
    pub(crate) file: File,
}

/// One queue handle's idle mappings.
#[derive(Default)]
pub(crate) struct IdleMappings {
    entries: Mutex<Vec<IdleMapping>>,
    /// Set once retention has retired a segment of this queue.
    recycling: AtomicBool,
}

impl IdleMappings {
    /// Starts keeping mappings: segments of this queue are being retired,
    /// so their files may come back as new segments.
    pub(crate) fn enable(&self) {
        self.recycling.store(true, Ordering::Relaxed);
    }

    /// Keeps `idle` for reuse, if this queue recycles and the mapping is
    /// sound (a mapping that took a SIGBUS is dropped). Evicts the oldest
    /// entry when full.
    pub(crate) fn put(&self, idle: IdleMapping) {
        if !self.recycling.load(Ordering::Relaxed) || idle.map.is_poisoned() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        prune(&mut entries);
        if entries.len() >= MAX_IDLE {
            entries.remove(0);
        }
        entries.push(idle);
    }

    /// Takes the idle mapping of the file `key` names, if there is one.
    pub(crate) fn take(&self, key: FileKey) -> Option<IdleMapping> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        prune(&mut entries);
        let at = entries.iter().position(|e| e.key == key)?;
        Some(entries.remove(at))
    }

    /// Zeroes the whole file `key` names through its idle mapping, if
    /// there is one, and returns whether it did: streaming stores (see
    /// [`zero_streaming`]) over page-table entries that are already there
    /// cost a fraction of writing the same zeros with `pwrite`. The caller guarantees that no live process
    /// reads the file (see `recycle`: it is retired and unpinned).
    pub(crate) fn zero(&self, key: FileKey) -> bool {
        // Out of the pool while zeroing, so the lock is not held for the
        // milliseconds a large segment takes.
        let Some(idle) = self.take(key) else { return false };
        let (base, len) = idle.map.raw_parts();
        let zeroed = len as u64 == key.len;
        if zeroed {
            // SAFETY: `base..base + len` is `idle.map`, a live writable
            // mapping owned here. The file is retired and unpinned, so no
            // live process reads or writes it through any mapping: plain
            // (non-atomic, streaming) stores race with nobody. A SIGBUS (file
            // truncated by a hostile process) is caught by the mapping's
            // handler, as for every queue mapping.
            unsafe { zero_streaming(base, len) };
        }
        // A caught SIGBUS means some zeros went to anonymous memory instead.
        let zeroed = zeroed && !idle.map.is_poisoned();
        self.put(idle);
        zeroed
    }

    /// How many mappings are idle.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Writes `len` zero bytes at `base` with non-temporal stores on x86-64:
/// a retired segment is zeroed milliseconds before a producer reaches it
/// again, and `memset` (`rep stosb` here) would fill this core's caches
/// with megabytes of zeros, evicting what the producer and reader on
/// this machine are working on; streaming stores go to memory directly.
/// Measured on a bounded queue (16 MiB segments), `append_batch` with a
/// parking reader in another process: 37.8 -> 41.7 M/s; single appends
/// with a spinning reader: 19.5 -> 21.7 M/s (medians, Intel Xeon).
///
/// # Safety
///
/// `base..base + len` must be valid for writes and written by nobody else
/// meanwhile.
unsafe fn zero_streaming(base: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_setzero_si128, _mm_sfence, _mm_stream_si128};
        // The streaming stores need 16-byte alignment: plain stores up to
        // it (a mapping's base is page-aligned, so normally none).
        let head = base.align_offset(16).min(len);
        let body = (len - head) / 64 * 64;
        // SAFETY: every store below lies in `base..base + len` (the
        // caller's promise): `head + body <= len`, and `body` is a
        // multiple of 64 from a 16-aligned address. SSE2 is part of the
        // x86-64 baseline. The fence orders the streaming stores before
        // whatever this thread does next (renaming the file to a spare).
        unsafe {
            std::ptr::write_bytes(base, 0, head);
            let zero = _mm_setzero_si128();
            let mut p = base.add(head).cast::<__m128i>();
            let end = base.add(head + body).cast::<__m128i>();
            while p < end {
                _mm_stream_si128(p, zero);
                _mm_stream_si128(p.add(1), zero);
                _mm_stream_si128(p.add(2), zero);
                _mm_stream_si128(p.add(3), zero);
                p = p.add(4);
            }
            std::ptr::write_bytes(base.add(head + body), 0, len - head - body);
            _mm_sfence();
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's promise.
    unsafe {
        std::ptr::write_bytes(base, 0, len)
    };
}

/// Drops entries whose file no longer has a name (deleted by retention):
/// they can never be reused, and they hold the file's storage. On a
/// background thread when one starts: closing the last descriptor of a
/// deleted file frees its blocks then and there, and on a file system
/// mounted with `discard` (ext4 on this project's virtio disk) that waits
/// for the device. A producer pruning at a rollover was blocked in `close`
/// 75 times in 2 s of bounded batches, about 20 ms in all.
fn prune(entries: &mut Vec<IdleMapping>) {
    let mut dead = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        if entries[i].file.metadata().is_ok_and(|m| m.nlink() > 0) {
            i += 1;
        } else {
            // In order: the pool evicts its oldest entry first.
            dead.push(entries.remove(i));
        }
    }
    if !dead.is_empty() {
        // Without a thread the closure, and the mappings, drop here.
        crate::background("mmkit-close", move || drop(dead));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmkit_region::{MapOptions, Mode};
    use std::path::Path;

    const LEN: u64 = 8192;

    #[test]
    fn streaming_zeroes_exactly_the_range_at_any_alignment_and_length() {
        for start in 0..20 {
            for len in [0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 200, 4096 + 3] {
                let mut buf = vec![0xABu8; start + len + 40];
                // SAFETY: the range lies inside `buf`, which nothing else uses.
                unsafe { zero_streaming(buf.as_mut_ptr().add(start), len) };
                let zeroed = |i: usize| (start..start + len).contains(&i);
                for (i, &b) in buf.iter().enumerate() {
                    assert_eq!(b, if zeroed(i) { 0 } else { 0xAB }, "start {start}, len {len}, byte {i}");
                }
            }
        }
    }

    fn idle_of(path: &Path, fill: u8) -> IdleMapping {
        std::fs::write(path, vec![fill; LEN as usize]).unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        let key = FileKey::of(&file.metadata().unwrap());
        let map =
            MapOptions::new().len(LEN as usize).mode(Mode::ReadWrite).map_file_at(&file, Some(path)).unwrap();
        IdleMapping { key, map, file }
    }

    fn enabled() -> IdleMappings {
        let pool = IdleMappings::default();
        pool.enable();
        pool
    }

    #[test]
    fn nothing_is_kept_until_segments_are_retired() {
        let dir = tempfile::tempdir().unwrap();
        let pool = IdleMappings::default();
        pool.put(idle_of(&dir.path().join("a"), 1));
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn a_mapping_is_found_by_its_file_under_a_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let pool = enabled();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let idle = idle_of(&a, 1);
        let key = idle.key;
        pool.put(idle);
        pool.put(idle_of(&b, 2));
        std::fs::rename(&a, dir.path().join("renamed")).unwrap();
        let renamed = std::fs::metadata(dir.path().join("renamed")).unwrap();
        let found = pool.take(FileKey::of(&renamed)).unwrap();
        assert_eq!(found.key, key);
        assert!(pool.take(key).is_none(), "taken once");
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn mappings_of_deleted_files_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let pool = enabled();
        let a = dir.path().join("a");
        let idle = idle_of(&a, 1);
        let key = idle.key;
        pool.put(idle);
        std::fs::remove_file(&a).unwrap();
        assert!(pool.take(key).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn the_pool_is_bounded_and_evicts_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let pool = enabled();
        let mut keys = Vec::new();
        for i in 0..MAX_IDLE + 2 {
            let idle = idle_of(&dir.path().join(format!("f{i}")), 0);
            keys.push(idle.key);
            pool.put(idle);
        }
        assert_eq!(pool.len(), MAX_IDLE);
        assert!(pool.take(keys[0]).is_none() && pool.take(keys[1]).is_none());
        assert!(pool.take(keys[MAX_IDLE + 1]).is_some());
    }

    #[test]
    fn zeroing_through_the_mapping_reaches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let pool = enabled();
        let a = dir.path().join("a");
        let idle = idle_of(&a, 0xEE);
        let key = idle.key;
        pool.put(idle);
        assert!(pool.zero(key));
        assert!(std::fs::read(&a).unwrap().iter().all(|&b| b == 0));
        assert_eq!(pool.len(), 1, "kept for reuse after zeroing");
        let other = dir.path().join("b");
        std::fs::write(&other, [1u8; LEN as usize]).unwrap();
        assert!(
            !pool.zero(FileKey::of(&std::fs::metadata(&other).unwrap())),
            "no mapping: the caller writes"
        );
    }
}
