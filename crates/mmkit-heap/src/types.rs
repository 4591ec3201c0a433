//! Plain-data element types, their fingerprints, and the hash the map uses.

use bytemuck::Pod;

/// What the registry records about a type, to refuse a process compiled
/// with another layout: name, size, alignment and a layout fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeDesc {
    /// `std::any::type_name`, or a name the type chose.
    pub name: &'static str,
    /// `size_of`.
    pub size: u64,
    /// `align_of`.
    pub align: u64,
    /// A hash of the layout: by default of the name, size and alignment;
    /// [`shm_type!`](crate::shm_type) adds every field's name, type and
    /// offset.
    pub fingerprint: u64,
}

impl TypeDesc {
    /// The description of a type from its name, size and alignment.
    pub fn of<T>(name: &'static str) -> TypeDesc {
        let (size, align) = (size_of::<T>() as u64, align_of::<T>() as u64);
        let fingerprint = fnv(fnv(fnv(FNV_SEED, name.as_bytes()), &size.to_le_bytes()), &align.to_le_bytes());
        TypeDesc { name, size, align, fingerprint }
    }

    /// This description with `extra` (field names, offsets...) hashed into
    /// the fingerprint.
    pub fn with(mut self, extra: &[u8]) -> TypeDesc {
        self.fingerprint = fnv(self.fingerprint, extra);
        self
    }
}

/// Plain data that may live in a shared heap: `Pod` (no pointers, no
/// `Drop`, every bit pattern valid), with a [`TypeDesc`] the registry
/// checks on open.
///
/// Implement it with an empty `impl ShmType for MyType {}` (the fingerprint
/// covers name, size and alignment), or with [`shm_type!`](crate::shm_type),
/// which also hashes each field's name, type and offset.
pub trait ShmType: Pod + Send + Sync {
    /// Whether the type is a primitive integer of at most 8 bytes. A map
    /// places keys of such a type by their value (see [`Bytes::BY_VALUE`]);
    /// leave it `false` for your own types.
    const INTEGER: bool = false;
    /// The type's description; see [`TypeDesc`].
    fn type_desc() -> TypeDesc {
        TypeDesc::of::<Self>(std::any::type_name::<Self>())
    }
}

macro_rules! prim {
    ($($t:ty),*) => { $(impl ShmType for $t {})* };
}
prim!(u128, i128, f32, f64);

macro_rules! integer {
    ($($t:ty),*) => { $(impl ShmType for $t { const INTEGER: bool = true; })* };
}
integer!(u8, u16, u32, u64, i8, i16, i32, i64, usize, isize);

impl<T: ShmType, const N: usize> ShmType for [T; N]
where
    [T; N]: Pod,
{
    fn type_desc() -> TypeDesc {
        let inner = T::type_desc();
        TypeDesc::of::<Self>(std::any::type_name::<Self>()).with(&inner.fingerprint.to_le_bytes())
    }
}

/// Implements [`ShmType`] for a `#[repr(C)]` struct that derives `Pod`,
/// with a fingerprint over every field's name, type and offset, so a
/// process that reorders, renames or retypes a field is refused.
///
/// ```
/// use bytemuck::{Pod, Zeroable};
/// #[repr(C)]
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// struct Point { x: f64, y: f64 }
/// mmkit_heap::shm_type!(Point { x: f64, y: f64 });
/// # use mmkit_heap::ShmType;
/// assert_eq!(Point::type_desc().size, 16);
/// ```
#[macro_export]
macro_rules! shm_type {
    ($t:ident { $($field:ident : $fty:ty),* $(,)? }) => {
        impl $crate::ShmType for $t {
            fn type_desc() -> $crate::TypeDesc {
                let mut desc = $crate::TypeDesc::of::<$t>(::std::any::type_name::<$t>());
                $(
                    desc = desc.with(stringify!($field).as_bytes())
                        .with(::std::any::type_name::<$fty>().as_bytes())
                        .with(&(::std::mem::offset_of!($t, $field) as u64).to_le_bytes());
                )*
                desc
            }
        }
    };
}

