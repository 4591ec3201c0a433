//! `Heap`, `HeapMap` and `HeapVector`: the shared heap, with its
//! concurrent hash map and its vector of numbers.
//!
//! Every value crosses into Python as a copy: no Python object points into
//! the segment, which other processes write at any time. Calls that take a
//! lock release the GIL (another process may hold it); map lookups take no
//! lock and keep it.
//!
//! Heap handles carry no identity of the process in shared memory (locks
//! are taken and released inside each call), so a `Heap` and its
//! containers keep working in a child forked from the process that opened
//! them.

use std::borrow::Borrow;
use std::path::PathBuf;
use std::sync::Mutex;

use mmkit_array::DType;
use mmkit_heap::{Bytes, HeapOptions, ShmHashMap, ShmType, ShmVec};
use numpy::{Element, PyArray1, PyArrayDescr, PyArrayLike1};
use pyo3::IntoPyObjectExt;
use pyo3::exceptions::{PyIndexError, PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple, PyType};

use crate::array::native_descr;
use crate::convert::{bytes_like, py_bool};
use crate::errors::{Context, CorruptError, value_error};
use crate::lock;

// ------------------------------------------------------------ map types

/// The key and value types a `HeapMap` can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    Bytes,
    Str,
    I64,
    U64,
    F64,
}

const ELEMS: [Elem; 5] = [Elem::Bytes, Elem::Str, Elem::I64, Elem::U64, Elem::F64];

impl Elem {
    fn name(self) -> &'static str {
        match self {
            Elem::Bytes => "bytes",
            Elem::Str => "str",
            Elem::I64 => "int64",
            Elem::U64 => "uint64",
            Elem::F64 => "float64",
        }
    }

    /// `bytes`, `str`, `int` (int64), `float` (float64), numpy's scalar
    /// types, or their names.
    fn parse(spec: &Bound<'_, PyAny>, op: &str, path: &str) -> PyResult<Elem> {
        let name: String = match spec.cast::<PyType>() {
            Ok(t) => t.name()?.to_string(),
            Err(_) => spec.extract().map_err(|_| {
                PyTypeError::new_err(format!("{op} {path}: a map type is a type or a type name, not {spec}"))
            })?,
        };
        match name.as_str() {
            "bytes" => Ok(Elem::Bytes),
            "str" => Ok(Elem::Str),
            "int" | "int64" => Ok(Elem::I64),
            "uint64" => Ok(Elem::U64),
            "float" | "float64" => Ok(Elem::F64),
            other => Err(value_error(
                op,
                path,
                format!("map keys and values are bytes, str, int64, uint64 or float64, not {other}"),
            )),
        }
    }
}

/// A key or value type of a map, as Python sees it.
trait PyElem: Bytes {
    /// What a Python object converts to, lent to the map as `&Self`.
    type Arg: Borrow<Self> + Send + Sync;
    fn arg(obj: &Bound<'_, PyAny>, what: &str, op: &str) -> PyResult<Self::Arg>;
    fn to_py<'py>(py: Python<'py>, v: Self::Owned) -> PyResult<Bound<'py, PyAny>>;
}

fn wrong_type(obj: &Bound<'_, PyAny>, what: &str, op: &str, want: &str) -> PyErr {
    let got = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    PyTypeError::new_err(format!("{op}: this map's {what}s are {want}, not {got}"))
}

impl PyElem for [u8] {
    type Arg = Vec<u8>;
    fn arg(obj: &Bound<'_, PyAny>, what: &str, op: &str) -> PyResult<Vec<u8>> {
        bytes_like(obj)?.map(|b| b.into_owned()).ok_or_else(|| wrong_type(obj, what, op, "bytes"))
    }
    fn to_py<'py>(py: Python<'py>, v: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyBytes::new(py, &v).into_any())
    }
}

impl PyElem for str {
    type Arg = String;
    fn arg(obj: &Bound<'_, PyAny>, what: &str, op: &str) -> PyResult<String> {
        match obj.cast::<PyString>() {
            Ok(s) => Ok(s.to_str()?.to_string()),
            Err(_) => Err(wrong_type(obj, what, op, "str")),
        }
    }
    fn to_py<'py>(py: Python<'py>, v: String) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyString::new(py, &v).into_any())
    }
}

macro_rules! number_elem {
    ($($t:ty => $want:literal),*) => {$(
        impl PyElem for $t {
            type Arg = $t;
            fn arg(obj: &Bound<'_, PyAny>, what: &str, op: &str) -> PyResult<$t> {
                if obj.is_instance_of::<PyString>() || bytes_like(obj)?.is_some() {
                    return Err(wrong_type(obj, what, op, $want));
                }
                obj.extract()
            }
            fn to_py<'py>(py: Python<'py>, v: $t) -> PyResult<Bound<'py, PyAny>> {
                v.into_bound_py_any(py)
            }
        }
    )*};
}
number_elem!(i64 => "int64", u64 => "uint64", f64 => "float64");

