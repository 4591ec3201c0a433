//! One mirror process per cursor (mirror-out) or per source (mirror-in):
//! an advisory `flock` on a small file in the queue directory. The kernel
//! drops it when its holder dies, SIGKILL included, so a crashed mirror
//! never blocks its successor.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags};

use crate::error::{Error, Result};

/// How long a taken lock is waited for before it counts as held.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// A held mirror lock; released on drop (or death).
#[derive(Debug)]
pub struct MirrorLock {
    _file: File,
    path: PathBuf,
}

/// 64-bit FNV-1a: a stable file-name-safe key for any cursor or source name.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Opens `path` for reading and writing, created with mode 0600 if
/// missing; never through a symbolic link.
pub(crate) fn open_private(path: &Path) -> std::io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::open(path, flags, Mode::from_raw_mode(0o600))?))
}

impl MirrorLock {
    /// Locks `DIR/<role>-<hash of key>.lock`, and writes `about` (who
    /// holds it) into the file for whoever finds it locked.
    pub fn acquire(dir: &Path, role: &str, key: &[u8], about: &str) -> Result<MirrorLock> {
        let path = dir.join(format!("{role}-{:016x}.lock", fnv64(key)));
        let io = |op, e: std::io::Error| Error::Io { op, path: path.clone(), source: e };
        let mut file = open_private(&path).map_err(|e| io("open mirror lock", e))?;
        // A lock can outlive its holder by a moment: a process that is
        // exiting, or a child forked by another thread that has not yet
        // exec'd (and closed its copy of the descriptor). So look again for
        // a little while before calling it taken.
        let deadline = std::time::Instant::now() + BUSY_WAIT;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    return Err(Error::Busy { path, holder: holder.trim().to_string() });
                }
                Err(e) => return Err(io("lock mirror lock", e.into())),
            }
        }
        let note = format!("{about}, pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()))
            .map_err(|e| io("write mirror lock", e))?;
        Ok(MirrorLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let a = MirrorLock::acquire(dir.path(), "mirror-out", b"c", "mirror-out cursor c").unwrap();
        match MirrorLock::acquire(dir.path(), "mirror-out", b"c", "other") {
            Err(Error::Busy { holder, .. }) => assert!(holder.contains("cursor c"), "{holder}"),
            other => panic!("expected Busy, got {other:?}"),
        }
        // Another key is another lock.
        let _b = MirrorLock::acquire(dir.path(), "mirror-out", b"d", "d").unwrap();
        drop(a);
        MirrorLock::acquire(dir.path(), "mirror-out", b"c", "again").unwrap();
    }
}
