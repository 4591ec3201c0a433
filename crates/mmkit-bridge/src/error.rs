//! The bridge's one error type.

use std::path::PathBuf;

/// Result alias for the bridge.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while mirroring.
///
/// [`Error::is_permanent`] tells the errors that retrying cannot fix (the
/// mirror stops and reports them) from the transient ones (the mirror
/// reconnects and resynchronises with backoff).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The local queue.
    #[error("queue {}: {op}: {source}", .path.display())]
    Queue {
        /// What was being done.
        op: &'static str,
        /// The queue directory.
        path: PathBuf,
        /// The queue's error.
        #[source]
        source: Box<mmkit_queue::Error>,
    },
    /// A file of the bridge's own (the mirror's lock file).
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
    /// Another mirror process holds this mirror's lock.
    #[error("{} is locked by another mirror ({holder}); one mirror per cursor or source at a time", .path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// The server refused the credentials, or the URL is unusable.
    #[error("connecting to {url}: {detail}")]
    Connect {
        /// The server URL.
        url: String,
        /// The client's message.
        detail: String,
    },
    /// The stream does not exist (and the mirror may not create it).
    #[error("stream {stream} not found on {url}{hint}")]
    StreamMissing {
        /// The stream name.
        stream: String,
        /// The server URL.
        url: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The stream exists but is not one the mirror can use.
    #[error("stream {stream}: {detail}")]
    StreamUnusable {
        /// The stream name.
        stream: String,
        /// Why.
        detail: String,
    },
    /// The server denied a publish or subscription (a permissions violation).
    #[error("permission denied by {url}: {detail}")]
    PermissionDenied {
        /// The server URL.
        url: String,
        /// The server's message.
        detail: String,
    },
    /// A message does not fit the server's `max_payload`, the stream's
    /// maximum message size, or the local queue's maximum message size.
    #[error("message {what} is {size} bytes, more than {limit} ({limit_name}){hint}")]
    MessageTooLarge {
        /// Which message (a queue index or a stream sequence).
        what: String,
        /// Its size with headers or metadata, in bytes.
        size: usize,
        /// The limit.
        limit: usize,
        /// Which limit.
        limit_name: &'static str,
        /// What to do about it.
        hint: &'static str,
    },
    /// The subject holds messages that this queue did not publish, so the
    /// mirror cannot tell what of its own is in the stream.
    #[error("subject {subject} of stream {stream}: {detail}")]
    ForeignSubject {
        /// The subject.
        subject: String,
        /// The stream.
        stream: String,
        /// What was found.
        detail: String,
    },
    /// The stream holds messages of this queue beyond its end: the queue
    /// directory was restored from an older copy.
    #[error(
        "stream {stream} holds index {index} of queue {}, which ends at {end}: was the queue restored from an older copy? (mirroring would skip its new messages)",
        .path.display()
    )]
    QueueBehindStream {
        /// The stream.
        stream: String,
        /// The queue directory.
        path: PathBuf,
        /// The last index found in the stream.
        index: u64,
        /// The queue's end index.
        end: u64,
    },
    /// Mirror-in's stream is not the one the queue's records came from: it
    /// was deleted and created again (or lost its last messages), so its
    /// sequence numbers start over below where the mirror stopped.
    #[error(
        "stream {stream} was deleted and created again, or lost messages at its end (it ends at sequence {stream_last}; queue {} holds its messages up to sequence {last_seq}): its sequence numbers no longer match the queue's records, and resuming could skip messages; mirror it into a new queue",
        .path.display()
    )]
    StreamReset {
        /// The stream.
        stream: String,
        /// The queue directory.
        path: PathBuf,
        /// The last sequence the queue holds.
        last_seq: u64,
        /// The stream's last sequence now.
        stream_last: u64,
    },
    /// JetStream stored a message after rejecting an earlier one of the same
    /// window: someone else publishes to the mirror's subject or stream.
    #[error("stream {stream}: {detail}")]
    Gap {
        /// The stream.
        stream: String,
        /// What was seen.
        detail: String,
    },
    /// A record's mirror metadata is of a newer format.
    #[error("queue {}: record {index}: {detail}", .path.display())]
    Metadata {
        /// The queue directory.
        path: PathBuf,
        /// The record.
        index: u64,
        /// What is wrong.
        detail: String,
    },
    /// A NATS request, publish or subscription failed; usually transient.
    #[error("{op}: {detail}")]
    Nats {
        /// What was being done.
        op: &'static str,
        /// The client's or server's message.
        detail: String,
    },
    /// Options that cannot work.
    #[error("{0}")]
    InvalidOption(String),
}

impl Error {
    /// Whether retrying cannot help: the mirror stops with this error.
    /// Transient errors (connection loss, timeouts, a rejected publish
    /// after a resynchronisation race) make it reconnect and resynchronise.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Error::Nats { .. })
    }

    pub(crate) fn queue(op: &'static str, path: &std::path::Path, source: mmkit_queue::Error) -> Error {
        Error::Queue { op, path: path.to_path_buf(), source: Box::new(source) }
    }

    pub(crate) fn nats(op: &'static str, detail: impl std::fmt::Display) -> Error {
        Error::Nats { op, detail: detail.to_string() }
    }
}
