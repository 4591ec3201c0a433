//! `Queue`, `Reader`, `Cursor` and `Record`: the persistent multi-process
//! queue.
//!
//! Handles are `frozen` classes whose state sits behind a `Mutex`, so that
//! a reader can wait with the GIL released while other threads run.
//! Waiting happens in slices, with a check for signals between two slices,
//! so Ctrl-C interrupts `next()`.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use mmkit_queue::{OpenOptions, Producer, Start};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::convert::{bytes_like, timeout_arg, wait_in_slices};
use crate::errors::{Context, value_error};
use crate::fork::{ProcessLocal, inherited};
use crate::lock;

/// A persistent, multi-process message queue in a directory.
///
/// `Queue(path, create=False, segment_size=None, max_message_size=None,
/// cache_behind=268435456)` opens the queue in `path`; with `create=True`
/// it is created when missing (`segment_size` and `max_message_size` apply
/// to creation only). `cache_behind` is how many bytes of full segments
/// this handle's appends leave in the page cache behind the one being
/// written (older ones are written back and dropped, so new segments reuse
/// their memory); `None` leaves the page cache to the kernel.
/// Any number of processes (Python or not, such as the `mmkit` CLI) may
/// append and read at once; every appended message is kept, in order, with
/// an index and a timestamp, and survives the crash of any process.
///
/// ```python
/// q = mmkit.Queue("/tmp/q", create=True)
/// i = q.append(b"hello")
/// r = q.reader("beginning")
/// rec = r.next(timeout=1.0)
/// assert (rec.index, rec.payload) == (i, b"hello")
/// ```
#[pyclass(frozen, module = "mmkit")]
pub struct Queue {
    /// `None` once closed. In a child forked since it was opened, the
    /// inherited handle is set aside (see `fork.rs`) and the queue opened
    /// again, so a `Queue` passed to a forked process just works.
    handle: Mutex<Option<ProcessLocal<Handle>>>,
    path: PathBuf,
    name: String,
}

/// This process's handle on the queue.
struct Handle {
    queue: mmkit_queue::Queue,
    /// Registered on first append: it takes a slot in the queue's producer
    /// table.
    producer: Option<Producer>,
}

impl Queue {
    /// This process's handle, reopened after a fork. The lock is never
    /// held while the GIL is released, so a fork cannot catch it locked.
    fn handle(&self, op: &str) -> PyResult<MutexGuard<'_, Option<ProcessLocal<Handle>>>> {
        let mut guard = lock(&self.handle);
        match guard.as_ref() {
            None => return Err(value_error(op, &self.name, "the queue is closed")),
            Some(h) if h.get().is_none() => {
                let queue = mmkit_queue::Queue::open(&self.path).context(op, &self.name)?;
                *guard = Some(ProcessLocal::new(Handle { queue, producer: None }));
            }
            Some(_) => {}
        }
        Ok(guard)
    }

    /// A clone of the queue handle (cheap: it shares the mappings).
    fn queue(&self, op: &str) -> PyResult<mmkit_queue::Queue> {
        let guard = self.handle(op)?;
        let handle = guard.as_ref().and_then(ProcessLocal::get);
        handle.map(|h| h.queue.clone()).ok_or_else(|| value_error(op, &self.name, "the queue is closed"))
    }

    /// Runs `f` with this process's producer, registered on first use.
    fn with_producer<R>(&self, op: &str, f: impl FnOnce(&mut Producer) -> PyResult<R>) -> PyResult<R> {
        let mut guard = self.handle(op)?;
        let closed = || value_error(op, &self.name, "the queue is closed");
        let handle = guard.as_mut().and_then(ProcessLocal::get_mut).ok_or_else(closed)?;
        if handle.producer.is_none() {
            handle.producer = Some(handle.queue.producer().context(op, &self.name)?);
        }
        f(handle.producer.as_mut().ok_or_else(closed)?)
    }
}

/// Calls `f` with the bytes of `data` (bytes, bytearray or memoryview).
fn with_payload<R>(data: &Bound<'_, PyAny>, op: &str, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    match bytes_like(data)? {
        Some(bytes) => Ok(f(&bytes)),
        None => Err(PyTypeError::new_err(format!(
            "{op}: a message is bytes, bytearray or memoryview, not {}",
            data.get_type().name()?
        ))),
    }
}

/// Parses `start`: "beginning", "end" or an index.
fn parse_start(start: &Bound<'_, PyAny>, path: &str) -> PyResult<Start> {
    if let Ok(index) = start.extract::<i128>() {
        return u64::try_from(index)
            .map(Start::Index)
            .map_err(|_| value_error("Queue.reader", path, format!("index {index} is out of range")));
    }
    match start.extract::<String>().as_deref() {
        Ok("beginning") => Ok(Start::Beginning),
        Ok("end") => Ok(Start::End),
        _ => Err(value_error(
            "Queue.reader",
            path,
            format!("start must be 'beginning', 'end' or an index, not {start}"),
        )),
    }
}

