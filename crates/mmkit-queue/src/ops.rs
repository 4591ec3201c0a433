//! Random access, seek by time, statistics, checking, durability waits
//! and retention.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mmkit_sync::{ProcessToken, WaitPolicy};

use crate::error::{Error, Result};
use crate::format::*;
use crate::queue::{Durability, Queue, Retention, Start};
use crate::reader::{valid_slot, volatile_copy};
use crate::recovery::{Assessment, SLOT_ABANDONED, assess, padded_run, recover};
use crate::segment::{Segment, is_not_found, now_ns, parse_segment_name, segment_file_name};

/// What [`Queue::read_at`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// The record's index.
    pub index: u64,
    /// Its timestamp (0 without timestamps).
    pub timestamp: u64,
    /// Payload length.
    pub len: usize,
}

/// One segment file, as [`Queue::stat`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment number.
    pub number: u64,
    /// File path.
    pub path: PathBuf,
    /// File size in bytes.
    pub bytes: u64,
    /// Claims in the segment (messages plus abandoned claims).
    pub messages: u64,
    /// Whether the segment is full and closed.
    pub sealed: bool,
}

/// A consumer group, as [`Queue::stat`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Index of the next message to hand out.
    pub position: u64,
    /// Indices delivered but not acknowledged.
    pub in_flight: Vec<u64>,
    /// Messages between the position and the end.
    pub lag: u64,
}

/// Queue statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStat {
    /// Segment files, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// Index of the oldest retained position.
    pub first_index: u64,
    /// Index the next message would get.
    pub end_index: u64,
    /// Named cursors.
    pub cursors: Vec<crate::CursorInfo>,
    /// Consumer groups.
    pub groups: Vec<GroupInfo>,
    /// Bytes per segment.
    pub segment_size: u64,
    /// Largest message accepted.
    pub max_message_size: usize,
}

/// One problem found by [`Queue::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptInfo {
    /// Segment number.
    pub segment: u64,
    /// Index of the bad record, when the problem is in a record.
    pub index: Option<u64>,
    /// Byte offset in the segment file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// A claim that is not committed, as [`Queue::check`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimInfo {
    /// Segment number.
    pub segment: u64,
    /// Index of the claim's first uncommitted message.
    pub first: u64,
    /// Claims it covers from `first` on (`None`: not known yet, its live
    /// producer is still recording it).
    pub claims: Option<u64>,
    /// Process id of its producer, when known.
    pub pid: Option<u32>,
    /// Whether that producer is alive (and may still commit). A claim of a
    /// dead producer is abandoned: readers turn it into padding when they
    /// reach it, and [`Queue::repair`] does so at once.
    pub alive: bool,
    /// Whether [`Queue::repair`] turned it into padding.
    pub repaired: bool,
}

impl ClaimInfo {
    /// Index of the last message the claim covers, when known.
    pub fn last(&self) -> Option<u64> {
        // Saturating: a corrupt record's count may run past the index space.
        self.claims.map(|n| self.first.saturating_add(n.saturating_sub(1)))
    }
}

/// Result of [`Queue::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Segments checked.
    pub segments: u64,
    /// Valid messages.
    pub messages: u64,
    /// Claims abandoned by crashed producers and already covered by padding.
    pub abandoned: u64,
    /// Claims of live producers, not committed yet.
    pub pending: u64,
    /// Claims of dead producers not yet covered by padding (recoverable;
    /// after [`Queue::repair`], the ones it repaired).
    pub dead: u64,
    /// Every uncommitted claim found, live or dead, oldest first.
    pub claims: Vec<ClaimInfo>,
    /// Problems found.
    pub corrupt: Vec<CorruptInfo>,
}

impl CheckReport {
    /// Whether the queue is sound as it stands: no corruption, and no
    /// claim of a dead producer left unrepaired. Live producers' pending
    /// claims are normal.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.claims.iter().all(|c| c.alive || c.repaired)
    }

    /// Claims of dead producers that are not repaired.
    pub fn unrepaired(&self) -> impl Iterator<Item = &ClaimInfo> {
        self.claims.iter().filter(|c| !c.alive && !c.repaired)
    }
}

/// How checking one segment went.
enum SegmentCheck {
    Done,
    /// Deleted by retention meanwhile.
    Gone,
    /// A claim was committed while it was being checked: check again.
    Stale,
}

