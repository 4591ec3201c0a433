//! `Db`: the key-value store with named tables, read and write
//! transactions, range and prefix iteration, watches, `stat` and `check`.
//!
//! Transactions borrow the crate's `Db`; here they own an `Arc` of it
//! beside the borrow (see [`OwnedRead`]), so a Python object can hold one.
//! Their tables and iterators are in `table.rs`, watches in `watch.rs`.
//! Every value read is copied into `bytes` before the call returns: no
//! Python object ever points into the mapping, so nothing outlives the
//! snapshot it was read from.
//!
//! A write transaction belongs to the thread that began it (the crate's
//! writer locks are that thread's): it lives in a [`ThreadBound`], and
//! another thread gets a `RuntimeError`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use mmkit_kv::{DEFAULT_TABLE, Durability, Options, ReadTxn, WriteTxn};
use pyo3::exceptions::{PyResourceWarning, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::{SameThread, key_bytes, py_bool, timeout_arg};
use crate::errors::{Context, value_error};
use crate::fork::{ProcessLocal, ThreadBound, inherited};
use crate::lock;
use crate::table::{Owner, Table};
use crate::watch::Watch;

/// An open database, shared by a `Db` or `Kv` object and everything made
/// from it (transactions, iterators, watches).
pub(crate) struct Opened {
    pub(crate) kv: mmkit_kv::Kv,
    /// The thread whose write transaction is open through this handle: the
    /// same thread asking for another one gets an error, not a deadlock on
    /// the crate's writer mutex.
    writer: Mutex<Option<ThreadId>>,
    /// Set when an unfinished write transaction was dropped on a thread
    /// other than its own: its locks stay held, so this handle cannot
    /// write any more.
    abandoned: AtomicBool,
}

impl Opened {
    fn new(db: mmkit_kv::Db) -> Arc<Opened> {
        Arc::new(Opened {
            kv: mmkit_kv::Kv::from_db(db),
            writer: Mutex::new(None),
            abandoned: AtomicBool::new(false),
        })
    }

    pub(crate) fn db(&self) -> &mmkit_kv::Db {
        self.kv.db()
    }
}

/// The open database of a `Db` or `Kv` object: `None` once closed, and
/// opened again in a child forked since (the parent's handle holds the
/// parent's locks while a write transaction is open, so the child must not
/// use it; see `fork.rs`).
pub(crate) struct Handle {
    cell: Mutex<Option<ProcessLocal<Arc<Opened>>>>,
    opts: Options,
    path: PathBuf,
    pub(crate) name: String,
}

impl Handle {
    pub(crate) fn open(py: Python<'_>, path: PathBuf, opts: Options, op: &str) -> PyResult<Handle> {
        let name = path.display().to_string();
        let db = py.detach(|| opts.open(&path)).context(op, &name)?;
        let cell = Mutex::new(Some(ProcessLocal::new(Opened::new(db))));
        Ok(Handle { cell, opts, path, name })
    }

    /// This process's database handle.
    pub(crate) fn get(&self, op: &str) -> PyResult<Arc<Opened>> {
        let mut guard = lock(&self.cell);
        match guard.as_ref() {
            None => return Err(value_error(op, &self.name, "the database is closed")),
            Some(h) => {
                if let Some(opened) = h.get() {
                    return Ok(opened.clone());
                }
            }
        }
        let opened = Opened::new(self.opts.open(&self.path).context(op, &self.name)?);
        *guard = Some(ProcessLocal::new(opened.clone()));
        Ok(opened)
    }

    pub(crate) fn close(&self) {
        lock(&self.cell).take();
    }

    /// Makes every commit so far durable, with the GIL released.
    pub(crate) fn sync(&self, py: Python<'_>, op: &str) -> PyResult<()> {
        let opened = self.get(op)?;
        py.detach(|| opened.db().sync()).context(op, &self.name)
    }

    /// The durability of commits, by name.
    pub(crate) fn durability(&self, op: &str) -> PyResult<&'static str> {
        Ok(durability_name(self.get(op)?.db().durability()))
    }

    pub(crate) fn path(&self) -> &PathBuf {
        &self.path
    }
}

