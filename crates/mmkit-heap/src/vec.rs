//! `ShmVec<T>` and `ShmString`: growable arrays in the heap, under one
//! robust mutex each.
//!
//! Length, capacity and buffer change in transactions on the vector's
//! undo log (rolled back when a holder dies). Overwriting an element in
//! place goes through a staging copy in the header and a redo intent, so a
//! writer killed half-way is rolled forward: nobody ever sees a torn
//! element. A growing push allocates the new buffer, switches to it in one
//! transaction, then frees the old one; a crash in between leaks one
//! buffer, which `check --repair` reclaims. When the pages after the
//! buffer are free (or not carved yet), it grows where it lies instead,
//! without a copy, and the capacity follows (rolled forward by the next
//! locker if the grower died in between).

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use mmkit_sync::MutexGuard;

use crate::crash;
use crate::error::{Error, Result};
use crate::layout::{HEADER_SIZE, RUN_HEADER};
use crate::registry::{KIND_STRING, KIND_VEC, Object, sealed::Sealed};
use crate::segment::{Block, Heap, Inner, Txn};
use crate::types::{ShmType, TypeDesc};

/// Bytes of a vector's header, before its staging area.
pub const HEADER_BYTES: u64 = 256;
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MMKVEC01");
const V_MAGIC: u64 = 0;
const V_ELEM_SIZE: u64 = 8;
const V_ELEM_ALIGN: u64 = 16;
const V_LEN: u64 = 24;
const V_CAP: u64 = 32;
const V_BUF: u64 = 40;
const V_PENDING: u64 = 48;
const V_LOCK: u64 = 64;
const V_LOG: u64 = 96;
const V_LOG_CAP: u64 = 6;
const _: () = assert!(V_LOG + crate::layout::log_bytes(V_LOG_CAP) <= HEADER_BYTES);

/// Largest element, in bytes.
pub const MAX_ELEM: u64 = 1 << 20;

/// An untyped vector: the machinery under `ShmVec` and `ShmString`.
#[derive(Clone)]
pub(crate) struct RawVec {
    pub heap: Heap,
    pub off: u64,
    pub es: u64,
    pub ea: u64,
    pub name: String,
}

/// The vector's buffer fields, checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VecState {
    pub len: u64,
    pub cap: u64,
    pub buf: u64,
}

pub(crate) fn init_header(inner: &Inner, off: u64, es: u64, ea: u64) -> Result<()> {
    inner.zero(off, HEADER_BYTES + es.next_multiple_of(8))?;
    inner.store(off + V_ELEM_SIZE, es)?;
    inner.store(off + V_ELEM_ALIGN, ea)?;
    inner.store(off + V_MAGIC, MAGIC)
}

/// The buffer's alignment: at least 8 so copies run in words.
fn buf_align(ea: u64) -> u64 {
    ea.max(8)
}

/// Reads and checks a vector header at `off`: magic, element layout,
/// `len <= cap`, and a buffer inside the segment.
pub(crate) fn read_state(inner: &Inner, off: u64) -> Result<(u64, u64, VecState)> {
    state_of(inner, off, &inner.block(off, HEADER_BYTES)?)
}

/// `read_state` over the header block `h` of the vector at `off`.
#[inline(always)]
fn state_of(inner: &Inner, off: u64, h: &Block<'_>) -> Result<(u64, u64, VecState)> {
    let load = |at: u64| h.word(at).load(Ordering::Acquire);
    let (es, ea) = (load(V_ELEM_SIZE), load(V_ELEM_ALIGN));
    let s = VecState { len: load(V_LEN), cap: load(V_CAP), buf: load(V_BUF) };
    let bad = !ea.is_power_of_two()
        || ea > crate::layout::MAX_ALIGN
        || es > MAX_ELEM
        || s.len > s.cap
        || (s.cap > 0 && s.buf < crate::layout::HEADER_SIZE)
        || s.cap.checked_mul(es.max(1)).is_none_or(|b| b > inner.max_size);
    if bad {
        return Err(inner.corrupt(format!("vector at {off}: impossible header {s:?} (element {es} bytes)")));
    }
    if s.cap > 0 {
        inner.ptr(s.buf, s.cap * es)?;
    }
    Ok((es, ea, s))
}

