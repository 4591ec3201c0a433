//! The queue handle and its options.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::*;
use crate::meta::Meta;
use crate::segment::{NewSegment, Segment};

/// When appended messages reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// The OS writes pages back when it likes: messages survive a crash of
    /// any process, not of the machine. The fastest mode.
    #[default]
    OsManaged,
    /// Batched `msync`: [`Queue::wait_durable`] and
    /// [`Producer::append_durable`](crate::Producer::append_durable) return
    /// once a flush covering the message finished. One waiter at a time
    /// flushes, after waiting up to `interval_us` for more messages (or
    /// until `max_batch` messages are pending), and everybody whose message
    /// it covered is released together.
    GroupCommit {
        /// How long the flusher waits to gather a batch, in microseconds.
        interval_us: u32,
        /// Flush at once when this many messages are pending.
        max_batch: u32,
    },
    /// `msync` of each message's pages before `append` returns.
    SyncEveryMessage,
}

impl Durability {
    pub(crate) fn to_stored(self) -> StoredDurability {
        match self {
            Durability::OsManaged => StoredDurability { kind: 0, interval_us: 0, max_batch: 0 },
            Durability::GroupCommit { interval_us, max_batch } => {
                StoredDurability { kind: 1, interval_us, max_batch }
            }
            Durability::SyncEveryMessage => StoredDurability { kind: 2, interval_us: 0, max_batch: 0 },
        }
    }

    pub(crate) fn from_stored(s: StoredDurability) -> Durability {
        match s.kind {
            1 => Durability::GroupCommit { interval_us: s.interval_us, max_batch: s.max_batch },
            2 => Durability::SyncEveryMessage,
            _ => Durability::OsManaged,
        }
    }
}

/// Which old segments to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Delete sealed segments sealed longer ago than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest sealed segments while the queue uses more bytes.
    pub max_total_bytes: Option<u64>,
    /// Never delete a segment a named cursor or a consumer group has not
    /// passed yet (default `true`).
    pub respect_cursors: bool,
    /// Keep up to two deleted segment files as zeroed spares and build new
    /// segments from them (default `true`). A fresh file costs the kernel
    /// several microseconds per 4 KiB page on first write; a recycled one
    /// is warm. A segment some live process may still have mapped is
    /// deleted, never recycled.
    pub recycle: bool,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age: None, max_total_bytes: None, respect_cursors: true, recycle: true }
    }
}

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained message.
    Beginning,
    /// After the last message appended so far.
    End,
    /// At this index (or the first message after it, if it was abandoned).
    Index(u64),
    /// At the first message with a timestamp at or after this many
    /// nanoseconds since the Unix epoch.
    Time(u64),
}

/// Builder for opening or creating a queue.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    segment_size: u64,
    max_message: u32,
    max_message_set: bool,
    timestamps: bool,
    durability: Option<Durability>,
    retention: Option<Retention>,
    cache_behind: Option<u64>,
    create: bool,
    create_new: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            segment_size: 64 << 20,
            max_message: 1 << 20,
            max_message_set: false,
            timestamps: true,
            durability: None,
            retention: None,
            cache_behind: Some(crate::dropbehind::DEFAULT_CACHE_BEHIND),
            create: false,
            create_new: false,
        }
    }
}

impl OpenOptions {
    /// Default options: open an existing queue.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Bytes per segment file (creation only; default 64 MiB). A multiple
    /// of 4096 between 4 KiB and 1 GiB.
    pub fn segment_size(&mut self, bytes: u64) -> &mut Self {
        self.segment_size = bytes;
        self
    }

    /// Largest message accepted (creation only; default 1 MiB, lowered to
    /// what fits in a segment unless set explicitly).
    pub fn max_message_size(&mut self, bytes: u32) -> &mut Self {
        self.max_message = bytes;
        self.max_message_set = true;
        self
    }

    /// Whether records carry a nanosecond timestamp (creation only;
    /// default true).
    pub fn timestamps(&mut self, yes: bool) -> &mut Self {
        self.timestamps = yes;
        self
    }

    /// Durability for this handle (default: the mode stored at creation,
    /// itself defaulting to [`Durability::OsManaged`]).
    pub fn durability(&mut self, mode: Durability) -> &mut Self {
        self.durability = Some(mode);
        self
    }

    /// Retention applied by this handle's producers whenever a segment
    /// fills up.
    pub fn retention(&mut self, policy: Retention) -> &mut Self {
        self.retention = Some(policy);
        self
    }