/// A map of any supported key and value types.
trait DynMap: Send + Sync {
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        op: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>>;
    fn contains(&self, key: &Bound<'_, PyAny>, op: &str) -> PyResult<bool>;
    fn insert<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        op: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>>;
    fn remove<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        op: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>>;
    fn update(
        &self,
        py: Python<'_>,
        pairs: &[(Bound<'_, PyAny>, Bound<'_, PyAny>)],
        op: &str,
    ) -> PyResult<()>;
    fn len(&self, op: &str) -> PyResult<usize>;
    fn items<'py>(&self, py: Python<'py>, op: &str) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>>;
}

struct TypedMap<K: Bytes + ?Sized, V: Bytes + ?Sized> {
    map: ShmHashMap<K, V>,
    path: String,
}

impl<K, V> DynMap for TypedMap<K, V>
where
    K: PyElem + ?Sized,
    V: PyElem + ?Sized,
    K::Owned: Send,
    V::Owned: Send,
{
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        op: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let k = K::arg(key, "key", op)?;
        let got = self.map.get(k.borrow()).context(op, &self.path)?;
        got.map(|v| V::to_py(py, v)).transpose()
    }

    fn contains(&self, key: &Bound<'_, PyAny>, op: &str) -> PyResult<bool> {
        let k = K::arg(key, "key", op)?;
        self.map.contains_key(k.borrow()).context(op, &self.path)
    }

    fn insert<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        op: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let (k, v) = (K::arg(key, "key", op)?, V::arg(value, "value", op)?);
        let old = py.detach(|| self.map.insert(k.borrow(), v.borrow())).context(op, &self.path)?;
        old.map(|v| V::to_py(py, v)).transpose()
    }

    fn remove<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        op: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let k = K::arg(key, "key", op)?;
        let old = py.detach(|| self.map.remove(k.borrow())).context(op, &self.path)?;
        old.map(|v| V::to_py(py, v)).transpose()
    }

    fn update(
        &self,
        py: Python<'_>,
        pairs: &[(Bound<'_, PyAny>, Bound<'_, PyAny>)],
        op: &str,
    ) -> PyResult<()> {
        let args = pairs
            .iter()
            .map(|(k, v)| Ok((K::arg(k, "key", op)?, V::arg(v, "value", op)?)))
            .collect::<PyResult<Vec<_>>>()?;
        py.detach(|| self.map.insert_many(&args)).context(op, &self.path).map(drop)
    }

    fn len(&self, op: &str) -> PyResult<usize> {
        self.map.len().context(op, &self.path)
    }

    fn items<'py>(&self, py: Python<'py>, op: &str) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        let entries = py.detach(|| self.map.entries()).context(op, &self.path)?;
        entries.into_iter().map(|(k, v)| Ok((K::to_py(py, k)?, V::to_py(py, v)?))).collect()
    }
}

fn open_typed_map<K, V>(
    heap: &mmkit_heap::Heap,
    name: &str,
    create: bool,
) -> mmkit_heap::Result<Option<Box<dyn DynMap>>>
where
    K: PyElem + ?Sized + 'static,
    V: PyElem + ?Sized + 'static,
    K::Owned: Send,
    V::Owned: Send,
{
    let map =
        if create { Some(heap.map::<K, V>(name)?) } else { heap.find_object::<ShmHashMap<K, V>>(name)? };
    let path = heap.path().display().to_string();
    Ok(map.map(|map| Box::new(TypedMap { map, path }) as Box<dyn DynMap>))
}

macro_rules! by_value {
    ($K:ty, $v:expr, $f:ident($($a:expr),*)) => {
        match $v {
            Elem::Bytes => $f::<$K, [u8]>($($a),*),
            Elem::Str => $f::<$K, str>($($a),*),
            Elem::I64 => $f::<$K, i64>($($a),*),
            Elem::U64 => $f::<$K, u64>($($a),*),
            Elem::F64 => $f::<$K, f64>($($a),*),
        }
    };
}

/// Calls `$f::<K, V>(args)` with the Rust types of the `Elem`s `$k`, `$v`.
macro_rules! by_types {
    ($k:expr, $v:expr, $f:ident($($a:expr),*)) => {
        match $k {
            Elem::Bytes => by_value!([u8], $v, $f($($a),*)),
            Elem::Str => by_value!(str, $v, $f($($a),*)),
            Elem::I64 => by_value!(i64, $v, $f($($a),*)),
            Elem::U64 => by_value!(u64, $v, $f($($a),*)),
            Elem::F64 => by_value!(f64, $v, $f($($a),*)),
        }
    };
}

/// The registry entry of the object `name` if it exists (and is not being
/// initialized); `TypeError` if it is not a `kind`.
fn existing(
    heap: &mmkit_heap::Heap,
    name: &str,
    kind: &str,
    op: &str,
    path: &str,
) -> PyResult<Option<mmkit_heap::ObjectInfo>> {
    let objects = heap.objects().context(op, path)?;
    let Some(info) = objects.into_iter().find(|o| o.name == name && !o.initializing) else { return Ok(None) };
    if info.kind != kind {
        return Err(PyTypeError::new_err(format!(
            "{op} {path}: object {name:?} is a {}, not a {kind}",
            info.kind
        )));
    }
    Ok(Some(info))
}

