//! `Table` and `KvIterator`: a table of a `Db` seen through a transaction
//! (or, for `Kv`, through a fresh snapshot per call), and iteration over
//! its key ranges.

use std::collections::VecDeque;
use std::ops::Bound as Edge;

use mmkit_kv::{DEFAULT_TABLE, TableMut};
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{key_bytes, key_str};
use crate::db::{ReadTransaction, WriteTransaction, read_table};
use crate::errors::{Context, value_error};
use crate::kv::Kv;

/// What a table (or an iterator) reads through.
pub(crate) enum Owner {
    Read(Py<ReadTransaction>),
    Write(Py<WriteTransaction>),
    /// A `Kv`: every call reads a fresh snapshot.
    Kv(Py<Kv>),
}

impl Owner {
    fn clone_ref(&self, py: Python<'_>) -> Owner {
        match self {
            Owner::Read(t) => Owner::Read(t.clone_ref(py)),
            Owner::Write(t) => Owner::Write(t.clone_ref(py)),
            Owner::Kv(k) => Owner::Kv(k.clone_ref(py)),
        }
    }

    fn path(&self) -> &str {
        match self {
            Owner::Read(t) => &t.get().path,
            Owner::Write(t) => &t.get().path,
            Owner::Kv(k) => &k.get().handle.name,
        }
    }

    /// Runs `f` on the table `name` as the owner sees it now.
    fn with_table<R>(
        &self,
        op: &str,
        name: &str,
        f: impl FnOnce(&mmkit_kv::Table<'_>) -> PyResult<R>,
    ) -> PyResult<R> {
        let path = self.path();
        match self {
            Owner::Read(t) => t.get().with(op, |txn| f(&read_table(txn, name).context(op, path)?)),
            Owner::Write(t) => t.get().with(op, |txn| f(&txn.existing_table(name).context(op, path)?.view())),
            Owner::Kv(k) => {
                let opened = k.get().handle.get(op)?;
                let txn = opened.db().read().context(op, path)?;
                f(&read_table(&txn, name).context(op, path)?)
            }
        }
    }

    /// Runs `f` on the table `name` of a write transaction.
    fn with_table_mut<R>(
        &self,
        op: &str,
        name: &str,
        f: impl FnOnce(&mut TableMut<'_, 'static>) -> mmkit_kv::Result<R>,
    ) -> PyResult<R> {
        let path = self.path();
        match self {
            Owner::Write(t) => t.get().with(op, |txn| {
                let mut table = txn.existing_table(name).context(op, path)?;
                f(&mut table).context(op, path)
            }),
            _ => Err(value_error(op, path, "a read transaction cannot write: use Db.write()")),
        }
    }
}

/// A table seen through a transaction: a mapping of `bytes` keys to
/// `bytes` values, in key order. Keys and values may be given as bytes,
/// bytearray, memoryview or str (stored as UTF-8); they come back as
/// `bytes`. Writing needs a table from a write transaction.
///
/// ```python
/// with db.write() as w:
///     t = w.table("users")
///     t[b"ada"] = b"lovelace"
///     t.put(b"alan", b"turing")
///     assert t.get(b"grace") is None and len(t) == 2
///     assert list(t.range(b"a", b"al")) == [(b"ada", b"lovelace")]
///     assert t.delete(b"alan")
/// ```
#[pyclass(frozen, module = "mmkit")]
pub struct Table {
    owner: Owner,
    name: String,
}

/// What an iterator yields.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Yield {
    Keys,
    Values,
    Items,
    /// Keys as str (`Kv`).
    StrKeys,
}

/// An optional range bound given as a key.
fn edge(key: Option<&Bound<'_, PyAny>>, op: &str, inclusive: bool) -> PyResult<Edge<Vec<u8>>> {
    Ok(match key {
        None => Edge::Unbounded,
        Some(k) if k.is_none() => Edge::Unbounded,
        Some(k) if inclusive => Edge::Included(key_bytes(k, "key", op)?.into_owned()),
        Some(k) => Edge::Excluded(key_bytes(k, "key", op)?.into_owned()),
    })
}

impl Table {
    pub(crate) fn new(owner: Owner, name: &str) -> Table {
        Table { owner, name: name.to_string() }
    }

