//! [`MmapArray`]: a typed n-dimensional array over a mapped `.npy` file.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::marker::PhantomData;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mmkit_region::shm::Shm;
use mmkit_region::{Access, GrowableFile, MapOptions, Mapping, Mode};
use rustix::fs::{FlockOperation, OFlags};

use crate::dtype::{Descr, DescrError, Element};
use crate::error::{Error, Result};
use crate::header::{Header, HeaderSpec, ParseError, Version};
use crate::view::{View, strides_for};

/// Memory order of an array's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Row-major (numpy's default, `fortran_order: False`).
    #[default]
    C,
    /// Column-major (`fortran_order: True`).
    Fortran,
}

/// What keeps the array's bytes mapped.
pub(crate) enum Backing {
    Map(Mapping),
    Grow(GrowableFile),
}

impl Backing {
    pub(crate) fn access(&self) -> &dyn Access {
        match self {
            Backing::Map(m) => m,
            Backing::Grow(g) => g,
        }
    }

    fn flush(&self) -> Result<()> {
        match self {
            Backing::Map(m) => m.flush().map_err(Error::from),
            Backing::Grow(g) => g.flush().map_err(Error::from),
        }
    }
}

/// How to open an existing `.npy` file; see [`MmapArray::options`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    mode: Mode,
    exclusive: bool,
    allow_unaligned: bool,
    populate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenOptions {
    /// Read-only (numpy's mode `r`), not exclusive, aligned data required.
    pub fn new() -> Self {
        OpenOptions { mode: Mode::ReadOnly, exclusive: false, allow_unaligned: false, populate: false }
    }

    /// `Mode::ReadOnly` is numpy's `r`, `ReadWrite` is `r+`,
    /// `CopyOnWrite` is `c`. (`w+` is [`MmapArray::create`].)
    pub fn mode(&mut self, mode: Mode) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Take an exclusive `flock` on the file, which makes the zero-copy
    /// [`MmapArray::data`] and [`MmapArray::data_mut`] available. See
    /// [`MmapArray::data`] for what the lock does and does not exclude.
    pub fn exclusive(&mut self, yes: bool) -> &mut Self {
        self.exclusive = yes;
        self
    }

    /// Accept data that starts at an offset not aligned for the element
    /// type: element reads then copy byte-wise (they always do), and the
    /// zero-copy accessors refuse.
    pub fn allow_unaligned(&mut self, yes: bool) -> &mut Self {
        self.allow_unaligned = yes;
        self
    }

    /// Prefault the whole file at open (`MAP_POPULATE`).
    pub fn populate(&mut self, yes: bool) -> &mut Self {
        self.populate = yes;
        self
    }

    /// Opens `path`.
    pub fn open<T: Element>(&self, path: impl AsRef<Path>) -> Result<MmapArray<T>> {
        let path = path.as_ref();
        let src = path.display().to_string();
        let (file, size) = open_regular(path, &src, self.mode == Mode::ReadWrite)?;
        let locked = lock(&file, &src, self.exclusive, self.mode == Mode::ReadWrite)?;
        if size == 0 {
            return Err(Error::NotNpy { src, reason: "the file is empty".into() });
        }
        let header = read_header_from_file(&file, size, &src)?;
        let map = MapOptions::new().mode(self.mode).populate(self.populate).map_file_at(&file, Some(path))?;
        let parts = Parts { backing: Backing::Map(map), file: Some(file), src, header, mode: self.mode };
        MmapArray::from_parts(parts, self.allow_unaligned, locked && self.exclusive)
    }

    /// Opens an `.npy` image held in an existing mapping (a shared-memory
    /// segment, a memfd, anonymous memory shared with a child). `name` is
    /// used in error messages.
    pub fn open_mapping<T: Element>(&self, map: Mapping, name: &str) -> Result<MmapArray<T>> {
        let header = read_header_from(&map, name)?;
        let mode = if map.writable() { map.mode() } else { Mode::ReadOnly };
        let parts = Parts { backing: Backing::Map(map), file: None, src: name.to_string(), header, mode };
        MmapArray::from_parts(parts, self.allow_unaligned, false)
    }
}