    /// How many bytes of sealed segments this handle's producers leave in
    /// the page cache behind the active segment when there is no retention
    /// policy (default 256 MiB, and at least one segment). Older segments
    /// are written back and dropped from the page cache on a background
    /// thread, so new segments reuse their memory instead of fresh pages;
    /// readers further behind read from the file instead of from memory.
    /// Pages some process has mapped stay. `None` leaves the page cache
    /// to the kernel. Not applied with retention, which recycles segment
    /// files with their pages.
    pub fn cache_behind(&mut self, bytes: Option<u64>) -> &mut Self {
        self.cache_behind = bytes;
        self
    }

    /// Create the queue if it does not exist.
    pub fn create(&mut self, yes: bool) -> &mut Self {
        self.create = yes;
        self
    }

    /// Create the queue; fail if it exists.
    pub fn create_new(&mut self, yes: bool) -> &mut Self {
        self.create_new = yes;
        self
    }

    /// Opens (or creates) the queue in `dir`.
    pub fn open(&self, dir: impl AsRef<Path>) -> Result<Queue> {
        let dir = dir.as_ref();
        if self.create || self.create_new {
            match self.create_in(dir) {
                Ok(()) => {}
                Err(Error::AlreadyExists { .. }) if !self.create_new => {}
                Err(e) => return Err(e),
            }
        }
        let meta = Meta::open(dir)?;
        // Producers skip a fence per message when their process is
        // registered for expedited memory barriers (see `mmkit_sync::barrier`).
        mmkit_sync::barrier::register();
        crate::segment::sweep_stale_temps(dir);
        let durability = self.durability.unwrap_or(Durability::from_stored(meta.header.durability));
        if let Durability::GroupCommit { interval_us, .. } = durability {
            if interval_us > 10_000_000 {
                return Err(Error::InvalidOption("group-commit interval above 10 s".into()));
            }
        }
        let pin = crate::recycle::PinSlot::acquire(&meta)?;
        let inner = Inner {
            dir: dir.to_path_buf(),
            pin,
            meta,
            durability,
            retention: self.retention,
            cache_behind: self.cache_behind,
            drop_behind: crate::dropbehind::DropBehind::default(),
            segments: Mutex::new(Vec::new()),
            retention_requests: AtomicU64::new(0),
            idle: Arc::default(),
            spares_feed: AtomicBool::new(false),
            flusher: Mutex::new(None),
        };
        Ok(Queue { inner: Arc::new(inner) })
    }

    fn header(&self) -> Result<MetaHeader> {
        let mut max_message = self.max_message;
        if !self.max_message_set {
            max_message = max_message.min(max_payload_for(self.segment_size).min(u32::MAX as u64) as u32);
        }
        let header = MetaHeader {
            segment_size: self.segment_size,
            max_message,
            flags: if self.timestamps { FLAG_TIMESTAMPS } else { 0 },
            durability: self.durability.unwrap_or_default().to_stored(),
        };
        header.validate().map_err(Error::InvalidOption)?;
        Ok(header)
    }

    fn create_in(&self, dir: &Path) -> Result<()> {
        let header = self.header()?;
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create queue directory", dir, e)),
        }
        if dir.join("meta").exists() {
            return Err(Error::AlreadyExists { path: dir.into() });
        }
        let spec =
            NewSegment { capacity: header.segment_size, flags: header.flags, sync: true, spares: false };
        Segment::create(dir, 0, spec)?;
        Meta::create(dir, &header)?;
        crate::segment::sync_dir(dir)
    }
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    /// This handle's pin: the lowest segment it may have mapped.
    pin: crate::recycle::PinSlot,
    pub(crate) meta: Meta,
    pub(crate) durability: Durability,
    pub(crate) retention: Option<Retention>,
    /// See [`OpenOptions::cache_behind`].
    cache_behind: Option<u64>,
    drop_behind: crate::dropbehind::DropBehind,
    segments: Mutex<Vec<Weak<Segment>>>,
    /// Background retention passes requested and not yet covered by a
    /// pass (see `Queue::retain_in_background`).
    retention_requests: AtomicU64,
    /// Mappings of segments no longer in use, for recycled files.
    idle: Arc<crate::idle::IdleMappings>,
    /// Whether the last segment this handle built at a rollover came from
    /// a spare: while retention keeps feeding spares, producers build no
    /// fresh segments ahead (see `Producer::precreate`).
    pub(crate) spares_feed: AtomicBool,
    pub(crate) flusher: Mutex<Option<crate::reader::Reader>>,
}

