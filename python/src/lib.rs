//! # mmkit-python: mmkit for Python
//!
//! The extension module `mmkit._mmkit`, which the `mmkit` package
//! re-exports: zero-copy numpy arrays over `.npy` files
//! ([`array::open_array`], [`array::create_array`],
//! [`array::Appendable`]), the persistent multi-process queue
//! ([`queue::Queue`]), POSIX shared memory compatible with
//! `multiprocessing.shared_memory` ([`shm::SharedMemory`]) and page-cache
//! residency ([`residency::resident`]).
//!
//! It is built by maturin (`pip install ./python`); its tests are the
//! pytest suite in `python/tests`. From Python:
//!
//! ```python
//! import numpy as np, mmkit
//! a = mmkit.create_array("a.npy", "float32", (1000, 3))
//! a[:, 0] = np.arange(1000)
//! del a
//! assert mmkit.open_array("a.npy")[999, 0] == 999
//! ```

// The doc example above is Python, not Rust.
#![doc(test(attr(ignore)))]

pub mod array;
mod convert;
pub mod db;
pub mod errors;
mod fork;
pub mod heap;
pub mod kv;
pub mod queue;
pub mod residency;
pub mod shm;
pub mod table;
pub mod watch;

use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;

/// Locks `m`, ignoring poison: every state change behind the classes'
/// locks is one assignment or one call into a crate that keeps its own
/// state consistent on error, so a panic leaves nothing half-changed.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The module `mmkit._mmkit`.
///
/// `gil_used`: the classes' locks rely on the GIL serializing Python-level
/// calls (a thread never blocks on one while another holds it and waits
/// for the interpreter), so free-threaded builds keep the GIL on for it.
#[pymodule(gil_used = true)]
fn _mmkit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    fork::install();
    m.add("Error", py.get_type::<errors::Error>())?;
    m.add("CorruptError", py.get_type::<errors::CorruptError>())?;
    m.add_function(wrap_pyfunction!(array::open_array, m)?)?;
    m.add_function(wrap_pyfunction!(array::create_array, m)?)?;
    m.add_class::<array::Appendable>()?;
    m.add_class::<array::AppendableView>()?;
    m.add_class::<array::MappedArray>()?;
    m.add_class::<queue::Queue>()?;
    m.add_class::<queue::Reader>()?;
    m.add_class::<queue::Cursor>()?;
    m.add_class::<queue::Record>()?;
    m.add_class::<kv::Kv>()?;
    m.add_class::<db::Db>()?;
    m.add_class::<db::ReadTransaction>()?;
    m.add_class::<db::WriteTransaction>()?;
    m.add_class::<table::Table>()?;
    m.add_class::<table::KvIterator>()?;
    m.add_class::<watch::Watch>()?;
    m.add_class::<watch::Change>()?;
    m.add_class::<db::DbStat>()?;
    m.add_class::<db::SnapshotInfo>()?;
    m.add_class::<db::DbCheck>()?;
    m.add_class::<heap::Heap>()?;
    m.add_class::<heap::HeapMap>()?;
    m.add_class::<heap::HeapVector>()?;
    m.add_class::<heap::HeapObject>()?;
    m.add_class::<heap::HeapStat>()?;
    m.add_class::<heap::HeapCheck>()?;
    m.add_class::<shm::SharedMemory>()?;
    m.add_class::<residency::Residency>()?;
    m.add_function(wrap_pyfunction!(residency::resident, m)?)?;
    m.add_function(wrap_pyfunction!(residency::touch, m)?)?;
    m.add_function(wrap_pyfunction!(residency::evict, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