/// Parses "immediate", "eventual" or "group".
pub(crate) fn durability_arg(name: &str, op: &str, path: &str) -> PyResult<Durability> {
    match name {
        "immediate" => Ok(Durability::Immediate),
        "eventual" => Ok(Durability::Eventual),
        "group" => Ok(Durability::Group),
        other => Err(value_error(
            op,
            path,
            format!("durability must be 'immediate', 'eventual' or 'group', not {other:?}"),
        )),
    }
}

pub(crate) fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Eventual => "eventual",
        Durability::Group => "group",
        _ => "immediate",
    }
}

/// A key-value database in one file (plus its `-lock` file), shared by
/// any number of processes: readers see one committed snapshot each and
/// take no lock; one writer at a time, across all processes.
///
/// `Db(path, create=False, durability="immediate", read_only=False,
/// reserve=None)` opens the database at `path`; `create=True` creates it
/// when missing. `durability` is "immediate" (a commit is on disk when it
/// returns), "eventual" (no sync: survives a crash of the process, not of
/// the machine) or "group" (like "immediate", with one sync shared by
/// concurrent committers). `reserve` is the address space reserved for the
/// mapping, the most the file may grow to while open (default 1 TiB).
///
/// ```python
/// db = mmkit.Db("app.kv", create=True)
/// with db.write() as w:              # commits on exit, aborts on an exception
///     users = w.table("users")
///     users[b"ada"] = b"lovelace"
///     users.put("alan", "turing")    # str is stored as UTF-8
/// with db.read() as r:               # one snapshot for the whole block
///     users = r.table("users")
///     assert users[b"ada"] == b"lovelace"
///     assert [k for k, v in users.prefix(b"a", reverse=True)] == [b"alan", b"ada"]
/// ```
#[pyclass(frozen, module = "mmkit")]
pub struct Db {
    handle: Handle,
    read_only: bool,
    reserve: Option<usize>,
}

impl Db {
    fn name(&self) -> &str {
        &self.handle.name
    }
}

