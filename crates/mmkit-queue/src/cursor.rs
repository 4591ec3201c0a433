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

fn slot_offset(i: usize) -> u64 {
    CURSOR_TABLE + i as u64 * CURSOR_SLOT_SIZE
}

impl Queue {
    /// Opens the named cursor, creating it at the oldest message if absent.
    pub fn cursor(&self, name: &str) -> Result<Cursor> {
        check_name(name)?;
        let slot = match self.find_cursor(name)? {
            Some(slot) => slot,
            None => self.create_cursor(name)?,
        };
        let committed = self.meta().u64_at(slot + 8)?.load(Ordering::Acquire);
        let reader = self.reader(Start::Index(committed))?;
        Ok(Cursor { reader, name: name.into(), slot, committed })
    }

    fn find_cursor(&self, name: &str) -> Result<Option<u64>> {
        let meta = self.meta();
        for i in 0..CURSOR_SLOTS {
            let slot = slot_offset(i);
            if meta.slot_name(slot)?.as_deref() == Some(name) {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    fn create_cursor(&self, name: &str) -> Result<u64> {
        let meta = self.meta();
        let _guard = meta.admin()?;
        if let Some(slot) = self.find_cursor(name)? {
            return Ok(slot);
        }
        for i in 0..CURSOR_SLOTS {
            let slot = slot_offset(i);
            let state = meta.u32_at(slot)?;
            if state.load(Ordering::Acquire) == 1 {
                continue;
            }
            meta.write_name(slot + 16, name)?;
            meta.u32_at(slot + 4)?.store(name.len() as u32, Ordering::Release);
            meta.u64_at(slot + 8)?.store(self.first_index()?, Ordering::Release);
            state.store(1, Ordering::Release);
            return Ok(slot);
        }
        Err(Error::TableFull { path: meta.path.clone(), table: "cursor", capacity: CURSOR_SLOTS })
    }

    /// Deletes a named cursor; returns whether it existed.
    pub fn delete_cursor(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let _guard = self.meta().admin()?;
        match self.find_cursor(name)? {
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
        for i in 0..CURSOR_SLOTS {
            let slot = slot_offset(i);
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
        let queue = self.reader.queue().clone();
        queue.meta().u64_at(self.slot + 8)?.store(pos, Ordering::Release);
        if queue.durability() != Durability::OsManaged {
            queue.meta().flush()?;
        }
        self.committed = pos;
        Ok(())
    }
}
