//! The single-producer lease: a producer alone on a queue appends with
//! plain stores instead of a locked `fetch_add`, and hands the queue back
//! to the shared protocol when a second producer arrives.
//!
//! The lease word in the meta file holds `slot + 1` of the holder. The
//! holder, on every append, stores "exclusive" into its slot's state, runs
//! a light barrier (a compiler barrier; see `mmkit_sync::barrier`) and
//! loads the lease word: it appends exclusively only if the word still
//! names it. A newcomer sets [`LEASE_REVOKING`] in the word, runs the heavy
//! barrier (`membarrier`), then waits until the holder's state is no longer
//! "exclusive" or "claiming" (or the holder is dead), repairs the tail if a
//! dead holder left its last frame uncounted, and clears the word. By the
//! asymmetric-fence argument, either the holder's next load sees the
//! revoking bit, or the newcomer sees the holder's state and waits for it:
//! they never both write the tail with plain stores and a `fetch_add`.
//! A holder that is gone (dead, or its slot given up) needs no barrier;
//! only processes where the barrier works take the lease.
//! `docs/queue-format.md` ("The single-producer lease") has the whole
//! argument.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mmkit_sync::ProcessToken;

use crate::error::{Error, Result};
use crate::format::*;
use crate::queue::Queue;

/// How long a revoker waits between two looks at a busy holder's state,
/// and how often it checks the holder's liveness meanwhile.
const HOLDER_POLL: Duration = Duration::from_micros(20);
const HOLDER_LIVENESS: Duration = Duration::from_millis(2);

/// Longest a revoker waits for a live holder that makes no progress: a
/// holder stays mid-append for microseconds, or for as long as a batch
/// takes, and the tail moves meanwhile. One whose tail has not moved for
/// this long is stopped, or the slot is garbage (a forged or corrupt token
/// naming some unrelated live process), and waiting on would never end.
/// As long as the admin lock's bound (`Meta::admin`).
const HOLDER_STUCK: Duration = Duration::from_secs(10);

/// Frames past the tail a dead holder can have committed without counting
/// them: it counts each frame right after committing it, so one. More
/// frames past the tail can only come from a machine crash (the tail's
/// page written back older than the frames'); those are left to the
/// stale-tail rule, which seals the segment without overwriting them.
const MAX_UNCOUNTED: u32 = 1;

fn slot_offset(slot: u64) -> u64 {
    PRODUCER_TABLE + slot * PRODUCER_SLOT_SIZE
}

