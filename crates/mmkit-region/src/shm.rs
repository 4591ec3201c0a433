//! POSIX named shared memory, interoperable with `shm_open(3)` and Python's
//! `multiprocessing.shared_memory`.
//!
//! A segment named `name` (or `/name`; one leading slash is dropped, as
//! `shm_open` and Python do) is the file `/dev/shm/name` on Linux. Segments
//! are created with mode `0600` unless asked otherwise, with `O_EXCL`, and
//! never through a symlink (`O_NOFOLLOW`).
//!
//! Creation is atomic: the segment is built under a temporary hidden name,
//! sized, and then renamed onto its final name with
//! `renameat2(RENAME_NOREPLACE)`. Nobody can therefore open a segment of the
//! wrong (zero) size, and [`Shm::open_or_create`] is race-free: exactly one
//! of several racing processes creates, the others open the full-size
//! segment. A process killed in the middle of creation can leave a hidden
//! `.mmkit-tmp-*` file in `/dev/shm`; [`Shm::list`] skips those.
//!
//! Segments are sized with `ftruncate`, like Python and most `shm_open`
//! users do, so memory is committed only when touched. If `/dev/shm` fills
//! up, a first write to a page raises SIGBUS, which the default
//! [`sigbus`](crate::sigbus) guard turns into [`Error::Poisoned`].
//!
//! ```
//! use mmkit_region::{Access, Mode, shm::Shm};
//! let name = format!("mmkit-doc-{}", std::process::id());
//! let seg = Shm::create(&name, 4096)?;
//! seg.map(Mode::ReadWrite)?.write_at(0, b"hello")?;
//!
//! let other = Shm::open(&name, Mode::ReadOnly)?;
//! let mut buf = [0u8; 5];
//! other.map(Mode::ReadOnly)?.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! Shm::unlink(&name)?;
//! # Ok::<(), mmkit_region::Error>(())
//! ```

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{Mode as FsMode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::mapping::{MapOptions, Mapping, Mode};

/// Where Linux keeps POSIX shared memory.
pub const SHM_DIR: &str = "/dev/shm";

/// Longest name accepted (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

const TMP_PREFIX: &str = ".mmkit-tmp-";

/// An open POSIX shared-memory segment.
#[derive(Debug)]
pub struct Shm {
    fd: OwnedFd,
    name: String,
    path: PathBuf,
    len: u64,
}

/// What [`Shm::list`] and [`Shm::info`] report about a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmInfo {
    /// Name without the leading slash.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner's user id.
    pub uid: u32,
    /// Last modification time.
    pub modified: SystemTime,
}

/// Checks a segment name and returns it without its leading slash.
///
/// Accepts what `shm_open` and Python accept portably: `name` or `/name`,
/// with no further slash, not `.` or `..`, no NUL byte, at most
/// [`NAME_MAX`] bytes.
pub fn normalize_name<'a>(op: &'static str, name: &'a str) -> Result<&'a str> {
    let bad = |reason| Err(Error::InvalidName { op, name: name.to_string(), reason });
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return bad("empty name");
    }
    if bare.contains('/') {
        return bad("a name may not contain '/' after the leading one");
    }
    if bare == "." || bare == ".." {
        return bad("'.' and '..' are not names");
    }
    if bare.contains('\0') {
        return bad("a name may not contain a NUL byte");
    }
    if bare.len() > NAME_MAX {
        return bad("longer than 255 bytes");
    }
    Ok(bare)
}

fn segment_path(bare: &str) -> PathBuf {
    Path::new(SHM_DIR).join(bare)
}

fn shm_error(op: &'static str, path: &Path, e: Errno) -> Error {
    let source = io::Error::from(e);
    let source = match e {
        Errno::NOENT => io::Error::new(io::ErrorKind::NotFound, "no such shared-memory segment"),
        Errno::EXIST => io::Error::new(io::ErrorKind::AlreadyExists, "shared-memory segment already exists"),
        Errno::LOOP => io::Error::new(io::ErrorKind::InvalidInput, "refusing to follow a symlink"),
        _ => source,
    };
    Error::Io { op, path: Some(path.to_path_buf()), source }
}

impl Shm {
    /// Creates a new segment of `len` bytes with mode `0600`; fails if
    /// the name exists, and with [`Error::ZeroLength`] if `len` is 0 (an
    /// empty segment cannot be mapped; Python refuses it too).
    pub fn create(name: &str, len: u64) -> Result<Shm> {
        Self::create_with_mode(name, len, 0o600)
    }

    /// Creates a new segment with the given permission bits (applied
    /// exactly, not masked by the umask). `len` must not be 0.
    pub fn create_with_mode(name: &str, len: u64, mode: u32) -> Result<Shm> {
        let bare = normalize_name("create shm", name)?;
        let path = segment_path(bare);
        if len == 0 {
            return Err(Error::ZeroLength { op: "create shm", path: Some(path) });
        }
        let (fd, tmp) = Self::create_temp(&path, len, mode)?;
        let published =
            rustix::fs::renameat_with(rustix::fs::CWD, &tmp, rustix::fs::CWD, &path, RenameFlags::NOREPLACE);
        if let Err(e) = published {
            let _ = rustix::fs::unlink(&tmp);
            return Err(shm_error("create shm", &path, e));
        }
        Ok(Shm { fd, name: bare.to_string(), path, len })
    }

