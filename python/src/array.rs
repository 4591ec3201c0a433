//! `open_array`, `create_array` and `Appendable`: `.npy` files as zero-copy
//! numpy arrays.
//!
//! The arrays numpy gets point straight into the mapping; their `base` is a
//! Python object that owns it (a [`MappedArray`], or for
//! [`Appendable::array`] a [`AppendableView`] that counts as an exported
//! buffer), so the mapping lives exactly as long as some array uses it.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mmkit_array::{
    Appendable as RsAppendable, Bool, Complex32, Complex64, CreateOptions, DType, Descr, Element, MmapArray,
    Mode, Order, f16,
};
use numpy::npyffi::{self, NPY_ARRAY_F_CONTIGUOUS, NPY_ARRAY_WRITEABLE, NpyTypes, PY_ARRAY_API, npy_intp};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{Context, value_error};
use crate::fork::{ProcessLocal, inherited};
use crate::lock;

/// Calls `$f::<T>($args)` with `T` the element type of `$dtype`.
macro_rules! with_element {
    ($dtype:expr, $f:ident ( $($arg:expr),* )) => {
        match $dtype {
            DType::Bool => $f::<Bool>($($arg),*),
            DType::I8 => $f::<i8>($($arg),*),
            DType::I16 => $f::<i16>($($arg),*),
            DType::I32 => $f::<i32>($($arg),*),
            DType::I64 => $f::<i64>($($arg),*),
            DType::U8 => $f::<u8>($($arg),*),
            DType::U16 => $f::<u16>($($arg),*),
            DType::U32 => $f::<u32>($($arg),*),
            DType::U64 => $f::<u64>($($arg),*),
            DType::F16 => $f::<f16>($($arg),*),
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            DType::C64 => $f::<Complex32>($($arg),*),
            DType::C128 => $f::<Complex64>($($arg),*),
        }
    };
}

/// An open array of any element type.
trait AnyArray: Send + Sync {
    fn raw_data(&self) -> mmkit_array::Result<(*mut u8, usize)>;
    fn shape(&self) -> &[usize];
    fn descr(&self) -> Descr;
    fn order(&self) -> Order;
    fn mode(&self) -> Mode;
    fn flush(&self) -> mmkit_array::Result<()>;
}

impl<T: Element> AnyArray for MmapArray<T> {
    fn raw_data(&self) -> mmkit_array::Result<(*mut u8, usize)> {
        MmapArray::raw_data(self)
    }
    fn shape(&self) -> &[usize] {
        MmapArray::shape(self)
    }
    fn descr(&self) -> Descr {
        MmapArray::descr(self)
    }
    fn order(&self) -> Order {
        MmapArray::order(self)
    }
    fn mode(&self) -> Mode {
        MmapArray::mode(self)
    }
    fn flush(&self) -> mmkit_array::Result<()> {
        MmapArray::flush(self)
    }
}

/// An open appendable array of any element type.
trait AnyAppendable: Send + Sync {
    /// Appends whole rows given as their raw native-order bytes.
    fn append_bytes(&mut self, bytes: &[u8]) -> mmkit_array::Result<()>;
    fn array(&self) -> &dyn AnyArray;
    fn sync(&self) -> mmkit_array::Result<()>;
    fn finish(self: Box<Self>) -> mmkit_array::Result<()>;
}

impl<T: Element> AnyAppendable for RsAppendable<T> {
    fn append_bytes(&mut self, bytes: &[u8]) -> mmkit_array::Result<()> {
        match bytemuck::try_cast_slice::<u8, T>(bytes) {
            Ok(rows) => self.append(rows),
            // numpy data is aligned in practice; copy when it is not.
            Err(_) => {
                let mut rows = vec![T::zeroed(); bytes.len() / size_of::<T>()];
                bytemuck::cast_slice_mut::<T, u8>(&mut rows).copy_from_slice(bytes);
                self.append(&rows)
            }
        }
    }
    fn array(&self) -> &dyn AnyArray {
        RsAppendable::array(self)
    }
    fn sync(&self) -> mmkit_array::Result<()> {
        RsAppendable::sync(self)
    }
    fn finish(self: Box<Self>) -> mmkit_array::Result<()> {
        RsAppendable::finish(*self)
    }
}

