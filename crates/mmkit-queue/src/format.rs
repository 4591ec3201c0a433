//! The on-disk format: constants, layouts and pure parsers.
//!
//! Everything here works on plain values or byte snapshots so that it can
//! be fuzzed (see `fuzz/`) and reused by the live reader, which validates
//! each word it loads from shared memory with the same functions. The
//! format is described in `docs/queue-format.md`.

use std::path::Path;

use crate::error::{Error, Result};

/// Format version written and understood by this build.
pub const VERSION: u32 = 2;
/// Magic number at the start of the `meta` file.
pub const META_MAGIC: [u8; 8] = *b"MMKQMETA";
/// Magic number at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"MMKQSEG\0";

/// Size of the `meta` file.
pub const META_SIZE: usize = 64 * 1024;
/// Bytes of the static, checksummed part of the meta header.
pub const META_STATIC_LEN: usize = 60;
/// Meta: the active segment number (`u64`, atomic).
pub const META_ACTIVE: u64 = 64;
/// Meta: the lowest segment not deleted by retention (`u64`, atomic).
pub const META_FIRST: u64 = 72;
/// Meta: the queue's id, 16 random bytes chosen at creation (never
/// changes), followed by their CRC32C (`u32`).
pub const META_QUEUE_ID: u64 = 80;
/// Meta: the consumers' `Notifier` (own cache line).
pub const META_NOTIFIER: u64 = 128;
/// Meta: the durable-watermark `EventCount` (packed index + 1 of the
/// first message not yet known durable).
pub const META_DURABLE: u64 = 192;
/// Meta: the group-commit flusher's token (`u64`, 0 = nobody flushing).
pub const META_FLUSH_LOCK: u64 = 208;
/// Meta: the admin `RobustMutex` serialising table changes (64 bytes reserved).
pub const META_ADMIN_LOCK: u64 = 256;
/// Meta: the single-producer lease (`u64`, own cache line): 0 = none (every
/// producer claims with `fetch_add`), else `slot + 1` of the producer that
/// holds it, with [`LEASE_REVOKING`] set while another takes it away.
pub const META_LEASE: u64 = 320;
/// Lease bit: the lease is being revoked.
pub const LEASE_REVOKING: u64 = 1 << 63;
/// Meta: start of the producer table.
pub const PRODUCER_TABLE: u64 = 1024;
/// Number of producer slots.
pub const PRODUCER_SLOTS: usize = 128;
/// Bytes per producer slot.
pub const PRODUCER_SLOT_SIZE: u64 = 64;
/// Meta: start of the named-cursor table.
pub const CURSOR_TABLE: u64 = PRODUCER_TABLE + PRODUCER_SLOTS as u64 * PRODUCER_SLOT_SIZE;
/// Number of named-cursor slots.
pub const CURSOR_SLOTS: usize = 256;
/// Bytes per cursor slot.
pub const CURSOR_SLOT_SIZE: u64 = 64;
/// Meta: start of the consumer-group table.
pub const GROUP_TABLE: u64 = CURSOR_TABLE + CURSOR_SLOTS as u64 * CURSOR_SLOT_SIZE;
/// Number of consumer groups.
pub const GROUP_SLOTS: usize = 16;
/// Bytes per group (64-byte group header, then the member slots).
pub const GROUP_SLOT_SIZE: u64 = 2048;
/// Bytes per group-member slot.
pub const MEMBER_SLOT_SIZE: u64 = 32;
/// Members per group.
pub const MEMBERS_PER_GROUP: usize = ((GROUP_SLOT_SIZE - 64) / MEMBER_SLOT_SIZE) as usize;
/// Longest cursor or group name, in bytes.
pub const MAX_NAME_LEN: usize = 48;

const _: () = assert!(GROUP_TABLE + GROUP_SLOTS as u64 * GROUP_SLOT_SIZE <= META_SIZE as u64);
/// Offset of the pin table (one slot per open queue handle).
pub const PIN_TABLE: u64 = GROUP_TABLE + GROUP_SLOTS as u64 * GROUP_SLOT_SIZE;
/// Slots in the pin table.
pub const PIN_SLOTS: usize = 384;
/// Bytes per pin slot: owner token `u64`, lowest mapped segment `u64`.
pub const PIN_SLOT_SIZE: u64 = 16;
const _: () = assert!(PIN_TABLE + PIN_SLOTS as u64 * PIN_SLOT_SIZE <= META_SIZE as u64);

/// Bytes of a segment's header; frames start here.
pub const SEGMENT_HEADER: u64 = 256;
/// Bytes of the static, checksummed part of the segment header.
pub const SEGMENT_STATIC_LEN: usize = 44;
/// Segment: the tail word, `count << 32 | next frame offset` (atomic).
pub const SEG_TAIL: u64 = 64;
/// Segment: the number of messages the segment ended with (`u64::MAX`
/// while open; atomic, only ever lowered).
pub const SEG_FINAL_COUNT: u64 = 128;
/// Segment: when it was sealed, ns since the epoch (atomic; 0 while open,
/// and in segments sealed by versions before this word, or by a producer
/// that died between the seal and this store). Written once, by the first
/// sealer.
pub const SEG_SEALED_AT: u64 = 136;

