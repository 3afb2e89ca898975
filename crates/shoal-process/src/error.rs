//! The error type of `shoal-process`: what failed (spawning, the IPC channel,
//! a buffered exec) and with which details.

use std::io;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be started (not found, not executable, bad cwd...).
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program that was asked for.
        program: String,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// The options given cannot be honoured (e.g. two `ipc` entries in `stdio`).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The IPC channel is closed (the child exited or one side disconnected).
    #[error("the IPC channel is closed")]
    ChannelClosed,
    /// The child has no IPC channel (it was not started with `fork` or an `ipc` stdio entry).
    #[error("the child has no IPC channel")]
    NoChannel,
    /// A line on the IPC channel was not valid JSON; the line is skipped.
    #[error("IPC: line {line_no} is not JSON ({reason}): {preview}")]
    NotJson {
        /// 1-based index of the line on this channel.
        line_no: u64,
        /// The parser's complaint.
        reason: String,
        /// The first bytes of the line, lossily decoded.
        preview: String,
    },
    /// A message longer than the channel's limit; it is discarded.
    #[error("IPC: message of more than {limit} bytes discarded")]
    MessageTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A `NODE_HANDLE` message arrived without a descriptor, or with an unknown type.
    #[error("IPC: bad handle message: {0}")]
    BadHandle(String),
    /// The message could not be serialised as JSON.
    #[error("cannot serialise message: {0}")]
    Serialize(#[from] serde_json::Error),
    /// An I/O error on a pipe, socket or signal.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
