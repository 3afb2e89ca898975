//! The one error type of `shoal-dgram`.

use std::io;
use std::net::SocketAddr;

/// Everything that can go wrong in sockets, multicast and the collector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket call failed; `what` says which.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A datagram larger than the protocol allows was refused before sending.
    #[error("datagram of {size} bytes is larger than the {max}-byte limit for {family} (see the size rule in the docs)")]
    TooLarge {
        size: usize,
        max: usize,
        family: &'static str,
    },
    /// `offset`/`length` point outside the buffer.
    #[error("offset {offset} + length {length} is outside the {len}-byte buffer")]
    OutOfBounds {
        offset: usize,
        length: usize,
        len: usize,
    },
    /// An argument outside its range (TTL, address family, ...).
    #[error("{0}")]
    Invalid(String),
    /// A host name that resolved to no address of the socket's family.
    #[error("cannot resolve {host:?} to an {family} address")]
    Resolve { host: String, family: &'static str },
    /// The socket was closed.
    #[error("socket is closed")]
    Closed,
    /// Binding a listener failed.
    #[error("cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A configuration file or value is wrong.
    #[error(transparent)]
    Config(#[from] shoal_core::config::ConfigError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wrap an `io::Error` with what was being done.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