/// Bytes of a frame header: the state word then the timestamp.
pub const FRAME_HEADER: u64 = 16;
/// Space always left for an end-of-segment frame.
pub const EOS_RESERVE: u64 = FRAME_HEADER;
/// Frames are aligned to this.
pub const FRAME_ALIGN: u64 = 8;

/// Smallest segment size accepted.
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// Largest segment size accepted (so that offsets, even past the end after
/// failed claims, stay inside 32 bits: see [`MAX_CLAIM_BYTES`]).
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;
/// Largest maximum-message size accepted.
pub const MAX_MESSAGE_LIMIT: u64 = 16 << 20;

/// Most bytes of frames one claim (one `fetch_add` on a segment's tail)
/// takes: a batch is split into claims of at most this much. A claim
/// that does not fit still adds its bytes to the tail's offset, and every
/// producer may make one such claim at a segment's end before it moves on
/// to the next segment, so the offset can reach the capacity plus one
/// claim per producer slot (and one more per producer killed between its
/// failed claim and moving the active segment on). That must stay below
/// 2^32, or it would carry into the claim count of the tail word: 1 GiB
/// plus 128 claims of 20 MiB is 3.5 GiB, leaving room for 25 such kills
/// at one segment's end.
pub const MAX_CLAIM_BYTES: u64 = 20 << 20;
const _: () = assert!(MAX_SEGMENT_SIZE + PRODUCER_SLOTS as u64 * MAX_CLAIM_BYTES < 1 << 32);
// One message is one claim, whatever the cap.
const _: () = assert!(frame_size(MAX_MESSAGE_LIMIT) <= MAX_CLAIM_BYTES);

/// Meta flag: records carry timestamps.
pub const FLAG_TIMESTAMPS: u32 = 1;

/// Frame kind bits (top two bits of the low 32-bit state word).
pub const KIND_SHIFT: u32 = 30;
/// Length mask of the state word.
pub const LEN_MASK: u32 = (1 << KIND_SHIFT) - 1;
/// A committed message: low bits = payload length, high word = CRC32C.
pub const KIND_MESSAGE: u32 = 1;
/// Padding over abandoned claims: low bits = frame bytes, high word =
/// number of claims covered.
pub const KIND_PADDING: u32 = 2;
/// End of segment: readers continue at the next segment.
pub const KIND_EOS: u32 = 3;
/// Message length bit: the record's data starts with a metadata block (a
/// `u32` length, then that many bytes) before the payload.
pub const META_FLAG: u32 = 1 << 29;
/// Longest metadata block, in bytes.
pub const MAX_META: usize = 4096;

/// Producer slot state: not claiming.
pub const PRODUCER_IDLE: u64 = 0;
/// Producer slot state: about to claim or claiming (claim unknown).
pub const PRODUCER_CLAIMING: u64 = 1;
/// Producer slot state: holds the recorded claim.
pub const PRODUCER_CLAIMED: u64 = 2;
/// Producer slot state: the lease holder is appending (its frames are not
/// counted in the tail until committed, so readers never wait for it).
pub const PRODUCER_EXCLUSIVE: u64 = 3;

/// Producer slot: owner token (`ProcessToken`, 0 = free).
pub const SLOT_TOKEN: u64 = 0;
/// Producer slot: `generation << 2 | state`.
pub const SLOT_STATE: u64 = 8;
/// Producer slot: segment of the recorded claim.
pub const SLOT_SEGMENT: u64 = 16;
/// Producer slot: recorded claim, `first seq << 32 | claims`.
pub const SLOT_CLAIM: u64 = 24;
/// Producer slot: offset of the recorded claim's first frame.
pub const SLOT_START: u64 = 32;
/// Producer slot: offset just past the recorded claim's last frame.
pub const SLOT_END: u64 = 40;
/// Producer slot: the token of the producer that wrote the record (kept
/// when the slot of a dead owner is freed, to name it in reports).
pub const SLOT_OWNER: u64 = 48;
/// Producer slot: the lease holder's current run of frames, `segment << 32
/// | end offset`, stored before the run is written (0: none). A holder
/// killed mid-copy leaves bytes up to there past the tail; whoever revokes
/// its lease pads them (see `Queue::revoke_lease`).
pub const SLOT_RUN: u64 = 56;

/// Segment numbers are below this: an index keeps the segment number in
/// its upper 32 bits. A larger number read from a file is corruption.
pub const MAX_SEGMENTS: u64 = 1 << 32;

/// Packs a segment number and a sequence number into a message index.
pub const fn make_index(segment: u64, seq: u32) -> u64 {
    (segment << 32) | seq as u64
}