/// Takes a vector's lock, rolling back a dead holder and settling a
/// buffer it grew in place (see [`settle_grown`]).
pub(crate) fn lock_raw(inner: &Inner, off: u64) -> Result<MutexGuard<'_>> {
    inner.lock_settling(off + V_LOCK, off + V_LOG, V_LOG_CAP, || settle_grown(inner, off))
}

/// A holder killed after growing its buffer in place (the allocator's
/// transaction committed) but before storing the new capacity left a
/// buffer block longer than `cap` elements: the capacity is rolled
/// forward to the block's size, so that the two agree again (`check`
/// compares them). The run lock is taken first: a holder killed inside
/// the allocator's transaction left the block's new size there
/// uncommitted, which that lock's rollback undoes. A vector that fails
/// its checks is left alone: the operation that follows reports it.
fn settle_grown(inner: &Inner, off: u64) -> Result<()> {
    let _runs = inner.lock_page_heap()?;
    let Ok((es, ea, s)) = read_state(inner, off) else { return Ok(()) };
    let bytes = s.cap * es;
    if s.cap == 0 || es == 0 || crate::alloc::class_for(bytes, buf_align(ea)).is_some() {
        return Ok(());
    }
    let Ok(run) = inner.read_run(s.buf.wrapping_sub(RUN_HEADER)) else { return Ok(()) };
    if crate::alloc::is_large_block(s.buf, &run) && run.info > bytes && run.info % es == 0 {
        inner.store(off + V_CAP, run.info / es)?;
    }
    Ok(())
}

/// `len + n`, or an error naming `op` when it overflows.
fn grown_len(len: u64, n: u64, op: &'static str) -> Result<u64> {
    len.checked_add(n).ok_or_else(|| Error::Invalid { op, reason: "length overflows".into() })
}

/// The block holding a vector's elements: (offset, bytes, alignment).
pub(crate) fn buffer_block(inner: &Inner, off: u64) -> Result<Option<(u64, u64, u64)>> {
    let (es, ea, s) = read_state(inner, off)?;
    Ok((s.cap > 0).then_some((s.buf, s.cap * es, buf_align(ea))))
}

impl RawVec {
    fn inner(&self) -> &Inner {
        &self.heap.inner
    }

    pub(crate) fn attach(heap: &Heap, off: u64, name: &str, es: u64, ea: u64) -> Result<RawVec> {
        let v = RawVec { heap: heap.clone(), off, es, ea, name: name.to_string() };
        v.check_magic()?;
        // Only the element layout, which never changes: length, capacity
        // and buffer may be half-way through a change by a lock holder
        // (a `set` switching buffers), and are read under the lock.
        let h = heap.inner.block(off, HEADER_BYTES)?;
        let (fes, fea) =
            (h.word(V_ELEM_SIZE).load(Ordering::Acquire), h.word(V_ELEM_ALIGN).load(Ordering::Acquire));
        if fes != es || fea != ea {
            return Err(heap
                .inner
                .corrupt(format!("vector {name:?}: element layout does not match its type")));
        }
        Ok(v)
    }

    #[inline]
    fn check_magic(&self) -> Result<()> {
        if self.inner().block(self.off, 8)?.word(V_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(self.removed());
        }
        Ok(())
    }

    #[cold]
    fn removed(&self) -> Error {
        Error::Removed { name: self.name.clone() }
    }

