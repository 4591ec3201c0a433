//! Reading: anonymous readers, the record type, waiting and crash recovery.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mmkit_sync::WaitPolicy;

use crate::error::{Error, Result};
use crate::format::*;
use crate::queue::{Queue, Start};
use crate::recovery::{Assessment, assess, padded_run, recover};
use crate::segment::{Segment, is_not_found};

/// How long a reader parks at most while it waits on an in-progress claim
/// (the commit notifies) before it checks whether the claimant died.
const STALL_SLICE: Duration = Duration::from_millis(2);

/// How long a reader spins on its frame word before re-checking the tail.
const SPIN_SLICE: Duration = Duration::from_millis(1);

/// Where a caught-up spinning reader starts bringing pages into the page
/// cache for the producers (past the tail, beyond the pages the producers
/// are about to write, which they fault in themselves), how far ahead of
/// the tail it goes, and how much it does per wait (at most a few hundred
/// microseconds of work).
const HELP_LEAD: u64 = 128 << 10;
const HELP_WINDOW: u64 = 16 << 20;
const HELP_STEP: u64 = 256 << 10;

/// A reader helps only while it moves [`HELP_STEP`] in less than this (64
/// MB/s): then the producers write flat out and no CPU is left for their
/// idle helper. Slower, the helper has time to spare, and the reader's
/// help would only delay the messages that arrive meanwhile.
const HELP_PACE: Duration = Duration::from_millis(4);

/// How long a reader whose policy spins at all keeps spinning before it
/// parks: about the cost of a futex sleep and wake-up on a virtual machine,
/// whose idle virtual CPU may take milliseconds to be scheduled again.
const PARK_SPIN: Duration = Duration::from_micros(50);

/// `spin_loop` hints between two polls of a spinning reader.
const SPIN_PAUSES: u32 = 4;

/// Pacing of a reader that keeps catching up with producers writing flat
/// out (see [`Pace::wait`]): it starts once a message follows a catch-up
/// within [`PACE_QUICK`], waits between [`PACE_MIN`] and [`PACE_MAX`]
/// before it looks again, and aims at reading [`PACE_BATCH`] bytes of
/// frames per look.
const PACE_QUICK: Duration = Duration::from_nanos(250);
const PACE_MIN: Duration = Duration::from_nanos(250);
const PACE_MAX: Duration = Duration::from_micros(4);
/// How far ahead of its position a reader prefetches: one page.
const READ_AHEAD: u64 = 4096;
/// How often a reader near the end reads the tail again for prefetching.
const RELOAD_EVERY: u64 = 16 << 10;
const PACE_BATCH: u64 = 4 << 10;

/// How long an idle parked reader sleeps at most before it looks again by
/// itself. Claims and commits both notify, so this only bounds the
/// stall after a producer killed in the few instructions between its
/// claim's `fetch_add` and the wake-up that follows it; an idle queue costs
/// one wake-up per slice (about 70 µs of CPU on a virtual machine, 0.007%).
const PARK_SLICE: Duration = Duration::from_secs(1);

/// One message read from the queue.
///
/// By default the payload is a private copy the reader made (and
/// checksummed) before returning the record, so it cannot change under
/// you. With [`Reader::set_zero_copy`] it borrows the mapped segment
/// directly.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    index: u64,
    timestamp: u64,
    payload: &'a [u8],
    meta: &'a [u8],
}

impl<'a> Record<'a> {
    /// The message's index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Nanoseconds since the Unix epoch when appended (0 when the queue
    /// has no timestamps).
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The metadata stored with the record by
    /// [`Producer::append_with_meta`](crate::Producer::append_with_meta)
    /// (empty for other records).
    pub fn meta(&self) -> &'a [u8] {
        self.meta
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// A copy of the payload.
    pub fn to_vec(&self) -> Vec<u8> {
        self.payload.to_vec()
    }

    /// Replaces `buf`'s contents with the payload.
    pub fn copy_into(&self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(self.payload);
    }
}

/// What an async read does next.
pub(crate) enum Step {
    Ready(Found),
    /// Wait at (`seq`, `offset`) of `seg`; `claimed` if a claim exists there.
    Wait {
        seg: Arc<Segment>,
        seq: u64,
        offset: u64,
        claimed: bool,
    },
}

/// Where a found message is.
#[derive(Clone, Copy)]
pub(crate) struct Found {
    index: u64,
    offset: u64,
    len: u32,
    crc: u32,
    timestamp: u64,
    meta: bool,
}

/// What one blocking read has done so far.
struct WaitState {
    /// When the read gives up (`Some(None)`: never); computed lazily.
    deadline: Option<Option<Instant>>,
    /// Whether the read already spun (it then parks straight away).
    spun: bool,
}

enum Poll {
    Ready(Found),
    /// Nothing committed at the position; `claimed` if a claim exists there.
    Pending {
        claimed: bool,
    },
}

/// Where a record copied by [`Reader::next_into`] is, and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copied {
    /// The record's index.
    pub index: u64,
    /// Its timestamp (nanoseconds since the Unix epoch; 0 without timestamps).
    pub timestamp: u64,
    /// How many bytes of the caller's buffer the payload filled.
    pub len: usize,
}

/// How to get past a corrupt record.
#[derive(Clone, Copy, Debug)]
enum Skip {
    Frame { bytes: u64 },
    Slot,
}

/// A reader of the queue from any position. Readers are independent:
/// each sees every message.
pub struct Reader {
    queue: Queue,
    seg: Arc<Segment>,
    seq: u64,
    offset: u64,
    skip_to: u64,
    policy: WaitPolicy,
    verify: bool,
    zero_copy: bool,
    skip_corrupt: bool,
    pending_skip: Option<Skip>,
    buf: Vec<u8>,
    max: usize,
    /// The uncommitted claim this reader is stuck at, if any.
    stall: Option<Stall>,
    /// Longest an idle parked reader sleeps before looking by itself.
    park_slice: Duration,
    /// Whether the record last copied into `buf` has a metadata block.
    last_meta: bool,
    /// What this reader does for the producers' page faults (see
    /// [`Reader::help_producers`]).
    help: Help,
    /// How this reader paces its looks at a queue written flat out.
    pace: Pace,
    /// How far this reader may prefetch (see [`Reader::prefetch_ahead`]).
    ahead: Ahead,
}

/// The segment's tail as a reader last read it, for prefetching.
#[derive(Clone, Copy, Debug)]
struct Ahead {
    /// The segment it was read in.
    segment: u64,
    /// Its tail's offset then.
    end: u64,
    /// The reader's offset from which it may be read again.
    reload_at: u64,
}

