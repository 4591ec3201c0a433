//! Mirror-in's resume marker: a 40-byte file per source beside its lock
//! (`DIR/mirror-in-<hash>.pos`), holding which stream the mirror reads
//! (its creation time), the last sequence appended or skipped, and the
//! queue index of the last record appended.
//!
//! The queue's records stay the exact account of what was appended (a
//! record and its sequence are one append); the marker is written after
//! each appended batch and covers what records cannot tell:
//! - **retention** may delete every record of the mirror in a queue that
//!   other producers also write to; the marker still says where it was;
//! - **a stream deleted and created again** starts its sequences over, so
//!   a sequence alone would resume in the middle of the new stream; the
//!   creation time tells the two streams apart.
//!
//! The marker's sequence is used only when no record of the mirror is
//! left and the index it names lies below the queue's first index, that
//! is, retention deleted the records. A kill between an append and the
//! marker's write leaves it a batch behind the records, which decide then;
//! a machine crash may keep the marker while losing the queue's last
//! records, whose index then is not below the first index, so the mirror
//! fetches them again. A torn write fails the checksum and counts as no
//! marker.
//!
//! Layout (little-endian): magic `MMKP` (4), version 1 (1), zero (3),
//! stream creation time in ns since the Unix epoch (i64), last sequence
//! appended or skipped (u64), queue index of the last record appended
//! (u64; `u64::MAX`: none), zero (4), CRC-32C of bytes 0..36 (4).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MAGIC: [u8; 4] = *b"MMKP";
const VERSION: u8 = 1;
const LEN: usize = 40;
/// `last_index` when no record was appended.
const NO_INDEX: u64 = u64::MAX;

/// What the marker says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    /// The stream's creation time, ns since the Unix epoch.
    pub(crate) created: i64,
    /// The stream sequence of the last message appended or skipped (0:
    /// none).
    pub(crate) last_seq: u64,
    /// The queue index of the last record appended.
    pub(crate) last_index: Option<u64>,
}

/// The open marker file.
#[derive(Debug)]
pub(crate) struct MarkerFile {
    file: File,
    path: PathBuf,
}

impl MarkerFile {
    /// Opens (creating it empty if missing) the marker at `path`, and
    /// reads it: `None` if it is empty or torn.
    pub(crate) fn open(path: PathBuf) -> Result<(MarkerFile, Option<Marker>)> {
        let io = |op, e: std::io::Error| Error::Io { op, path: path.clone(), source: e };
        let file = crate::lock::open_private(&path).map_err(|e| io("open mirror-in marker", e))?;
        // At most one marker's worth: the file is ours, but not trusted.
        let mut buf = Vec::with_capacity(LEN);
        (&file).take(LEN as u64).read_to_end(&mut buf).map_err(|e| io("read mirror-in marker", e))?;
        let marker =
            decode(&buf).map_err(|detail| io("read mirror-in marker", std::io::Error::other(detail)))?;
        Ok((MarkerFile { file, path }, marker))
    }

    /// Writes `m` over the marker (one 40-byte write; not synced: the
    /// records are the durable account, see the module docs).
    pub(crate) fn store(&self, m: Marker) -> Result<()> {
        self.file.write_all_at(&encode(m), 0).map_err(|e| Error::Io {
            op: "write mirror-in marker",
            path: self.path.clone(),
            source: e,
        })
    }
}

fn encode(m: Marker) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..4].copy_from_slice(&MAGIC);
    b[4] = VERSION;
    b[8..16].copy_from_slice(&m.created.to_le_bytes());
    b[16..24].copy_from_slice(&m.last_seq.to_le_bytes());
    b[24..32].copy_from_slice(&m.last_index.unwrap_or(NO_INDEX).to_le_bytes());
    let crc = crc32c::crc32c(&b[..36]);
    b[36..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// `Ok(None)` for an empty, short or torn marker; an error for one that a
/// newer version wrote (never a guess: a misread sequence would skip or
/// duplicate messages).
fn decode(b: &[u8]) -> Result<Option<Marker>, String> {
    let Ok(b) = <&[u8; LEN]>::try_from(b) else { return Ok(None) };
    let word = |at: usize| u64::from_le_bytes(std::array::from_fn(|i| b[at + i]));
    let crc = u32::from_le_bytes(std::array::from_fn(|i| b[36 + i]));
    if b[..4] != MAGIC || crc != crc32c::crc32c(&b[..36]) {
        return Ok(None);
    }
    if b[4] != VERSION {
        return Err(format!("marker version {} (this mmkit reads version {VERSION})", b[4]));
    }
    Ok(Some(Marker {
        created: word(8) as i64,
        last_seq: word(16),
        last_index: Some(word(24)).filter(|&i| i != NO_INDEX),
    }))
}

/// The marker's path for the mirror-in lock at `lock`.
pub(crate) fn path_beside(lock: &Path) -> PathBuf {
    lock.with_extension("pos")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_marker_round_trips_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.pos");
        let (f, m) = MarkerFile::open(path.clone()).unwrap();
        assert_eq!(m, None);
        let want = Marker { created: -5, last_seq: u64::MAX, last_index: Some(7) };
        f.store(want).unwrap();
        drop(f);
        assert_eq!(MarkerFile::open(path).unwrap().1, Some(want));
    }

    #[test]
    fn every_torn_or_flipped_marker_reads_as_none() {
        let m = Marker { created: 1_700_000_000_000_000_000, last_seq: 42, last_index: None };
        let good = encode(m);
        assert_eq!(decode(&good), Ok(Some(m)));
        for len in 0..LEN {
            assert_eq!(decode(&good[..len]), Ok(None), "{len} bytes");
        }
        for i in 0..LEN {
            for bit in 0..8 {
                let mut b = good;
                b[i] ^= 1 << bit;
                assert_eq!(decode(&b), Ok(None), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn a_newer_version_is_an_error() {
        let mut b = encode(Marker { created: 1, last_seq: 2, last_index: Some(3) });
        b[4] = 2;
        let crc = crc32c::crc32c(&b[..36]);
        b[36..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&b).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode(&bytes);
        }
    }
}