    /// Builds a full-size segment under a hidden temporary name.
    fn create_temp(path: &Path, len: u64, mode: u32) -> Result<(OwnedFd, PathBuf)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let tmp = Path::new(SHM_DIR).join(format!(
            "{TMP_PREFIX}{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(&tmp, flags, FsMode::from_raw_mode(0o600)).map_err(|e| match e {
            Errno::NOENT => Error::Invalid {
                op: "create shm",
                path: Some(path.to_path_buf()),
                reason: format!("{SHM_DIR} does not exist (is a tmpfs mounted there?)"),
            },
            _ => shm_error("create shm", path, e),
        })?;
        let sized = rustix::fs::fchmod(&fd, FsMode::from_raw_mode(mode & 0o7777))
            .map_err(|e| shm_error("create shm (fchmod)", path, e))
            .and_then(|()| {
                rustix::fs::ftruncate(&fd, len).map_err(|e| shm_error("create shm (ftruncate)", path, e))
            });
        if let Err(e) = sized {
            let _ = rustix::fs::unlink(&tmp);
            return Err(e);
        }
        Ok((fd, tmp))
    }

    /// Opens an existing segment. [`Mode::ReadWrite`] opens it for
    /// writing; the other modes read-only ([`Mode::CopyOnWrite`] mappings
    /// need only read access). A missing name gives an error whose
    /// [`Error::io_kind`] is `NotFound`. An empty segment (made by another
    /// program) opens; mapping it gives [`Error::ZeroLength`].
    pub fn open(name: &str, mode: Mode) -> Result<Shm> {
        let bare = normalize_name("open shm", name)?;
        let path = segment_path(bare);
        let access = if mode == Mode::ReadWrite { OFlags::RDWR } else { OFlags::RDONLY };
        // O_NONBLOCK: /dev/shm is world-writable, and a FIFO planted under
        // the name would otherwise block a read-only open forever. It has
        // no effect on the regular files segments are.
        let flags = access | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd =
            rustix::fs::open(&path, flags, FsMode::empty()).map_err(|e| shm_error("open shm", &path, e))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| shm_error("open shm (fstat)", &path, e))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(Error::Invalid {
                op: "open shm",
                path: Some(path),
                reason: "not a regular file".into(),
            });
        }
        Ok(Shm { fd, name: bare.to_string(), path, len: stat.st_size as u64 })
    }

    /// Opens the segment if it exists, otherwise creates it with `len`
    /// bytes and mode `0600`. Returns the segment and whether this call
    /// created it.
    ///
    /// Race-free: when several processes call this at once, exactly one
    /// creates, and every caller gets the same, fully sized segment. An
    /// existing segment is returned at whatever size it has; check
    /// [`Shm::len`]. `len` 0 is an error only when the segment is missing.
    pub fn open_or_create(name: &str, len: u64) -> Result<(Shm, bool)> {
        normalize_name("open_or_create shm", name)?;
        // Each failed round means someone unlinked or created the name
        // between our two attempts; that cannot go on for long.
        let mut last = None;
        for _ in 0..64 {
            match Self::open(name, Mode::ReadWrite) {
                Ok(shm) => return Ok((shm, false)),
                Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
            match Self::create(name, len) {
                Ok(shm) => return Ok((shm, true)),
                Err(e) if e.io_kind() == Some(io::ErrorKind::AlreadyExists) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Invalid {
            op: "open_or_create shm",
            path: None,
            reason: "the name kept appearing and disappearing".into(),
        }))
    }

    /// Removes the name; existing mappings and descriptors stay valid.
    pub fn unlink(name: &str) -> Result<()> {
        let bare = normalize_name("unlink shm", name)?;
        let path = segment_path(bare);
        rustix::fs::unlink(&path).map_err(|e| shm_error("unlink shm", &path, e))
    }

    /// Facts about one segment, without opening it.
    pub fn info(name: &str) -> Result<ShmInfo> {
        let bare = normalize_name("inspect shm", name)?;
        let path = segment_path(bare);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| {
            let errno = e.raw_os_error().map(Errno::from_raw_os_error).unwrap_or(Errno::IO);
            shm_error("inspect shm", &path, errno)
        })?;
        if !meta.file_type().is_file() {
            return Err(Error::Invalid {
                op: "inspect shm",
                path: Some(path),
                reason: "not a regular file".into(),
            });
        }
        Ok(info_from(bare.to_string(), &meta))
    }

    /// Every segment in `/dev/shm` (regular files only), sorted by name.
    pub fn list() -> Result<Vec<ShmInfo>> {
        let dir =
            std::fs::read_dir(SHM_DIR).map_err(|e| Error::io("list shm", Some(Path::new(SHM_DIR)), e))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| Error::io("list shm", Some(Path::new(SHM_DIR)), e))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            // Entries may vanish while we walk; skip those.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.file_type().is_file() {
                out.push(info_from(name, &meta));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The name, without the leading slash.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backing file, `/dev/shm/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes when the segment was opened or created.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the segment has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maps the whole segment. [`Mode::ReadWrite`] needs a segment opened
    /// read-write ([`Error::ReadOnly`] otherwise, from the descriptor's
    /// access mode); an empty segment gives [`Error::ZeroLength`].
    pub fn map(&self, mode: Mode) -> Result<Mapping> {
        MapOptions::new().mode(mode).map_file_at(&self.fd, Some(&self.path))
    }

    /// Gives up the descriptor.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Shm {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn info_from(name: String, meta: &std::fs::Metadata) -> ShmInfo {
    let modified = meta.modified().unwrap_or_else(|_| {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.mtime()).unwrap_or_default())
    });
    ShmInfo { name, size: meta.size(), mode: meta.mode() & 0o7777, uid: meta.uid(), modified }
}