/// The types of the existing map `name`, tried against every supported
/// pair; `None` if no map of that name exists.
fn map_types(heap: &mmkit_heap::Heap, name: &str, op: &str, path: &str) -> PyResult<Option<(Elem, Elem)>> {
    let Some(info) = existing(heap, name, "map", op, path)? else { return Ok(None) };
    let pairs = ELEMS.into_iter().flat_map(|k| ELEMS.map(|v| (k, v)));
    let found =
        probe(pairs, |(k, v)| by_types!(k, v, open_typed_map(heap, name, false)).map(|m| m.is_some()));
    match found.context(op, path)? {
        Probe::Is(kv) => Ok(Some(kv)),
        Probe::Gone => Ok(None),
        Probe::Unknown => Err(PyTypeError::new_err(format!(
            "{op} {path}: map {name:?} has type {}, whose keys or values are not bytes, str, int64, uint64 or float64",
            info.type_name
        ))),
    }
}

/// What probing an object's type found.
enum Probe<T> {
    /// It opens as this type.
    Is(T),
    /// It is gone (removed meanwhile).
    Gone,
    /// No type fits.
    Unknown,
}

/// Opens the object as each of `types` in turn (`open` returns whether it
/// exists; a type mismatch tries the next one).
fn probe<T: Copy>(
    types: impl IntoIterator<Item = T>,
    mut open: impl FnMut(T) -> mmkit_heap::Result<bool>,
) -> mmkit_heap::Result<Probe<T>> {
    for t in types {
        match open(t) {
            Ok(true) => return Ok(Probe::Is(t)),
            Ok(false) => return Ok(Probe::Gone),
            Err(mmkit_heap::Error::TypeMismatch { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Probe::Unknown)
}

// -------------------------------------------------------------- vectors

/// The element types a `HeapVector` can hold: numpy's fixed-size numbers
/// but bool, float16 and the complex ones (not plain data in Rust's sense
/// the heap checks: `ShmType`).
const VECTOR_DTYPES: [DType; 10] = [
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::F32,
    DType::F64,
];

/// Anything `numpy.dtype` takes that names one of [`VECTOR_DTYPES`], in
/// native byte order.
fn vector_dtype(py: Python<'_>, spec: &Bound<'_, PyAny>, op: &str, path: &str) -> PyResult<DType> {
    let refused = || -> PyResult<PyErr> {
        let name: String = PyArrayDescr::new(py, spec)?.getattr("name")?.extract()?;
        Ok(value_error(
            op,
            path,
            format!("a vector holds native int8 to int64, uint8 to uint64, float32 or float64, not {name}"),
        ))
    };
    match native_descr(py, spec, op, path) {
        Ok(d) if VECTOR_DTYPES.contains(&d.dtype) => Ok(d.dtype),
        _ => Err(refused()?),
    }
}

/// A vector element type, as numpy and Python see it.
trait PyNum: ShmType + Element + Copy + for<'a, 'py> FromPyObject<'a, 'py> + for<'py> IntoPyObject<'py> {}
impl<T> PyNum for T where
    T: ShmType + Element + Copy + for<'a, 'py> FromPyObject<'a, 'py> + for<'py> IntoPyObject<'py>
{
}

/// A vector of any supported element type.
trait DynVec: Send + Sync {
    fn len(&self, py: Python<'_>, op: &str) -> PyResult<usize>;
    fn get<'py>(&self, py: Python<'py>, i: usize, op: &str) -> PyResult<Option<Bound<'py, PyAny>>>;
    fn set(&self, py: Python<'_>, i: usize, value: &Bound<'_, PyAny>, op: &str) -> PyResult<bool>;
    fn push(&self, py: Python<'_>, value: &Bound<'_, PyAny>, op: &str) -> PyResult<()>;
    fn extend(&self, py: Python<'_>, values: &Bound<'_, PyAny>, op: &str) -> PyResult<()>;
    fn pop<'py>(&self, py: Python<'py>, op: &str) -> PyResult<Option<Bound<'py, PyAny>>>;
    fn truncate(&self, py: Python<'_>, len: usize, op: &str) -> PyResult<()>;
    fn to_numpy<'py>(&self, py: Python<'py>, op: &str) -> PyResult<Bound<'py, PyAny>>;
}

struct TypedVec<T: ShmType> {
    vec: ShmVec<T>,
    path: String,
}

fn out<'py, T: PyNum>(py: Python<'py>, v: Option<T>) -> PyResult<Option<Bound<'py, PyAny>>> {
    v.map(|x| x.into_bound_py_any(py)).transpose()
}

impl<T: PyNum> DynVec for TypedVec<T> {
    fn len(&self, py: Python<'_>, op: &str) -> PyResult<usize> {
        py.detach(|| self.vec.len()).context(op, &self.path)
    }

