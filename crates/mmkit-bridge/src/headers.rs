//! The NATS headers a mirrored message carries (see `docs/bridge.md`,
//! "Headers").

use async_nats::header::{HeaderMap, HeaderName};

use crate::record::FirstAppend;

/// JetStream's de-duplication id: `<queue id, 32 hex digits>:<index>`.
pub const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");
/// JetStream's per-subject optimistic concurrency check.
pub const EXPECTED_LAST_SUBJECT_SEQ: HeaderName =
    HeaderName::from_static("Nats-Expected-Last-Subject-Sequence");
/// JetStream's stream-wide optimistic concurrency check.
pub const EXPECTED_LAST_SEQ: HeaderName = HeaderName::from_static("Nats-Expected-Last-Sequence");
/// The publishing queue's id (32 hex digits).
pub const QUEUE_ID: HeaderName = HeaderName::from_static("Mmkit-Queue-Id");
/// The record's index in the publishing queue.
pub const INDEX: HeaderName = HeaderName::from_static("Mmkit-Index");
/// The record's append timestamp, ns since the epoch (absent: none).
pub const TIMESTAMP: HeaderName = HeaderName::from_static("Mmkit-Timestamp");
/// For a record that was itself mirrored in and is forwarded: the
/// original queue's id...
pub const ORIGIN_ID: HeaderName = HeaderName::from_static("Mmkit-Origin-Id");
/// ...the original index...
pub const ORIGIN_INDEX: HeaderName = HeaderName::from_static("Mmkit-Origin-Index");
/// ...and the original append timestamp.
pub const ORIGIN_TIMESTAMP: HeaderName = HeaderName::from_static("Mmkit-Origin-Timestamp");

/// A queue id as 32 lower-case hex digits.
pub fn queue_id_hex(id: u128) -> String {
    format!("{id:032x}")
}

/// The `Nats-Msg-Id` of record `index` of queue `id`.
pub fn msg_id(id: u128, index: u64) -> String {
    format!("{id:032x}:{index}")
}

/// What the server must find before it stores a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The subject's last message has this stream sequence (0: none).
    Subject(u64),
    /// The stream's last message has this sequence: in a stream that takes
    /// the mirror's subject alone, the same check, and an O(1) one for the
    /// server (the per-subject check looks the message up).
    Stream(u64),
}

/// What a mirror-out publish carries besides the payload.
pub struct Outgoing<'a> {
    /// Hex id of the publishing queue.
    pub queue_hex: &'a str,
    /// The record's index there.
    pub index: u64,
    /// Its timestamp (0: none).
    pub timestamp: u64,
    /// Where it came from, for a forwarded mirrored record.
    pub origin: Option<FirstAppend>,
    /// The last stream sequence the publish requires.
    pub expected: Expected,
}

impl Outgoing<'_> {
    /// The header map of this publish.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(MSG_ID, format!("{}:{}", self.queue_hex, self.index));
        match self.expected {
            Expected::Subject(seq) => h.insert(EXPECTED_LAST_SUBJECT_SEQ, seq.to_string()),
            Expected::Stream(seq) => h.insert(EXPECTED_LAST_SEQ, seq.to_string()),
        }
        h.insert(QUEUE_ID, self.queue_hex);
        h.insert(INDEX, self.index.to_string());
        if self.timestamp != 0 {
            h.insert(TIMESTAMP, self.timestamp.to_string());
        }
        if let Some(o) = self.origin {
            h.insert(ORIGIN_ID, queue_id_hex(o.queue_id));
            h.insert(ORIGIN_INDEX, o.index.to_string());
            if o.timestamp != 0 {
                h.insert(ORIGIN_TIMESTAMP, o.timestamp.to_string());
            }
        }
        h
    }

    /// Bytes the headers take on the wire (`NATS/1.0\r\n`, one
    /// `Name: value\r\n` per header, and a blank line), as the server
    /// counts them against `max_payload`.
    pub fn wire_len(&self) -> usize {
        let digits = |v: u64| v.checked_ilog10().map_or(1, |d| d as usize + 1);
        let line = |name: &HeaderName, value_len: usize| name_len(name) + 2 + value_len + 2;
        let mut n = "NATS/1.0\r\n".len() + 2;
        n += line(&MSG_ID, self.queue_hex.len() + 1 + digits(self.index));
        n += match self.expected {
            Expected::Subject(seq) => line(&EXPECTED_LAST_SUBJECT_SEQ, digits(seq)),
            Expected::Stream(seq) => line(&EXPECTED_LAST_SEQ, digits(seq)),
        };
        n += line(&QUEUE_ID, self.queue_hex.len()) + line(&INDEX, digits(self.index));
        if self.timestamp != 0 {
            n += line(&TIMESTAMP, digits(self.timestamp));
        }
        if let Some(o) = self.origin {
            n += line(&ORIGIN_ID, 32) + line(&ORIGIN_INDEX, digits(o.index));
            if o.timestamp != 0 {
                n += line(&ORIGIN_TIMESTAMP, digits(o.timestamp));
            }
        }
        n
    }
}

