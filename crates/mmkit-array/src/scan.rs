//! Whole-array scans: per-column statistics and row gathers.
//!
//! Scans copy the data in chunks into a private buffer and reduce from
//! there: the copy makes them safe against concurrent writers, and the
//! reduction over an owned `&[T]` vectorises. File-backed arrays in modes
//! `r` and `r+` fill the buffer with `pread`, which on this kind of machine
//! is about twice as fast as faulting the pages of a fresh mapping in (see
//! docs/benchmarks-array.md); copy-on-write and shared-memory arrays copy
//! from the mapping, which holds their private changes.

use std::os::unix::fs::FileExt;

use mmkit_region::Mode;

use crate::array::{MmapArray, Order};
use crate::dtype::{Element, ToF64};
use crate::error::{Error, Result};

/// Statistics of one column (or of a whole 1-D array).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColumnStats {
    /// Number of values.
    pub count: u64,
    /// Sum, accumulated in `f64`.
    pub sum: f64,
    /// Smallest value (NaNs are skipped; NaN when `count` is 0).
    pub min: f64,
    /// Largest value (NaNs are skipped; NaN when `count` is 0).
    pub max: f64,
}

impl ColumnStats {
    /// `sum / count` (NaN when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.sum / self.count as f64 }
    }
}

/// Bytes per chunk copied out of the file: fits in L2 with room to spare.
const CHUNK_BYTES: usize = 256 * 1024;
/// Lanes per accumulator block, so the inner loop is long enough to vectorise.
const MIN_LANES: usize = 64;
/// Most columns the per-column scans accept. The column count comes from
/// the header, which may be hostile: a 128-byte file can claim 2^40
/// columns of no rows, and the accumulators and the result are sized by it.
pub const MAX_SCAN_COLUMNS: usize = 1 << 20;

/// Per-lane accumulators; lane `j` belongs to column `j % cols`.
struct Lanes {
    cols: usize,
    sum: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    count: Vec<u64>,
}

impl Lanes {
    fn new(cols: usize, op: &'static str, src: &str) -> Result<Lanes> {
        let width = lane_width(cols, REG_LANES);
        Ok(Lanes {
            cols,
            sum: filled(width, 0.0, op, src)?,
            min: filled(width, f64::INFINITY, op, src)?,
            max: filled(width, f64::NEG_INFINITY, op, src)?,
            count: filled(width, 0, op, src)?,
        })
    }

    fn width(&self) -> usize {
        self.sum.len()
    }

    /// Feeds whole rows; `data.len()` is a multiple of `cols`, and every
    /// chunk but the last a multiple of the lane width.
    fn feed<T: ToF64>(&mut self, data: &[T]) {
        if self.width() == REG_LANES {
            let rest = self.feed_fixed::<REG_LANES, T>(data);
            self.feed_rest(rest);
            return;
        }
        let w = self.width();
        let blocks = data.chunks_exact(w);
        let rest = blocks.remainder();
        let n_blocks = blocks.len() as u64;
        for block in blocks {
            let lanes = self.sum.iter_mut().zip(self.min.iter_mut()).zip(self.max.iter_mut());
            for (((s, lo), hi), x) in lanes.zip(block) {
                let v = x.to_f64();
                *s += v;
                // Written as selects so they compile to minpd/maxpd; a NaN
                // `v` compares false and is skipped.
                *lo = if v < *lo { v } else { *lo };
                *hi = if v > *hi { v } else { *hi };
            }
        }
        self.count.iter_mut().for_each(|c| *c += n_blocks);
        self.feed_rest(rest);
    }

