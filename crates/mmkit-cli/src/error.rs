//! The CLI's one error type.

use std::path::PathBuf;

/// Result alias for the CLI.
pub type CliResult<T> = Result<T, CliError>;

/// Every failure a command can report.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the mapping layer.
    #[error(transparent)]
    Region(#[from] mmkit_region::Error),
    /// From the synchronization layer.
    #[error(transparent)]
    Sync(#[from] mmkit_sync::Error),
    /// From the queue.
    #[error(transparent)]
    Queue(#[from] mmkit_queue::Error),
    /// From the array layer.
    #[error(transparent)]
    Array(#[from] mmkit_array::Error),
    /// From the shared heap.
    #[error(transparent)]
    Heap(#[from] mmkit_heap::Error),
    /// From the key-value store.
    #[error(transparent)]
    Kv(#[from] mmkit_kv::Error),
    /// From the NATS bridge.
    #[error(transparent)]
    Bridge(#[from] mmkit_bridge::Error),
    /// A file operation of the CLI itself.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing output (stdout closed, ...).
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    /// JSON encoding.
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Bad arguments or input that clap cannot catch.
    #[error("{0}")]
    Usage(String),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
    /// A finding the command reports with an exit status of its own
    /// (documented in its `--help`).
    #[error("{message}")]
    Finding {
        /// The one line to print.
        message: String,
        /// The exit status.
        code: i32,
    },
}

impl CliError {
    /// An I/O error on `path` during `op`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io { op, path: path.into(), source }
    }

    /// The process exit status for this error: 1, unless it is a
    /// [`CliError::Finding`] with a status of its own.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Finding { code, .. } => *code,
            _ => 1,
        }
    }
}

/// Flattens an error and its sources into one line.
pub fn one_line(err: &CliError) -> String {
    let mut line = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line.replace('\n', " ")
}