/// A spinning reader's pacing (see [`Pace::wait`]).
#[derive(Clone, Copy, Debug)]
struct Pace {
    /// How long the reader waits, once caught up, before it looks again
    /// (zero: it polls at once).
    gap: Duration,
    /// Segment and offset where it last caught up: its batch is what it
    /// read since.
    segment: u64,
    offset: u64,
}

impl Pace {
    /// A spinning reader that has just caught up looks at the frame word
    /// the producers write next, pulling its cache line away from them
    /// while they fill it: each look costs the producer a cache-line
    /// transfer, and when messages come back to back the reader catches up
    /// after every one or two and the producer pays per message. So once a
    /// message has followed a catch-up within [`PACE_QUICK`], a caught-up
    /// reader waits a gap first (without looking), and reads what arrived
    /// meanwhile as one batch. The gap doubles while batches stay below
    /// [`PACE_BATCH`] bytes, up to [`PACE_MAX`], and halves when they are
    /// far above; a gap after which nothing has arrived ends pacing (the
    /// producers are not writing flat out), so at lower rates a reader
    /// looks at once and its latency is unchanged. Costs at most
    /// [`PACE_MAX`] of latency per message while producers write flat out.
    /// Called at a catch-up at `offset` of `segment`; returns whether a
    /// message arrived during the gap.
    fn wait(
        &mut self,
        segment: u64,
        offset: u64,
        now: Instant,
        slice: Duration,
        ready: &impl Fn() -> bool,
    ) -> bool {
        let batch = if self.segment == segment { offset.saturating_sub(self.offset) } else { PACE_BATCH };
        (self.segment, self.offset) = (segment, offset);
        if self.gap.is_zero() {
            return false;
        }
        if batch < PACE_BATCH {
            self.gap = (self.gap * 2).min(PACE_MAX);
        } else if batch > 4 * PACE_BATCH {
            self.gap = (self.gap / 2).max(PACE_MIN);
        }
        let until = now + self.gap.min(slice);
        while Instant::now() < until {
            for _ in 0..SPIN_PAUSES {
                std::hint::spin_loop();
            }
        }
        if ready() {
            return true;
        }
        self.gap = Duration::ZERO;
        false
    }

    /// After a wait without pacing that a message ended after `waited`:
    /// one that came within [`PACE_QUICK`] starts pacing.
    fn arrived(&mut self, waited: Duration) {
        if self.gap.is_zero() && waited < PACE_QUICK {
            self.gap = PACE_MIN;
        }
    }
}

/// A spinning reader's help with the producers' fresh pages.
#[derive(Clone, Copy, Debug)]
struct Help {
    /// Segment the fields below are about.
    segment: u64,
    /// Offset up to which pages were brought into the page cache.
    end: u64,
    /// Where and when the reader's pace was last measured.
    at: u64,
    since: Instant,
    /// Whether that pace says the producers write flat out.
    on: bool,
}

/// An uncommitted claim a reader met: where, and when it last decided to
/// wait rather than check its claimant's liveness.
#[derive(Clone, Copy, Debug)]
struct Stall {
    segment: u64,
    seq: u64,
    since: Instant,
}

/// A claim that keeps a reader from the next message, as
/// [`Reader::pending_claim`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingClaim {
    /// Index of the first uncommitted message.
    pub index: u64,
    /// Process id of the producer holding (or, when `alive` is false,
    /// abandoning) the claim, when known.
    pub pid: Option<u32>,
    /// Whether that producer is alive (it may still commit).
    pub alive: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("position", &self.position()).finish()
    }
}

impl Queue {
    /// A reader starting at `start`.
    pub fn reader(&self, start: Start) -> Result<Reader> {
        let mut first = self.meta().first_segment()?;
        let seg = loop {
            match self.segment_or_create(first) {
                Err(Error::NoSuchIndex { .. }) if self.meta().first_segment()? > first => {
                    first = self.meta().first_segment()?;
                }
                other => break other?,
            }
        };
        let mut r = Reader {
            queue: self.clone(),
            seg,
            seq: 0,
            offset: SEGMENT_HEADER,
            skip_to: 0,
            help: Help { segment: u64::MAX, end: 0, at: 0, since: Instant::now(), on: false },
            pace: Pace { gap: Duration::ZERO, segment: u64::MAX, offset: 0 },
            ahead: Ahead { segment: u64::MAX, end: 0, reload_at: 0 },
            policy: WaitPolicy::BALANCED,
            verify: true,
            zero_copy: false,
            skip_corrupt: false,
            pending_skip: None,
            buf: Vec::new(),
            max: self.max_message_size(),
            stall: None,
            park_slice: PARK_SLICE,
            last_meta: false,
        };
        match start {
            Start::Beginning => {}
            Start::End => {
                let end = self.end_index()?;
                r.seek(end)?;
            }
            Start::Index(i) => r.seek(i)?,
            Start::Time(ns) => {
                let i = self.seek_time(ns)?;
                r.seek(i)?;
            }
        }
        Ok(r)
    }
}

impl Reader {
    /// The queue this reader reads.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The index of the next message this reader would return (or of the
    /// position where it will look for it).
    pub fn position(&self) -> u64 {
        make_index(self.seg.number, self.seq.max(self.skip_to) as u32)
    }