fn open_typed<T: Element>(path: &Path, mode: Mode) -> mmkit_array::Result<Box<dyn AnyArray>> {
    let arr = MmapArray::<T>::options().mode(mode).allow_unaligned(true).open::<T>(path)?;
    Ok(Box::new(arr))
}

fn create_typed<T: Element>(
    path: &Path,
    shape: &[usize],
    order: Order,
) -> mmkit_array::Result<Box<dyn AnyArray>> {
    let opts = CreateOptions { order, ..CreateOptions::default() };
    Ok(Box::new(MmapArray::<T>::create_with(path, shape, &opts)?))
}

fn create_appendable<T: Element>(
    path: &Path,
    row_shape: &[usize],
) -> mmkit_array::Result<Box<dyn AnyAppendable>> {
    Ok(Box::new(RsAppendable::<T>::create(path, row_shape)?))
}

fn open_appendable<T: Element>(path: &Path) -> mmkit_array::Result<Box<dyn AnyAppendable>> {
    Ok(Box::new(RsAppendable::<T>::open(path)?))
}

/// The dtype in the header of the `.npy` file at `path`.
fn file_descr(path: &Path) -> mmkit_array::Result<Descr> {
    let header = mmkit_array::read_header(path)?;
    header.parse_descr().map_err(|e| e.into_error(&path.display().to_string(), &header.descr))
}

fn open_any(path: &Path, mode: Mode) -> mmkit_array::Result<Box<dyn AnyArray>> {
    let descr = file_descr(path)?;
    with_element!(descr.dtype, open_typed(path, mode))
}

fn parse_mode(mode: &str, path: &str) -> PyResult<Mode> {
    match mode {
        "r" | "readonly" => Ok(Mode::ReadOnly),
        "r+" | "readwrite" => Ok(Mode::ReadWrite),
        "c" | "copyonwrite" => Ok(Mode::CopyOnWrite),
        "w+" | "write" => Err(value_error(
            "open_array",
            path,
            "mode 'w+' creates the file: use mmkit.create_array(path, dtype, shape)",
        )),
        other => {
            Err(value_error("open_array", path, format!("mode must be 'r', 'r+' or 'c', not {other:?}")))
        }
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::ReadOnly => "r",
        Mode::ReadWrite => "r+",
        _ => "c",
    }
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Wraps `len` bytes at `data` as an ndarray of `shape` and `descr` whose
/// `base` is `owner`.
///
/// # Safety
///
/// `data` must point to at least the bytes `shape` and `descr` describe,
/// mapped (and writable if `writeable`) for as long as `owner` lives.
unsafe fn wrap<'py>(
    owner: Bound<'py, PyAny>,
    data: *mut u8,
    shape: &[usize],
    descr: Descr,
    order: Order,
    writeable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = owner.py();
    let dtype = PyArrayDescr::new(py, descr.to_numpy())?;
    let mut dims: Vec<npy_intp> = shape.iter().map(|&d| d as npy_intp).collect();
    let mut flags = 0;
    if order == Order::Fortran {
        flags |= NPY_ARRAY_F_CONTIGUOUS;
    }
    if writeable {
        flags |= NPY_ARRAY_WRITEABLE;
    }
    // SAFETY: the type object is numpy's ndarray; `dtype` is a new reference
    // that NewFromDescr steals; `dims` has `ndim` entries (at most 64, as
    // mmkit-array checked the header); null strides ask numpy for the
    // contiguous ones of `flags`; `data` is valid as the caller promised.
    let arr = unsafe {
        let raw = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, NpyTypes::PyArray_Type),
            dtype.into_dtype_ptr(),
            dims.len() as i32,
            dims.as_mut_ptr(),
            ptr::null_mut(),
            data.cast::<c_void>(),
            flags,
            ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, raw)?
    };
    // SAFETY: `arr` is a fresh ndarray without a base; SetBaseObject steals
    // the reference `into_ptr` hands over, also when it fails.
    let status = unsafe { PY_ARRAY_API.PyArray_SetBaseObject(py, arr.as_ptr().cast(), owner.into_ptr()) };
    if status < 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(arr)
}