    fn get_bytes<'py>(&self, py: Python<'py>, op: &str, key: &[u8]) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let path = self.owner.path();
        self.owner
            .with_table(op, &self.name, |t| Ok(t.get(key).context(op, path)?.map(|v| PyBytes::new(py, v))))
    }

    fn iter(
        &self,
        py: Python<'_>,
        lo: Edge<Vec<u8>>,
        hi: Edge<Vec<u8>>,
        reverse: bool,
        what: Yield,
    ) -> KvIterator {
        KvIterator::new(self.owner.clone_ref(py), &self.name, lo, hi, reverse, what)
    }

    fn entry<'py>(
        &self,
        py: Python<'py>,
        op: &str,
        last: bool,
    ) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
        let path = self.owner.path();
        let got = self.owner.with_table(op, &self.name, |t| {
            let e = if last { t.last() } else { t.first() }.context(op, path)?;
            Ok(e.map(|(k, v)| (PyBytes::new(py, k), PyBytes::new(py, v))))
        })?;
        Ok(got)
    }
}

#[pymethods]
impl Table {
    /// The value under `key` (bytes), or `default`.
    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        const OP: &str = "Table.get";
        let k = key_bytes(key, "key", OP)?;
        Ok(self.get_bytes(py, OP, &k)?.map(Bound::into_any).or(default))
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        const OP: &str = "Table[]";
        let k = key_bytes(key, "key", OP)?;
        self.get_bytes(py, OP, &k)?.ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        const OP: &str = "Table.__contains__";
        let k = key_bytes(key, "key", OP)?;
        Ok(self.get_bytes(py, OP, &k)?.is_some())
    }

    fn __len__(&self) -> PyResult<usize> {
        self.owner.with_table("Table.__len__", &self.name, |t| Ok(t.len() as usize))
    }

    /// The keys, in order.
    fn __iter__(&self, py: Python<'_>) -> KvIterator {
        self.iter(py, Edge::Unbounded, Edge::Unbounded, false, Yield::Keys)
    }

    /// An iterator over the keys, in order.
    fn keys(&self, py: Python<'_>) -> KvIterator {
        self.__iter__(py)
    }

    /// An iterator over the values, in key order.
    fn values(&self, py: Python<'_>) -> KvIterator {
        self.iter(py, Edge::Unbounded, Edge::Unbounded, false, Yield::Values)
    }

    /// An iterator over the `(key, value)` pairs, in key order.
    fn items(&self, py: Python<'_>) -> KvIterator {
        self.iter(py, Edge::Unbounded, Edge::Unbounded, false, Yield::Items)
    }

    /// The `(key, value)` pairs with `start <= key < end` (`None`: no
    /// bound), in key order, or last first with `reverse=True`.
    #[pyo3(signature = (start = None, end = None, *, reverse = false))]
    fn range(
        &self,
        py: Python<'_>,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        reverse: bool,
    ) -> PyResult<KvIterator> {
        let lo = edge(start, "Table.range", true)?;
        let hi = edge(end, "Table.range", false)?;
        Ok(self.iter(py, lo, hi, reverse, Yield::Items))
    }

    /// The `(key, value)` pairs whose keys start with `prefix`, in key
    /// order, or last first with `reverse=True`.
    #[pyo3(signature = (prefix, *, reverse = false))]
    fn prefix(&self, py: Python<'_>, prefix: &Bound<'_, PyAny>, reverse: bool) -> PyResult<KvIterator> {
        let p = key_bytes(prefix, "prefix", "Table.prefix")?.into_owned();
        let hi = mmkit_kv::prefix_end(&p).map_or(Edge::Unbounded, Edge::Excluded);
        Ok(self.iter(py, Edge::Included(p), hi, reverse, Yield::Items))
    }

    /// The first `(key, value)` pair, or None when empty.
    fn first<'py>(&self, py: Python<'py>) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
        self.entry(py, "Table.first", false)
    }

    /// The last `(key, value)` pair, or None when empty.
    fn last<'py>(&self, py: Python<'py>) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
        self.entry(py, "Table.last", true)
    }

    /// Sets `key` to `value`.
    fn put(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        const OP: &str = "Table.put";
        let (k, v) = (key_bytes(key, "key", OP)?, key_bytes(value, "value", OP)?);
        self.owner.with_table_mut(OP, &self.name, |t| t.put(&k, &v))
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.put(key, value)
    }

    /// Appends `key`, which must sort after every key in the table: the
    /// path for sorted bulk loads, which leaves pages full.
    fn append(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        const OP: &str = "Table.append";
        let (k, v) = (key_bytes(key, "key", OP)?, key_bytes(value, "value", OP)?);
        self.owner.with_table_mut(OP, &self.name, |t| t.append(&k, &v))
    }

    /// Deletes `key`; returns whether it was there.
    fn delete(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        const OP: &str = "Table.delete";
        let k = key_bytes(key, "key", OP)?;
        self.owner.with_table_mut(OP, &self.name, |t| t.delete(&k))
    }

    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.delete(key)? { Ok(()) } else { Err(PyKeyError::new_err(key.clone().unbind())) }
    }

    /// Deletes the keys with `start <= key < end` (`None`: no bound);
    /// returns how many.
    #[pyo3(signature = (start = None, end = None))]
    fn delete_range(
        &self,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        const OP: &str = "Table.delete_range";
        let (lo, hi) = (edge(start, OP, true)?, edge(end, OP, false)?);
        self.owner.with_table_mut(OP, &self.name, |t| t.delete_range::<Vec<u8>, _>((lo, hi)))
    }

    /// Deletes every entry.
    fn clear(&self) -> PyResult<()> {
        self.owner.with_table_mut("Table.clear", &self.name, |t| t.clear())
    }

    /// The table's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    fn __repr__(&self) -> String {
        format!("Table({:?}, {:?})", self.owner.path(), self.name)
    }
}

