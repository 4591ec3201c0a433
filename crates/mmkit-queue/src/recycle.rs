//! Segment recycling: retention turns a retired segment file into a
//! zeroed spare, and the next new segment is built from that spare instead
//! of a fresh file.
//!
//! Why: the first write to each page of a fresh, preallocated file costs
//! the kernel several microseconds (allocating and zeroing the page and,
//! on ext4, converting the unwritten extent), which at tens of millions of
//! messages a second is more CPU than the appends themselves. A recycled
//! file's blocks are written and its pages usually still cached, and each
//! process opens it through the mapping it already had (see `idle`), so a
//! bounded queue (one with retention) runs at the speed of warm memory, as
//! Aeron's reused term buffers do.
//!
//! Safety against readers: a file may only be rewritten once no live
//! process can still read it through a mapping. Each open queue handle owns
//! a slot in the meta file's pin table, naming the lowest segment it may
//! have mapped. A handle stores its pin (SeqCst) and then checks the first
//! retained segment (SeqCst) before it opens a segment; retention raises
//! the first retained segment (SeqCst) and then reads the pins (SeqCst).
//! So either retention sees the pin and deletes the file instead (an unlink
//! leaves existing mappings intact), or the opener sees the segment is
//! gone and does not open it. Pins of dead processes are ignored.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use mmkit_sync::ProcessToken;

use crate::error::{Error, Result};
use crate::format::*;
use crate::idle::{FileKey, IdleMappings};
use crate::meta::Meta;

/// How many zeroed spares a queue directory keeps at most; further
/// retired segments are deleted. Four, not two: retention zeroes on a
/// thread of its own, which a busy producer and reader leave short of CPU,
/// so spares come in bursts. With room for two, a bounded queue at full
/// speed (16 MiB segments, `append_batch` with a reader in another process)
/// deleted surplus spares in bursts and later built from a twentieth to an
/// eighth of its segments fresh, each at a third of a recycled one's speed;
/// with four (and no fresh segment built ahead, see `Producer::precreate`),
/// 1–2.5% (see `docs/benchmarks-queue.md`). The cost is disk: up to four
/// segments beyond what retention keeps.
pub(crate) const MAX_SPARES: usize = 4;

/// A pin value meaning "nothing mapped".
const UNPINNED: u64 = u64::MAX;

/// This handle's slot in the pin table.
pub(crate) struct PinSlot {
    offset: u64,
    token: u64,
}

impl PinSlot {
    /// Takes a free slot, or one whose owner died.
    pub(crate) fn acquire(meta: &Meta) -> Result<PinSlot> {
        let token = ProcessToken::current_process().to_raw();
        for i in 0..PIN_SLOTS as u64 {
            let offset = PIN_TABLE + i * PIN_SLOT_SIZE;
            let owner = meta.u64_at(offset)?;
            let cur = owner.load(Ordering::Acquire);
            let free = cur == 0 || (cur != token && !ProcessToken::from_raw(cur).is_alive());
            if free && owner.compare_exchange(cur, token, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                meta.u64_at(offset + 8)?.store(UNPINNED, Ordering::SeqCst);
                return Ok(PinSlot { offset, token });
            }
        }
        Err(Error::TableFull { path: meta.path.clone(), table: "pin", capacity: PIN_SLOTS })
    }

    /// Pins `lowest` (the lowest segment this handle may have mapped) and
    /// returns whether segment `wanted` is still retained, i.e. may be
    /// opened: retention will not rewrite it while the pin stands.
    pub(crate) fn pin(&self, meta: &Meta, lowest: u64, wanted: u64) -> Result<bool> {
        self.set(meta, Some(lowest))?;
        Ok(meta.first()?.load(Ordering::SeqCst) <= wanted)
    }

    /// Sets the pin to `lowest`, the lowest segment this handle has mapped
    /// (`None`: none). Raising it is safe once the segments below are
    /// unmapped, which is what lets retention recycle them.
    pub(crate) fn set(&self, meta: &Meta, lowest: Option<u64>) -> Result<()> {
        meta.u64_at(self.offset + 8)?.store(lowest.unwrap_or(UNPINNED), Ordering::SeqCst);
        Ok(())
    }