    fn get<'py>(&self, py: Python<'py>, i: usize, op: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        out(py, py.detach(|| self.vec.get(i)).context(op, &self.path)?)
    }

    fn set(&self, py: Python<'_>, i: usize, value: &Bound<'_, PyAny>, op: &str) -> PyResult<bool> {
        let v: T = value.extract().map_err(Into::into)?;
        py.detach(|| self.vec.set(i, &v)).context(op, &self.path)
    }

    fn push(&self, py: Python<'_>, value: &Bound<'_, PyAny>, op: &str) -> PyResult<()> {
        let v: T = value.extract().map_err(Into::into)?;
        py.detach(|| self.vec.push(&v)).context(op, &self.path)
    }

    fn extend(&self, py: Python<'_>, values: &Bound<'_, PyAny>, op: &str) -> PyResult<()> {
        let values: PyArrayLike1<'_, T> = values.extract()?;
        let copied: Vec<T> = values.as_array().to_vec();
        py.detach(|| self.vec.extend_from_slice(&copied)).context(op, &self.path)
    }

    fn pop<'py>(&self, py: Python<'py>, op: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        out(py, py.detach(|| self.vec.pop()).context(op, &self.path)?)
    }

    fn truncate(&self, py: Python<'_>, len: usize, op: &str) -> PyResult<()> {
        py.detach(|| self.vec.truncate(len)).context(op, &self.path)
    }

    fn to_numpy<'py>(&self, py: Python<'py>, op: &str) -> PyResult<Bound<'py, PyAny>> {
        let all = py.detach(|| self.vec.to_vec()).context(op, &self.path)?;
        Ok(PyArray1::from_vec(py, all).into_any())
    }
}

fn open_typed_vec<T: PyNum>(
    heap: &mmkit_heap::Heap,
    name: &str,
    create: bool,
) -> mmkit_heap::Result<Option<Box<dyn DynVec>>> {
    let vec = if create { Some(heap.vec::<T>(name)?) } else { heap.find_object::<ShmVec<T>>(name)? };
    let path = heap.path().display().to_string();
    Ok(vec.map(|vec| Box::new(TypedVec { vec, path }) as Box<dyn DynVec>))
}

/// Calls `$f::<T>(args)` with the Rust type of the `DType` `$d`, one of
/// [`VECTOR_DTYPES`].
macro_rules! by_dtype {
    ($d:expr, $f:ident($($a:expr),*)) => {
        match $d {
            DType::I8 => $f::<i8>($($a),*),
            DType::I16 => $f::<i16>($($a),*),
            DType::I32 => $f::<i32>($($a),*),
            DType::I64 => $f::<i64>($($a),*),
            DType::U8 => $f::<u8>($($a),*),
            DType::U16 => $f::<u16>($($a),*),
            DType::U32 => $f::<u32>($($a),*),
            DType::U64 => $f::<u64>($($a),*),
            DType::F32 => $f::<f32>($($a),*),
            DType::F64 => $f::<f64>($($a),*),
            other => Err(mmkit_heap::Error::Invalid {
                op: "vector",
                reason: format!("no vector of dtype {}", other.code()),
            }),
        }
    };
}

/// The element type of the existing vector `name`; `None` if there is no
/// such vector.
fn vec_type(heap: &mmkit_heap::Heap, name: &str, op: &str, path: &str) -> PyResult<Option<DType>> {
    let Some(info) = existing(heap, name, "vec", op, path)? else { return Ok(None) };
    let found =
        probe(VECTOR_DTYPES, |d| by_dtype!(d, open_typed_vec(heap, name, false)).map(|v| v.is_some()));
    match found.context(op, path)? {
        Probe::Is(d) => Ok(Some(d)),
        Probe::Gone => Ok(None),
        Probe::Unknown => Err(PyTypeError::new_err(format!(
            "{op} {path}: vector {name:?} holds {}, which is not a numpy number type",
            info.type_name
        ))),
    }
}

// ----------------------------------------------------------------- heap

/// A heap shared by processes, in a file or in POSIX shared memory, that
/// grows while they use it and survives any of them being killed at any
/// instruction. It holds named containers: hash maps (`map`) and vectors
/// of numbers (`vector`), the same ones Rust programs open with
/// `mmkit_heap`.
///
/// `Heap(path=None, shm=None, create=False, size=1 MiB, max_size=None)`
/// opens the heap file `path`, or the shm segment `shm`
/// (`/dev/shm/<shm>`); with `create=True` it is created (mode 0600, `size`
/// bytes, growable to `max_size`, default 64 GiB) when missing.
///
/// ```python
/// heap = mmkit.Heap("app.heap", create=True, size=1 << 20)  # or shm="app-heap"
/// hits = heap.map("hits", key=str, value="uint64")
/// hits["/index.html"] = hits.get("/index.html", 0) + 1
/// log = heap.vector("latencies", "float64")
/// log.extend([0.25, 0.5])
/// assert log.to_numpy().sum() == 0.75
/// heap.unlink()                  # removes the name; open handles keep working
/// ```
#[pyclass(frozen, module = "mmkit")]
pub struct Heap {
    /// `None` once closed.
    heap: Mutex<Option<mmkit_heap::Heap>>,
    path: Option<PathBuf>,
    shm: Option<String>,
    name: String,
}

impl Heap {
    fn heap(&self, op: &str) -> PyResult<mmkit_heap::Heap> {
        lock(&self.heap).clone().ok_or_else(|| value_error(op, &self.name, "the heap is closed"))
    }
}