/// Result of [`Queue::apply_retention`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Deleted segment numbers.
    pub deleted: Vec<u64>,
    /// Bytes freed (or turned into spares).
    pub bytes_freed: u64,
    /// How many of the deleted segments were kept as zeroed spares for
    /// future segments (see [`Retention::recycle`]).
    pub recycled: usize,
}

/// How long a group-commit waiter watches the flusher token name the same
/// live process while the durable watermark stands still (beyond the
/// gathering interval) before it flushes by itself rather than wait for
/// that process for ever.
const FLUSHER_STUCK: Duration = Duration::from_secs(2);

impl Queue {
    /// Copies the message at `index` into `buf` (O(1): one index-slot
    /// load). Errors: [`Error::NoSuchIndex`] if it is not (or no longer,
    /// or not yet) there, [`Error::Abandoned`] for a claim a crashed
    /// producer abandoned, [`Error::CorruptRecord`] if it fails its check.
    pub fn read_at(&self, index: u64, buf: &mut Vec<u8>) -> Result<RecordInfo> {
        let (s, c) = (index_segment(index), index_seq(index) as u64);
        if s < self.meta().first_segment()? {
            return Err(Error::NoSuchIndex { index, reason: "deleted by retention" });
        }
        let seg = match self.segment(s) {
            Ok(seg) => seg,
            Err(e) if is_not_found(&e) => {
                return Err(Error::NoSuchIndex { index, reason: "no such segment" });
            }
            Err(e) => return Err(e),
        };
        let (count, _) = split_tail(seg.tail().load(Ordering::Acquire));
        if c >= count.min(seg.final_count().load(Ordering::Acquire)) {
            return Err(Error::NoSuchIndex { index, reason: "not written yet" });
        }
        let raw = seg.index_slot(c).map_or(0, |s| s.load(Ordering::Acquire));
        if raw & SLOT_ABANDONED != 0 {
            return Err(Error::Abandoned { index });
        }
        let Some(offset) = valid_slot(&seg, c) else {
            // Recovery marks only a few slots of a padded run.
            if padded_run(&seg, c).is_some() {
                return Err(Error::Abandoned { index });
            }
            return Err(Error::NoSuchIndex { index, reason: "not committed yet" });
        };
        let bad = |reason: String| Error::CorruptRecord {
            index,
            segment: s,
            offset,
            path: seg.path.clone(),
            reason,
        };
        match seg.load_frame(offset) {
            Some(FrameWord::Message { len, crc, meta }) => {
                if len as usize > self.max_message_size()
                    || check_frame(seg.capacity, offset, frame_size(len as u64), c, 1).is_err()
                {
                    return Err(bad(format!("impossible length {len}")));
                }
                let ptr = seg
                    .bytes_ptr(offset + FRAME_HEADER, len as u64)
                    .ok_or_else(|| bad("record outside the segment".into()))?;
                buf.resize(len as usize, 0);
                // SAFETY: `ptr..ptr+len` is inside `seg`'s live mapping
                // (checked by `bytes_ptr`); `buf` is ours and `len` long.
                unsafe { volatile_copy(ptr, buf.as_mut_ptr(), len as usize) };
                let timestamp = seg.timestamp_word(offset).map_or(0, |t| t.load(Ordering::Relaxed));
                if record_crc(buf, index, timestamp) != crc {
                    return Err(bad("checksum mismatch".into()));
                }
                let Some((m, _)) = split_meta(buf, meta) else {
                    return Err(bad("metadata block longer than the record".into()));
                };
                // The payload only: drop the metadata block in front.
                let skip = if meta { 4 + m.len() } else { 0 };
                buf.drain(..skip);
                Ok(RecordInfo { index, timestamp, len: buf.len() })
            }
            Some(FrameWord::Padding { .. }) => Err(Error::Abandoned { index }),
            Some(FrameWord::Empty) => Err(Error::NoSuchIndex { index, reason: "not committed yet" }),
            _ => Err(bad("not a message frame".into())),
        }
    }

