//! Arguments shared by the classes: byte strings, keys, timeouts, and
//! waiting in slices with the GIL released.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};

use crate::errors::value_error;

/// How long one wait with the GIL released lasts at most before signals
/// (Ctrl-C) are checked.
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(100);

/// The bytes of a bytes, bytearray or memoryview; `None` for anything else.
pub(crate) fn bytes_like<'a>(data: &'a Bound<'_, PyAny>) -> PyResult<Option<Cow<'a, [u8]>>> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(Some(Cow::Borrowed(b.as_bytes())));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok(Some(Cow::Owned(b.to_vec())));
    }
    if data.is_instance_of::<PyMemoryView>() {
        let bytes = data.call_method0("tobytes")?;
        return Ok(Some(Cow::Owned(bytes.cast::<PyBytes>()?.as_bytes().to_vec())));
    }
    Ok(None)
}

/// The bytes of a key or value given as bytes, bytearray, memoryview or
/// str (UTF-8; lone surrogates from `os.fsdecode`-style decoding go back to
/// the bytes they stand for, as `os.fsencode` does).
pub(crate) fn key_bytes<'a>(data: &'a Bound<'_, PyAny>, what: &str, op: &str) -> PyResult<Cow<'a, [u8]>> {
    if let Some(bytes) = bytes_like(data)? {
        return Ok(bytes);
    }
    if let Ok(s) = data.cast::<PyString>() {
        return match s.to_str() {
            Ok(text) => Ok(Cow::Borrowed(text.as_bytes())),
            Err(_) => {
                let encoded = s.call_method1("encode", ("utf-8", "surrogateescape"))?;
                Ok(Cow::Owned(encoded.cast::<PyBytes>()?.as_bytes().to_vec()))
            }
        };
    }
    Err(PyTypeError::new_err(format!(
        "{op}: a {what} is bytes, bytearray, memoryview or str, not {}",
        data.get_type().name()?
    )))
}

/// A stored key as str: UTF-8, with bytes that are not valid UTF-8 as lone
/// surrogates (`os.fsdecode`), so `key_bytes` gives the same bytes back.
pub(crate) fn key_str<'py>(py: Python<'py>, key: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match std::str::from_utf8(key) {
        Ok(text) => Ok(PyString::new(py, text).into_any()),
        Err(_) => PyBytes::new(py, key).call_method1("decode", ("utf-8", "surrogateescape")),
    }
}

/// A bool as Python writes it, for `__repr__`.
pub(crate) fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Parses a timeout in seconds: `None` waits forever.
pub(crate) fn timeout_arg(timeout: Option<f64>, op: &str, path: &str) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => {
            Err(value_error(op, path, format!("timeout must be a non-negative number of seconds, not {t}")))
        }
        Some(t) => Ok(Duration::try_from_secs_f64(t).ok()),
    }
}

/// Calls `attempt(slice)`, which waits up to `slice` with the GIL
/// released, until it returns something, `timeout` passes (`None`: never;
/// at least one attempt is made) or a signal handler raises (Ctrl-C),
/// checked between two slices.
pub(crate) fn wait_in_slices<R>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: impl FnMut(Duration) -> PyResult<Option<R>>,
) -> PyResult<Option<R>> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut first = true;
    loop {
        let slice = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left.min(WAIT_SLICE),
                // Always one attempt, even with a zero timeout.
                None if first => Duration::ZERO,
                None => return Ok(None),
            },
            None => WAIT_SLICE,
        };
        first = false;
        if let Some(got) = attempt(slice)? {
            return Ok(Some(got));
        }
        if timeout.is_some_and(|t| t.is_zero()) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}

/// Carries a `!Send` value into and out of `Python::detach`, whose closure
/// runs on the calling thread.
pub(crate) struct SameThread<T>(T);

// SAFETY: the wrapper is only used to move values into and out of
// `Python::detach` closures (see its callers), and `Python::detach` runs
// its closure on the calling thread and returns there: a wrapped value
// never reaches another thread.
unsafe impl<T> Send for SameThread<T> {}

impl<T> SameThread<T> {
    pub(crate) fn new(value: T) -> Self {
        SameThread(value)
    }

    pub(crate) fn into_inner(self) -> T {
        self.0
    }
}