    /// Locks the vector; a dead holder's transaction is rolled back and its
    /// pending overwrite rolled forward.
    pub(crate) fn lock(&self) -> Result<(MutexGuard<'_>, VecState)> {
        let inner = self.inner();
        let h = inner.block(self.off, HEADER_BYTES)?;
        let magic = || h.word(V_MAGIC).load(Ordering::Acquire) == MAGIC;
        if !magic() {
            return Err(self.removed());
        }
        let g = lock_raw(inner, self.off)?;
        // Again under the lock: a remove takes the lock to zero it.
        if !magic() {
            return Err(self.removed());
        }
        let s = self.checked_state(&h)?;
        let pending = h.word(V_PENDING).load(Ordering::Acquire);
        if pending != 0 {
            if pending <= s.len {
                self.copy_staged(&s, pending - 1)?;
            }
            h.word(V_PENDING).store(0, Ordering::Release);
        }
        Ok((g, s))
    }

    /// The header's buffer fields, checked as `state_of` does, and with
    /// this handle's element layout: checked at attach, but the header is
    /// shared memory, and every size is computed with the handle's.
    fn checked_state(&self, h: &Block<'_>) -> Result<VecState> {
        let (es, ea, s) = state_of(self.inner(), self.off, h)?;
        if (es, ea) != (self.es, self.ea) {
            let what = format!("vector {:?}: element layout changed to {es} bytes", self.name);
            return Err(self.inner().corrupt(what));
        }
        Ok(s)
    }

    fn copy_staged(&self, s: &VecState, i: u64) -> Result<()> {
        let mut buf = vec![0u8; self.es as usize];
        self.inner().read_bytes(self.off + HEADER_BYTES, &mut buf)?;
        self.inner().write_bytes(s.buf + i * self.es, &buf)
    }

    pub(crate) fn len(&self) -> Result<u64> {
        Ok(self.lock()?.1.len)
    }

    pub(crate) fn get(&self, i: u64, out: &mut [u8]) -> Result<bool> {
        let (_g, s) = self.lock()?;
        if i >= s.len {
            return Ok(false);
        }
        self.inner().read_bytes(s.buf + i * self.es, out)?;
        Ok(true)
    }

    pub(crate) fn set(&self, i: u64, data: &[u8]) -> Result<bool> {
        let (_g, s) = self.lock()?;
        if i >= s.len {
            return Ok(false);
        }
        let inner = self.inner();
        inner.write_bytes(self.off + HEADER_BYTES, data)?;
        inner.store(self.off + V_PENDING, i + 1)?;
        crash::point("vec.set");
        inner.write_bytes(s.buf + i * self.es, data)?;
        inner.store(self.off + V_PENDING, 0)?;
        Ok(true)
    }

    /// Appends `n` elements from `data` (`n * es` bytes). The elements are
    /// written past `len`, then one release store of the new length
    /// publishes them: a holder killed before that store leaves bytes past
    /// `len` that nobody reads, so an append needs no undo entry (growing
    /// the buffer does, in `regrow`).
    pub(crate) fn extend(&self, data: &[u8], n: u64) -> Result<()> {
        let (_g, mut s) = self.lock()?;
        let need = grown_len(s.len, n, "push")?;
        let old = if need > s.cap {
            let old = self.regrow(&s, need)?;
            s = self.checked_state(&self.inner().block(self.off, HEADER_BYTES)?)?;
            old
        } else {
            None
        };
        self.inner().write_bytes(s.buf + s.len * self.es, data)?;
        crash::point("vec.push");
        self.inner().store(self.off + V_LEN, need)?;
        if let Some((buf, bytes)) = old {
            self.inner().free(buf, bytes, buf_align(self.ea))?;
        }
        Ok(())
    }

