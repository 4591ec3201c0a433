//! The registry of named objects: a table of fixed-size entries under one
//! robust lock. `find_or_init` is atomic across processes: the first caller
//! records the entry as initializing (with its token) and runs the
//! initializer outside the lock; the others wait; if the initializer dies,
//! the next caller takes the entry over and initializes again.

use std::time::Duration;

use mmkit_sync::{EventCount, Liveness, ProcessToken, WaitPolicy};

use crate::crash;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::segment::{Heap, Inner, Txn};
use crate::types::TypeDesc;

/// Bytes of a registry entry.
pub const ENTRY_SIZE: u64 = 256;
/// Longest object name, in bytes.
pub const MAX_NAME: usize = 96;
const TYPE_NAME_BYTES: usize = 96;

const E_STATE: u64 = 0;
const E_OWNER: u64 = 8;
const E_KIND: u64 = 16;
const E_FINGERPRINT: u64 = 24;
const E_SIZE: u64 = 32;
const E_ALIGN: u64 = 40;
const E_OBJECT: u64 = 48;
const E_NAME_LEN: u64 = 56;
const E_NAME: u64 = 64;
const E_TYPE_NAME: u64 = 160;

pub(crate) const FREE: u64 = 0;
pub(crate) const INIT: u64 = 1;
pub(crate) const READY: u64 = 2;
/// Removed: the header block stays allocated (magic zeroed) so stale
/// handles in other processes fail cleanly; `check --repair` frees it.
pub(crate) const RETIRED: u64 = 3;

/// Kinds of named objects.
pub(crate) const KIND_BOX: u64 = 1;
pub(crate) const KIND_VEC: u64 = 2;
pub(crate) const KIND_STRING: u64 = 3;
pub(crate) const KIND_MAP: u64 = 4;

/// The name of a kind, for `stat`.
pub fn kind_name(kind: u64) -> &'static str {
    match kind {
        KIND_BOX => "box",
        KIND_VEC => "vec",
        KIND_STRING => "string",
        KIND_MAP => "map",
        _ => "unknown",
    }
}

/// A named object as `Heap::objects` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its name.
    pub name: String,
    /// `box`, `vec`, `string` or `map`.
    pub kind: &'static str,
    /// The stored type name (truncated to 96 bytes).
    pub type_name: String,
    /// Offset of its header block.
    pub offset: u64,
    /// Bytes of its header block.
    pub header_bytes: u64,
    /// True while its initializer runs (or died and nobody took over yet).
    pub initializing: bool,
}

/// A registry entry read from the segment.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub at: u64,
    pub state: u64,
    pub owner: u64,
    pub kind: u64,
    pub fingerprint: u64,
    pub size: u64,
    pub align: u64,
    pub object: u64,
    pub name: Vec<u8>,
    pub type_name: String,
}

/// What a kind of object tells the registry: its description, the size
/// and alignment of its header block, and how to initialize, open and
/// destroy it. Implemented by the containers; not for other types.
pub trait Object: Sized + sealed::Sealed {
    #[doc(hidden)]
    const KIND: u64;
    #[doc(hidden)]
    fn desc() -> TypeDesc;
    #[doc(hidden)]
    fn header_layout() -> (u64, u64);
    #[doc(hidden)]
    fn attach(heap: &Heap, off: u64, name: &str) -> Result<Self>;
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    let bad = |reason| Err(Error::InvalidName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 96 bytes");
    }
    if name.contains('\0') {
        return bad("contains a NUL byte");
    }
    Ok(())
}