// -------------------------------------------------------------- iterators

/// Entries copied per refill: few at first (a `next()` after one entry
/// costs little), more as the iteration goes on.
const FIRST_CHUNK: usize = 16;
const MAX_CHUNK: usize = 1024;

/// An iterator over a key range of a table, forward or reverse. It copies
/// entries out in chunks (16 at first, up to 1024) and resumes after the
/// last key it copied, so it never holds a view into the mapping. In a
/// write transaction, writes made while it runs show once they lie past
/// the chunk already copied.
#[pyclass(module = "mmkit")]
pub struct KvIterator {
    owner: Owner,
    table: String,
    lo: Edge<Vec<u8>>,
    hi: Edge<Vec<u8>>,
    reverse: bool,
    what: Yield,
    buf: VecDeque<(Vec<u8>, Vec<u8>)>,
    done: bool,
    chunk: usize,
}

impl KvIterator {
    fn new(
        owner: Owner,
        table: &str,
        lo: Edge<Vec<u8>>,
        hi: Edge<Vec<u8>>,
        reverse: bool,
        what: Yield,
    ) -> Self {
        KvIterator {
            owner,
            table: table.to_string(),
            lo,
            hi,
            reverse,
            what,
            buf: VecDeque::new(),
            done: false,
            chunk: FIRST_CHUNK,
        }
    }

    pub(crate) fn kv_keys(kv: Py<Kv>) -> Self {
        KvIterator::new(Owner::Kv(kv), DEFAULT_TABLE, Edge::Unbounded, Edge::Unbounded, false, Yield::StrKeys)
    }

    /// Copies the next chunk of entries into `buf`.
    fn refill(&mut self) -> PyResult<()> {
        const OP: &str = "KvIterator.__next__";
        let want = self.chunk;
        self.chunk = (self.chunk * 4).min(MAX_CHUNK);
        let values = matches!(self.what, Yield::Values | Yield::Items);
        let range = (self.lo.clone(), self.hi.clone());
        let reverse = self.reverse;
        let path = self.owner.path();
        let got: Vec<(Vec<u8>, Vec<u8>)> = self.owner.with_table(OP, &self.table, |t| {
            let copy = |e: mmkit_kv::Result<(&[u8], &[u8])>| {
                e.map(|(k, v)| (k.to_vec(), if values { v.to_vec() } else { Vec::new() }))
            };
            let it = t.range::<Vec<u8>, _>(range);
            let copied: mmkit_kv::Result<Vec<_>> = if reverse {
                it.rev().take(want).map(copy).collect()
            } else {
                it.take(want).map(copy).collect()
            };
            copied.context(OP, path)
        })?;
        self.done = got.len() < want;
        if let Some((last, _)) = got.last() {
            let after = Edge::Excluded(last.clone());
            if reverse {
                self.hi = after;
            } else {
                self.lo = after;
            }
        }
        self.buf.extend(got);
        Ok(())
    }
}

#[pymethods]
impl KvIterator {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self.buf.is_empty() && !self.done {
            self.refill()?;
        }
        let Some((k, v)) = self.buf.pop_front() else { return Ok(None) };
        let item = match self.what {
            Yield::Keys => PyBytes::new(py, &k).into_any(),
            Yield::Values => PyBytes::new(py, &v).into_any(),
            Yield::Items => (PyBytes::new(py, &k), PyBytes::new(py, &v)).into_pyobject(py)?.into_any(),
            Yield::StrKeys => key_str(py, &k)?,
        };
        Ok(Some(item))
    }
}
