//! The MMKV use case ([`Kv`]) and the typed layer ([`Codec`]).

use std::borrow::Cow;
use std::marker::PhantomData;
use std::path::Path;

use crate::db::{DEFAULT_TABLE, Db, Durability, Options, ReadTxn, Table};
use crate::error::{Error, Result};
use crate::write::{TableMut, WriteTxn};

/// Converts values to and from stored bytes. Integer keys are stored
/// big-endian (signed ones with the sign bit flipped) so byte order is
/// numeric order.
pub trait Codec: Sized {
    /// The stored bytes.
    fn encode(&self) -> Cow<'_, [u8]>;
    /// Decodes stored bytes.
    fn decode(bytes: &[u8]) -> Result<Self>;
}

fn fixed<const N: usize>(b: &[u8], ty: &'static str) -> Result<[u8; N]> {
    b.try_into().map_err(|_| Error::Decode { ty, len: b.len(), reason: "wrong length" })
}

macro_rules! int_codec {
    ($($t:ty => $flip:expr),*) => {$(
        impl Codec for $t {
            fn encode(&self) -> Cow<'_, [u8]> {
                Cow::Owned((*self ^ $flip).to_be_bytes().to_vec())
            }
            fn decode(b: &[u8]) -> Result<Self> {
                Ok(<$t>::from_be_bytes(fixed(b, stringify!($t))?) ^ $flip)
            }
        }
    )*};
}
int_codec!(u64 => 0, u32 => 0, i64 => i64::MIN, i32 => i32::MIN);

impl Codec for f64 {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.to_le_bytes().to_vec())
    }
    fn decode(b: &[u8]) -> Result<Self> {
        Ok(f64::from_le_bytes(fixed(b, "f64")?))
    }
}

impl Codec for bool {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(if *self { &[1] } else { &[0] })
    }
    fn decode(b: &[u8]) -> Result<Self> {
        match b {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(Error::Decode { ty: "bool", len: b.len(), reason: "not a 0 or 1 byte" }),
        }
    }
}

impl Codec for String {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
    fn decode(b: &[u8]) -> Result<Self> {
        String::from_utf8(b.to_vec()).map_err(|_| Error::Decode {
            ty: "String",
            len: b.len(),
            reason: "not UTF-8",
        })
    }
}

impl Codec for Vec<u8> {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
    fn decode(b: &[u8]) -> Result<Self> {
        Ok(b.to_vec())
    }
}

/// Any `bytemuck::Pod` type, stored as its native bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pod<T>(pub T);

impl<T: bytemuck::Pod> Codec for Pod<T> {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(bytemuck::bytes_of(&self.0))
    }
    fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != size_of::<T>() {
            return Err(Error::Decode {
                ty: std::any::type_name::<T>(),
                len: b.len(),
                reason: "wrong length",
            });
        }
        Ok(Pod(bytemuck::pod_read_unaligned(b)))
    }
}

/// A table viewed through codecs for its keys and values.
#[derive(Debug)]
pub struct Typed<'t, K, V> {
    table: Table<'t>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Codec, V: Codec> Typed<'_, K, V> {
    /// The value under `key`, decoded.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.table.get(key.encode())?.map(V::decode).transpose()
    }
    /// Every entry, decoded, in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Result<(K, V)>> + '_ {
        self.table.iter().map(|e| e.and_then(|(k, v)| Ok((K::decode(k)?, V::decode(v)?))))
    }
    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.table.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl ReadTxn<'_> {
    /// Table `name` through codecs.
    pub fn typed<K: Codec, V: Codec>(&self, name: &str) -> Result<Typed<'_, K, V>> {
        Ok(Typed { table: self.table(name)?, _types: PhantomData })
    }
}

impl TableMut<'_, '_> {
    /// Puts a typed entry.
    pub fn put_typed<K: Codec, V: Codec>(&mut self, key: &K, value: &V) -> Result<()> {
        self.put(key.encode(), value.encode())
    }
    /// Gets a typed value.
    pub fn get_typed<K: Codec, V: Codec>(&self, key: &K) -> Result<Option<V>> {
        self.get(key.encode())?.map(V::decode).transpose()
    }
}