/// The object behind the `base` of an array from `open_array` or
/// `create_array`: it owns the mapping, which is released when the last
/// array using it is garbage-collected.
///
/// ```python
/// a = mmkit.open_array("points.npy", "r+")
/// a[0] = 1.5
/// a.base.flush()      # msync, as numpy.memmap.flush()
/// del a               # unmaps (when no view of it remains)
/// ```
#[pyclass(frozen, module = "mmkit")]
pub struct MappedArray {
    inner: Box<dyn AnyArray>,
    path: String,
}

#[pymethods]
impl MappedArray {
    /// The file's path.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// The mapping mode: "r", "r+" or "c".
    #[getter]
    fn mode(&self) -> &'static str {
        mode_name(self.inner.mode())
    }

    /// Writes changed pages back to the file (msync); a no-op for "r" and "c".
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.mode() != Mode::ReadWrite {
            return Ok(());
        }
        py.detach(|| self.inner.flush()).context("MappedArray.flush", &self.path)
    }

    fn __repr__(&self) -> String {
        let shape = self.inner.shape();
        format!(
            "MappedArray(path={:?}, mode={:?}, dtype={:?}, shape={shape:?})",
            self.path,
            self.mode(),
            self.inner.descr().to_numpy()
        )
    }
}

/// The ndarray over `inner`, owned by a new [`MappedArray`].
fn as_ndarray<'py>(py: Python<'py>, inner: Box<dyn AnyArray>, path: String) -> PyResult<Bound<'py, PyAny>> {
    let (data, _) = inner.raw_data().context("map array", &path)?;
    let shape = inner.shape().to_vec();
    let (descr, order, mode) = (inner.descr(), inner.order(), inner.mode());
    let owner = Bound::new(py, MappedArray { inner, path })?;
    // SAFETY: `raw_data` checked that the data lies inside the mapping,
    // which `owner` (the array's base) keeps mapped; writable only when the
    // mapping is ("r" maps read-only, and an opaque base keeps numpy from
    // ever making such an array writeable).
    unsafe { wrap(owner.into_any(), data, &shape, descr, order, mode != Mode::ReadOnly) }
}

/// Opens the `.npy` file at `path` as a numpy array that is a zero-copy
/// view of the file's mapping.
///
/// `mode` is numpy's: "r" (read-only; the array is not writeable), "r+"
/// (writes go to the file) or "c" (copy-on-write: writes stay in memory).
/// Unlike `numpy.memmap`, a file truncated by another process under the
/// mapping reads as zeros instead of killing the process with SIGBUS.
///
/// ```python
/// import numpy as np, mmkit
/// np.save("a.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
/// a = mmkit.open_array("a.npy", "r+")
/// a[1, 2] = 42
/// assert np.load("a.npy")[1, 2] == 42
/// ```
#[pyfunction]
#[pyo3(signature = (path, mode = "r"))]
pub fn open_array<'py>(py: Python<'py>, path: PathBuf, mode: &str) -> PyResult<Bound<'py, PyAny>> {
    let name = path_str(&path);
    let mode = parse_mode(mode, &name)?;
    let inner = py.detach(|| open_any(&path, mode)).context("open_array", &name)?;
    as_ndarray(py, inner, name)
}

/// The native-order dtype `dtype` (anything `numpy.dtype` accepts) names.
pub(crate) fn native_descr(
    py: Python<'_>,
    dtype: &Bound<'_, PyAny>,
    op: &str,
    path: &str,
) -> PyResult<Descr> {
    let descr = PyArrayDescr::new(py, dtype)?;
    let text: String = descr.getattr("str")?.extract()?;
    let parsed =
        Descr::parse(&text).map_err(|e| value_error(op, path, format!("dtype {text}: {}", e.reason())))?;
    if parsed.big_endian {
        return Err(value_error(op, path, format!("dtype {text}: only native (little-endian) byte order")));
    }
    Ok(parsed)
}