    /// The index of the last committed message still retained, if any: for
    /// a single writer that restarts after a crash and must find where it
    /// stopped (a mirror keeps its source position in each record's
    /// metadata). Create your producer first: that counts a message a killed
    /// single producer committed but had not counted yet.
    pub fn last_index(&self) -> Result<Option<u64>> {
        let first = self.meta().first_segment()?;
        let active = self.meta().active_segment()?;
        for s in self.segments_between(first, active)?.into_iter().rev() {
            let Some((seg, n)) = self.visible_claims(s)? else { continue };
            let mut c = n;
            while c > 0 {
                c -= 1;
                let message = valid_slot(&seg, c)
                    .is_some_and(|o| matches!(seg.load_frame(o), Some(FrameWord::Message { .. })));
                if message {
                    return Ok(Some(make_index(s, c as u32)));
                }
                // A padded run is passed in one step, not claim by claim.
                if let Some((first, _, _)) = padded_run(&seg, c) {
                    c = first;
                }
            }
        }
        Ok(None)
    }

    /// Timestamp of the committed message at sequence `c`, if any.
    fn timestamp_at(seg: &Segment, c: u64) -> Option<u64> {
        let offset = valid_slot(seg, c)?;
        match seg.load_frame(offset)? {
            FrameWord::Message { .. } => Some(seg.timestamp_word(offset)?.load(Ordering::Relaxed)),
            _ => None,
        }
    }

    /// First sequence in `lo..hi` with a readable timestamp. A padded run
    /// is passed in one step, not claim by claim.
    fn first_stamped(seg: &Segment, lo: u64, hi: u64) -> Option<(u64, u64)> {
        let mut c = lo;
        // A binary search step looks this far at most: committed messages
        // are dense in a segment (a dead batch is one padded run), so only
        // garbage in the index slots makes a longer walk, and the search
        // then ends at an approximate match instead of walking it per step.
        let mut budget = 4096;
        while c < hi && budget > 0 {
            budget -= 1;
            if let Some(t) = Self::timestamp_at(seg, c) {
                return Some((c, t));
            }
            c = match padded_run(seg, c) {
                Some((_, _, end)) if end > c => end,
                _ => c + 1,
            };
        }
        None
    }

    /// The index of the first message with a timestamp at or after `ns`
    /// (nanoseconds since the epoch), or the end index if there is none.
    /// Walks back from the newest segment to the first one that begins
    /// before `ns`, then binary-searches its index slots; exact when
    /// timestamps increase with the index (one producer), otherwise the
    /// first match of an almost-sorted sequence.
    pub fn seek_time(&self, ns: u64) -> Result<u64> {
        let first = self.meta().first_segment()?;
        let active = self.meta().active_segment()?;
        let mut found = None;
        for s in self.segments_between(first, active)?.into_iter().rev() {
            let Some((seg, n)) = self.visible_claims(s)? else { continue };
            match Self::first_stamped(&seg, 0, n.min(64)) {
                Some((_, t)) if t < ns => {
                    let (mut lo, mut hi) = (0, n);
                    while lo < hi {
                        let mid = lo + (hi - lo) / 2;
                        match Self::first_stamped(&seg, mid, hi) {
                            Some((c, t)) if t < ns => lo = c + 1,
                            _ => hi = mid,
                        }
                    }
                    if lo < n {
                        found = Some(make_index(s, lo as u32));
                    }
                    break;
                }
                Some(_) => found = Some(make_index(s, 0)),
                None => {}
            }
        }
        match found {
            Some(i) => Ok(i),
            None => self.end_index(),
        }
    }

    /// Claims (messages and abandoned) from `index` to the end, counted in
    /// `segments` (from [`Queue::segment_infos`]: listed and mapped once
    /// for all cursors and groups, not once for each).
    fn lag_in(segments: &[SegmentInfo], index: u64) -> u64 {
        let (s, c) = (index_segment(index), index_seq(index) as u64);
        segments
            .iter()
            .filter(|seg| seg.number >= s)
            .map(|seg| seg.messages.saturating_sub(if seg.number == s { c } else { 0 }))
            .sum()
    }