impl Inner {
    fn lock_registry(&self) -> Result<mmkit_sync::MutexGuard<'_>> {
        self.lock(REG_LOCK, REG_LOG, REG_LOG_CAP)
    }

    /// The registry's table and capacity, checked.
    pub(crate) fn registry_table(&self) -> Result<(u64, u64)> {
        let (table, cap) = (self.load(REG_TABLE)?, self.load(REG_CAP)?);
        if cap == 0 {
            return Ok((0, 0));
        }
        if table < HEADER_SIZE || cap > (1 << 24) || table % 8 != 0 {
            return Err(self.corrupt(format!("registry table {table} with {cap} entries")));
        }
        self.ptr(table, cap * ENTRY_SIZE)?;
        Ok((table, cap))
    }

    pub(crate) fn read_entry(&self, at: u64) -> Result<Entry> {
        let len = self.load(at + E_NAME_LEN)?.min(MAX_NAME as u64) as usize;
        let mut name = vec![0u8; len];
        self.read_bytes(at + E_NAME, &mut name)?;
        let mut tn = [0u8; TYPE_NAME_BYTES];
        self.read_bytes(at + E_TYPE_NAME, &mut tn)?;
        let tn_len = tn.iter().position(|&b| b == 0).unwrap_or(TYPE_NAME_BYTES);
        let (object, size) = (self.load(at + E_OBJECT)?, self.load(at + E_SIZE)?);
        let state = self.load(at + E_STATE)?;
        // Every user adds field offsets to `object`: one outside the
        // segment (garbage near `u64::MAX` overflowed those additions) is
        // refused here, once. An entry in use always has its object (it is
        // allocated before the entry is filled, and callers read entries
        // in use only); one at 0, or anywhere in the segment header, would
        // have its users write over the header.
        if object < HEADER_SIZE || object >= self.max_size || size > self.max_size {
            return Err(self.corrupt(format!(
                "registry entry {at}: object at {object} of {size} bytes is outside the segment"
            )));
        }
        Ok(Entry {
            at,
            state,
            owner: self.load(at + E_OWNER)?,
            kind: self.load(at + E_KIND)?,
            fingerprint: self.load(at + E_FINGERPRINT)?,
            size,
            align: self.load(at + E_ALIGN)?,
            object,
            name,
            type_name: String::from_utf8_lossy(&tn[..tn_len]).into_owned(),
        })
    }

    /// Every entry in use (initializing or ready).
    pub(crate) fn entries(&self) -> Result<Vec<Entry>> {
        let (table, cap) = self.registry_table()?;
        let mut out = Vec::new();
        for i in 0..cap {
            let at = table + i * ENTRY_SIZE;
            if self.load(at + E_STATE)? != FREE {
                out.push(self.read_entry(at)?);
            }
        }
        Ok(out)
    }

    fn lookup(&self, name: &str) -> Result<Option<Entry>> {
        let (table, cap) = self.registry_table()?;
        for i in 0..cap {
            let at = table + i * ENTRY_SIZE;
            let state = self.load(at + E_STATE)?;
            if !(state == INIT || state == READY) || self.load(at + E_NAME_LEN)? != name.len() as u64 {
                continue;
            }
            let e = self.read_entry(at)?;
            if e.name == name.as_bytes() {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// A free entry, growing the table when it is full. Registry lock held.
    fn free_entry(&self) -> Result<u64> {
        let (table, cap) = self.registry_table()?;
        for i in 0..cap {
            let at = table + i * ENTRY_SIZE;
            if self.load(at + E_STATE)? == FREE {
                return Ok(at);
            }
        }
        let new_cap = (cap * 2).max(16);
        let new = self.alloc(new_cap * ENTRY_SIZE, 64)?;
        self.zero(new, new_cap * ENTRY_SIZE)?;
        if cap > 0 {
            let mut buf = vec![0u8; (cap * ENTRY_SIZE) as usize];
            self.read_bytes(table, &mut buf)?;
            self.write_bytes(new, &buf)?;
        }
        crash::point("registry.grow");
        let mut t = Txn::new(self, REG_LOG, REG_LOG_CAP);
        t.set(REG_TABLE, new)?;
        t.set(REG_CAP, new_cap)?;
        t.commit()?;
        if cap > 0 {
            self.free(table, cap * ENTRY_SIZE, 64)?;
        }
        Ok(new + cap * ENTRY_SIZE)
    }

    fn events(&self) -> Result<&EventCount> {
        EventCount::at(&self.file, REG_EVENTS).map_err(Error::sync("registry events"))
    }
}

fn type_error(name: &str, want: &TypeDesc, kind: u64, e: &Entry) -> Error {
    Error::TypeMismatch {
        name: name.to_string(),
        expected: format!("{} {} (fingerprint {:#x})", kind_name(kind), want.name, want.fingerprint),
        found: format!("{} {} (fingerprint {:#x})", kind_name(e.kind), e.type_name, e.fingerprint),
    }
}

/// An entry this process is initializing; dropped without being
/// forgotten (the initializer returned an error or panicked), it is
/// abandoned for the next caller.
struct Pending<'a> {
    heap: &'a Heap,
    at: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let _ = self.heap.abandon(self.at);
    }
}

