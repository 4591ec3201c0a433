//! Typed offsets and the raw allocator API.

use std::marker::PhantomData;

use crate::error::{Error, Result};
use crate::layout::HEADER_SIZE;
use crate::segment::Heap;
use crate::types::ShmType;

/// A typed offset from the start of a segment: what a pointer is in a
/// shared heap. Unlike Boost's self-relative `offset_ptr`, it stays valid
/// wherever it is copied or moved, and in every process.
///
/// An `Offset<T>` read from the segment is untrusted: every dereference
/// ([`Heap::read`], [`Heap::write`]) checks that the value lies inside the
/// heap and is aligned for `T`. It is plain data itself, so it may be
/// stored in other heap values to build linked structures.
#[repr(transparent)]
pub struct Offset<T> {
    raw: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T> Offset<T> {
    /// The offset `raw` bytes from the segment's start.
    pub const fn from_raw(raw: u64) -> Offset<T> {
        Offset { raw, _t: PhantomData }
    }

    /// The byte offset.
    pub const fn raw(self) -> u64 {
        self.raw
    }

    /// The null offset (0 is inside the header, never a block).
    pub const fn null() -> Offset<T> {
        Offset::from_raw(0)
    }

    /// True for the null offset.
    pub const fn is_null(self) -> bool {
        self.raw == 0
    }
}

impl<T> Clone for Offset<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Offset<T> {}
impl<T> PartialEq for Offset<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl<T> Eq for Offset<T> {}
impl<T> std::fmt::Debug for Offset<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Offset<{}>({})", std::any::type_name::<T>(), self.raw)
    }
}

// SAFETY: `repr(transparent)` over a `u64` (the PhantomData is a ZST), so
// every bit pattern is a valid `Offset<T>` and all-zero is the null offset.
unsafe impl<T: 'static> bytemuck::Zeroable for Offset<T> {}
// SAFETY: as above; no padding, no pointers, `Copy`.
unsafe impl<T: 'static> bytemuck::Pod for Offset<T> {}
impl<T: ShmType> ShmType for Offset<T> {
    fn type_desc() -> crate::TypeDesc {
        crate::TypeDesc::of::<Self>("Offset").with(&T::type_desc().fingerprint.to_le_bytes())
    }
}

impl Heap {
    /// Allocates `size` bytes aligned to `align` (a power of two up to 64).
    /// Sizes up to 8 KiB come from size classes in O(1); larger blocks are
    /// runs of 4 KiB pages. The heap grows when full, up to its
    /// `max_size`, and then fails with [`Error::OutOfMemory`].
    ///
    /// The block is not reachable from the registry: `check --repair`
    /// reclaims it unless an object refers to it.
    pub fn alloc(&self, size: u64, align: u64) -> Result<Offset<u8>> {
        self.inner.alloc(size, align).map(Offset::from_raw)
    }

    /// Frees a block from [`Heap::alloc`], given the same size and
    /// alignment. A wrong offset, size or a double free is refused with a
    /// corruption error and changes nothing.
    pub fn free(&self, off: Offset<u8>, size: u64, align: u64) -> Result<()> {
        self.inner.free(off.raw(), size, align)
    }

    /// Grows a block from [`Heap::alloc`] of `size` bytes to `new_size`
    /// without moving it (Boost's `expand_fwd`), when the pages after it
    /// are free or not carved yet: true if it did, and the block must then
    /// be freed with `new_size`; false, changing nothing, if the space
    /// after it is taken or either size is a small one (8 KiB or less,
    /// from a size class). A wrong offset or size is refused with a
    /// corruption error.
    pub fn grow_in_place(&self, off: Offset<u8>, size: u64, new_size: u64, align: u64) -> Result<bool> {
        self.inner.grow_in_place(off.raw(), size, new_size, align)
    }

    /// Allocates a block holding `value`.
    pub fn alloc_value<T: ShmType>(&self, value: &T) -> Result<Offset<T>> {
        let off = self.inner.alloc(size_of::<T>().max(1) as u64, align_of::<T>() as u64)?;
        self.inner.write_bytes(off, bytemuck::bytes_of(value))?;
        Ok(Offset::from_raw(off))
    }

    /// Frees a block from [`Heap::alloc_value`].
    pub fn free_value<T: ShmType>(&self, off: Offset<T>) -> Result<()> {
        self.inner.free(off.raw(), size_of::<T>().max(1) as u64, align_of::<T>() as u64)
    }

    fn check_offset<T>(&self, op: &'static str, off: Offset<T>) -> Result<()> {
        if off.raw() < HEADER_SIZE || off.raw() % align_of::<T>() as u64 != 0 {
            return Err(Error::Invalid {
                op,
                reason: format!("{off:?} is not a properly aligned offset into the heap"),
            });
        }
        Ok(())
    }

    /// A copy of the `T` at `off`, after checking bounds and alignment.
    pub fn read<T: ShmType>(&self, off: Offset<T>) -> Result<T> {
        self.check_offset("read", off)?;
        let mut v = T::zeroed();
        self.inner.read_bytes(off.raw(), bytemuck::bytes_of_mut(&mut v))?;
        Ok(v)
    }

    /// Writes `value` at `off`, after checking bounds and alignment.
    pub fn write<T: ShmType>(&self, off: Offset<T>, value: &T) -> Result<()> {
        self.check_offset("write", off)?;
        self.inner.write_bytes(off.raw(), bytemuck::bytes_of(value))
    }
}