/// An optional positive segment or message size.
fn size_arg<T: TryFrom<i64>>(value: Option<i64>, what: &str, path: &str) -> PyResult<Option<T>> {
    value
        .map(|v| match T::try_from(v) {
            Ok(t) if v > 0 => Ok(t),
            _ => {
                Err(value_error("Queue", path, format!("{what} must be a positive number of bytes, not {v}")))
            }
        })
        .transpose()
}

// The default of `Queue(cache_behind=...)`, written out in the text
// signature, where Python shows it (pyo3 shows `Some(..)` as `...`).
const _: () = assert!(mmkit_queue::DEFAULT_CACHE_BEHIND == 268435456);

#[pymethods]
impl Queue {
    #[new]
    #[pyo3(signature = (
        path,
        create = false,
        segment_size = None,
        max_message_size = None,
        cache_behind = Some(268435456),
    ),
    text_signature = "(path, create=False, segment_size=None, max_message_size=None, cache_behind=268435456)"
    )]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        create: bool,
        segment_size: Option<i64>,
        max_message_size: Option<i64>,
        cache_behind: Option<i64>,
    ) -> PyResult<Self> {
        let name = path.display().to_string();
        let mut opts = OpenOptions::new();
        opts.create(create);
        if let Some(bytes) = size_arg::<u64>(segment_size, "segment_size", &name)? {
            opts.segment_size(bytes);
        }
        if let Some(bytes) = size_arg::<u32>(max_message_size, "max_message_size", &name)? {
            opts.max_message_size(bytes);
        }
        let cache_behind = cache_behind.map(u64::try_from).transpose().map_err(|_| {
            value_error(
                "Queue",
                &name,
                "cache_behind must be a number of bytes (0 or more) or None".to_string(),
            )
        })?;
        opts.cache_behind(cache_behind);
        let queue = py.detach(|| opts.open(&path)).context("Queue", &name)?;
        let handle = ProcessLocal::new(Handle { queue, producer: None });
        Ok(Queue { handle: Mutex::new(Some(handle)), path, name })
    }

    /// Appends one message (bytes, bytearray or memoryview) and returns its
    /// index. The message is in the queue, for every reader in every
    /// process, when this returns.
    fn append(&self, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        const OP: &str = "Queue.append";
        self.with_producer(OP, |producer| {
            with_payload(data, OP, |bytes| producer.append(bytes))?.context(OP, &self.name)
        })
    }

    /// Appends several messages at once (faster than one `append` each) and
    /// returns their indices, in order.
    fn append_batch(&self, messages: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
        const OP: &str = "Queue.append_batch";
        let items: Vec<Bound<'_, PyAny>> = messages.try_iter()?.collect::<PyResult<_>>()?;
        let mut owned: Vec<Vec<u8>> = Vec::new();
        let mut kinds = Vec::with_capacity(items.len());
        for item in &items {
            match item.cast::<PyBytes>() {
                Ok(b) => kinds.push(Some(b.as_bytes())),
                Err(_) => {
                    owned.push(with_payload(item, OP, <[u8]>::to_vec)?);
                    kinds.push(None);
                }
            }
        }
        let mut owned_iter = owned.iter();
        let slices: Vec<&[u8]> = kinds
            .into_iter()
            .map(|k| k.unwrap_or_else(|| owned_iter.next().map_or(&[][..], |v| v)))
            .collect();
        self.with_producer(OP, |producer| producer.append_batch(&slices).context(OP, &self.name))
    }

    /// A reader starting at `start`: "beginning" (the oldest message kept),
    /// "end" (after the last message appended so far) or an index.
    #[pyo3(signature = (start = None), text_signature = "($self, start='beginning')")]
    fn reader(&self, py: Python<'_>, start: Option<&Bound<'_, PyAny>>) -> PyResult<Reader> {
        const OP: &str = "Queue.reader";
        let start = match start {
            Some(s) => parse_start(s, &self.name)?,
            None => Start::Beginning,
        };
        let queue = self.queue(OP)?;
        let reader = py.detach(|| queue.reader(start)).context(OP, &self.name)?;
        Ok(Reader::new(Source::Plain(Box::new(reader)), &self.name))
    }

    /// The named cursor `name`: a reader whose position is stored in the
    /// queue by `commit()`, so a consumer resumes where it left off. A new
    /// cursor starts at the oldest message.
    fn cursor(&self, py: Python<'_>, name: &str) -> PyResult<Py<Cursor>> {
        let queue = self.queue("Queue.cursor")?;
        let cursor = py.detach(|| queue.cursor(name)).context("Queue.cursor", &self.name)?;
        let base = Reader::new(Source::Cursor(Box::new(cursor)), &self.name);
        Py::new(py, PyClassInitializer::from(base).add_subclass(Cursor))
    }

    /// Flushes every segment and the meta file to stable storage.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let queue = self.queue("Queue.sync")?;
        py.detach(|| queue.sync()).context("Queue.sync", &self.name)
    }

    /// Releases this handle's producer slot. Readers and cursors made from
    /// the queue keep working.
    fn close(&self) {
        lock(&self.handle).take();
    }

    /// The queue's directory.
    #[getter]
    fn path(&self) -> &str {
        &self.name
    }

    /// Bytes per segment file.
    #[getter]
    fn segment_size(&self) -> PyResult<u64> {
        Ok(self.queue("Queue.segment_size")?.segment_size())
    }

    /// The largest message accepted, in bytes.
    #[getter]
    fn max_message_size(&self) -> PyResult<usize> {
        Ok(self.queue("Queue.max_message_size")?.max_message_size())
    }

    /// The index of the oldest message kept.
    #[getter]
    fn first_index(&self) -> PyResult<u64> {
        self.queue("Queue.first_index")?.first_index().context("Queue.first_index", &self.name)
    }

    /// The index the next message will get (one past the last one).
    #[getter]
    fn end_index(&self) -> PyResult<u64> {
        self.queue("Queue.end_index")?.end_index().context("Queue.end_index", &self.name)
    }

    /// Pickles as the path: another process (spawned or forked) opens the
    /// same queue.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        (slf.get_type(), (slf.get().name.clone(),)).into_pyobject(slf.py())
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
        format!("Queue({:?})", self.name)
    }
}