/// Sizes: a non-negative number of bytes.
fn size_arg(value: i64, what: &str, op: &str, path: &str) -> PyResult<u64> {
    u64::try_from(value)
        .map_err(|_| value_error(op, path, format!("{what} must be a number of bytes, not {value}")))
}

#[pymethods]
impl Heap {
    #[new]
    #[pyo3(signature = (path = None, shm = None, create = false, size = 1048576, max_size = None))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        shm: Option<String>,
        create: bool,
        size: i64,
        max_size: Option<i64>,
    ) -> PyResult<Self> {
        let name = match (&path, &shm) {
            (Some(p), None) => p.display().to_string(),
            (None, Some(s)) => format!("/dev/shm/{}", s.trim_start_matches('/')),
            _ => return Err(pyo3::exceptions::PyValueError::new_err("Heap: give either path or shm")),
        };
        let mut opts = HeapOptions::new().size(size_arg(size, "size", "Heap", &name)?);
        if let Some(max) = max_size {
            opts = opts.max_size(size_arg(max, "max_size", "Heap", &name)?);
        }
        let op = if create { "Heap(create=True)" } else { "Heap" };
        let heap = py
            .detach(|| match (&path, &shm, create) {
                (Some(p), _, true) => opts.open_or_create(p),
                (Some(p), _, false) => mmkit_heap::Heap::open(p),
                (None, Some(s), true) => opts.open_or_create_shm(s),
                (None, Some(s), false) => mmkit_heap::Heap::open_shm(s),
                (None, None, _) => unreachable!("checked above"),
            })
            .context(op, &name)?;
        Ok(Heap { heap: Mutex::new(Some(heap)), path, shm, name })
    }

    /// The hash map `name`, created empty if it does not exist.
    ///
    /// `key` and `value` are the types it holds: `bytes`, `str`, `int`
    /// (int64), "uint64" or `float` (float64). Left out, they are those of
    /// the existing map (one made by Rust's `heap.map::<str, u64>()` opens
    /// as str to uint64), or bytes for a new one. `TypeError` if the map
    /// exists with other types.
    #[pyo3(signature = (name, key = None, value = None))]
    fn map(
        &self,
        py: Python<'_>,
        name: &str,
        key: Option<&Bound<'_, PyAny>>,
        value: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<HeapMap> {
        const OP: &str = "Heap.map";
        let heap = self.heap(OP)?;
        let path = &self.name;
        let key = key.map(|k| Elem::parse(k, OP, path)).transpose()?;
        let value = value.map(|v| Elem::parse(v, OP, path)).transpose()?;
        // Registry lookups take the registry's lock: without the GIL.
        let existing = py.detach(|| map_types(&heap, name, OP, path))?.unwrap_or((Elem::Bytes, Elem::Bytes));
        let (k, v) = (key.unwrap_or(existing.0), value.unwrap_or(existing.1));
        let map = py.detach(|| by_types!(k, v, open_typed_map(&heap, name, true))).context(OP, path)?;
        let map = map.ok_or_else(|| value_error(OP, path, format!("map {name:?} could not be created")))?;
        Ok(HeapMap { map, name: name.to_string(), path: path.clone(), key: k, value: v })
    }

    /// The vector `name` of numbers of `dtype` (native int8 to int64,
    /// uint8 to uint64, float32 or float64; anything `numpy.dtype` takes),
    /// created empty if it does not exist. Left out, `dtype` is that of the
    /// existing vector, or float64 for a new one. `TypeError` if the vector
    /// exists with another dtype.
    #[pyo3(signature = (name, dtype = None))]
    fn vector(&self, py: Python<'_>, name: &str, dtype: Option<&Bound<'_, PyAny>>) -> PyResult<HeapVector> {
        const OP: &str = "Heap.vector";
        let heap = self.heap(OP)?;
        let path = &self.name;
        let wanted = dtype.map(|d| vector_dtype(py, d, OP, path)).transpose()?;
        let existing = py.detach(|| vec_type(&heap, name, OP, path))?.unwrap_or(DType::F64);
        let dtype = wanted.unwrap_or(existing);
        let vec = py.detach(|| by_dtype!(dtype, open_typed_vec(&heap, name, true))).context(OP, path)?;
        let vec =
            vec.ok_or_else(|| value_error(OP, path, format!("vector {name:?} could not be created")))?;
        Ok(HeapVector { vec, name: name.to_string(), path: path.clone(), dtype })
    }

    /// Removes the named object and frees its memory; returns whether it
    /// existed. Handles to it in other processes raise `ValueError` from
    /// then on.
    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        let heap = self.heap("Heap.remove")?;
        py.detach(|| heap.remove(name)).context("Heap.remove", &self.name)
    }

    /// The named objects, from the registry (no sizes: see `stat()`).
    fn objects(&self, py: Python<'_>) -> PyResult<Vec<HeapObject>> {
        let heap = self.heap("Heap.objects")?;
        let objects = py.detach(|| heap.objects()).context("Heap.objects", &self.name)?;
        Ok(objects.into_iter().map(|info| HeapObject::new(info, None, None)).collect())
    }

    /// Sizes, use, fragmentation and the named objects with their bytes.
    fn stat(&self, py: Python<'_>) -> PyResult<HeapStat> {
        let heap = self.heap("Heap.stat")?;
        let stat = py.detach(|| heap.stat()).context("Heap.stat", &self.name)?;
        HeapStat::new(py, &self.name, stat)
    }

    /// Verifies every structure and accounts for every byte. Raises
    /// `CorruptError` on an inconsistency; returns the report otherwise,
    /// whose `leaked_blocks` counts what a killed process's last allocation
    /// leaked. `repair=True` frees such leaks and rebuilds free lists.
    #[pyo3(signature = (repair = false))]
    fn check(&self, py: Python<'_>, repair: bool) -> PyResult<HeapCheck> {
        const OP: &str = "Heap.check";
        let heap = self.heap(OP)?;
        let report = py.detach(|| heap.check(repair)).context(OP, &self.name)?;
        if let Some(first) = report.errors.first() {
            return Err(CorruptError::new_err(format!(
                "{OP} {}: {} inconsistencies, the first: {first}",
                self.name,
                report.errors.len()
            )));
        }
        HeapCheck::new(py, &self.name, report)
    }

    /// Removes the heap's name (the shm segment, or the file); processes
    /// that have it open keep using it.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        const OP: &str = "Heap.unlink";
        match (&self.shm, &self.path) {
            (Some(s), _) => py.detach(|| mmkit_heap::Heap::unlink_shm(s)).context(OP, &self.name),
            (None, Some(p)) => py.detach(|| std::fs::remove_file(p)).context(OP, &self.name),
            (None, None) => Ok(()),
        }
    }

    /// The published size of the segment, in bytes.
    #[getter]
    fn size(&self) -> PyResult<u64> {
        Ok(self.heap("Heap.size")?.size())
    }

    /// The most the segment may grow to, in bytes.
    #[getter]
    fn max_size(&self) -> PyResult<u64> {
        Ok(self.heap("Heap.max_size")?.max_size())
    }

    /// The segment's file (`/dev/shm/<name>` for shm).
    #[getter]
    fn path(&self) -> &str {
        &self.name
    }

    /// The shm name, or None for a heap file.
    #[getter]
    fn shm(&self) -> Option<&str> {
        self.shm.as_deref()
    }

    /// Releases this handle; maps and vectors from it keep working.
    fn close(&self) {
        lock(&self.heap).take();
    }

    /// Pickles as the path or shm name: another process opens the same heap.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let this = slf.get();
        (slf.get_type(), (this.path.clone(), this.shm.clone())).into_pyobject(slf.py())
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
        match &self.shm {
            Some(s) => format!("Heap(shm={s:?})"),
            None => format!("Heap({:?})", self.name),
        }
    }
}

