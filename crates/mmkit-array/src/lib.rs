//! # mmkit-array: numpy-compatible typed arrays over mapped files
//!
//! [`MmapArray<T>`] is the Rust counterpart of `numpy.memmap` and
//! `numpy.load(mmap_mode=...)`: an n-dimensional array of a plain-old-data
//! element type, in C or Fortran order, kept in a `.npy` file (format
//! versions 1.0, 2.0 and 3.0) or a shared-memory segment and used in
//! place. numpy's modes map to [`Mode`]: `r` is `ReadOnly`, `r+` is
//! `ReadWrite`, `c` is `CopyOnWrite`, and `w+` is [`MmapArray::create`].
//!
//! - Opening checks the dtype against `T`, the shape against the file's
//!   length, the order, the byte order (big-endian files are byte-swapped
//!   on every read) and the data alignment.
//! - Safe accessors copy ([`MmapArray::get`], [`View`], iterators), because
//!   another process may change a shared file at any time; zero-copy slices
//!   need an exclusive owner or an `unsafe` call.
//! - [`Appendable`] grows an array along its first axis in place, and an
//!   appender killed at any instruction leaves a file numpy loads.
//! - [`MmapArray::column_stats`] and [`MmapArray::gather_rows`] are the
//!   fast paths behind `mmkit array stats` and the benchmarks.
//!
//! ```
//! use mmkit_array::{MmapArray, Mode};
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("points.npy");
//!
//! // numpy: np.lib.format.open_memmap(path, 'w+', dtype='<f4', shape=(1000, 3))
//! let mut a = MmapArray::<f32>::create(&path, &[1000, 3])?;
//! for i in 0..1000 {
//!     a.write_row(i, &[i as f32, 1.0, -1.0])?;
//! }
//! drop(a);
//!
//! // numpy: np.load(path, mmap_mode='r')
//! let a = MmapArray::<f32>::open(&path, Mode::ReadOnly)?;
//! let mut row = [0f32; 3];
//! a.read_row(10, &mut row)?;
//! assert_eq!(row, [10.0, 1.0, -1.0]);
//! let stats = a.column_stats()?;
//! assert_eq!(stats[0].max, 999.0);
//! assert_eq!(stats[1].sum, 1000.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(target_endian = "big")]
compile_error!("mmkit-array supports little-endian hosts only (it reads '<' and '=' .npy data in place)");

mod append;
mod array;
mod dtype;
mod error;
pub mod header;
#[cfg(feature = "ndarray")]
mod ndarray_impl;
mod scan;
mod view;

pub use append::{Appendable, DEFAULT_RESERVE};
pub use array::{CreateOptions, MmapArray, OpenOptions, Order, read_header};
pub use dtype::{ALL_DTYPES, Bool, Complex32, Complex64, DType, Descr, DescrError, Element, ToF64};
pub use error::{Error, Result};
pub use half::f16;
pub use header::{Header, Version, escape_control};
pub use mmkit_region::Mode;
pub use scan::{ColumnStats, MAX_SCAN_COLUMNS};
pub use view::{Iter, View};