/// Values [`Kv::set`] takes.
pub trait KvValue {
    /// The stored bytes.
    fn kv_bytes(&self) -> Cow<'_, [u8]>;
}

macro_rules! kv_value_via_codec {
    ($($t:ty),*) => {$(
        impl KvValue for $t {
            fn kv_bytes(&self) -> Cow<'_, [u8]> {
                match self.encode() {
                    Cow::Borrowed(b) => Cow::Borrowed(b),
                    Cow::Owned(v) => Cow::Owned(v),
                }
            }
        }
    )*};
}
kv_value_via_codec!(f64, bool, String, Vec<u8>);

impl KvValue for i64 {
    /// Little-endian, as MMKV stores numbers (no ordering is needed).
    fn kv_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.to_le_bytes().to_vec())
    }
}
impl KvValue for str {
    fn kv_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}
impl KvValue for [u8] {
    fn kv_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}
impl<T: KvValue + ?Sized> KvValue for &T {
    fn kv_bytes(&self) -> Cow<'_, [u8]> {
        (**self).kv_bytes()
    }
}

/// The MMKV use case: one line to open, `get`/`set`/`remove` on the
/// default table, each `set` its own commit that survives a crash of the
/// process ([`Durability::Eventual`] unless told otherwise).
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let kv = mmkit_kv::Kv::open(dir.path().join("settings"))?;
/// kv.set("volume", 7i64)?;
/// kv.set("name", "ada")?;
/// assert_eq!(kv.get_i64("volume")?, Some(7));
/// assert_eq!(kv.get_string("name")?.as_deref(), Some("ada"));
/// kv.remove("name")?;
/// assert_eq!(kv.get_bytes("name")?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Kv {
    db: Db,
}

impl Kv {
    /// Opens (creating if needed) the store at `path`, Eventual durability.
    pub fn open(path: impl AsRef<Path>) -> Result<Kv> {
        Ok(Kv { db: Options::new().create(true).durability(Durability::Eventual).open(path)? })
    }

    /// Wraps an open database.
    pub fn from_db(db: Db) -> Kv {
        Kv { db }
    }

    /// The underlying database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn write(&self) -> Result<WriteTxn<'_>> {
        self.db.write()
    }

    /// Sets `key` to `value` in one commit.
    pub fn set(&self, key: impl AsRef<[u8]>, value: impl KvValue) -> Result<()> {
        let mut w = self.write()?;
        w.table(DEFAULT_TABLE)?.put(key.as_ref(), value.kv_bytes())?;
        w.commit()?;
        Ok(())
    }

    /// Removes `key`; true if it was there.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let mut w = self.write()?;
        let gone = w.table(DEFAULT_TABLE)?.delete(key.as_ref())?;
        w.commit()?;
        Ok(gone)
    }

    /// Reads `key` with `f` inside a snapshot (zero-copy).
    pub fn with<R>(&self, key: impl AsRef<[u8]>, f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R> {
        let r = self.db.read()?;
        let t = r.default_table()?;
        Ok(f(t.get(key)?))
    }

    /// The raw bytes under `key`.
    pub fn get_bytes(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.with(key, |v| v.map(<[u8]>::to_vec))
    }

    /// An `i64` stored by `set(key, i64)`.
    pub fn get_i64(&self, key: impl AsRef<[u8]>) -> Result<Option<i64>> {
        self.with(key, |v| v.map(|b| fixed(b, "i64").map(i64::from_le_bytes)).transpose())?
    }

    /// An `f64`.
    pub fn get_f64(&self, key: impl AsRef<[u8]>) -> Result<Option<f64>> {
        self.with(key, |v| v.map(f64::decode).transpose())?
    }

    /// A `bool`.
    pub fn get_bool(&self, key: impl AsRef<[u8]>) -> Result<Option<bool>> {
        self.with(key, |v| v.map(bool::decode).transpose())?
    }

    /// A UTF-8 string.
    pub fn get_string(&self, key: impl AsRef<[u8]>) -> Result<Option<String>> {
        self.with(key, |v| v.map(String::decode).transpose())?
    }

    /// Whether `key` is set.
    pub fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.with(key, |v| v.is_some())
    }
}