#[pymethods]
impl Db {
    #[new]
    #[pyo3(signature = (path, create = false, durability = "immediate", read_only = false, reserve = None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        create: bool,
        durability: &str,
        read_only: bool,
        reserve: Option<i64>,
    ) -> PyResult<Self> {
        let name = path.display().to_string();
        let mut opts = Options::new();
        opts.create(create).read_only(read_only).durability(durability_arg(durability, "Db", &name)?);
        let reserve = match reserve {
            None => None,
            Some(bytes) => Some(usize::try_from(bytes).map_err(|_| {
                value_error("Db", &name, format!("reserve must be a number of bytes, not {bytes}"))
            })?),
        };
        if let Some(bytes) = reserve {
            opts.reserve(bytes);
        }
        Ok(Db { handle: Handle::open(py, path, opts, "Db")?, read_only, reserve })
    }

    /// Begins a read transaction: a snapshot of the last commit, unchanged
    /// by later commits for as long as it is open. Use it in a `with`
    /// block, or `close()` it: an open one keeps the pages it sees from
    /// being reused.
    fn read(&self) -> PyResult<ReadTransaction> {
        const OP: &str = "Db.read";
        let opened = self.handle.get(OP)?;
        let owned = OwnedRead::begin(opened).context(OP, self.name())?;
        Ok(ReadTransaction { txn: Mutex::new(Some(ProcessLocal::new(owned))), path: self.name().to_string() })
    }

    /// Begins the write transaction, waiting (with the GIL released) while
    /// another thread or process has one. In a `with` block it commits on
    /// a normal exit and aborts on an exception. `durability` overrides the
    /// database's for this commit.
    #[pyo3(signature = (durability = None))]
    fn write(&self, py: Python<'_>, durability: Option<&str>) -> PyResult<WriteTransaction> {
        const OP: &str = "Db.write";
        let opened = self.handle.get(OP)?;
        let durability = match durability {
            Some(d) => durability_arg(d, OP, self.name())?,
            None => opened.db().durability(),
        };
        WriteTransaction::begin(py, opened, durability, OP, self.name())
    }

    /// Watches the keys of `table` that start with `prefix` (exactly
    /// `prefix` with `exact=True`), from the last commit on. Iterating the
    /// watch yields a `Change` for each key a later commit sets or deletes,
    /// waiting up to `timeout` seconds for the next one (`None`: forever);
    /// the iteration ends after `timeout` without a change. `wait()` gives
    /// the changes batch by batch. The GIL is released while waiting, and
    /// Ctrl-C interrupts it.
    ///
    /// ```python
    /// for change in db.watch(b"user:", timeout=5.0):
    ///     print(change.key, change.value)    # value None: deleted
    /// ```
    #[pyo3(signature = (prefix = None, timeout = None, *, table = "default", exact = false))]
    fn watch(
        &self,
        prefix: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        table: &str,
        exact: bool,
    ) -> PyResult<Watch> {
        const OP: &str = "Db.watch";
        let timeout = timeout_arg(timeout, OP, self.name())?;
        let key = match prefix {
            Some(p) => key_bytes(p, "prefix", OP)?.into_owned(),
            None => Vec::new(),
        };
        let opened = self.handle.get(OP)?;
        Watch::begin(opened, table, &key, !exact, timeout).context(OP, self.name())
    }

    /// Statistics: commits, tables and their entries, pages, free pages,
    /// file size, open readers and the oldest snapshot.
    fn stat(&self, py: Python<'_>) -> PyResult<DbStat> {
        const OP: &str = "Db.stat";
        let opened = self.handle.get(OP)?;
        let s = py.detach(|| opened.db().stat()).context(OP, self.name())?;
        DbStat::new(py, self.name(), s)
    }

    /// Verifies the whole file at the last commit: every checksum, the key
    /// order, the entry counts, and that each page is used once. Raises
    /// `CorruptError` naming the page and table on damage.
    fn check(&self, py: Python<'_>) -> PyResult<DbCheck> {
        const OP: &str = "Db.check";
        let opened = self.handle.get(OP)?;
        let report = py.detach(|| opened.db().check()).context(OP, self.name())?;
        Ok(DbCheck::new(self.name(), report))
    }

    /// Writes a compacted copy of the last commit to `dst` (which must not
    /// exist) while others keep reading and writing; returns its check.
    fn compact(&self, py: Python<'_>, dst: PathBuf) -> PyResult<DbCheck> {
        const OP: &str = "Db.compact";
        let opened = self.handle.get(OP)?;
        let report = py.detach(|| opened.db().compact_to(&dst)).context(OP, self.name())?;
        Ok(DbCheck::new(&dst.display().to_string(), report))
    }

    /// Makes every commit so far durable (one `fdatasync`).
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.sync(py, "Db.sync")
    }

    /// Releases this handle. Transactions, iterators and watches made from
    /// it keep working until they end.
    fn close(&self) {
        self.handle.close();
    }

    /// The database file's path.
    #[getter]
    fn path(&self) -> &str {
        self.name()
    }

    /// The durability of commits: "immediate", "eventual" or "group".
    #[getter]
    fn durability(&self) -> PyResult<&'static str> {
        self.handle.durability("Db.durability")
    }

    /// The id of the last commit.
    #[getter]
    fn last_commit(&self) -> PyResult<u64> {
        Ok(self.handle.get("Db.last_commit")?.db().last_commit())
    }

    /// Pickles as the path and options: another process opens the same
    /// database.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let this = slf.get();
        let durability = this.durability()?;
        let args = (this.handle.path().clone(), false, durability, this.read_only, this.reserve);
        (slf.get_type(), args).into_pyobject(slf.py())
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
        format!("Db({:?})", self.name())
    }
}

// ------------------------------------------------------------------ reads

/// A read transaction that owns the handle it borrows from.
struct OwnedRead {
    /// Declared first: dropped (releasing its reader slot) before the
    /// handle it borrows.
    txn: ReadTxn<'static>,
    _opened: Arc<Opened>,
}