    /// Segment `s` and the number of claims in it that readers may reach
    /// (the tail's count, capped by the seal); `None` when the segment file
    /// is gone (deleted by retention).
    fn visible_claims(&self, s: u64) -> Result<Option<(std::sync::Arc<Segment>, u64)>> {
        let seg = match self.segment(s) {
            Ok(seg) => seg,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (count, offset) = split_tail(seg.tail().load(Ordering::Acquire));
        // Capped by what can exist, so that a forged count (the tail is
        // shared memory, checked only at open) costs at most a walk of the
        // segment: every claim, failed ones too, moved the offset on by a
        // frame or more, and a claim that fits took a frame and its index
        // slot inside the segment.
        let written = offset.saturating_sub(SEGMENT_HEADER) / FRAME_HEADER;
        let fit = (seg.capacity - SEGMENT_HEADER - EOS_RESERVE) / (FRAME_HEADER + 4);
        let n = count.min(seg.final_count().load(Ordering::Acquire)).min(written).min(fit);
        Ok(Some((seg, n)))
    }

    /// Segment numbers present in the directory, ascending.
    pub(crate) fn segment_numbers(&self) -> Result<Vec<u64>> {
        let dir = self.path();
        let mut out: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("list queue directory", dir, e))?
            .filter_map(|e| e.ok()?.file_name().to_str().and_then(parse_segment_name))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Existing segment numbers in `lo..=hi` (from the directory, so a
    /// corrupt counter cannot make this loop for ever).
    pub(crate) fn segments_between(&self, lo: u64, hi: u64) -> Result<Vec<u64>> {
        Ok(self.segment_numbers()?.into_iter().filter(|&s| s >= lo && s <= hi).collect())
    }

    /// Every segment file with its visible claims, oldest first.
    fn segment_infos(&self) -> Result<Vec<SegmentInfo>> {
        let mut segments = Vec::new();
        for n in self.segment_numbers()? {
            let Some((seg, messages)) = self.visible_claims(n)? else { continue };
            segments.push(SegmentInfo {
                number: n,
                path: seg.path.clone(),
                bytes: seg.capacity,
                messages,
                sealed: seg.final_count().load(Ordering::Acquire) != u64::MAX,
            });
        }
        Ok(segments)
    }

    /// Segments, index range, cursors with their lag, and groups.
    pub fn stat(&self) -> Result<QueueStat> {
        let segments = self.segment_infos()?;
        let cursors = self.cursor_infos(&segments)?;
        let mut groups = Vec::new();
        for (name, position, in_flight) in self.group_positions()? {
            groups.push(GroupInfo { lag: Self::lag_in(&segments, position), name, position, in_flight });
        }
        Ok(QueueStat {
            segments,
            first_index: self.first_index()?,
            end_index: self.end_index()?,
            cursors,
            groups,
            segment_size: self.segment_size(),
            max_message_size: self.max_message_size(),
        })
    }

    /// Named cursors with their positions and lag.
    pub fn cursors(&self) -> Result<Vec<crate::CursorInfo>> {
        // Not through `stat`, which would also walk the groups and work
        // out the index range only to drop them.
        self.cursor_infos(&self.segment_infos()?)
    }

    fn cursor_infos(&self, segments: &[SegmentInfo]) -> Result<Vec<crate::CursorInfo>> {
        let positions = self.cursor_positions()?;
        let info =
            |(name, position)| crate::CursorInfo { lag: Self::lag_in(segments, position), name, position };
        Ok(positions.into_iter().map(info).collect())
    }

    /// Reads every segment file and verifies every record's structure and
    /// checksum. Damage is reported in the result, not as an error.
    ///
    /// Claims that are not committed are told apart by their producer's
    /// liveness: a live producer's claim is pending (it may still commit),
    /// a dead producer's is abandoned and reported in
    /// [`CheckReport::claims`] with its segment, indices and pid; the check
    /// goes on past both, so messages committed after a claim are checked
    /// too. [`CheckReport::is_clean`] is false while a dead producer's claim
    /// is not repaired.
    pub fn check(&self) -> Result<CheckReport> {
        self.check_segments(false)
    }

    /// [`Queue::check`], turning every claim of a dead producer into
    /// padding on the way (as readers would on reaching it). The report
    /// marks those claims `repaired`.
    pub fn repair(&self) -> Result<CheckReport> {
        self.check_segments(true)
    }

    fn check_segments(&self, repair: bool) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let pinned = self.first_is_plausible(&mut report)?;
        for n in self.segment_numbers()? {
            // A claim committed between the snapshot and the liveness check
            // makes the snapshot stale: read it again (a few times at most).
            for attempt in 0..3 {
                match self.check_segment(n, repair, attempt == 2, pinned, &mut report)? {
                    SegmentCheck::Done | SegmentCheck::Gone => break,
                    SegmentCheck::Stale => continue,
                }
            }
        }
        Ok(report)
    }

    /// Whether the meta's first retained segment can be trusted to tell
    /// retired segments from retained ones: retention only raises it to
    /// one past a segment below the active one, so it is never beyond the
    /// active segment. If it is, that is reported, and segments are
    /// checked without pins (which rely on it).
    fn first_is_plausible(&self, report: &mut CheckReport) -> Result<bool> {
        let active = self.meta().active_segment()?;
        let first = self.meta().first_segment()?;
        if first <= active {
            return Ok(true);
        }
        report.corrupt.push(CorruptInfo {
            segment: first,
            index: None,
            offset: 0,
            reason: format!(
                "{}: the first retained segment ({first}) is beyond the active segment ({active})",
                self.meta().path.display()
            ),
        });
        Ok(false)
    }

    /// Checks segment `n` into `report`; on `Stale` nothing was added.
    /// `pinned`: whether to pin it first (see [`Queue::first_is_plausible`]).
    fn check_segment(
        &self,
        n: u64,
        repair: bool,
        last: bool,
        pinned: bool,
        report: &mut CheckReport,
    ) -> Result<SegmentCheck> {
        let path = self.path().join(segment_file_name(n));
        // Mapped (and so pinned) before the file is read: retention does
        // not recycle a pinned segment (it unlinks it, which leaves the
        // contents alone), and one retired already is not opened. Read
        // unpinned, a segment recycled meanwhile (renamed, zeroed, reused
        // as a new segment) looked corrupt in a healthy queue.
        let seg = match self.segment(n) {
            Ok(seg) => Some(seg),
            // Deleted or retired by retention since the listing: not checked.
            Err(e) if pinned && is_not_found(&e) => return Ok(SegmentCheck::Gone),
            // A file that does not open as a segment: claims are not
            // assessed, and the image scan reports what is wrong with it.
            Err(_) => None,
        };
        let image = match read_prefix(&path, self.segment_size()) {
            Ok(image) => image,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SegmentCheck::Gone),
            Err(e) => return Err(Error::io("read segment", &path, e)),
        };
        // Without a mapping nothing pinned the file: if retention retired
        // it meanwhile, what was read may be a recycled file's.
        if pinned && seg.is_none() && self.meta().first_segment()? > n {
            return Ok(SegmentCheck::Gone);
        }
        let mut claims = Vec::new();
        let mut stale = false;
        let mut pending = |seq: u64, offset: u64| {
            let seg = seg.as_ref()?;
            let first = make_index(n, seq as u32);
            let info =
                |claims, pid, alive| ClaimInfo { segment: n, first, claims, pid, alive, repaired: false };
            match assess(self, seg, seq, offset) {
                Ok(Assessment::Dead { next_seq, end, pid, fits }) => {
                    let mut c = info(Some(next_seq - seq), pid, false);
                    c.repaired = repair && recover(self, seg, seq, offset).unwrap_or(false);
                    claims.push(c);
                    fits.then_some((next_seq, end))
                }
                Ok(Assessment::Live { pid, extent }) => {
                    claims.push(info(extent.map(|(next, _)| next - seq), Some(pid), true));
                    extent
                }
                Ok(Assessment::Changed) => {
                    stale = !last;
                    None
                }
                Ok(Assessment::Unclaimed) | Err(_) => None,
            }
        };
        let max = self.max_message_size() as u64;
        let scan = scan_segment_with(&image, &path, n, self.segment_size(), max, &mut pending);
        if stale {
            return Ok(SegmentCheck::Stale);
        }
        report.segments += 1;
        let scan = match scan {
            Ok(scan) => scan,
            Err(e) => {
                report.corrupt.push(CorruptInfo {
                    segment: n,
                    index: None,
                    offset: 0,
                    reason: e.to_string(),
                });
                return Ok(SegmentCheck::Done);
            }
        };
        if !scan.sealed && scan.pending == 0 && scan.corrupt.is_empty() {
            self.check_end(n, seg.as_deref(), repair, report)?;
        }
        report.messages += scan.messages;
        report.abandoned += scan.abandoned;
        for c in &claims {
            let n = c.claims.unwrap_or(0);
            if c.alive {
                report.pending += n;
            } else {
                report.dead += n;
            }
        }
        // Claims past the last one the scan could place (a live producer
        // still recording it) are pending.
        let placed: u64 = claims.iter().filter_map(|c| c.claims).sum();
        report.pending += scan.pending.saturating_sub(placed);
        report.claims.extend(claims);
        for (seq, offset, reason) in scan.corrupt {
            report.corrupt.push(CorruptInfo { segment: n, index: Some(make_index(n, seq)), offset, reason });
        }
        Ok(SegmentCheck::Done)
    }

