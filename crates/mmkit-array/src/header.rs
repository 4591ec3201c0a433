//! The `.npy` header: parsing (versions 1.0, 2.0, 3.0) and writing.
//!
//! Layout: the magic `\x93NUMPY`, a major and a minor version byte, the
//! header length (little-endian `u16` for 1.0, `u32` for 2.0 and 3.0),
//! then a Python dict literal with the keys `descr`, `fortran_order` and
//! `shape`, padded with spaces and ended by `\n` so the data starts on a
//! 64-byte boundary. See `docs/npy-format.md`.

use std::borrow::Cow;

use crate::dtype::{Descr, DescrError};

/// `text` with its control characters (newlines, ESC, ...) escaped as
/// Rust does (`\n`, `\u{1b}`), for showing text from a header, which
/// may be hostile, in an error message or on a terminal: it stays on one
/// line and cannot move the cursor or change colours.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The six magic bytes that start every `.npy` file.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The data offset is a multiple of this (numpy has padded to 64 since 1.14).
pub const ALIGN: usize = 64;
/// Longest header accepted; numpy itself refuses more than 10,000 bytes by default.
pub const MAX_HEADER: usize = 1 << 20;
/// Width of the space-padded first-axis field that appendable files keep.
pub const COUNT_FIELD: usize = 16;
/// Largest first-axis length an appendable header can hold.
pub const COUNT_MAX: u64 = 9_999_999_999_999_999;
/// Deepest nesting accepted in a header literal (structured dtypes nest).
const MAX_DEPTH: u32 = 32;
/// Most axes an array may have: numpy's own limit (`NPY_MAXDIMS`). Views
/// recurse once per axis, so this also bounds their stack use.
pub const MAX_NDIM: usize = 64;

/// The format version of an `.npy` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// 1.0 when the header fits a 16-bit length, else 2.0 (what numpy does).
    #[default]
    Auto,
    /// 1.0: 16-bit header length, latin-1 text.
    V1,
    /// 2.0: 32-bit header length, latin-1 text.
    V2,
    /// 3.0: 32-bit header length, UTF-8 text.
    V3,
}

impl Version {
    /// `(major, minor)`, or `None` for `Auto`.
    pub fn numbers(self) -> Option<(u8, u8)> {
        match self {
            Version::Auto => None,
            Version::V1 => Some((1, 0)),
            Version::V2 => Some((2, 0)),
            Version::V3 => Some((3, 0)),
        }
    }

    fn len_bytes(self) -> usize {
        if self == Version::V1 { 2 } else { 4 }
    }
}

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `(major, minor)` format version.
    pub version: (u8, u8),
    /// The `descr` value: the string for simple dtypes (`<f4`), or the
    /// literal's source text for structured ones.
    pub descr: String,
    /// Whether `descr` was a plain string (not a structured list).
    pub simple_descr: bool,
    /// True for Fortran (column-major) order.
    pub fortran_order: bool,
    /// The array's shape; empty for a 0-d array.
    pub shape: Vec<usize>,
    /// Where the data starts: magic, version, length field and dict text.
    pub data_offset: usize,
    /// Byte range, in the file, of the first shape entry and the spaces
    /// before it (for in-place updates by appenders), when that entry is
    /// at most [`COUNT_FIELD`] plain digits.
    pub count_span: Option<(usize, usize)>,
}

/// Why header bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not an `.npy` file (no magic, empty...).
    NotNpy(String),
    /// The input ends before the header does.
    Truncated {
        /// Bytes needed to finish the header.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// Malformed header.
    Bad(String),
}