/// The segment number of an index.
pub const fn index_segment(index: u64) -> u64 {
    index >> 32
}

/// The sequence number of an index within its segment.
pub const fn index_seq(index: u64) -> u32 {
    index as u32
}

/// Bytes a frame with a `len`-byte payload occupies.
pub const fn frame_size(len: u64) -> u64 {
    (FRAME_HEADER + len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// Offset of index slot `seq` in a segment of `capacity` bytes.
pub const fn index_slot_offset(capacity: u64, seq: u64) -> u64 {
    capacity - 4 * (seq + 1)
}

/// Whether a claim of `count` frames totalling `bytes` at sequence `seq`
/// and offset `offset` fits in a segment of `capacity` bytes. An offset
/// that is not a frame position fits nowhere (only a corrupt tail or
/// record holds one).
pub fn claim_fits(capacity: u64, seq: u64, count: u64, offset: u64, bytes: u64) -> bool {
    let need = offset as u128 + bytes as u128 + 4 * (seq as u128 + count as u128) + EOS_RESERVE as u128;
    offset % FRAME_ALIGN == 0 && need <= capacity as u128
}

/// Largest payload that fits in an empty segment of `segment_size` bytes.
pub fn max_payload_for(segment_size: u64) -> u64 {
    segment_size.saturating_sub(SEGMENT_HEADER + FRAME_HEADER + 4 + EOS_RESERVE + FRAME_ALIGN)
}

/// Builds a frame state word.
pub const fn state_word(kind: u32, len: u32, high: u32) -> u64 {
    ((kind << KIND_SHIFT) | (len & LEN_MASK)) as u64 | ((high as u64) << 32)
}

/// A decoded frame state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameWord {
    /// Nothing committed yet (zero): not claimed, or claimed and not
    /// committed.
    Empty,
    /// A committed message.
    Message {
        /// Length of the record's data: the payload, and the metadata
        /// block before it when `meta` is set.
        len: u32,
        /// Stored CRC32C.
        crc: u32,
        /// Whether the data starts with a metadata block.
        meta: bool,
    },
    /// Padding over abandoned claims.
    Padding {
        /// Frame bytes.
        bytes: u32,
        /// Claims covered.
        claims: u32,
    },
    /// End of segment.
    EndOfSegment,
    /// Not a valid state word.
    Invalid,
}

impl FrameWord {
    /// Decodes a state word (no bounds checks; see [`check_frame`]).
    pub fn decode(word: u64) -> FrameWord {
        if word == 0 {
            return FrameWord::Empty;
        }
        let low = word as u32;
        let high = (word >> 32) as u32;
        let len = low & LEN_MASK;
        match low >> KIND_SHIFT {
            KIND_MESSAGE => {
                FrameWord::Message { len: len & !META_FLAG, crc: high, meta: len & META_FLAG != 0 }
            }
            KIND_PADDING if len > 0 && high > 0 => FrameWord::Padding { bytes: len, claims: high },
            KIND_EOS if len == 0 => FrameWord::EndOfSegment,
            _ => FrameWord::Invalid,
        }
    }
}

/// Checks that a frame at `offset` occupying `bytes` for sequence `seq`
/// lies inside the frame area of a segment: after the header, aligned,
/// and not into the index slots already used up to `seq + claims`.
pub fn check_frame(
    capacity: u64,
    offset: u64,
    bytes: u64,
    seq: u64,
    claims: u64,
) -> std::result::Result<(), &'static str> {
    if offset < SEGMENT_HEADER || offset % FRAME_ALIGN != 0 {
        return Err("frame offset outside the frame area or misaligned");
    }
    if bytes % FRAME_ALIGN != 0 || bytes < FRAME_HEADER {
        return Err("frame length is not a whole number of frame units");
    }
    if !claim_fits(capacity, seq, claims, offset, bytes) {
        return Err("frame reaches into the index area or past the end");
    }
    Ok(())
}

/// Splits a record's data into its metadata block and its payload, when
/// `meta` says there is a block; `None` if the block's length does not fit
/// the data.
pub fn split_meta(data: &[u8], meta: bool) -> Option<(&[u8], &[u8])> {
    if !meta {
        return Some((&[], data));
    }
    let m = data.get(..4).map(|b| le_u32(b, 0) as usize)?;
    if m > MAX_META {
        return None;
    }
    let rest = &data[4..];
    (m <= rest.len()).then(|| rest.split_at(m))
}

/// The CRC32C of a record whose data is the concatenation of `parts`: as
/// [`record_crc`] of the concatenation.
pub fn record_crc_parts(parts: &[&[u8]], index: u64, timestamp: u64) -> u32 {
    let len = parts.iter().map(|p| p.len()).sum();
    parts.iter().fold(record_seed(len, index, timestamp), |crc, p| crc32c_append(crc, p))
}