impl Queue {
    /// Takes the lease away from whoever holds it, so that every producer
    /// uses the shared protocol; returns once the lease word is 0. `mine` is
    /// the revoking producer's own slot.
    ///
    /// A live holder may be in the middle of an append that only the heavy
    /// barrier makes visible. Where that barrier fails (no `membarrier`, or
    /// a seccomp profile denying it) a live holder's lease cannot be taken
    /// away safely: an error, with the lease word left as it was (the
    /// barrier is tried before the word is touched). A holder that is gone
    /// (dead, or its slot given up) needs no barrier, so a dead holder never
    /// blocks registration.
    pub(crate) fn revoke_lease(&self, mine: u64) -> Result<()> {
        let lease = self.meta().lease()?;
        loop {
            let l = lease.load(Ordering::SeqCst);
            if l == 0 {
                return Ok(());
            }
            let holder = l & !LEASE_REVOKING;
            let gone = self.holder_gone(holder, mine)?;
            // With the revoking bit already set (by a racing or dead
            // revoker), this barrier is the one that pairs with it;
            // otherwise it only tells whether the one after our own store
            // of the bit can work.
            if !gone && !mmkit_sync::barrier::heavy() {
                return Err(self.unfenced_holder(holder));
            }
            if l & LEASE_REVOKING == 0 {
                if lease.compare_exchange(l, l | LEASE_REVOKING, Ordering::SeqCst, Ordering::SeqCst).is_err()
                {
                    continue;
                }
                // Failing now, having worked a moment ago, is all but
                // impossible. The bit is not taken back: a racing revoker
                // may be relying on it already. It costs the holder only
                // its lease (it sees the bit and appends the shared way),
                // the holder clears it when it lets go, and anyone
                // finishes the revocation once the holder is gone.
                if !gone && !mmkit_sync::barrier::heavy() {
                    return Err(self.unfenced_holder(holder));
                }
            }
            self.wait_for_holder(holder)?;
            self.count_uncounted_frames()?;
            self.pad_unfinished_run(holder)?;
            let _ = lease.compare_exchange(l | LEASE_REVOKING, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// Whether the producer in lease-holder slot `holder` (`slot + 1`) can
    /// append no more, so that revoking its lease needs no barrier: a slot
    /// number out of range (a corrupt word) has no holder; a slot that is
    /// the revoker's own (`mine`) was given up by the holder or taken from
    /// it dead; a free slot (token 0) was given up; a dead token's process
    /// has ended. A holder that gave its slot up did so with a release
    /// store, and a process's exit completes its stores, so everything the
    /// holder wrote is visible. A live token counts as the holder's, even
    /// when it is a newer owner's.
    fn holder_gone(&self, holder: u64, mine: u64) -> Result<bool> {
        let Some(slot) = holder.checked_sub(1).filter(|&s| s < PRODUCER_SLOTS as u64) else {
            return Ok(true);
        };
        if slot == mine {
            return Ok(true);
        }
        let t = self.meta().u64_at(slot_offset(slot) + SLOT_TOKEN)?.load(Ordering::SeqCst);
        Ok(t == 0 || !ProcessToken::from_raw(t).is_alive())
    }

    /// The error for a live lease holder that this process cannot fence.
    fn unfenced_holder(&self, holder: u64) -> Error {
        let slot = holder.saturating_sub(1);
        let pid = self
            .meta()
            .u64_at(slot_offset(slot) + SLOT_TOKEN)
            .map(|t| ProcessToken::from_raw(t.load(Ordering::SeqCst)).pid())
            .unwrap_or(0);
        Error::io(
            "take the single-producer lease away",
            &self.meta().path,
            std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!(
                    "membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) failed in this process, and the lease \
                     holder (producer slot {slot}, pid {pid}) is alive: its appends cannot be fenced; \
                     a producer can register once it is gone"
                ),
            ),
        )
    }

    /// Waits until the producer in lease-holder slot `holder` (`slot + 1`)
    /// is neither appending exclusively nor claiming, or is dead. A slot
    /// number out of range (a corrupt word) has nobody to wait for. A live
    /// holder that stays mid-append while the tail stays put for
    /// [`HOLDER_STUCK`] is an error: the lease cannot be taken away safely,
    /// and nothing says it ever will be. One whose tail moves (a long
    /// batch) is waited for.
    fn wait_for_holder(&self, holder: u64) -> Result<()> {
        let Some(slot) = holder.checked_sub(1).filter(|&s| s < PRODUCER_SLOTS as u64) else {
            return Ok(());
        };
        let meta = self.meta();
        let token = meta.u64_at(slot_offset(slot) + SLOT_TOKEN)?;
        let state = meta.u64_at(slot_offset(slot) + SLOT_STATE)?;
        // When the tail was last seen to move, and where it was.
        let mut moved = (Instant::now(), self.append_progress());
        let mut checked = moved.0;
        loop {
            let st = state.load(Ordering::SeqCst) & 3;
            if st != PRODUCER_EXCLUSIVE && st != PRODUCER_CLAIMING {
                return Ok(());
            }
            if checked.elapsed() >= HOLDER_LIVENESS {
                checked = Instant::now();
                let t = token.load(Ordering::SeqCst);
                if t == 0 || !ProcessToken::from_raw(t).is_alive() {
                    return Ok(());
                }
                if moved.0.elapsed() >= HOLDER_STUCK {
                    let now = self.append_progress();
                    if now != moved.1 {
                        moved = (Instant::now(), now);
                        continue;
                    }
                    return Err(Error::corrupt(
                        &meta.path,
                        format!(
                            "the single-producer lease holder (producer slot {slot}, live pid {}) has been \
                             mid-append with no progress for over {HOLDER_STUCK:?}: a stopped process or \
                             a garbage slot; the lease cannot be taken away",
                            ProcessToken::from_raw(t).pid()
                        ),
                    ));
                }
            }
            std::thread::sleep(HOLDER_POLL);
        }
    }

    /// The active segment and its tail word: what a holder's appends move.
    /// `None` when they cannot be read (no segment yet, a bad meta), which
    /// counts as no progress.
    fn append_progress(&self) -> Option<(u64, u64)> {
        let active = self.meta().active_segment().ok()?;
        let seg = self.segment(active).ok()?;
        Some((active, seg.tail().load(Ordering::SeqCst)))
    }

    /// A holder counts each frame in the tail right after committing it; one
    /// killed in between leaves a committed frame past the tail. Count it
    /// (compare-and-swap, so racing revokers agree), so the shared protocol
    /// does not take the frame for stale data and seal the segment.
    fn count_uncounted_frames(&self) -> Result<()> {
        let active = self.meta().active_segment()?;
        let seg = match self.segment(active) {
            Ok(seg) => seg,
            Err(e) if crate::segment::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        for _ in 0..MAX_UNCOUNTED {
            let tail = seg.tail().load(Ordering::SeqCst);
            let (count, offset) = split_tail(tail);
            let Some(FrameWord::Message { len, .. }) = seg.load_frame(offset) else { return Ok(()) };
            let bytes = frame_size(len as u64);
            if len as usize > self.max_message_size()
                || check_frame(seg.capacity, offset, bytes, count, 1).is_err()
                || count + 1 >= u32::MAX as u64
            {
                return Ok(());
            }
            let next = (count + 1) << 32 | (offset + bytes);
            let _ = seg.tail().compare_exchange(tail, next, Ordering::SeqCst, Ordering::SeqCst);
        }
        Ok(())
    }

    /// A holder killed while copying a frame leaves its bytes past the tail
    /// (the frame's state word stays 0, since the commit comes last). A
    /// later, shorter frame at the tail would leave the rest of them where
    /// the next frame's state word belongs, and whoever appended there
    /// would take them for frames a machine crash left behind and seal the
    /// segment (see `stale_tail`) with junk where readers look next. So the
    /// holder's unfinished run (recorded in its slot before it was written)
    /// becomes one padding claim: the tail is moved past it by a
    /// compare-and-swap, so racing revokers agree and nothing a later
    /// producer claimed is covered, then the padding word is written as
    /// recovery writes it. A revoker that dies in between leaves a dead
    /// claim without a record, which readers recover the same way. O(1):
    /// nothing is read or written per byte of the run.
    ///
    /// Best effort: a holder writes only in the active segment, so a run
    /// recorded in another one is over (stale, or sealed since), and a
    /// segment that cannot be mapped is left alone. What is left unpadded
    /// can only end in a seal at the junk, which readers step over.
    fn pad_unfinished_run(&self, holder: u64) -> Result<()> {
        let Some(slot) = holder.checked_sub(1).filter(|&s| s < PRODUCER_SLOTS as u64) else {
            return Ok(());
        };
        let run = self.meta().u64_at(slot_offset(slot) + SLOT_RUN)?.load(Ordering::SeqCst);
        let (number, end) = (run >> 32, run & 0xffff_ffff);
        if run == 0 || number != self.meta().active_segment()? {
            return Ok(());
        }
        let Ok(seg) = self.segment(number) else { return Ok(()) };
        let tail = seg.tail().load(Ordering::SeqCst);
        let (count, offset) = split_tail(tail);
        let unfinished = offset < end
            && end - offset <= LEN_MASK as u64
            && count + 1 < u32::MAX as u64
            && seg.final_count().load(Ordering::SeqCst) == u64::MAX
            && check_frame(seg.capacity, offset, end - offset, count, 1).is_ok()
            && seg.frame_word(offset).is_some_and(|w| w.load(Ordering::SeqCst) == 0);
        let next = (count + 1) << 32 | end;
        if unfinished && seg.tail().compare_exchange(tail, next, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            crate::recovery::pad(self, &seg, count, offset, count + 1, end, true)?;
        }
        Ok(())
    }

    /// Whether every producer slot but `mine` is free or owned by a dead
    /// process. Frees the slots of dead processes on the way (their claim
    /// records stay for recovery), so that later calls read no `/proc` for
    /// them.
    fn alone(&self, mine: u64) -> Result<bool> {
        for slot in (0..PRODUCER_SLOTS as u64).filter(|&s| s != mine) {
            let word = self.meta().u64_at(slot_offset(slot) + SLOT_TOKEN)?;
            let t = word.load(Ordering::SeqCst);
            if t == 0 {
                continue;
            }
            if ProcessToken::from_raw(t).is_alive() {
                return Ok(false);
            }
            let _ = word.compare_exchange(t, 0, Ordering::SeqCst, Ordering::Relaxed);
        }
        Ok(true)
    }

    /// Takes the lease for producer slot `mine` if no other producer is
    /// registered; returns whether it did. The slot was registered (its
    /// token stored, SeqCst) before, and a producer registering later loads
    /// the lease word (SeqCst) after storing its token: of two producers
    /// doing this at once, at least one sees the other.
    ///
    /// Only in a process where the heavy barrier works: taking the lease
    /// away from a live holder needs it, and where it fails here it almost
    /// surely fails for the producers that would take the lease away too
    /// (the same kernel, and usually the same seccomp profile), which could
    /// then never register beside this one. Such systems use the shared
    /// protocol only.
    pub(crate) fn try_lease(&self, mine: u64) -> Result<bool> {
        let lease = self.meta().lease()?;
        if lease.load(Ordering::SeqCst) != 0 || !self.alone(mine)? || !barrier_works() {
            return Ok(false);
        }
        let id = mine + 1;
        if lease.compare_exchange(0, id, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Ok(false);
        }
        if self.alone(mine)? {
            return Ok(true);
        }
        // Someone registered meanwhile; we never appended under the lease.
        let _ = lease.compare_exchange(id, 0, Ordering::SeqCst, Ordering::SeqCst);
        Ok(false)
    }

    /// Gives up the lease held by slot `mine`, between appends; also while
    /// it is being revoked (a revoker that could not finish leaves the bit
    /// set). That is safe beside a revoker still at work: this producer
    /// appends no more under the lease, and nobody can take the lease
    /// while the revoker is registered (see [`Queue::try_lease`]).
    pub(crate) fn release_lease(&self, mine: u64) {
        if let Ok(lease) = self.meta().lease() {
            for held in [mine + 1, (mine + 1) | LEASE_REVOKING] {
                if lease.compare_exchange(held, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                    return;
                }
            }
        }
    }
}

/// Whether this process can run the heavy barrier (registering for it on
/// first use): one `membarrier` call, made only when a producer is about
/// to take the lease.
fn barrier_works() -> bool {
    mmkit_sync::barrier::register() && mmkit_sync::barrier::heavy()
}