/// How to create a new `.npy` file; see [`MmapArray::create_with`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Element order.
    pub order: Order,
    /// Header version ([`Version::Auto`] picks 1.0 unless the header is huge).
    pub version: Version,
    /// Take an exclusive `flock`, as [`OpenOptions::exclusive`].
    pub exclusive: bool,
    /// Lay the header out for in-place growth of the first axis.
    pub growable: bool,
}

/// Takes the advisory lock: exclusive owners `LOCK_EX`, writers `LOCK_SH`.
pub(crate) fn lock(file: &File, src: &str, exclusive: bool, writer: bool) -> Result<bool> {
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else if writer {
        FlockOperation::NonBlockingLockShared
    } else {
        return Ok(false);
    };
    match flock_briefly(file, op) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked {
            src: src.to_string(),
            reason: if exclusive {
                "another mmkit array has it open for writing or exclusively"
            } else {
                "another process holds it exclusively"
            },
        }),
        Err(e) => Err(Error::io("flock", src, e)),
    }
}

/// Tries the lock for up to about 100 ms before giving up.
///
/// A child process between `fork` and `exec` holds copies of all its
/// parent's descriptors, close-on-exec ones included, and with them their
/// `flock`s. So when any thread of this process (or of a peer) spawns a
/// program, a lock that was just released can still look held for a
/// moment. A holder that really has the file open keeps it longer than that
/// and is reported as [`Error::Locked`].
fn flock_briefly(file: &File, op: FlockOperation) -> rustix::io::Result<()> {
    let mut pause = std::time::Duration::from_millis(1);
    let mut waited = std::time::Duration::ZERO;
    loop {
        match rustix::fs::flock(file, op) {
            Err(rustix::io::Errno::WOULDBLOCK) if waited < std::time::Duration::from_millis(100) => {
                std::thread::sleep(pause);
                waited += pause;
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

pub(crate) fn parse_error(src: &str, size: u64, e: ParseError) -> Error {
    match e {
        ParseError::NotNpy(reason) => Error::NotNpy { src: src.to_string(), reason },
        ParseError::Truncated { need, .. } => {
            Error::Truncated { src: src.to_string(), needed: need as u64, size }
        }
        ParseError::Bad(reason) => Error::Header { src: src.to_string(), reason },
    }
}

/// Reads and parses the header through positional reads.
pub(crate) fn read_header_from_file(file: &File, size: u64, src: &str) -> Result<Header> {
    read_header_with(size, src, "file", |buf| {
        file.read_exact_at(buf, 0).map_err(|e| Error::io("read header", src, e))
    })
}

/// Reads and parses the header out of mapped memory (copying).
pub(crate) fn read_header_from(mem: &dyn Access, src: &str) -> Result<Header> {
    read_header_with(mem.size() as u64, src, "segment", |buf| mem.read_at(0, buf).map_err(Error::from))
}

/// Reads the fixed prefix, then exactly the header it announces, with
/// `read` (which fills its buffer from offset 0 of a `size`-byte `what`).
fn read_header_with(
    size: u64,
    src: &str,
    what: &str,
    read: impl Fn(&mut [u8]) -> Result<()>,
) -> Result<Header> {
    let mut prefix = vec![0u8; size.min(12) as usize];
    read(&mut prefix)?;
    let offset = Header::data_offset_of(&prefix).map_err(|e| parse_error(src, size, e))?;
    if (offset as u64) > size {
        let reason = format!("the {what} ends inside the header ({size} of {offset} bytes)");
        return Err(Error::NotNpy { src: src.to_string(), reason });
    }
    let mut bytes = vec![0u8; offset];
    read(&mut bytes)?;
    Header::parse(&bytes).map_err(|e| parse_error(src, size, e))
}

/// The header's dtype, or a clear error when it is not supported.
pub(crate) fn descr_of(header: &Header, src: &str) -> Result<Descr> {
    header.parse_descr().map_err(|e| Error::UnsupportedDtype {
        src: src.to_string(),
        descr: header.descr.clone(),
        reason: if header.simple_descr { e.reason() } else { "structured dtypes are not supported" },
    })
}

/// Checks the header's dtype against `T`.
pub(crate) fn check_descr<T: Element>(header: &Header, src: &str) -> Result<Descr> {
    let descr = descr_of(header, src)?;
    if descr.dtype != T::DTYPE {
        return Err(Error::DtypeMismatch {
            src: src.to_string(),
            expected: T::DTYPE.to_string(),
            found: format!("{} ({})", descr.dtype, crate::header::escape_control(&header.descr)),
        });
    }
    Ok(descr)
}

/// Bytes of data the header's shape needs, checked for overflow.
///
/// Zero-length axes are left out of the overflow check, as numpy does, so
/// that an empty array such as `(0, 2**40, 2**40)` is refused too: its row
/// lengths and strides would overflow even though it holds no bytes.
pub(crate) fn data_bytes(shape: &[usize], elem: usize, src: &str) -> Result<u64> {
    let nonzero = shape.iter().filter(|&&d| d != 0).try_fold(elem, |acc, &d| acc.checked_mul(d));
    nonzero
        .and_then(|b| isize::try_from(b).ok())
        .map(|b| if shape.contains(&0) { 0 } else { b as u64 })
        .ok_or_else(|| Error::Shape {
            src: src.to_string(),
            shape: shape.to_vec(),
            reason: "the array is larger than the address space".into(),
        })
}

pub(crate) struct Parts {
    pub(crate) backing: Backing,
    pub(crate) file: Option<File>,
    pub(crate) src: String,
    pub(crate) header: Header,
    pub(crate) mode: Mode,
}

/// A typed n-dimensional array kept in a mapped `.npy` file or
/// shared-memory segment, numpy-compatible.
///
/// Safe element access copies: [`get`](MmapArray::get),
/// [`read_row`](MmapArray::read_row), [`iter`](MmapArray::iter), views.
/// Another process may change a shared file at any moment, so references
/// into the mapping (`&[T]`) are only handed out by the `unsafe`
/// [`data_unchecked`](MmapArray::data_unchecked) or to an exclusive owner
/// ([`OpenOptions::exclusive`]).
///
/// ```
/// use mmkit_array::{MmapArray, Mode};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("a.npy");
/// let mut a = MmapArray::<f32>::create(&path, &[2, 3])?;
/// a.set(&[1, 2], 7.5)?;
/// drop(a);
/// let a = MmapArray::<f32>::open(&path, Mode::ReadOnly)?;
/// assert_eq!(a.shape(), &[2, 3]);
/// assert_eq!(a.get(&[1, 2])?, 7.5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MmapArray<T: Element> {
    pub(crate) backing: Backing,
    pub(crate) file: Option<File>,
    pub(crate) src: String,
    pub(crate) header: Header,
    pub(crate) descr: Descr,
    pub(crate) shape: Vec<usize>,
    pub(crate) order: Order,
    pub(crate) mode: Mode,
    pub(crate) exclusive: bool,
    pub(crate) aligned: bool,
    pub(crate) _t: PhantomData<T>,
}

impl<T: Element> std::fmt::Debug for MmapArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapArray")
            .field("src", &self.src)
            .field("descr", &self.descr.to_numpy())
            .field("shape", &self.shape)
            .field("order", &self.order)
            .field("mode", &self.mode)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}

impl<T: Element> MmapArray<T> {
    /// Builder for opening with more control (exclusive, unaligned, populate).
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Opens an existing `.npy` file: `Mode::ReadOnly` (numpy `r`),
    /// `ReadWrite` (`r+`) or `CopyOnWrite` (`c`).
    pub fn open(path: impl AsRef<Path>, mode: Mode) -> Result<Self> {
        OpenOptions::new().mode(mode).open(path)
    }

    /// Opens `path` exclusively (see [`MmapArray::data`]).
    pub fn open_exclusive(path: impl AsRef<Path>, mode: Mode) -> Result<Self> {
        OpenOptions::new().mode(mode).exclusive(true).open(path)
    }

    /// Creates (or replaces) `path` as a zero-filled C-order array of
    /// `shape` (numpy's mode `w+`).
    pub fn create(path: impl AsRef<Path>, shape: &[usize]) -> Result<Self> {
        Self::create_with(path, shape, &CreateOptions::default())
    }

    /// [`MmapArray::create`] with an order, version, growable layout or lock.
    ///
    /// The file is built under a temporary name in the same directory and
    /// renamed over `path` once complete, so a failure leaves an existing
    /// file untouched and no new file behind.
    pub fn create_with(path: impl AsRef<Path>, shape: &[usize], opts: &CreateOptions) -> Result<Self> {
        let path = path.as_ref();
        let src = path.display().to_string();
        let header_bytes = encode_header::<T>(shape, opts, &src)?;
        let total = file_size(header_bytes.len(), shape, size_of::<T>(), &src)?;
        // Held until the rename, so a file another array holds is never replaced.
        let old = lock_existing(path, &src, opts.exclusive)?;
        let tmp = TempPath::new(path, &src)?;
        let file = tmp.create(&src)?;
        if let Some(old) = &old {
            let perms = old.metadata().map_err(|e| Error::io("stat", &src, e))?.permissions();
            file.set_permissions(perms).map_err(|e| Error::io("create", &src, e))?;
        }
        let locked = lock(&file, &src, opts.exclusive, true)?;
        file.set_len(total).map_err(|e| Error::io("set length", &src, e))?;
        file.write_all_at(&header_bytes, 0).map_err(|e| Error::io("write header", &src, e))?;
        let header = Header::parse(&header_bytes).map_err(|e| parse_error(&src, total, e))?;
        let map = MapOptions::new().mode(Mode::ReadWrite).map_file_at(&file, Some(path))?;
        let parts =
            Parts { backing: Backing::Map(map), file: Some(file), src, header, mode: Mode::ReadWrite };
        let array = Self::from_parts(parts, false, locked && opts.exclusive)?;
        tmp.rename_to(path, &array.src)?;
        Ok(array)
    }

    /// Writes an `.npy` image (header, zeroed data) into `map` (shared
    /// memory, a memfd, ...) and opens it. `map` must be writable and at
    /// least [`MmapArray::image_len`] bytes long.
    pub fn create_in(map: Mapping, name: &str, shape: &[usize], order: Order) -> Result<Self> {
        let opts = CreateOptions { order, ..CreateOptions::default() };
        let header_bytes = encode_header::<T>(shape, &opts, name)?;
        let total = header_bytes.len() as u64 + data_bytes(shape, size_of::<T>(), name)?;
        if (map.len() as u64) < total {
            return Err(Error::Truncated { src: name.to_string(), needed: total, size: map.len() as u64 });
        }
        map.write_at(0, &header_bytes)?;
        map.fill_at(header_bytes.len() as u64, (total as usize) - header_bytes.len(), 0)?;
        OpenOptions::new().open_mapping(map, name)
    }

    /// Creates the POSIX shared-memory segment `name` (it must not exist)
    /// holding a zeroed `.npy` image of `shape`. Python can use it with
    /// `np.load('/dev/shm/NAME', mmap_mode='r+')`.
    ///
    /// The segment appears with its full size before the header is
    /// written; a reader racing the creation gets a clear "not an .npy
    /// file" error and may retry.
    pub fn create_shm(name: &str, shape: &[usize], order: Order) -> Result<Self> {
        let len = Self::image_len(shape, order)?;
        let shm = Shm::create(name, len as u64)?;
        let map = shm.map(Mode::ReadWrite)?;
        Self::create_in(map, &format!("shm {}", shm.name()), shape, order)
    }

    /// Opens the `.npy` image in shared-memory segment `name`.
    pub fn open_shm(name: &str, mode: Mode) -> Result<Self> {
        let shm = Shm::open(name, mode)?;
        let src = format!("shm {}", shm.name());
        if shm.is_empty() {
            return Err(Error::NotNpy { src, reason: "the segment is empty".into() });
        }
        let map = shm.map(mode)?;
        OpenOptions::new().open_mapping(map, &src)
    }

    /// Bytes an `.npy` image of `shape` occupies: header plus data.
    pub fn image_len(shape: &[usize], order: Order) -> Result<usize> {
        let opts = CreateOptions { order, ..CreateOptions::default() };
        let header = encode_header::<T>(shape, &opts, "image")?;
        let data = data_bytes(shape, size_of::<T>(), "image")?;
        usize::try_from(header.len() as u64 + data).map_err(|_| Error::Shape {
            src: "image".into(),
            shape: shape.to_vec(),
            reason: "too large".into(),
        })
    }

    pub(crate) fn from_parts(parts: Parts, allow_unaligned: bool, exclusive: bool) -> Result<Self> {
        let Parts { backing, file, src, header, mode } = parts;
        let descr = check_descr::<T>(&header, &src)?;
        let needed = header.data_offset as u64 + data_bytes(&header.shape, size_of::<T>(), &src)?;
        let size = backing.access().size() as u64;
        if size < needed {
            return Err(Error::Truncated { src, needed, size });
        }
        let aligned = header.data_offset % align_of::<T>() == 0;
        if !aligned && !allow_unaligned {
            return Err(Error::Misaligned {
                src,
                offset: header.data_offset as u64,
                align: align_of::<T>(),
                dtype: T::DTYPE.to_string(),
            });
        }
        let order = if header.fortran_order { Order::Fortran } else { Order::C };
        let shape = header.shape.clone();
        Ok(MmapArray {
            backing,
            file,
            src,
            header,
            descr,
            shape,
            order,
            mode,
            exclusive,
            aligned,
            _t: PhantomData,
        })
    }

    crate::view::shape_accessors!("array");

    /// Element order.
    pub fn order(&self) -> Order {
        self.order
    }

    /// The mapping mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The dtype descriptor as stored (including byte order).
    pub fn descr(&self) -> Descr {
        self.descr
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Byte offset of the first element in the file.
    pub fn data_offset(&self) -> usize {
        self.header.data_offset
    }

    /// The file path or segment name, as used in errors.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// True when opened with an exclusive lock.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    pub(crate) fn mem(&self) -> &dyn Access {
        self.backing.access()
    }

    /// A copying view of the whole array.
    pub fn view(&self) -> View<'_, T> {
        View {
            mem: self.mem(),
            src: &self.src,
            base: self.header.data_offset as u64,
            shape: self.shape.clone(),
            strides: strides_for(&self.shape, self.order == Order::Fortran),
            swap: self.descr.big_endian,
            _t: PhantomData,
        }
    }

    /// The element at `index` (one entry per axis; `&[]` for 0-d).
    pub fn get(&self, index: &[usize]) -> Result<T> {
        self.view().get(index)
    }

    /// Row `i` (the first axis fixed) as a view.
    pub fn row(&self, i: usize) -> Result<View<'_, T>> {
        self.view().index_axis(0, i)
    }

    /// Views of each row (each index along the first axis), in order.
    pub fn rows(&self) -> impl Iterator<Item = View<'_, T>> {
        self.view().rows()
    }

    /// Copies row `i` into `buf` (C order within the row).
    pub fn read_row(&self, i: usize, buf: &mut [T]) -> Result<()> {
        self.row(i)?.read_into(buf)
    }

    /// Rows `range` of the first axis as a view.
    pub fn slice(&self, range: Range<usize>) -> Result<View<'_, T>> {
        self.view().slice_axis(0, range)
    }

    /// All elements in C order.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.view().to_vec()
    }

    /// Iterates the elements in C order, copying each.
    pub fn iter(&self) -> crate::view::Iter<'_, T> {
        self.view().iter()
    }

    /// Byte offset of element `k` in storage order, checked.
    fn storage_offset(&self, k: usize, n: usize) -> Result<u64> {
        let end = k.checked_add(n);
        if end.is_none_or(|e| e > self.len()) {
            return Err(Error::OutOfBounds {
                src: self.src.clone(),
                index: vec![k, n],
                shape: self.shape.clone(),
            });
        }
        Ok(self.header.data_offset as u64 + (k * size_of::<T>()) as u64)
    }

    /// Copies `buf.len()` elements starting at element `start` of the
    /// storage order (C or Fortran, as the file is laid out).
    pub fn read_storage(&self, start: usize, buf: &mut [T]) -> Result<()> {
        let offset = self.storage_offset(start, buf.len())?;
        self.mem().read_at(offset, bytemuck::cast_slice_mut(buf))?;
        if self.descr.big_endian {
            buf.iter_mut().for_each(|v| *v = v.byte_swapped());
        }
        Ok(())
    }

    fn require_writable(&self, op: &'static str) -> Result<()> {
        if self.mode == Mode::ReadOnly {
            return Err(Error::ReadOnly { op, src: self.src.clone() });
        }
        Ok(())
    }

    fn encode(&self, v: T) -> T {
        if self.descr.big_endian { v.byte_swapped() } else { v }
    }

    /// Stores `value` at `index`. Takes `&mut self` so no slice from
    /// [`MmapArray::data`] can be alive.
    pub fn set(&mut self, index: &[usize], value: T) -> Result<()> {
        self.require_writable("set")?;
        let v = self.encode(value);
        let offset = self.view().offset_of_checked(index)?;
        self.mem().write_at(offset, bytemuck::bytes_of(&v))?;
        Ok(())
    }

    /// Copies `data` into storage order starting at element `start`.
    pub fn write_storage(&mut self, start: usize, data: &[T]) -> Result<()> {
        self.require_writable("write")?;
        let offset = self.storage_offset(start, data.len())?;
        if self.descr.big_endian {
            let swapped: Vec<T> = data.iter().map(|v| v.byte_swapped()).collect();
            self.mem().write_at(offset, bytemuck::cast_slice(&swapped))?;
        } else {
            self.mem().write_at(offset, bytemuck::cast_slice(data))?;
        }
        Ok(())
    }

    /// Overwrites row `i` of a C-order array with `data`.
    pub fn write_row(&mut self, i: usize, data: &[T]) -> Result<()> {
        let row_len: usize = self.shape.iter().skip(1).product();
        if self.order != Order::C && self.ndim() > 1 {
            return Err(Error::unsupported(
                "write_row",
                &self.src,
                "rows of a Fortran-order array are strided",
            ));
        }
        if self.shape.first().is_none_or(|&n| i >= n) {
            return Err(Error::OutOfBounds {
                src: self.src.clone(),
                index: vec![i],
                shape: self.shape.clone(),
            });
        }
        if data.len() != row_len {
            return Err(Error::BufferLength {
                src: self.src.clone(),
                op: "write_row",
                expected: row_len,
                got: data.len(),
            });
        }
        self.write_storage(i * row_len, data)
    }

    /// Sets every element to `value`.
    pub fn fill(&mut self, value: T) -> Result<()> {
        const CHUNK: usize = 1 << 16;
        let n = self.len();
        let buf = vec![value; CHUNK.min(n)];
        let mut k = 0;
        while k < n {
            let m = CHUNK.min(n - k);
            self.write_storage(k, &buf[..m])?;
            k += m;
        }
        Ok(())
    }

    /// Writes dirty pages back to the file (`msync`).
    pub fn flush(&self) -> Result<()> {
        self.backing.flush()
    }

    fn zero_copy_check(&self, op: &'static str) -> Result<()> {
        if !self.aligned {
            return Err(Error::Misaligned {
                src: self.src.clone(),
                offset: self.header.data_offset as u64,
                align: align_of::<T>(),
                dtype: T::DTYPE.to_string(),
            });
        }
        if self.descr.big_endian {
            return Err(Error::unsupported(
                op,
                &self.src,
                "big-endian data needs byte-swapping; use the copying accessors",
            ));
        }
        Ok(())
    }

    fn data_ptr(&self, op: &'static str) -> Result<*mut T> {
        self.zero_copy_check(op)?;
        let bytes = self.len() * size_of::<T>();
        let ptr = self.mem().checked_ptr(op, self.header.data_offset as u64, bytes)?;
        // `aligned` only looks at the offset inside the mapping; a mapping
        // made at an unaligned file offset (`open_mapping`) can still put
        // the data at an unaligned address.
        if (ptr as usize) % align_of::<T>() != 0 {
            return Err(Error::Misaligned {
                src: self.src.clone(),
                offset: self.header.data_offset as u64,
                align: align_of::<T>(),
                dtype: T::DTYPE.to_string(),
            });
        }
        Ok(ptr.cast())
    }

    /// The elements in storage order, zero-copy, for an exclusive owner.
    ///
    /// Available when the array was opened or created with
    /// [`OpenOptions::exclusive`] (an `flock(LOCK_EX)` on the file). The
    /// lock excludes every other *mmkit* array on the file in any process
    /// (mmkit writers hold `LOCK_SH`), and any other program that takes
    /// `flock` before writing. It is advisory: a program that ignores it
    /// (`numpy.memmap`, `dd`) can still write or truncate the file, and
    /// the slice would then change under you. Only use exclusive mode on
    /// files no such program touches.
    pub fn data(&self) -> Result<&[T]> {
        self.require_exclusive("data")?;
        let ptr = self.data_ptr("data")?;
        // SAFETY: `data_ptr` checked that `len` elements lie inside the
        // mapping, that the start is aligned for `T` and the data is in
        // native byte order; any bytes are a valid `T` (`Pod`). The mapping
        // lives as long as `&self`. Writers: this process can only write
        // through `&mut self` methods, which the borrow excludes; other
        // processes are excluded by the exclusive flock, within the limits
        // documented above.
        Ok(unsafe { std::slice::from_raw_parts(ptr, self.len()) })
    }

    /// The elements in storage order, zero-copy and writable, for an
    /// exclusive owner; see [`MmapArray::data`].
    pub fn data_mut(&mut self) -> Result<&mut [T]> {
        self.require_exclusive("data_mut")?;
        self.require_writable("data_mut")?;
        let ptr = self.data_ptr("data_mut")?;
        // SAFETY: as in `data`, plus `&mut self` makes this the only
        // reference into the mapping in this process.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, self.len()) })
    }

    fn require_exclusive(&self, op: &'static str) -> Result<()> {
        if !self.exclusive {
            return Err(Error::unsupported(
                op,
                &self.src,
                "zero-copy slices need an exclusive owner (OpenOptions::exclusive) or the unsafe *_unchecked accessors",
            ));
        }
        Ok(())
    }

    /// The elements in storage order, zero-copy, without a lock.
    ///
    /// Still fails on misaligned or big-endian data.
    ///
    /// # Safety
    ///
    /// While the slice lives, nobody — another process, or this one
    /// through another mapping — may write the data or truncate the file.
    pub unsafe fn data_unchecked(&self) -> Result<&[T]> {
        let ptr = self.data_ptr("data_unchecked")?;
        // SAFETY: bounds, alignment and byte order checked by `data_ptr`;
        // the caller promises there are no other writers.
        Ok(unsafe { std::slice::from_raw_parts(ptr, self.len()) })
    }

    /// Writable [`MmapArray::data_unchecked`].
    ///
    /// # Safety
    ///
    /// As for [`MmapArray::data_unchecked`]; also nobody else may read
    /// the data while the slice lives.
    pub unsafe fn data_mut_unchecked(&mut self) -> Result<&mut [T]> {
        self.require_writable("data_mut_unchecked")?;
        let ptr = self.data_ptr("data_mut_unchecked")?;
        // SAFETY: as in `data_unchecked`; `&mut self` excludes other
        // references from this array.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, self.len()) })
    }

    /// The data's address and its length in bytes, for code outside Rust
    /// that interprets the bytes itself with [`MmapArray::descr`],
    /// [`MmapArray::shape`] and [`MmapArray::order`] (the Python bindings
    /// hand it to numpy). Unlike the zero-copy slices, it accepts
    /// big-endian and unaligned data: numpy handles both.
    ///
    /// The range is checked to lie inside the mapping, which stays mapped
    /// while `self` lives. Making the pointer is safe; using it is not:
    /// another process may write the bytes at any time, and writing through
    /// it is only allowed when [`MmapArray::mode`] is not
    /// [`Mode::ReadOnly`].
    pub fn raw_data(&self) -> Result<(*mut u8, usize)> {
        let bytes = self.len() * size_of::<T>();
        let ptr = self.mem().checked_ptr("raw_data", self.header.data_offset as u64, bytes)?;
        Ok((ptr, bytes))
    }

    /// The open file, when file-backed (for positional reads in scans).
    pub(crate) fn file(&self) -> Option<&File> {
        match &self.backing {
            Backing::Grow(g) => Some(g.file()),
            Backing::Map(_) => self.file.as_ref(),
        }
    }
}