// ------------------------------------------------------------------ map

/// A hash map in a shared heap, used by many processes at once: lookups
/// take no lock, writers lock one stripe of the table, and the table grows
/// without stopping readers. Keys and values are copied in and out.
///
/// ```python
/// m = heap.map("sessions", key=str, value=bytes)
/// m["ada"] = b"token"
/// assert m["ada"] == b"token" and "ada" in m and len(m) == 1
/// assert m.pop("ada") == b"token"
/// ```
#[pyclass(frozen, mapping, module = "mmkit")]
pub struct HeapMap {
    map: Box<dyn DynMap>,
    name: String,
    path: String,
    key: Elem,
    value: Elem,
}

#[pymethods]
impl HeapMap {
    /// The value under `key`, or `default`.
    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.map.get(py, key, "HeapMap.get")?.or(default))
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.map.get(py, key, "HeapMap[]")?.ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __setitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.map.insert(py, key, value, "HeapMap[]=").map(drop)
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.map.remove(py, key, "HeapMap.__delitem__")? {
            Some(_) => Ok(()),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.map.contains(key, "HeapMap.__contains__")
    }

    /// Entries now (exact when no write runs meanwhile).
    fn __len__(&self) -> PyResult<usize> {
        self.map.len("HeapMap.__len__")
    }

    /// Sets `key` to `value`; returns the value it replaced, or None.
    fn insert<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.map.insert(py, key, value, "HeapMap.insert")
    }

    /// Sets every pair of `other`, a mapping or an iterable of `(key,
    /// value)` pairs, in order (as `dict.update`). Much faster than
    /// setting them one by one: the pairs go in groups that take the
    /// map's locks once (`ShmHashMap::insert_many`). A process killed
    /// meanwhile leaves the pairs before the one in progress set.
    fn update(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let op = "HeapMap.update";
        let source = match other.cast::<PyDict>() {
            Ok(d) => d.items().into_any(),
            Err(_) if other.hasattr("keys")? => other.call_method0("items")?,
            Err(_) => other.clone(),
        };
        let mut pairs = Vec::new();
        for item in source.try_iter()? {
            // Any two-item iterable is a pair, as for `dict.update`.
            let item = item?;
            let two: Option<Vec<_>> = item.try_iter().ok().and_then(|i| i.collect::<PyResult<_>>().ok());
            match two.as_deref() {
                Some([k, v]) => pairs.push((k.clone(), v.clone())),
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "{op}: expected (key, value) pairs, got {}",
                        item.get_type()
                    )));
                }
            }
        }
        self.map.update(py, &pairs, op)
    }

    /// Removes `key` and returns its value; `default` if it was missing
    /// and one was given, `KeyError` otherwise (as `dict.pop`).
    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if default.len() > 1 {
            return Err(PyTypeError::new_err(format!(
                "HeapMap.pop expected at most 2 arguments, got {}",
                default.len() + 1
            )));
        }
        match self.map.remove(py, key, "HeapMap.pop")? {
            Some(v) => Ok(v),
            None if default.len() == 1 => default.get_item(0),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// The `(key, value)` pairs: a copy taken while writers are held off
    /// for a moment (readers go on), in no particular order.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        self.map.items(py, "HeapMap.items")
    }

    /// The keys, copied as `items()` is.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        Ok(self.map.items(py, "HeapMap.keys")?.into_iter().map(|(k, _)| k).collect())
    }

    /// The values, copied as `items()` is.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        Ok(self.map.items(py, "HeapMap.values")?.into_iter().map(|(_, v)| v).collect())
    }

    /// Iterates over a copy of the keys.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyList::new(py, self.keys(py)?)?.try_iter()?.into_any())
    }

    /// The map's name in the heap.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The key type: "bytes", "str", "int64", "uint64" or "float64".
    #[getter]
    fn key_type(&self) -> &'static str {
        self.key.name()
    }

    /// The value type, named like `key_type`.
    #[getter]
    fn value_type(&self) -> &'static str {
        self.value.name()
    }

    fn __repr__(&self) -> String {
        format!(
            "HeapMap({:?}, {:?}, key={}, value={})",
            self.path,
            self.name,
            self.key.name(),
            self.value.name()
        )
    }
}