/// The CRC32C of a record: the CRC of the payload, started from a seed
/// that mixes the payload length, the index and the timestamp. A different
/// start value changes the CRC of the same bytes, so a record copied to
/// the wrong index, or with a damaged length or timestamp, fails the check
/// just as a damaged payload does; and it costs one pass, not two.
pub fn record_crc(payload: &[u8], index: u64, timestamp: u64) -> u32 {
    crc32c_append(record_seed(payload.len(), index, timestamp), payload)
}

/// Payloads up to this size take the inline CRC loop.
const SMALL_CRC: usize = 256;

/// `crc32c::crc32c_append`, with small inputs done inline: for the typical
/// message of tens of bytes the crate's dispatch and its setup for long
/// inputs cost more than the CRC itself (8 ns against 3 ns for 64 bytes on
/// the bench machine), and it runs twice per message (append and read).
fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() <= SMALL_CRC && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { crc32c_small(crc, bytes) };
    }
    crc32c::crc32c_append(crc, bytes)
}

/// CRC32C with the SSE 4.2 instruction, 8 bytes per step.
///
/// # Safety
///
/// The CPU supports SSE 4.2.
// The intrinsics are unsafe to call before Rust 1.86 (the library crates'
// minimum is 1.85) and safe inside this function from 1.86 on: the
// `unsafe` blocks are needed on one and unused on the other.
#[allow(unused_unsafe)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_small(crc: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut words = bytes.chunks_exact(8);
    let mut c = u64::from(!crc);
    for w in &mut words {
        let mut le = [0u8; 8];
        le.copy_from_slice(w);
        // SAFETY: the caller promises SSE 4.2.
        c = unsafe { _mm_crc32_u64(c, u64::from_le_bytes(le)) };
    }
    // The instruction leaves the upper 32 bits zero.
    let mut c = c as u32;
    for &b in words.remainder() {
        // SAFETY: as above.
        c = unsafe { _mm_crc32_u8(c, b) };
    }
    !c
}

/// Copies a record's `len` bytes of data from `src` (in a shared mapping)
/// to `dst` with volatile word loads, and returns their [`record_crc`] for
/// `index` and `timestamp`, computed in the same pass for small records:
/// a reader then touches each byte once, not once to copy and once more
/// to check.
///
/// # Safety
///
/// `src` must be readable and `dst` writable for `len` bytes; the ranges
/// must not overlap.
pub(crate) unsafe fn copy_record(
    src: *const u8,
    dst: *mut u8,
    len: usize,
    index: u64,
    timestamp: u64,
) -> u32 {
    // SAFETY: the caller's promise.
    unsafe { copy_with_crc::<true>(src, dst, len, index, timestamp) }
}

/// [`copy_record`] and [`write_record`]: `SHARED` says whether `src` lies
/// in a mapping another process writes (read with volatile loads).
///
/// # Safety
///
/// As those two say.
#[inline(always)]
unsafe fn copy_with_crc<const SHARED: bool>(
    src: *const u8,
    dst: *mut u8,
    len: usize,
    index: u64,
    timestamp: u64,
) -> u32 {
    let seed = record_seed(len, index, timestamp);
    #[cfg(target_arch = "x86_64")]
    if len <= SMALL_CRC
        && (!SHARED || (src as usize) % 8 == 0)
        && std::arch::is_x86_feature_detected!("sse4.2")
    {
        // SAFETY: the CPU has SSE 4.2 (checked just above); the pointers are
        // the caller's, and a shared `src` is 8-aligned (also checked).
        return unsafe { copy_crc_small::<SHARED>(src, dst, len, seed) };
    }
    // SAFETY: the caller's promise.
    unsafe {
        if SHARED {
            crate::reader::volatile_copy(src, dst, len);
        } else {
            std::ptr::copy_nonoverlapping(src, dst, len);
        }
        // Private memory either way: for a shared `src`, the copy (the
        // bytes handed out are those), else the caller's own bytes.
        let own = if SHARED { dst.cast_const() } else { src };
        crc32c_append(seed, std::slice::from_raw_parts(own, len))
    }
}

/// [`crc32c_small`] of the bytes it copies, for [`copy_record`] (`SHARED`:
/// `src` is in a mapping another process writes, read with volatile loads)
/// and [`write_record`] (`src` is the caller's own memory): one pass, and
/// no call to `memcpy`.
///
/// # Safety
///
/// As [`copy_record`] or [`write_record`] say; with `SHARED`, `src` is
/// 8-aligned; and the CPU supports SSE 4.2.
// On `unsafe` around the intrinsics: see `crc32c_small`.
#[allow(unused_unsafe)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[inline]
unsafe fn copy_crc_small<const SHARED: bool>(src: *const u8, dst: *mut u8, len: usize, crc: u32) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut c = u64::from(!crc);
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: `i + 8 <= len`; a shared `src` is 8-aligned, so
        // `src + i` is; an own `src`, and `dst`, need not be.
        let v = unsafe {
            let from = src.add(i).cast::<u64>();
            let v = if SHARED { from.read_volatile() } else { from.read_unaligned() };
            dst.add(i).cast::<u64>().write_unaligned(v);
            v
        };
        // SAFETY: the caller promises SSE 4.2.
        c = unsafe { _mm_crc32_u64(c, u64::from_le(v)) };
        i += 8;
    }
    // The instruction leaves the upper 32 bits zero.
    let mut c = c as u32;
    while i < len {
        // SAFETY: `i < len`.
        let b = unsafe {
            let b = if SHARED { src.add(i).read_volatile() } else { src.add(i).read() };
            dst.add(i).write(b);
            b
        };
        // SAFETY: as above.
        c = unsafe { _mm_crc32_u8(c, b) };
        i += 1;
    }
    !c
}