pub(crate) fn encode_header<T: Element>(shape: &[usize], opts: &CreateOptions, src: &str) -> Result<Vec<u8>> {
    let spec = HeaderSpec {
        descr: Descr::native(T::DTYPE),
        fortran_order: opts.order == Order::Fortran,
        shape: shape.to_vec(),
        version: opts.version,
        growable: opts.growable,
    };
    spec.encode().map_err(|reason| Error::Shape { src: src.to_string(), shape: shape.to_vec(), reason })
}

/// Header plus data bytes of a new file, checked to fit a file size
/// (`off_t`) before anything is created.
fn file_size(header: usize, shape: &[usize], elem: usize, src: &str) -> Result<u64> {
    let total = (header as u64).checked_add(data_bytes(shape, elem, src)?);
    total.filter(|&t| i64::try_from(t).is_ok()).ok_or_else(|| Error::Shape {
        src: src.to_string(),
        shape: shape.to_vec(),
        reason: "the file would be larger than a file can be".into(),
    })
}

/// Opens and locks the file `create_with` is about to replace, as an
/// open for writing would; `None` when there is none. Anything but a
/// regular file is refused rather than replaced.
fn lock_existing(path: &Path, src: &str, exclusive: bool) -> Result<Option<File>> {
    let file = match open_regular(path, src, false) {
        Ok((file, _)) => file,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    lock(&file, src, exclusive, true)?;
    Ok(Some(file))
}

/// A temporary file next to the one being created; removed on drop
/// unless renamed into place.
struct TempPath {
    path: PathBuf,
    done: bool,
}

impl TempPath {
    /// `.NAME.PID-N.tmp` beside `path`, so the rename stays in one
    /// filesystem and a leftover from a crash says what it was.
    fn new(path: &Path, src: &str) -> Result<TempPath> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name =
            path.file_name().ok_or_else(|| Error::unsupported("create", src, "the path names no file"))?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = format!(".{}.{}-{n}.tmp", name.to_string_lossy(), std::process::id());
        Ok(TempPath { path: path.with_file_name(tmp), done: false })
    }

    fn create(&self, src: &str) -> Result<File> {
        FsOpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&self.path)
            .map_err(|e| Error::io("create", src, e))
    }

    fn rename_to(mut self, path: &Path, src: &str) -> Result<()> {
        std::fs::rename(&self.path, path).map_err(|e| Error::io("rename into place", src, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: the error that got us here is the one to report.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Opens an existing `path` and returns it with its size; anything but a
/// regular file (a FIFO, a directory, a device) is an error.
fn open_regular(path: &Path, src: &str, write: bool) -> Result<(File, u64)> {
    // O_NONBLOCK: a plain open(2) of a FIFO waits for a writer, maybe
    // forever; with it the open returns and the check below refuses it.
    let file = FsOpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| Error::io("open", src, e))?;
    let meta = file.metadata().map_err(|e| Error::io("stat", src, e))?;
    if meta.is_dir() {
        // The error open(2) gives for writing one (Python: IsADirectoryError).
        return Err(Error::io("open", src, std::io::Error::from(std::io::ErrorKind::IsADirectory)));
    }
    if !meta.is_file() {
        return Err(Error::unsupported("open", src, "not a regular file"));
    }
    // The descriptor outlives the open (reads, locks): back to blocking.
    let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| Error::io("open", src, e))?;
    rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK).map_err(|e| Error::io("open", src, e))?;
    Ok((file, meta.len()))
}

/// Reads an `.npy` file's header without mapping it or choosing a type.
///
/// Errors on a missing, empty or non-`.npy` file or a malformed header;
/// an unsupported dtype is not an error here (see [`Header::parse_descr`]).
pub fn read_header(path: impl AsRef<Path>) -> Result<Header> {
    let path = path.as_ref();
    let src = path.display().to_string();
    let (file, size) = open_regular(path, &src, false)?;
    if size == 0 {
        return Err(Error::NotNpy { src, reason: "the file is empty".into() });
    }
    read_header_from_file(&file, size, &src)
}

impl DescrError {
    /// Converts to this crate's error for `src`.
    pub fn into_error(self, src: &str, descr: &str) -> Error {
        Error::UnsupportedDtype { src: src.to_string(), descr: descr.to_string(), reason: self.reason() }
    }
}