    /// Appends one element (`es` bytes) that fits in the buffer: `extend`'s
    /// common case, with the header read once and only the element and the
    /// length written. Anything else (a full buffer, a pending overwrite to
    /// finish, a header that fails a check) goes through `extend`.
    #[inline]
    pub(crate) fn push(&self, data: &[u8]) -> Result<()> {
        let inner = self.inner();
        let h = inner.block(self.off, HEADER_BYTES)?;
        if h.word(V_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(self.removed());
        }
        let g = lock_raw(inner, self.off)?;
        let load = |at: u64| h.word(at).load(Ordering::Acquire);
        let (len, cap, buf) = (load(V_LEN), load(V_CAP), load(V_BUF));
        let at = len.checked_mul(self.es).and_then(|b| b.checked_add(buf));
        let plain = load(V_MAGIC) == MAGIC && load(V_PENDING) == 0 && len < cap && buf >= HEADER_SIZE;
        let (Some(at), true) = (at, plain && data.len() as u64 == self.es) else {
            drop(g);
            return self.extend(data, 1);
        };
        inner.write_bytes(at, data)?;
        crash::point("vec.push");
        h.word(V_LEN).store(len + 1, Ordering::Release);
        Ok(())
    }

    /// Makes room for `need` elements: grows the buffer where it lies when
    /// the pages after it are free (no copy), else moves the elements to a
    /// new buffer and returns the old one, to free once the caller's
    /// transaction is done.
    fn regrow(&self, s: &VecState, need: u64) -> Result<Option<(u64, u64)>> {
        let inner = self.inner();
        let cap = need.max(s.cap.saturating_mul(2)).max(4);
        let bytes =
            cap.checked_mul(self.es).filter(|&b| b <= inner.max_size).ok_or_else(|| Error::OutOfMemory {
                path: inner.path.clone(),
                requested: cap.saturating_mul(self.es),
                size: self.heap.size(),
                max_size: inner.max_size,
            })?;
        if s.cap > 0 && inner.grow_in_place(s.buf, s.cap * self.es, bytes, buf_align(self.ea))? {
            // The block is longer now; a holder killed here leaves `cap`
            // behind it, which `settle_grown` rolls forward.
            crash::point("vec.grown");
            inner.store(self.off + V_CAP, cap)?;
            return Ok(None);
        }
        let buf = inner.alloc(bytes, buf_align(self.ea))?;
        crash::point("vec.grow");
        let used = s.len * self.es;
        let mut chunk = vec![0u8; (1 << 16).min(used) as usize];
        let mut done = 0;
        while done < used {
            let n = (chunk.len() as u64).min(used - done);
            inner.read_bytes(s.buf + done, &mut chunk[..n as usize])?;
            inner.write_bytes(buf + done, &chunk[..n as usize])?;
            done += n;
        }
        let mut t = Txn::new(inner, self.off + V_LOG, V_LOG_CAP);
        t.set(self.off + V_BUF, buf)?;
        t.set(self.off + V_CAP, cap)?;
        t.commit()?;
        crash::point("vec.switched");
        Ok((s.cap > 0).then_some((s.buf, s.cap * self.es)))
    }

    /// Makes room for `additional` more elements than the length.
    pub(crate) fn reserve(&self, additional: u64) -> Result<()> {
        let (_g, s) = self.lock()?;
        let need = grown_len(s.len, additional, "reserve")?;
        if need > s.cap {
            if let Some((buf, bytes)) = self.regrow(&s, need)? {
                self.inner().free(buf, bytes, buf_align(self.ea))?;
            }
        }
        Ok(())
    }

    pub(crate) fn capacity(&self) -> Result<u64> {
        Ok(self.lock()?.1.cap)
    }