impl OwnedRead {
    fn begin(opened: Arc<Opened>) -> mmkit_kv::Result<OwnedRead> {
        let txn = opened.db().read()?;
        // SAFETY: `txn` borrows the `Db` inside the `Arc`'s allocation,
        // which does not move when the `Arc` moves into the struct and
        // lives as long as `_opened` holds it; `txn` is declared first, so
        // it is dropped first. The `'static` never escapes: `txn()` hands
        // the transaction out for the borrow of `self` only.
        let txn = unsafe { std::mem::transmute::<ReadTxn<'_>, ReadTxn<'static>>(txn) };
        Ok(OwnedRead { txn, _opened: opened })
    }

    fn txn(&self) -> &ReadTxn<'_> {
        &self.txn
    }
}

/// The table `name` of a read snapshot; the default table is empty rather
/// than missing before anything was written to it.
pub(crate) fn read_table<'t>(txn: &'t ReadTxn<'_>, name: &str) -> mmkit_kv::Result<mmkit_kv::Table<'t>> {
    if name == DEFAULT_TABLE { txn.default_table() } else { txn.table(name) }
}

/// A read transaction: one committed snapshot, the same for its whole
/// life whatever writers do meanwhile. Values read from it are copies
/// (`bytes`). Close it (or use `with`) when done.
///
/// ```python
/// with db.read() as r:
///     t = r.table()                  # the default table
///     print(len(t), t.get(b"ada"), list(t.range(b"a", b"b")))
/// ```
#[pyclass(frozen, module = "mmkit")]
pub struct ReadTransaction {
    /// `None` once closed; usable only in the process that made it (its
    /// reader slot is stamped with that process's token).
    txn: Mutex<Option<ProcessLocal<OwnedRead>>>,
    pub(crate) path: String,
}

impl ReadTransaction {
    pub(crate) fn with<R>(&self, op: &str, f: impl FnOnce(&ReadTxn<'_>) -> PyResult<R>) -> PyResult<R> {
        let guard = lock(&self.txn);
        let owned = guard.as_ref().ok_or_else(|| value_error(op, &self.path, "the transaction is closed"))?;
        let owned = owned.get().ok_or_else(|| inherited(op, &self.path, "transaction"))?;
        f(owned.txn())
    }
}

#[pymethods]
impl ReadTransaction {
    /// The table `name` (the default table when left out). Raises
    /// `KeyError` if no such table exists in this snapshot.
    #[pyo3(signature = (name = "default"))]
    fn table(slf: &Bound<'_, Self>, name: &str) -> PyResult<Table> {
        const OP: &str = "ReadTransaction.table";
        let this = slf.get();
        this.with(OP, |txn| read_table(txn, name).map(drop).context(OP, &this.path))?;
        Ok(Table::new(Owner::Read(slf.clone().unbind()), name))
    }

    /// The names of the tables, in order.
    fn tables(&self) -> PyResult<Vec<String>> {
        const OP: &str = "ReadTransaction.tables";
        self.with(OP, |txn| txn.tables().context(OP, &self.path))
    }

    /// The id of the commit this snapshot sees.
    #[getter]
    fn txnid(&self) -> PyResult<u64> {
        self.with("ReadTransaction.txnid", |txn| Ok(txn.txnid()))
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.txn).is_none()
    }

    /// Ends the transaction, letting writers reuse the pages it saw.
    fn close(&self) {
        lock(&self.txn).take();
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
        match self.with("", |txn| Ok(txn.txnid())) {
            Ok(id) => format!("ReadTransaction({:?}, txnid={id})", self.path),
            Err(_) => format!("ReadTransaction({:?}, closed)", self.path),
        }
    }
}

// ----------------------------------------------------------------- writes

/// The write transaction with the handle it borrows from.
struct OwnedWrite {
    /// Declared first: dropped (aborting, unlocking) before the handle it
    /// borrows. `None` once committed.
    txn: Option<WriteTxn<'static>>,
    opened: Arc<Opened>,
}