/// A shape argument: an int or a sequence of ints, none negative.
fn shape_arg(shape: &Bound<'_, PyAny>, op: &str, path: &str) -> PyResult<Vec<usize>> {
    let dims: Vec<i64> = match shape.extract::<i64>() {
        Ok(n) => vec![n],
        Err(_) => shape.extract().map_err(|_| {
            PyTypeError::new_err(format!("{op} {path}: a shape is an int or a sequence of ints"))
        })?,
    };
    dims.iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| value_error(op, path, format!("negative dimension in shape {dims:?}")))
        })
        .collect()
}

/// Creates (or truncates) the `.npy` file at `path` holding a zero-filled
/// array of `dtype` and `shape`, and returns a writeable zero-copy view of
/// it (numpy's mode "w+"). `order` is "C" or "F".
///
/// ```python
/// a = mmkit.create_array("grid.npy", "float64", (1000, 1000))
/// a[:, 0] = 1.0       # written to the file through the mapping
/// ```
#[pyfunction]
#[pyo3(signature = (path, dtype, shape, order = "C"))]
pub fn create_array<'py>(
    py: Python<'py>,
    path: PathBuf,
    dtype: &Bound<'py, PyAny>,
    shape: &Bound<'py, PyAny>,
    order: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let name = path_str(&path);
    let descr = native_descr(py, dtype, "create_array", &name)?;
    let shape = shape_arg(shape, "create_array", &name)?;
    let order = match order {
        "C" | "c" => Order::C,
        "F" | "f" => Order::Fortran,
        other => {
            return Err(value_error(
                "create_array",
                &name,
                format!("order must be 'C' or 'F', not {other:?}"),
            ));
        }
    };
    let inner = py
        .detach(|| with_element!(descr.dtype, create_typed(&path, &shape, order)))
        .context("create_array", &name)?;
    as_ndarray(py, inner, name)
}

/// An `.npy` file that grows along its first axis, while numpy (and other
/// processes) read it.
///
/// `Appendable(path, dtype, row_shape, create=False)` opens the file for
/// appending; with `create=True` it is created (empty) when missing. An
/// existing file must hold `dtype` rows of `row_shape` (both may be left
/// out to take the file's). One appender at a time may hold a file; a
/// process killed in the middle of `append` leaves a file numpy loads,
/// holding every row whose `append` returned.
///
/// ```python
/// log = mmkit.Appendable("log.npy", "float32", (3,), create=True)
/// log.append(np.ones((10, 3), dtype=np.float32))
/// log.append([1, 2, 3])              # one row
/// view = log.array()                 # shape (11, 3), zero-copy, read-only
/// del view
/// log.close()                        # BufferError while a view is alive
/// assert np.load("log.npy").shape == (11, 3)
/// ```
#[pyclass(frozen, module = "mmkit")]
pub struct Appendable {
    /// `None` once closed. Only the process that opened it may use it, or
    /// drop it (a child's drop would trim rows the parent appended since
    /// the fork; see `fork.rs`).
    state: ProcessLocal<Mutex<Option<Box<dyn AnyAppendable>>>>,
    /// Arrays from `array()` still alive (each holds one).
    exports: Arc<AtomicUsize>,
    path: String,
    descr: Descr,
    row_shape: Vec<usize>,
}

/// The `base` of an array from `Appendable.array()`: keeps the appendable
/// open (it counts as an exported buffer, so `close()` refuses) until the
/// array and every view of it are gone.
#[pyclass(frozen, module = "mmkit")]
pub struct AppendableView {
    _owner: Py<Appendable>,
    exports: Arc<AtomicUsize>,
}