/// A persistent, multi-process message queue in a directory.
///
/// Cheap to clone; clones share mappings. See the crate docs for an
/// example and `docs/queue-format.md` for the format.
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("dir", &self.inner.dir).finish()
    }
}

impl Queue {
    /// Creates a new queue in `dir` with default options (the directory
    /// may exist but must not hold a queue).
    pub fn create(dir: impl AsRef<Path>) -> Result<Queue> {
        OpenOptions::new().create_new(true).open(dir)
    }

    /// Opens an existing queue.
    pub fn open(dir: impl AsRef<Path>) -> Result<Queue> {
        OpenOptions::new().open(dir)
    }

    /// A builder for [`OpenOptions`].
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// The queue's directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The queue's id: 128 random bits chosen at creation, never changed,
    /// so that copies and mirrors of a queue can tell it from others.
    pub fn id(&self) -> u128 {
        self.inner.meta.id
    }

    /// Bytes per segment file.
    pub fn segment_size(&self) -> u64 {
        self.inner.meta.header.segment_size
    }

    /// Largest message accepted, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.inner.meta.header.max_message as usize
    }

    /// Whether records carry timestamps.
    pub fn timestamps(&self) -> bool {
        self.inner.meta.header.flags & FLAG_TIMESTAMPS != 0
    }

    /// This handle's durability mode.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Called by the producer whose rollover made `active` the active
    /// segment: drops segments behind it from the page cache (see
    /// [`OpenOptions::cache_behind`]).
    pub(crate) fn rolled_over(&self, active: u64) {
        let Some(bytes) = self.inner.cache_behind.filter(|_| self.drops_behind()) else { return };
        let keep = bytes.div_ceil(self.segment_size().max(1));
        self.inner.drop_behind.rolled_over(&self.inner.dir, active, keep);
    }

    /// Whether this handle's producers drop old segments from the page
    /// cache (see [`OpenOptions::cache_behind`]).
    fn drops_behind(&self) -> bool {
        self.inner.retention.is_none() && self.inner.cache_behind.is_some()
    }

    /// Whether pages brought in ahead of the producers may be large folios
    /// (see `Segment::prefault`): not for durable queues, whose syncs
    /// would write each dirty folio whole, nor where old segments are
    /// dropped behind the tail: there 4 KiB pages freed by the drop come
    /// back to the next segment at once, while 2 MiB blocks freed are
    /// returned to a VM's host before they are reused (measured in
    /// `docs/benchmarks-queue.md`, "ninth session").
    pub(crate) fn large_folios(&self) -> bool {
        self.inner.durability == Durability::OsManaged && !self.drops_behind()
    }

    /// Maps segment `number`, sharing a mapping with other handles of this
    /// queue that hold it. Only segments someone holds stay mapped.
    pub(crate) fn segment(&self, number: u64) -> Result<Arc<Segment>> {
        // Every segment a reader or producer moves to comes through here, so
        // this bound also keeps their `number + 1` from overflowing.
        if number >= MAX_SEGMENTS {
            return Err(Error::corrupt(
                &self.inner.meta.path,
                format!(
                    "segment number {number} is beyond the index space (a corrupt active or first segment)"
                ),
            ));
        }
        let mut cache = self.inner.segments.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|w| w.strong_count() > 0);
        if let Some(seg) = cache.iter().filter_map(Weak::upgrade).find(|s| s.number == number) {
            // Mapped already, so pinned since it was opened.
            return Ok(seg);
        }
        // Pin before opening (see `recycle`): the lowest segment this
        // handle will have mapped, live ones included.
        let lowest = cache.iter().filter_map(Weak::upgrade).fold(number, |low, s| low.min(s.number));
        if !self.inner.pin.pin(&self.inner.meta, lowest, number)? {
            // Retired: retention may be rewriting the file for reuse.
            let path = self.inner.dir.join(crate::segment::segment_file_name(number));
            return Err(Error::io("open segment", &path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        if self.inner.meta.first()?.load(Ordering::Relaxed) > 0 {
            // Segments are being retired, so files may come back recycled.
            self.inner.idle.enable();
        }
        let seg = Arc::new(Segment::open(&self.inner.dir, number, self.segment_size(), &self.inner.idle)?);
        cache.push(Arc::downgrade(&seg));
        Ok(seg)
    }

    /// Lowers this handle's pin to what it still has mapped: a pin is only
    /// moved when a segment is opened, so it can lag behind segments
    /// dropped since, and retention would not recycle those.
    pub(crate) fn refresh_pin(&self) -> Result<()> {
        let mut cache = self.inner.segments.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|w| w.strong_count() > 0);
        // Under the cache lock, so no segment is opened (and so mapped)
        // meanwhile; one whose last Arc goes away meanwhile only makes the
        // pin conservative.
        let lowest = cache.iter().filter_map(Weak::upgrade).map(|s| s.number).min();
        self.inner.pin.set(&self.inner.meta, lowest)
    }

    /// Maps segment `number`, creating it first if it does not exist and
    /// is not older than the active segment (an older missing segment was
    /// deleted by retention and must not be resurrected).
    pub(crate) fn segment_or_create(&self, number: u64) -> Result<Arc<Segment>> {
        match self.segment(number) {
            Err(e) if crate::segment::is_not_found(&e) => {
                if number < self.meta().active_segment()? {
                    // It may have been created and filled meanwhile.
                    if let Ok(seg) = self.segment(number) {
                        return Ok(seg);
                    }
                    return Err(Error::NoSuchIndex {
                        index: make_index(number, 0),
                        reason: "segment deleted by retention",
                    });
                }
                if let Some(from_spare) = Segment::create(&self.inner.dir, number, self.new_segment(true))? {
                    self.inner.spares_feed.store(from_spare, Ordering::Relaxed);
                }
                self.segment(number)
            }
            other => other,
        }
    }

    /// How this queue builds new segments; `spares`: whether from a zeroed
    /// spare when there is one.
    pub(crate) fn new_segment(&self, spares: bool) -> NewSegment {
        let h = &self.inner.meta.header;
        let sync = self.inner.durability != Durability::OsManaged;
        NewSegment { capacity: h.segment_size, flags: h.flags, sync, spares }
    }

    /// Applies `policy` on a helper thread, as after each rollover. At
    /// most one helper runs per handle: a request made while one runs
    /// makes it run one more pass, instead of piling up threads. False
    /// when no thread could start (a thread or address-space limit): the
    /// caller then runs the pass itself, once it can wait for it.
    #[must_use]
    pub(crate) fn retain_in_background(&self, policy: Retention) -> bool {
        if self.inner.retention_requests.fetch_add(1, Ordering::AcqRel) > 0 {
            return true;
        }
        let q = self.clone();
        let started = crate::background("mmkit-retention", move || {
            loop {
                let seen = q.inner.retention_requests.load(Ordering::Acquire);
                let _ = q.apply_retention(&policy);
                // Requests that came during the pass were not covered by it.
                if q.inner
                    .retention_requests
                    .compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    break;
                }
            }
        });
        if !started {
            self.inner.retention_requests.store(0, Ordering::Release);
        }
        started
    }

    /// This handle's idle mappings.
    pub(crate) fn idle(&self) -> &crate::idle::IdleMappings {
        &self.inner.idle
    }

    pub(crate) fn meta(&self) -> &Meta {
        &self.inner.meta
    }

    /// Wakes every parked reader.
    pub(crate) fn notify(&self) {
        if let Ok(n) = self.inner.meta.notifier() {
            n.notify_all();
        }
    }

    /// The index of the oldest retained position.
    pub fn first_index(&self) -> Result<u64> {
        Ok(make_index(self.meta().first_segment()?, 0))
    }

    /// The index the next appended message would get if nobody else
    /// appends first (the active segment's claim count).
    ///
    /// A producer moves the active segment on before it creates the file,
    /// so the active segment may not exist yet, or ever, if that producer
    /// died in between: then nothing is in it, and the end is its start.
    pub fn end_index(&self) -> Result<u64> {
        loop {
            let active = self.meta().active_segment()?;
            let seg = match self.segment(active) {
                Ok(seg) => seg,
                Err(e) if crate::segment::is_not_found(&e) => {
                    // Unless `active` moved on meanwhile and retention
                    // retired the one read (then look again).
                    if self.meta().active_segment()? == active {
                        return Ok(make_index(active, 0));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (count, _) = split_tail(seg.tail().load(Ordering::Acquire));
            let fin = seg.final_count().load(Ordering::Acquire);
            return Ok(make_index(active, count.min(fin).min(u32::MAX as u64) as u32));
        }
    }

    /// Writes every dirty page of the queue to disk now (`msync`).
    pub fn sync(&self) -> Result<()> {
        let first = self.meta().first_segment()?;
        let active = self.meta().active_segment()?;
        for n in self.segments_between(first, active)? {
            self.flush_segment(n)?;
        }
        self.meta().flush()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.pin.release(&self.meta);
    }
}
