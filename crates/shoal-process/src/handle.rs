//! Handles that travel over the IPC channel with a message: TCP and Unix
//! sockets and listeners and UDP sockets, named the way Node names them in its
//! `NODE_HANDLE` messages (`net.Socket`, `net.Server`, `dgram.Socket`).

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use crate::error::{Error, Result};

/// A descriptor sent or received together with an IPC message.
#[derive(Debug)]
pub enum Handle {
    /// A connected TCP socket (`net.Socket` in Node).
    TcpStream(TcpStream),
    /// A listening TCP socket (`net.Server`).
    TcpListener(TcpListener),
    /// A connected Unix stream socket (`net.Socket`).
    UnixStream(UnixStream),
    /// A listening Unix stream socket (`net.Server`).
    UnixListener(UnixListener),
    /// A UDP socket (`dgram.Socket`).
    UdpSocket(UdpSocket),
}

impl Handle {
    /// Node's name for this kind of handle, the `type` of a `NODE_HANDLE` message.
    pub fn node_type(&self) -> &'static str {
        match self {
            Handle::TcpStream(_) | Handle::UnixStream(_) => "net.Socket",
            Handle::TcpListener(_) | Handle::UnixListener(_) => "net.Server",
            Handle::UdpSocket(_) => "dgram.Socket",
        }
    }

    /// For a UDP socket, Node's `dgramType` (`udp4` or `udp6`).
    pub fn dgram_type(&self) -> Option<&'static str> {
        match self {
            Handle::UdpSocket(s) => Some(match s.local_addr() {
                Ok(a) if a.is_ipv6() => "udp6",
                _ => "udp4",
            }),
            _ => None,
        }
    }

    /// Rebuild a handle from a received descriptor and the message's `type`,
    /// checking the descriptor really is that kind of socket.
    pub fn from_received(fd: OwnedFd, node_type: &str) -> Result<Handle> {
        let sock = socket2::SockRef::from(&fd);
        let domain = sock.domain()?;
        let ty = sock.r#type()?;
        let listening = sock.is_listener().unwrap_or(false);
        let inet = domain == socket2::Domain::IPV4 || domain == socket2::Domain::IPV6;
        let unix = domain == socket2::Domain::UNIX;
        let h = if ty == socket2::Type::DGRAM && inet {
            Handle::UdpSocket(UdpSocket::from(fd))
        } else if ty == socket2::Type::STREAM && inet && listening {
            Handle::TcpListener(TcpListener::from(fd))
        } else if ty == socket2::Type::STREAM && inet {
            Handle::TcpStream(TcpStream::from(fd))
        } else if ty == socket2::Type::STREAM && unix && listening {
            Handle::UnixListener(UnixListener::from(fd))
        } else if ty == socket2::Type::STREAM && unix {
            Handle::UnixStream(UnixStream::from(fd))
        } else {
            return Err(Error::BadHandle(format!(
                "descriptor of type {node_type} is an unsupported socket ({domain:?}, {ty:?})"
            )));
        };
        match (node_type, &h) {
            ("net.Socket" | "net.Native", Handle::TcpStream(_) | Handle::UnixStream(_))
            | ("net.Server" | "net.Native", Handle::TcpListener(_) | Handle::UnixListener(_))
            | ("dgram.Socket" | "dgram.Native", Handle::UdpSocket(_)) => Ok(h),
            _ => Err(Error::BadHandle(format!(
                "message says {node_type} but the descriptor is a {}",
                h.node_type()
            ))),
        }
    }
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Handle::TcpStream(s) => s.as_fd(),
            Handle::TcpListener(s) => s.as_fd(),
            Handle::UnixStream(s) => s.as_fd(),
            Handle::UnixListener(s) => s.as_fd(),
            Handle::UdpSocket(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}

macro_rules! handle_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Handle {
            fn from(s: $t) -> Self {
                Handle::$v(s)
            }
        }
    )*};
}

handle_from!(TcpStream => TcpStream, TcpListener => TcpListener, UnixStream => UnixStream,
    UnixListener => UnixListener, UdpSocket => UdpSocket);

impl TryFrom<tokio::net::TcpStream> for Handle {
    type Error = std::io::Error;
    fn try_from(s: tokio::net::TcpStream) -> std::io::Result<Self> {
        Ok(Handle::TcpStream(s.into_std()?))
    }
}

impl TryFrom<tokio::net::TcpListener> for Handle {
    type Error = std::io::Error;
    fn try_from(s: tokio::net::TcpListener) -> std::io::Result<Self> {
        Ok(Handle::TcpListener(s.into_std()?))
    }
}

impl TryFrom<tokio::net::UdpSocket> for Handle {
    type Error = std::io::Error;
    fn try_from(s: tokio::net::UdpSocket) -> std::io::Result<Self> {
        Ok(Handle::UdpSocket(s.into_std()?))
    }
}
