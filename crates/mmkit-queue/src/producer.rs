//! Appending: under the single-producer lease with plain stores, otherwise
//! claiming with one `fetch_add`; fill, commit with one Release store.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mmkit_sync::{Notifier, ProcessToken};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::format::*;
use crate::queue::{Durability, Queue};
use crate::segment::{RunFrame, Segment};

/// Appends messages. One per thread: any number of producers in any
/// number of processes append concurrently without a lock.
///
/// Each producer owns a slot in the meta file's producer table, where it
/// announces its claims so that readers can tell an in-progress claim of a
/// live producer from one abandoned by a crashed process.
pub struct Producer {
    queue: Queue,
    /// Index of this producer's slot in the producer table.
    index: u64,
    slot: u64,
    /// Cached pointers into the meta mapping (which `queue` keeps alive),
    /// indexed by the `W_*` constants.
    words: [*const AtomicU64; 9],
    notifier: *const Notifier,
    token: u64,
    generation: u64,
    /// Whether this producer took the single-producer lease (it still
    /// checks the lease word before every exclusive append).
    leased: bool,
    /// `mmkit_sync::fork_generation()` when the slot was taken.
    forks: u64,
    seg: Arc<Segment>,
    max: usize,
    timestamps: bool,
    /// The cheap clock for record timestamps.
    clock: Clock,
    /// Offset up to which prefaulting of the current segment was started.
    prefaulted: u64,
    /// Offset up to which this producer's page tables were populated.
    mapped: u64,
    /// Segment whose successor this producer already had created.
    precreated: u64,
    /// Chunks for this producer's prefault helpers, each started on first
    /// use: `[0]` brings pages in at idle priority, `[1]` also populates,
    /// at normal priority (see [`Producer::prefault_ahead`]).
    helpers: [Option<std::sync::mpsc::SyncSender<Chunk>>; 2],
    /// The producer's pace: when it last measured it, and its segment
    /// and offset then (see [`Producer::writes_flat_out`]).
    pace: Option<(std::time::Instant, u64, u64)>,
    /// Whether the last measure of the pace was over [`FLAT_OUT_RATE`].
    flat_out: bool,
    /// A rollover's retention pass found no thread to run on: the next
    /// commit runs it, outside the lease holder's exclusive window.
    retention_due: bool,
}

/// A chunk of a segment for a prefault helper.
struct Chunk {
    /// Held weakly, see [`Producer::prefault_ahead`].
    seg: std::sync::Weak<Segment>,
    /// Where the chunk starts; it is [`PREFAULT_CHUNK`] bytes long.
    from: u64,
    /// Whether the pages may come as large folios
    /// (`Queue::large_folios`).
    large: bool,
}

/// Chunks a producer's prefault helper may have waiting: more would only
/// be pages the producer reaches first.
const HELPER_QUEUE: usize = 2;

/// Whether a fresh claim at `offset` lands on a frame that is already
/// written. That happens only when the tail word on disk is older than the
/// frames after a machine crash (the kernel wrote the pages back in another
/// order); the claim is then treated as failed, which seals the segment
/// without overwriting what is there, and appending goes on in a new one.
fn stale_tail(seg: &Segment, offset: u64) -> bool {
    seg.frame_word(offset).is_some_and(already_written)
}

/// `stale_tail`'s rule on a frame's state word: anything but 0 there is
/// a frame written before.
#[inline(always)]
fn already_written(state: &AtomicU64) -> bool {
    state.load(Ordering::Relaxed) != 0
}

/// How far ahead of the tail an exclusive run prefetches the segment.
const PREFETCH_AHEAD: u64 = 2048;

/// Most frames an exclusive batch writes between two wake-ups of parked
/// readers.
const RUN: usize = 1024;

/// How many of `msgs` (a prefix) fit as frames at `seq`/`offset` in a
/// segment of `capacity` bytes, and their bytes. Room for a frame covers
/// its index slot and leaves the end-of-segment reserve, as in
/// [`claim_fits`]; sequence numbers stay below `u32::MAX`.
fn run_fits(capacity: u64, seq: u64, offset: u64, msgs: &[Data<'_>]) -> (usize, u64) {
    // What `claim_fits` allows, counted down frame by frame.
    let room = capacity.checked_sub(offset).and_then(|r| r.checked_sub(4 * seq + EOS_RESERVE));
    let Some(mut room) = room.filter(|_| offset % FRAME_ALIGN == 0) else {
        return (0, 0);
    };
    let most = (u32::MAX as u64).saturating_sub(seq + 1);
    let mut bytes = 0;
    for (k, m) in msgs.iter().enumerate() {
        let size = frame_size(m.len() as u64);
        if k as u64 >= most || size + 4 > room {
            return (k, bytes);
        }
        room -= size + 4;
        bytes += size;
    }
    (msgs.len(), bytes)
}

/// Most bytes (frames and index slots) of one shared claim of a batch in
/// a queue of `segment_size`-byte segments: a quarter of a segment, so
/// that a batch fills segments well rather than leaving most of one
/// empty when its next claim does not fit, and at most
/// [`MAX_CLAIM_BYTES`], which keeps a segment's tail offset inside 32 bits.
fn batch_budget(segment_size: u64) -> u64 {
    (segment_size.saturating_sub(SEGMENT_HEADER) / 4).min(MAX_CLAIM_BYTES)
}

/// Sets `sizes` to the frame sizes of the next claim of a shared batch:
/// the longest prefix of `msgs` whose frames and index slots take at most
/// `budget` bytes, and at least one message (a message always fits an
/// empty segment, and is at most [`MAX_CLAIM_BYTES`]).
fn next_batch_claim(msgs: &[Data<'_>], budget: u64, sizes: &mut Vec<u64>) {
    sizes.clear();
    let mut total = 0;
    for m in msgs {
        let b = frame_size(m.len() as u64);
        if !sizes.is_empty() && total + b + 4 > budget {
            break;
        }
        total += b + 4;
        sizes.push(b);
    }
}

/// Indices into `Producer::words`.
const W_STATE: usize = 0;
const W_SEGMENT: usize = 1;
const W_CLAIM: usize = 2;
const W_START: usize = 3;
const W_END: usize = 4;
const W_ACTIVE: usize = 5;
const W_LEASE: usize = 6;
const W_OWNER: usize = 7;
const W_RUN: usize = 8;

/// Bytes prefaulted per step, ahead of the producers' tail.
const PREFAULT_CHUNK: u64 = 2 << 20;

/// How far ahead of a claim prefaulting is started.
const PREFAULT_LEAD: u64 = 4 << 20;

/// Bytes per second over which a producer writes flat out: its chunks
/// then go to the helper that populates (see [`Producer::prefault_ahead`]).
const FLAT_OUT_RATE: u128 = 64 << 20;

/// Bytes the populating helper brings in and populates at a time: it
/// publishes its progress after each step, and holds the address-space
/// lock (for reading) only while it populates one.
const HELPER_STEP: u64 = 256 << 10;

/// Bytes of page tables a producer populates at once, in its own thread:
/// one system call instead of a page fault per 4 KiB page.
const MAP_STEP: u64 = 64 << 10;

// SAFETY: the raw pointers point into the meta mapping owned (through an
// `Arc`) by `queue`, which moves with the producer; they are only used as
// shared references to atomics and to the `Sync` notifier.
unsafe impl Send for Producer {}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("queue", &self.queue.path())
            .field("segment", &self.seg.number)
            .finish()
    }
}

