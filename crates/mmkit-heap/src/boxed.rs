//! `ShmBox<T>`: one value of plain data in the heap, read without locks.
//!
//! Two slots and a sequence number: a writer (under the box's robust
//! mutex) fills the slot readers are not using, then bumps the sequence
//! with one store. A reader copies the current slot and keeps the copy
//! only if the sequence did not move meanwhile. A writer killed half-way
//! leaves the current slot untouched, so readers never wait for a dead
//! writer and nothing needs repair.

use std::marker::PhantomData;
use std::sync::atomic::{Ordering, fence};

use mmkit_sync::{LockOutcome, RobustMutex};

use crate::crash;
use crate::error::{Error, Result};
use crate::registry::{KIND_BOX, Object, sealed::Sealed};
use crate::segment::Heap;
use crate::types::{ShmType, TypeDesc};

/// Bytes of a box's header, before its two slots.
pub const HEADER_BYTES: u64 = 64;
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MMKBOX01");
const B_MAGIC: u64 = 0;
const B_SEQ: u64 = 8;
const B_SLOT_BYTES: u64 = 16;
const B_LOCK: u64 = 24;

fn slot_bytes<T>() -> u64 {
    (size_of::<T>() as u64).next_multiple_of(64).max(64)
}

/// A named value of plain data in a shared heap: [`Heap::find_or_init`]
/// returns one.
pub struct ShmBox<T: ShmType> {
    heap: Heap,
    off: u64,
    name: String,
    _t: PhantomData<fn() -> T>,
}

impl<T: ShmType> std::fmt::Debug for ShmBox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmBox").field("name", &self.name).field("offset", &self.off).finish()
    }
}

impl<T: ShmType> Sealed for ShmBox<T> {}

impl<T: ShmType> Object for ShmBox<T> {
    const KIND: u64 = KIND_BOX;
    fn desc() -> TypeDesc {
        T::type_desc()
    }
    fn header_layout() -> (u64, u64) {
        (HEADER_BYTES + 2 * slot_bytes::<T>(), 64)
    }
    fn attach(heap: &Heap, off: u64, name: &str) -> Result<Self> {
        let b = ShmBox { heap: heap.clone(), off, name: name.to_string(), _t: PhantomData };
        b.check()?;
        Ok(b)
    }
}

impl Heap {
    /// Finds the value named `name`, or creates it from `init()`; `init`
    /// runs in exactly one process (again only if that process died before
    /// finishing). Fails with [`Error::TypeMismatch`] if `name` holds
    /// another type.
    pub fn find_or_init<T: ShmType>(&self, name: &str, init: impl FnOnce() -> T) -> Result<ShmBox<T>> {
        self.object_or_init::<ShmBox<T>>(name, |heap, off| {
            let value = init();
            let inner = &heap.inner;
            inner.zero(off, HEADER_BYTES)?;
            inner.store(off + B_SLOT_BYTES, slot_bytes::<T>())?;
            inner.write_bytes(off + HEADER_BYTES, bytemuck::bytes_of(&value))?;
            inner.store(off + B_MAGIC, MAGIC)
        })
    }
}

impl<T: ShmType> ShmBox<T> {
    fn check(&self) -> Result<()> {
        let inner = &self.heap.inner;
        if inner.load(self.off + B_MAGIC)? != MAGIC {
            return Err(Error::Removed { name: self.name.clone() });
        }
        if inner.load(self.off + B_SLOT_BYTES)? != slot_bytes::<T>() {
            return Err(inner.corrupt(format!("box {:?}: slot size does not match its type", self.name)));
        }
        Ok(())
    }

    fn slot(&self, seq: u64) -> u64 {
        self.off + HEADER_BYTES + (seq & 1) * slot_bytes::<T>()
    }

    /// The name the box was found under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A copy of the value; never waits for writers.
    pub fn get(&self) -> Result<T> {
        self.check()?;
        let inner = &self.heap.inner;
        let seq = inner.atomic(self.off + B_SEQ)?;
        let mut value = T::zeroed();
        loop {
            let s1 = seq.load(Ordering::Acquire);
            inner.read_bytes(self.slot(s1), bytemuck::bytes_of_mut(&mut value))?;
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == s1 {
                // Removed meanwhile: the copy may be of a dead value.
                self.check()?;
                return Ok(value);
            }
            std::hint::spin_loop();
        }
    }

    /// Replaces the value.
    pub fn set(&self, value: &T) -> Result<()> {
        self.update(|_| *value).map(|_| ())
    }

    /// Replaces the value with `f(current)` atomically with respect to
    /// other writers; returns the new value.
    pub fn update(&self, f: impl FnOnce(T) -> T) -> Result<T> {
        self.check()?;
        let inner = &self.heap.inner;
        let mutex = RobustMutex::at(&inner.file, self.off + B_LOCK).map_err(Error::sync("box lock"))?;
        // A dead writer left at most the spare slot half-written: nothing
        // to repair.
        let guard = match inner.wait_for(mutex, self.off + B_LOCK)? {
            LockOutcome::Acquired(g) => g,
            LockOutcome::OwnerDied(g) => {
                g.make_consistent();
                g
            }
        };
        // Again under the lock: a remove zeroes the magic.
        self.check()?;
        let seq = inner.atomic(self.off + B_SEQ)?;
        let s = seq.load(Ordering::Acquire);
        let mut current = T::zeroed();
        inner.read_bytes(self.slot(s), bytemuck::bytes_of_mut(&mut current))?;
        let new = f(current);
        inner.write_bytes(self.slot(s + 1), bytemuck::bytes_of(&new))?;
        crash::point("box.write");
        seq.store(s.wrapping_add(1), Ordering::Release);
        drop(guard);
        Ok(new)
    }

    /// The offset of the value's header in the segment.
    pub fn offset(&self) -> u64 {
        self.off
    }
}