    /// A segment below the active one is sealed before the active segment
    /// moves past it; one that is not (its header page lost in a machine
    /// crash, or forged) stops readers at its last message with
    /// `CorruptRecord`. Reported; `repair` seals it where its claims end,
    /// as a producer would. Judged on the live segment, after the active
    /// segment was read, so a seal made since the image was read counts.
    fn check_end(&self, n: u64, seg: Option<&Segment>, repair: bool, report: &mut CheckReport) -> Result<()> {
        let Some(seg) = seg else { return Ok(()) };
        if n >= self.meta().active_segment()? {
            return Ok(());
        }
        let (count, _) = split_tail(seg.tail().load(Ordering::Acquire));
        if seg.final_count().load(Ordering::Acquire) <= count {
            return Ok(());
        }
        if repair {
            seg.seal(count);
            return Ok(());
        }
        report.corrupt.push(CorruptInfo {
            segment: n,
            index: None,
            offset: 0,
            reason: format!(
                "segment {n} lies below the active segment but does not end (no end-of-segment frame, \
                 final count unset, {count} claims): readers stop at its end; repair seals it"
            ),
        });
        Ok(())
    }

    /// Blocks until the message at `index` is durable, up to `timeout`;
    /// returns false on timeout. In group-commit mode the first waiter
    /// becomes the flusher for everybody (a dead flusher is replaced, found
    /// by liveness). `OsManaged` returns at once.
    pub fn wait_durable(&self, index: u64, timeout: Option<Duration>) -> Result<bool> {
        match self.durability() {
            Durability::OsManaged => Ok(true),
            Durability::SyncEveryMessage => {
                self.flush_segment(index_segment(index))?;
                Ok(true)
            }
            Durability::GroupCommit { interval_us, max_batch } => {
                self.group_commit_wait(index, interval_us, max_batch, timeout)
            }
        }
    }

