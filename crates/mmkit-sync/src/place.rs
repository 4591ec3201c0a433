//! Checked placement of a primitive inside a mapping.

use mmkit_region::Access;

use crate::error::{Error, Result};

/// Marker for the primitives that may be placed over shared memory.
///
/// # Safety
///
/// Implementors are `#[repr(C)]` structs made only of atomics (and padding
/// read through atomics), so every bit pattern is a valid value, all-zero
/// is the documented initial state, and shared access from several
/// processes at once is sound.
pub(crate) unsafe trait Placeable: Sized {}

/// Returns a reference to a `T` at `offset` in `mem`, after checking that
/// the memory is writable, that `size_of::<T>()` bytes fit, and that the
/// absolute address is aligned for `T`.
pub(crate) fn place<'a, T: Placeable, A: Access + ?Sized>(
    mem: &'a A,
    offset: u64,
    op: &'static str,
) -> Result<&'a T> {
    mem.require_writable(op)?;
    let ptr = mem.checked_ptr(op, offset, size_of::<T>())?;
    let align = align_of::<T>();
    if (ptr as usize) % align != 0 {
        return Err(Error::Misaligned { op, offset, address: ptr as usize, align });
    }
    mem.check_poison(op)?;
    // SAFETY: `ptr` is in bounds for `size_of::<T>()` bytes, aligned for `T`
    // and writable (checked above); the `Access` contract keeps it mapped
    // for as long as `mem` is borrowed, which bounds the returned lifetime.
    // `T: Placeable` guarantees any bytes there form a valid `T` that is
    // only ever accessed through atomics, so sharing it is sound.
    Ok(unsafe { &*ptr.cast::<T>() })
}