/// Copies a record's `len` bytes of data from `src` (the producer's own
/// memory, any alignment) into its frame at `dst` (in a mapping) and
/// returns their [`record_crc`] for `index` and `timestamp`, computed in
/// the same pass for small records, as [`copy_record`] does for readers:
/// each byte is loaded once, and a short payload costs no call to
/// `memcpy`.
///
/// # Safety
///
/// `src` must be readable and `dst` writable for `len` bytes; the ranges
/// must not overlap, and no other thread may access `dst..dst + len`
/// meanwhile.
pub(crate) unsafe fn write_record(
    src: *const u8,
    dst: *mut u8,
    len: usize,
    index: u64,
    timestamp: u64,
) -> u32 {
    // SAFETY: the caller's promise.
    unsafe { copy_with_crc::<false>(src, dst, len, index, timestamp) }
}

fn record_seed(len: usize, index: u64, timestamp: u64) -> u32 {
    let x = index ^ timestamp.rotate_left(29) ^ (len as u64).rotate_right(24);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
}

/// Durability mode stored in the meta header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredDurability {
    /// 0 = OS-managed, 1 = group commit, 2 = sync every message.
    pub kind: u32,
    /// Group-commit interval in microseconds.
    pub interval_us: u32,
    /// Group-commit batch size.
    pub max_batch: u32,
}

/// The static part of the meta header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaHeader {
    /// Bytes per segment file.
    pub segment_size: u64,
    /// Largest payload accepted.
    pub max_message: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Default durability recorded at creation.
    pub durability: StoredDurability,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Writes what both file headers start with: magic number, format
/// version and the header's length field.
fn encode_common(b: &mut [u8], magic: &[u8; 8], len_field: u32) {
    b[..8].copy_from_slice(magic);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&len_field.to_le_bytes());
}

/// Stores the CRC32C of the static part (`b[..static_len]`) right after it.
fn seal(b: &mut [u8], static_len: usize) {
    let crc = crc32c::crc32c(&b[..static_len]);
    b[static_len..static_len + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Checks what both file headers share, in the order that gives the most
/// useful error: length, magic number (`kind` names the file), version,
/// the CRC32C stored after the `static_len`-byte static part, and the
/// header's length field.
fn check_header(
    bytes: &[u8],
    path: &Path,
    kind: &'static str,
    magic: &[u8; 8],
    static_len: usize,
    len_field: u32,
) -> Result<()> {
    if bytes.len() < static_len + 4 {
        return Err(Error::corrupt(path, format!("{kind} header truncated ({} bytes)", bytes.len())));
    }
    if bytes[..8] != *magic {
        return Err(Error::BadMagic { path: path.into(), kind });
    }
    let version = le_u32(bytes, 8);
    if version != VERSION {
        return Err(Error::UnsupportedVersion { path: path.into(), found: version, supported: VERSION });
    }
    if crc32c::crc32c(&bytes[..static_len]) != le_u32(bytes, static_len) {
        return Err(Error::corrupt(path, format!("{kind} header checksum mismatch")));
    }
    if le_u32(bytes, 12) != len_field {
        return Err(Error::corrupt(path, format!("{kind} header length field is wrong")));
    }
    Ok(())
}

impl MetaHeader {
    /// Encodes the static header (`META_STATIC_LEN + 4` bytes with its CRC).
    pub fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        encode_common(&mut b, &META_MAGIC, META_SIZE as u32);
        b[16..24].copy_from_slice(&self.segment_size.to_le_bytes());
        b[24..28].copy_from_slice(&self.max_message.to_le_bytes());
        b[28..32].copy_from_slice(&self.flags.to_le_bytes());
        b[32..36].copy_from_slice(&(PRODUCER_SLOTS as u32).to_le_bytes());
        b[36..40].copy_from_slice(&(CURSOR_SLOTS as u32).to_le_bytes());
        b[40..44].copy_from_slice(&(GROUP_SLOTS as u32).to_le_bytes());
        b[44..48].copy_from_slice(&(MEMBERS_PER_GROUP as u32).to_le_bytes());
        b[48..52].copy_from_slice(&self.durability.kind.to_le_bytes());
        b[52..56].copy_from_slice(&self.durability.interval_us.to_le_bytes());
        b[56..60].copy_from_slice(&self.durability.max_batch.to_le_bytes());
        seal(&mut b, META_STATIC_LEN);
        b
    }

    /// Parses and validates the static meta header from the file's first
    /// bytes. `path` is used in errors only.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<MetaHeader> {
        check_header(bytes, path, "meta", &META_MAGIC, META_STATIC_LEN, META_SIZE as u32)?;
        let tables = [le_u32(bytes, 32), le_u32(bytes, 36), le_u32(bytes, 40), le_u32(bytes, 44)];
        let expect = [PRODUCER_SLOTS, CURSOR_SLOTS, GROUP_SLOTS, MEMBERS_PER_GROUP].map(|v| v as u32);
        if tables != expect {
            return Err(Error::corrupt(path, format!("table sizes {tables:?} differ from {expect:?}")));
        }
        let header = MetaHeader {
            segment_size: le_u64(bytes, 16),
            max_message: le_u32(bytes, 24),
            flags: le_u32(bytes, 28),
            durability: StoredDurability {
                kind: le_u32(bytes, 48),
                interval_us: le_u32(bytes, 52),
                max_batch: le_u32(bytes, 56),
            },
        };
        header.validate().map_err(|reason| Error::corrupt(path, reason))?;
        Ok(header)
    }

    /// Checks the values are within the limits this build supports.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let s = self.segment_size;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&s) || s % MIN_SEGMENT_SIZE != 0 {
            return Err(format!(
                "segment size {s} must be a multiple of {MIN_SEGMENT_SIZE} between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}"
            ));
        }
        let m = self.max_message as u64;
        if m == 0 || m > MAX_MESSAGE_LIMIT || m > max_payload_for(s) {
            return Err(format!(
                "maximum message size {m} must be between 1 and {} for segments of {s} bytes",
                max_payload_for(s).min(MAX_MESSAGE_LIMIT)
            ));
        }
        if self.flags & !FLAG_TIMESTAMPS != 0 {
            return Err(format!("unknown flags {:#x}", self.flags));
        }
        if self.durability.kind > 2 {
            return Err(format!("unknown durability mode {}", self.durability.kind));
        }
        Ok(())
    }
}