impl Drop for AppendableView {
    fn drop(&mut self) {
        self.exports.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Appendable {
    /// The open appender, locked; an error when closed or inherited.
    fn state(&self, op: &str) -> PyResult<MutexGuard<'_, Option<Box<dyn AnyAppendable>>>> {
        let state = self.state.get().ok_or_else(|| inherited(op, &self.path, "appendable array"))?;
        Ok(lock(state))
    }

    fn closed_error(&self, op: &str) -> PyErr {
        value_error(op, &self.path, "the appendable array is closed")
    }

    fn open_or_create(
        path: &Path,
        descr: Option<Descr>,
        row_shape: Option<&[usize]>,
        create: bool,
    ) -> mmkit_array::Result<Box<dyn AnyAppendable>> {
        if create && !path.exists() {
            if let (Some(d), Some(r)) = (descr, row_shape) {
                return with_element!(d.dtype, create_appendable(path, r));
            }
        }
        let descr = match descr {
            Some(d) => d,
            None => file_descr(path)?,
        };
        with_element!(descr.dtype, open_appendable(path))
    }
}

#[pymethods]
impl Appendable {
    #[new]
    #[pyo3(signature = (path, dtype = None, row_shape = None, create = false))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        dtype: Option<&Bound<'_, PyAny>>,
        row_shape: Option<&Bound<'_, PyAny>>,
        create: bool,
    ) -> PyResult<Self> {
        const OP: &str = "Appendable";
        let name = path_str(&path);
        let descr = dtype.map(|d| native_descr(py, d, OP, &name)).transpose()?;
        let wanted_rows = row_shape.map(|r| shape_arg(r, OP, &name)).transpose()?;
        if create && (descr.is_none() || wanted_rows.is_none()) {
            return Err(value_error(OP, &name, "create=True needs dtype and row_shape"));
        }
        let inner = py
            .detach(|| Self::open_or_create(&path, descr, wanted_rows.as_deref(), create))
            .context(OP, &name)?;
        let arr = inner.array();
        let file_rows = arr.shape().get(1..).unwrap_or_default().to_vec();
        if let Some(wanted) = &wanted_rows {
            if *wanted != file_rows {
                return Err(value_error(
                    OP,
                    &name,
                    format!("the file's rows are shaped {file_rows:?}, not {wanted:?}"),
                ));
            }
        }
        Ok(Appendable {
            descr: arr.descr(),
            state: ProcessLocal::new(Mutex::new(Some(inner))),
            exports: Arc::new(AtomicUsize::new(0)),
            path: name,
            row_shape: file_rows,
        })
    }

    /// Appends `rows`: an array (or anything `numpy.asarray` takes) of one
    /// row (shaped `row_shape`) or of several (shaped `(n, *row_shape)`),
    /// cast to the file's dtype when numpy's "same_kind" rule allows.
    /// Returns the number of rows in the file afterwards.
    fn append(&self, py: Python<'_>, rows: &Bound<'_, PyAny>) -> PyResult<usize> {
        const OP: &str = "Appendable.append";
        let rows = self.as_rows(py, rows, OP)?;
        let arr = rows.cast::<PyUntypedArray>()?;
        let nbytes = arr.len() * arr.dtype().itemsize();
        // SAFETY: `as_rows` made `arr` a C-contiguous array of the file's
        // dtype, so its data is `nbytes` readable bytes, which `arr` keeps
        // alive for this call. The GIL, held throughout, keeps Python code
        // in this process from changing or freeing them. If the rows are a
        // view of memory another process writes (a shared mapping), the
        // copy below may mix old and new bytes, as numpy's own copies do:
        // the slice is only copied from, and any bytes are an element (Pod).
        let bytes = unsafe {
            let data = (*arr.as_array_ptr()).fields.data.cast::<u8>();
            if nbytes == 0 { &[][..] } else { std::slice::from_raw_parts(data, nbytes) }
        };
        let mut state = self.state(OP)?;
        let inner = state.as_mut().ok_or_else(|| self.closed_error(OP))?;
        inner.append_bytes(bytes).context(OP, &self.path)?;
        Ok(inner.array().shape().first().copied().unwrap_or(0))
    }

