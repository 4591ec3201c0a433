//! Crash recovery: telling a live producer's uncommitted claim from one a
//! dead producer abandoned, and turning an abandoned claim into padding in
//! one step, whatever its size.
//!
//! A claim is counted in the segment's tail before it is committed (under
//! the shared protocol, and for [`Producer::claim`](crate::Producer::claim)
//! under the lease). Its producer records it in its slot of the producer
//! table (segment, first sequence, count, first and end offsets) before it
//! marks the slot `CLAIMED`; the record is written only while the slot says
//! `CLAIMING`, so a record in any other state is complete. A reader stuck
//! at an uncommitted frame asks [`assess`]; if nobody alive can still
//! commit there, the frame's state word is compare-and-swapped to one
//! padding frame covering the rest of the dead claim (the claim's frames
//! are committed in order, so everything after the first uncommitted one
//! is uncommitted too). The argument is in `docs/queue-format.md`.

use std::sync::atomic::Ordering;

use mmkit_sync::ProcessToken;

use crate::error::Result;
use crate::format::*;
use crate::meta::Meta;
use crate::queue::Queue;
use crate::segment::Segment;

/// Index-slot flag: the claim was abandoned by a dead producer and is
/// covered by padding; the low bits are the padding's offset (in the slot
/// of the run's first claim) or, with [`SLOT_RUN_LINK`], the distance back
/// to that claim.
pub(crate) const SLOT_ABANDONED: u32 = 1 << 31;

/// Index-slot flag, with [`SLOT_ABANDONED`]: the low bits are the distance
/// back to the first claim of the padded run (see [`mark_padded_run`]).
/// Offsets are below 2^30, so the bit is free in every other slot.
pub(crate) const SLOT_RUN_LINK: u32 = 1 << 30;

/// The low bits of a marked slot: an offset or a distance.
const SLOT_LOW: u32 = SLOT_RUN_LINK - 1;

/// What a reader found at an uncommitted frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Assessment {
    /// The frame is no longer uncommitted (committed, padded or the end of
    /// the segment): look again.
    Changed,
    /// Nothing is claimed at the position yet.
    Unclaimed,
    /// A live producer holds the claim, or may hold it (it is between its
    /// `fetch_add` and its record); `pid` is that producer's. `extent` is
    /// where the claim ends (`(next seq, next offset)`), when recorded.
    Live { pid: u32, extent: Option<(u64, u64)> },
    /// Abandoned by a dead producer: claims `seq..next_seq`, bytes up to
    /// `end`. `fits` is false when the run reaches into claims that did not
    /// fit the segment, which then ends here.
    Dead { next_seq: u64, end: u64, pid: Option<u32>, fits: bool },
}

/// One producer slot, read consistently.
#[derive(Clone, Copy, Debug)]
struct SlotView {
    /// Offset of the slot in the meta file.
    slot: u64,
    token: u64,
    /// The token of the producer that wrote the record.
    owner: u64,
    state: u64,
    segment: u64,
    first: u64,
    claims: u64,
    start: u64,
    end: u64,
}

impl SlotView {
    fn covers(&self, segment: u64, seq: u64) -> bool {
        self.segment == segment && seq >= self.first && seq - self.first < self.claims
    }

    fn pid(&self) -> Option<u32> {
        (self.owner != 0).then(|| ProcessToken::from_raw(self.owner).pid())
    }
}

/// Every producer slot that has an owner or a record, each read
/// seqlock-style (state, fields, state again) so that a record being
/// rewritten is seen as `CLAIMING`, never torn. A lease holder switches its
/// state between `EXCLUSIVE` and idle on every append without changing the
/// generation, so it cannot keep this loop spinning.
fn read_slots(meta: &Meta) -> Result<Vec<SlotView>> {
    let mut out = Vec::new();
    for i in 0..PRODUCER_SLOTS as u64 {
        let view = read_slot(meta, PRODUCER_TABLE + i * PRODUCER_SLOT_SIZE)?;
        if view.token != 0 || view.claims != 0 {
            out.push(view);
        }
    }
    Ok(out)
}