// --------------------------------------------------------------- vector

/// A vector of numbers in a shared heap: appends, reads and writes from
/// many processes at once (each call takes the vector's lock). Elements
/// are copied in and out; `to_numpy()` gives a numpy array copy.
///
/// ```python
/// v = heap.vector("samples", "int64")
/// v.append(3)
/// v.extend(np.arange(4))
/// assert v[0] == 3 and v[-1] == 3 and len(v) == 5
/// assert v.to_numpy().tolist() == [3, 0, 1, 2, 3]
/// ```
#[pyclass(frozen, sequence, module = "mmkit")]
pub struct HeapVector {
    vec: Box<dyn DynVec>,
    name: String,
    path: String,
    dtype: DType,
}

impl HeapVector {
    /// `index` counted from the end when negative; `IndexError` outside.
    fn position(&self, py: Python<'_>, index: i64, op: &str) -> PyResult<usize> {
        let len = self.vec.len(py, op)?;
        let at = if index < 0 { index.checked_add(len as i64) } else { Some(index) };
        match at {
            Some(i) if (0..len as i64).contains(&i) => Ok(i as usize),
            _ => Err(self.out_of_range(op, index)),
        }
    }

    fn out_of_range(&self, op: &str, index: i64) -> PyErr {
        PyIndexError::new_err(format!("{op} {}: vector {:?} has no index {index}", self.path, self.name))
    }
}

#[pymethods]
impl HeapVector {
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.vec.len(py, "HeapVector.__len__")
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: i64) -> PyResult<Bound<'py, PyAny>> {
        const OP: &str = "HeapVector[]";
        let i = self.position(py, index, OP)?;
        // Another process may shorten the vector in between.
        self.vec.get(py, i, OP)?.ok_or_else(|| self.out_of_range(OP, index))
    }

    fn __setitem__(&self, py: Python<'_>, index: i64, value: &Bound<'_, PyAny>) -> PyResult<()> {
        const OP: &str = "HeapVector[]=";
        let i = self.position(py, index, OP)?;
        if self.vec.set(py, i, value, OP)? { Ok(()) } else { Err(self.out_of_range(OP, index)) }
    }

    /// Appends one number.
    fn append(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.vec.push(py, value, "HeapVector.append")
    }

    /// Appends every number of `values` (a sequence or a 1-d array of this
    /// dtype) at once: other processes see none or all of them.
    fn extend(&self, py: Python<'_>, values: &Bound<'_, PyAny>) -> PyResult<()> {
        self.vec.extend(py, values, "HeapVector.extend")
    }

    /// Removes and returns the last number; `IndexError` when empty.
    fn pop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        const OP: &str = "HeapVector.pop";
        self.vec.pop(py, OP)?.ok_or_else(|| {
            PyIndexError::new_err(format!("{OP} {}: vector {:?} is empty", self.path, self.name))
        })
    }

    /// Shortens the vector to `length` numbers (no-op if it is shorter).
    fn truncate(&self, py: Python<'_>, length: usize) -> PyResult<()> {
        self.vec.truncate(py, length, "HeapVector.truncate")
    }

    /// Removes every number.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        self.vec.truncate(py, 0, "HeapVector.clear")
    }

    /// A numpy array copy of the numbers, taken under the vector's lock.
    fn to_numpy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.vec.to_numpy(py, "HeapVector.to_numpy")
    }

    /// The numbers as a list (a copy).
    fn tolist<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.to_numpy(py)?.call_method0("tolist")
    }

    /// Iterates over a copy of the numbers.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.tolist(py)?.try_iter()?.into_any())
    }

    /// The numpy dtype of the numbers.
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDescr>> {
        PyArrayDescr::new(py, self.dtype.code())
    }

    /// The vector's name in the heap.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    fn __repr__(&self) -> String {
        format!("HeapVector({:?}, {:?}, dtype={})", self.path, self.name, self.dtype.code())
    }
}

