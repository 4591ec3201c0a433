//! [`Appendable`]: an `.npy` array that grows along its first axis.
//!
//! The file lives in a [`GrowableFile`]: one reserved address range that
//! the file is mapped into as it grows, so the data never moves and no
//! remap happens. The header keeps the first axis in a fixed 16-byte field
//! of spaces and digits, aligned to 16 bytes in the file, which numpy reads
//! as an ordinary tuple entry (`(            1000, 3)`).
//!
//! Crash safety, for an appender killed at any instruction:
//!
//! 1. the file is grown (with `fallocate`) before anything is written, so
//!    it is never shorter than the header's shape needs;
//! 2. the new rows are written;
//! 3. only then is the count field rewritten, with one aligned 16-byte
//!    store on x86-64 (a single instruction, so a kill cannot tear it), or
//!    elsewhere two 8-byte atomic stores, low half first (see
//!    `docs/npy-format.md` for the window that leaves).
//!
//! So the file always holds a header whose shape covers only fully
//! written rows, and at least that many bytes of data: `numpy.load` with
//! or without `mmap_mode` loads it (numpy ignores bytes past the shape).
//! Rows written after the last count update are lost, and the file may
//! keep zeroed preallocated bytes at the end until the next clean close
//! trims them. Surviving a power failure additionally needs
//! [`Appendable::sync`], which flushes the rows before the header.

use std::fs::File;
use std::path::Path;

use mmkit_region::{Access, GrowableFile, Mode};

use crate::array::{
    Backing, CreateOptions, MmapArray, Parts, encode_header, lock, parse_error, read_header_from,
};
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::header::{COUNT_FIELD, COUNT_MAX, Header, HeaderSpec, Version, count_field};

/// Address space reserved by default for an appendable file (1 TiB;
/// reserving costs no memory).
pub const DEFAULT_RESERVE: usize = 1 << 40;

/// An `.npy` array, C order, that grows along its first axis in place.
///
/// Holds an exclusive `flock` on the file: one appender at a time, and no
/// other mmkit writer meanwhile. Readers (numpy included) may open the
/// file at any time and see the rows the header announced when they
/// opened it.
///
/// ```
/// use mmkit_array::{Appendable, MmapArray, Mode};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("log.npy");
/// let mut log = Appendable::<f64>::create(&path, &[2])?;
/// log.append(&[1.0, 2.0, 3.0, 4.0])?; // two rows
/// log.append(&[5.0, 6.0])?;
/// assert_eq!(log.rows(), 3);
/// drop(log);
/// let a = MmapArray::<f64>::open(&path, Mode::ReadOnly)?;
/// assert_eq!(a.shape(), &[3, 2]);
/// assert_eq!(a.get(&[2, 1])?, 6.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Appendable<T: Element> {
    arr: MmapArray<T>,
    row_len: usize,
    /// File offset of the 16-byte count field.
    field: u64,
}

impl<T: Element> Appendable<T> {
    /// Creates (or truncates) `path` as an empty array of rows shaped
    /// `row_shape` (`&[]` for a 1-D array of scalars).
    pub fn create(path: impl AsRef<Path>, row_shape: &[usize]) -> Result<Self> {
        Self::create_with(path, row_shape, DEFAULT_RESERVE)
    }

    /// [`Appendable::create`] with the address space to reserve (the file
    /// can grow up to `reserve` bytes).
    pub fn create_with(path: impl AsRef<Path>, row_shape: &[usize], reserve: usize) -> Result<Self> {
        let path = path.as_ref();
        let src = path.display().to_string();
        let mut shape = vec![0];
        shape.extend_from_slice(row_shape);
        let opts = CreateOptions { growable: true, ..CreateOptions::default() };
        let header_bytes = encode_header::<T>(&shape, &opts, &src)?;
        // Lock before `GrowableFile::create` truncates, so a file another
        // appender holds is never clobbered.
        let lock_file = lock_path(path, &src, true)?;
        let grow = GrowableFile::create(path, header_bytes.len() as u64, reserve)?;
        grow.write_at(0, &header_bytes)?;
        let header = Header::parse(&header_bytes).map_err(|e| parse_error(&src, grow.len(), e))?;
        Self::from_grow(grow, lock_file, src, header)
    }