/// One slot, read seqlock-style (see [`read_slots`]).
fn read_slot(meta: &Meta, slot: u64) -> Result<SlotView> {
    let state = meta.u64_at(slot + SLOT_STATE)?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let s1 = state.load(Ordering::SeqCst);
        let token = meta.u64_at(slot + SLOT_TOKEN)?.load(Ordering::SeqCst);
        let segment = meta.u64_at(slot + SLOT_SEGMENT)?.load(Ordering::SeqCst);
        let claim = meta.u64_at(slot + SLOT_CLAIM)?.load(Ordering::SeqCst);
        let start = meta.u64_at(slot + SLOT_START)?.load(Ordering::SeqCst);
        let end = meta.u64_at(slot + SLOT_END)?.load(Ordering::SeqCst);
        let owner = meta.u64_at(slot + SLOT_OWNER)?.load(Ordering::SeqCst);
        let s2 = state.load(Ordering::SeqCst);
        // The generation changes whenever a record is (re)written, and
        // only then; a record read between two loads of one generation
        // outside `CLAIMING` is whole.
        // A record that keeps changing under us (a producer rewrites it a
        // few times a claim; only a process writing it in a loop keeps it
        // changing) is read as `CLAIMING`: the answer that makes callers
        // wait for, or check the liveness of, its owner, never trust it.
        let claiming = s1 & 3 == PRODUCER_CLAIMING || s2 & 3 == PRODUCER_CLAIMING || attempts > 64;
        if claiming || s1 >> 2 == s2 >> 2 {
            let (first, claims) = (claim >> 32, claim & 0xffff_ffff);
            let st = if claiming { PRODUCER_CLAIMING } else { s2 & 3 };
            return Ok(SlotView { slot, token, owner, state: st, segment, first, claims, start, end });
        }
    }
}

/// How long [`assess`] waits for a live producer to leave `CLAIMING` (it
/// stays there for a few instructions: its `fetch_add` and its record)
/// before it counts it as possibly holding the claim. Without this, a
/// reader recovering while other producers claim at a high rate would
/// often find one of them in that window and put off the recovery.
const CLAIMING_SPIN: std::time::Duration = std::time::Duration::from_micros(100);

/// `v` (a `CLAIMING` slot) read again once it has left `CLAIMING`, or as it
/// is after [`CLAIMING_SPIN`]. A producer finishes a claim before it makes
/// another, so a claim it made before the tail was loaded is the one it
/// records now, or committed if it has moved on.
fn settle(meta: &Meta, v: SlotView) -> Result<SlotView> {
    let deadline = std::time::Instant::now() + CLAIMING_SPIN;
    loop {
        let now = read_slot(meta, v.slot)?;
        if now.state != PRODUCER_CLAIMING || std::time::Instant::now() >= deadline {
            return Ok(now);
        }
        std::hint::spin_loop();
    }
}