    /// How blocking reads wait: spin, yield, then park on the queue's
    /// futex (default [`WaitPolicy::BALANCED`]). A parking policy that
    /// spins at all also spins for up to 50 µs before it parks (about what
    /// a futex sleep and wake-up cost on a virtual machine);
    /// [`WaitPolicy::PARK`] parks at once.
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
    }

    /// Longest an idle reader parked in [`Reader::next_timeout`] sleeps
    /// before it looks at the queue by itself (default 1 s). Commits and
    /// claims wake it at once; the slice only bounds how long a parked
    /// reader can miss a claim whose producer was killed in the few
    /// instructions between its claim and its wake-up call. It costs one
    /// wake-up per slice on an idle queue.
    pub fn set_park_slice(&mut self, slice: Duration) {
        self.park_slice = slice.max(Duration::from_millis(1));
    }

    /// Skip corrupt records instead of returning an error for them.
    pub fn set_skip_corrupt(&mut self, yes: bool) {
        self.skip_corrupt = yes;
    }

    /// Turns CRC verification on reads off or on (default on).
    pub fn set_verify(&mut self, yes: bool) {
        self.verify = yes;
    }

    /// Makes records borrow the mapped segment instead of a private copy.
    ///
    /// # Safety
    ///
    /// While a record is held, no process may write its frame. mmkit never
    /// writes a committed frame again (crash recovery touches only frames
    /// whose claimant died before committing, and retention unlinks files,
    /// which leaves existing mappings intact), so the caller promises that
    /// no other, non-conforming program writes the queue's files.
    pub unsafe fn set_zero_copy(&mut self, yes: bool) {
        self.zero_copy = yes;
    }

    /// Moves to `index`: O(1) through the segment's index slots. An index
    /// before the oldest retained segment moves to the oldest message; an
    /// abandoned index moves to the next message.
    pub fn seek(&mut self, index: u64) -> Result<()> {
        self.pending_skip = None;
        let first = self.queue.meta().first_segment()?;
        let (mut s, mut c) = (index_segment(index), index_seq(index) as u64);
        if s < first {
            (s, c) = (first, 0);
        }
        if s != self.seg.number {
            // The active segment may not have been created yet (see
            // `Queue::end_index`): readers create it, as at a seal.
            let open = if s == self.queue.meta().active_segment()? {
                self.queue.segment_or_create(s)
            } else {
                self.queue.segment(s)
            };
            self.seg = match open {
                Ok(seg) => seg,
                Err(e) if is_not_found(&e) => {
                    return Err(Error::NoSuchIndex { index, reason: "no such segment" });
                }
                Err(e) => return Err(e),
            };
        }
        self.position_at(c);
        Ok(())
    }

    /// Places the reader at sequence `c` of the current segment, walking
    /// from the nearest earlier known frame when `c`'s offset is unknown.
    fn position_at(&mut self, c: u64) {
        let seg = &self.seg;
        let (count, tail_off) = split_tail(seg.tail().load(Ordering::Acquire));
        let fin = seg.final_count().load(Ordering::Acquire);
        let (start, off) =
            if c >= count && fin == u64::MAX && claim_fits(seg.capacity, count, 0, tail_off, FRAME_HEADER) {
                (count, tail_off)
            } else {
                // Capped at the number of index slots a segment can hold, so
                // a corrupt count cannot make this walk billions of empty
                // slots.
                frame_at_or_before(seg, c.min(count).min(fin).min(seg.capacity / 4))
            };
        self.seq = start;
        self.offset = off;
        self.skip_to = c;
    }

    /// Skips the record at the current position (after an error for it).
    pub fn skip(&mut self) -> Result<()> {
        match self.pending_skip.take() {
            Some(Skip::Frame { bytes }) => {
                self.seq += 1;
                self.offset += bytes;
            }
            Some(Skip::Slot) => {
                let next = self.seq + 1;
                match valid_slot(&self.seg, next) {
                    Some(o) => {
                        self.seq = next;
                        self.offset = o;
                    }
                    None => self.next_segment()?,
                }
            }
            None => {
                let at = self.position();
                self.seek(at + 1)?;
            }
        }
        Ok(())
    }

    /// The next message if one is committed; never blocks.
    // Not `Iterator::next`: the record borrows the reader (a lending
    // iterator), which `Iterator` cannot express.
    #[allow(clippy::should_implement_trait)]
    ///
    /// A claim whose producer was killed before committing is recovered
    /// here too: the first call that finds the claim still uncommitted 2 ms
    /// after this reader first met it checks the producer's liveness, and
    /// if it is dead turns the whole claim into padding and goes on. So a
    /// poller never answers "no message" for long while committed messages
    /// lie behind a dead claim, and a poller that meets a live producer's
    /// claim reads no `/proc` for it.
    pub fn next(&mut self) -> Result<Option<Record<'_>>> {
        if let Some(f) = self.fast_poll() {
            return self.take(f).map(Some);
        }
        loop {
            match self.poll()? {
                Poll::Ready(f) => return self.take(f).map(Some),
                Poll::Pending { claimed: true } if self.recover_if_due()? => {}
                Poll::Pending { .. } => return Ok(None),
            }
        }
    }

    /// Recovers the claim at the position if it has stayed uncommitted for
    /// a stall slice since this reader met it (or last checked it), and its
    /// claimant is dead. Returns whether the frame changed.
    fn recover_if_due(&mut self) -> Result<bool> {
        let now = Instant::now();
        let (segment, seq) = (self.seg.number, self.seq);
        match &mut self.stall {
            Some(s) if s.segment == segment && s.seq == seq => {
                if now.duration_since(s.since) < STALL_SLICE {
                    return Ok(false);
                }
                s.since = now;
            }
            other => {
                *other = Some(Stall { segment, seq, since: now });
                return Ok(false);
            }
        }
        let seg = self.seg.clone();
        recover(&self.queue, &seg, self.seq, self.offset)
    }

    /// What keeps this reader from its next message when
    /// [`Reader::next`] returns nothing: the uncommitted claim at its
    /// position (its index, and the producer holding or abandoning it), or
    /// `None` if nothing is claimed there (the reader is at the end). Reads
    /// `/proc` for the producers' liveness.
    pub fn pending_claim(&mut self) -> Result<Option<PendingClaim>> {
        if !matches!(self.poll()?, Poll::Pending { claimed: true }) {
            return Ok(None);
        }
        let index = make_index(self.seg.number, self.seq as u32);
        let seg = self.seg.clone();
        Ok(match assess(&self.queue, &seg, self.seq, self.offset)? {
            Assessment::Live { pid, .. } => Some(PendingClaim { index, pid: Some(pid), alive: true }),
            Assessment::Dead { pid, .. } => Some(PendingClaim { index, pid, alive: false }),
            Assessment::Changed | Assessment::Unclaimed => None,
        })
    }

    /// The next message, waiting up to `timeout` (`None`: forever) as the
    /// wait policy says. Returns `Ok(None)` on timeout. A claim abandoned
    /// by a crashed producer is turned into padding within milliseconds,
    /// however short the timeout: a poller calling with `Some(ZERO)` gets
    /// past it as one calling [`Reader::next`] does.
    pub fn next_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<Record<'_>>> {
        // The common case reads no clock: the deadline is only computed
        // once there is something to wait for.
        if let Some(f) = self.fast_poll() {
            return self.take(f).map(Some);
        }
        let mut state = WaitState { deadline: None, spun: false };
        if let Some(f) = self.spin_first(timeout, &mut state) {
            return self.take(f).map(Some);
        }
        loop {
            match self.poll()? {
                Poll::Ready(f) => return self.take(f).map(Some),
                // Before the deadline check: a timeout too short to reach
                // `wait` (which recovers after a whole stall slice) must
                // still get past a dead claim, by the stall record `next`
                // keeps across calls.
                Poll::Pending { claimed: true } if self.recover_if_due()? => {}
                Poll::Pending { claimed } => {
                    let deadline = *state
                        .deadline
                        .get_or_insert_with(|| timeout.and_then(|t| Instant::now().checked_add(t)));
                    let left = match deadline {
                        Some(d) => match d.checked_duration_since(Instant::now()) {
                            Some(left) if !left.is_zero() => Some(left),
                            _ => return Ok(None),
                        },
                        None => None,
                    };
                    self.wait(claimed, left, &mut state.spun)?;
                }
            }
        }
    }

    /// [`Reader::next_timeout`], copying the payload into `out` instead of
    /// returning a borrowed record: for callers that keep the bytes, the
    /// reader's own copy and the caller's become one, with the CRC checked
    /// in the same pass. Returns where the record is and how many bytes of
    /// `out` it filled.
    ///
    /// A payload longer than `out` is [`Error::BufferTooSmall`], and the
    /// reader stays at that record: call again with room for it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let q = mmkit_queue::Queue::options().create(true).open(dir.path().join("q")).unwrap();
    /// q.producer()?.append(b"hello")?;
    /// let mut r = q.reader(mmkit_queue::Start::Beginning)?;
    /// let mut buf = [0u8; 64];
    /// let got = r.next_into(&mut buf, None)?.expect("a message");
    /// assert_eq!(&buf[..got.len], b"hello");
    /// # Ok::<(), mmkit_queue::Error>(())
    /// ```
    pub fn next_into(&mut self, out: &mut [u8], timeout: Option<Duration>) -> Result<Option<Copied>> {
        if let Some(c) = self.fast_poll().and_then(|f| self.take_into(&f, out)) {
            return Ok(Some(c));
        }
        let Some(rec) = self.next_timeout(timeout)? else { return Ok(None) };
        let (index, timestamp, len) = (rec.index(), rec.timestamp(), rec.payload().len());
        if len > out.len() {
            let meta = rec.meta().len();
            self.step_back(len + if self.last_meta { 4 + meta } else { 0 });
            return Err(Error::BufferTooSmall { len, capacity: out.len() });
        }
        out[..len].copy_from_slice(rec.payload());
        Ok(Some(Copied { index, timestamp, len }))
    }

    /// Spins on the frame word at the position alone, as the policy says,
    /// before the first full `poll`: that one also reads the segment's tail,
    /// whose cache line the producers' `fetch_add` needs, so a reader that
    /// polled it for every message would slow every append down.
    fn spin_first(&mut self, timeout: Option<Duration>, state: &mut WaitState) -> Option<Found> {
        if self.policy.spins == 0 || timeout.is_some_and(|t| t.is_zero()) {
            return None;
        }
        self.help_producers();
        let word = self.seg.frame_word(self.offset)?;
        if committed(word.load(Ordering::Acquire)) {
            return None;
        }
        // About to wait: now the deadline is worth a clock read.
        let now = Instant::now();
        state.deadline = Some(timeout.and_then(|t| now.checked_add(t)));
        state.spun = true;
        let ready = || committed(word.load(Ordering::Acquire));
        let slice = timeout.map_or(SPIN_SLICE, |t| t.min(SPIN_SLICE));
        if self.pace.wait(self.seg.number, self.offset, now, slice, &ready) {
            return self.fast_poll();
        }
        let arrived = spin_then_yield(ready, &self.policy, slice)
            || (self.policy.park && spin_for(ready, PARK_SPIN.min(slice)));
        if arrived {
            self.pace.arrived(now.elapsed());
        }
        self.fast_poll()
    }

    /// A reader about to spin has caught up with the producers and burns
    /// CPU time nobody else gets; it spends some of it bringing the
    /// segment's next pages into the page cache (`POSIX_FADV_WILLNEED`: on
    /// the preallocated, unwritten blocks of a new segment this allocates
    /// zeroed pages and reads nothing), a cost the producer would otherwise
    /// pay on its first write to each page. The producer's own helper does
    /// the same, 4 MiB ahead of the tail, but shares its core with this
    /// reader, and falls behind a producer writing flat out: without this
    /// help, the `throughput` example's parking run fell from 12.9–17.3 to
    /// 11.1–11.8 M/s (2026-12-06, tenth session). One step of
    /// [`HELP_STEP`] per wait, from [`HELP_LEAD`] to [`HELP_WINDOW`] past
    /// the tail (where the producers write next; a reader that has fallen
    /// behind would otherwise help with pages they have already written);
    /// pages already cached cost a lookup each. Only while the reader's
    /// pace says the producers write flat out ([`HELP_PACE`]), which holds
    /// for parking readers too (they then spin, never park): at lower rates
    /// the helper has CPU to spare, and a step would delay the messages
    /// that arrive during it. Not in a segment this process reopened
    /// through its idle mapping: a recycled file's pages are all cached
    /// already.
    fn help_producers(&mut self) {
        if self.seg.reused {
            return;
        }
        let (number, offset) = (self.seg.number, self.offset);
        let h = &mut self.help;
        if h.segment != number {
            let since = Instant::now();
            *h = Help { segment: number, end: 0, at: offset, since, on: false };
        } else if offset >= h.at.saturating_add(HELP_STEP) {
            let now = Instant::now();
            h.on = now.duration_since(h.since) < HELP_PACE;
            (h.at, h.since) = (offset, now);
        }
        if !h.on {
            return;
        }
        let (_, tail) = split_tail(self.seg.tail().load(Ordering::Relaxed));
        let ahead = tail.max(offset);
        let from = h.end.max(ahead.saturating_add(HELP_LEAD));
        if from >= ahead.saturating_add(HELP_WINDOW) || from >= self.seg.capacity {
            return;
        }
        self.seg.prefault(from, HELP_STEP, self.queue.large_folios());
        h.end = from + HELP_STEP;
    }

    /// Waits for the frame at the position to change (or a claim to
    /// appear). `spun` says whether this read already spun: a reader
    /// whose park slice ran out parks again without spinning, so an idle
    /// reader wakes only once per slice and costs no CPU.
    fn wait(&mut self, claimed: bool, left: Option<Duration>, spun: &mut bool) -> Result<()> {
        if !claimed && self.policy.spins > 0 {
            self.help_producers();
        }
        let seg = self.seg.clone();
        let Some(word) = seg.frame_word(self.offset) else { return Ok(()) };
        let tail = seg.tail();
        let seq = self.seq;
        let notifier = self.queue.meta().notifier()?;
        let ready = || committed(word.load(Ordering::Acquire));
        if claimed {
            // A live producer commits within nanoseconds of its claim, and
            // the commit notifies: spin a little (even under a parking
            // policy), then park until the commit. Only a slice that runs
            // out (the claimant is slow, or dead) pays for the liveness
            // scan, so a claimant that died is recovered within a slice.
            if !*spun {
                *spun = true;
                let spin = WaitPolicy {
                    spins: self.policy.spins.clamp(200, 2000),
                    yields: self.policy.yields.min(4),
                    park: false,
                };
                if spin_then_yield(ready, &spin, Duration::from_micros(50)) {
                    return Ok(());
                }
            }
            if !self.policy.park {
                if spin_then_yield(ready, &self.policy, left.map_or(STALL_SLICE, |l| l.min(STALL_SLICE))) {
                    return Ok(());
                }
            } else {
                let slice = left.map_or(STALL_SLICE, |l| l.min(STALL_SLICE));
                if notifier.park_light(ready, Some(slice)) {
                    return Ok(());
                }
            }
            // The claim stayed uncommitted for a whole slice: now it is
            // worth a liveness check. Noted as `recover_if_due`'s check, so
            // the next poll does not check again at once.
            self.stall = Some(Stall { segment: seg.number, seq, since: Instant::now() });
            recover(&self.queue, &seg, seq, self.offset)?;
            return Ok(());
        }
        // Spin (and yield) on the frame word alone: the tail's cache line
        // is the producers' and is left alone while spinning. Spinning is
        // bounded so that a claim stuck behind a dead producer is noticed.
        if !*spun || !self.policy.park {
            *spun = true;
            let slice = left.map_or(SPIN_SLICE, |l| l.min(SPIN_SLICE));
            if spin_then_yield(ready, &self.policy, slice) || !self.policy.park {
                return Ok(());
            }
            if self.policy.spins > 0 && spin_for(ready, PARK_SPIN.min(slice)) {
                return Ok(());
            }
        }
        // Park; a claim notifies too, so a claimant that then dies is
        // found promptly (the next poll sees the claim and waits on it in
        // short slices).
        let ready =
            || committed(word.load(Ordering::Acquire)) || split_tail(tail.load(Ordering::Acquire)).0 > seq;
        notifier.park_light(ready, Some(left.map_or(self.park_slice, |l| l.min(self.park_slice))));
        Ok(())
    }

    fn corrupt(&mut self, skip: Skip, reason: impl Into<String>) -> Error {
        self.pending_skip = Some(skip);
        Error::CorruptRecord {
            index: make_index(self.seg.number, self.seq as u32),
            segment: self.seg.number,
            offset: self.offset,
            path: self.seg.path.clone(),
            reason: reason.into(),
        }
    }

    /// One non-blocking step for the async API: a record, or where to wait
    /// (after trying to recover a claim abandoned by a dead producer).
    pub(crate) fn step(&mut self) -> Result<Step> {
        loop {
            if let Some(f) = self.fast_poll() {
                return Ok(Step::Ready(f));
            }
            match self.poll()? {
                Poll::Ready(f) => return Ok(Step::Ready(f)),
                Poll::Pending { claimed } => {
                    if !(claimed && self.recover_if_due()?) {
                        let seg = self.seg.clone();
                        return Ok(Step::Wait { seg, seq: self.seq, offset: self.offset, claimed });
                    }
                }
            }
        }
    }

    /// The record this reader returned last, again, from its private copy:
    /// for consumer groups, which keep a record only after reading it.
    /// Only for copying (not zero-copy) readers, and only right after a
    /// read that returned `index` with `timestamp`.
    pub(crate) fn last_copy(&self, index: u64, timestamp: u64) -> Record<'_> {
        debug_assert!(!self.zero_copy);
        // `take` checked the block when it copied the record.
        let (meta, payload) = split_meta(&self.buf, self.last_meta).unwrap_or((&[], &self.buf));
        Record { index, timestamp, payload, meta }
    }

    pub(crate) fn take_found(&mut self, f: Found) -> Result<Record<'_>> {
        self.take(f)
    }

    /// The common case of [`Reader::poll`]: a valid committed message right
    /// at the position. Anything else goes the slow way.
    #[inline]
    fn fast_poll(&self) -> Option<Found> {
        let word = self.seg.frame_word(self.offset)?.load(Ordering::Acquire);
        let FrameWord::Message { len, crc, meta } = FrameWord::decode(word) else { return None };
        if self.seq < self.skip_to
            || len as usize > self.max
            || check_frame(self.seg.capacity, self.offset, frame_size(len as u64), self.seq, 1).is_err()
        {
            return None;
        }
        let timestamp = self.seg.timestamp_word(self.offset).map_or(0, |t| t.load(Ordering::Relaxed));
        let index = make_index(self.seg.number, self.seq as u32);
        Some(Found { index, offset: self.offset, len, crc, timestamp, meta })
    }

    /// Looks at the frame at the current position, stepping over padding,
    /// end-of-segment frames and records before `skip_to`.
    fn poll(&mut self) -> Result<Poll> {
        loop {
            let Some(word) = self.seg.frame_word(self.offset) else {
                let e = self.corrupt(Skip::Slot, "frame offset past the frame area");
                self.fail(e)?;
                continue;
            };
            let w = word.load(Ordering::Acquire);
            match FrameWord::decode(w) {
                FrameWord::Message { len, crc, meta } => {
                    let bytes = frame_size(len as u64);
                    if check_frame(self.seg.capacity, self.offset, bytes, self.seq, 1).is_err()
                        || len as usize > self.max
                    {
                        self.bad_frame(format!("impossible length {len}"))?;
                        continue;
                    }
                    if self.seq < self.skip_to {
                        self.seq += 1;
                        self.offset += bytes;
                        continue;
                    }
                    let timestamp =
                        self.seg.timestamp_word(self.offset).map_or(0, |t| t.load(Ordering::Relaxed));
                    let index = make_index(self.seg.number, self.seq as u32);
                    return Ok(Poll::Ready(Found { index, offset: self.offset, len, crc, timestamp, meta }));
                }
                FrameWord::Padding { bytes, claims } => {
                    if check_frame(self.seg.capacity, self.offset, bytes as u64, self.seq, claims as u64)
                        .is_err()
                    {
                        self.bad_frame("impossible padding frame".into())?;
                        continue;
                    }
                    self.seq += claims as u64;
                    self.offset += bytes as u64;
                }
                FrameWord::EndOfSegment => self.next_segment()?,
                FrameWord::Empty => {
                    // A SIGBUS (file truncated under us) shows as zero pages.
                    if self.seg.poisoned() {
                        return Err(Error::corrupt(&self.seg.path, "segment file was truncated (SIGBUS)"));
                    }
                    // Past the last claim of a sealed segment (normally an
                    // end frame says so; after a crash it may be missing).
                    let fin = self.seg.final_count().load(Ordering::Acquire);
                    if self.seq >= fin {
                        self.next_segment()?;
                        continue;
                    }
                    let (count, _) = split_tail(self.seg.tail().load(Ordering::Acquire));
                    if count <= self.seq && self.below_active()? {
                        // A segment is sealed (final count lowered, after the
                        // claim that sealed it was counted in its tail)
                        // before the active segment moves past it, so seen
                        // after `active`, a position past every claim must be
                        // past the final count too. Otherwise the end was
                        // lost (a machine crash that kept the meta file's
                        // active segment but not this segment's header page)
                        // or forged: nobody claims here any more, and
                        // waiting would never end.
                        let fin = self.seg.final_count().load(Ordering::Acquire);
                        if self.seq >= fin {
                            self.next_segment()?;
                            continue;
                        }
                        let (count, _) = split_tail(self.seg.tail().load(Ordering::Acquire));
                        if count <= self.seq {
                            let fin = if fin == u64::MAX { "unset".to_string() } else { fin.to_string() };
                            let e = self.corrupt(
                                Skip::Slot,
                                format!(
                                    "segment {} lies below the active segment but does not end here \
                                     (no end-of-segment frame, final count {fin}, {count} claims): \
                                     nothing will ever be written at this position",
                                    self.seg.number
                                ),
                            );
                            self.fail(e)?;
                            continue;
                        }
                        return Ok(Poll::Pending { claimed: true });
                    }
                    return Ok(Poll::Pending { claimed: count > self.seq });
                }
                FrameWord::Invalid => {
                    self.bad_frame(format!("invalid frame state word {w:#018x}"))?;
                    continue;
                }
            }
        }
    }

    /// A frame that cannot be one, at the position. Past the final count
    /// of a sealed segment it is no frame of the segment's (a seal that
    /// found junk where its end frame would go leaves the junk there, see
    /// "Durability" in `docs/queue-format.md`), so the reader goes on as
    /// [`Reader::skip`] would, without reporting it: to the claim after it
    /// if that claim's index slot is valid (a claim made at the same time
    /// as the one that found the junk may have succeeded past it), else to
    /// the next segment. Anywhere else it is corruption.
    fn bad_frame(&mut self, reason: String) -> Result<()> {
        let e = self.corrupt(Skip::Slot, reason);
        if self.seq >= self.seg.final_count().load(Ordering::Acquire) {
            return self.skip();
        }
        self.fail(e)
    }

    /// Returns the error, or skips the record when the policy says so (the
    /// caller then polls again: a loop, not recursion, so a segment full of
    /// corrupt records cannot overflow the stack).
    fn fail(&mut self, e: Error) -> Result<()> {
        if self.skip_corrupt {
            return self.skip();
        }
        Err(e)
    }

    /// Whether the active segment has moved past this reader's segment
    /// (Acquire: pairs with the compare-and-swap that moved it, which
    /// follows the sealing of this segment).
    fn below_active(&self) -> Result<bool> {
        Ok(self.seg.number < self.queue.meta().active_segment()?)
    }

    fn next_segment(&mut self) -> Result<()> {
        let mut next = self.seg.number + 1;
        self.seg = loop {
            match self.queue.segment_or_create(next) {
                Err(Error::NoSuchIndex { .. }) => {
                    let first = self.queue.meta().first_segment()?;
                    if first <= next {
                        return Err(Error::corrupt(
                            &self.queue.meta().path,
                            format!("segment {next} is missing"),
                        ));
                    }
                    next = first;
                }
                other => break other?,
            }
        };
        // The previous segment is released now: let retention recycle it
        // rather than delete it (the pin was set while it was still held).
        self.queue.refresh_pin()?;
        self.seq = 0;
        self.offset = SEGMENT_HEADER;
        self.skip_to = 0;
        Ok(())
    }

    /// Advances over every committed frame without reading payloads;
    /// stops at the first position that is not committed yet.
    pub(crate) fn skim(&mut self) -> Result<()> {
        loop {
            match self.poll() {
                Ok(Poll::Ready(f)) => {
                    self.seq += 1;
                    self.offset += frame_size(f.len as u64);
                }
                Ok(Poll::Pending { claimed: true }) => {
                    // A dead claimant must not stall durability for ever.
                    if !self.recover_if_due()? {
                        return Ok(());
                    }
                }
                Ok(Poll::Pending { claimed: false }) => return Ok(()),
                Err(Error::CorruptRecord { .. }) => self.skip()?,
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn segment_number(&self) -> u64 {
        self.seg.number
    }

    /// Copies (or borrows) and verifies a found record, and advances. The
    /// common case (a private, checked copy of a record without metadata
    /// that passes its check) is inlined into the read calls, so the record
    /// is built in registers rather than returned through memory from a
    /// call: reading back a wider copy of a struct just stored field by
    /// field stalls store forwarding, several nanoseconds per message.
    #[inline(always)]
    fn take(&mut self, f: Found) -> Result<Record<'_>> {
        let len = f.len as usize;
        if !self.zero_copy && len <= self.buf.capacity() {
            let dst = self.buf.as_mut_ptr();
            // SAFETY: `dst` is `buf`'s, with room for `len` bytes; `buf` is
            // this reader's own memory, not part of any mapping.
            if unsafe { self.copy_verified(&f, dst) } {
                // SAFETY: the copy initialised those `len` bytes.
                unsafe { self.buf.set_len(len) };
                return Ok(Record { index: f.index, timestamp: f.timestamp, payload: &self.buf, meta: &[] });
            }
        }
        self.take_checked(f)
    }

    /// The common case of every copying read: copies the payload of the
    /// message `f` (no metadata block, CRC checking on) to `dst`, checking
    /// its CRC in the same pass, and on a match moves past it. Returns
    /// whether it did; on `false` the position is unchanged and the bytes
    /// at `dst` are garbage, for the general path to redo.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `f.len` bytes, and must not lie in
    /// a mapping another process writes.
    #[inline(always)]
    unsafe fn copy_verified(&mut self, f: &Found, dst: *mut u8) -> bool {
        let len = f.len as usize;
        if !self.verify || f.meta {
            return false;
        }
        let Some(src) = self.seg.bytes_ptr(f.offset + FRAME_HEADER, len as u64) else { return false };
        // SAFETY: `src..src+len` is inside the mapping `self.seg` holds
        // (checked by `bytes_ptr`) and `copy_record` reads it with volatile
        // loads; `dst` is the caller's promise, and private memory cannot
        // overlap the shared mapping.
        if unsafe { copy_record(src, dst, len, f.index, f.timestamp) } != f.crc {
            return false;
        }
        self.advance_past(len, false);
        self.prefetch_ahead();
        true
    }

    /// [`Reader::take`]'s common case, into the caller's `out`: `None`
    /// (having moved nothing) for everything else, which the general path
    /// then handles, a payload too long for `out` included.
    #[inline(always)]
    fn take_into(&mut self, f: &Found, out: &mut [u8]) -> Option<Copied> {
        let len = f.len as usize;
        // SAFETY: `out` has room for `len` bytes (checked first), and a
        // `&mut [u8]` cannot alias the shared mapping, which this crate
        // never hands out mutably.
        let copied = len <= out.len() && unsafe { self.copy_verified(f, out.as_mut_ptr()) };
        copied.then_some(Copied { index: f.index, timestamp: f.timestamp, len })
    }

    /// Asks for the cache line [`READ_AHEAD`] bytes past the position.
    /// Where a frame starts is known only once the frame before it is
    /// read, so without this a reader has one cache miss in flight at a
    /// time, and the hardware prefetcher stops at every 4 KiB page; a line
    /// a page ahead starts the next page's walk early. Only lines below
    /// the segment's tail as last seen: a line the producers are still
    /// writing would have to go back to them. The tail's cache line is the
    /// one they store to for every message, so it is read again at most
    /// once per [`RELOAD_EVERY`] bytes while the reader is near the end.
    /// A hint only: a wrong tail (a corrupt segment) costs nothing but the
    /// hint, and [`Segment::prefetch`] ignores offsets outside the mapping.
    #[inline(always)]
    fn prefetch_ahead(&mut self) {
        let at = self.offset + READ_AHEAD;
        let a = &mut self.ahead;
        let here = a.segment == self.seg.number;
        if !here || at + 64 > a.end {
            if here && self.offset < a.reload_at {
                return;
            }
            let (_, end) = split_tail(self.seg.tail().load(Ordering::Relaxed));
            *a = Ahead { segment: self.seg.number, end, reload_at: self.offset + RELOAD_EVERY };
        }
        if at + 64 <= a.end {
            self.seg.prefetch(at);
        }
    }

    /// Moves past the record just taken, of `len` bytes of data (`meta`:
    /// with a metadata block).
    #[inline(always)]
    fn advance_past(&mut self, len: usize, meta: bool) {
        self.pending_skip = None;
        self.seq += 1;
        self.offset += frame_size(len as u64);
        self.last_meta = meta;
    }

    /// Undoes [`Reader::advance_past`] for the record just taken, of `len`
    /// bytes of data, so that the next read returns it again. Within the
    /// segment the reader still holds, unlike a seek, which would reopen
    /// it (or, if retention has deleted it meanwhile, move on).
    fn step_back(&mut self, len: usize) {
        self.pending_skip = None;
        self.seq = self.seq.saturating_sub(1);
        self.offset = self.offset.saturating_sub(frame_size(len as u64));
    }

    /// [`Reader::take`] in every case. With `skip_corrupt`, records failing
    /// their check are skipped in a loop (not by recursion, which a long
    /// run of corrupt records would turn into a stack overflow).
    #[inline(never)]
    fn take_checked(&mut self, mut f: Found) -> Result<Record<'_>> {
        let src = loop {
            let len = f.len as usize;
            let src = self
                .seg
                .bytes_ptr(f.offset + FRAME_HEADER, len as u64)
                .ok_or_else(|| Error::corrupt(&self.seg.path, "record outside the segment"))?;
            let mut crc = None;
            if !self.zero_copy {
                self.buf.resize(len, 0);
                let dst = self.buf.as_mut_ptr();
                // SAFETY: `src..src+len` is inside the mapping `self.seg` holds
                // (checked by `bytes_ptr`); `buf` is our own allocation of `len`
                // bytes. The copy is volatile, so even a misbehaving writer
                // changing the bytes meanwhile causes a checksum error, not UB.
                unsafe {
                    if self.verify {
                        crc = Some(copy_record(src, dst, len, f.index, f.timestamp));
                    } else {
                        volatile_copy(src, dst, len);
                    }
                }
            }
            let data: &[u8] = if self.zero_copy {
                // SAFETY: in bounds (above) and mapped while `self.seg` lives;
                // the caller of `set_zero_copy` promised nobody writes
                // committed frames.
                unsafe { std::slice::from_raw_parts(src, len) }
            } else {
                &self.buf
            };
            let reason =
                if self.verify && crc.unwrap_or_else(|| record_crc(data, f.index, f.timestamp)) != f.crc {
                    "checksum mismatch"
                } else if split_meta(data, f.meta).is_none() {
                    "metadata block longer than the record"
                } else {
                    break src;
                };
            self.pending_skip = Some(Skip::Frame { bytes: frame_size(len as u64) });
            let e = Error::CorruptRecord {
                index: f.index,
                segment: self.seg.number,
                offset: f.offset,
                path: self.seg.path.clone(),
                reason: reason.into(),
            };
            if !self.skip_corrupt {
                return Err(e);
            }
            self.skip()?;
            f = match self.poll()? {
                Poll::Ready(next) => next,
                Poll::Pending { .. } => return Err(e),
            };
        };
        let len = f.len as usize;
        self.advance_past(len, f.meta);
        self.prefetch_ahead();
        let data: &[u8] = if self.zero_copy {
            // SAFETY: in bounds (checked by `bytes_ptr` in the loop) and
            // mapped while `self.seg` lives, which the record's borrow of
            // `self` guarantees (`self.seg` is the segment `src` came from:
            // only `skip`/`poll` change it, and they run before the last
            // `bytes_ptr`); the caller of `set_zero_copy` promised nobody
            // writes committed frames.
            unsafe { std::slice::from_raw_parts(src, len) }
        } else {
            &self.buf
        };
        // Checked in the loop (the bytes cannot change: a private copy, or
        // a committed frame nobody writes).
        let (meta, payload) = split_meta(data, f.meta).unwrap_or((&[], data));
        Ok(Record { index: f.index, timestamp: f.timestamp, payload, meta })
    }
}