/// A claimed, not yet committed message: fill it through `DerefMut`, then
/// [`Claim::commit`]. Dropping it without committing turns the space into
/// padding, so readers skip it.
///
/// Handing out `&mut [u8]` over shared memory is sound here because the
/// bytes are exclusively this claim's: the claim (a `fetch_add`, or a plain
/// store under the single-producer lease) gave this range to exactly one
/// claimant, no conforming process writes a claimed frame's payload (crash
/// recovery only ever rewrites the 8-byte state word of a frame whose
/// claimant is dead, and this claimant is alive while `&mut` borrows
/// exist), and readers do not read the payload before the commit store
/// publishes it.
pub struct Claim<'a> {
    producer: &'a mut Producer,
    seq: u32,
    offset: u64,
    payload: &'a mut [u8],
    timestamp: u64,
    done: bool,
}

impl Deref for Claim<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.payload
    }
}

impl DerefMut for Claim<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.payload
    }
}

impl Claim<'_> {
    /// The index this message will have.
    pub fn index(&self) -> u64 {
        make_index(self.producer.seg.number, self.seq)
    }

    /// Overrides the record's timestamp (nanoseconds since the epoch).
    pub fn set_timestamp(&mut self, ns: u64) {
        self.timestamp = ns;
    }

    /// Publishes the message and returns its index.
    pub fn commit(mut self) -> Result<u64> {
        self.done = true;
        let index = self.index();
        let crc = record_crc(self.payload, index, self.timestamp);
        let p = &mut *self.producer;
        p.publish(&p.seg, self.seq as u64, self.offset, self.payload.len(), crc, self.timestamp)?;
        p.notifier().notify_all_light();
        p.after_commit()?;
        Ok(index)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            let seg = &self.producer.seg;
            if let Some(w) = seg.frame_word(self.offset) {
                let bytes = frame_size(self.payload.len() as u64) as u32;
                w.store(state_word(KIND_PADDING, bytes, 1), Ordering::Release);
            }
            self.producer.queue.notify();
        }
    }
}

impl Queue {
    /// Registers a producer: takes a free slot, or the slot of a dead
    /// process, in the producer table. The first producer on a queue takes
    /// the single-producer lease and appends with plain stores; a second
    /// one takes the lease away first (see `docs/queue-format.md`), and
    /// from then on both claim space with a `fetch_add`.
    pub fn producer(&self) -> Result<Producer> {
        let token = ProcessToken::current_process().to_raw();
        // Mapped before a slot is taken, so that no error can leave a slot
        // taken and unused.
        let seg = self.segment_or_create(self.meta().active_segment()?)?;
        // Slots without a record first, then free ones, then dead ones: a
        // dead producer's record of an abandoned claim lets readers recover
        // that claim in O(1) and name its pid, so it is overwritten last.
        for pass in [Take::Pristine, Take::Free, Take::Dead] {
            for index in 0..PRODUCER_SLOTS as u64 {
                if let Some(p) = self.take_slot(index, token, pass, &seg)? {
                    return self.settle(p);
                }
            }
        }
        let meta = self.meta();
        Err(Error::TableFull { path: meta.path.clone(), table: "producer", capacity: PRODUCER_SLOTS })
    }

    /// Takes producer slot `index` if `pass` allows it.
    fn take_slot(&self, index: u64, token: u64, pass: Take, seg: &Arc<Segment>) -> Result<Option<Producer>> {
        let meta = self.meta();
        let slot = PRODUCER_TABLE + index * PRODUCER_SLOT_SIZE;
        let word = meta.u64_at(slot + SLOT_TOKEN)?;
        let cur = word.load(Ordering::Acquire);
        let free = match pass {
            Take::Pristine => cur == 0 && meta.u64_at(slot + SLOT_CLAIM)?.load(Ordering::Acquire) == 0,
            Take::Free => cur == 0,
            Take::Dead => cur == 0 || !ProcessToken::from_raw(cur).is_alive(),
        };
        // SeqCst: pairs with the lease holder's check that it is alone.
        if !free || word.compare_exchange(cur, token, Ordering::SeqCst, Ordering::Acquire).is_err() {
            return Ok(None);
        }
        let state = meta.u64_at(slot + SLOT_STATE)?;
        let old = state.load(Ordering::Acquire);
        let mut generation = (old >> 2) + 1;
        if old & 3 == PRODUCER_CLAIMING {
            // The previous owner died while writing its claim record: the
            // record may be torn, so it must not describe anything.
            state.store(generation << 2 | PRODUCER_CLAIMING, Ordering::Release);
            meta.u64_at(slot + SLOT_CLAIM)?.store(0, Ordering::Release);
            generation += 1;
        }
        state.store(generation << 2 | PRODUCER_IDLE, Ordering::Release);
        let at = |field: u64| meta.u64_at(slot + field).map(|w| w as *const AtomicU64);
        let words = [
            at(SLOT_STATE)?,
            at(SLOT_SEGMENT)?,
            at(SLOT_CLAIM)?,
            at(SLOT_START)?,
            at(SLOT_END)?,
            meta.active()? as *const AtomicU64,
            meta.lease()? as *const AtomicU64,
            at(SLOT_OWNER)?,
            at(SLOT_RUN)?,
        ];
        Ok(Some(Producer {
            queue: self.clone(),
            index,
            slot,
            words,
            notifier: meta.notifier()? as *const Notifier,
            token,
            generation,
            leased: false,
            forks: mmkit_sync::fork_generation(),
            seg: seg.clone(),
            max: self.max_message_size(),
            timestamps: self.timestamps(),
            clock: Clock::default(),
            prefaulted: 0,
            mapped: 0,
            precreated: u64::MAX,
            helpers: [None, None],
            pace: None,
            flat_out: false,
            retention_due: false,
        }))
    }