    /// Opens an existing C-order `.npy` file for appending. A header
    /// written by numpy is rewritten once, in place and with one `pwrite`,
    /// into the fixed-field layout (the data does not move); a header with
    /// no room for it is an error.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, DEFAULT_RESERVE)
    }

    /// [`Appendable::open`] with the address space to reserve.
    pub fn open_with(path: impl AsRef<Path>, reserve: usize) -> Result<Self> {
        let path = path.as_ref();
        let src = path.display().to_string();
        let lock_file = lock_path(path, &src, false)?;
        let grow = GrowableFile::open(path, Mode::ReadWrite, reserve)?;
        if grow.is_empty() {
            return Err(Error::NotNpy { src, reason: "the file is empty".into() });
        }
        let mut header = read_header_from(&grow, &src)?;
        if header.fortran_order && header.shape.len() > 1 {
            return Err(Error::unsupported(
                "open for appending",
                &src,
                "Fortran-order arrays cannot grow along axis 0",
            ));
        }
        if header.shape.is_empty() {
            return Err(Error::unsupported("open for appending", &src, "a 0-d array has no axis to grow"));
        }
        if field_of(&header).is_none() {
            // Refuse a wrong element type before the header is rewritten.
            crate::array::check_descr::<T>(&header, &src)?;
            header = convert_header(&grow, &header, &src)?;
        }
        Self::from_grow(grow, lock_file, src, header)
    }

    fn from_grow(grow: GrowableFile, lock_file: File, src: String, header: Header) -> Result<Self> {
        let field = field_of(&header).ok_or_else(|| Error::Header {
            src: src.clone(),
            reason: "no fixed-width field for the first axis".into(),
        })?;
        let parts =
            Parts { backing: Backing::Grow(grow), file: Some(lock_file), src, header, mode: Mode::ReadWrite };
        let arr = MmapArray::from_parts(parts, false, true)?;
        // `field_of` found a count in the first shape entry, so there is
        // one; still, an error beats an index panic if that ever changes.
        let Some((_, row_shape)) = arr.shape().split_first() else {
            return Err(Error::unsupported("open for appending", arr.source(), "a 0-d array cannot grow"));
        };
        let row_len = row_shape.iter().product();
        Ok(Appendable { arr, row_len, field })
    }

    /// Rows so far (the first axis).
    pub fn rows(&self) -> usize {
        self.arr.shape().first().copied().unwrap_or(0)
    }

    /// Elements per row.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// The array as it stands, for reading (its shape follows the appends).
    pub fn array(&self) -> &MmapArray<T> {
        &self.arr
    }

    /// Appends whole rows: `rows.len()` must be a multiple of the row length.
    pub fn append(&mut self, rows: &[T]) -> Result<()> {
        if self.row_len == 0 {
            return Err(Error::unsupported(
                "append",
                &self.arr.src,
                "rows of zero elements cannot be appended",
            ));
        }
        if rows.len() % self.row_len != 0 {
            let expected = self.row_len * (rows.len() / self.row_len + 1);
            return Err(Error::BufferLength {
                src: self.arr.src.clone(),
                op: "append",
                expected,
                got: rows.len(),
            });
        }
        let n = rows.len() / self.row_len;
        if n == 0 {
            return Ok(());
        }
        let old = self.rows();
        let new = old
            .checked_add(n)
            .filter(|&r| r as u64 <= COUNT_MAX)
            .ok_or_else(|| self.too_many(old.saturating_add(n)))?;
        let row_bytes = (self.row_len * size_of::<T>()) as u64;
        let start = self.arr.data_offset() as u64 + old as u64 * row_bytes;
        let end = start.checked_add(n as u64 * row_bytes).ok_or_else(|| self.too_many(new))?;
        self.reserve_bytes(end)?;
        let mem = self.arr.mem();
        if self.arr.descr().big_endian {
            let swapped: Vec<T> = rows.iter().map(|v| v.byte_swapped()).collect();
            mem.write_at(start, bytemuck::cast_slice(&swapped))?;
        } else {
            mem.write_at(start, bytemuck::cast_slice(rows))?;
        }
        self.publish(new)
    }

    fn too_many(&self, rows: usize) -> Error {
        Error::Shape {
            src: self.arr.src.clone(),
            shape: vec![rows],
            reason: format!("more rows than an appendable header holds ({COUNT_MAX})"),
        }
    }

    fn grow_file(&self) -> Result<&GrowableFile> {
        match &self.arr.backing {
            Backing::Grow(g) => Ok(g),
            // `from_grow` is the only constructor, so this does not happen.
            Backing::Map(_) => {
                Err(Error::unsupported("append", &self.arr.src, "not backed by a growable file"))
            }
        }
    }

    /// Makes the file at least `end` bytes long, growing geometrically so
    /// that appends cost amortised O(1) `fallocate` calls.
    fn reserve_bytes(&self, end: u64) -> Result<()> {
        let grow = self.grow_file()?;
        let len = grow.len();
        if end <= len {
            return Ok(());
        }
        let page = mmkit_region::page_size() as u64;
        let step = len.clamp(1 << 16, 1 << 30);
        let target = end.max(len + step).div_ceil(page) * page;
        let target = target.min(grow.reserved() as u64).max(end);
        grow.grow_to(target)?;
        Ok(())
    }

    /// Rewrites the header's first axis: the rows below it are complete.
    fn publish(&mut self, rows: usize) -> Result<()> {
        let field =
            count_field(rows as u64).map_err(|reason| Error::Header { src: self.arr.src.clone(), reason })?;
        store_field(self.grow_file()?, self.field, &field)?;
        self.arr.shape[0] = rows;
        self.arr.header.shape[0] = rows;
        Ok(())
    }

    /// Flushes the data, then the header, to stable storage (`msync`), so
    /// the appended rows survive a power failure too.
    pub fn sync(&self) -> Result<()> {
        let grow = self.grow_file()?;
        let data = self.arr.data_offset() as u64;
        let end = data + (self.rows() * self.row_len * size_of::<T>()) as u64;
        grow.flush_range(data, end - data)?;
        grow.flush_range(0, data)?;
        Ok(())
    }

    /// Trims the preallocated tail so the file is exactly header plus data.
    pub fn finish(mut self) -> Result<()> {
        self.trim()
    }

    fn trim(&mut self) -> Result<()> {
        let end = self.arr.data_offset() as u64 + (self.rows() * self.row_len * size_of::<T>()) as u64;
        if let Backing::Grow(g) = &mut self.arr.backing {
            g.shrink_to(end)?;
        }
        Ok(())
    }
}

