//! Meta pages: the four commit slots at the start of the database file.

use crate::page::{PAGE, u32_at, u64_at};

/// Magic bytes at offset 8 of every meta page.
pub(crate) const MAGIC: &[u8; 8] = b"mmkit-kv";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 4;
/// Number of meta slots (pages 0..4).
pub(crate) const META_SLOTS: u64 = 4;
/// Bytes of a meta page covered by its checksum (4..META_LEN).
pub(crate) const META_LEN: usize = 128;
/// Flag: the commit was synced before it was acknowledged.
pub(crate) const FLAG_SYNCED: u32 = 1;

/// A root pointer: page number (0 = empty) and the page's checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Root {
    pub(crate) page: u64,
    pub(crate) crc: u32,
}

/// One decoded meta page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) flags: u32,
    pub(crate) txnid: u64,
    /// The durable commit when this one was written.
    pub(crate) durable: u64,
    /// Pages in use: every page number is below this.
    pub(crate) next_page: u64,
    pub(crate) catalog: Root,
    pub(crate) free: Root,
    /// Pages in the free tree.
    pub(crate) free_count: u64,
    /// Microseconds since the Unix epoch at commit.
    pub(crate) time_us: u64,
    /// The database's identity, random at creation and the same in every
    /// commit: it ties the redo log's records to this file.
    pub(crate) id: u64,
}

/// Why a meta page was rejected.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MetaError {
    /// Not our magic: never written, or not a database.
    Magic,
    /// Our magic, another version.
    Version(u32),
    /// Torn or damaged.
    Checksum,
    /// Impossible field values.
    Invalid(&'static str),
}

impl Meta {
    pub(crate) fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[8..16].copy_from_slice(MAGIC);
        b[16..20].copy_from_slice(&(PAGE as u32).to_le_bytes());
        b[20..24].copy_from_slice(&self.flags.to_le_bytes());
        for (at, v) in [
            (24, self.txnid),
            (32, self.durable),
            (40, self.next_page),
            (48, self.catalog.page),
            (64, self.free.page),
            (80, self.free_count),
            (88, self.time_us),
            (96, self.id),
        ] {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        b[56..60].copy_from_slice(&self.catalog.crc.to_le_bytes());
        b[72..76].copy_from_slice(&self.free.crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[4..]);
        b[..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Meta, MetaError> {
        if b.len() < META_LEN || &b[8..16] != MAGIC {
            return Err(MetaError::Magic);
        }
        let version = u32_at(b, 4);
        if version != FORMAT_VERSION {
            return Err(MetaError::Version(version));
        }
        if crc32c::crc32c(&b[4..META_LEN]) != u32_at(b, 0) {
            return Err(MetaError::Checksum);
        }
        if u32_at(b, 16) as usize != PAGE {
            return Err(MetaError::Invalid("page size differs from this build's"));
        }
        let meta = Meta {
            flags: u32_at(b, 20),
            txnid: u64_at(b, 24),
            durable: u64_at(b, 32),
            next_page: u64_at(b, 40),
            catalog: Root { page: u64_at(b, 48), crc: u32_at(b, 56) },
            free: Root { page: u64_at(b, 64), crc: u32_at(b, 72) },
            free_count: u64_at(b, 80),
            time_us: u64_at(b, 88),
            id: u64_at(b, 96),
        };
        let in_range = |r: Root| r.page == 0 || (r.page >= META_SLOTS && r.page < meta.next_page);
        if meta.txnid == 0 || meta.next_page < META_SLOTS || !in_range(meta.catalog) || !in_range(meta.free) {
            return Err(MetaError::Invalid("root page out of range"));
        }
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_torn_byte_is_caught() {
        let m = Meta {
            flags: FLAG_SYNCED,
            txnid: 9,
            durable: 9,
            next_page: 40,
            catalog: Root { page: 5, crc: 77 },
            free: Root { page: 6, crc: 88 },
            free_count: 3,
            time_us: 1,
            id: 0x1234,
        };
        let b = m.encode();
        assert_eq!(Meta::decode(&b), Ok(m));
        for i in 0..META_LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(Meta::decode(&c).is_err(), "byte {i}");
        }
        assert_eq!(Meta::decode(&[0u8; META_LEN]), Err(MetaError::Magic));
    }
}
