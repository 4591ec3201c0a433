//! Strided read views over mapped array data.
//!
//! A [`View`] never hands out references into the mapping: every read
//! copies with volatile accesses (through [`Access::read_at`]), so another
//! process writing the file at the same time yields stale or mixed values,
//! never undefined behaviour. Every read is bounds-checked against the
//! mapping.

use std::marker::PhantomData;
use std::ops::Range;

use mmkit_region::Access;

use crate::dtype::Element;
use crate::error::{Error, Result};

/// A read-only n-dimensional window onto an array's elements.
///
/// Obtained from [`MmapArray::view`](crate::MmapArray::view),
/// [`MmapArray::row`](crate::MmapArray::row) and the slicing methods here.
#[derive(Clone)]
pub struct View<'a, T: Element> {
    pub(crate) mem: &'a dyn Access,
    pub(crate) src: &'a str,
    /// Byte offset of the element at index `[0, 0, ...]`.
    pub(crate) base: u64,
    pub(crate) shape: Vec<usize>,
    /// Strides in elements (never negative: views only narrow).
    pub(crate) strides: Vec<usize>,
    pub(crate) swap: bool,
    pub(crate) _t: PhantomData<T>,
}

impl<T: Element> std::fmt::Debug for View<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("src", &self.src)
            .field("base", &self.base)
            .field("shape", &self.shape)
            .field("strides", &self.strides)
            .finish()
    }
}

/// Strides, in elements, of a C-order (`fortran = false`) or Fortran-order array.
pub(crate) fn strides_for(shape: &[usize], fortran: bool) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    let mut set = |i: usize| {
        strides[i] = acc;
        acc = acc.saturating_mul(shape[i].max(1));
    };
    if fortran {
        (0..shape.len()).for_each(&mut set);
    } else {
        (0..shape.len()).rev().for_each(&mut set);
    }
    strides
}

/// `shape`, `ndim`, `len` and `is_empty` for a type with a `shape:
/// Vec<usize>` field, shared by [`View`] and
/// [`MmapArray`](crate::MmapArray). The product cannot overflow: every
/// shape was checked by `data_bytes` when the array was opened, and views
/// only narrow it.
macro_rules! shape_accessors {
    ($what:literal) => {
        #[doc = concat!("The ", $what, "'s shape; empty for a 0-d ", $what, ".")]
        pub fn shape(&self) -> &[usize] {
            &self.shape
        }

        /// Number of axes.
        pub fn ndim(&self) -> usize {
            self.shape.len()
        }

        /// Number of elements.
        pub fn len(&self) -> usize {
            self.shape.iter().product()
        }

        #[doc = concat!("True when the ", $what, " holds no elements.")]
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    };
}
pub(crate) use shape_accessors;

impl<'a, T: Element> View<'a, T> {
    shape_accessors!("view");

    fn out_of_bounds(&self, index: &[usize]) -> Error {
        Error::OutOfBounds { src: self.src.to_string(), index: index.to_vec(), shape: self.shape.clone() }
    }

    /// Byte offset of the element at `index`, checked against the shape.
    pub(crate) fn offset_of_checked(&self, index: &[usize]) -> Result<u64> {
        if index.len() != self.shape.len() || index.iter().zip(&self.shape).any(|(i, d)| i >= d) {
            return Err(self.out_of_bounds(index));
        }
        let elems: u64 = index.iter().zip(&self.strides).map(|(&i, &s)| (i as u64) * (s as u64)).sum();
        Ok(self.base + elems * size_of::<T>() as u64)
    }

    /// The element at `index` (one entry per axis; `&[]` for a 0-d array).
    pub fn get(&self, index: &[usize]) -> Result<T> {
        let offset = self.offset_of_checked(index)?;
        self.read_one(offset)
    }

    pub(crate) fn read_one(&self, offset: u64) -> Result<T> {
        let mut v = T::zeroed();
        self.mem.read_at(offset, bytemuck::bytes_of_mut(&mut v))?;
        Ok(if self.swap { v.byte_swapped() } else { v })
    }