/// Decides what to do about the uncommitted frame at (`seq`, `offset`) of
/// `seg`. Reads `/proc` for the liveness of producers that may hold it, so
/// callers only ask after the frame has stayed uncommitted for a while.
///
/// The tail is loaded before the producer table is read: a producer
/// announces `CLAIMING` before its `fetch_add` (and under the lease before
/// it counts a claim in the tail), so any claim below the loaded count
/// belongs to a producer the read sees as claiming or holding it, or to
/// one that finished it or died.
pub(crate) fn assess(queue: &Queue, seg: &Segment, seq: u64, offset: u64) -> Result<Assessment> {
    let Some(word) = seg.frame_word(offset) else { return Ok(Assessment::Unclaimed) };
    let (count, tail_off) = split_tail(seg.tail().load(Ordering::SeqCst));
    if count <= seq {
        return Ok(Assessment::Unclaimed);
    }
    let mut slots = read_slots(queue.meta())?;
    for v in slots.iter_mut().filter(|v| v.token != 0) {
        if v.state == PRODUCER_CLAIMING {
            *v = settle(queue.meta(), *v)?;
        }
        let involved =
            v.state == PRODUCER_CLAIMING || (v.state == PRODUCER_CLAIMED && v.covers(seg.number, seq));
        if involved && ProcessToken::from_raw(v.token).is_alive() {
            let extent = (v.state == PRODUCER_CLAIMED).then_some((v.first + v.claims, v.end));
            return Ok(Assessment::Live { pid: ProcessToken::from_raw(v.token).pid(), extent });
        }
    }
    if word.load(Ordering::SeqCst) != 0 {
        return Ok(Assessment::Changed);
    }
    // The dead claim's record gives its whole extent at once. It is trusted
    // only if it is complete (not `CLAIMING`) and consistent with where the
    // reader stands.
    let recorded = slots.iter().find(|v| {
        v.state != PRODUCER_CLAIMING && v.covers(seg.number, seq) && v.start <= offset && offset < v.end
    });
    let (next_seq, end, pid) = match recorded {
        Some(v) => (v.first + v.claims, v.end, v.pid()),
        None => {
            let (next_seq, end) = run_end(seg, seq, offset, count, tail_off, &slots);
            (next_seq, end, None)
        }
    };
    let claims = next_seq.saturating_sub(seq);
    let fits = end > offset
        && end - offset <= LEN_MASK as u64
        && claims > 0
        && claims <= u32::MAX as u64
        && check_frame(seg.capacity, offset, end - offset, seq, claims).is_ok();
    Ok(Assessment::Dead { next_seq, end, pid, fits })
}

/// Recovers the uncommitted frame at (`seq`, `offset`) if its claimant is
/// dead. Returns true if the frame changed (now committed, padding or end
/// of segment), so the caller should look again.
pub(crate) fn recover(queue: &Queue, seg: &Segment, seq: u64, offset: u64) -> Result<bool> {
    match assess(queue, seg, seq, offset)? {
        Assessment::Changed => Ok(true),
        Assessment::Unclaimed | Assessment::Live { .. } => Ok(false),
        Assessment::Dead { next_seq, end, fits, .. } => {
            pad(queue, seg, seq, offset, next_seq, end, fits)?;
            Ok(true)
        }
    }
}

/// Turns dead claims `seq..next_seq` (bytes `offset..end`) into one
/// padding frame with a compare-and-swap of the first frame's state word
/// (0, since nothing there was committed); or, if they do not fit, ends
/// the segment at `offset`. Racing recoverers agree through the single
/// compare-and-swap.
pub(crate) fn pad(
    queue: &Queue,
    seg: &Segment,
    seq: u64,
    offset: u64,
    next_seq: u64,
    end: u64,
    fits: bool,
) -> Result<()> {
    let Some(word) = seg.frame_word(offset) else { return Ok(()) };
    let new = if fits {
        state_word(KIND_PADDING, (end - offset) as u32, (next_seq - seq) as u32)
    } else {
        state_word(KIND_EOS, 0, 0)
    };
    if word.compare_exchange(0, new, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return Ok(());
    }
    if !fits {
        seg.seal(seq);
        let active = queue.meta().active()?;
        let _ = active.compare_exchange(seg.number, seg.number + 1, Ordering::AcqRel, Ordering::Acquire);
    }
    queue.notify();
    if fits {
        mark_padded_run(seg, seq, next_seq, offset);
    }
    Ok(())
}

