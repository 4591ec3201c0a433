//! Appending: claim with one `fetch_add`, fill, commit with one Release store.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mmkit_sync::{Notifier, ProcessToken};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::format::*;
use crate::queue::{Durability, Queue};
use crate::segment::Segment;

/// Appends messages. One per thread: any number of producers in any
/// number of processes append concurrently without a lock.
///
/// Each producer owns a slot in the meta file's producer table, where it
/// announces its claims so that readers can tell an in-progress claim of a
/// live producer from one abandoned by a crashed process.
pub struct Producer {
    queue: Queue,
    slot: u64,
    /// Cached pointers into the meta mapping (which `queue` keeps alive):
    /// slot state, slot segment, slot claim, meta active-segment word.
    words: [*const AtomicU64; 4],
    notifier: *const Notifier,
    token: u64,
    generation: u64,
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
}

/// Whether a fresh claim at `offset` lands on a frame that is already
/// written. That happens only when the tail word on disk is older than the
/// frames after a machine crash (the kernel wrote the pages back in another
/// order); the claim is then treated as failed, which seals the segment
/// without overwriting what is there, and appending goes on in a new one.
fn stale_tail(seg: &Segment, offset: u64) -> bool {
    seg.frame_word(offset).is_some_and(|w| w.load(Ordering::Relaxed) != 0)
}

/// Bytes prefaulted per step, ahead of the producers' tail.
const PREFAULT_CHUNK: u64 = 2 << 20;

