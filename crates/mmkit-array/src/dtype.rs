//! Element types and numpy dtype descriptors.

use std::fmt;

use bytemuck::{Pod, Zeroable};

/// The numpy dtypes this crate maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `|b1`, numpy's `bool_`: one byte, 0 or 1.
    Bool,
    /// `|i1`.
    I8,
    /// `<i2`.
    I16,
    /// `<i4`.
    I32,
    /// `<i8`.
    I64,
    /// `|u1`.
    U8,
    /// `<u2`.
    U16,
    /// `<u4`.
    U32,
    /// `<u8`.
    U64,
    /// `<f2`, half precision.
    F16,
    /// `<f4`.
    F32,
    /// `<f8`.
    F64,
    /// `<c8`, two `f32`.
    C64,
    /// `<c16`, two `f64`.
    C128,
}

/// Every supported dtype, for tests and help texts.
pub const ALL_DTYPES: [DType; 14] = [
    DType::Bool,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::F16,
    DType::F32,
    DType::F64,
    DType::C64,
    DType::C128,
];

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::I8 | DType::U8 => 1,
            DType::I16 | DType::U16 | DType::F16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 | DType::C64 => 8,
            DType::C128 => 16,
        }
    }

    /// numpy's kind character and size, as in `"f4"`.
    pub fn code(self) -> &'static str {
        match self {
            DType::Bool => "b1",
            DType::I8 => "i1",
            DType::I16 => "i2",
            DType::I32 => "i4",
            DType::I64 => "i8",
            DType::U8 => "u1",
            DType::U16 => "u2",
            DType::U32 => "u4",
            DType::U64 => "u8",
            DType::F16 => "f2",
            DType::F32 => "f4",
            DType::F64 => "f8",
            DType::C64 => "c8",
            DType::C128 => "c16",
        }
    }

    /// numpy's name, as `numpy.dtype(...).name` prints it (`float32`,
    /// `complex64`, `bool`). Used wherever mmkit prints a dtype.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
        }
    }

    /// The Rust-style short name (`f32`, `u8`, `c64`...), accepted on input
    /// by [`DType::from_name`] but never printed: `c64` is numpy's
    /// `complex64` (two `f32`) here, while ndarray-linalg's `c64` is a
    /// complex of two `f64`, so output uses [`DType::name`].
    pub fn rust_name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::F16 => "f16",
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::C64 => "c64",
            DType::C128 => "c128",
        }
    }

    /// Parses numpy's name (`float32`), a Rust-style name (`f32`), a
    /// little-endian or native descr (`<f4`, `=f4`, `|u1`, `?`) or a bare
    /// code (`f4`). Case does not matter, except in one-letter codes.
    /// `i8` and `u8` are the Rust types (one byte); numpy's eight-byte
    /// integers need a name or their byte order: `int64`, `<i8`.
    pub fn from_name(name: &str) -> Option<DType> {
        let lower = name.to_ascii_lowercase();
        ALL_DTYPES
            .into_iter()
            .find(|d| d.name() == lower || d.rust_name() == lower)
            .or_else(|| Descr::parse(name).ok().filter(|d| !d.big_endian).map(|d| d.dtype))
            .or_else(|| Descr::parse(&lower).ok().filter(|d| !d.big_endian).map(|d| d.dtype))
    }

    /// Size of one scalar to byte-swap: half the element for complex types.
    fn swap_unit(self) -> usize {
        match self {
            DType::C64 => 4,
            DType::C128 => 8,
            other => other.size(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed dtype descriptor: the type and its byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Descr {
    /// The element type.
    pub dtype: DType,
    /// True for `>` (big-endian) multi-byte data.
    pub big_endian: bool,
}

/// Why a descriptor string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescrError {
    /// `|O`: Python object pointers, meaningless outside the process.
    Object,
    /// Strings, datetimes, void and other kinds this crate does not map.
    Unsupported,
    /// Not a dtype string numpy would write.
    Unknown,
}

impl DescrError {
    /// A sentence for error messages.
    pub fn reason(self) -> &'static str {
        match self {
            DescrError::Object => "object arrays hold Python pointers and cannot be mapped",
            DescrError::Unsupported => "this kind of dtype (strings, datetimes, void) is not supported",
            DescrError::Unknown => "not a dtype this crate knows",
        }
    }
}

impl Descr {
    /// The little-endian (native) descriptor of `dtype`.
    pub fn native(dtype: DType) -> Descr {
        Descr { dtype, big_endian: false }
    }

    /// Parses a simple descriptor such as `<f4`, `|b1`, `>i8` or `?`.
    pub fn parse(s: &str) -> Result<Descr, DescrError> {
        let (order, rest) = match s.as_bytes().first() {
            Some(b'<' | b'>' | b'|' | b'=') => s.split_at(1),
            _ => ("", s),
        };
        let dtype = match rest {
            "?" | "b1" => DType::Bool,
            "i1" | "b" => DType::I8,
            "u1" | "B" => DType::U8,
            _ => match ALL_DTYPES.into_iter().find(|d| d.code() == rest) {
                Some(d) => d,
                None => return Err(classify_unknown(rest)),
            },
        };
        let big_endian = match order {
            ">" => dtype.size() > 1,
            // '=' is native order; mmkit only runs on little-endian hosts.
            _ => false,
        };
        Ok(Descr { dtype, big_endian })
    }

    /// The descriptor as numpy writes it (`<f4`, `|u1`, `>c16`).
    pub fn to_numpy(self) -> String {
        let order = if self.dtype.size() == 1 {
            '|'
        } else if self.big_endian {
            '>'
        } else {
            '<'
        };
        format!("{order}{}", self.dtype.code())
    }
}

fn classify_unknown(rest: &str) -> DescrError {
    match rest.as_bytes().first() {
        Some(b'O') => DescrError::Object,
        Some(b'S' | b'U' | b'V' | b'M' | b'm' | b'a') => DescrError::Unsupported,
        _ => DescrError::Unknown,
    }
}

impl fmt::Display for Descr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_numpy())
    }
}