    pub(crate) fn pop(&self, out: &mut [u8]) -> Result<bool> {
        let (_g, s) = self.lock()?;
        if s.len == 0 {
            return Ok(false);
        }
        self.inner().read_bytes(s.buf + (s.len - 1) * self.es, out)?;
        let mut t = Txn::new(self.inner(), self.off + V_LOG, V_LOG_CAP);
        t.set(self.off + V_LEN, s.len - 1)?;
        t.commit()?;
        Ok(true)
    }

    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        let (_g, s) = self.lock()?;
        if len < s.len {
            let mut t = Txn::new(self.inner(), self.off + V_LOG, V_LOG_CAP);
            t.set(self.off + V_LEN, len)?;
            t.commit()?;
        }
        Ok(())
    }

    /// Replaces the whole content with `data` (`n` elements): a fresh
    /// buffer, switched to in one transaction.
    pub(crate) fn assign(&self, data: &[u8], n: u64) -> Result<()> {
        let (_g, s) = self.lock()?;
        let inner = self.inner();
        let buf = if n == 0 {
            0
        } else {
            let b = inner.alloc(n * self.es, buf_align(self.ea))?;
            inner.write_bytes(b, data)?;
            b
        };
        crash::point("vec.assign");
        let mut t = Txn::new(inner, self.off + V_LOG, V_LOG_CAP);
        t.set(self.off + V_BUF, buf)?;
        t.set(self.off + V_CAP, n)?;
        t.set(self.off + V_LEN, n)?;
        t.commit()?;
        if s.cap > 0 {
            inner.free(s.buf, s.cap * self.es, buf_align(self.ea))?;
        }
        Ok(())
    }

    pub(crate) fn read_all(&self) -> Result<Vec<u8>> {
        let (_g, s) = self.lock()?;
        let mut out = vec![0u8; (s.len * self.es) as usize];
        self.inner().read_bytes(s.buf, &mut out)?;
        Ok(out)
    }
}

/// A growable array of plain data shared between processes.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let heap = mmkit_heap::Heap::create(dir.path().join("h"), 1 << 20)?;
/// let v = heap.vec::<u64>("readings")?;
/// v.push(&7)?;
/// v.extend_from_slice(&[8, 9])?;
/// assert_eq!(v.to_vec()?, [7, 8, 9]);
/// assert_eq!(v.pop()?, Some(9));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ShmVec<T: ShmType> {
    raw: RawVec,
    _t: PhantomData<fn() -> T>,
}

impl<T: ShmType> std::fmt::Debug for ShmVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmVec").field("name", &self.raw.name).field("offset", &self.raw.off).finish()
    }
}

impl<T: ShmType> Sealed for ShmVec<T> {}

impl<T: ShmType> Object for ShmVec<T> {
    const KIND: u64 = KIND_VEC;
    fn desc() -> TypeDesc {
        T::type_desc()
    }
    fn header_layout() -> (u64, u64) {
        (HEADER_BYTES + (size_of::<T>() as u64).next_multiple_of(8), 64)
    }
    fn attach(heap: &Heap, off: u64, name: &str) -> Result<Self> {
        let raw = RawVec::attach(heap, off, name, size_of::<T>() as u64, align_of::<T>() as u64)?;
        Ok(ShmVec { raw, _t: PhantomData })
    }
}

impl Heap {
    /// The vector named `name`, created empty if it does not exist.
    pub fn vec<T: ShmType>(&self, name: &str) -> Result<ShmVec<T>> {
        if size_of::<T>() as u64 > MAX_ELEM || size_of::<T>() == 0 {
            return Err(Error::Invalid { op: "vec", reason: "elements must be 1 byte to 1 MiB".into() });
        }
        self.object_or_init::<ShmVec<T>>(name, |heap, off| {
            init_header(&heap.inner, off, size_of::<T>() as u64, align_of::<T>() as u64)
        })
    }

    /// The string named `name`, created empty if it does not exist.
    pub fn string(&self, name: &str) -> Result<ShmString> {
        self.object_or_init::<ShmString>(name, |heap, off| init_header(&heap.inner, off, 1, 1))
    }
}

impl<T: ShmType> ShmVec<T> {
    /// The number of elements.
    pub fn len(&self) -> Result<usize> {
        Ok(self.raw.len()? as usize)
    }

    /// True when empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Appends one element.
    pub fn push(&self, value: &T) -> Result<()> {
        self.raw.push(bytemuck::bytes_of(value))
    }

