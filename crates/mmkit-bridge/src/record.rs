//! The metadata block that mirror-in stores with each record it appends
//! (format in `docs/bridge.md`, "Record metadata").
//!
//! It is written in the same append as the payload (one frame, one CRC),
//! so a record and the stream position it came from are never apart.
//! Bytes read back come from a shared mapping: [`Origin::decode`] checks
//! every length and never panics.

/// First bytes of a mirrored record's metadata block.
pub const MAGIC: [u8; 4] = *b"MMKB";
/// Version of the block.
pub const VERSION: u8 = 1;
/// Fixed part of the block, before the source name.
pub const FIXED_LEN: usize = 48;
/// Longest source name (stream and subject filter) that fits in a block.
pub const MAX_SOURCE_LEN: usize = mmkit_queue::MAX_META - FIXED_LEN;

/// Flag: the message carried mmkit headers, so `queue_id`, `index` and
/// `timestamp` name the queue it was first appended to.
const FLAG_ORIGIN: u8 = 1;

/// Where a mirrored record came from: the stream position, and the queue
/// and index it was first appended to, when the message says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The JetStream stream sequence of the message.
    pub stream_seq: u64,
    /// The queue id, index and append timestamp (ns since the epoch, 0 if
    /// unknown) of the original record, if the message was published by
    /// an mmkit mirror.
    pub first: Option<FirstAppend>,
    /// The mirror's source: the stream name, a NUL, and the subject filter
    /// (empty for the whole stream).
    pub source: Vec<u8>,
}

/// The original record of a mirrored message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstAppend {
    /// The original queue's id ([`mmkit_queue::Queue::id`]).
    pub queue_id: u128,
    /// The record's index in that queue.
    pub index: u64,
    /// Its append timestamp, ns since the epoch (0: none).
    pub timestamp: u64,
}

/// A block that starts with [`MAGIC`] but cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadBlock(pub String);

/// The source key of a mirror of `stream` filtered by `subject`.
pub fn source_key(stream: &str, subject: Option<&str>) -> Vec<u8> {
    let mut key = stream.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(subject.unwrap_or("").as_bytes());
    key
}

impl Origin {
    /// Encodes the block (at most [`mmkit_queue::MAX_META`] bytes when the
    /// source is at most [`MAX_SOURCE_LEN`], which the mirror checks).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let first = self.first.unwrap_or(FirstAppend { queue_id: 0, index: 0, timestamp: 0 });
        out.clear();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(if self.first.is_some() { FLAG_ORIGIN } else { 0 });
        out.extend_from_slice(&(self.source.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.stream_seq.to_le_bytes());
        out.extend_from_slice(&first.queue_id.to_le_bytes());
        out.extend_from_slice(&first.index.to_le_bytes());
        out.extend_from_slice(&first.timestamp.to_le_bytes());
        out.extend_from_slice(&self.source);
    }

    /// Reads a record's metadata block: `Ok(None)` when it is not a mirror
    /// block (no [`MAGIC`]: a plain record, or metadata of the user's),
    /// `Err` when it claims to be one but is truncated, of a newer
    /// version, or inconsistent.
    pub fn decode(meta: &[u8]) -> Result<Option<Origin>, BadBlock> {
        if meta.get(..4) != Some(&MAGIC[..]) {
            return Ok(None);
        }
        if meta.len() < FIXED_LEN {
            return Err(BadBlock(format!(
                "mirror metadata of {} bytes, shorter than {FIXED_LEN}",
                meta.len()
            )));
        }
        if meta[4] != VERSION {
            return Err(BadBlock(format!(
                "mirror metadata version {} (this build reads version {VERSION}; a newer mmkit wrote it)",
                meta[4]
            )));
        }
        let u64_at = |o: usize| u64::from_le_bytes(meta[o..o + 8].try_into().unwrap_or_default());
        let source_len = u16::from_le_bytes([meta[6], meta[7]]) as usize;
        if meta.len() != FIXED_LEN + source_len {
            return Err(BadBlock(format!(
                "mirror metadata of {} bytes with a {source_len}-byte source name (expected {})",
                meta.len(),
                FIXED_LEN + source_len
            )));
        }
        let first = (meta[5] & FLAG_ORIGIN != 0).then(|| FirstAppend {
            queue_id: u128::from_le_bytes(meta[16..32].try_into().unwrap_or_default()),
            index: u64_at(32),
            timestamp: u64_at(40),
        });
        Ok(Some(Origin { stream_seq: u64_at(8), first, source: meta[FIXED_LEN..].to_vec() }))
    }

    /// Whether a block (already known to start with [`MAGIC`]) belongs to
    /// the mirror of `source`, without copying it.
    pub fn is_from(meta: &[u8], source: &[u8]) -> bool {
        meta.len() == FIXED_LEN + source.len() && meta.get(FIXED_LEN..) == Some(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(first: bool) -> Origin {
        Origin {
            stream_seq: 0x0102_0304_0506_0708,
            first: first.then_some(FirstAppend {
                queue_id: u128::MAX - 7,
                index: 1 << 33 | 5,
                timestamp: 99,
            }),
            source: source_key("ORDERS", Some("orders.eu")),
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        for first in [true, false] {
            let o = sample(first);
            o.encode_into(&mut buf);
            assert_eq!(buf.len(), FIXED_LEN + o.source.len());
            assert_eq!(Origin::decode(&buf), Ok(Some(o.clone())));
            assert!(Origin::is_from(&buf, &o.source));
            assert!(!Origin::is_from(&buf, &source_key("ORDERS", None)));
        }
    }

    #[test]
    fn other_metadata_is_not_a_block() {
        assert_eq!(Origin::decode(b""), Ok(None));
        assert_eq!(Origin::decode(b"user metadata"), Ok(None));
        assert_eq!(Origin::decode(b"MMK"), Ok(None));
    }

    #[test]
    fn damaged_blocks_are_errors() {
        let mut buf = Vec::new();
        sample(true).encode_into(&mut buf);
        // Every truncation is an error, never a panic.
        for n in 4..buf.len() {
            assert!(Origin::decode(&buf[..n]).is_err(), "truncated to {n}");
        }
        let mut newer = buf.clone();
        newer[4] = 2;
        assert!(Origin::decode(&newer).unwrap_err().0.contains("newer"));
        let mut longer = buf.clone();
        longer.push(0);
        assert!(Origin::decode(&longer).is_err());
    }

    proptest::proptest! {
        /// Any bytes, with or without the magic and version in front,
        /// decode to a block that re-encodes to itself, or to an error.
        #[test]
        fn any_bytes_decode_safely(mut b in proptest::collection::vec(proptest::num::u8::ANY, 0..160), magic: bool) {
            if magic && b.len() >= 5 {
                b[..4].copy_from_slice(&MAGIC);
                b[4] = VERSION;
                if let Some(n) = b.len().checked_sub(FIXED_LEN) {
                    b[6..8].copy_from_slice(&(n as u16).to_le_bytes());
                }
            }
            if let Ok(Some(o)) = Origin::decode(&b) {
                let mut again = Vec::new();
                o.encode_into(&mut again);
                proptest::prop_assert_eq!(Origin::decode(&again), Ok(Some(o)));
            }
        }
    }
}