/// One message: `.index`, `.payload` (bytes) and `.timestamp`
/// (nanoseconds since the Unix epoch when appended; 0 when the queue keeps
/// no timestamps).
#[pyclass(frozen, module = "mmkit")]
pub struct Record {
    /// The message's index in the queue.
    #[pyo3(get)]
    index: u64,
    /// When it was appended, in nanoseconds since the Unix epoch.
    #[pyo3(get)]
    timestamp: u64,
    /// The message.
    #[pyo3(get)]
    payload: Py<PyBytes>,
}

#[pymethods]
impl Record {
    fn __repr__(&self, py: Python<'_>) -> String {
        let payload = self.payload.bind(py);
        let shown = payload.as_bytes().len().min(32);
        let dots = if payload.as_bytes().len() > shown { "..." } else { "" };
        let head = PyBytes::new(py, &payload.as_bytes()[..shown]);
        format!(
            "Record(index={}, timestamp={}, payload={}{dots})",
            self.index,
            self.timestamp,
            head.repr().map_or_else(|_| String::new(), |r| r.to_string())
        )
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.payload.bind(py).as_bytes().len()
    }
}

/// What a [`Reader`] reads with.
enum Source {
    Plain(Box<mmkit_queue::Reader>),
    Cursor(Box<mmkit_queue::Cursor>),
}

impl Source {
    fn reader(&mut self) -> &mut mmkit_queue::Reader {
        match self {
            Source::Plain(r) => r,
            Source::Cursor(c) => c,
        }
    }
}

/// A message copied out of the queue while the GIL was released.
struct Owned {
    index: u64,
    timestamp: u64,
    payload: Vec<u8>,
}

/// A reader of a queue, from any position; each reader sees every message.
///
/// Iterating (`for rec in reader`) yields the messages there are now and
/// stops at the end (a later iteration continues from there);
/// `next(timeout)` waits for the next one. Both return `Record`s.
///
/// ```python
/// r = q.reader("end")
/// rec = r.next(timeout=5.0)    # None after 5 s without a message
/// for rec in q.reader():       # everything so far
///     print(rec.index, rec.payload)
/// ```
#[pyclass(frozen, subclass, module = "mmkit")]
pub struct Reader {
    /// Usable only in the process that made it (see `fork.rs`): its
    /// queue handle pins segments on behalf of that process.
    source: ProcessLocal<Mutex<Source>>,
    path: String,
}

impl Reader {
    fn new(source: Source, path: &str) -> Self {
        Reader { source: ProcessLocal::new(Mutex::new(source)), path: path.to_string() }
    }

    fn source(&self, op: &str) -> PyResult<&Mutex<Source>> {
        self.source.get().ok_or_else(|| inherited(op, &self.path, "reader"))
    }

    /// The next message if one is committed, without waiting; `None` also
    /// when another thread holds the reader (it is waiting).
    fn poll(&self, py: Python<'_>) -> PyResult<Option<Record>> {
        let mut guard = match self.source("Reader.next")?.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        let rec = guard.reader().next().context("Reader.next", &self.path)?;
        Ok(rec.map(|r| Record {
            index: r.index(),
            timestamp: r.timestamp(),
            payload: PyBytes::new(py, r.payload()).unbind(),
        }))
    }