/// Spins and yields as `policy` says (spinning at most `slice`), without
/// parking; returns whether `ready` became true.
fn spin_then_yield(ready: impl Fn() -> bool, policy: &WaitPolicy, slice: Duration) -> bool {
    // The clock is read only once spinning has lasted a while.
    let mut deadline = None;
    for i in 0..policy.spins {
        if ready() {
            return true;
        }
        // A few pauses per poll: each poll pulls the cache line the
        // producer is writing away from it.
        for _ in 0..SPIN_PAUSES {
            std::hint::spin_loop();
        }
        if i % 1024 == 1023 {
            let now = Instant::now();
            if now >= *deadline.get_or_insert(now + slice) {
                return false;
            }
        }
    }
    for _ in 0..policy.yields {
        if ready() {
            return true;
        }
        std::thread::yield_now();
    }
    ready()
}

/// Spins until `ready()` or for about `time` (the clock is read every 64
/// polls); returns whether `ready` became true.
fn spin_for(ready: impl Fn() -> bool, time: Duration) -> bool {
    let deadline = Instant::now() + time;
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= deadline {
            return ready();
        }
    }
}

/// The nearest frame start at or before claim `k` of `seg` whose sequence
/// number is known: `k`'s own, the padding frame of the padded run `k`
/// lies in (found in O(1), not by a walk back over the run), or the
/// nearest earlier claim's with a usable index slot.
fn frame_at_or_before(seg: &Segment, k: u64) -> (u64, u64) {
    if let Some(o) = valid_slot(seg, k) {
        return (k, o);
    }
    if let Some((first, offset, _)) = padded_run(seg, k) {
        return (first, offset);
    }
    (0..k).rev().find_map(|j| valid_slot(seg, j).map(|o| (j, o))).unwrap_or((0, SEGMENT_HEADER))
}