    /// The rows appended so far as a read-only numpy array, zero-copy. Its
    /// shape is fixed; call `array()` again to see later appends. While it
    /// (or any view of it) is alive, `close()` raises `BufferError`.
    fn array<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        const OP: &str = "Appendable.array";
        let this = slf.get();
        let (data, shape) = {
            let state = this.state(OP)?;
            let inner = state.as_ref().ok_or_else(|| this.closed_error(OP))?;
            let arr = inner.array();
            let (data, _) = arr.raw_data().context(OP, &this.path)?;
            // Counted before the lock is released, so `close()` cannot
            // unmap the rows between here and the array's creation.
            this.exports.fetch_add(1, Ordering::AcqRel);
            (data, arr.shape().to_vec())
        };
        let token = AppendableView { _owner: slf.clone().unbind(), exports: this.exports.clone() };
        let token = Bound::new(slf.py(), token)?;
        // SAFETY: `raw_data` checked the rows lie inside the mapping; the
        // appendable reserved its address range, so appends never move
        // them, and `close()` refuses to unmap while `token` (the array's
        // base) is alive. Read-only, so the array cannot race the appender.
        unsafe { wrap(token.into_any(), data, &shape, this.descr, Order::C, false) }
    }

    /// Flushes the rows, then the header, to stable storage (msync), so the
    /// appended rows survive a power failure too.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let state = self.state("Appendable.sync")?;
        let inner = state.as_ref().ok_or_else(|| self.closed_error("Appendable.sync"))?;
        py.detach(|| inner.sync()).context("Appendable.sync", &self.path)
    }

    /// Trims the preallocated tail and releases the file. Raises
    /// `BufferError` while arrays from `array()` are alive; closing twice is
    /// allowed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut state = self.state("Appendable.close")?;
        let alive = self.exports.load(Ordering::Acquire);
        if alive > 0 {
            return Err(PyBufferError::new_err(format!(
                "Appendable.close {}: {alive} array(s) from array() are still alive; delete them first",
                self.path
            )));
        }
        match state.take() {
            Some(inner) => py.detach(|| inner.finish()).context("Appendable.close", &self.path),
            None => Ok(()),
        }
    }

    /// True once `close()` succeeded.
    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.state("Appendable.closed")?.is_none())
    }

    /// Rows in the file.
    #[getter]
    fn rows(&self) -> PyResult<usize> {
        let state = self.state("Appendable.rows")?;
        let inner = state.as_ref().ok_or_else(|| self.closed_error("Appendable.rows"))?;
        Ok(inner.array().shape().first().copied().unwrap_or(0))
    }

    fn __len__(&self) -> PyResult<usize> {
        self.rows()
    }

    /// The element type, as a numpy dtype.
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDescr>> {
        PyArrayDescr::new(py, self.descr.to_numpy())
    }

    /// The shape of one row.
    #[getter]
    fn row_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.row_shape)
    }

    /// The file's path.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let Ok(state) = self.state("repr") else {
            return format!("Appendable(path={:?}, inherited through fork)", self.path);
        };
        match state.as_ref() {
            Some(inner) => format!(
                "Appendable(path={:?}, dtype={:?}, row_shape={:?}, rows={})",
                self.path,
                self.descr.to_numpy(),
                self.row_shape,
                inner.array().shape().first().copied().unwrap_or(0)
            ),
            None => format!("Appendable(path={:?}, closed)", self.path),
        }
    }
}

impl Appendable {
    /// `rows` as a C-contiguous array of the file's dtype shaped
    /// `(n, *row_shape)`.
    fn as_rows<'py>(
        &self,
        py: Python<'py>,
        rows: &Bound<'py, PyAny>,
        op: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let np = py.import("numpy")?;
        let target = PyArrayDescr::new(py, self.descr.to_numpy())?;
        let mut arr = np.call_method1("asarray", (rows,))?;
        let given = arr.getattr("dtype")?;
        if !given.eq(&target)? {
            let ok: bool = np.call_method1("can_cast", (&given, &target, "same_kind"))?.extract()?;
            if !ok {
                return Err(value_error(
                    op,
                    &self.path,
                    format!("cannot append {given} rows to a {} array", self.descr.to_numpy()),
                ));
            }
            arr = arr.call_method1("astype", (&target,))?;
        }
        let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
        let rank = self.row_shape.len();
        let arr = if shape.len() == rank && shape == self.row_shape {
            let one_row: Vec<usize> = std::iter::once(1).chain(self.row_shape.iter().copied()).collect();
            arr.call_method1("reshape", (PyTuple::new(py, one_row)?,))?
        } else if shape.len() == rank + 1 && shape[1..] == self.row_shape[..] {
            arr
        } else {
            return Err(PyValueError::new_err(format!(
                "{op} {}: rows shaped {shape:?} do not fit rows of shape {:?}",
                self.path, self.row_shape
            )));
        };
        np.call_method1("ascontiguousarray", (arr,))
    }
}
