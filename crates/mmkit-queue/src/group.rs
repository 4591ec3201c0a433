//! Competing-consumer groups: each message goes to one member.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mmkit_sync::ProcessToken;

use crate::error::{Error, Result};
use crate::format::*;
use crate::meta::check_name;
use crate::queue::{Queue, Start};
use crate::reader::{Reader, Record};

/// How often a member looks for dead members' un-acked messages while busy.
const ORPHAN_CHECK: Duration = Duration::from_millis(50);

/// A member of a consumer group.
///
/// Members share the group's position: [`GroupMember::next_timeout`] takes
/// the next message by a compare-and-swap on it, so each message goes to
/// one member. A member has one message in flight: it records the index in
/// its slot before taking it and clears it on [`GroupMember::ack`] (or the
/// next `next_timeout`, which acks the previous message). When a member
/// dies, another member finds the un-acked index in the dead member's slot
/// (by the dead process's liveness, pid plus start time) and delivers it
/// again. Delivery is exactly-once while nobody crashes and at-least-once
/// across crashes.
#[derive(Debug)]
pub struct GroupMember {
    reader: Reader,
    group: u64,
    member: u64,
    name: String,
    last_check: Instant,
}

/// A `last_check` time that makes the next read look for orphans at once
/// (`checked_sub`: `Instant` cannot go below the clock's origin).
fn overdue() -> Instant {
    let now = Instant::now();
    now.checked_sub(ORPHAN_CHECK).unwrap_or(now)
}

/// Offsets of the group table's slots.
fn group_slots() -> impl Iterator<Item = u64> + Clone {
    (0..GROUP_SLOTS as u64).map(|i| GROUP_TABLE + i * GROUP_SLOT_SIZE)
}

fn member_offset(group: u64, i: usize) -> u64 {
    group + 64 + i as u64 * MEMBER_SLOT_SIZE
}

impl Queue {
    /// Joins (creating if needed) the consumer group `name`. A new group
    /// starts at the oldest message.
    pub fn group(&self, name: &str) -> Result<GroupMember> {
        check_name(name)?;
        let group = self.find_or_create_group(name)?;
        let token = ProcessToken::current_process().to_raw();
        let meta = self.meta();
        for i in 0..MEMBERS_PER_GROUP {
            let member = member_offset(group, i);
            let word = meta.u64_at(member)?;
            let cur = word.load(Ordering::Acquire);
            // A dead member's slot is only taken once its message is
            // redelivered (pending == 0), so nothing it held is lost.
            let pending = meta.u64_at(member + 8)?.load(Ordering::Acquire);
            let free = cur == 0 || (pending == 0 && !ProcessToken::from_raw(cur).is_alive());
            if free && word.compare_exchange(cur, token, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                meta.u64_at(member + 8)?.store(0, Ordering::Release);
                let next = meta.u64_at(group + 8)?.load(Ordering::Acquire);
                let reader = self.reader(Start::Index(next))?;
                let mut m = GroupMember { reader, group, member, name: name.into(), last_check: overdue() };
                m.reader.set_skip_corrupt(true);
                return Ok(m);
            }
        }
        Err(Error::TableFull { path: meta.path.clone(), table: "group member", capacity: MEMBERS_PER_GROUP })
    }

    /// The group's slot, creating the group (all member slots empty) if
    /// it does not exist.
    fn find_or_create_group(&self, name: &str) -> Result<u64> {
        let meta = self.meta();
        let clear_members = |g: u64| {
            for m in 0..MEMBERS_PER_GROUP {
                meta.u64_at(member_offset(g, m))?.store(0, Ordering::Release);
                meta.u64_at(member_offset(g, m) + 8)?.store(0, Ordering::Release);
            }
            Ok(())
        };
        let full = || Error::TableFull { path: meta.path.clone(), table: "group", capacity: GROUP_SLOTS };
        meta.find_or_fill_named(group_slots(), name, || self.first_index(), clear_members)?.ok_or_else(full)
    }

    /// Names and positions of all groups.
    pub(crate) fn group_positions(&self) -> Result<Vec<(String, u64, Vec<u64>)>> {
        let meta = self.meta();
        let mut out = Vec::new();
        for g in group_slots() {
            let Some(name) = meta.slot_name(g)? else { continue };
            let mut pending = Vec::new();
            for m in 0..MEMBERS_PER_GROUP {
                let p = meta.u64_at(member_offset(g, m) + 8)?.load(Ordering::Acquire);
                if p != 0 {
                    pending.push(p - 1);
                }
            }
            out.push((name, meta.u64_at(g + 8)?.load(Ordering::Acquire), pending));
        }
        Ok(out)
    }
}

