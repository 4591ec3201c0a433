//! `Kv`: the MMKV use case, one line to open and typed get/set on the
//! default table of a key-value database, each `set` its own commit.

use std::borrow::Cow;
use std::path::PathBuf;

use mmkit_kv::Options;
use pyo3::IntoPyObjectExt;
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyTuple};

use crate::convert::{bytes_like, key_bytes};
use crate::db::{Handle, durability_arg};
use crate::errors::Context;
use crate::table::KvIterator;

/// A value `Kv.set` stores.
enum Value<'a> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Bytes(Cow<'a, [u8]>),
}

/// Sorts a Python value into what `set` stores: bool, int (64-bit),
/// float, or bytes (bytes-like, or str as UTF-8).
fn value_arg<'a>(value: &'a Bound<'_, PyAny>, op: &str) -> PyResult<Value<'a>> {
    if value.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(value.extract()?));
    }
    if value.is_instance_of::<PyInt>() {
        return Ok(Value::Int(value.extract()?));
    }
    if value.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(value.extract()?));
    }
    if let Some(bytes) = bytes_like(value)? {
        return Ok(Value::Bytes(bytes));
    }
    if value.is_instance_of::<pyo3::types::PyString>() {
        return Ok(Value::Bytes(key_bytes(value, "value", op)?));
    }
    // numpy's scalars and other numbers.
    if value.hasattr("__index__")? {
        return Ok(Value::Int(value.extract()?));
    }
    if value.hasattr("__float__")? {
        return Ok(Value::Float(value.extract()?));
    }
    Err(PyTypeError::new_err(format!(
        "{op}: a value is int, float, bool, str, bytes, bytearray or memoryview, not {}",
        value.get_type().name()?
    )))
}

/// A key-value store for settings and state, the way MMKV is used: one
/// line to open (creating the file if needed), then `set` and typed gets
/// on string keys. Each `set` and `remove` is its own commit, which
/// survives a crash of the process ("eventual" durability: no sync, so
/// not necessarily a power loss; pass `durability="immediate"` for that).
/// Several processes may use the same file at once.
///
/// Values are stored as MMKV does: int as 8 little-endian bytes, float as
/// 8 (IEEE 754), bool as 1, str as UTF-8, bytes as they are. The store
/// does not record the type: read a value back with the getter of the
/// type it was set with (`get_int`, `get_float`, `get_bool`, `get_str`,
/// `get_bytes`); `kv[key]` gives the raw bytes.
///
/// ```python
/// kv = mmkit.Kv("settings.kv")
/// kv.set("volume", 7)
/// kv["name"] = "ada"
/// assert kv.get_int("volume") == 7 and kv.get_str("name") == "ada"
/// assert "volume" in kv and len(kv) == 2 and sorted(kv) == ["name", "volume"]
/// kv.remove("name")
/// assert kv.get_str("name") is None
/// ```
#[pyclass(frozen, module = "mmkit")]
pub struct Kv {
    pub(crate) handle: Handle,
}

impl Kv {
    fn name(&self) -> &str {
        &self.handle.name
    }

    /// Reads `key` with `f` in a fresh snapshot.
    fn with<R>(
        &self,
        op: &str,
        key: &Bound<'_, PyAny>,
        f: impl FnOnce(&mmkit_kv::Kv, &[u8]) -> mmkit_kv::Result<R>,
    ) -> PyResult<R> {
        let k = key_bytes(key, "key", op)?;
        let opened = self.handle.get(op)?;
        f(&opened.kv, &k).context(op, self.name())
    }

    /// A typed get: the value `get` finds under `key`, or `default`.
    fn typed<'py, T: IntoPyObject<'py>>(
        &self,
        py: Python<'py>,
        op: &str,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
        get: impl FnOnce(&mmkit_kv::Kv, &[u8]) -> mmkit_kv::Result<Option<T>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.with(op, key, get)? {
            Some(v) => Ok(Some(v.into_bound_py_any(py)?)),
            None => Ok(default),
        }
    }
}

#[pymethods]
impl Kv {
    #[new]
    #[pyo3(signature = (path, durability = "eventual"))]
    fn new(py: Python<'_>, path: PathBuf, durability: &str) -> PyResult<Self> {
        let d = durability_arg(durability, "Kv", &path.display().to_string())?;
        let mut opts = Options::new();
        opts.create(true).durability(d);
        Ok(Kv { handle: Handle::open(py, path, opts, "Kv")? })
    }

