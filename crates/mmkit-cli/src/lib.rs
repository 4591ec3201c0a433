//! The library half of the `mmkit` binary: the parts other crates reuse
//! (the benchmark calls the same copy engine as `mmkit cp`).
//!
//! ```
//! use mmkit_cli::copy::{copy_file, CopyOptions};
//! let dir = tempfile::tempdir()?;
//! let (src, dst) = (dir.path().join("a"), dir.path().join("b"));
//! std::fs::write(&src, b"some bytes")?;
//! copy_file(&src, &dst, CopyOptions::default(), &mut |_| {}, &mut |_| {})?;
//! assert_eq!(std::fs::read(&dst)?, b"some bytes");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod copy;
pub mod error;

pub use error::{CliError, CliResult};