    /// Gives the slot back.
    pub(crate) fn release(&self, meta: &Meta) {
        if let (Ok(pin), Ok(owner)) = (meta.u64_at(self.offset + 8), meta.u64_at(self.offset)) {
            pin.store(UNPINNED, Ordering::SeqCst);
            let _ = owner.compare_exchange(self.token, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Whether a live handle may still have segment `s` (or an older one)
/// mapped. Call after raising the first retained segment past `s`.
pub(crate) fn pinned(meta: &Meta, s: u64) -> Result<bool> {
    for i in 0..PIN_SLOTS as u64 {
        let offset = PIN_TABLE + i * PIN_SLOT_SIZE;
        let owner = meta.u64_at(offset)?.load(Ordering::SeqCst);
        if owner == 0 || meta.u64_at(offset + 8)?.load(Ordering::SeqCst) > s {
            continue;
        }
        if ProcessToken::from_raw(owner).is_alive() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Turns retired segment file `path` into a zeroed spare, or deletes it
/// when the directory already has enough spares. Returns whether it became
/// a spare. The caller made sure no live process has it mapped. A file
/// already gone (another retention pass took it) is `NotFound`.
pub(crate) fn retire(dir: &Path, path: &Path, capacity: u64, idle: &IdleMappings) -> io::Result<bool> {
    if spares(dir).len() >= MAX_SPARES {
        return std::fs::remove_file(path).map(|()| false);
    }
    // Zeroed under a temporary name carrying our pid: if we die half way,
    // the next open of the queue sweeps it, and no one ever takes a
    // half-zeroed spare.
    let tmp = dir.join(format!(".tmp-zero-{}-{}.seg", std::process::id(), crate::segment::unique()));
    std::fs::rename(path, &tmp)?;
    let made = zero_file(&tmp, capacity, idle).is_ok() && install_spare(dir, &tmp);
    if !made {
        let _ = std::fs::remove_file(&tmp);
    }
    // The segment is gone either way: a failed zeroing only loses the spare.
    Ok(made)
}

/// Renames zeroed file `tmp` to a free spare name, if one is left. Spares
/// have fixed names (`.spare-0.seg` to `.spare-3.seg`) taken with
/// `RENAME_NOREPLACE`, so the limit holds however many retention passes,
/// in however many processes, finish at once.
fn install_spare(dir: &Path, tmp: &Path) -> bool {
    (0..MAX_SPARES)
        .any(|k| crate::segment::rename_noreplace(tmp, &dir.join(format!(".spare-{k}.seg"))).is_ok())
}

/// Makes `tmp`, a segment file built (from a spare or fresh) by a creator
/// that lost the race to rename it into place, a spare: only its header
/// was written, so zeroing the header leaves it all zero. Deleted instead
/// (off this thread) when the directory has enough spares or the zeroing
/// fails.
pub(crate) fn give_back(dir: &Path, tmp: &Path, capacity: u64) {
    let kept = spares(dir).len() < MAX_SPARES
        && open_rw(tmp).and_then(|f| write_zeros(&f, 0, SEGMENT_HEADER.min(capacity))).is_ok()
        && install_spare(dir, tmp);
    if !kept {
        crate::remove_later(tmp.to_path_buf());
    }
}

/// Zeroes the whole file. Not just below the tail word: after a machine
/// crash the tail on disk can be older than the frames after it (see
/// `stale_tail` in `producer`), and a stale frame left in a spare would
/// seal the new segment early. Retired segments are full, so the whole
/// file is what they used anyway.
fn zero_file(path: &Path, capacity: u64, idle: &IdleMappings) -> io::Result<()> {
    let file = open_rw(path)?;
    let stat = file.metadata()?;
    if stat.len() != capacity {
        return Err(io::Error::other("segment file has the wrong size"));
    }
    // Through this handle's own idle mapping of the file when it has one
    // (the producer that filled it usually does), else with `pwrite`.
    if idle.zero(FileKey::of(&stat)) {
        return Ok(());
    }
    write_zeros(&file, 0, capacity)
}

/// Writes zeros over `from..to` with `pwrite`, for a file this handle
/// has no idle mapping of: the pages are usually cached, so this is a
/// memory copy, with no mapping (and no page-table work) needed.
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    // No bigger than needed: a given-back spare only needs its header.
    let zeros = vec![0u8; CHUNK.min(to.saturating_sub(from)) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Ready spares in `dir`.
pub(crate) fn spares(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(".spare-") && n.ends_with(".seg")))
        .map(|e| e.path())
        .collect()
}

/// Moves a spare of exactly `capacity` bytes to `tmp` and returns it
/// opened, if there is one. Taking is a rename, so two creators never take
/// the same spare; a spare of the wrong size (the queue was recreated with
/// another segment size) is deleted.
pub(crate) fn take_spare(dir: &Path, tmp: &Path, capacity: u64) -> Option<File> {
    for spare in spares(dir) {
        if std::fs::rename(&spare, tmp).is_err() {
            continue;
        }
        match open_rw(tmp) {
            Ok(f) if f.metadata().is_ok_and(|m| m.len() == capacity) => return Some(f),
            _ => {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
    None
}

fn open_rw(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_given_back_is_zero_again_and_bounded_in_number() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = 16 << 10;
        for k in 0..MAX_SPARES + 1 {
            let tmp = dir.path().join(format!(".tmp-3-1-{k}.seg"));
            let mut image = vec![0u8; capacity];
            image[..SEGMENT_HEADER as usize].fill(0xA5);
            std::fs::write(&tmp, &image).unwrap();
            give_back(dir.path(), &tmp, capacity as u64);
            // The one over the limit is deleted on a background thread.
            assert!(crate::gone_soon(&tmp), "{tmp:?}");
        }
        let spares = spares(dir.path());
        assert_eq!(spares.len(), MAX_SPARES, "the one over the limit was deleted");
        for s in spares {
            assert!(std::fs::read(&s).unwrap().iter().all(|&b| b == 0), "{s:?}");
        }
    }

    #[test]
    fn spare_names_never_repeat() {
        let names: std::collections::HashSet<String> =
            (0..100_000).map(|_| crate::segment::unique()).collect();
        assert_eq!(names.len(), 100_000);
    }
}