/// The static part of a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number (its file name).
    pub number: u64,
    /// The file size in bytes.
    pub capacity: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// Copy of the meta flags.
    pub flags: u32,
}

impl SegmentHeader {
    /// Encodes the static header with its CRC.
    pub fn encode(&self) -> [u8; 48] {
        let mut b = [0u8; 48];
        encode_common(&mut b, &SEGMENT_MAGIC, SEGMENT_HEADER as u32);
        b[16..24].copy_from_slice(&self.number.to_le_bytes());
        b[24..32].copy_from_slice(&self.capacity.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ns.to_le_bytes());
        b[40..44].copy_from_slice(&self.flags.to_le_bytes());
        seal(&mut b, SEGMENT_STATIC_LEN);
        b
    }

    /// Parses and validates a segment header against what the meta file
    /// says (`expect_number`, `expect_capacity`) and the file's real size.
    pub fn parse(
        bytes: &[u8],
        path: &Path,
        expect_number: u64,
        expect_capacity: u64,
        file_len: u64,
    ) -> Result<SegmentHeader> {
        check_header(bytes, path, "segment", &SEGMENT_MAGIC, SEGMENT_STATIC_LEN, SEGMENT_HEADER as u32)?;
        let header = SegmentHeader {
            number: le_u64(bytes, 16),
            capacity: le_u64(bytes, 24),
            created_ns: le_u64(bytes, 32),
            flags: le_u32(bytes, 40),
        };
        let c = header.capacity;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&c) || c % MIN_SEGMENT_SIZE != 0 {
            return Err(Error::corrupt(path, format!("segment capacity {c} is impossible")));
        }
        if header.number != expect_number {
            return Err(Error::corrupt(
                path,
                format!("segment number {} does not match its file name {expect_number}", header.number),
            ));
        }
        if header.capacity != expect_capacity || file_len < expect_capacity {
            return Err(Error::corrupt(
                path,
                format!(
                    "segment capacity {} / file size {file_len} do not match the queue's segment size {expect_capacity}",
                    header.capacity
                ),
            ));
        }
        Ok(header)
    }
}

/// Splits a tail word into (count, offset).
pub const fn split_tail(tail: u64) -> (u64, u64) {
    (tail >> 32, tail & 0xffff_ffff)
}

/// What a scan of one segment image found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentScan {
    /// Committed, checksum-valid messages.
    pub messages: u64,
    /// Claims covered by padding.
    pub abandoned: u64,
    /// Whether an end-of-segment frame was found.
    pub sealed: bool,
    /// Claims seen in the tail but not (yet) committed.
    pub pending: u64,
    /// Corrupt records: (sequence number, offset, reason).
    pub corrupt: Vec<(u32, u64, String)>,
    /// Timestamp of the first message, if any.
    pub first_timestamp: Option<u64>,
}