/// Marks padded claims `first..end` (one padding frame at `offset`) in
/// the index slots, for `read_at` and `seek` (readers walking the frames
/// pass the padding anyway), in O(log n) stores whatever the run's size:
/// the first claim's slot gets the padding's offset, and for each `j` the
/// slot of the smallest multiple of 2^j above `first` (inside the run)
/// gets the distance back to `first`. Every claim `c` of the run finds one
/// of them at `c` rounded down to a power of two (the highest bit where
/// `c` and `first` differ), which is how [`padded_run`] finds the run; the
/// other slots stay 0. Marking every slot, as before, cost the recovering
/// reader 4 bytes per claim: milliseconds for a batch of millions.
fn mark_padded_run(seg: &Segment, first: u64, end: u64, offset: u64) {
    let Some(slot) = seg.index_slot(first) else { return };
    slot.store(offset as u32 | SLOT_ABANDONED, Ordering::Release);
    // Stored after the first slot (Release): a reader that sees a link
    // sees what it links to.
    for m in run_links(first, end) {
        if let Some(slot) = seg.index_slot(m) {
            slot.store(SLOT_ABANDONED | SLOT_RUN_LINK | (m - first) as u32, Ordering::Release);
        }
    }
}

/// The claims of padded run `first..end` whose slots link back to
/// `first`: the smallest multiple of 2^j above `first`, for each `j`, that
/// lies inside the run (at most 32, and none that would not fit a link).
fn run_links(first: u64, end: u64) -> impl Iterator<Item = u64> {
    let mut last = first;
    (0..=32u32).filter_map(move |j| {
        let m = ((first >> j) + 1) << j;
        let new = m != last && m < end && m - first <= SLOT_LOW as u64;
        last = m;
        new.then_some(m)
    })
}

/// The slots [`padded_run`] looks at for claim `c`: `c` rounded down to
/// each power of two, nearest first (at most 33).
fn run_probes(c: u64) -> impl Iterator<Item = u64> {
    let mut last = u64::MAX;
    (0..=32u32).filter_map(move |j| {
        let m = (c >> j) << j;
        let new = m != last;
        last = m;
        new.then_some(m)
    })
}

/// The first claim of the padded run that index slot `m` marks, and the
/// padding's offset, read through `slot` (the value of a claim's index
/// slot). `None` if `m`'s slot marks no run, or (a run marked by builds
/// that marked every slot with the offset) `m` is not the run's first.
fn run_of(m: u64, slot: impl Fn(u64) -> Option<u32>) -> Option<(u64, u64)> {
    let v = slot(m)?;
    if v & SLOT_ABANDONED == 0 {
        return None;
    }
    let first = if v & SLOT_RUN_LINK != 0 { m.checked_sub((v & SLOT_LOW) as u64)? } else { m };
    let head = slot(first)?;
    if head & (SLOT_ABANDONED | SLOT_RUN_LINK) != SLOT_ABANDONED {
        return None;
    }
    if first > 0 && slot(first - 1) == Some(head) {
        return None;
    }
    Some((first, (head & SLOT_LOW) as u64))
}

/// The padded run that claim `c` of `seg` lies in: its first claim, the
/// padding's offset and the claim after the run. Looks at no more than 33
/// index slots (through the links [`mark_padded_run`] leaves) and one
/// frame word, whatever the run's size; every value is checked, so junk
/// slots give `None` or a run whose padding frame really covers `c`. A
/// run marked by older builds (every slot holding the offset) is found
/// only from its first claim, and the caller walks as it did before.
pub(crate) fn padded_run(seg: &Segment, c: u64) -> Option<(u64, u64, u64)> {
    let slot = |k: u64| seg.index_slot(k).map(|s| s.load(Ordering::Acquire));
    run_probes(c).find_map(|m| {
        let (first, offset) = run_of(m, slot)?;
        let FrameWord::Padding { bytes, claims } = seg.load_frame(offset)? else { return None };
        let end = first + claims as u64;
        let covers = c < end && check_frame(seg.capacity, offset, bytes as u64, first, claims as u64).is_ok();
        covers.then_some((first, offset, end))
    })
}

