//! Named cursors: readers whose committed position is stored in the queue.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format::*;
use crate::meta::check_name;
use crate::queue::{Durability, Queue, Start};
use crate::reader::Reader;

/// A named cursor: a [`Reader`] (through `Deref`) whose position survives
/// restarts once [`Cursor::commit`]ted. Delivery is at-least-once: a
/// consumer that crashes re-reads everything after its last commit.
///
/// One consumer should use a name at a time; for several consumers sharing
/// the work, use a consumer group ([`Queue::group`]).
#[derive(Debug)]
pub struct Cursor {
    reader: Reader,
    name: String,
    slot: u64,
    committed: u64,
}

/// A named cursor's stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorInfo {
    /// The cursor's name.
    pub name: String,
    /// Its committed position (index of the next message to read).
    pub position: u64,
    /// Messages (including abandoned claims) between the position and the end.
    pub lag: u64,
}

impl Deref for Cursor {
    type Target = Reader;
    fn deref(&self) -> &Reader {
        &self.reader
    }
}

impl DerefMut for Cursor {
    fn deref_mut(&mut self) -> &mut Reader {
        &mut self.reader
    }
}

/// Offsets of the cursor table's slots.
fn cursor_slots() -> impl Iterator<Item = u64> + Clone {
    (0..CURSOR_SLOTS as u64).map(|i| CURSOR_TABLE + i * CURSOR_SLOT_SIZE)
}

impl Queue {
    /// Opens the named cursor, creating it at the oldest message if absent.
    pub fn cursor(&self, name: &str) -> Result<Cursor> {
        check_name(name)?;
        let meta = self.meta();
        let full = || Error::TableFull { path: meta.path.clone(), table: "cursor", capacity: CURSOR_SLOTS };
        let slot = meta.find_or_fill_named(cursor_slots(), name, || self.first_index(), |_| Ok(()))?;
        let slot = slot.ok_or_else(full)?;
        let committed = meta.u64_at(slot + 8)?.load(Ordering::Acquire);
        let reader = self.reader(Start::Index(committed))?;
        Ok(Cursor { reader, name: name.into(), slot, committed })
    }

    /// Deletes a named cursor; returns whether it existed.
    pub fn delete_cursor(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let _guard = self.meta().admin()?;
        match self.meta().find_named(cursor_slots(), name)? {
            Some(slot) => {
                self.meta().u32_at(slot)?.store(0, Ordering::Release);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Names and committed positions of all cursors.
    pub(crate) fn cursor_positions(&self) -> Result<Vec<(String, u64)>> {
        let meta = self.meta();
        let mut out = Vec::new();
        for slot in cursor_slots() {
            if let Some(name) = meta.slot_name(slot)? {
                out.push((name, meta.u64_at(slot + 8)?.load(Ordering::Acquire)));
            }
        }
        Ok(out)
    }
}

impl Cursor {
    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last committed position.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Stores the current position: after a restart the cursor resumes
    /// here. In durable modes the meta file is flushed first.
    pub fn commit(&mut self) -> Result<()> {
        let pos = self.reader.position();
        let queue = self.reader.queue();
        queue.meta().u64_at(self.slot + 8)?.store(pos, Ordering::Release);
        if queue.durability() != Durability::OsManaged {
            queue.meta().flush()?;
        }
        self.committed = pos;
        Ok(())
    }
}