/// Walks every frame of a segment image (a byte snapshot of the whole
/// file) and validates it. Never panics and never reads out of bounds,
/// whatever the bytes; structural damage ends the walk with an entry in
/// `corrupt`. The walk stops at the first claim that is not committed.
pub fn scan_segment(image: &[u8], path: &Path, number: u64, capacity: u64) -> Result<SegmentScan> {
    scan_segment_with(image, path, number, capacity, max_payload_for(capacity), &mut |_, _| None)
}

/// [`scan_segment`], asking `pending(seq, offset)` at each claim that is not
/// committed where the claim ends (`(next seq, next offset)`), to go on
/// past it; `None` stops the walk there. The answer is checked against the
/// segment's bounds like any other value. A message longer than `max_len`
/// (the queue's maximum message size) is no frame, as for readers.
pub fn scan_segment_with(
    image: &[u8],
    path: &Path,
    number: u64,
    capacity: u64,
    max_len: u64,
    pending: &mut dyn FnMut(u64, u64) -> Option<(u64, u64)>,
) -> Result<SegmentScan> {
    SegmentHeader::parse(image, path, number, capacity, image.len() as u64)?;
    let capacity = capacity.min(image.len() as u64);
    let (count, _) = split_tail(le_u64(image, SEG_TAIL as usize));
    let final_count = le_u64(image, SEG_FINAL_COUNT as usize);
    let limit = count.min(final_count).min(capacity / 4);
    let mut scan = SegmentScan::default();
    let (mut seq, mut offset) = (0u64, SEGMENT_HEADER);
    while seq < limit {
        let Some(word) = image.get(offset as usize..offset as usize + 8) else {
            scan.corrupt.push((seq as u32, offset, "frame header past the end".into()));
            return Ok(scan);
        };
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        match FrameWord::decode(word) {
            FrameWord::Empty => match pending(seq, offset) {
                Some((next, end))
                    if next > seq
                        && next <= limit
                        && end > offset
                        && check_frame(capacity, offset, end - offset, seq, next - seq).is_ok() =>
                {
                    scan.pending += next - seq;
                    (seq, offset) = (next, end);
                }
                _ => {
                    scan.pending += limit - seq;
                    return Ok(scan);
                }
            },
            FrameWord::EndOfSegment => {
                scan.sealed = true;
                return Ok(scan);
            }
            FrameWord::Padding { bytes, claims } => {
                if let Err(e) = check_frame(capacity, offset, bytes as u64, seq, claims as u64) {
                    scan.corrupt.push((seq as u32, offset, e.into()));
                    return Ok(scan);
                }
                scan.abandoned += claims as u64;
                seq += claims as u64;
                offset += bytes as u64;
            }
            FrameWord::Message { len, .. } if len as u64 > max_len => {
                scan.corrupt.push((seq as u32, offset, format!("impossible length {len}")));
                return Ok(scan);
            }
            FrameWord::Message { len, crc, meta } => {
                let bytes = frame_size(len as u64);
                if let Err(e) = check_frame(capacity, offset, bytes, seq, 1) {
                    scan.corrupt.push((seq as u32, offset, e.into()));
                    return Ok(scan);
                }
                scan.message(image, number, (seq, offset), (len, crc, meta));
                seq += 1;
                offset += bytes;
            }
            FrameWord::Invalid => {
                scan.corrupt.push((seq as u32, offset, format!("invalid frame state word {word:#018x}")));
                return Ok(scan);
            }
        }
    }
    if final_count != u64::MAX && final_count <= count {
        scan.sealed = true;
        scan.past_seal(image, number, capacity, max_len, (seq, offset));
    }
    Ok(scan)
}

impl SegmentScan {
    /// Checks the message of `len` bytes framed at `offset` (a frame
    /// checked to lie in the frame area), as its state word describes it,
    /// and counts it.
    fn message(&mut self, image: &[u8], number: u64, (seq, offset): (u64, u64), word: (u32, u32, bool)) {
        let (len, crc, meta) = word;
        let start = (offset + FRAME_HEADER) as usize;
        let Some(payload) = image.get(start..start + len as usize) else {
            self.corrupt.push((seq as u32, offset, "record past the end of the file".into()));
            return;
        };
        let ts = le_u64(image, offset as usize + 8);
        if record_crc(payload, make_index(number, seq as u32), ts) != crc {
            self.corrupt.push((seq as u32, offset, "checksum mismatch".into()));
        } else if split_meta(payload, meta).is_none() {
            self.corrupt.push((seq as u32, offset, "metadata block longer than the record".into()));
        } else {
            self.messages += 1;
            self.first_timestamp.get_or_insert(ts);
        }
    }

