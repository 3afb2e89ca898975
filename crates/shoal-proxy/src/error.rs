//! The proxy's error type: configuration problems, bind failures, and the
//! per-request upstream failures that decide between retrying, 502 and 504.

use std::io;
use std::net::SocketAddr;

/// Everything that can stop the proxy from starting or reloading.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration file is unreadable or invalid (names file, line, key).
    #[error(transparent)]
    Config(#[from] shoal_core::config::ConfigError),
    /// A configuration built in code is invalid.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// TLS material could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The control socket could not be bound.
    #[error("control socket {path}: {source}")]
    Control {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A runtime change to an upstream's servers was refused.
    #[error("{0}")]
    Edit(#[from] crate::servers::EditError),
    /// A reload was asked for but cannot be done.
    #[error("reload refused: {0}")]
    Reload(String),
    /// Any other I/O failure.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Result alias for the proxy.
pub type Result<T, E = ProxyError> = std::result::Result<T, E>;

/// Why one attempt at an upstream server failed. Says which side failed and
/// whether another server may be tried (nginx's `proxy_next_upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connecting failed (refused, unreachable): nothing was sent.
    Connect,
    /// Connecting took longer than the connect timeout: nothing was sent.
    ConnectTimeout,
    /// The connection broke (reset, EOF) before any response byte.
    Broken,
    /// No response header arrived within the read timeout.
    Timeout,
    /// The server sent something that is not an HTTP/1.x response head.
    BadResponse,
}

impl UpstreamFailure {
    /// Whether the client should get 504 (a timeout) rather than 502.
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            UpstreamFailure::ConnectTimeout | UpstreamFailure::Timeout
        )
    }

    /// Whether nothing reached the server, so even a non-idempotent request may
    /// go to the next one.
    pub fn nothing_sent(self) -> bool {
        matches!(
            self,
            UpstreamFailure::Connect | UpstreamFailure::ConnectTimeout
        )
    }

    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::ConnectTimeout => "connect_timeout",
            UpstreamFailure::Broken => "broken",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::BadResponse => "bad_response",
        }
    }
}
