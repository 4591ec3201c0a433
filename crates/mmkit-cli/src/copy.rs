//! `mmkit cp`'s engine: copy a file's bytes by one of several methods, and
//! an atomic whole-file copy (temporary file in the destination directory,
//! then rename) built on it. The benchmark calls the same functions.
//!
//! Measured on this machine (docs/benchmarks-region.md), the default
//! `copy_file_range` was never slower than coreutils `cp` (which uses the
//! same call); a pure mmap copy ranged from 0.7× to 1.6× of it from run to
//! run, and a read/write loop was far behind. The kernel copies page-cache
//! pages itself without a round trip through user memory, and on
//! filesystems that support it (XFS, Btrfs, NFS) it clones extents instead.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mmkit_region::{Access, MapOptions, Mode};
use rustix::fs::SeekFrom;

use crate::error::{CliError, CliResult};

/// How the bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Method {
    /// `copy_file_range(2)`: in-kernel copy (or extent clone); falls back
    /// to read/write when the kernel refuses it for these files.
    #[default]
    CopyFileRange,
    /// `pread`/`pwrite` through a 1 MiB buffer.
    ReadWrite,
    /// Map source and destination and copy memory to memory.
    Mmap,
}

/// The buffer of [`Method::ReadWrite`].
pub const RW_BUFFER: usize = 1 << 20;

/// Bytes per step between progress reports, and the mmap window size.
const STEP: u64 = 64 << 20;

/// Copies `len` bytes at `offset` from `src` to the same offset of `dst`
/// by `method`, calling `progress(bytes)` after each step. `dst` must be
/// open read-write for [`Method::Mmap`] and already at least
/// `offset + len` bytes long for it.
pub fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    offset: u64,
    len: u64,
    method: Method,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let span = Span { src, dst, offset, end: range_end(offset, len)? };
    match method {
        Method::CopyFileRange => copy_file_range(&span, progress),
        Method::ReadWrite => read_write(src, dst, offset, len, &mut vec![0u8; RW_BUFFER], progress),
        Method::Mmap => mmap_copy(&span, progress),
    }
}

/// The byte range `offset..end` to copy between two descriptors.
struct Span<'a> {
    src: BorrowedFd<'a>,
    dst: BorrowedFd<'a>,
    offset: u64,
    end: u64,
}

/// `offset + len`, or an error instead of a wrap-around when it overflows.
fn range_end(offset: u64, len: u64) -> io::Result<u64> {
    offset
        .checked_add(len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("range {offset}+{len} overflows")))
}