    /// Waits up to `slice` for the next message with the GIL released.
    fn wait(&self, py: Python<'_>, slice: Duration) -> PyResult<Option<Record>> {
        let source = self.source("Reader.next")?;
        let got = py.detach(|| {
            let mut guard = lock(source);
            let rec = guard.reader().next_timeout(Some(slice))?;
            Ok::<_, mmkit_queue::Error>(rec.map(|r| Owned {
                index: r.index(),
                timestamp: r.timestamp(),
                payload: r.payload().to_vec(),
            }))
        });
        let got = got.context("Reader.next", &self.path)?;
        Ok(got.map(|o| Record {
            index: o.index,
            timestamp: o.timestamp,
            payload: PyBytes::new(py, &o.payload).unbind(),
        }))
    }

    /// Runs `f` on the reader, with the GIL released if another thread
    /// holds it.
    fn with_source<R: Send>(
        &self,
        py: Python<'_>,
        op: &str,
        f: impl FnOnce(&mut Source) -> R + Send,
    ) -> PyResult<R> {
        let source = self.source(op)?;
        Ok(match source.try_lock() {
            Ok(mut g) => f(&mut g),
            Err(TryLockError::Poisoned(p)) => f(&mut p.into_inner()),
            Err(TryLockError::WouldBlock) => py.detach(|| f(&mut lock(source))),
        })
    }
}

#[pymethods]
impl Reader {
    /// The next message, waiting up to `timeout` seconds for it (`None`:
    /// as long as it takes). Returns `None` on timeout. The GIL is released
    /// while waiting, and Ctrl-C interrupts the wait.
    #[pyo3(signature = (timeout = None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Record>> {
        let timeout = timeout_arg(timeout, "Reader.next", &self.path)?;
        if let Some(rec) = self.poll(py)? {
            return Ok(Some(rec));
        }
        wait_in_slices(py, timeout, |slice| self.wait(py, slice))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Record>> {
        self.poll(py)
    }

    /// The index of the next message this reader returns.
    #[getter]
    fn position(&self, py: Python<'_>) -> PyResult<u64> {
        self.with_source(py, "Reader.position", |s| s.reader().position())
    }

    /// Moves the reader to `index` (the next message returned is the one at
    /// `index`, or the first after it if that one was abandoned).
    fn seek(&self, py: Python<'_>, index: u64) -> PyResult<()> {
        self.with_source(py, "Reader.seek", |s| s.reader().seek(index))?.context("Reader.seek", &self.path)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("Reader({:?}, position={})", self.path, self.position(py)?))
    }
}

/// A named cursor: a `Reader` whose position `commit()` stores in the
/// queue, so that a consumer restarted later (in any process) resumes
/// after the last committed message. Delivery is at-least-once.
///
/// ```python
/// c = q.cursor("billing")
/// for rec in c:
///     handle(rec.payload)
/// c.commit()
/// ```
#[pyclass(frozen, extends = Reader, module = "mmkit")]
pub struct Cursor;

impl Cursor {
    fn with_cursor<R: Send>(
        slf: &Bound<'_, Self>,
        op: &str,
        f: impl FnOnce(&mut mmkit_queue::Cursor) -> R + Send,
    ) -> PyResult<R> {
        let reader = slf.as_super().get();
        let got = reader.with_source(slf.py(), op, |s| match s {
            Source::Cursor(c) => Some(f(c)),
            Source::Plain(_) => None,
        })?;
        got.ok_or_else(|| value_error(op, &reader.path, "not a cursor"))
    }
}

#[pymethods]
impl Cursor {
    /// Stores the current position in the queue.
    fn commit(slf: &Bound<'_, Self>) -> PyResult<()> {
        let path = slf.as_super().get().path.clone();
        Self::with_cursor(slf, "Cursor.commit", |c| c.commit())?.context("Cursor.commit", &path)
    }

    /// The cursor's name.
    #[getter]
    fn name(slf: &Bound<'_, Self>) -> PyResult<String> {
        Self::with_cursor(slf, "Cursor.name", |c| c.name().to_string())
    }

    /// The last committed position.
    #[getter]
    fn committed(slf: &Bound<'_, Self>) -> PyResult<u64> {
        Self::with_cursor(slf, "Cursor.committed", |c| c.committed())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let reader = slf.as_super().get();
        Ok(format!(
            "Cursor({:?}, name={:?}, position={}, committed={})",
            reader.path,
            Self::name(slf)?,
            reader.position(slf.py())?,
            Self::committed(slf)?
        ))
    }
}