/// Where a run of dead claims starting at (`seq`, `offset`), none of which
/// recorded itself, ends: at the first later claim that shows where it
/// starts, else at the tail. A later claim shows it by its record (whole, in
/// `slots`) or by an index slot (written for each frame before it is
/// committed). With no live producer claiming, every later claim is
/// recorded, committed, or dead and unrecorded itself (then part of the
/// run), so the first such sign is the run's end. This is the one part of
/// recovery that grows with the claim: it reads 4 bytes per claim of the
/// dead run, and only runs for a producer killed in the few instructions
/// between its `fetch_add` and its record. Slots lying before `offset`
/// cannot belong to a successful claim (they would overlap earlier frames),
/// which ends the scan; slots marked abandoned belong to padding further
/// on, which the new padding simply covers.
fn run_end(
    seg: &Segment,
    seq: u64,
    offset: u64,
    count: u64,
    tail_off: u64,
    slots: &[SlotView],
) -> (u64, u64) {
    let recorded = slots
        .iter()
        .filter(|v| {
            v.state != PRODUCER_CLAIMING
                && v.segment == seg.number
                && v.claims > 0
                && v.first > seq
                && v.start > offset
        })
        .map(|v| (v.first, v.start))
        .min();
    let (limit, bound) = match recorded {
        Some((first, start)) if first <= count => (first, (first, start)),
        _ => (count, (count, tail_off)),
    };
    for c in seq + 1..limit {
        let Some(pos) = seg.capacity.checked_sub(4 * (c + 1)) else { break };
        if pos < offset + FRAME_HEADER {
            break;
        }
        let Some(slot) = seg.index_slot(c) else { break };
        let v = slot.load(Ordering::SeqCst);
        if v != 0 && v & SLOT_ABANDONED == 0 {
            return (c, v as u64);
        }
    }
    bound
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Every claim of a padded run finds the run's first claim
        /// through the few slots `mark_padded_run` marks, among claims
        /// whose slots hold anything else, looking at no more than 33.
        #[test]
        fn every_claim_of_a_padded_run_finds_its_first_through_a_few_links(
            first in prop_oneof![0u64..5000, 0u64..(1 << 28)],
            len in prop_oneof![1u64..300, 1u64..(1 << 24)],
            picks in proptest::collection::vec(0.0f64..1.0, 64),
        ) {
            let end = first + len;
            let mut slots: HashMap<u64, u32> = HashMap::new();
            slots.insert(first, 4096 | SLOT_ABANDONED);
            for m in run_links(first, end) {
                slots.insert(m, SLOT_ABANDONED | SLOT_RUN_LINK | (m - first) as u32);
            }
            prop_assert!(slots.len() <= 33, "{} slots marked", slots.len());
            // The claims around the run: committed messages.
            slots.insert(first.wrapping_sub(1), 2048);
            slots.insert(end, 8192);
            let slot = |k: u64| Some(slots.get(&k).copied().unwrap_or(0));
            let mut claims: Vec<u64> = picks.iter().map(|p| first + (p * len as f64) as u64 % len).collect();
            claims.extend([first, end - 1]);
            for c in claims {
                prop_assert!(run_probes(c).count() <= 33);
                let found = run_probes(c).find_map(|m| run_of(m, slot).filter(|&(f, _)| f <= c && c < end));
                prop_assert_eq!(found, Some((first, 4096)), "claim {}", c);
            }
        }
    }

    /// A run marked by older builds (every slot holds the padding's
    /// offset) is recognised only from its first claim: from any other,
    /// `run_of` says nothing rather than taking that claim for the first.
    #[test]
    fn a_run_marked_in_every_slot_is_found_only_from_its_first_claim() {
        let (first, end) = (100u64, 200u64);
        let slot = |k: u64| Some(if (first..end).contains(&k) { 4096 | SLOT_ABANDONED } else { 64 });
        assert_eq!(run_of(first, slot), Some((first, 4096)));
        for m in first + 1..end {
            assert_eq!(run_of(m, slot), None, "claim {m}");
        }
    }
}