// ------------------------------------------------------------ stat, check

/// A named object of a heap: `name`, `kind` ("map", "vec", "string",
/// "box"), `type_name` (the Rust type it was made with), and from `stat()`
/// the `bytes` it holds and its `len` (entries or elements).
#[pyclass(frozen, get_all, module = "mmkit")]
pub struct HeapObject {
    /// The object's name.
    name: String,
    /// "map", "vec", "string" or "box".
    kind: &'static str,
    /// The Rust type it was made with.
    type_name: String,
    /// Bytes of its blocks (from `stat()`; None from `objects()`).
    bytes: Option<u64>,
    /// Entries or elements (from `stat()`, where the kind has a length).
    len: Option<u64>,
}

impl HeapObject {
    fn new(info: mmkit_heap::ObjectInfo, bytes: Option<u64>, len: Option<u64>) -> HeapObject {
        HeapObject { name: info.name, kind: info.kind, type_name: info.type_name, bytes, len }
    }
}

#[pymethods]
impl HeapObject {
    fn __repr__(&self) -> String {
        format!("HeapObject({:?}, kind={:?}, type_name={:?})", self.name, self.kind, self.type_name)
    }
}

/// `Heap.stat()`: where the bytes are. `header + used + free + overhead
/// == size`.
#[pyclass(frozen, get_all, module = "mmkit")]
pub struct HeapStat {
    /// The segment's file.
    path: String,
    /// Published size of the segment.
    size: u64,
    /// The most it may grow to.
    max_size: u64,
    /// Bytes of the header.
    header: u64,
    /// Bytes in allocated blocks.
    used: u64,
    /// Bytes free.
    free: u64,
    /// Allocator bookkeeping.
    overhead: u64,
    /// Allocated blocks.
    blocks: u64,
    /// The largest free stretch of pages.
    largest_free: u64,
    /// 0 when the free pages are one stretch, towards 1 as they scatter.
    fragmentation: f64,
    /// The named objects, with their bytes and lengths.
    objects: Vec<Py<HeapObject>>,
}

impl HeapStat {
    fn new(py: Python<'_>, path: &str, s: mmkit_heap::HeapStat) -> PyResult<HeapStat> {
        let objects = s
            .objects
            .into_iter()
            .map(|o| Py::new(py, HeapObject::new(o.info, Some(o.bytes), o.len)))
            .collect::<PyResult<_>>()?;
        Ok(HeapStat {
            path: path.to_string(),
            size: s.size,
            max_size: s.max_size,
            header: s.header,
            used: s.used,
            free: s.free,
            overhead: s.overhead,
            blocks: s.blocks,
            largest_free: s.largest_free,
            fragmentation: s.fragmentation,
            objects,
        })
    }
}

#[pymethods]
impl HeapStat {
    fn __repr__(&self) -> String {
        format!(
            "HeapStat({:?}, size={}, used={}, free={}, blocks={}, fragmentation={:.3}, objects={})",
            self.path,
            self.size,
            self.used,
            self.free,
            self.blocks,
            self.fragmentation,
            self.objects.len()
        )
    }
}

/// `Heap.check()`: a heap with no inconsistency (those raise
/// `CorruptError`); `clean` is False when blocks leaked.
#[pyclass(frozen, get_all, module = "mmkit")]
pub struct HeapCheck {
    /// True when nothing leaked.
    clean: bool,
    /// Allocated blocks no object reaches (a killed process's last
    /// allocation).
    leaked_blocks: u64,
    /// Their bytes.
    leaked_bytes: u64,
    /// What `repair=True` did.
    repairs: Vec<String>,
    /// Where the bytes are (after the repair).
    stat: Py<HeapStat>,
}

impl HeapCheck {
    fn new(py: Python<'_>, path: &str, r: mmkit_heap::CheckReport) -> PyResult<HeapCheck> {
        let clean = r.is_clean();
        Ok(HeapCheck {
            clean,
            leaked_blocks: r.leaked_blocks,
            leaked_bytes: r.leaked_bytes,
            repairs: r.repairs,
            stat: Py::new(py, HeapStat::new(py, path, r.stat)?)?,
        })
    }
}

#[pymethods]
impl HeapCheck {
    fn __repr__(&self) -> String {
        format!(
            "HeapCheck(clean={}, leaked_blocks={}, leaked_bytes={}, repairs={})",
            py_bool(self.clean),
            self.leaked_blocks,
            self.leaked_bytes,
            self.repairs.len()
        )
    }
}