    /// The sub-view of `range` along `axis`.
    pub fn slice_axis(&self, axis: usize, range: Range<usize>) -> Result<View<'a, T>> {
        let Some(&dim) = self.shape.get(axis) else {
            return Err(self.bad_axis(axis));
        };
        if range.start > range.end || range.end > dim {
            return Err(self.out_of_bounds(&[range.start, range.end]));
        }
        let mut v = self.clone();
        v.base += (range.start * self.strides[axis] * size_of::<T>()) as u64;
        v.shape[axis] = range.end - range.start;
        Ok(v)
    }

    /// The view with `axis` fixed at `i` (one fewer axis).
    pub fn index_axis(&self, axis: usize, i: usize) -> Result<View<'a, T>> {
        let Some(&dim) = self.shape.get(axis) else {
            return Err(self.bad_axis(axis));
        };
        if i >= dim {
            return Err(self.out_of_bounds(&[i]));
        }
        let mut v = self.clone();
        v.base += (i * self.strides[axis] * size_of::<T>()) as u64;
        v.shape.remove(axis);
        v.strides.remove(axis);
        Ok(v)
    }

    fn bad_axis(&self, axis: usize) -> Error {
        Error::Shape {
            src: self.src.to_string(),
            shape: self.shape.clone(),
            reason: format!("axis {axis} does not exist"),
        }
    }

    /// Row `i`: the view with the first axis fixed.
    pub fn row(&self, i: usize) -> Result<View<'a, T>> {
        self.index_axis(0, i)
    }

    /// The views of each index along the first axis.
    pub fn rows(&self) -> impl Iterator<Item = View<'a, T>> + use<'a, T> {
        let n = self.shape.first().copied().unwrap_or(0);
        let view = self.clone();
        // `row(i)` cannot fail for `i < n`.
        (0..n).filter_map(move |i| view.row(i).ok())
    }

    /// True when the elements lie contiguously in C (row-major) order.
    pub fn is_c_contiguous(&self) -> bool {
        let c = strides_for(&self.shape, false);
        self.shape.iter().zip(self.strides.iter().zip(&c)).all(|(&d, (s, c))| d <= 1 || s == c)
    }

    /// True when the elements lie contiguously in Fortran (column-major) order.
    pub fn is_f_contiguous(&self) -> bool {
        let f = strides_for(&self.shape, true);
        self.shape.iter().zip(self.strides.iter().zip(&f)).all(|(&d, (s, f))| d <= 1 || s == f)
    }

    /// Reorders Fortran-order `storage` into C order in `out` (same length).
    fn f_to_c(&self, storage: &[T], out: &mut [T]) {
        let f = strides_for(&self.shape, true);
        let ndim = self.shape.len();
        let mut idx = vec![0usize; ndim];
        let mut offset = 0usize;
        for slot in out.iter_mut() {
            *slot = storage[offset];
            // Odometer increment of the C-order index, tracking the F offset.
            for axis in (0..ndim).rev() {
                idx[axis] += 1;
                offset += f[axis];
                if idx[axis] < self.shape[axis] {
                    break;
                }
                offset -= f[axis] * idx[axis];
                idx[axis] = 0;
            }
        }
    }

    /// Copies every element, in C (row-major) order, into `buf`, which
    /// must hold exactly [`View::len`] elements.
    pub fn read_into(&self, buf: &mut [T]) -> Result<()> {
        if buf.len() != self.len() {
            return Err(Error::BufferLength {
                src: self.src.to_string(),
                op: "read",
                expected: self.len(),
                got: buf.len(),
            });
        }
        if buf.is_empty() {
            return Ok(());
        }
        if self.is_c_contiguous() {
            self.mem.read_at(self.base, bytemuck::cast_slice_mut(buf))?;
        } else if self.is_f_contiguous() {
            // One bulk copy, then a transpose in memory: far faster than
            // one checked read per element.
            let mut storage = vec![T::zeroed(); buf.len()];
            self.mem.read_at(self.base, bytemuck::cast_slice_mut(&mut storage))?;
            self.f_to_c(&storage, buf);
        } else {
            let mut pos = 0;
            self.read_strided(0, self.base, buf, &mut pos)?;
        }
        if self.swap {
            buf.iter_mut().for_each(|v| *v = v.byte_swapped());
        }
        Ok(())
    }

    fn read_strided(&self, axis: usize, offset: u64, buf: &mut [T], pos: &mut usize) -> Result<()> {
        let step = (self.strides[axis] * size_of::<T>()) as u64;
        if axis + 1 == self.shape.len() {
            for i in 0..self.shape[axis] {
                let v = &mut buf[*pos..*pos + 1];
                self.mem.read_at(offset + i as u64 * step, bytemuck::cast_slice_mut(v))?;
                *pos += 1;
            }
            return Ok(());
        }
        for i in 0..self.shape[axis] {
            self.read_strided(axis + 1, offset + i as u64 * step, buf, pos)?;
        }
        Ok(())
    }

    /// All elements in C (row-major) order.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let mut out = vec![T::zeroed(); self.len()];
        self.read_into(&mut out)?;
        Ok(out)
    }

    /// The elements in C (row-major) order, read in chunks.
    ///
    /// Items are `Result`s because a read can fail when the file is
    /// truncated under the mapping (a caught SIGBUS).
    pub fn iter(&self) -> Iter<'a, T> {
        Iter { view: self.clone(), next: 0, len: self.len(), buf: Vec::new(), pos: 0 }
    }

    /// Byte offset of the `k`-th element in C order.
    fn flat_offset(&self, mut k: usize) -> u64 {
        let mut elems = 0u64;
        for axis in (0..self.shape.len()).rev() {
            let d = self.shape[axis].max(1);
            elems += ((k % d) * self.strides[axis]) as u64;
            k /= d;
        }
        self.base + elems * size_of::<T>() as u64
    }

    fn read_flat(&self, start: usize, buf: &mut [T]) -> Result<()> {
        if self.is_c_contiguous() {
            self.mem.read_at(self.flat_offset(start), bytemuck::cast_slice_mut(buf))?;
            if self.swap {
                buf.iter_mut().for_each(|v| *v = v.byte_swapped());
            }
            return Ok(());
        }
        for (i, v) in buf.iter_mut().enumerate() {
            *v = self.read_one(self.flat_offset(start + i))?;
        }
        Ok(())
    }
}

/// Iterator over a view's elements in C order; see [`View::iter`].
pub struct Iter<'a, T: Element> {
    view: View<'a, T>,
    next: usize,
    len: usize,
    buf: Vec<T>,
    pos: usize,
}

const ITER_CHUNK: usize = 4096;

impl<T: Element> Iterator for Iter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.pos == self.buf.len() {
            if self.next >= self.len {
                return None;
            }
            let n = (self.len - self.next).min(ITER_CHUNK);
            self.buf.resize(n, T::zeroed());
            self.pos = 0;
            if let Err(e) = self.view.read_flat(self.next, &mut self.buf) {
                self.next = self.len;
                self.buf.clear();
                return Some(Err(e));
            }
            self.next += n;
        }
        let v = self.buf[self.pos];
        self.pos += 1;
        Some(Ok(v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.next + (self.buf.len() - self.pos);
        (left, Some(left))
    }
}

impl<T: Element> ExactSizeIterator for Iter<'_, T> {}
