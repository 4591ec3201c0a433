//! Drop-behind: a queue without retention writes back the sealed segments
//! that lie far enough behind the active one and drops them from the page
//! cache, as databases do with their write-ahead logs.
//!
//! Why: an unbounded queue writes every byte into pages the kernel has
//! never given it before. Left alone, the kernel keeps all of them cached
//! (the machine may have gigabytes free), so every new segment needs
//! fresh memory. On a VM that returns freed memory to its host (free page
//! reporting, ballooning), touching fresh memory faults on the host: on
//! the Intel Xeon VM we measure on, clearing new page-cache pages ran at
//! 0.1–0.25 GB/s once the guest's unreported free memory was used up,
//! and a run of 100M messages averaged 3.2–3.5 M/s. Pages dropped behind
//! the tail go back to the kernel's free lists, the next segment's pages
//! come from there, still backed by the host, and the same run averaged
//! 13.6–13.9 M/s (see `docs/benchmarks-queue.md`, "ninth session").
//!
//! Safety of the data: only clean pages are dropped, and only pages no
//! process has mapped (`POSIX_FADV_DONTNEED` skips the others), so a
//! reader or a late producer still in an old segment keeps its pages,
//! and one that comes later reads them back from the file. Nothing is
//! lost or changed; a reader far behind the tail reads from the disk
//! instead of memory, as it would after the kernel evicted the pages
//! under memory pressure.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::segment::segment_file_name;

/// Default bytes of sealed segments a queue without retention keeps cached
/// behind the active one (see [`OpenOptions::cache_behind`](crate::OpenOptions::cache_behind)).
pub const DEFAULT_CACHE_BEHIND: u64 = 256 << 20;

/// One queue handle's drop-behind work: the segments to drop and a worker
/// thread, started when there is work and gone when there is none.
#[derive(Default)]
pub(crate) struct DropBehind {
    state: Arc<Mutex<State>>,
}

/// Segments behind the target that one rollover may schedule at most.
const MAX_WALK: u64 = 64;

#[derive(Default)]
struct State {
    /// The next segment number to drop: `None` until the first rollover
    /// this handle sees, so that it drops only segments sealed while it was
    /// open (a handle opened on an old queue does not walk its history).
    next: Option<u64>,
    /// The highest segment number to drop.
    target: u64,
    /// Whether a worker thread is dropping segments up to `target`.
    running: bool,
    /// The process that started it: a child forked meanwhile inherits
    /// `running` without the thread.
    pid: u32,
}

impl DropBehind {
    /// Called by the producer whose rollover made `active` the active
    /// segment: schedules the segments more than `keep` (at least one)
    /// sealed segments behind it.
    pub(crate) fn rolled_over(&self, dir: &Path, active: u64, keep: u64) {
        let Some(target) = active.checked_sub(keep.max(1).saturating_add(1)) else { return };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // A jump of the active number (other processes' rollovers, or a
        // forged meta word) is not walked number by number, one `open`
        // each: only the last segments behind it can hold pages worth
        // dropping, and dropping is best effort.
        let next = st.next.get_or_insert(target);
        *next = (*next).max(target.saturating_sub(MAX_WALK));
        let next = *next;
        st.target = st.target.max(target);
        let pid = std::process::id();
        if (st.running && st.pid == pid) || next > st.target {
            return;
        }
        (st.running, st.pid) = (true, pid);
        drop(st);
        let (state, dir) = (Arc::clone(&self.state), dir.to_path_buf());
        if !crate::background("mmkit-drop", move || work(&state, &dir)) {
            self.state.lock().unwrap_or_else(|p| p.into_inner()).running = false;
        }
    }
}

/// The worker: drops segments one at a time until it has caught up.
fn work(state: &Mutex<State>, dir: &Path) {
    loop {
        let number = {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            match st.next {
                Some(n) if n <= st.target => {
                    st.next = Some(n + 1);
                    n
                }
                _ => {
                    st.running = false;
                    return;
                }
            }
        };
        drop_segment(&dir.join(segment_file_name(number)));
    }
}

/// Writes back segment file `path` and drops its clean, unmapped pages
/// from the page cache. Best effort: a file retention deleted meanwhile,
/// or a writeback error, leaves the pages as they are (dirty pages are
/// never dropped, so an error loses nothing).
fn drop_segment(path: &Path) {
    let Ok(file) = std::fs::File::open(path) else { return };
    use std::os::fd::AsRawFd;
    let flags =
        libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: `sync_file_range(2)` reads no memory of ours; the descriptor
    // is open for the duration of the call (rustix has no wrapper).
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) };
    let _ = mmkit_region::residency::evict_fd(&file, Some(path));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduled(calls: &[(u64, u64)]) -> (Option<u64>, u64) {
        let d = DropBehind::default();
        // A directory that does not exist: the worker finds no files.
        let dir = Path::new("/nonexistent-mmkit-dropbehind-test");
        for &(active, keep) in calls {
            d.rolled_over(dir, active, keep);
        }
        let st = d.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.next, st.target)
    }

    #[test]
    fn keeps_at_least_one_sealed_segment_and_never_the_active_one() {
        assert_eq!(scheduled(&[(1, 1)]), (None, 0), "nothing sealed behind segment 1 to drop");
        assert_eq!(scheduled(&[(2, 0)]).1, 0, "keep 0 counts as 1: segment 0 only");
        assert_eq!(scheduled(&[(10, u64::MAX)]), (None, 0), "a huge window drops nothing");
        assert_eq!(scheduled(&[(9, 4)]).1, 4);
    }

    #[test]
    fn a_forked_child_starts_its_own_worker() {
        let d = DropBehind::default();
        // As inherited from a parent whose worker was running at the fork.
        *d.state.lock().unwrap() = State { next: Some(5), target: 5, running: true, pid: 0 };
        d.rolled_over(Path::new("/nonexistent-mmkit-dropbehind-test"), 8, 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while d.state.lock().unwrap().running && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let st = d.state.lock().unwrap();
        assert_eq!((st.next, st.running), (Some(7), false), "segments 5 and 6 were dropped");
    }

    #[test]
    fn a_handle_drops_only_what_was_sealed_while_it_was_open() {
        let (next, target) = scheduled(&[(1000, 1), (1001, 1)]);
        assert_eq!(target, 999);
        assert!(next.is_some_and(|n| n >= 998), "started at 998, not at segment 0: {next:?}");
    }
}