impl GroupMember {
    /// The group's name.
    pub fn group_name(&self) -> &str {
        &self.name
    }

    fn word(&self, offset: u64) -> Result<&AtomicU64> {
        self.reader.queue().meta().u64_at(offset)
    }

    /// Acknowledges the message in flight: it will not be redelivered.
    pub fn ack(&mut self) -> Result<()> {
        self.word(self.member + 8)?.store(0, Ordering::Release);
        Ok(())
    }

    /// The index of the un-acked message this member holds, if any.
    pub fn in_flight(&self) -> Result<Option<u64>> {
        let p = self.word(self.member + 8)?.load(Ordering::Acquire);
        Ok(p.checked_sub(1))
    }

    /// Acks the previous message and takes the next one for this member,
    /// waiting up to `timeout`. Un-acked messages of dead members come
    /// first.
    pub fn next_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<Record<'_>>> {
        self.ack()?;
        // `checked_add`: a huge timeout means no deadline, not a panic.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if self.last_check.elapsed() >= ORPHAN_CHECK {
                self.last_check = Instant::now();
                if let Some(index) = self.adopt_orphan()? {
                    self.reader.seek(index)?;
                    let found = self.reader.next()?.filter(|r| r.index() == index).map(|r| r.timestamp());
                    if let Some(timestamp) = found {
                        return Ok(Some(self.reader.last_copy(index, timestamp)));
                    }
                    self.ack()?;
                    continue;
                }
            }
            let queue = self.reader.queue().clone();
            let next = queue.meta().u64_at(self.group + 8)?;
            let p = next.load(Ordering::Acquire);
            if self.reader.position() != p {
                self.reader.seek(p)?;
            }
            let left = match deadline {
                Some(d) => d.checked_duration_since(Instant::now()).unwrap_or_default(),
                None => ORPHAN_CHECK,
            };
            let got = self.reader.next_timeout(Some(left.min(ORPHAN_CHECK)))?;
            let Some((index, timestamp)) = got.map(|r| (r.index(), r.timestamp())) else {
                self.last_check = overdue();
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
                continue;
            };
            let after = self.reader.position();
            // Release, not SeqCst (a locked `xchg` on x86): the
            // compare-and-swap right after is a full barrier, so the record
            // is visible before the message is taken.
            self.word(self.member + 8)?.store(index + 1, Ordering::Release);
            if next.compare_exchange(p, after, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                // The reader already copied and checked it: hand out that
                // copy rather than seek back and read it a second time.
                return Ok(Some(self.reader.last_copy(index, timestamp)));
            }
            self.word(self.member + 8)?.store(0, Ordering::Release);
        }
    }

    /// Takes over the un-acked message of a dead member, if there is one.
    fn adopt_orphan(&mut self) -> Result<Option<u64>> {
        let meta = self.reader.queue().meta();
        for i in 0..MEMBERS_PER_GROUP {
            let m = member_offset(self.group, i);
            if m == self.member {
                continue;
            }
            let token = meta.u64_at(m)?.load(Ordering::Acquire);
            let pending = meta.u64_at(m + 8)?;
            let p = pending.load(Ordering::Acquire);
            if token == 0 || p == 0 || ProcessToken::from_raw(token).is_alive() {
                continue;
            }
            // Record it as ours first, so a crash right now loses nothing.
            self.word(self.member + 8)?.store(p, Ordering::SeqCst);
            if pending.compare_exchange(p, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                let _ = meta.u64_at(m)?.compare_exchange(token, 0, Ordering::AcqRel, Ordering::Relaxed);
                return Ok(Some(p - 1));
            }
            self.word(self.member + 8)?.store(0, Ordering::Release);
        }
        Ok(None)
    }
}

/// Dropping a member with a message in flight keeps the slot (and the
/// message) until this process exits; then another member redelivers it.
impl Drop for GroupMember {
    fn drop(&mut self) {
        let pending = self.in_flight().ok().flatten();
        if let (Ok(w), None) = (self.word(self.member), pending) {
            let token = ProcessToken::current_process().to_raw();
            let _ = w.compare_exchange(token, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}