impl Header {
    /// Reads the fixed prefix and returns the data offset (total header
    /// length). Needs at most 12 bytes.
    pub fn data_offset_of(bytes: &[u8]) -> Result<usize, ParseError> {
        if bytes.is_empty() {
            return Err(ParseError::NotNpy("the file is empty".into()));
        }
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(ParseError::NotNpy("missing the \\x93NUMPY magic".into()));
        }
        let (major, minor) = match bytes.get(6..8) {
            Some(v) => (v[0], v[1]),
            None => return Err(ParseError::Truncated { need: 8, have: bytes.len() }),
        };
        let (prefix, len) = match (major, minor) {
            (1, 0) => (10, bytes.get(8..10).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)),
            (2, 0) | (3, 0) => {
                (12, bytes.get(8..12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize))
            }
            _ => return Err(ParseError::Bad(format!("unsupported .npy version {major}.{minor}"))),
        };
        let len = len.ok_or(ParseError::Truncated { need: prefix, have: bytes.len() })?;
        if len > MAX_HEADER {
            return Err(ParseError::Bad(format!("header length {len} exceeds the {MAX_HEADER}-byte limit")));
        }
        Ok(prefix + len)
    }

    /// Parses a header from the start of a file. `bytes` may hold more
    /// than the header; it must hold at least the whole header.
    pub fn parse(bytes: &[u8]) -> Result<Header, ParseError> {
        let data_offset = Self::data_offset_of(bytes)?;
        if bytes.len() < data_offset {
            return Err(ParseError::Truncated { need: data_offset, have: bytes.len() });
        }
        let version = (bytes[6], bytes[7]);
        let prefix = if version.0 == 1 { 10 } else { 12 };
        let text = &bytes[prefix..data_offset];
        // Versions 1.0 and 2.0 are latin-1, which any byte is (only field
        // names of structured dtypes could use it; the dtype check decides).
        if version.0 == 3 && std::str::from_utf8(text).is_err() {
            return Err(ParseError::Bad("a version 3.0 header must be UTF-8".into()));
        }
        let mut p = Parser { s: text, pos: 0, depth: 0 };
        p.skip_ws();
        let dict = p.value()?;
        p.skip_ws();
        if p.pos != text.len() {
            return Err(ParseError::Bad(format!("unexpected text after the header dict at byte {}", p.pos)));
        }
        Self::from_dict(dict, text, prefix, version, data_offset)
    }

    fn from_dict(
        dict: Value,
        text: &[u8],
        prefix: usize,
        version: (u8, u8),
        data_offset: usize,
    ) -> Result<Header, ParseError> {
        let Value::Dict(entries) = dict else {
            return Err(ParseError::Bad("the header is not a dict".into()));
        };
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        for (key, value) in entries {
            let Value::Str(key) = key else {
                return Err(ParseError::Bad("a header key is not a string".into()));
            };
            let slot = match key.as_str() {
                "descr" => &mut descr,
                "fortran_order" => &mut fortran,
                "shape" => &mut shape,
                other => return Err(ParseError::Bad(format!("unexpected key {other:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(ParseError::Bad(format!("key {key:?} appears twice")));
            }
        }
        let missing = |k: &str| ParseError::Bad(format!("missing key {k:?}"));
        let (descr, simple_descr) = match descr.ok_or_else(|| missing("descr"))? {
            Value::Str(s) => (s, true),
            Value::List(span) | Value::Tuple(_, span) => {
                (String::from_utf8_lossy(&text[span.0..span.1]).into_owned(), false)
            }
            _ => return Err(ParseError::Bad("'descr' is neither a string nor a list".into())),
        };
        let fortran_order = match fortran.ok_or_else(|| missing("fortran_order"))? {
            Value::Bool(b) => b,
            _ => return Err(ParseError::Bad("'fortran_order' is not True or False".into())),
        };
        let Value::Tuple(items, span) = shape.ok_or_else(|| missing("shape"))? else {
            return Err(ParseError::Bad("'shape' is not a tuple".into()));
        };
        if items.len() > MAX_NDIM {
            return Err(ParseError::Bad(format!(
                "{} dimensions; numpy allows at most {MAX_NDIM}",
                items.len()
            )));
        }
        let mut dims = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::Int(n) => dims.push(
                    usize::try_from(n).map_err(|_| ParseError::Bad(format!("dimension {n} is too large")))?,
                ),
                _ => return Err(ParseError::Bad("'shape' holds something other than integers".into())),
            }
        }
        let count_span = (!dims.is_empty()).then(|| count_span(text, span.0)).flatten();
        let count_span = count_span.map(|(a, b)| (a + prefix, b + prefix));
        Ok(Header { version, descr, simple_descr, fortran_order, shape: dims, data_offset, count_span })
    }

    /// The element descriptor, or why it is not supported.
    pub fn parse_descr(&self) -> Result<Descr, DescrError> {
        if !self.simple_descr {
            return Err(DescrError::Unsupported);
        }
        Descr::parse(&self.descr)
    }

    /// Number of elements (product of the shape; 1 for 0-d), or `None` on overflow.
    pub fn element_count(&self) -> Option<usize> {
        element_count(&self.shape)
    }
}