impl OwnedWrite {
    /// Waits for the writer locks; runs with the GIL released.
    fn begin(opened: Arc<Opened>) -> mmkit_kv::Result<OwnedWrite> {
        let txn = opened.db().write()?;
        // SAFETY: as in `OwnedRead::begin`: `txn` borrows the `Db` in the
        // `Arc`'s allocation, which `opened` keeps alive and in place, and
        // is dropped before it (declared first, and `Drop` takes it first).
        // Only `&mut` borrows of it tied to `&mut self` are handed out.
        let txn = unsafe { std::mem::transmute::<WriteTxn<'_>, WriteTxn<'static>>(txn) };
        *lock(&opened.writer) = Some(std::thread::current().id());
        Ok(OwnedWrite { txn: Some(txn), opened })
    }

    fn txn(&mut self) -> Option<&mut WriteTxn<'static>> {
        self.txn.as_mut()
    }

    fn commit(mut self, d: Durability) -> mmkit_kv::Result<u64> {
        match self.txn.take() {
            Some(txn) => txn.commit_with(d),
            None => Ok(0),
        }
    }
}

impl Drop for OwnedWrite {
    fn drop(&mut self) {
        self.txn.take();
        let mut writer = lock(&self.opened.writer);
        if *writer == Some(std::thread::current().id()) {
            *writer = None;
        }
    }
}

/// The write transaction: one at a time across all processes. In a
/// `with` block it commits on a normal exit and aborts on an exception;
/// otherwise call `commit()` or `abort()` (dropping it aborts). It belongs
/// to the thread that began it.
///
/// ```python
/// with db.write() as w:
///     t = w.table("counters")             # created if missing
///     t[b"hits"] = b"%d" % (int(t.get(b"hits", b"0")) + 1)
///     t.delete(b"stale")                   # False: it was not there
/// ```
#[pyclass(frozen, module = "mmkit")]
pub struct WriteTransaction {
    /// `None` once committed or aborted.
    txn: Mutex<Option<ThreadBound<OwnedWrite>>>,
    opened: Arc<Opened>,
    durability: Durability,
    txnid: u64,
    pub(crate) path: String,
}

impl WriteTransaction {
    fn begin(
        py: Python<'_>,
        opened: Arc<Opened>,
        durability: Durability,
        op: &str,
        path: &str,
    ) -> PyResult<WriteTransaction> {
        if opened.abandoned.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err(format!(
                "{op} {path}: an unfinished write transaction of this handle was dropped by another \
                 thread and still holds the writer lock; open the database again"
            )));
        }
        if *lock(&opened.writer) == Some(std::thread::current().id()) {
            return Err(PyRuntimeError::new_err(format!(
                "{op} {path}: this thread already has a write transaction open on this database; \
                 commit or abort it first"
            )));
        }
        let shared = opened.clone();
        let owned = py.detach(move || SameThread::new(OwnedWrite::begin(shared))).into_inner();
        let mut owned = owned.context(op, path)?;
        let txnid = owned.txn().map_or(0, |t| t.txnid());
        Ok(WriteTransaction {
            txn: Mutex::new(Some(ThreadBound::new(owned))),
            opened,
            durability,
            txnid,
            path: path.to_string(),
        })
    }

    /// The error for a transaction used away from its thread.
    fn elsewhere(&self, op: &str, bound: &ThreadBound<OwnedWrite>) -> PyErr {
        if bound.in_this_process() {
            PyRuntimeError::new_err(format!(
                "{op} {}: a write transaction can only be used by the thread that began it",
                self.path
            ))
        } else {
            inherited(op, &self.path, "write transaction")
        }
    }

    fn closed_error(&self, op: &str) -> PyErr {
        value_error(op, &self.path, "the transaction is closed (committed or aborted)")
    }

    pub(crate) fn with<R>(
        &self,
        op: &str,
        f: impl FnOnce(&mut WriteTxn<'static>) -> PyResult<R>,
    ) -> PyResult<R> {
        let mut guard = lock(&self.txn);
        let bound = guard.as_mut().ok_or_else(|| self.closed_error(op))?;
        if !bound.is_here() {
            return Err(self.elsewhere(op, bound));
        }
        let txn = bound.get_mut().and_then(OwnedWrite::txn).ok_or_else(|| self.closed_error(op))?;
        f(txn)
    }

    /// Takes the transaction out to end it; `None` if it already ended.
    fn take(&self, op: &str) -> PyResult<Option<OwnedWrite>> {
        let mut guard = lock(&self.txn);
        let Some(bound) = guard.take() else { return Ok(None) };
        match bound.into_inner() {
            Ok(owned) => Ok(Some(owned)),
            Err(bound) => {
                let err = self.elsewhere(op, &bound);
                *guard = Some(bound);
                Err(err)
            }
        }
    }

    fn finish_commit(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        const OP: &str = "WriteTransaction.commit";
        let Some(owned) = self.take(OP)? else { return Ok(None) };
        let d = self.durability;
        let owned = SameThread::new(owned);
        // The commit may sync: other threads run meanwhile.
        let done = py.detach(move || owned.into_inner().commit(d));
        done.context(OP, &self.path).map(Some)
    }
}