    /// The same with the accumulators in registers: `W` lanes, fixed.
    fn feed_fixed<'d, const W: usize, T: ToF64>(&mut self, data: &'d [T]) -> &'d [T] {
        let mut sum = [0.0; W];
        let mut lo = [f64::INFINITY; W];
        let mut hi = [f64::NEG_INFINITY; W];
        let blocks = data.chunks_exact(W);
        let rest = blocks.remainder();
        let n_blocks = blocks.len() as u64;
        for block in blocks {
            let Ok(block) = <&[T; W]>::try_from(block) else { continue };
            for j in 0..W {
                let v = block[j].to_f64();
                sum[j] += v;
                lo[j] = if v < lo[j] { v } else { lo[j] };
                hi[j] = if v > hi[j] { v } else { hi[j] };
            }
        }
        for j in 0..W {
            self.sum[j] += sum[j];
            self.min[j] = self.min[j].min(lo[j]);
            self.max[j] = self.max[j].max(hi[j]);
            self.count[j] += n_blocks;
        }
        rest
    }

    fn feed_rest<T: ToF64>(&mut self, rest: &[T]) {
        for (j, x) in rest.iter().enumerate() {
            let v = x.to_f64();
            self.sum[j] += v;
            self.min[j] = self.min[j].min(v);
            self.max[j] = self.max[j].max(v);
            self.count[j] += 1;
        }
    }

    fn finish(&self, op: &'static str, src: &str) -> Result<Vec<ColumnStats>> {
        let mut out = filled(self.cols, EMPTY_STATS, op, src)?;
        for j in 0..self.width() {
            let c = &mut out[j % self.cols];
            c.count += self.count[j];
            c.sum += self.sum[j];
            c.min = c.min.min(self.min[j]);
            c.max = c.max.max(self.max[j]);
        }
        for c in &mut out {
            if c.count == 0 {
                c.min = f64::NAN;
                c.max = f64::NAN;
            }
        }
        Ok(out)
    }
}

/// Accumulator start values of one column.
const EMPTY_STATS: ColumnStats =
    ColumnStats { count: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY };

/// `vec![value; n]` that reports a failed allocation as an error instead
/// of aborting the process.
fn filled<V: Clone>(n: usize, value: V, op: &'static str, src: &str) -> Result<Vec<V>> {
    let mut v = with_room(n, op, src)?;
    v.resize(n, value);
    Ok(v)
}

/// `Vec::with_capacity(n)` that reports a failed allocation as an error.
fn with_room<V>(n: usize, op: &'static str, src: &str) -> Result<Vec<V>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::unsupported(op, src, format!("cannot allocate {n} x {} bytes of buffers", size_of::<V>()))
    })?;
    Ok(v)
}

/// Lanes kept in registers when the column count divides them.
const REG_LANES: usize = 8;
/// The same for the sum-only kernel (one accumulator per lane).
const REG_SUM_LANES: usize = 16;

/// A lane count that is a multiple of `cols`: `fixed` when `cols`
/// divides it, else at least [`MIN_LANES`].
fn lane_width(cols: usize, fixed: usize) -> usize {
    if fixed % cols == 0 { fixed } else { cols * MIN_LANES.div_ceil(cols).max(1) }
}

/// Sums `data` into `lanes` (lane `j` = column `j % cols`).
fn sum_into<T: ToF64>(lanes: &mut [f64], data: &[T]) {
    if lanes.len() == REG_SUM_LANES {
        sum_fixed::<REG_SUM_LANES, T>(lanes, data);
        return;
    }
    let w = lanes.len();
    let blocks = data.chunks_exact(w);
    let rest = blocks.remainder();
    for block in blocks {
        for (s, x) in lanes.iter_mut().zip(block) {
            *s += x.to_f64();
        }
    }
    for (s, x) in lanes.iter_mut().zip(rest) {
        *s += x.to_f64();
    }
}

/// [`sum_into`] with `W` accumulators in registers.
fn sum_fixed<const W: usize, T: ToF64>(lanes: &mut [f64], data: &[T]) {
    let mut acc = [0.0; W];
    let blocks = data.chunks_exact(W);
    let rest = blocks.remainder();
    for block in blocks {
        let Ok(block) = <&[T; W]>::try_from(block) else { continue };
        for j in 0..W {
            acc[j] += block[j].to_f64();
        }
    }
    for (l, a) in lanes.iter_mut().zip(acc) {
        *l += a;
    }
    for (l, x) in lanes.iter_mut().zip(rest) {
        *l += x.to_f64();
    }
}

impl<T: Element> MmapArray<T> {
    /// Copies `buf.len()` elements of storage order from element `start`,
    /// by `pread` when the file and the mapping agree, else from the mapping.
    fn read_chunk(&self, start: usize, buf: &mut [T]) -> Result<()> {
        match self.file() {
            Some(file) if self.mode != Mode::CopyOnWrite => {
                let offset = self.data_offset() as u64 + (start * size_of::<T>()) as u64;
                file.read_exact_at(bytemuck::cast_slice_mut(buf), offset)
                    .map_err(|e| Error::io("read", &self.src, e))?;
                if self.descr.big_endian {
                    buf.iter_mut().for_each(|v| *v = v.byte_swapped());
                }
                Ok(())
            }
            _ => self.read_storage(start, buf),
        }
    }