fn name_len(name: &HeaderName) -> usize {
    AsRef::<str>::as_ref(name).len()
}

fn parse_hex_id(s: &str) -> Option<u128> {
    (s.len() == 32).then(|| u128::from_str_radix(s, 16).ok()).flatten()
}

fn get<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name.clone()).map(|v| v.as_str())
}

/// The publishing queue's id and index in a stored message, if it has
/// well-formed mmkit headers.
pub fn publisher(h: &HeaderMap) -> Option<(u128, u64)> {
    let id = parse_hex_id(get(h, &QUEUE_ID)?)?;
    let index = get(h, &INDEX)?.parse().ok()?;
    Some((id, index))
}

/// The original record of a received message: the `Mmkit-Origin-*`
/// headers of a forwarded record, else the publishing queue's own.
/// Malformed headers count as none (a foreign publisher's message).
pub fn first_append(h: Option<&HeaderMap>) -> Option<FirstAppend> {
    let h = h?;
    let stamp = |name: &HeaderName| get(h, name).and_then(|s| s.parse().ok()).unwrap_or(0);
    if let Some(id) = get(h, &ORIGIN_ID) {
        let queue_id = parse_hex_id(id)?;
        let index = get(h, &ORIGIN_INDEX)?.parse().ok()?;
        return Some(FirstAppend { queue_id, index, timestamp: stamp(&ORIGIN_TIMESTAMP) });
    }
    let (queue_id, index) = publisher(h)?;
    Some(FirstAppend { queue_id, index, timestamp: stamp(&TIMESTAMP) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(h: &HeaderMap) -> usize {
        let mut n = "NATS/1.0\r\n".len() + 2;
        for (name, values) in h.iter() {
            for v in values {
                n += name_len(name) + 2 + v.as_str().len() + 2;
            }
        }
        n
    }

    #[test]
    fn headers_round_trip_and_size() {
        let hex = queue_id_hex(0xabc);
        let origin = FirstAppend { queue_id: 7, index: 9, timestamp: 11 };
        let cases = [
            (0, None, Expected::Subject(0)),
            (1_700_000_000_000_000_000, None, Expected::Stream(12_345)),
            (5, Some(origin), Expected::Subject(u64::MAX)),
        ];
        for (timestamp, origin, expected) in cases {
            let out = Outgoing { queue_hex: &hex, index: 1 << 32 | 3, timestamp, origin, expected };
            let h = out.headers();
            assert_eq!(wire(&h), out.wire_len());
            assert_eq!(publisher(&h), Some((0xabc, 1 << 32 | 3)));
            assert_eq!(get(&h, &MSG_ID), Some(msg_id(0xabc, 1 << 32 | 3).as_str()));
            let expect = origin.unwrap_or(FirstAppend { queue_id: 0xabc, index: 1 << 32 | 3, timestamp });
            assert_eq!(first_append(Some(&h)), Some(expect));
        }
    }

    #[test]
    fn malformed_headers_are_no_origin() {
        let mut h = HeaderMap::new();
        assert_eq!(first_append(Some(&h)), None);
        h.insert(QUEUE_ID, "not hex");
        h.insert(INDEX, "1");
        assert_eq!(first_append(Some(&h)), None);
        h.insert(QUEUE_ID, queue_id_hex(1));
        h.insert(INDEX, "-1");
        assert_eq!(first_append(Some(&h)), None);
        h.insert(INDEX, "2");
        assert_eq!(first_append(Some(&h)).map(|f| f.index), Some(2));
        h.insert(ORIGIN_ID, "short");
        assert_eq!(first_append(Some(&h)), None);
    }
}