/// How far ahead of a claim prefaulting is started.
const PREFAULT_LEAD: u64 = 4 << 20;

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
/// bytes are exclusively this claim's: the `fetch_add` gave this range to
/// exactly one claimant, no conforming process writes a claimed frame's
/// payload (crash recovery only ever rewrites the 8-byte state word of a
/// frame whose claimant is dead, and this claimant is alive while `&mut`
/// borrows exist), and readers do not read the payload before the commit
/// store publishes it.
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
        p.publish(&p.seg, self.offset, self.payload.len(), crc, self.timestamp)?;
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
    /// Registers a producer (takes a free slot, or the slot of a dead
    /// process, in the producer table).
    pub fn producer(&self) -> Result<Producer> {
        let token = ProcessToken::current_process().to_raw();
        let meta = self.meta();
        for i in 0..PRODUCER_SLOTS as u64 {
            let slot = PRODUCER_TABLE + i * PRODUCER_SLOT_SIZE;
            let word = meta.u64_at(slot)?;
            let cur = word.load(Ordering::Acquire);
            let free = cur == 0 || !ProcessToken::from_raw(cur).is_alive();
            if free && word.compare_exchange(cur, token, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                // A slot of ours that another producer of this process still
                // uses cannot be taken: its token is alive, so `free` was false.
                meta.u64_at(slot + 8)?.store(PRODUCER_IDLE, Ordering::Release);
                let active = meta.active_segment()?;
                let seg = self.segment_or_create(active)?;
                let words = [
                    meta.u64_at(slot + 8)? as *const AtomicU64,
                    meta.u64_at(slot + 16)? as *const AtomicU64,
                    meta.u64_at(slot + 24)? as *const AtomicU64,
                    meta.active()? as *const AtomicU64,
                ];
                let notifier = meta.notifier()? as *const Notifier;
                let p = Producer {
                    queue: self.clone(),
                    slot,
                    words,
                    notifier,
                    token,
                    generation: 0,
                    seg,
                    max: self.max_message_size(),
                    timestamps: self.timestamps(),
                    clock: Clock::default(),
                    prefaulted: 0,
                    mapped: 0,
                    precreated: u64::MAX,
                };
                return Ok(p);
            }
        }
        Err(Error::TableFull { path: meta.path.clone(), table: "producer", capacity: PRODUCER_SLOTS })
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Ok(w) = self.queue.meta().u64_at(self.slot) {
            if let Ok(s) = self.queue.meta().u64_at(self.slot + 8) {
                s.store(PRODUCER_IDLE, Ordering::Release);
            }
            let _ = w.compare_exchange(self.token, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

impl Producer {
    /// The queue this producer appends to.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Appends a copy of `msg` and returns its index.
    pub fn append(&mut self, msg: &[u8]) -> Result<u64> {
        let ts = if self.timestamps { self.clock.now() } else { 0 };
        self.append_with_timestamp(msg, ts)
    }

    /// Appends with an explicit timestamp (nanoseconds since the epoch).
    pub fn append_with_timestamp(&mut self, msg: &[u8], timestamp: u64) -> Result<u64> {
        self.check_len(msg.len())?;
        let bytes = frame_size(msg.len() as u64);
        let (seq, offset) = self.claim_frames(&[bytes])?;
        // No `Arc` clone on the hot path: its locked increment and decrement
        // would each drain the store buffer.
        let seg = &*self.seg;
        let index = make_index(seg.number, seq);
        let dst = seg
            .bytes_ptr(offset + FRAME_HEADER, msg.len() as u64)
            .ok_or_else(|| Error::corrupt(&seg.path, "claimed frame outside the segment"))?;
        // SAFETY: `claim_frames` checked the frame lies inside the mapping;
        // the range belongs to this claim alone (see `Claim`), and `msg` is
        // ordinary memory that cannot overlap a range we exclusively own.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), dst, msg.len()) };
        let crc = record_crc(msg, index, timestamp);
        self.publish(seg, offset, msg.len(), crc, timestamp)?;
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

    /// Appends several messages with one claim per segment they land in
    /// and returns their indices in order.
    pub fn append_batch(&mut self, msgs: &[&[u8]]) -> Result<Vec<u64>> {
        for m in msgs {
            self.check_len(m.len())?;
        }
        let mut out = Vec::with_capacity(msgs.len());
        let budget = (self.queue.segment_size() - SEGMENT_HEADER) / 4;
        let mut rest = msgs;
        let mut sizes = Vec::new();
        while !rest.is_empty() {
            sizes.clear();
            let mut total = 0;
            for m in rest {
                let b = frame_size(m.len() as u64);
                if !sizes.is_empty() && total + b + 4 > budget {
                    break;
                }
                total += b + 4;
                sizes.push(b);
            }
            let (chunk, tail) = rest.split_at(sizes.len());
            rest = tail;
            let ts = if self.timestamps { self.clock.now() } else { 0 };
            let (seq, mut offset) = self.claim_frames(&sizes)?;
            let seg = self.seg.clone();
            for (i, m) in chunk.iter().enumerate() {
                let index = make_index(seg.number, seq + i as u32);
                let dst = seg
                    .bytes_ptr(offset + FRAME_HEADER, m.len() as u64)
                    .ok_or_else(|| Error::corrupt(&seg.path, "claimed frame outside the segment"))?;
                // SAFETY: as in `append_with_timestamp`; frame `i` of this
                // claim is inside the claimed, exclusively owned range.
                unsafe { std::ptr::copy_nonoverlapping(m.as_ptr(), dst, m.len()) };
                self.publish_quiet(&seg, offset, m.len(), record_crc(m, index, ts), ts)?;
                out.push(index);
                offset += sizes[i];
            }
            self.notify();
            // Per claim, not once at the end: a batch that rolled over has
            // messages in more than one segment, and each must be flushed.
            self.after_commit()?;
        }
        Ok(out)
    }

    /// Claims `len` bytes to fill in place; see [`Claim`].
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>> {
        self.check_len(len)?;
        let (seq, offset) = self.claim_frames(&[frame_size(len as u64)])?;
        let ptr = self
            .seg
            .bytes_ptr(offset + FRAME_HEADER, len as u64)
            .ok_or_else(|| Error::corrupt(&self.seg.path, "claimed frame outside the segment"))?;
        // SAFETY: the range is inside the mapping held by `self.seg` (the
        // same segment: `claim_frames` stores it there), which the claim's
        // `&mut self` borrow keeps alive and unchanged; the bytes belong to
        // this claim alone until it is committed or dropped (see `Claim`).
        let payload = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let timestamp = if self.timestamps { self.clock.now() } else { 0 };
        Ok(Claim { producer: self, seq, offset, payload, timestamp, done: false })
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.max {
            return Err(Error::MessageTooLarge { len, max: self.max });
        }
        Ok(())
    }

    fn word(&self, which: usize) -> &AtomicU64 {
        // SAFETY: `words` were obtained from checked accessors of the meta
        // mapping, which `self.queue` keeps mapped while `self` lives.
        unsafe { &*self.words[which] }
    }

    fn notifier(&self) -> &Notifier {
        // SAFETY: as in `word`.
        unsafe { &*self.notifier }
    }

    fn notify(&self) {
        self.notifier().notify_all();
    }

    /// Claims consecutive frames of the given sizes in the active segment,
    /// rolling over as needed (the claim is in `self.seg` on return).
    /// Returns the first sequence number and first offset. Announces the claim in the producer slot:
    /// `CLAIMING` before the `fetch_add`, then `(segment, seq, count)` and
    /// `CLAIMED`.
    fn claim_frames(&mut self, sizes: &[u64]) -> Result<(u32, u64)> {
        let total: u64 = sizes.iter().sum();
        let n = sizes.len() as u64;
        loop {
            self.follow_active()?;
            self.generation += 1;
            let seg = &*self.seg;
            let state = self.word(0);
            // Release, not SeqCst: the `fetch_add` below is a release
            // operation, so a reader that sees this claim through the tail
            // (an acquire load of this or any later value; later
            // `fetch_add`s continue the release sequence) also sees this
            // announcement, and a reader that sees the announcement sees
            // everything this producer did before (its earlier commits and
            // index slots). On x86 this is a plain store, not a locked one.
            state.store(self.generation << 2 | PRODUCER_CLAIMING, Ordering::Release);
            // SeqCst (the same instruction on x86): a reader parked on the
            // notifier is woken by the claim itself, not only by the commit,
            // so a producer killed between claim and commit leaves that
            // reader waiting on a known claim (recovered within
            // milliseconds) rather than asleep with nothing to wake it.
            let old = seg.tail().fetch_add((n << 32) + total, Ordering::SeqCst);
            self.notifier().notify_all_after_seqcst_rmw();
            let (seq, offset) = split_tail(old);
            if seq + n < u32::MAX as u64
                && claim_fits(seg.capacity, seq, n, offset, total)
                && !stale_tail(seg, offset)
            {
                let mut o = offset;
                for (i, size) in sizes.iter().enumerate() {
                    // The in-progress marker goes first: a claim whose
                    // marker is still zero has written nothing at all.
                    if let Some(w) = seg.frame_word(o) {
                        w.store(*size, Ordering::Relaxed);
                    }
                    if let Some(slot) = seg.index_slot(seq + i as u64) {
                        slot.store(o as u32, Ordering::Relaxed);
                    }
                    o += size;
                }
                self.word(1).store(seg.number, Ordering::Relaxed);
                self.word(2).store(seq << 32 | n, Ordering::Relaxed);
                state.store(self.generation << 2 | PRODUCER_CLAIMED, Ordering::Release);
                if offset + total > self.mapped {
                    self.mapped = seg.populate_write(offset, total + MAP_STEP);
                }
                if offset + total + PREFAULT_LEAD > self.prefaulted {
                    self.prefault_ahead(offset);
                }
                if offset > self.seg.capacity / 2 && self.precreated != self.seg.number {
                    self.precreated = self.seg.number;
                    self.precreate(self.seg.number + 1);
                }
                return Ok((seq as u32, offset));
            }
            let number = seg.number;
            let seg = self.seg.clone();
            self.fail_claim(&seg, seq, offset);
            self.word(0).store(self.generation << 2 | PRODUCER_IDLE, Ordering::Release);
            self.roll(number)?;
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
        seg.final_count().fetch_min(seq, Ordering::AcqRel);
    }

    /// Moves on from full segment `number` to the next one.
    fn roll(&mut self, number: u64) -> Result<()> {
        let active = self.queue.meta().active()?;
        let _ = active.compare_exchange(number, number + 1, Ordering::AcqRel, Ordering::Acquire);
        self.queue.notify();
        let next = active.load(Ordering::Acquire).max(number + 1);
        self.seg = self.queue.segment_or_create(next)?;
        // As in `Reader::next_segment`: the full segment is released.
        self.queue.refresh_pin()?;
        self.prefaulted = 0;
        self.mapped = 0;
        if let Some(policy) = self.queue.inner.retention {
            self.queue.retain_in_background(policy);
        }
        Ok(())
    }

    /// Switches to the active segment if another producer rolled over.
    fn follow_active(&mut self) -> Result<()> {
        let active = self.word(3).load(Ordering::Acquire);
        if active != self.seg.number {
            self.seg = self.queue.segment_or_create(active)?;
            self.prefaulted = 0;
            self.mapped = 0;
        }
        Ok(())
    }

    /// Prefaults the next chunk of the current segment on a helper thread,
    /// so appends do not stop for page faults (each one costs about a
    /// microsecond on a shared file mapping). The helper runs at idle
    /// priority: it uses CPU time nobody else wants and never delays a
    /// reader or producer (on a busy machine the producer simply takes the
    /// faults itself, as without prefaulting).
    ///
    /// The helper holds the segment weakly until it runs: an idle-priority
    /// thread may wait long, and must not keep an old segment mapped (and
    /// so pinned against recycling) meanwhile.
    fn prefault_ahead(&mut self, offset: u64) {
        let from = self.prefaulted.max(offset).max(self.mapped);
        self.prefaulted = from + PREFAULT_CHUNK;
        if from >= self.seg.capacity {
            return;
        }
        let seg = Arc::downgrade(&self.seg);
        std::thread::spawn(move || {
            idle_priority();
            if let Some(seg) = seg.upgrade() {
                seg.prefault(from, PREFAULT_CHUNK)
            }
        });
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
    /// rollover it was meant to help.
    fn precreate(&self, number: u64) {
        let dir = self.queue.path().to_path_buf();
        if dir.join(crate::segment::segment_file_name(number)).exists()
            || !crate::recycle::spares(&dir).is_empty()
        {
            return;
        }
        let queue = self.queue.clone();
        // Idle priority: on tmpfs `fallocate` zeroes the whole segment,
        // which must not take a reader's CPU.
        std::thread::spawn(move || {
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

    fn publish_quiet(&self, seg: &Segment, offset: u64, len: usize, crc: u32, ts: u64) -> Result<()> {
        let word = seg
            .frame_word(offset)
            .ok_or_else(|| Error::corrupt(&seg.path, "claimed frame outside the segment"))?;
        if let Some(t) = seg.timestamp_word(offset) {
            t.store(ts, Ordering::Relaxed);
        }
        word.store(state_word(KIND_MESSAGE, len as u32, crc), Ordering::Release);
        Ok(())
    }

    fn publish(&self, seg: &Segment, offset: u64, len: usize, crc: u32, ts: u64) -> Result<()> {
        self.publish_quiet(seg, offset, len, crc, ts)?;
        self.notify();
        Ok(())
    }

    /// In `SyncEveryMessage` mode, `msync`s the segment just written to.
    fn after_commit(&self) -> Result<()> {
        if self.queue.durability() == Durability::SyncEveryMessage {
            self.seg.mapping().flush().map_err(Error::region("msync segment"))?;
        }
        Ok(())
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