/// Product of a shape's dimensions, `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// The span after `(` up to the first `,` or `)`, if it holds only spaces
/// then 1 to [`COUNT_FIELD`] digits: an appender rewrites the last
/// `COUNT_FIELD` bytes, which must then cover every digit (a longer run,
/// such as `0000000000000000000`, would leave stray leading digits).
fn count_span(text: &[u8], open: usize) -> Option<(usize, usize)> {
    let start = open + 1;
    let len = text[start..].iter().position(|&b| b == b',' || b == b')')?;
    let field = &text[start..start + len];
    let digits = field.iter().skip_while(|&&b| b == b' ');
    let n = digits.clone().count();
    let all_digits = digits.clone().all(u8::is_ascii_digit) && (1..=COUNT_FIELD).contains(&n);
    all_digits.then_some((start, start + len))
}

/// A Python literal, as much of the grammar as `.npy` headers use.
#[derive(Debug)]
enum Value {
    Str(String),
    Int(u64),
    Bool(bool),
    None,
    /// Items and the byte span of the whole tuple in the text.
    Tuple(Vec<Value>, (usize, usize)),
    /// Only the span is kept: lists appear in structured descrs, which are refused.
    List((usize, usize)),
    Dict(Vec<(Value, Value)>),
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: u32,
}

impl Parser<'_> {
    fn bad<T>(&self, what: &str) -> Result<T, ParseError> {
        Err(ParseError::Bad(format!("{what} at byte {} of the header text", self.pos)))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        self.skip_ws();
        if self.depth >= MAX_DEPTH {
            return self.bad("nesting too deep");
        }
        self.depth += 1;
        let v = match self.peek() {
            Some(b'{') => self.dict(),
            Some(b'(') => self.seq(b')').map(|(items, span)| Value::Tuple(items, span)),
            Some(b'[') => self.seq(b']').map(|(_, span)| Value::List(span)),
            Some(b'\'' | b'"') => self.string().map(Value::Str),
            Some(b'0'..=b'9') => self.int(),
            Some(b'-') => self.bad("negative number"),
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'_') => self.word(),
            Some(_) => self.bad("unexpected character"),
            None => self.bad("unexpected end"),
        };
        self.depth -= 1;
        v
    }

    fn dict(&mut self) -> Result<Value, ParseError> {
        self.pos += 1;
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Dict(entries));
            }
            let key = self.value()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return self.bad("expected ':'");
            }
            self.pos += 1;
            let value = self.value()?;
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return self.bad("expected ',' or '}'"),
            }
        }
    }

    /// A tuple or list; a parenthesised single value without a comma is
    /// not a tuple in Python, so it is refused.
    fn seq(&mut self, close: u8) -> Result<(Vec<Value>, (usize, usize)), ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                if close == b')' && items.len() == 1 && !trailing_comma {
                    return self.bad("a parenthesised value is not a tuple (missing ',')");
                }
                return Ok((items, (start, self.pos)));
            }
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    trailing_comma = true;
                }
                Some(c) if c == close => trailing_comma = false,
                _ => return self.bad("expected ',' or a closing bracket"),
            }
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let quote = self.s[self.pos];
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return self.bad("unterminated string"),
                Some(b'\\') => {
                    let Some(&c) = self.s.get(self.pos + 1) else {
                        return self.bad("unterminated string");
                    };
                    out.push(c);
                    self.pos += 2;
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn int(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let mut n: u64 = 0;
        let mut last_underscore = false;
        while let Some(c) = self.peek() {
            match c {
                b'0'..=b'9' => {
                    n = match n.checked_mul(10).and_then(|n| n.checked_add(u64::from(c - b'0'))) {
                        Some(n) => n,
                        None => return self.bad("integer too large"),
                    };
                    last_underscore = false;
                }
                b'_' if !last_underscore && self.pos > start => last_underscore = true,
                _ => break,
            }
            self.pos += 1;
        }
        if last_underscore {
            return self.bad("bad integer literal");
        }
        if self.s[start] == b'0' && self.pos - start > 1 && n != 0 {
            return self.bad("leading zeros in an integer");
        }
        if let Some(b'L' | b'l') = self.peek() {
            // Python 2 long suffix, found in old version 1.0 files.
            self.pos += 1;
        }
        if let Some(b'.' | b'e' | b'E' | b'j' | b'x' | b'o' | b'b') = self.peek() {
            return self.bad("not an integer");
        }
        Ok(Value::Int(n))
    }

    fn word(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        while let Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_') = self.peek() {
            self.pos += 1;
        }
        match &self.s[start..self.pos] {
            b"True" => Ok(Value::Bool(true)),
            b"False" => Ok(Value::Bool(false)),
            b"None" => Ok(Value::None),
            _ => {
                self.pos = start;
                self.bad("unknown name")
            }
        }
    }
}