/// A plain-old-data type that an `.npy` dtype describes exactly.
///
/// Implemented for the integer and float primitives, [`half::f16`],
/// [`Bool`], [`Complex32`] and [`Complex64`].
pub trait Element: Pod + Send + Sync + fmt::Debug + PartialEq {
    /// The matching dtype.
    const DTYPE: DType;

    /// The value with each scalar's bytes reversed (for big-endian files).
    fn byte_swapped(self) -> Self {
        let mut v = self;
        let unit = Self::DTYPE.swap_unit();
        for chunk in bytemuck::bytes_of_mut(&mut v).chunks_exact_mut(unit) {
            chunk.reverse();
        }
        v
    }
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {
        $(impl Element for $t {
            const DTYPE: DType = DType::$d;
        })*
    };
}

element!(
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    half::f16 => F16, f32 => F32, f64 => F64,
    Bool => Bool, Complex32 => C64, Complex64 => C128,
);

/// numpy's `bool_`: one byte, read as true when non-zero.
///
/// A `Rust` `bool` cannot be used directly because a mapped byte may hold
/// any value, and a `bool` other than 0 or 1 is undefined behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Pod, Zeroable)]
#[repr(transparent)]
pub struct Bool(pub u8);

impl Bool {
    /// True when the byte is non-zero, as numpy treats it.
    pub fn get(self) -> bool {
        self.0 != 0
    }
}

impl From<bool> for Bool {
    fn from(b: bool) -> Self {
        Bool(u8::from(b))
    }
}

impl From<Bool> for bool {
    fn from(b: Bool) -> Self {
        b.get()
    }
}

/// numpy's `complex64`: a pair of `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
#[repr(C)]
pub struct Complex32 {
    /// Real part.
    pub re: f32,
    /// Imaginary part.
    pub im: f32,
}

/// numpy's `complex128`: a pair of `f64`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
#[repr(C)]
pub struct Complex64 {
    /// Real part.
    pub re: f64,
    /// Imaginary part.
    pub im: f64,
}

/// Elements that convert to `f64` for statistics.
pub trait ToF64: Element {
    /// The value as `f64` (`true` is 1).
    fn to_f64(self) -> f64;
}

macro_rules! to_f64 {
    ($($t:ty),*) => {
        $(impl ToF64 for $t {
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
        })*
    };
}

to_f64!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

impl ToF64 for half::f16 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl ToF64 for Bool {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descr_round_trip() {
        for d in ALL_DTYPES {
            for big in [false, true] {
                let descr = Descr { dtype: d, big_endian: big && d.size() > 1 };
                assert_eq!(Descr::parse(&descr.to_numpy()), Ok(descr));
            }
        }
        assert_eq!(Descr::parse("|O"), Err(DescrError::Object));
        assert_eq!(Descr::parse("<U10"), Err(DescrError::Unsupported));
        assert_eq!(Descr::parse("<q7"), Err(DescrError::Unknown));
        assert_eq!(Descr::parse("=f8"), Ok(Descr::native(DType::F64)));
    }

    #[test]
    fn names() {
        assert_eq!(DType::from_name("f32"), Some(DType::F32));
        assert_eq!(DType::from_name("float64"), Some(DType::F64));
        assert_eq!(DType::from_name("<i2"), Some(DType::I16));
        assert_eq!(DType::from_name("c16"), Some(DType::C128));
        assert_eq!(DType::from_name("bool"), Some(DType::Bool));
        assert_eq!(DType::from_name("x"), None);
        assert_eq!(DType::from_name(">f4"), None, "big-endian is not a type to create");
        assert_eq!(DType::from_name("B"), Some(DType::U8));
        assert_eq!(DType::from_name("i8"), Some(DType::I8));
        assert_eq!(DType::from_name("<i8"), Some(DType::I64));
        assert_eq!(DType::from_name("u8"), Some(DType::U8));
        for d in ALL_DTYPES {
            for text in [d.name(), d.rust_name(), d.code(), &Descr::native(d).to_numpy()] {
                if text == d.code() && ALL_DTYPES.iter().any(|o| o.rust_name() == text) {
                    continue; // i8, u8: the Rust name wins (tested below)
                }
                assert_eq!(DType::from_name(text), Some(d), "{text}");
                assert_eq!(DType::from_name(&text.to_ascii_uppercase()), Some(d), "{text}");
            }
        }
    }

    #[test]
    fn printed_names_are_numpys() {
        assert_eq!(DType::C64.to_string(), "complex64");
        assert_eq!(DType::C128.to_string(), "complex128");
        assert_eq!(DType::F16.to_string(), "float16");
        assert_eq!(DType::Bool.to_string(), "bool");
        assert_eq!(DType::U32.to_string(), "uint32");
    }

    #[test]
    fn swap() {
        assert_eq!(0x0102_0304u32.byte_swapped(), 0x0403_0201);
        let c = Complex32 { re: 1.5, im: -2.0 };
        let s = c.byte_swapped();
        assert_eq!(s.re.to_bits(), 1.5f32.to_bits().swap_bytes());
        assert_eq!(s.byte_swapped(), c);
    }
}