/// How `claim` left an entry.
enum Claimed {
    /// Ready: open it.
    Ready(u64),
    /// Ours to initialize (new, or taken over from a dead initializer).
    Init(u64, u64),
    /// Someone alive is initializing it: (entry, the initializer's token).
    Wait(u64, u64),
}

impl Heap {
    /// Finds the object `name`, or creates it with `init` run exactly once
    /// across all processes (again only if an initializer died half-way).
    pub(crate) fn object_or_init<O: Object>(
        &self,
        name: &str,
        init: impl FnOnce(&Heap, u64) -> Result<()>,
    ) -> Result<O> {
        check_name(name)?;
        let mut init = Some(init);
        let started = std::time::Instant::now();
        loop {
            match self.claim::<O>(name)? {
                Claimed::Ready(off) => return O::attach(self, off, name),
                Claimed::Init(at, off) => {
                    let f = init.take().ok_or_else(|| self.inner.corrupt("initializer ran twice"))?;
                    let pending = Pending { heap: self, at };
                    f(self, off)?;
                    crash::point("registry.init");
                    self.publish(at)?;
                    std::mem::forget(pending);
                    return O::attach(self, off, name);
                }
                Claimed::Wait(at, owner) => {
                    // A live initializer that never publishes (stopped, or
                    // a forged entry) is a stuck lock holder: bounded the
                    // same way.
                    if let Some(limit) = self.inner.lock_wait().filter(|&l| started.elapsed() >= l) {
                        return Err(Error::LockHeld {
                            path: self.inner.path.clone(),
                            at,
                            holder: ProcessToken::from_raw(owner).pid(),
                            waited: limit,
                        });
                    }
                    let events = self.inner.events()?;
                    let seen = events.get();
                    let _ = events.wait_for(seen + 1, &WaitPolicy::PARK, Some(Duration::from_millis(2)));
                }
            }
        }
    }

    fn claim<O: Object>(&self, name: &str) -> Result<Claimed> {
        let inner = &*self.inner;
        let desc = O::desc();
        let _g = inner.lock_registry()?;
        let me = ProcessToken::current().to_raw();
        if let Some(e) = inner.lookup(name)? {
            if e.kind != O::KIND || e.fingerprint != desc.fingerprint {
                return Err(type_error(name, &desc, O::KIND, &e));
            }
            return match e.state {
                READY => Ok(Claimed::Ready(e.object)),
                _ if e.owner != me && ProcessToken::from_raw(e.owner).liveness() == Liveness::Alive => {
                    Ok(Claimed::Wait(e.at, e.owner))
                }
                _ => {
                    // The initializer died: take over, run it again, on
                    // a block of this type's header size (the entry was
                    // filled from the same type).
                    if (e.size, e.align) != O::header_layout() {
                        return Err(inner.corrupt(format!(
                            "registry entry {name:?}: an object of {} bytes for a header of {}",
                            e.size,
                            O::header_layout().0
                        )));
                    }
                    let mut t = Txn::new(inner, REG_LOG, REG_LOG_CAP);
                    t.set(e.at + E_OWNER, me)?;
                    t.commit()?;
                    Ok(Claimed::Init(e.at, e.object))
                }
            };
        }
        let (size, align) = O::header_layout();
        let object = inner.alloc(size, align)?;
        crash::point("registry.alloc");
        let at = inner.free_entry()?;
        // The entry is free, so nobody reads these fields until the state
        // changes below.
        let mut tn = [0u8; TYPE_NAME_BYTES];
        let tname = desc.name.as_bytes();
        tn[..tname.len().min(TYPE_NAME_BYTES)].copy_from_slice(&tname[..tname.len().min(TYPE_NAME_BYTES)]);
        for (f, v) in [
            (E_OWNER, me),
            (E_KIND, O::KIND),
            (E_FINGERPRINT, desc.fingerprint),
            (E_SIZE, size),
            (E_ALIGN, align),
            (E_OBJECT, object),
            (E_NAME_LEN, name.len() as u64),
        ] {
            inner.store(at + f, v)?;
        }
        inner.zero(at + E_NAME, MAX_NAME as u64)?;
        inner.write_bytes(at + E_NAME, name.as_bytes())?;
        inner.write_bytes(at + E_TYPE_NAME, &tn)?;
        let mut t = Txn::new(inner, REG_LOG, REG_LOG_CAP);
        t.set(REG_COUNT, inner.load(REG_COUNT)?.wrapping_add(1))?;
        t.set(at + E_STATE, INIT)?;
        t.commit()?;
        Ok(Claimed::Init(at, object))
    }