/// Keys and values of a [`ShmHashMap`](crate::ShmHashMap): plain data
/// ([`ShmType`]), `str` or `[u8]`, stored as bytes.
pub trait Bytes {
    /// What a lookup returns: the type itself, `String` or `Vec<u8>`.
    type Owned;
    /// The stored size when every value has the same one (plain data);
    /// `None` for `str` and `[u8]`. Lets the map pick its fixed-size paths
    /// at compile time.
    const SIZE: Option<usize> = None;
    /// Whether a map places these keys by value: the key's value picks
    /// its slot, as Boost's and libstdc++'s identity hash of integers do,
    /// so keys 0, 1, 2... fill neighbouring slots and a lookup of one of
    /// them finds it in its home line. True for the integer types
    /// ([`ShmType::INTEGER`]). The value's digits are summed, so keys
    /// that share their low bits still get distinct homes, and the probe
    /// past the home line strides by a mixing hash, never walking along
    /// a run (docs/heap-format.md).
    const BY_VALUE: bool = false;
    /// The registry's description of the type.
    fn bytes_desc() -> TypeDesc;
    /// The stored representation.
    fn as_bytes(&self) -> &[u8];
    /// Decodes stored bytes; `None` if they cannot be this type (a wrong
    /// length, invalid UTF-8).
    fn decode(bytes: &[u8]) -> Option<Self::Owned>;
}

impl<T: ShmType> Bytes for T {
    type Owned = T;
    const SIZE: Option<usize> = Some(size_of::<T>());
    const BY_VALUE: bool = T::INTEGER && size_of::<T>() <= 8;
    fn bytes_desc() -> TypeDesc {
        T::type_desc()
    }
    #[inline]
    fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }
    #[inline]
    fn decode(bytes: &[u8]) -> Option<T> {
        (bytes.len() == size_of::<T>()).then(|| bytemuck::pod_read_unaligned(bytes))
    }
}

impl Bytes for str {
    type Owned = String;
    fn bytes_desc() -> TypeDesc {
        TypeDesc { name: "str", size: 0, align: 1, fingerprint: fnv(FNV_SEED, b"str") }
    }
    fn as_bytes(&self) -> &[u8] {
        str::as_bytes(self)
    }
    fn decode(bytes: &[u8]) -> Option<String> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Bytes for [u8] {
    type Owned = Vec<u8>;
    fn bytes_desc() -> TypeDesc {
        TypeDesc { name: "[u8]", size: 0, align: 1, fingerprint: fnv(FNV_SEED, b"[u8]") }
    }
    fn as_bytes(&self) -> &[u8] {
        self
    }
    fn decode(bytes: &[u8]) -> Option<Vec<u8>> {
        Some(bytes.to_vec())
    }
}

pub(crate) const FNV_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, for fingerprints (not for the map: too slow).
pub(crate) const fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xd6e8_feb8_6659_fd93;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The map's hash of a key's bytes (part of the format: every process
/// must compute the same value). A folded-multiply hash over 8-byte
/// little-endian words; documented in `docs/heap-format.md`.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = K0 ^ (bytes.len() as u64).wrapping_mul(K1);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = fold(h ^ u64::from_le_bytes(w), K1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = fold(h ^ u64::from_le_bytes(w), K1);
    }
    fold(h, K0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        // The hash is part of the on-disk format.
        assert_eq!(hash_bytes(b""), hash_bytes(b""));
        assert_ne!(hash_bytes(&1u64.to_le_bytes()), hash_bytes(&2u64.to_le_bytes()));
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"a\0"));
    }

    #[test]
    fn fingerprints_differ_by_layout() {
        assert_ne!(u32::type_desc().fingerprint, i32::type_desc().fingerprint);
        assert_ne!(<[u8; 4]>::type_desc().fingerprint, <[u8; 5]>::type_desc().fingerprint);
    }
}