fn copy_file_range(span: &Span<'_>, progress: &mut dyn FnMut(u64)) -> io::Result<()> {
    let &Span { src, dst, offset, end } = span;
    let (mut off_in, mut off_out) = (offset, offset);
    while off_in < end {
        let want = (end - off_in).min(STEP) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source shrank during the copy"));
            }
            Ok(n) => progress(n as u64),
            Err(rustix::io::Errno::INTR) => {}
            // Cross-filesystem, special files, old kernels: do it by hand.
            Err(e) if off_in == offset && is_unsupported(e) => {
                return read_write(src, dst, offset, end - offset, &mut vec![0u8; RW_BUFFER], progress);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn is_unsupported(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    [Errno::XDEV, Errno::NOSYS, Errno::INVAL, Errno::OPNOTSUPP, Errno::PERM].contains(&e)
}

/// The read/write loop (also the benchmark's "read/write" peer).
pub fn read_write(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    offset: u64,
    len: u64,
    buf: &mut [u8],
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let end = range_end(offset, len)?;
    let mut pos = offset;
    while pos < end {
        let want = (end - pos).min(buf.len() as u64) as usize;
        let n = match rustix::io::pread(src, &mut buf[..want], pos) {
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source shrank during the copy"));
            }
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        write_all_at(dst, &buf[..n], pos)?;
        pos += n as u64;
        progress(n as u64);
    }
    Ok(())
}

fn write_all_at(dst: BorrowedFd<'_>, mut data: &[u8], mut pos: u64) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::pwrite(dst, data, pos) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
            Ok(n) => {
                data = &data[n..];
                pos += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The pure mmap copy: both files mapped, memory copied window by window.
/// The destination blocks are reserved with `fallocate` first, so a full
/// disk is an error here rather than a SIGBUS while copying.
fn mmap_copy(span: &Span<'_>, progress: &mut dyn FnMut(u64)) -> io::Result<()> {
    let &Span { src, dst, offset, end } = span;
    rustix::fs::fallocate(dst, rustix::fs::FallocateFlags::KEEP_SIZE, offset, end - offset)
        .or_else(|e| if e == rustix::io::Errno::OPNOTSUPP { Ok(()) } else { Err(e) })?;
    let mut pos = offset;
    while pos < end {
        let n = (end - pos).min(STEP) as usize;
        let from = MapOptions::new().offset(pos).len(n).map_file_at(src, None).map_err(to_io)?;
        let to = MapOptions::new()
            .offset(pos)
            .len(n)
            .mode(Mode::ReadWrite)
            .map_file_at(dst, None)
            .map_err(to_io)?;
        let _ = from.advise(mmkit_region::Advice::Sequential);
        // SAFETY: `from` and `to` are two distinct live mappings of `n`
        // bytes each, so the virtual ranges cannot overlap, and both stay
        // alive across the copy. Only raw pointers touch them (no slice is
        // formed), so another process writing either file can only make the
        // copied bytes stale. A concurrent truncation of either file is
        // caught by the SIGBUS guard (on by default for file mappings) and
        // reported by `check_poison` below.
        unsafe { std::ptr::copy_nonoverlapping(from.base().cast_const(), to.base(), n) };
        from.check_poison("mmap copy").map_err(to_io)?;
        to.check_poison("mmap copy").map_err(to_io)?;
        pos += n as u64;
        progress(n as u64);
    }
    Ok(())
}

fn to_io(e: mmkit_region::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// The data extents of `fd` (`SEEK_DATA`/`SEEK_HOLE`), so holes stay holes;
/// one extent covering everything when the file is not sparse or the
/// filesystem cannot tell.
pub fn data_extents(fd: BorrowedFd<'_>, size: u64, blocks_512: u64) -> Vec<(u64, u64)> {
    if blocks_512.saturating_mul(512) >= size {
        return vec![(0, size)];
    }
    let whole = vec![(0, size)];
    let mut extents = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
            Ok(start) if start < size => start,
            // No data after `pos`: the rest is a hole.
            Ok(_) | Err(rustix::io::Errno::NXIO) => break,
            // The filesystem cannot tell: copy everything.
            Err(_) => return whole,
        };
        let stop = match rustix::fs::seek(fd, SeekFrom::Hole(start)) {
            Ok(stop) if stop > start => stop.min(size),
            _ => return whole,
        };
        extents.push((start, stop - start));
        pos = stop;
    }
    extents
}

/// What a whole-file copy did.
#[derive(Debug, Clone)]
pub struct CopyReport {
    /// The destination file written (DST, or DST/name when DST is a
    /// directory).
    pub dst: PathBuf,
    /// Bytes in the file.
    pub bytes: u64,
    /// Bytes actually moved (less than `bytes` for a sparse source).
    pub copied: u64,
}

/// Options of [`copy_file`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// How to move the bytes.
    pub method: Method,
    /// `fsync` the new file before the rename and the directory after, so
    /// that after a crash DST is either the old file or the whole new one.
    pub fsync: bool,
}

/// Copies `src` to `dst` atomically: the data goes to a temporary file
/// created with `O_EXCL` next to `dst`, gets `src`'s permission bits
/// (without set-user-ID and set-group-ID, as `cp` does), and
/// is renamed over `dst` only when complete; on any error the temporary
/// file is removed, so `dst` is never left partial. When `dst` is a
/// directory the copy goes to `dst/<file name of src>`, as `cp` does.
pub fn copy_file(
    src: &Path,
    dst: &Path,
    opts: CopyOptions,
    start: &mut dyn FnMut(u64),
    progress: &mut dyn FnMut(u64),
) -> CliResult<CopyReport> {
    let src_file = open_source(src)?;
    let meta = src_file.metadata().map_err(|e| CliError::io("stat", src, e))?;
    let dst = resolve_destination(src, dst)?;
    if is_same_file(&dst, &meta) {
        return Err(CliError::Usage(format!(
            "cp: {} and {} are the same file",
            src.display(),
            dst.display()
        )));
    }
    let size = meta.len();
    start(size);
    let temp = TempFile::create(&dst)?;
    let extents = data_extents(src_file.as_fd(), size, meta.blocks());
    if opts.method == Method::Mmap {
        // The mapped windows must lie inside the file.
        set_len(&temp, size)?;
    }
    let mut copied = 0;
    for &(offset, len) in &extents {
        copy_range(src_file.as_fd(), temp.file.as_fd(), offset, len, opts.method, progress)
            .map_err(|e| CliError::io("copy to", &temp.path, e))?;
        copied += len;
    }
    set_len(&temp, size)?;
    // As coreutils cp without --preserve: the new file belongs to whoever
    // copies it, so set-user-ID and set-group-ID are not carried over (root
    // copying a user's setuid file must not make a setuid-root one).
    let mode = meta.permissions().mode() & 0o1777;
    temp.file
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| CliError::io("chmod", &temp.path, e))?;
    if opts.fsync {
        temp.file.sync_all().map_err(|e| CliError::io("fsync", &temp.path, e))?;
    }
    temp.commit(&dst, opts.fsync)?;
    Ok(CopyReport { dst, bytes: size, copied })
}

fn is_same_file(dst: &Path, src: &std::fs::Metadata) -> bool {
    std::fs::metadata(dst).is_ok_and(|d| d.dev() == src.dev() && d.ino() == src.ino())
}

fn set_len(temp: &TempFile, size: u64) -> CliResult<()> {
    temp.file.set_len(size).map_err(|e| CliError::io("truncate", &temp.path, e))
}

fn open_source(src: &Path) -> CliResult<File> {
    let file = File::open(src).map_err(|e| CliError::io("cp: open", src, e))?;
    let meta = file.metadata().map_err(|e| CliError::io("cp: stat", src, e))?;
    if meta.is_dir() {
        return Err(CliError::Usage(format!("cp: {} is a directory (not copied)", src.display())));
    }
    if !meta.is_file() {
        return Err(CliError::Usage(format!("cp: {} is not a regular file", src.display())));
    }
    Ok(file)
}

fn resolve_destination(src: &Path, dst: &Path) -> CliResult<PathBuf> {
    if dst.is_dir() {
        let name = src
            .file_name()
            .ok_or_else(|| CliError::Usage(format!("cp: {} has no file name", src.display())))?;
        return Ok(dst.join(name));
    }
    Ok(dst.to_path_buf())
}

/// A temporary file next to the destination, removed on drop unless
/// committed (and by the signal handler of [`remove_temp_file_on_signal`]
/// if the process is interrupted meanwhile).
struct TempFile {
    file: File,
    path: PathBuf,
    committed: bool,
    /// Whether `path` is the one the signal handler would remove.
    watched: bool,
}

impl TempFile {
    fn create(dst: &Path) -> CliResult<TempFile> {
        let dir = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut attempt = 0u32;
        loop {
            let path = dir.join(format!(".{name}.mmkit-cp.{}.{attempt}", std::process::id()));
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path);
            match opened {
                Ok(file) => {
                    let watched = on_signal::watch(&path);
                    return Ok(TempFile { file, path, committed: false, watched });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(CliError::io("cp: create temporary file in", dir, e)),
            }
        }
    }

    fn commit(mut self, dst: &Path, sync_dir: bool) -> CliResult<()> {
        std::fs::rename(&self.path, dst).map_err(|e| CliError::io("cp: rename into place", dst, e))?;
        self.committed = true;
        // Only after the rename: a signal in between makes the handler
        // unlink a name that no longer exists, which is harmless.
        self.unwatch();
        if sync_dir {
            let dir = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| CliError::io("fsync directory", dir, e))?;
        }
        Ok(())
    }
}

