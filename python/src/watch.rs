//! `Watch` and `Change`: waiting, without polling, for commits that
//! change a key prefix of a `Db`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{timeout_arg, wait_in_slices};
use crate::db::Opened;
use crate::errors::{Context, value_error};
use crate::fork::{ProcessLocal, inherited};
use crate::lock;

/// A watch with the handle it borrows from.
struct OwnedWatch {
    /// Declared first: dropped before the handle it borrows.
    watch: mmkit_kv::Watch<'static>,
    _opened: Arc<Opened>,
}

impl OwnedWatch {
    fn begin(opened: Arc<Opened>, table: &str, key: &[u8], prefix: bool) -> mmkit_kv::Result<OwnedWatch> {
        let watch = opened.db().watch(table, key, prefix)?;
        // SAFETY: as in `OwnedRead::begin`: the watch borrows the `Db` in
        // the `Arc`'s allocation, which `_opened` keeps alive and in place,
        // and is dropped first; only `&mut` borrows tied to `self` are used.
        let watch = unsafe { std::mem::transmute::<mmkit_kv::Watch<'_>, mmkit_kv::Watch<'static>>(watch) };
        Ok(OwnedWatch { watch, _opened: opened })
    }
}

/// One change a watch saw: `key`, the new `value` (None: deleted) and the
/// commit (`txnid`) that made it.
#[pyclass(frozen, get_all, module = "mmkit")]
pub struct Change {
    /// The key.
    key: Py<PyBytes>,
    /// The new value; None when the key was deleted.
    value: Option<Py<PyBytes>>,
    /// The commit that made the change (the newest, when several commits
    /// were folded together).
    txnid: u64,
}

impl Change {
    fn new(py: Python<'_>, c: &mmkit_kv::Change) -> Change {
        Change {
            key: PyBytes::new(py, &c.key).unbind(),
            value: c.value.as_deref().map(|v| PyBytes::new(py, v).unbind()),
            txnid: c.txnid,
        }
    }
}

#[pymethods]
impl Change {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let value = match &self.value {
            Some(v) => v.bind(py).repr()?.to_string(),
            None => "None".to_string(),
        };
        Ok(format!("Change(key={}, value={value}, txnid={})", self.key.bind(py).repr()?, self.txnid))
    }
}

/// Waits, without polling, for commits that change the watched keys (see
/// `Db.watch`). Several commits that land between two waits are folded
/// into one batch: each key appears once, with its newest value.
#[pyclass(frozen, module = "mmkit")]
pub struct Watch {
    /// `None` once closed; usable only in the process that made it.
    inner: ProcessLocal<Mutex<Option<OwnedWatch>>>,
    /// Changes received and not yet returned by `__next__`.
    pending: Mutex<VecDeque<Py<Change>>>,
    timeout: Option<Duration>,
    path: String,
}

impl Watch {
    pub(crate) fn begin(
        opened: Arc<Opened>,
        table: &str,
        key: &[u8],
        prefix: bool,
        timeout: Option<Duration>,
    ) -> mmkit_kv::Result<Watch> {
        let path = opened.db().path().display().to_string();
        let watch = OwnedWatch::begin(opened, table, key, prefix)?;
        Ok(Watch {
            inner: ProcessLocal::new(Mutex::new(Some(watch))),
            pending: Mutex::new(VecDeque::new()),
            timeout,
            path,
        })
    }

    /// The next batch of changes, waiting up to `timeout`; empty on
    /// timeout.
    fn next_batch(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Vec<mmkit_kv::Change>> {
        const OP: &str = "Watch.wait";
        let inner = self.inner.get().ok_or_else(|| inherited(OP, &self.path, "watch"))?;
        let got = wait_in_slices(py, timeout, |slice| {
            let batch = py.detach(|| match lock(inner).as_mut() {
                Some(w) => w.watch.wait(Some(slice)).map(Some),
                None => Ok(None),
            });
            match batch.context(OP, &self.path)? {
                None => Err(value_error(OP, &self.path, "the watch is closed")),
                Some(changes) if changes.is_empty() => Ok(None),
                Some(changes) => Ok(Some(changes)),
            }
        })?;
        Ok(got.unwrap_or_default())
    }
}

#[pymethods]
impl Watch {
    /// The changes committed since the last call (or since the watch
    /// began), waiting up to `timeout` seconds for one (`None`: forever);
    /// an empty list on timeout.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<Py<Change>>> {
        let timeout = timeout_arg(timeout, "Watch.wait", &self.path)?;
        let mut out: Vec<Py<Change>> = lock(&self.pending).drain(..).collect();
        if out.is_empty() {
            let batch = self.next_batch(py, timeout)?;
            for c in &batch {
                out.push(Py::new(py, Change::new(py, c))?);
            }
        }
        Ok(out)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<Change>>> {
        if let Some(c) = lock(&self.pending).pop_front() {
            return Ok(Some(c));
        }
        let batch = self.next_batch(py, self.timeout)?;
        let mut pending = lock(&self.pending);
        for c in &batch {
            pending.push_back(Py::new(py, Change::new(py, c))?);
        }
        Ok(pending.pop_front())
    }

    /// The id of the last commit the watch has looked at.
    #[getter]
    fn seen(&self) -> PyResult<u64> {
        const OP: &str = "Watch.seen";
        let inner = self.inner.get().ok_or_else(|| inherited(OP, &self.path, "watch"))?;
        lock(inner)
            .as_ref()
            .map(|w| w.watch.seen())
            .ok_or_else(|| value_error(OP, &self.path, "the watch is closed"))
    }

    /// Stops watching.
    fn close(&self) {
        if let Some(inner) = self.inner.get() {
            lock(inner).take();
        }
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
        format!("Watch({:?})", self.path)
    }
}