impl Drop for WriteTransaction {
    fn drop(&mut self) {
        let cell = self.txn.get_mut().unwrap_or_else(|e| e.into_inner());
        let Some(bound) = cell.take() else { return };
        match bound.into_inner() {
            // Aborts: the normal fate of a transaction nobody committed.
            Ok(owned) => drop(owned),
            Err(bound) if bound.in_this_process() => {
                // Dropped by another thread (a garbage collection there):
                // its locks can only be released by its own thread, so it
                // is leaked, holding them, and this handle writes no more.
                self.opened.abandoned.store(true, Ordering::Release);
                let message = format!(
                    "an unfinished write transaction on {} was dropped by a thread other than its \
                     own; it keeps the writer lock until that thread ends",
                    self.path
                );
                Python::attach(|py| {
                    if let Ok(text) = CString::new(message) {
                        let category = py.get_type::<PyResourceWarning>();
                        let _ = PyErr::warn(py, category.as_any(), &text, 1);
                    }
                });
                drop(bound);
            }
            // Inherited through fork(): the parent's; left alone.
            Err(bound) => drop(bound),
        }
    }
}

#[pymethods]
impl WriteTransaction {
    /// The table `name` (the default table when left out), created if it
    /// does not exist; the creation commits with the transaction.
    #[pyo3(signature = (name = "default"))]
    fn table(slf: &Bound<'_, Self>, name: &str) -> PyResult<Table> {
        const OP: &str = "WriteTransaction.table";
        let this = slf.get();
        this.with(OP, |txn| txn.table(name).map(drop).context(OP, &this.path))?;
        Ok(Table::new(Owner::Write(slf.clone().unbind()), name))
    }

    /// The names of the tables as this transaction sees them.
    fn tables(&self) -> PyResult<Vec<String>> {
        const OP: &str = "WriteTransaction.tables";
        self.with(OP, |txn| txn.tables().context(OP, &self.path))
    }

    /// Deletes the table `name` and its entries; False if it did not exist.
    fn drop_table(&self, name: &str) -> PyResult<bool> {
        const OP: &str = "WriteTransaction.drop_table";
        self.with(OP, |txn| txn.drop_table(name).context(OP, &self.path))
    }

    /// Commits (releasing the GIL while it syncs) and returns the commit
    /// id. Raises `ValueError` if the transaction already ended.
    fn commit(&self, py: Python<'_>) -> PyResult<u64> {
        self.finish_commit(py)?.ok_or_else(|| self.closed_error("WriteTransaction.commit"))
    }

    /// Throws the transaction's changes away; a no-op once it ended.
    fn abort(&self) -> PyResult<()> {
        drop(self.take("WriteTransaction.abort")?);
        Ok(())
    }

    /// The id this transaction's commit gets.
    #[getter]
    fn txnid(&self) -> u64 {
        self.txnid
    }

    /// True once committed or aborted.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.txn).is_none()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Commits on a normal exit, aborts on an exception.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if exc_type.is_none() {
            self.finish_commit(py)?;
        } else {
            self.abort()?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { ", closed" } else { "" };
        format!("WriteTransaction({:?}, txnid={}{state})", self.path, self.txnid)
    }
}

// ------------------------------------------------------------ stat, check