/// What to write in a new header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSpec {
    /// Element type and byte order.
    pub descr: Descr,
    /// Fortran (column-major) order.
    pub fortran_order: bool,
    /// The shape.
    pub shape: Vec<usize>,
    /// The format version.
    pub version: Version,
    /// Keep the first axis in a fixed-width, 16-byte-aligned field so an
    /// appender can update it in place with one store.
    pub growable: bool,
}

impl HeaderSpec {
    /// Encodes the header: magic through the final `\n`, a multiple of 64 bytes long.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let version = match self.version {
            Version::Auto => {
                let v1 = self.encode_as(Version::V1)?;
                if v1.len() - 10 <= usize::from(u16::MAX) {
                    return Ok(v1);
                }
                Version::V2
            }
            v => v,
        };
        let out = self.encode_as(version)?;
        if version == Version::V1 && out.len() - 10 > usize::from(u16::MAX) {
            return Err("the header is too long for version 1.0; use 2.0".into());
        }
        Ok(out)
    }

    /// Encodes the header padded to exactly `total` bytes (to rewrite a
    /// header in place without moving the data). `version` must not be `Auto`.
    pub fn encode_to_len(&self, version: Version, total: usize) -> Result<Vec<u8>, String> {
        if version == Version::Auto {
            return Err("an in-place header needs an explicit version".into());
        }
        self.encode_padded(version, Some(total))
    }

    fn encode_as(&self, version: Version) -> Result<Vec<u8>, String> {
        self.encode_padded(version, None)
    }

    fn encode_padded(&self, version: Version, total: Option<usize>) -> Result<Vec<u8>, String> {
        if self.shape.len() > MAX_NDIM {
            return Err(format!("{} dimensions; numpy allows at most {MAX_NDIM}", self.shape.len()));
        }
        let prefix = MAGIC.len() + 2 + version.len_bytes();
        let mut dict = format!(
            "{{'descr': '{}', 'fortran_order': {}, 'shape': (",
            self.descr.to_numpy(),
            if self.fortran_order { "True" } else { "False" }
        );
        for (i, d) in self.shape.iter().enumerate() {
            if i == 0 && self.growable {
                let pad = (COUNT_FIELD - (prefix + dict.len()) % COUNT_FIELD) % COUNT_FIELD;
                dict.extend(std::iter::repeat_n(' ', pad));
                dict.push_str(std::str::from_utf8(&count_field(*d as u64)?).unwrap_or_default());
            } else {
                dict.push_str(&d.to_string());
            }
            if i + 1 < self.shape.len() || self.shape.len() == 1 {
                dict.push(',');
            }
            if i + 1 < self.shape.len() {
                dict.push(' ');
            }
        }
        if self.growable && self.shape.is_empty() {
            return Err("a 0-d array cannot grow".into());
        }
        dict.push_str("), }");
        let unpadded = prefix + dict.len() + 1;
        let padded = total.unwrap_or(unpadded.div_ceil(ALIGN) * ALIGN);
        if padded < unpadded {
            return Err(format!("the header needs {unpadded} bytes but only {padded} are available"));
        }
        dict.extend(std::iter::repeat_n(' ', padded - unpadded));
        dict.push('\n');
        let (major, minor) = version.numbers().unwrap_or((1, 0));
        let mut out = Vec::with_capacity(padded);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[major, minor]);
        if version == Version::V1 {
            let len = u16::try_from(dict.len()).map_err(|_| "header too long for version 1.0".to_string())?;
            out.extend_from_slice(&len.to_le_bytes());
        } else {
            let len = u32::try_from(dict.len()).map_err(|_| "header too long".to_string())?;
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        Ok(out)
    }
}