impl TempFile {
    fn unwatch(&mut self) {
        if std::mem::take(&mut self.watched) {
            on_signal::unwatch();
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
        self.unwatch();
    }
}

/// Makes an interrupted copy leave nothing behind: from now on, SIGINT,
/// SIGTERM and SIGHUP remove the temporary file of the copy in progress
/// (one at a time: a second concurrent copy is not covered) and then kill
/// the process with the same signal, as if no handler were installed.
/// Signals the process ignores stay ignored. For a program that copies
/// and exits, such as `mmkit cp`; a program with its own handlers for
/// these signals should not call it.
pub fn remove_temp_file_on_signal() -> io::Result<()> {
    on_signal::install()
}

/// The signal handler of [`remove_temp_file_on_signal`] and the one path
/// it removes.
mod on_signal {
    use std::ffi::{CStr, CString};
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::ptr::null_mut;
    use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

    /// Whether the handlers are installed (then temporary files are watched).
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    /// The temporary file to remove, from `CString::into_raw`, or null.
    /// Whoever swaps a pointer out of it owns it (frees or leaks it), so
    /// the handler and the copying thread never both use one.
    static PENDING: AtomicPtr<libc::c_char> = AtomicPtr::new(null_mut());

    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

    pub(super) fn install() -> io::Result<()> {
        if INSTALLED.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        for sig in SIGNALS {
            // SAFETY: `sigaction` with a null new action only reads the
            // current one into `old`, a valid zeroed struct we own.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
                return Err(io::Error::last_os_error());
            }
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            // SAFETY: a zeroed sigaction is a valid value (empty mask, no
            // flags); the handler only makes async-signal-safe calls.
            let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
            new.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
            // Back to the default on entry, so raising the signal again
            // ends the process the usual way.
            new.sa_flags = libc::SA_RESETHAND;
            // SAFETY: `new` is fully initialised and `handler` has the
            // signature of an `sa_handler` (no SA_SIGINFO).
            if unsafe { libc::sigaction(sig, &new, null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    extern "C" fn handler(sig: libc::c_int) {
        let path = PENDING.swap(null_mut(), Ordering::SeqCst);
        if !path.is_null() {
            // SAFETY: a non-null `PENDING` came from `CString::into_raw` in
            // `watch`, and the swap made this handler its only owner; it is
            // leaked, as the process ends below. unlink is
            // async-signal-safe and a `&CStr` path needs no allocation.
            let _ = rustix::fs::unlink(unsafe { CStr::from_ptr(path) });
        }
        // SAFETY: raise is async-signal-safe; SA_RESETHAND restored the
        // default action, so this ends the process with `sig`.
        unsafe { libc::raise(sig) };
    }

    /// Makes `path` the file the handler removes; false when the handlers
    /// are not installed or another copy's file is already watched.
    pub(super) fn watch(path: &Path) -> bool {
        if !INSTALLED.load(Ordering::SeqCst) {
            return false;
        }
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return false };
        let raw = c.into_raw();
        match PENDING.compare_exchange(null_mut(), raw, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => true,
            Err(_) => {
                // SAFETY: `raw` was never published, so it is still ours.
                drop(unsafe { CString::from_raw(raw) });
                false
            }
        }
    }

    /// Stops watching the file `watch` registered.
    pub(super) fn unwatch() {
        let path = PENDING.swap(null_mut(), Ordering::SeqCst);
        if !path.is_null() {
            // SAFETY: from `CString::into_raw` in `watch`; the swap made us
            // its only owner (a handler that took it first left null here).
            drop(unsafe { CString::from_raw(path) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn every_method_copies_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data = pattern(3 * 1024 * 1024 + 123);
        std::fs::write(&src, &data).unwrap();
        for method in [Method::CopyFileRange, Method::ReadWrite, Method::Mmap] {
            let dst = dir.path().join(format!("dst-{method:?}"));
            let mut seen = 0;
            let report =
                copy_file(&src, &dst, CopyOptions { method, fsync: true }, &mut |_| {}, &mut |n| seen += n)
                    .unwrap();
            assert_eq!(report.bytes, data.len() as u64);
            assert_eq!(seen, data.len() as u64, "{method:?}");
            assert_eq!(std::fs::read(&dst).unwrap(), data, "{method:?}");
        }
    }

    #[test]
    fn sparse_source_stays_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("sparse");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        rustix::io::pwrite(&f, b"head", 0).unwrap();
        rustix::io::pwrite(&f, b"middle", 32 << 20).unwrap();
        f.sync_all().unwrap();
        let extents = data_extents(f.as_fd(), 64 << 20, f.metadata().unwrap().blocks());
        assert!(extents.len() >= 2, "{extents:?}");
        for method in [Method::CopyFileRange, Method::ReadWrite, Method::Mmap] {
            let dst = dir.path().join(format!("copy-{method:?}"));
            let report =
                copy_file(&src, &dst, CopyOptions { method, fsync: false }, &mut |_| {}, &mut |_| {})
                    .unwrap();
            assert!(report.copied < 1 << 20, "{method:?} copied {}", report.copied);
            let meta = std::fs::metadata(&dst).unwrap();
            assert_eq!(meta.len(), 64 << 20);
            assert!(meta.blocks() * 512 < 4 << 20, "{method:?}: {} blocks", meta.blocks());
            assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());
        }
    }

    #[test]
    fn permission_bits_are_kept_but_not_setuid_or_setgid() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tool");
        std::fs::write(&src, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o6751)).unwrap();
        let dst = dir.path().join("copy");
        copy_file(&src, &dst, CopyOptions::default(), &mut |_| {}, &mut |_| {}).unwrap();
        assert_eq!(std::fs::metadata(&dst).unwrap().permissions().mode() & 0o7777, 0o751);
    }

    /// Names the child role of `interrupted_copy_leaves_no_temporary_file`.
    const SIGNAL_CHILD_DIR: &str = "MMKIT_CP_SIGNAL_CHILD_DIR";

    /// Child role (run by the test below, ignored otherwise): copies
    /// `src` to `dst` in the given directory with the signal handlers
    /// installed and, at the first progress report, prints the temporary
    /// file's name and sends itself SIGINT.
    #[test]
    #[ignore = "child role of interrupted_copy_leaves_no_temporary_file"]
    fn signal_child() {
        let dir = PathBuf::from(std::env::var_os(SIGNAL_CHILD_DIR).expect("run by its parent test"));
        // A shell may have started the tests with SIGINT ignored (a
        // background job), and ignored signals are left alone.
        // SAFETY: resetting a disposition to the default has no
        // memory-safety preconditions.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
        remove_temp_file_on_signal().unwrap();
        let mut progress = |_| {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                if name.contains(".mmkit-cp.") {
                    println!("TEMP {name}");
                }
            }
            std::io::Write::flush(&mut std::io::stdout()).unwrap();
            // SAFETY: raise has no memory-safety preconditions.
            unsafe { libc::raise(libc::SIGINT) };
        };
        let (src, dst) = (dir.join("src"), dir.join("dst"));
        copy_file(&src, &dst, CopyOptions::default(), &mut |_| {}, &mut progress).unwrap();
        panic!("still alive after SIGINT");
    }

    /// Ctrl-C in the middle of a copy (a real process, a real SIGINT)
    /// removes the temporary file, creates no DST, and the process still
    /// dies of SIGINT.
    #[test]
    fn interrupted_copy_leaves_no_temporary_file() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("src"), pattern(3 << 20)).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "copy::tests::signal_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(SIGNAL_CHILD_DIR, dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let context = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.signal(), Some(libc::SIGINT), "{:?}: {context}", out.status);
        assert!(stdout.contains("TEMP .dst.mmkit-cp."), "no temporary file seen: {context}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["src"], "left behind: {left:?}");
    }

    /// A range whose end does not fit in a u64 is refused by every method
    /// before any byte moves, instead of wrapping around.
    #[test]
    fn overflowing_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = File::create(dir.path().join("src")).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        for method in [Method::CopyFileRange, Method::ReadWrite, Method::Mmap] {
            let err = copy_range(src.as_fd(), dst.as_fd(), u64::MAX - 1, 2, method, &mut |_| {}).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{method:?}: {err}");
        }
    }
}