    /// Goes on past the final count of a sealed segment from `(seq,
    /// offset)`, as readers do, who stop only at an empty or end frame, or
    /// at junk with no usable index slot after it. Normally the end frame
    /// is right there. But a seal that found junk at its claim (a machine
    /// crash's stale tail, see "Durability" in `docs/queue-format.md`)
    /// left the junk: it may be a message committed before the crash,
    /// which readers deliver, or junk they step over to the next claim
    /// through its index slot (a claim taken at the same time past the
    /// junk may have committed). What they read is counted here.
    fn past_seal(&mut self, image: &[u8], number: u64, capacity: u64, max_len: u64, at: (u64, u64)) {
        let (mut seq, mut offset) = at;
        // Each step moves on by at least one claim.
        while seq < capacity / 4 {
            let word = image.get(offset as usize..offset as usize + 8).map_or(u64::MAX, |w| le_u64(w, 0));
            match FrameWord::decode(word) {
                FrameWord::Message { len, crc, meta }
                    if len as u64 <= max_len
                        && check_frame(capacity, offset, frame_size(len as u64), seq, 1).is_ok() =>
                {
                    self.message(image, number, (seq, offset), (len, crc, meta));
                    seq += 1;
                    offset += frame_size(len as u64);
                }
                FrameWord::Padding { bytes, claims }
                    if check_frame(capacity, offset, bytes as u64, seq, claims as u64).is_ok() =>
                {
                    self.abandoned += claims as u64;
                    seq += claims as u64;
                    offset += bytes as u64;
                }
                FrameWord::Empty | FrameWord::EndOfSegment => return,
                _ => {
                    // The next claim's slot, if the slot area reaches it.
                    if seq + 1 >= capacity / 4 {
                        return;
                    }
                    let slot = index_slot_offset(capacity, seq + 1) as usize;
                    let recorded = image.get(slot..slot + 4).map_or(0, |w| le_u32(w, 0));
                    let Some(next) = slot_frame(recorded, capacity, seq + 1) else { return };
                    (seq, offset) = (seq + 1, next);
                }
            }
        }
    }
}

/// The frame start that index slot `seq` records as `recorded`, if it is
/// usable: set, not marked abandoned, and a frame start that fits.
pub(crate) fn slot_frame(recorded: u32, capacity: u64, seq: u64) -> Option<u64> {
    if recorded == 0 || recorded & crate::recovery::SLOT_ABANDONED != 0 {
        return None;
    }
    let o = recorded as u64;
    (o >= SEGMENT_HEADER && o % FRAME_ALIGN == 0 && claim_fits(capacity, seq, 1, o, FRAME_HEADER))
        .then_some(o)
}

/// Fuzzing entry point: parses `data` as a meta header and as a segment
/// image; must never panic.
pub fn fuzz_parse(data: &[u8]) {
    let path = Path::new("fuzz");
    let _ = MetaHeader::parse(data, path);
    if data.len() >= 48 {
        let number = le_u64(data, 16);
        let capacity = le_u64(data, 24);
        let _ = scan_segment(data, path, number, capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_inline_crc_matches_the_crate(seed: u32, bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert_eq!(crc32c_append(seed, &bytes), crc32c::crc32c_append(seed, &bytes));
        }

        /// Readers' `copy_record` and producers' `write_record`.
        #[test]
        fn copying_a_record_copies_it_and_gives_its_crc(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            from in 0usize..8,
            to in 0usize..8,
            index: u64,
            timestamp: u64,
        ) {
            // Any alignment on both sides (`from` 0 is 8-aligned, for
            // `copy_record`'s inline path; others take its fallback); past
            // 256 bytes, the fallback for both.
            let start = bytes.as_ptr().align_offset(8).saturating_add(from).min(bytes.len());
            let src = &bytes[start..];
            for write in [false, true] {
                let mut dst = vec![0xA5u8; src.len() + to + 3];
                // SAFETY: `dst` has room for `src.len()` bytes at `to`, and
                // the two buffers are distinct.
                let crc = unsafe {
                    let (s, d) = (src.as_ptr(), dst.as_mut_ptr().add(to));
                    if write {
                        write_record(s, d, src.len(), index, timestamp)
                    } else {
                        copy_record(s, d, src.len(), index, timestamp)
                    }
                };
                prop_assert_eq!(&dst[to..to + src.len()], src);
                prop_assert!(dst[..to].iter().chain(&dst[to + src.len()..]).all(|&b| b == 0xA5), "wrote outside");
                prop_assert_eq!(crc, record_crc(src, index, timestamp));
            }
        }
    }

    #[test]
    fn the_inline_crc_matches_at_every_length_around_the_cutoff() {
        let bytes: Vec<u8> = (0..SMALL_CRC + 16).map(|i| (i * 37) as u8).collect();
        for len in 0..bytes.len() {
            assert_eq!(crc32c_append(7, &bytes[..len]), crc32c::crc32c_append(7, &bytes[..len]), "len {len}");
        }
    }
}