    /// Appends all of `values` at once (one lock, one transaction).
    pub fn extend_from_slice(&self, values: &[T]) -> Result<()> {
        self.raw.extend(bytemuck::cast_slice(values), values.len() as u64)
    }

    /// Makes room for at least `additional` more elements, so that pushing
    /// them does not grow the buffer. As pushes do, it grows the buffer
    /// where it lies when the space after it is free, else moves it.
    pub fn reserve(&self, additional: usize) -> Result<()> {
        self.raw.reserve(additional as u64)
    }

    /// Elements the buffer holds before it must grow.
    pub fn capacity(&self) -> Result<usize> {
        Ok(self.raw.capacity()? as usize)
    }

    /// Removes and returns the last element.
    pub fn pop(&self) -> Result<Option<T>> {
        let mut v = T::zeroed();
        Ok(self.raw.pop(bytemuck::bytes_of_mut(&mut v))?.then_some(v))
    }

    /// A copy of element `i`.
    pub fn get(&self, i: usize) -> Result<Option<T>> {
        let mut v = T::zeroed();
        Ok(self.raw.get(i as u64, bytemuck::bytes_of_mut(&mut v))?.then_some(v))
    }

    /// Overwrites element `i`; returns false if `i` is out of range.
    pub fn set(&self, i: usize, value: &T) -> Result<bool> {
        self.raw.set(i as u64, bytemuck::bytes_of(value))
    }

    /// Shortens to `len` elements (no-op if already shorter).
    pub fn truncate(&self, len: usize) -> Result<()> {
        self.raw.truncate(len as u64)
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        self.truncate(0)
    }

    /// A copy of all elements, taken under the lock.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let bytes = self.raw.read_all()?;
        Ok(bytes.chunks_exact(size_of::<T>()).map(bytemuck::pod_read_unaligned).collect())
    }

    /// The name the vector was found under.
    pub fn name(&self) -> &str {
        &self.raw.name
    }
}

/// A growable UTF-8 string shared between processes.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let heap = mmkit_heap::Heap::create(dir.path().join("h"), 1 << 20)?;
/// let s = heap.string("greeting")?;
/// s.set("hello")?;
/// s.push_str(", world")?;
/// assert_eq!(s.get()?, "hello, world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ShmString {
    raw: RawVec,
}

impl std::fmt::Debug for ShmString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmString").field("name", &self.raw.name).field("offset", &self.raw.off).finish()
    }
}

impl Sealed for ShmString {}

impl Object for ShmString {
    const KIND: u64 = KIND_STRING;
    fn desc() -> TypeDesc {
        TypeDesc::of::<u8>("String")
    }
    fn header_layout() -> (u64, u64) {
        (HEADER_BYTES + 8, 64)
    }
    fn attach(heap: &Heap, off: u64, name: &str) -> Result<Self> {
        Ok(ShmString { raw: RawVec::attach(heap, off, name, 1, 1)? })
    }
}

impl ShmString {
    /// A copy of the text. Invalid UTF-8 (written by a buggy or hostile
    /// process) is a corruption error.
    pub fn get(&self) -> Result<String> {
        String::from_utf8(self.raw.read_all()?)
            .map_err(|_| self.raw.heap.inner.corrupt(format!("string {:?} is not UTF-8", self.raw.name)))
    }

    /// Replaces the text, atomically.
    pub fn set(&self, text: &str) -> Result<()> {
        self.raw.assign(text.as_bytes(), text.len() as u64)
    }

    /// Appends `text`, atomically.
    pub fn push_str(&self, text: &str) -> Result<()> {
        self.raw.extend(text.as_bytes(), text.len() as u64)
    }

    /// Length in bytes.
    pub fn len(&self) -> Result<usize> {
        Ok(self.raw.len()? as usize)
    }

    /// True when empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Empties the string.
    pub fn clear(&self) -> Result<()> {
        self.raw.truncate(0)
    }

    /// The name the string was found under.
    pub fn name(&self) -> &str {
        &self.raw.name
    }
}