    /// Sets `key` to `value` (int, float, bool, str or bytes) in one
    /// commit. The GIL is released while it waits for another writer.
    fn set(&self, py: Python<'_>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        const OP: &str = "Kv.set";
        let k = key_bytes(key, "key", OP)?;
        let v = value_arg(value, OP)?;
        let opened = self.handle.get(OP)?;
        let kv = &opened.kv;
        let done = py.detach(|| match &v {
            Value::Int(i) => kv.set(&k, *i),
            Value::Float(f) => kv.set(&k, *f),
            Value::Bool(b) => kv.set(&k, *b),
            Value::Bytes(b) => kv.set(&k, &b[..]),
        });
        done.context(OP, self.name())
    }

    /// The int set under `key`, or `default`. `ValueError` if the stored
    /// value is not 8 bytes long.
    #[pyo3(signature = (key, default = None))]
    fn get_int<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.typed(py, "Kv.get_int", key, default, |kv, k| kv.get_i64(k))
    }

    /// The float set under `key`, or `default`.
    #[pyo3(signature = (key, default = None))]
    fn get_float<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.typed(py, "Kv.get_float", key, default, |kv, k| kv.get_f64(k))
    }

    /// The bool set under `key`, or `default`.
    #[pyo3(signature = (key, default = None))]
    fn get_bool<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.typed(py, "Kv.get_bool", key, default, |kv, k| kv.get_bool(k))
    }

    /// The str set under `key`, or `default`. `ValueError` if the stored
    /// bytes are not UTF-8.
    #[pyo3(signature = (key, default = None))]
    fn get_str<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.typed(py, "Kv.get_str", key, default, |kv, k| kv.get_string(k))
    }

    /// The bytes stored under `key`, or `default`.
    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let got = self.with("Kv.get", key, |kv, k| kv.with(k, |v| v.map(|b| PyBytes::new(py, b))))?;
        Ok(got.map(Bound::into_any).or(default))
    }

    /// The bytes stored under `key`, or `default` (the same as `get`).
    #[pyo3(signature = (key, default = None))]
    fn get_bytes<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.get(py, key, default)
    }

    /// Removes `key` in one commit; returns whether it was there.
    fn remove(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        const OP: &str = "Kv.remove";
        let k = key_bytes(key, "key", OP)?;
        let opened = self.handle.get(OP)?;
        py.detach(|| opened.kv.remove(&k)).context(OP, self.name())
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let got = self.with("Kv[]", key, |kv, k| kv.with(k, |v| v.map(|b| PyBytes::new(py, b))))?;
        got.ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __setitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set(py, key, value)
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.remove(py, key)? { Ok(()) } else { Err(PyKeyError::new_err(key.clone().unbind())) }
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.with("Kv.__contains__", key, |kv, k| kv.contains(k))
    }

    fn __len__(&self) -> PyResult<usize> {
        const OP: &str = "Kv.__len__";
        let opened = self.handle.get(OP)?;
        let txn = opened.db().read().context(OP, self.name())?;
        Ok(txn.default_table().context(OP, self.name())?.len() as usize)
    }

    /// The keys (str), in order. Each chunk of keys comes from the latest
    /// commit: keys set or removed meanwhile may or may not be seen, and no
    /// key comes twice.
    fn __iter__(slf: &Bound<'_, Self>) -> KvIterator {
        KvIterator::kv_keys(slf.clone().unbind())
    }

    /// An iterator over the keys (str), in order.
    fn keys(slf: &Bound<'_, Self>) -> KvIterator {
        Self::__iter__(slf)
    }

    /// Makes every commit so far durable (one `fdatasync`).
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.sync(py, "Kv.sync")
    }

    /// Releases the handle.
    fn close(&self) {
        self.handle.close();
    }

    /// The database file's path.
    #[getter]
    fn path(&self) -> &str {
        self.name()
    }

    /// The durability of each `set`: "eventual" unless told otherwise.
    #[getter]
    fn durability(&self) -> PyResult<&'static str> {
        self.handle.durability("Kv.durability")
    }

    /// Pickles as the path and durability.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let this = slf.get();
        (slf.get_type(), (this.handle.path().clone(), this.durability()?)).into_pyobject(slf.py())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        format!("Kv({:?})", self.name())
    }
}