    /// Streams `count` elements of storage order from `start` in chunks
    /// whose lengths are multiples of `unit` (except the last).
    fn stream(
        &self,
        start: usize,
        count: usize,
        unit: usize,
        progress: &mut dyn FnMut(u64),
        mut f: impl FnMut(&[T]),
    ) -> Result<()> {
        let per_chunk = (CHUNK_BYTES / size_of::<T>()).max(unit) / unit * unit;
        // `count` elements are in the file (open checked its size), and
        // `unit` is at most a lane width for `MAX_SCAN_COLUMNS`.
        let mut buf = filled(per_chunk.min(count), T::zeroed(), "scan", &self.src)?;
        let mut done = 0;
        while done < count {
            let n = per_chunk.min(count - done);
            self.read_chunk(start + done, &mut buf[..n])?;
            f(&buf[..n]);
            done += n;
            progress((n * size_of::<T>()) as u64);
        }
        Ok(())
    }

    /// `(rows, cols)` of a 1-D or 2-D array, for the column scans; more
    /// than [`MAX_SCAN_COLUMNS`] columns is an error.
    fn matrix_dims(&self, op: &'static str) -> Result<(usize, usize)> {
        let (rows, cols) = match *self.shape() {
            [n] => (n, 1),
            [r, c] => (r, c),
            _ => return Err(self.shape_error(format!("{op} needs a 1-D or 2-D array"))),
        };
        if cols > MAX_SCAN_COLUMNS {
            return Err(self.shape_error(format!("{op} supports at most {MAX_SCAN_COLUMNS} columns")));
        }
        Ok((rows, cols))
    }

    fn shape_error(&self, reason: String) -> Error {
        Error::Shape { src: self.src.clone(), shape: self.shape().to_vec(), reason }
    }
}

impl<T: ToF64> MmapArray<T> {
    /// Count, sum, min and max of each column of a 2-D array, or of the
    /// whole of a 1-D array, in one sequential pass. More than
    /// [`MAX_SCAN_COLUMNS`] columns is an [`Error::Shape`].
    pub fn column_stats(&self) -> Result<Vec<ColumnStats>> {
        self.column_stats_with(&mut |_| {})
    }

    /// [`MmapArray::column_stats`], calling `progress` with the bytes
    /// scanned after each chunk.
    pub fn column_stats_with(&self, progress: &mut dyn FnMut(u64)) -> Result<Vec<ColumnStats>> {
        const OP: &str = "column statistics";
        let (rows, cols) = self.matrix_dims(OP)?;
        if cols == 0 {
            return Ok(Vec::new());
        }
        if self.order() == Order::Fortran && cols > 1 {
            let mut out = with_room(cols, OP, &self.src)?;
            for c in 0..cols {
                let mut lanes = Lanes::new(1, OP, &self.src)?;
                self.stream(c * rows, rows, 1, progress, |d| lanes.feed(d))?;
                out.extend(lanes.finish(OP, &self.src)?);
            }
            return Ok(out);
        }
        if rows == 0 {
            // No data: skip the accumulators, which would be sized by the
            // header alone.
            let none = ColumnStats { min: f64::NAN, max: f64::NAN, ..EMPTY_STATS };
            return filled(cols, none, OP, &self.src);
        }
        let mut lanes = Lanes::new(cols, OP, &self.src)?;
        let unit = lanes.width();
        self.stream(0, rows * cols, unit, progress, |d| lanes.feed(d))?;
        lanes.finish(OP, &self.src)
    }