/// The oldest snapshot a reader holds (`Db.stat().oldest`).
#[pyclass(frozen, get_all, module = "mmkit")]
pub struct SnapshotInfo {
    /// The commit it sees.
    txnid: u64,
    /// The reading process.
    pid: u32,
    /// Whether that process still runs (a dead reader's snapshot is
    /// reclaimed by the next writer that needs its pages).
    alive: bool,
    /// Seconds since the read transaction began.
    age: f64,
    /// Commits made since.
    lag: u64,
}

#[pymethods]
impl SnapshotInfo {
    fn __repr__(&self) -> String {
        format!(
            "SnapshotInfo(txnid={}, pid={}, alive={}, age={:.3}, lag={})",
            self.txnid,
            self.pid,
            py_bool(self.alive),
            self.age,
            self.lag
        )
    }
}

/// `Db.stat()`: commits, tables, pages, file size and readers.
#[pyclass(frozen, get_all, module = "mmkit")]
pub struct DbStat {
    /// The database file.
    path: String,
    /// The last commit.
    txnid: u64,
    /// The last commit known to be on disk.
    durable: u64,
    /// The last commit on disk in the data file itself (later durable
    /// ones are in the redo log).
    flushed: u64,
    /// The redo log's chain as (first commit, last commit, bytes), or None.
    log_chain: Option<(u64, u64, u64)>,
    /// Entries per table, in table order.
    tables: BTreeMap<String, u64>,
    /// Pages the file holds (free ones included).
    pages: u64,
    /// Pages on the free list.
    free_pages: u64,
    /// Bytes per page.
    page_size: u64,
    /// File size in bytes.
    file_size: u64,
    /// Open read transactions, in all processes.
    readers: usize,
    /// The oldest of them, or None.
    oldest: Option<Py<SnapshotInfo>>,
}

impl DbStat {
    fn new(py: Python<'_>, path: &str, s: mmkit_kv::Stat) -> PyResult<DbStat> {
        let oldest = match s.oldest {
            Some(o) => Some(Py::new(
                py,
                SnapshotInfo {
                    txnid: o.txnid,
                    pid: o.pid,
                    alive: o.alive,
                    age: o.age.as_secs_f64(),
                    lag: o.lag,
                },
            )?),
            None => None,
        };
        Ok(DbStat {
            path: path.to_string(),
            txnid: s.txnid,
            durable: s.durable,
            flushed: s.flushed,
            log_chain: s.log_chain.map(|c| (c.first, c.last, c.bytes)),
            tables: s.tables.into_iter().collect(),
            pages: s.pages,
            free_pages: s.free_pages,
            page_size: s.page_size,
            file_size: s.file_size,
            readers: s.readers,
            oldest,
        })
    }
}

#[pymethods]
impl DbStat {
    fn __repr__(&self) -> String {
        format!(
            "DbStat({:?}, txnid={}, tables={:?}, pages={}, free_pages={}, file_size={}, readers={})",
            self.path, self.txnid, self.tables, self.pages, self.free_pages, self.file_size, self.readers
        )
    }
}

/// `Db.check()`: what the verification walked.
#[pyclass(frozen, get_all, module = "mmkit")]
pub struct DbCheck {
    /// The database file.
    path: String,
    /// The commit checked.
    txnid: u64,
    /// `(name, entries, pages)` per table.
    tables: Vec<(String, u64, u64)>,
    /// Pages the file uses.
    pages: u64,
    /// Pages on the free list.
    free_pages: u64,
    /// Pages neither reachable nor free (0 in a healthy file).
    leaked_pages: u64,
}

impl DbCheck {
    fn new(path: &str, r: mmkit_kv::CheckReport) -> DbCheck {
        DbCheck {
            path: path.to_string(),
            txnid: r.txnid,
            tables: r.tables,
            pages: r.pages,
            free_pages: r.free_pages,
            leaked_pages: r.leaked_pages,
        }
    }
}

#[pymethods]
impl DbCheck {
    fn __repr__(&self) -> String {
        format!(
            "DbCheck({:?}, txnid={}, pages={}, free_pages={}, leaked_pages={})",
            self.path, self.txnid, self.pages, self.free_pages, self.leaked_pages
        )
    }
}
