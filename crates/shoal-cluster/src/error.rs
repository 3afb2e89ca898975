//! The error type of `shoal-cluster`.

use std::io;

/// What can stop a cluster from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A bad value in the cluster's specification (flag or config).
    #[error("{0}")]
    Spec(String),
    /// The configuration file is wrong (file:line: key: what).
    #[error(transparent)]
    Config(#[from] shoal_core::config::ConfigError),
    /// A listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// The worker command cannot be run at all.
    #[error("cannot run `{command}`: {reason}")]
    Command {
        /// The command as given.
        command: String,
        /// Why.
        reason: String,
    },
    /// The control socket could not be set up.
    #[error("control socket {path}: {source}")]
    Control {
        /// Its path.
        path: String,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// Every worker slot gave up after repeated crashes.
    #[error("all workers gave up: {0}")]
    AllGaveUp(String),
    /// The primary is no longer running (for API calls after it stopped).
    #[error("the cluster primary has stopped")]
    Stopped,
    /// A worker could not be started or signalled.
    #[error(transparent)]
    Process(#[from] shoal_process::Error),
    /// Any other I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Shorthand for this crate's results.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