    /// Gives up the entry at `at` that this process was initializing (its
    /// initializer failed or panicked): the next caller takes it over and
    /// initializes it again, as after an initializer's death, instead of
    /// waiting for this live process forever.
    fn abandon(&self, at: u64) -> Result<()> {
        let inner = &*self.inner;
        {
            let _g = inner.lock_registry()?;
            let mut t = Txn::new(inner, REG_LOG, REG_LOG_CAP);
            t.set(at + E_OWNER, 0)?;
            t.commit()?;
        }
        inner.events()?.advance(1);
        Ok(())
    }

    fn publish(&self, at: u64) -> Result<()> {
        let inner = &*self.inner;
        {
            let _g = inner.lock_registry()?;
            let mut t = Txn::new(inner, REG_LOG, REG_LOG_CAP);
            t.set(at + E_STATE, READY)?;
            t.set(at + E_OWNER, 0)?;
            t.commit()?;
        }
        inner.events()?.advance(1);
        Ok(())
    }

    /// The object `name` if it exists and is ready, checked against `O`.
    pub fn find<T: crate::ShmType>(&self, name: &str) -> Result<Option<crate::ShmBox<T>>> {
        self.find_object(name)
    }

    /// The object `name` as a container `O` (`ShmVec<T>`, `ShmString`,
    /// `ShmHashMap<K, V>`, `ShmBox<T>`), if it exists and is ready.
    pub fn find_object<O: Object>(&self, name: &str) -> Result<Option<O>> {
        check_name(name)?;
        let e = {
            let _g = self.inner.lock_registry()?;
            self.inner.lookup(name)?
        };
        match e {
            Some(e) if e.state == READY => {
                let desc = O::desc();
                if e.kind != O::KIND || e.fingerprint != desc.fingerprint {
                    return Err(type_error(name, &desc, O::KIND, &e));
                }
                O::attach(self, e.object, name).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Removes the object `name` and frees its memory; returns whether it
    /// existed. Handles other processes still hold get
    /// [`Error::Removed`] on their next operation.
    pub fn remove(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let inner = &*self.inner;
        // The registry lock is held to the end: `check` takes it first, so
        // it never sees the object's blocks unnamed but not yet freed.
        let g = inner.lock_registry()?;
        let e = {
            let Some(e) = inner.lookup(name)? else { return Ok(false) };
            if e.state == INIT
                && e.owner != 0
                && ProcessToken::from_raw(e.owner).liveness() == Liveness::Alive
                && e.owner != ProcessToken::current().to_raw()
            {
                return Err(Error::Invalid {
                    op: "remove",
                    reason: format!("{name:?} is being initialized"),
                });
            }
            let mut t = Txn::new(inner, REG_LOG, REG_LOG_CAP);
            t.set(REG_COUNT, inner.load(REG_COUNT)?.wrapping_sub(1))?;
            t.set(e.at + E_STATE, RETIRED)?;
            t.commit()?;
            e
        };
        crash::point("registry.remove");
        // Unreachable by name now: a crash from here on only leaks, and
        // `check --repair` reclaims what it leaked.
        crate::check::destroy(self, e.kind, e.object, e.state == READY)?;
        drop(g);
        inner.events()?.advance(1);
        Ok(true)
    }

    /// Every named object.
    pub fn objects(&self) -> Result<Vec<ObjectInfo>> {
        let entries = {
            let _g = self.inner.lock_registry()?;
            self.inner.entries()?
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.state != RETIRED)
            .map(|e| ObjectInfo {
                name: String::from_utf8_lossy(&e.name).into_owned(),
                kind: kind_name(e.kind),
                type_name: e.type_name,
                offset: e.object,
                header_bytes: e.size,
                initializing: e.state != READY,
            })
            .collect())
    }
}