    /// The sum of each column (2-D) or of the whole array (1-D), in `f64`.
    /// More than [`MAX_SCAN_COLUMNS`] columns is an [`Error::Shape`].
    pub fn column_sums(&self) -> Result<Vec<f64>> {
        const OP: &str = "column sums";
        let (rows, cols) = self.matrix_dims(OP)?;
        if cols == 0 {
            return Ok(Vec::new());
        }
        if rows == 0 {
            return filled(cols, 0.0, OP, &self.src);
        }
        if self.order() == Order::Fortran && cols > 1 {
            let mut out = with_room(cols, OP, &self.src)?;
            for c in 0..cols {
                let mut lanes = vec![0.0; REG_SUM_LANES];
                self.stream(c * rows, rows, REG_SUM_LANES, &mut |_| {}, |d| sum_into(&mut lanes, d))?;
                out.push(lanes.iter().sum());
            }
            return Ok(out);
        }
        let width = lane_width(cols, REG_SUM_LANES);
        let mut lanes = filled(width, 0.0, OP, &self.src)?;
        self.stream(0, rows * cols, width, &mut |_| {}, |d| sum_into(&mut lanes, d))?;
        let mut out = filled(cols, 0.0, OP, &self.src)?;
        for (j, s) in lanes.iter().enumerate() {
            out[j % cols] += s;
        }
        Ok(out)
    }
}

impl<T: Element> MmapArray<T> {
    /// Copies the rows `indices` (first-axis positions, in any order, with
    /// repeats) of a C-order array into `out`, which must hold
    /// `indices.len()` rows. Every index is checked before any copying.
    pub fn gather_rows(&self, indices: &[usize], out: &mut [T]) -> Result<()> {
        if self.ndim() == 0 || (self.order() == Order::Fortran && self.ndim() > 1) {
            return Err(Error::unsupported(
                "gather_rows",
                &self.src,
                "needs a C-order array with at least one axis",
            ));
        }
        let rows = self.shape()[0];
        let row_len: usize = self.shape()[1..].iter().product();
        let expected = indices.len().saturating_mul(row_len);
        if out.len() != expected {
            return Err(Error::BufferLength {
                src: self.src.clone(),
                op: "gather_rows",
                expected,
                got: out.len(),
            });
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= rows) {
            return Err(Error::OutOfBounds {
                src: self.src.clone(),
                index: vec![bad],
                shape: self.shape().to_vec(),
            });
        }
        let row_bytes = row_len * size_of::<T>();
        if row_bytes == 0 || indices.is_empty() {
            return Ok(());
        }
        let base = self.mem().checked_ptr("gather_rows", self.data_offset() as u64, rows * row_bytes)?;
        let dst: &mut [u8] = bytemuck::cast_slice_mut(out);
        let words = (base as usize) % 8 == 0 && row_bytes % 8 == 0;
        const AHEAD: usize = 16;
        for (k, &i) in indices.iter().enumerate() {
            if let Some(&next) = indices.get(k + AHEAD) {
                prefetch(base.wrapping_add(next * row_bytes));
            }
            let src = base.wrapping_add(i * row_bytes);
            let out_row = &mut dst[k * row_bytes..(k + 1) * row_bytes];
            // SAFETY: `i < rows` was checked above, so `src..src+row_bytes`
            // lies inside the `rows * row_bytes` bytes `checked_ptr`
            // validated, which stay mapped while `&self` lives.
            unsafe { copy_volatile(src, out_row, words) };
        }
        self.mem().check_poison("gather_rows")?;
        if self.descr.big_endian {
            out.iter_mut().for_each(|v| *v = v.byte_swapped());
        }
        Ok(())
    }
}

/// Copies `dst.len()` bytes from `src` with volatile reads, a word at a
/// time when `words` says `src` is 8-aligned and the length a multiple of 8.
///
/// # Safety
///
/// `src..src+dst.len()` must be readable mapped memory.
unsafe fn copy_volatile(src: *const u8, dst: &mut [u8], words: bool) {
    if words {
        for (j, out) in dst.chunks_exact_mut(8).enumerate() {
            // SAFETY: inside the caller's readable range; `src` is
            // 8-aligned and so is every 8-byte step from it.
            let w = unsafe { src.add(j * 8).cast::<u64>().read_volatile() };
            out.copy_from_slice(&w.to_ne_bytes());
        }
    } else {
        for (j, out) in dst.iter_mut().enumerate() {
            // SAFETY: inside the caller's readable range.
            *out = unsafe { src.add(j).read_volatile() };
        }
    }
}

/// Hints the CPU to start loading the cache line at `p`; never faults.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it does not access memory
    // architecturally and cannot fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