/// The fuzz oracle: parses `bytes` as the start of an `.npy` file (and
/// as header text behind a valid prefix). Parse errors are fine; a header
/// that parses must re-encode to one that parses to the same values.
/// Returns a description of any mismatch. Used by the cargo-fuzz target
/// and by the test suite.
pub fn check_header_bytes(bytes: &[u8]) -> Result<(), String> {
    check_parsed(bytes)?;
    let mut framed = MAGIC.to_vec();
    framed.extend_from_slice(&[1, 0]);
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    framed.extend_from_slice(&len.to_le_bytes());
    framed.extend_from_slice(&bytes[..usize::from(len)]);
    check_parsed(&framed)
}

fn check_parsed(bytes: &[u8]) -> Result<(), String> {
    let Ok(h) = Header::parse(bytes) else { return Ok(()) };
    if h.data_offset > bytes.len() {
        return Err(format!("data offset {} beyond the {} input bytes", h.data_offset, bytes.len()));
    }
    let Ok(descr) = h.parse_descr() else { return Ok(()) };
    for growable in [false, true] {
        let spec = HeaderSpec {
            descr,
            fortran_order: h.fortran_order,
            shape: h.shape.clone(),
            version: Version::Auto,
            growable: growable && !h.shape.is_empty(),
        };
        let Ok(encoded) = spec.encode() else {
            if spec.shape.iter().any(|&d| d as u64 > COUNT_MAX) {
                continue;
            }
            return Err(format!("re-encoding {h:?} failed"));
        };
        let again =
            Header::parse(&encoded).map_err(|e| format!("re-encoded header does not parse: {e:?}"))?;
        if again.shape != h.shape
            || again.fortran_order != h.fortran_order
            || again.parse_descr() != Ok(descr)
        {
            return Err(format!("round trip changed the header: {h:?} -> {again:?}"));
        }
        if again.data_offset % ALIGN != 0 {
            return Err("re-encoded data offset is not 64-aligned".into());
        }
    }
    Ok(())
}