    fn group_commit_wait(
        &self,
        index: u64,
        interval_us: u32,
        max_batch: u32,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        // `checked_add`: a huge timeout means no deadline, not a panic.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let watermark = self.meta().durable()?;
        let lock = self.meta().u64_at(META_FLUSH_LOCK)?;
        let me = ProcessToken::current().to_raw();
        // The flusher this waiter is watching and the watermark it saw, and
        // since when neither changed.
        let mut watched: Option<(u64, u64, Instant)> = None;
        let stuck = FLUSHER_STUCK + Duration::from_micros(interval_us as u64);
        loop {
            let durable = watermark.get();
            if durable > index {
                return Ok(true);
            }
            let cur = lock.load(Ordering::Acquire);
            let free = cur == 0 || !ProcessToken::from_raw(cur).is_alive();
            if free && lock.compare_exchange(cur, me, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                let round = self.flush_round(interval_us, max_batch);
                lock.store(0, Ordering::Release);
                watermark.notifier().notify_all();
                round?;
                continue;
            }
            match watched {
                Some((holder, seen, since)) if holder == cur && seen == durable => {
                    if since.elapsed() >= stuck {
                        // A live token that publishes nothing (a stopped
                        // flusher, or a forged or corrupt token naming some
                        // unrelated process): flush without the token. Safe
                        // beside a real flusher: `msync` is idempotent and
                        // the watermark only ever rises (`publish` is a
                        // `fetch_max` of what the publisher itself synced).
                        let round = self.flush_round(interval_us, max_batch);
                        watermark.notifier().notify_all();
                        round?;
                        watched = None;
                        continue;
                    }
                }
                _ => watched = Some((cur, durable, Instant::now())),
            }
            let slice = Duration::from_millis(5);
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(false);
            }
            let _ = watermark.wait_for(
                index.saturating_add(1),
                &WaitPolicy::BALANCED,
                Some(left.map_or(slice, |l| l.min(slice))),
            );
        }
    }

    /// One group-commit round: gather for up to `interval_us` (less once
    /// `max_batch` messages wait), find how far the queue is committed,
    /// `msync` up to there, publish the watermark.
    fn flush_round(&self, interval_us: u32, max_batch: u32) -> Result<()> {
        let until = Instant::now() + Duration::from_micros(interval_us as u64);
        let durable = self.meta().durable()?.get();
        while Instant::now() < until {
            if max_batch > 0 && self.end_index()?.saturating_sub(durable) >= max_batch as u64 {
                break;
            }
            std::thread::sleep(
                until.saturating_duration_since(Instant::now()).min(Duration::from_micros(50)),
            );
        }
        let mut slot = self.inner.flusher.lock().unwrap_or_else(|p| p.into_inner());
        let reader = match slot.as_mut() {
            Some(r) => r,
            None => {
                let start = self.meta().durable()?.get();
                let mut r = self.reader(Start::Index(start))?;
                r.set_verify(false);
                slot.insert(r)
            }
        };
        let from = reader.segment_number();
        reader.skim()?;
        let frontier = reader.position();
        for s in from..=reader.segment_number() {
            self.flush_segment(s)?;
        }
        self.meta().durable()?.publish(frontier);
        Ok(())
    }

    /// `msync`s segment `s`; a segment retention deleted needs nothing.
    pub(crate) fn flush_segment(&self, s: u64) -> Result<()> {
        match self.segment(s) {
            Ok(seg) => seg.mapping().flush().map_err(Error::region("msync segment")),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes old segments as `policy` says: only sealed segments, oldest
    /// first, and (with `respect_cursors`) only those every named cursor and
    /// group has passed. Readers that have a deleted segment mapped keep
    /// reading it: unlinking a file leaves existing mappings intact.
    pub fn apply_retention(&self, policy: &Retention) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        if policy.max_age.is_none() && policy.max_total_bytes.is_none() {
            return Ok(report);
        }
        self.refresh_pin()?;
        let active = self.meta().active_segment()?;
        let numbers = self.segment_numbers()?;
        let mut total = numbers.len() as u64 * self.segment_size();
        let mut floor = u64::MAX;
        if policy.respect_cursors {
            for (_, p) in self.cursor_positions()? {
                floor = floor.min(index_segment(p));
            }
            for (_, p, pending) in self.group_positions()? {
                floor = floor.min(index_segment(p));
                for i in pending {
                    floor = floor.min(index_segment(i));
                }
            }
        }
        for &s in numbers.iter().filter(|&&s| s < active && s < floor) {
            let too_old = policy.max_age.is_some_and(|age| {
                self.sealed_at(s).is_some_and(|t| now_ns().saturating_sub(t) > age.as_nanos() as u64)
            });
            let too_big = policy.max_total_bytes.is_some_and(|max| total > max);
            if !too_old && !too_big {
                break;
            }
            self.meta().first()?.fetch_max(s + 1, Ordering::SeqCst);
            let path = self.path().join(segment_file_name(s));
            match self.retire(&path, s, policy) {
                Ok(recycled) => {
                    report.recycled += usize::from(recycled);
                    report.deleted.push(s);
                    report.bytes_freed += self.segment_size();
                    total = total.saturating_sub(self.segment_size());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete segment", &path, e)),
            }
        }
        Ok(report)
    }

    /// Deletes retired segment `s`, or (when the policy allows and no live
    /// process may still have it mapped) keeps its file as a zeroed spare
    /// for a future segment. Returns whether it was kept.
    fn retire(&self, path: &std::path::Path, s: u64, policy: &Retention) -> std::io::Result<bool> {
        let keep = policy.recycle && !crate::recycle::pinned(self.meta(), s).unwrap_or(true);
        if !keep {
            return std::fs::remove_file(path).map(|()| false);
        }
        crate::recycle::retire(self.path(), path, self.segment_size(), self.idle())
    }

    /// When segment `s` was sealed: the time its sealer recorded (if
    /// plausible, see `recorded_seal`), else the creation time of its
    /// successor. That one can be much earlier:
    /// producers build the next segment once the current one is half full,
    /// which in a slow queue can be days before the seal.
    fn sealed_at(&self, s: u64) -> Option<u64> {
        let path = self.path().join(segment_file_name(s));
        if let Some(t) = crate::segment::recorded_seal(&path, s, self.segment_size()) {
            return Some(t);
        }
        let seg = self.segment(s + 1).ok()?;
        Some(seg.header.created_ns)
    }
}

/// The first `len` bytes of the file at `path` (fewer if it is shorter):
/// a segment file longer than the segment (tolerated, as when mapping it)
/// must not size the buffer.
fn read_prefix(path: &std::path::Path, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut image = Vec::new();
    std::fs::File::open(path)?.take(len).read_to_end(&mut image)?;
    Ok(image)
}
