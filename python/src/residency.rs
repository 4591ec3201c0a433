//! `resident`, `touch` and `evict`: page-cache residency, as vmtouch does it.

use std::path::PathBuf;

use mmkit_region::residency;
use pyo3::prelude::*;

use crate::errors::Context;

/// How much of a file sits in the page cache.
///
/// Since Linux 5.2 the kernel reports every page of a file you could not
/// open for writing as resident (vmtouch shows the same); run as the
/// file's owner to see the real state.
#[pyclass(frozen, get_all, module = "mmkit")]
pub struct Residency {
    /// The file's path.
    path: String,
    /// Pages found in the page cache.
    resident_pages: u64,
    /// Pages the file spans.
    total_pages: u64,
    /// The page size the counts are in, in bytes.
    page_size: usize,
    /// The file's size in bytes.
    size: u64,
}

impl Residency {
    fn new(path: String, r: &residency::Residency) -> Self {
        Residency {
            path,
            resident_pages: r.resident_pages,
            total_pages: r.total_pages,
            page_size: r.page_size,
            size: r.size,
        }
    }
}

#[pymethods]
impl Residency {
    /// Resident bytes (`resident_pages * page_size`).
    #[getter]
    fn resident_bytes(&self) -> u64 {
        self.resident_pages * self.page_size as u64
    }

    /// The fraction of pages resident (0.0 for an empty file).
    #[getter]
    fn fraction(&self) -> f64 {
        if self.total_pages == 0 { 0.0 } else { self.resident_pages as f64 / self.total_pages as f64 }
    }

    fn __repr__(&self) -> String {
        format!(
            "Residency({:?}, resident_pages={}, total_pages={}, page_size={})",
            self.path, self.resident_pages, self.total_pages, self.page_size
        )
    }
}

/// How many of the pages of the file at `path` are in the page cache.
///
/// ```python
/// r = mmkit.resident("data.npy")
/// print(f"{r.resident_pages}/{r.total_pages} pages of {r.page_size} bytes")
/// ```
#[pyfunction]
pub fn resident(py: Python<'_>, path: PathBuf) -> PyResult<Residency> {
    let name = path.display().to_string();
    let r = py.detach(|| residency::of_path(&path, false)).context("resident", &name)?;
    Ok(Residency::new(name, &r))
}

/// Reads the pages of the file at `path` that are not in the page cache,
/// so that all are (vmtouch -t). Returns the residency found before: it
/// read `total_pages - resident_pages` pages.
#[pyfunction]
pub fn touch(py: Python<'_>, path: PathBuf) -> PyResult<Residency> {
    let name = path.display().to_string();
    let r = py.detach(|| residency::touch(&path)).context("touch", &name)?;
    Ok(Residency::new(name, &r))
}

/// Drops the file's clean pages from the page cache (vmtouch -e). Dirty
/// pages and pages locked by other processes stay.
#[pyfunction]
pub fn evict(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    let name = path.display().to_string();
    py.detach(|| residency::evict(&path)).context("evict", &name)?;
    Ok(())
}