    /// A new producer's lease: any holder loses it, and this producer takes
    /// it if it is alone.
    fn settle(&self, mut p: Producer) -> Result<Producer> {
        self.revoke_lease(p.index)?;
        p.leased = self.try_lease(p.index)?;
        Ok(p)
    }
}

/// Which producer slots a pass of [`Queue::producer`] takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Free, and without a claim record.
    Pristine,
    /// Free (its record, if any, is a dead producer's).
    Free,
    /// Free, or owned by a dead process.
    Dead,
}

impl Drop for Producer {
    fn drop(&mut self) {
        if mmkit_sync::fork_generation() != self.forks {
            // The parent still uses the slot and the lease.
            return;
        }
        self.end_exclusive();
        if self.leased {
            self.queue.release_lease(self.index);
        }
        // Every run finished: nothing for a revoker to pad.
        self.word(W_RUN).store(0, Ordering::Relaxed);
        // Every claim of a producer that ends cleanly is settled (committed,
        // or given up, which readers then recover without its record):
        // erase the record, under a new generation, so the slot is pristine.
        self.generation += 1;
        self.set_state(PRODUCER_CLAIMING);
        self.word(W_CLAIM).store(0, Ordering::Release);
        self.set_state(PRODUCER_IDLE);
        if let Ok(w) = self.queue.meta().u64_at(self.slot + SLOT_TOKEN) {
            let _ = w.compare_exchange(self.token, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

impl Producer {
    /// The queue this producer appends to.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Whether this producer holds the single-producer lease now (it is the
    /// only producer registered, and appends with plain stores).
    pub fn is_exclusive(&self) -> bool {
        self.leased && self.word(W_LEASE).load(Ordering::Relaxed) == self.index + 1
    }

    /// Appends a copy of `msg` and returns its index.
    pub fn append(&mut self, msg: &[u8]) -> Result<u64> {
        let ts = if self.timestamps { self.clock.now() } else { 0 };
        self.append_with_timestamp(msg, ts)
    }

    /// Appends with an explicit timestamp (nanoseconds since the epoch).
    pub fn append_with_timestamp(&mut self, msg: &[u8], timestamp: u64) -> Result<u64> {
        self.append_data(Data::plain(msg), timestamp)
    }

    /// Appends `payload` with a metadata block stored in the same record
    /// (at most [`MAX_META`] bytes; [`Record::meta`](crate::Record::meta)
    /// gives it back): for what describes a message without being part of
    /// it, such as where a mirrored message came from. Metadata and payload
    /// together (plus 4 bytes) count against the maximum message size.
    pub fn append_with_meta(&mut self, meta: &[u8], payload: &[u8]) -> Result<u64> {
        let ts = if self.timestamps { self.clock.now() } else { 0 };
        self.append_data(Data::with_meta(meta, payload)?, ts)
    }

    fn append_data(&mut self, data: Data<'_>, timestamp: u64) -> Result<u64> {
        self.check_use(data.len())?;
        if self.begin_exclusive() {
            let r = self.exclusive_frame(data, timestamp);
            self.end_exclusive();
            self.notifier().notify_all_light();
            let index = r?;
            self.after_commit()?;
            return Ok(index);
        }
        let bytes = frame_size(data.len() as u64);
        let (seq, offset) = self.claim_frames(&[bytes])?;
        // No `Arc` clone on the hot path: its locked increment and decrement
        // would each drain the store buffer.
        let seg = &*self.seg;
        let written = write_frame(seg, seq as u64, offset, data, timestamp);
        if written.is_err() {
            self.set_state(PRODUCER_IDLE);
        }
        written?;
        let index = make_index(seg.number, seq);
        self.notifier().notify_all_light();
        self.after_commit()?;
        Ok(index)
    }

    /// Appends and returns once the message is durable under the queue's
    /// [`Durability`] mode (immediately for `OsManaged`).
    pub fn append_durable(&mut self, msg: &[u8]) -> Result<u64> {
        let index = self.append(msg)?;
        // `SyncEveryMessage` already flushed in `append`; a second `msync`
        // of the segment would only repeat it.
        if matches!(self.queue.durability(), Durability::GroupCommit { .. }) {
            self.queue.wait_durable(index, None)?;
        }
        Ok(index)
    }

    /// Appends several messages and returns their indices in order: under
    /// the lease, frame after frame; otherwise with one claim per segment
    /// they land in.
    pub fn append_batch(&mut self, msgs: &[&[u8]]) -> Result<Vec<u64>> {
        let data: Vec<Data<'_>> = msgs.iter().map(|m| Data::plain(m)).collect();
        self.append_data_batch(&data)
    }

    /// [`Producer::append_batch`] of `(metadata, payload)` pairs (see
    /// [`Producer::append_with_meta`]).
    pub fn append_batch_with_meta(&mut self, msgs: &[(&[u8], &[u8])]) -> Result<Vec<u64>> {
        let data = msgs.iter().map(|(m, p)| Data::with_meta(m, p)).collect::<Result<Vec<_>>>()?;
        self.append_data_batch(&data)
    }

    fn append_data_batch(&mut self, msgs: &[Data<'_>]) -> Result<Vec<u64>> {
        self.check_use(msgs.iter().map(Data::len).max().unwrap_or(0))?;
        let mut out = Vec::with_capacity(msgs.len());
        let ts = if self.timestamps { self.clock.now() } else { 0 };
        if self.begin_exclusive() {
            let r = self.exclusive_batch(msgs, ts, &mut out);
            self.end_exclusive();
            self.notifier().notify_all_light();
            r?;
            self.after_commit()?;
            return Ok(out);
        }
        let budget = batch_budget(self.queue.segment_size());
        let mut rest = msgs;
        let mut sizes = Vec::new();
        while !rest.is_empty() {
            next_batch_claim(rest, budget, &mut sizes);
            let (chunk, tail) = rest.split_at(sizes.len());
            rest = tail;
            let (seq, offset) = self.claim_frames(&sizes)?;
            let seg = self.seg.clone();
            let filled = fill_claim(&seg, seq as u64, offset, chunk, &sizes, ts, &mut out);
            if filled.is_err() {
                // Readers recover the rest of the claim once it is not ours.
                self.set_state(PRODUCER_IDLE);
            }
            filled?;
            self.notifier().notify_all_light();
            // Per claim, not once at the end: a batch that rolled over has
            // messages in more than one segment, and each must be flushed.
            self.after_commit()?;
        }
        Ok(out)
    }

    /// Claims `len` bytes to fill in place; see [`Claim`].
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>> {
        self.check_use(len)?;
        let bytes = frame_size(len as u64);
        let (seq, offset) = if self.begin_exclusive() {
            // On success the slot stays `CLAIMED` (not idle): readers must
            // wait for this claim while this producer lives.
            self.exclusive_claim(bytes).inspect_err(|_| self.end_exclusive())?
        } else {
            self.claim_frames(&[bytes])?
        };
        let ptr = self
            .seg
            .bytes_ptr(offset + FRAME_HEADER, len as u64)
            .ok_or_else(|| Error::corrupt(&self.seg.path, "claimed frame outside the segment"))?;
        // SAFETY: the range is inside the mapping held by `self.seg` (the
        // same segment: the claim was made there), which the claim's
        // `&mut self` borrow keeps alive and unchanged; the bytes belong to
        // this claim alone until it is committed or dropped (see `Claim`).
        let payload = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let timestamp = if self.timestamps { self.clock.now() } else { 0 };
        Ok(Claim { producer: self, seq, offset, payload, timestamp, done: false })
    }

    /// Refuses a message longer than the maximum, and any use in a forked
    /// child (one relaxed load).
    #[inline]
    fn check_use(&self, len: usize) -> Result<()> {
        if len > self.max {
            return Err(Error::MessageTooLarge { len, max: self.max });
        }
        if mmkit_sync::fork_generation() != self.forks {
            return Err(Error::ForkedProducer { path: self.queue.path().into() });
        }
        Ok(())
    }

    fn word(&self, which: usize) -> &AtomicU64 {
        // SAFETY: `words` were obtained from checked accessors of the meta
        // mapping, which `self.queue` keeps mapped while `self` lives.
        unsafe { &*self.words[which] }
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        // SAFETY: as in `word`.
        unsafe { &*self.notifier }
    }

    fn set_state(&self, st: u64) {
        self.word(W_STATE).store(self.generation << 2 | st, Ordering::Release);
    }

    /// Starts an append under the lease: announces it in the slot, then
    /// checks that the lease still names this producer. The store and the
    /// load are separated by a light barrier only; a producer taking the
    /// lease away pays for the full one (`mmkit_sync::barrier`). Returns
    /// false (and leaves the slot idle) when the producer must use the
    /// shared protocol.
    #[inline]
    fn begin_exclusive(&mut self) -> bool {
        if !self.leased {
            return false;
        }
        // Same generation: only a (re)written claim record takes a new one.
        self.set_state(PRODUCER_EXCLUSIVE);
        mmkit_sync::barrier::light();
        if self.word(W_LEASE).load(Ordering::Relaxed) == self.index + 1 {
            return true;
        }
        // Revoked: from now on this producer claims like everybody else.
        self.leased = false;
        self.set_state(PRODUCER_IDLE);
        false
    }

    #[inline]
    fn end_exclusive(&self) {
        if self.leased {
            self.set_state(PRODUCER_IDLE);
        }
    }

    /// Under the lease: writes, commits and counts one frame at the tail,
    /// rolling over when the segment is full. The frame is counted in the
    /// tail only once committed, so readers never see it claimed and
    /// uncommitted, and a crash leaves nothing to recover.
    fn exclusive_frame(&mut self, msg: Data<'_>, timestamp: u64) -> Result<u64> {
        let mut index = 0;
        self.exclusive_run(std::slice::from_ref(&msg), timestamp, &mut |i| index = i)?;
        Ok(index)
    }

    fn exclusive_batch(&mut self, msgs: &[Data<'_>], ts: u64, out: &mut Vec<u64>) -> Result<()> {
        let mut rest = msgs;
        while !rest.is_empty() {
            let done = self.exclusive_run(rest, ts, &mut |i| out.push(i))?;
            rest = &rest[done..];
            if !rest.is_empty() {
                // Parked readers need not wait for the end of a long batch.
                self.notifier().notify_all_light();
            }
        }
        Ok(())
    }

    /// Under the lease: writes, commits and counts (in that order, frame by
    /// frame, as [`Producer::exclusive_frame`] promises) the longest prefix
    /// of `msgs` that fits in the active segment, at most [`RUN`] frames,
    /// handing each index to `done`; seals the segment and rolls over when
    /// not even one fits. Returns how many were written (at least one).
    ///
    /// The segment, the tail and the room are looked at once per run, not
    /// once per frame; each frame still checks that its header word is
    /// clean (see `stale_tail`) before writing.
    fn exclusive_run(&mut self, msgs: &[Data<'_>], ts: u64, done: &mut impl FnMut(u64)) -> Result<usize> {
        loop {
            self.follow_active()?;
            let seg = &*self.seg;
            let (first, start) = split_tail(seg.tail().load(Ordering::Relaxed));
            let (n, bytes) = run_fits(seg.capacity, first, start, &msgs[..msgs.len().min(RUN)]);
            // Where a kill mid-copy may leave bytes past the tail, for the
            // revoker to pad (`Queue::revoke_lease`). A plain store: it is
            // read only once this process is dead or idle, when every store
            // it made before is visible.
            self.word(W_RUN).store(seg.number << 32 | (start + bytes), Ordering::Relaxed);
            let (mut seq, mut offset) = (first, start);
            if n > 0 {
                // Checked once: `run_fits` sized the run to fit, so only a
                // tail another process corrupted fails here.
                let run = seg.run(first, n as u64, start, bytes).ok_or_else(|| {
                    Error::corrupt(&seg.path, format!("tail offset {start} is no frame position"))
                })?;
                for m in &msgs[..n] {
                    // The lines ahead are usually in no cache (a recycled
                    // segment was zeroed long ago): fetch them before the
                    // check below waits for one, every frame.
                    seg.prefetch(offset + PREFETCH_AHEAD);
                    let len = m.len() as u64;
                    let frame = run
                        .frame(seq, offset, len)
                        .ok_or_else(|| Error::corrupt(&seg.path, "frame outside its run"))?;
                    if already_written(frame.state) {
                        // Junk past the tail: this or the next run seals the segment.
                        break;
                    }
                    let index = make_index(seg.number, seq as u32);
                    fill_frame(&frame, index, offset, *m, ts);
                    let size = frame_size(len);
                    seg.tail().store((seq + 1) << 32 | (offset + size), Ordering::Release);
                    done(index);
                    (seq, offset) = (seq + 1, offset + size);
                }
            }
            if seq > first {
                // After the run, not before: populating page tables is a
                // system call that the records just published need not wait
                // for (a parked reader would sleep meanwhile).
                self.prepare_pages(start, offset - start);
                return Ok((seq - first) as usize);
            }
            let (seg, number) = (self.seg.clone(), seg.number);
            self.fail_claim(&seg, first, start);
            self.roll(number)?;
        }
    }

    /// Under the lease: a claim to fill later ([`Producer::claim`]). Unlike
    /// an append it is counted before it is committed, so it is announced
    /// and recorded like a shared claim, before the tail counts it.
    fn exclusive_claim(&mut self, bytes: u64) -> Result<(u32, u64)> {
        loop {
            self.follow_active()?;
            let seg = self.seg.clone();
            let (seq, offset) = split_tail(seg.tail().load(Ordering::Relaxed));
            if seq + 1 < u32::MAX as u64
                && claim_fits(seg.capacity, seq, 1, offset, bytes)
                && !stale_tail(&seg, offset)
            {
                self.generation += 1;
                self.set_state(PRODUCER_CLAIMING);
                std::sync::atomic::fence(Ordering::Release);
                self.record_claim(&seg, seq, 1, offset, bytes);
                seg.tail().store((seq + 1) << 32 | (offset + bytes), Ordering::Release);
                self.set_state(PRODUCER_CLAIMED);
                self.notifier().notify_all_light();
                self.prepare_pages(offset, bytes);
                return Ok((seq as u32, offset));
            }
            self.fail_claim(&seg, seq, offset);
            self.roll(seg.number)?;
        }
    }

    /// Records the claim in this producer's slot, so that readers can tell
    /// who holds it and, if that producer dies, where it ends. Called in the
    /// `CLAIMING` state: a record is only ever written in that state, so a
    /// record in any other state is complete.
    fn record_claim(&self, seg: &Segment, seq: u64, n: u64, offset: u64, total: u64) {
        self.word(W_SEGMENT).store(seg.number, Ordering::Relaxed);
        self.word(W_CLAIM).store(seq << 32 | n, Ordering::Relaxed);
        self.word(W_START).store(offset, Ordering::Relaxed);
        self.word(W_END).store(offset + total, Ordering::Relaxed);
        self.word(W_OWNER).store(self.token, Ordering::Relaxed);
    }

    /// The shared protocol: claims consecutive frames of the given sizes in
    /// the active segment with one `fetch_add` on its tail, rolling over as
    /// needed (the claim is in `self.seg` on return). Returns the first
    /// sequence number and first offset. Announces the claim in the
    /// producer slot: `CLAIMING` before the `fetch_add`, then the record
    /// and `CLAIMED`.
    fn claim_frames(&mut self, sizes: &[u64]) -> Result<(u32, u64)> {
        let total: u64 = sizes.iter().sum();
        let n = sizes.len() as u64;
        loop {
            self.follow_active()?;
            self.generation += 1;
            // Release, not SeqCst: the `fetch_add` below is a release
            // operation, so a reader that sees this claim through the tail
            // (an acquire load of this or any later value; later
            // `fetch_add`s continue the release sequence) also sees this
            // announcement, and a reader that sees the announcement sees
            // everything this producer did before (its earlier commits and
            // index slots). On x86 this is a plain store, not a locked one.
            self.set_state(PRODUCER_CLAIMING);
            let seg = self.seg.clone();
            let old = seg.tail().fetch_add((n << 32) + total, Ordering::SeqCst);
            let (seq, offset) = split_tail(old);
            if seq + n < u32::MAX as u64 && claim_fits(seg.capacity, seq, n, offset, total) {
                // Recorded at once (a few stores to this producer's own
                // line, no page touched), so a kill almost never finds the
                // claim unrecorded.
                self.record_claim(&seg, seq, n, offset, total);
                self.set_state(PRODUCER_CLAIMED);
                // A claim wakes parked readers too, so that a producer killed
                // before its commit leaves them waiting on a known claim
                // (which they recover) rather than asleep with nothing to
                // wake them. The `fetch_add` is a full barrier, so the light
                // notify loses nothing.
                self.notifier().notify_all_light();
                if !stale_tail(&seg, offset) {
                    self.prepare_pages(offset, total);
                    return Ok((seq as u32, offset));
                }
            }
            self.fail_claim(&seg, seq, offset);
            self.set_state(PRODUCER_IDLE);
            self.roll(seg.number)?;
        }
    }

    /// Page-table population, prefaulting and pre-creation of the next
    /// segment, as the tail reaches `offset + bytes`.
    #[inline]
    fn prepare_pages(&mut self, offset: u64, bytes: u64) {
        if offset + bytes > self.mapped {
            // The helper's progress is only a hint: a page it skipped or
            // that writeback cleaned since costs a write fault, no more.
            let helped = self.seg.populated.load(Ordering::Relaxed);
            self.mapped = if helped >= offset + bytes {
                helped
            } else {
                self.seg.populate_write(offset, bytes + MAP_STEP)
            };
        }
        if offset + bytes + PREFAULT_LEAD > self.prefaulted {
            self.prefault_ahead(offset);
        }
        if offset > self.seg.capacity / 2 && self.precreated != self.seg.number {
            self.precreated = self.seg.number;
            self.precreate(self.seg.number + 1);
        }
    }

    /// A claim that did not fit seals the segment. The first failing
    /// claimant (the only one whose offset still leaves room for it) writes
    /// the end-of-segment frame; all lower `final_count` to their sequence.
    fn fail_claim(&self, seg: &Segment, seq: u64, offset: u64) {
        if offset + 4 * seq + EOS_RESERVE <= seg.capacity {
            if let Some(w) = seg.frame_word(offset) {
                let _ =
                    w.compare_exchange(0, state_word(KIND_EOS, 0, 0), Ordering::AcqRel, Ordering::Relaxed);
            }
        }
        seg.seal(seq);
    }

    /// Moves on from full segment `number` to the next one.
    fn roll(&mut self, number: u64) -> Result<()> {
        let active = self.queue.meta().active()?;
        let won = active.compare_exchange(number, number + 1, Ordering::AcqRel, Ordering::Acquire).is_ok();
        self.queue.notify();
        if won {
            self.queue.rolled_over(number + 1);
        }
        let next = active.load(Ordering::Acquire).max(number + 1);
        self.seg = self.queue.segment_or_create(next)?;
        // As in `Reader::next_segment`: the full segment is released.
        self.queue.refresh_pin()?;
        self.pages_from_start();
        if let Some(policy) = self.queue.inner.retention {
            self.retention_due |= !self.queue.retain_in_background(policy);
        }
        // Producers that came and went since: alone again, take the lease.
        if !self.leased {
            self.leased = self.queue.try_lease(self.index)?;
        }
        Ok(())
    }

    /// Switches to the active segment if another producer rolled over.
    #[inline]
    fn follow_active(&mut self) -> Result<()> {
        let active = self.word(W_ACTIVE).load(Ordering::Acquire);
        if active != self.seg.number {
            self.seg = self.queue.segment_or_create(active)?;
            self.pages_from_start();
        }
        Ok(())
    }

    /// Starts page preparation over for a newly entered segment: none at
    /// all for one reopened through this process's idle mapping, whose
    /// pages are cached and mapped already (populating them again is a page
    /// walk per 4 KiB, and prefaulting a helper thread per 2 MiB, for
    /// nothing). Not all of them are writable: a page that mapping only
    /// read, or that writeback has cleaned since, costs a write fault on
    /// the first write instead (one per 4 KiB, where populating would take
    /// one system call per 64 KiB); measured, the skip still wins on ext4
    /// (see `docs/benchmarks-queue.md`, "Runs of 2026-12-06").
    fn pages_from_start(&mut self) {
        let done = if self.seg.reused { self.seg.capacity } else { 0 };
        (self.prefaulted, self.mapped) = (done, done);
    }

    /// Prefaults the next chunk of the current segment on one of this
    /// producer's helper threads ([`spawn_prefault_helper`]), so appends do
    /// not stop for page faults (each one costs about a microsecond on a
    /// shared file mapping).
    ///
    /// Two helpers, by the producer's pace. At a modest pace, one at idle
    /// priority brings the pages into the page cache: it uses CPU time
    /// nobody else wants, so it never delays a reader's wake-up. A producer
    /// writing flat out (over 64 MB/s) outruns it, since a reader spinning
    /// on the other core leaves it no CPU; its chunks go to a helper at
    /// normal priority that also populates this process's page tables
    /// writable, which the producer would otherwise do 64 KiB at a time in
    /// its own thread (about 700 ns per 4 KiB page). Not for durable queues:
    /// populating writable marks the pages dirty, and their `msync` of the
    /// segment would write the zeroed pages ahead of the tail. Measured, a
    /// helper at normal priority at every pace took the parking latency's
    /// p99 at 100k msg/s from 20 to 220–330 µs, and at idle priority it got
    /// too little CPU to gain much (see `docs/benchmarks-queue.md`, "tenth
    /// session"). When a helper falls behind, the producer populates for
    /// itself, as without one.
    ///
    /// A helper holds the segment weakly until it runs: an idle-priority
    /// thread may wait long, and must not keep an old segment mapped (and
    /// so pinned against recycling) meanwhile.
    fn prefault_ahead(&mut self, offset: u64) {
        let from = self.prefaulted.max(offset).max(self.mapped);
        self.prefaulted = from + PREFAULT_CHUNK;
        if from >= self.seg.capacity {
            return;
        }
        let populate = self.writes_flat_out(offset) && self.queue.durability() == Durability::OsManaged;
        let helper = &mut self.helpers[usize::from(populate)];
        if helper.is_none() {
            *helper = spawn_prefault_helper(populate);
        }
        let chunk = Chunk { seg: Arc::downgrade(&self.seg), from, large: self.queue.large_folios() };
        // A helper behind (or gone, or never started) leaves the pages to
        // the producer's own faults; never wait for it.
        if let Some(helper) = helper {
            let _ = helper.try_send(chunk);
        }
    }

    /// Whether this producer writes flat out: measured over at least 1 MiB
    /// of its own progress in one segment (a chunk is sent every 2 MiB of
    /// it); the chunks sent at a segment's start, a few bytes apart, keep
    /// the last measure.
    fn writes_flat_out(&mut self, offset: u64) -> bool {
        let now = std::time::Instant::now();
        let number = self.seg.number;
        match self.pace {
            Some((then, seg, at)) if seg == number && offset >= at => {
                let bytes = offset - at;
                if bytes < 1 << 20 {
                    return self.flat_out;
                }
                self.flat_out =
                    now.duration_since(then).as_nanos() * FLAT_OUT_RATE < u128::from(bytes) * 1_000_000_000;
            }
            _ => {}
        }
        self.pace = Some((now, number, offset));
        self.flat_out
    }

    /// Creates segment `number` in the background so rollover finds it.
    /// Called once the current segment is half full: early enough that the
    /// file is ready at rollover, late enough that a short-lived or slow
    /// producer does not pay for a segment it never uses (on tmpfs,
    /// preallocation zeroes the whole segment's memory).
    ///
    /// Not when a zeroed spare waits: rollover builds the segment from it
    /// in a rename and a header write. The helper itself never takes
    /// spares, so a helper that runs late cannot take one from under the
    /// rollover it was meant to help. Nor while retention feeds spares
    /// (this handle's last rollover found one), even if none waits right
    /// now: retention is zeroing the next one, due before the rollover,
    /// and a fresh segment built meanwhile would cost the producer its
    /// fresh pages and make that spare surplus (a bounded queue built up
    /// to a tenth of its segments fresh this way).
    fn precreate(&self, number: u64) {
        let dir = self.queue.path().to_path_buf();
        if self.queue.inner.spares_feed.load(Ordering::Relaxed)
            || dir.join(crate::segment::segment_file_name(number)).exists()
            || !crate::recycle::spares(&dir).is_empty()
        {
            return;
        }
        let queue = self.queue.clone();
        // Idle priority: on tmpfs `fallocate` zeroes the whole segment,
        // which must not take a reader's CPU. Without a thread, rollover
        // creates the segment itself.
        crate::background("mmkit-precreate", move || {
            idle_priority();
            // An idle thread may run long after it was started. Once the
            // active segment has passed `number`, rollover created it and
            // retention may have deleted it since: creating it now would
            // resurrect it empty, and readers reaching it would stop there.
            if !queue.meta().active_segment().is_ok_and(|a| a <= number) {
                return;
            }
            let _ = Segment::create(&dir, number, queue.new_segment(false));
            // Retention deleted it between the check and the create.
            if queue.meta().first_segment().is_ok_and(|first| first > number) {
                let _ = std::fs::remove_file(dir.join(crate::segment::segment_file_name(number)));
            }
        });
    }

    /// Commits one frame of a claim (see [`write_frame`]'s last step).
    fn publish(&self, seg: &Segment, seq: u64, offset: u64, len: usize, crc: u32, ts: u64) -> Result<()> {
        publish_frame(seg, seq, offset, len as u32, crc, ts)
    }

    /// In `SyncEveryMessage` mode, `msync`s the segment just written to;
    /// runs a retention pass that found no thread (see `retention_due`).
    fn after_commit(&mut self) -> Result<()> {
        if self.queue.durability() == Durability::SyncEveryMessage {
            self.seg.mapping().flush().map_err(Error::region("msync segment"))?;
        }
        if self.retention_due {
            self.retention_due = false;
            // Ignored, as on the helper thread: the message is committed,
            // and an error here must not make the caller append it again.
            if let Some(policy) = self.queue.inner.retention {
                let _ = self.queue.apply_retention(&policy);
            }
        }
        Ok(())
    }
}

/// A record's data as a producer writes it: the payload, after a metadata
/// block when there is one (`docs/queue-format.md`, "Frames").
#[derive(Clone, Copy)]
struct Data<'a> {
    meta: Option<&'a [u8]>,
    payload: &'a [u8],
}

impl<'a> Data<'a> {
    fn plain(payload: &'a [u8]) -> Self {
        Data { meta: None, payload }
    }

    fn with_meta(meta: &'a [u8], payload: &'a [u8]) -> Result<Self> {
        if meta.len() > MAX_META {
            return Err(Error::InvalidOption(format!(
                "metadata of {} bytes is longer than the {MAX_META} allowed",
                meta.len()
            )));
        }
        Ok(Data { meta: Some(meta), payload })
    }

    #[inline]
    fn len(&self) -> usize {
        self.payload.len() + self.meta.map_or(0, |m| 4 + m.len())
    }

    /// The state word's length field.
    #[inline]
    fn length_field(&self) -> u32 {
        self.len() as u32 | if self.meta.is_some() { META_FLAG } else { 0 }
    }

    #[inline]
    fn crc(&self, index: u64, timestamp: u64) -> u32 {
        match self.meta {
            None => record_crc(self.payload, index, timestamp),
            Some(m) => {
                let head = (m.len() as u32).to_le_bytes();
                record_crc_parts(&[&head, m, self.payload], index, timestamp)
            }
        }
    }

    /// Copies the data to `dst`.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for `self.len()` bytes of writes and must not
    /// overlap `self`'s slices.
    #[inline]
    unsafe fn copy_to(&self, mut dst: *mut u8) {
        if let Some(m) = self.meta {
            let head = (m.len() as u32).to_le_bytes();
            // SAFETY: `dst` has room for `4 + m.len() + payload.len()` bytes
            // (the caller's promise); the sources are ordinary memory that
            // cannot overlap it.
            unsafe {
                std::ptr::copy_nonoverlapping(head.as_ptr(), dst, 4);
                std::ptr::copy_nonoverlapping(m.as_ptr(), dst.add(4), m.len());
                dst = dst.add(4 + m.len());
            }
        }
        // SAFETY: as above, for the payload's bytes after the block.
        unsafe { std::ptr::copy_nonoverlapping(self.payload.as_ptr(), dst, self.payload.len()) };
    }
}

/// Fills a frame whose words [`Segment::run`] has found in bounds (of a
/// lease holder's run, or of a claim): copies `data` in with its CRC, then
/// commits it ([`commit_frame`]).
#[inline(always)]
fn fill_frame(frame: &RunFrame<'_>, index: u64, offset: u64, data: Data<'_>, ts: u64) {
    let crc = match data.meta {
        // SAFETY: `frame.data` has room for the frame's `data.len()` bytes
        // (`Run::frame` checked it with that length), which belong to this
        // producer alone (its run under the lease, or its claim) until it
        // commits them; another process writing them anyway can garble the
        // record (its CRC then fails for readers), never this write's bounds.
        // `data` is ordinary memory that cannot overlap the mapping.
        None => unsafe { write_record(data.payload.as_ptr(), frame.data, data.payload.len(), index, ts) },
        Some(_) => {
            // SAFETY: as for the arm above.
            unsafe { data.copy_to(frame.data) };
            data.crc(index, ts)
        }
    };
    commit_frame(frame, offset, data.length_field(), crc, ts);
}

/// Copies `data` into the claimed frame at (`seq`, `offset`) and commits it.
#[inline]
fn write_frame(seg: &Segment, seq: u64, offset: u64, data: Data<'_>, timestamp: u64) -> Result<()> {
    let frame = claimed_frame(seg, seq, offset, data.len() as u64)?;
    fill_frame(&frame, make_index(seg.number, seq as u32), offset, data, timestamp);
    Ok(())
}

/// Frame `seq` of a claim at `offset`, with `len` bytes of data.
fn claimed_frame(seg: &Segment, seq: u64, offset: u64, len: u64) -> Result<RunFrame<'_>> {
    seg.frame(seq, offset, len).ok_or_else(|| Error::corrupt(&seg.path, "claimed frame outside the segment"))
}

/// Fills and commits the frames of one claim, frame after frame, pushing
/// their indices to `out`.
fn fill_claim(
    seg: &Segment,
    seq: u64,
    mut offset: u64,
    msgs: &[Data<'_>],
    sizes: &[u64],
    ts: u64,
    out: &mut Vec<u64>,
) -> Result<()> {
    for (i, m) in msgs.iter().enumerate() {
        write_frame(seg, seq + i as u64, offset, *m, ts)?;
        out.push(make_index(seg.number, (seq + i as u64) as u32));
        offset += sizes[i];
    }
    Ok(())
}

/// Commits a frame of a claim that [`Producer::claim`] handed out to fill
/// in place (`len` bytes of data, no metadata block): see [`commit_frame`].
fn publish_frame(seg: &Segment, seq: u64, offset: u64, len: u32, crc: u32, ts: u64) -> Result<()> {
    commit_frame(&claimed_frame(seg, seq, offset, len as u64)?, offset, len, crc, ts);
    Ok(())
}

/// The commit: timestamp and index slot, then the message's state word
/// (`length_field`: the data length and [`META_FLAG`]) with one Release
/// store. Frames of a claim are committed in order, so a claimant that died
/// leaves a committed prefix and nothing after it.
#[inline(always)]
fn commit_frame(frame: &RunFrame<'_>, offset: u64, length_field: u32, crc: u32, ts: u64) {
    frame.timestamp.store(ts, Ordering::Relaxed);
    frame.index_slot.store(offset as u32, Ordering::Relaxed);
    frame.state.store(state_word(KIND_MESSAGE, length_field, crc), Ordering::Release);
}

/// Starts a producer's prefault helper: one thread for the producer's
/// life, which brings in the chunks it is sent and, if `populate`, also
/// populates the producer's page tables for them, at normal priority;
/// otherwise it runs at idle priority (see [`Producer::prefault_ahead`]).
/// Not a thread per chunk: creating a thread takes the address-space lock
/// for writing (its stack is mapped), which stalled the producer's own
/// `MADV_POPULATE_WRITE` behind it. The helper ends when the producer
/// drops its sender. `None` if no thread could be started (the next chunk
/// tries again).
fn spawn_prefault_helper(populate: bool) -> Option<std::sync::mpsc::SyncSender<Chunk>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(HELPER_QUEUE);
    let started = crate::background("mmkit-prefault", move || {
        if !populate {
            idle_priority();
        }
        for chunk in rx {
            if let Some(seg) = chunk.seg.upgrade() {
                prefault_chunk(&seg, &chunk, populate);
            }
        }
    });
    started.then_some(tx)
}

/// A helper's work on one chunk. With `populate`, a step at a time,
/// publishing how far the page tables are populated after each step (and
/// holding the address-space lock, for reading, one step at a time).
fn prefault_chunk(seg: &Segment, chunk: &Chunk, populate: bool) {
    if !populate {
        seg.prefault(chunk.from, PREFAULT_CHUNK, chunk.large);
        return;
    }
    let end = chunk.from.saturating_add(PREFAULT_CHUNK).min(seg.capacity);
    let mut at = chunk.from;
    while at < end {
        seg.prefault(at, HELPER_STEP, chunk.large);
        let done = seg.populate_write(at, HELPER_STEP);
        if done <= at {
            return;
        }
        seg.populated.fetch_max(done, Ordering::Relaxed);
        at = done;
    }
}

/// Moves the calling thread to the `SCHED_IDLE` class (best effort).
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler(0, ..)` changes only the calling thread's
    // scheduling class; `param` is a valid, initialised struct that the call
    // only reads. rustix has no sched_setscheduler, hence libc.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A shared batch is claimed in parts of at most `MAX_CLAIM_BYTES`
    /// whatever the segment size: with a quarter of a 1 GiB segment per
    /// claim, a dozen producers whose claims failed at one segment's end
    /// carried the tail's offset into its claim count.
    #[test]
    fn a_batch_claim_never_takes_more_than_max_claim_bytes() {
        let zeros = vec![0u8; MAX_MESSAGE_LIMIT as usize];
        for segment_size in [64 << 10, 16 << 20, 256 << 20, MAX_SEGMENT_SIZE] {
            let budget = batch_budget(segment_size);
            for len in [0, 100, 1 << 20, MAX_MESSAGE_LIMIT as usize] {
                if len as u64 > max_payload_for(segment_size) {
                    continue;
                }
                let msgs = vec![Data::plain(&zeros[..len]); 200];
                let mut rest = &msgs[..];
                let mut sizes = Vec::new();
                while !rest.is_empty() {
                    next_batch_claim(rest, budget, &mut sizes);
                    let total: u64 = sizes.iter().sum();
                    assert!(!sizes.is_empty() && total <= MAX_CLAIM_BYTES, "{segment_size}/{len}: {total}");
                    assert!(sizes.len() == 1 || total + 4 * sizes.len() as u64 <= budget);
                    rest = &rest[sizes.len()..];
                }
            }
        }
    }

    /// The populating helper fills the producer's page tables ahead of the
    /// tail for a producer writing flat out in a queue without a durability
    /// mode; not at a modest pace (one message), and never for a durable
    /// queue, whose `msync` of the segment would write the pages it dirtied.
    #[test]
    fn the_helper_populates_ahead_only_flat_out_and_without_durability() {
        use std::time::{Duration, Instant};
        let group = Durability::GroupCommit { interval_us: 1000, max_batch: 1024 };
        for (durability, messages, want) in
            [(Durability::OsManaged, 6000, true), (Durability::OsManaged, 1, false), (group, 6000, false)]
        {
            let dir = tempfile::tempdir().unwrap();
            let q = Queue::options()
                .create(true)
                .segment_size(16 << 20)
                .durability(durability)
                .open(dir.path())
                .unwrap();
            let mut p = q.producer().unwrap();
            // In batches: flat out is over 64 MB/s, which one `append` at a
            // time might not reach in a debug build on a busy machine.
            let payload = [7u8; 1024];
            let batch = vec![&payload[..]; 500];
            for _ in 0..messages / batch.len() {
                p.append_batch(&batch).unwrap();
            }
            for _ in 0..messages % batch.len() {
                p.append(&payload).unwrap();
            }
            let populated = || p.seg.populated.load(Ordering::Relaxed);
            // Long enough for the helper to do a chunk on a busy machine.
            let deadline = Instant::now() + Duration::from_secs(if want { 10 } else { 1 });
            while populated() < PREFAULT_CHUNK && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let case = format!("{durability:?}, {messages} messages: {}", populated());
            assert_eq!(populated() >= PREFAULT_CHUNK, want, "{case}");
        }
    }

    proptest! {
        /// `run_fits` counts down what `claim_fits` allows: the longest
        /// prefix whose frames all fit, as checking each prefix would find.
        #[test]
        fn run_fits_takes_the_longest_prefix_claim_fits_allows(
            capacity in 4096u64..1 << 20,
            seq in prop_oneof![0u64..5000, (u32::MAX as u64 - 8)..(u32::MAX as u64)],
            offset in 0u64..(1 << 20),
            lens in proptest::collection::vec(0usize..3000, 0..64),
        ) {
            let payloads: Vec<Vec<u8>> = lens.iter().map(|&n| vec![0; n]).collect();
            let msgs: Vec<Data<'_>> = payloads.iter().map(|p| Data::plain(p)).collect();
            let (mut want, mut want_bytes) = (0, 0);
            for k in 1..=msgs.len() {
                let bytes: u64 = msgs[..k].iter().map(|m| frame_size(m.len() as u64)).sum();
                if seq + k as u64 >= u32::MAX as u64 || !claim_fits(capacity, seq, k as u64, offset, bytes) {
                    break;
                }
                (want, want_bytes) = (k, bytes);
            }
            prop_assert_eq!(run_fits(capacity, seq, offset, &msgs), (want, want_bytes));
        }
    }
}