/// `n` right-aligned in a 16-byte field of spaces.
pub fn count_field(n: u64) -> Result<[u8; COUNT_FIELD], String> {
    if n > COUNT_MAX {
        return Err(format!("first axis {n} exceeds the appendable limit {COUNT_MAX}"));
    }
    let digits = n.to_string();
    let mut field = [b' '; COUNT_FIELD];
    field[COUNT_FIELD - digits.len()..].copy_from_slice(digits.as_bytes());
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn spec(shape: &[usize], growable: bool) -> HeaderSpec {
        HeaderSpec {
            descr: Descr::native(DType::F32),
            fortran_order: false,
            shape: shape.to_vec(),
            version: Version::Auto,
            growable,
        }
    }

    #[test]
    fn encode_parse_round_trip() {
        for growable in [false, true] {
            for shape in [vec![], vec![0], vec![7], vec![3, 4], vec![2, 0, 5]] {
                if growable && shape.is_empty() {
                    continue;
                }
                let bytes = spec(&shape, growable).encode().unwrap();
                assert_eq!(bytes.len() % ALIGN, 0);
                assert_eq!(*bytes.last().unwrap(), b'\n');
                let h = Header::parse(&bytes).unwrap();
                assert_eq!(h.shape, shape);
                assert_eq!(h.descr, "<f4");
                assert_eq!(h.data_offset, bytes.len());
                if growable {
                    let (a, b) = h.count_span.unwrap();
                    assert_eq!(b % COUNT_FIELD, 0, "field ends aligned");
                    assert!(b - a >= COUNT_FIELD);
                }
            }
        }
    }

    #[test]
    fn numpy_style_headers() {
        let text = b"{'descr': '<i8', 'fortran_order': True, 'shape': (2L, 3L), }          \n";
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
        bytes.extend_from_slice(text);
        let h = Header::parse(&bytes).unwrap();
        assert_eq!(h.shape, vec![2, 3]);
        assert!(h.fortran_order);
        let bad = [
            "{'descr': '<i8', 'fortran_order': True, 'shape': (2), }",
            "{'descr': '<i8', 'fortran_order': 1, 'shape': (2,), }",
            "{'descr': '<i8', 'shape': (2,), }",
            "{'descr': '<i8', 'fortran_order': True, 'shape': (-2,), }",
            "{'descr': '<i8', 'fortran_order': True, 'shape': (02,), }",
            "{'descr': '<i8', 'fortran_order': True, 'shape': (2,), 'x': 1}",
            "{'descr': '<i8', 'fortran_order': True, 'shape': (99999999999999999999999,)}",
        ];
        for t in bad {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&[1, 0]);
            bytes.extend_from_slice(&(t.len() as u16).to_le_bytes());
            bytes.extend_from_slice(t.as_bytes());
            assert!(matches!(Header::parse(&bytes), Err(ParseError::Bad(_))), "{t}");
        }
    }

    #[test]
    fn structured_descr_is_kept_as_text() {
        let t = "{'descr': [('a', '<i4'), ('b', '<f8')], 'fortran_order': False, 'shape': (2,), }\n";
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(t.len() as u16).to_le_bytes());
        bytes.extend_from_slice(t.as_bytes());
        let h = Header::parse(&bytes).unwrap();
        assert!(!h.simple_descr);
        assert_eq!(h.descr, "[('a', '<i4'), ('b', '<f8')]");
        assert_eq!(h.parse_descr(), Err(DescrError::Unsupported));
    }

    #[test]
    fn count_span_only_for_digit_runs_that_fit_the_field() {
        let parse = |shape: &str| {
            let t = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}, 3), }}\n");
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&[1, 0]);
            bytes.extend_from_slice(&(t.len() as u16).to_le_bytes());
            bytes.extend_from_slice(t.as_bytes());
            Header::parse(&bytes).unwrap()
        };
        let fits = parse("   1234567890123456");
        let (a, b) = fits.count_span.unwrap();
        assert_eq!(b - a, 19);
        assert_eq!(fits.shape, vec![1_234_567_890_123_456, 3]);
        // Seventeen digits: rewriting the last sixteen would leave one behind.
        assert_eq!(parse("00000000000000000").count_span, None);
        assert_eq!(parse("2L").count_span, None);
        assert_eq!(parse("1_0").count_span, None);
    }

    #[test]
    fn count_field_is_right_aligned() {
        assert_eq!(&count_field(42).unwrap(), b"              42");
        assert!(count_field(COUNT_MAX + 1).is_err());
    }
}