/// The offset recorded in index slot `c`, if it is a usable frame start.
pub(crate) fn valid_slot(seg: &Segment, c: u64) -> Option<u64> {
    if c == 0 {
        return Some(SEGMENT_HEADER);
    }
    slot_frame(seg.index_slot(c)?.load(Ordering::Acquire), seg.capacity, c)
}

/// Copies `len` bytes with volatile word loads.
///
/// # Safety
///
/// `src` must be readable and `dst` writable for `len` bytes; the ranges
/// must not overlap.
pub(crate) unsafe fn volatile_copy(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = 0;
    if (src as usize) % 8 == 0 {
        while i + 8 <= len {
            // SAFETY: `i + 8 <= len`, `src + i` is 8-aligned; `dst` may be
            // unaligned, hence `write_unaligned`.
            unsafe {
                let v = src.add(i).cast::<u64>().read_volatile();
                dst.add(i).cast::<u64>().write_unaligned(v);
            }
            i += 8;
        }
    }
    while i < len {
        // SAFETY: `i < len`.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
        i += 1;
    }
}

/// Whether a frame state word is past the claimed stage (committed,
/// padding, end of segment, or something invalid a poll will report).
pub(crate) fn committed(word: u64) -> bool {
    word != 0
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn pacing_grows_with_small_batches_shrinks_with_large_ones_and_ends_when_nothing_comes() {
        let mut p = Pace { gap: Duration::ZERO, segment: u64::MAX, offset: 0 };
        let yes = || true;
        assert!(!p.wait(1, 256, Instant::now(), SPIN_SLICE, &yes), "no gap: no waiting");
        p.arrived(Duration::ZERO);
        assert_eq!(p.gap, PACE_MIN, "a quick message starts pacing");
        let mut offset = 256;
        for _ in 0..16 {
            offset += PACE_BATCH / 4;
            assert!(p.wait(1, offset, Instant::now(), SPIN_SLICE, &yes));
        }
        assert_eq!(p.gap, PACE_MAX, "small batches double the gap up to the bound");
        for _ in 0..16 {
            offset += 8 * PACE_BATCH;
            assert!(p.wait(1, offset, Instant::now(), SPIN_SLICE, &yes));
        }
        assert_eq!(p.gap, PACE_MIN, "large batches halve it down to the floor");
        let t = Instant::now();
        assert!(!p.wait(1, offset + 64, t, Duration::from_nanos(1), &|| false));
        assert!(p.gap.is_zero(), "a gap with nothing in it ends pacing");
        assert!(t.elapsed() < Duration::from_millis(100), "a gap that finds nothing ends promptly");
        p.arrived(Duration::from_millis(1));
        assert!(p.gap.is_zero(), "a slow message does not start pacing");
    }

    /// A long run of records failing their checksum is skipped in a loop:
    /// with recursion, 100 000 of them overflowed a test thread's stack.
    #[test]
    fn skipping_many_corrupt_records_does_not_recurse() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::options().create(true).segment_size(4 << 20).open(dir.path().join("q")).unwrap();
        let mut p = q.producer().unwrap();
        let n = 100_000u64;
        for i in 0..n {
            p.append(&i.to_le_bytes()).unwrap();
        }
        let last = p.append(b"last").unwrap();
        // Flip the first payload byte of every record but the last.
        let path = dir.path().join("q").join(crate::segment::segment_file_name(0));
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let frame = frame_size(8);
        let mut image = vec![0u8; (SEGMENT_HEADER + n * frame) as usize];
        file.read_exact_at(&mut image, 0).unwrap();
        for i in 0..n {
            image[(SEGMENT_HEADER + i * frame + FRAME_HEADER) as usize] ^= 0xff;
        }
        file.write_all_at(&image, 0).unwrap();

        let mut r = q.reader(Start::Beginning).unwrap();
        assert!(matches!(r.next(), Err(Error::CorruptRecord { .. })));
        r.set_skip_corrupt(true);
        let rec = r.next().unwrap().expect("the intact record after the corrupt ones");
        assert_eq!((rec.index(), rec.payload()), (last, &b"last"[..]));
        assert!(r.next().unwrap().is_none());
    }
}