impl<T: Element> Drop for Appendable<T> {
    fn drop(&mut self) {
        // Best effort: a file with a zeroed tail is still a valid .npy.
        let _ = self.trim();
    }
}

/// Opens `path` on a descriptor of its own and takes the appender's
/// exclusive lock on it; the lock lasts as long as the returned file.
fn lock_path(path: &Path, src: &str, create: bool) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(if create { "create" } else { "open" }, src, e))?;
    lock(&file, src, true, true)?;
    Ok(file)
}

/// The 16-byte aligned count field inside the header's first shape entry.
fn field_of(header: &Header) -> Option<u64> {
    let (start, end) = header.count_span?;
    let ok = end % COUNT_FIELD == 0 && end - start >= COUNT_FIELD && header.data_offset >= end;
    ok.then_some((end - COUNT_FIELD) as u64)
}

/// Rewrites a foreign header into the fixed-field layout, same length.
fn convert_header(grow: &GrowableFile, header: &Header, src: &str) -> Result<Header> {
    let descr = crate::array::descr_of(header, src)?;
    if header.data_offset > mmkit_region::page_size() {
        // One pwrite within one page is what makes the rewrite all-or-nothing.
        return Err(Error::unsupported("open for appending", src, "the header is longer than a page"));
    }
    let version = match header.version.0 {
        1 => Version::V1,
        2 => Version::V2,
        _ => Version::V3,
    };
    let spec =
        HeaderSpec { descr, fortran_order: false, shape: header.shape.clone(), version, growable: true };
    let bytes = spec.encode_to_len(version, header.data_offset).map_err(|reason| {
        Error::unsupported("open for appending", src, format!("cannot rewrite the header in place: {reason}"))
    })?;
    rustix::io::pwrite(grow.file(), &bytes, 0).map_err(|e| Error::io("rewrite header", src, e))?;
    Header::parse(&bytes).map_err(|e| parse_error(src, grow.len(), e))
}

/// Stores the 16 field bytes at `offset` so that a process killed at any
/// instruction leaves either the old or the new field.
fn store_field(grow: &GrowableFile, offset: u64, field: &[u8; COUNT_FIELD]) -> Result<()> {
    let ptr = grow.aligned_ptr("update shape", offset, COUNT_FIELD)?;
    grow.require_writable("update shape")?;
    store16(ptr, field);
    grow.check_poison("update shape")?;
    Ok(())
}

#[cfg(target_arch = "x86_64")]
fn store16(ptr: *mut u8, field: &[u8; COUNT_FIELD]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128};
    // Order the row stores before the count for readers in other processes.
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    // SAFETY: `field` is 16 readable bytes; an unaligned load is allowed.
    let v = unsafe { _mm_loadu_si128(field.as_ptr().cast()) };
    // SAFETY: `ptr` was bounds- and 16-alignment-checked by `aligned_ptr`
    // and the mapping is writable. A volatile store of a legal vector type
    // is one instruction (`movdqa`), which a signal cannot interrupt midway.
    unsafe { ptr.cast::<__m128i>().write_volatile(v) };
}

#[cfg(not(target_arch = "x86_64"))]
fn store16(ptr: *mut u8, field: &[u8; COUNT_FIELD]) {
    // Without a 16-byte store, write the low half (where counts below
    // 10^8 change) with one atomic store, then the high half; see
    // docs/npy-format.md for the remaining window.
    use std::sync::atomic::{AtomicU64, Ordering};
    let hi = u64::from_ne_bytes(field[..8].try_into().unwrap_or([b' '; 8]));
    let lo = u64::from_ne_bytes(field[8..].try_into().unwrap_or([b' '; 8]));
    // SAFETY: `ptr` is 16-aligned, in bounds and writable (checked by the caller).
    let (h, l) = unsafe { (AtomicU64::from_ptr(ptr.cast()), AtomicU64::from_ptr(ptr.add(8).cast())) };
    l.store(lo, Ordering::Release);
    h.store(hi, Ordering::Release);
}

impl<T: Element> MmapArray<T> {
    /// Opens `path` for appending; see [`Appendable::open`].
    pub fn appendable(path: impl AsRef<Path>) -> Result<Appendable<T>> {
        Appendable::open(path)
    }
}
