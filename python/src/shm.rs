//! `SharedMemory`: POSIX named shared memory, a drop-in for
//! `multiprocessing.shared_memory.SharedMemory` without its resource
//! tracker.
//!
//! CPython names a segment `/name` for `shm_open` and reports it as `name`;
//! mmkit-region does the same (`/dev/shm/name`), so a name from either side
//! opens the same segment on the other. Nothing here ever unlinks a segment
//! except `unlink()`.

use std::ffi::c_int;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use mmkit_region::shm::Shm;
use mmkit_region::{Mapping, Mode};
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyMemoryView, PyTuple};

use crate::errors::Context;
use crate::lock;

/// A random segment name, as CPython makes them (`psm_` and hex digits).
fn random_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    // std seeds each `RandomState` from the OS's random source.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("psm_{random:016x}")
}

/// A POSIX named shared-memory segment, compatible with
/// `multiprocessing.shared_memory.SharedMemory`: the same names (with or
/// without the leading "/"), the same bytes, the same API.
///
/// Unlike the standard library's class before Python 3.13, no resource
/// tracker ever unlinks the segment behind your back: it lives until some
/// process calls `unlink()`.
///
/// ```python
/// shm = mmkit.SharedMemory(create=True, size=1024)
/// shm.buf[:5] = b"hello"
/// other = multiprocessing.shared_memory.SharedMemory(shm.name)
/// assert bytes(other.buf[:5]) == b"hello"
/// shm.close(); shm.unlink()
/// ```
#[pyclass(frozen, module = "mmkit")]
pub struct SharedMemory {
    name: String,
    size: usize,
    /// `None` once closed.
    map: Mutex<Option<Mapping>>,
    /// Buffers exported through the buffer protocol and not yet released
    /// (`buf` and everything made from this object directly).
    exports: AtomicUsize,
    /// The memoryview `buf` returns, made on first use.
    buf: Mutex<Option<Py<PyMemoryView>>>,
}

#[pymethods]
impl SharedMemory {
    /// `track` is accepted for code written for Python 3.13's class, and
    /// ignored: no resource tracker ever owns an mmkit segment.
    #[new]
    #[pyo3(signature = (name = None, create = false, size = 0, *, track = true))]
    fn new(py: Python<'_>, name: Option<String>, create: bool, size: i64, track: bool) -> PyResult<Self> {
        let _ = track;
        if size < 0 {
            return Err(PyValueError::new_err("SharedMemory: 'size' must be a positive integer"));
        }
        if create && size == 0 {
            return Err(PyValueError::new_err(
                "SharedMemory: 'size' must be a positive number different from zero",
            ));
        }
        let name = match (name, create) {
            (Some(n), _) => n,
            (None, true) => random_name(),
            (None, false) => {
                return Err(PyValueError::new_err("SharedMemory: 'name' can only be None if create=True"));
            }
        };
        let shown = format!("/{}", name.strip_prefix('/').unwrap_or(&name));
        let op = if create { "SharedMemory(create=True)" } else { "SharedMemory" };
        let (shm, map) = py
            .detach(|| {
                let shm = if create {
                    Shm::create(&name, size as u64)?
                } else {
                    Shm::open(&name, Mode::ReadWrite)?
                };
                if shm.is_empty() {
                    return Err(mmkit_region::Error::ZeroLength {
                        op: "map shm",
                        path: Some(shm.path().to_path_buf()),
                    });
                }
                let map = shm.map(Mode::ReadWrite)?;
                Ok((shm, map))
            })
            .context(op, &shown)?;
        Ok(SharedMemory {
            name: shm.name().to_string(),
            size: map.len(),
            map: Mutex::new(Some(map)),
            exports: AtomicUsize::new(0),
            buf: Mutex::new(None),
        })
    }

    /// The segment's name, without the leading "/" (as CPython reports it).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Size in bytes.
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// A memoryview of the whole segment; `None` after `close()`.
    #[getter]
    fn buf(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyMemoryView>>> {
        let this = slf.get();
        let mut buf = lock(&this.buf);
        if let Some(view) = buf.as_ref() {
            return Ok(Some(view.clone_ref(slf.py())));
        }
        if lock(&this.map).is_none() {
            return Ok(None);
        }
        let view = PyMemoryView::from(slf.as_any())?.unbind();
        *buf = Some(view.clone_ref(slf.py()));
        Ok(Some(view))
    }

    /// Releases `buf` and unmaps the segment (which stays in the system
    /// until `unlink()`). Raises `BufferError` while arrays or views made
    /// from `buf` are alive, as the standard library's class does.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let view = lock(&self.buf).take();
        if let Some(view) = view {
            if let Err(e) = view.bind(py).call_method0("release") {
                *lock(&self.buf) = Some(view);
                return Err(e);
            }
        }
        let alive = self.exports.load(Ordering::Acquire);
        if alive > 0 {
            return Err(PyBufferError::new_err(format!(
                "SharedMemory.close /{}: {alive} exported buffer(s) still alive",
                self.name
            )));
        }
        lock(&self.map).take();
        Ok(())
    }

    /// Removes the segment's name from the system; processes that have it
    /// open keep their mapping. Call it once, from one process.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| Shm::unlink(&self.name)).context("SharedMemory.unlink", &format!("/{}", self.name))
    }

    /// Pickles as the name, so another process attaches to the same segment.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let args = (slf.get().name.clone(), false, 0);
        (slf.get_type(), args).into_pyobject(slf.py())
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
        format!("SharedMemory({:?}, size={})", self.name, self.size)
    }

    /// # Safety
    ///
    /// Called by CPython with a valid `view` to fill.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let this = slf.get();
        let map = lock(&this.map);
        let Some(map) = map.as_ref() else {
            return Err(PyBufferError::new_err(format!(
                "SharedMemory /{}: the segment is closed",
                this.name
            )));
        };
        let (ptr, len) = (map.as_ptr(), map.len());
        // SAFETY: `ptr..ptr+len` is the read-write mapping, which stays
        // mapped while an export exists: `close()` refuses then, and the
        // view holds a reference to `slf`, so it is not dropped either.
        // FillInfo takes that reference and checks `flags`.
        let status = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr.cast_mut().cast(),
                len as ffi::Py_ssize_t,
                0,
                flags,
            )
        };
        if status < 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        this.exports.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// # Safety
    ///
    /// Called by CPython once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.exports.fetch_sub(1, Ordering::AcqRel);
    }
}
