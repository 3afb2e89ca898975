//! Node's `dgram.Socket` for Rust: a UDP socket (udp4 or udp6) that binds,
//! sends `(buf, offset, length, port, host)`, receives messages with their
//! sender info, reports events (listening, message, error, close) and closes.
//!
//! Built on `socket2` (options before bind) and `tokio` (async I/O). The size
//! rule: one datagram carries at most [`MAX_DATAGRAM_V4`] bytes over IPv4
//! (65,535 − 8 bytes of UDP header − 20 of IPv4 header) and
//! [`MAX_DATAGRAM_V6`] over IPv6 (65,535 − 8; the IPv6 header is not counted
//! in its payload length). Larger sends are refused with
//! [`Error::TooLarge`] before anything is sent.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::error::{io_err, Error, Result};
use shoal_core::Shutdown;

/// Largest UDP payload over IPv4: 65,535 − 8 (UDP) − 20 (IPv4).
pub const MAX_DATAGRAM_V4: usize = 65_507;
/// Largest UDP payload over IPv6 without jumbograms: 65,535 − 8 (UDP).
pub const MAX_DATAGRAM_V6: usize = 65_527;

/// The address family of a socket: Node's `'udp4'` / `'udp6'`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    /// `udp4`
    #[serde(rename = "IPv4")]
    V4,
    /// `udp6`
    #[serde(rename = "IPv6")]
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The largest datagram this family can carry.
    pub fn max_datagram(self) -> usize {
        match self {
            Family::V4 => MAX_DATAGRAM_V4,
            Family::V6 => MAX_DATAGRAM_V6,
        }
    }

    /// The wildcard address (`0.0.0.0` / `::`), bound when none is given.
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of `dgram.createSocket({...})`, applied before binding.
#[derive(Clone, Debug)]
pub struct SocketOptions {
    /// udp4 or udp6.
    pub family: Family,
    /// SO_REUSEADDR: several sockets may bind the same port (multicast
    /// receivers on one host).
    pub reuse_addr: bool,
    /// SO_REUSEPORT: the kernel spreads datagrams over the sockets.
    pub reuse_port: bool,
    /// IPV6_V6ONLY for udp6 (Node's `ipv6Only`).
    pub ipv6_only: bool,
    /// SO_RCVBUF, in bytes.
    pub recv_buffer_size: Option<usize>,
    /// SO_SNDBUF, in bytes.
    pub send_buffer_size: Option<usize>,
}

impl SocketOptions {
    /// Defaults for `family` (no reuse, system buffer sizes).
    pub fn new(family: Family) -> Self {
        SocketOptions {
            family,
            reuse_addr: false,
            reuse_port: false,
            ipv6_only: false,
            recv_buffer_size: None,
            send_buffer_size: None,
        }
    }

    /// Set SO_REUSEADDR.
    pub fn reuse_addr(mut self, on: bool) -> Self {
        self.reuse_addr = on;
        self
    }

    /// Set SO_REUSEPORT.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }
}

/// Where a datagram came from: Node's `rinfo`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RemoteInfo {
    /// The sender's IP address.
    pub address: IpAddr,
    /// Its family.
    pub family: Family,
    /// The sender's port.
    pub port: u16,
    /// The datagram's size in bytes.
    pub size: usize,
}

/// A received datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The payload.
    pub data: Bytes,
    /// Who sent it.
    pub rinfo: RemoteInfo,
}

/// What a socket reports through [`DgramSocket::events`].
#[derive(Debug)]
pub enum Event {
    /// The socket is bound and receiving (always the first event).
    Listening(SocketAddr),
    /// A datagram arrived.
    Message(Message),
    /// A receive error; the socket keeps receiving.
    Error(std::io::Error),
    /// The socket was closed (always the last event).
    Close,
}

struct Inner {
    sock: UdpSocket,
    family: Family,
    closed: Shutdown,
}

/// A bound UDP socket. Clones share the socket (one can receive while
/// another sends); [`DgramSocket::close`] closes it for all of them.
#[derive(Clone)]
pub struct DgramSocket {
    inner: Arc<Inner>,
}

impl fmt::Debug for DgramSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DgramSocket")
            .field("family", &self.inner.family)
            .field("local", &self.inner.sock.local_addr().ok())
            .finish()
    }
}

impl DgramSocket {
    /// Create a socket with `opts` and bind it to `port` on `address`
    /// (`None`: every address, `0.0.0.0` or `::`). Port 0 picks a free port.
    /// Must be called inside a tokio runtime.
    pub fn bind(opts: &SocketOptions, port: u16, address: Option<IpAddr>) -> Result<Self> {
        let ip = address.unwrap_or_else(|| opts.family.unspecified());
        if Family::of(&ip) != opts.family {
            return Err(Error::Invalid(format!(
                "cannot bind {ip} on a {} socket",
                opts.family
            )));
        }
        let domain = match opts.family {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
            .map_err(io_err("create UDP socket"))?;
        s.set_reuse_address(opts.reuse_addr)
            .map_err(io_err("set SO_REUSEADDR"))?;
        if opts.reuse_port {
            s.set_reuse_port(true).map_err(io_err("set SO_REUSEPORT"))?;
        }
        if opts.family == Family::V6 {
            s.set_only_v6(opts.ipv6_only)
                .map_err(io_err("set IPV6_V6ONLY"))?;
        }
        if let Some(n) = opts.recv_buffer_size {
            s.set_recv_buffer_size(n).map_err(io_err("set SO_RCVBUF"))?;
        }
        if let Some(n) = opts.send_buffer_size {
            s.set_send_buffer_size(n).map_err(io_err("set SO_SNDBUF"))?;
        }
        s.set_nonblocking(true).map_err(io_err("set O_NONBLOCK"))?;
        let addr = SocketAddr::new(ip, port);
        s.bind(&addr.into())
            .map_err(|source| Error::Bind { addr, source })?;
        let sock =
            UdpSocket::from_std(s.into()).map_err(io_err("register the socket with tokio"))?;
        Ok(DgramSocket {
            inner: Arc::new(Inner {
                sock,
                family: opts.family,
                closed: Shutdown::new(),
            }),
        })
    }

    /// The socket's family.
    pub fn family(&self) -> Family {
        self.inner.family
    }

    /// The bound address (Node's `socket.address()`).
    pub fn address(&self) -> Result<SocketAddr> {
        self.check_open()?;
        self.inner
            .sock
            .local_addr()
            .map_err(io_err("read the bound address"))
    }

    /// The tokio socket, for options this type does not wrap.
    pub fn as_tokio(&self) -> &UdpSocket {
        &self.inner.sock
    }

    pub(crate) fn sock_ref(&self) -> SockRef<'_> {
        SockRef::from(&self.inner.sock)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.is_triggered() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Node's `send(buf, offset, length, port, host)`: send
    /// `buf[offset..offset+length]` to `host:port`. `host` is an IP address
    /// or a name resolved to this socket's family. Returns the bytes sent.
    pub async fn send(
        &self,
        buf: &[u8],
        offset: usize,
        length: usize,
        port: u16,
        host: &str,
    ) -> Result<usize> {
        let end = offset
            .checked_add(length)
            .filter(|e| *e <= buf.len())
            .ok_or(Error::OutOfBounds {
                offset,
                length,
                len: buf.len(),
            })?;
        let ip = self.resolve(host).await?;
        self.send_to(&buf[offset..end], SocketAddr::new(ip, port))
            .await
    }

    /// Send all of `data` to `to`, refusing datagrams over the size rule.
    pub async fn send_to(&self, data: &[u8], to: SocketAddr) -> Result<usize> {
        self.check_open()?;
        let max = self.inner.family.max_datagram();
        if data.len() > max {
            return Err(Error::TooLarge {
                size: data.len(),
                max,
                family: self.inner.family.name(),
            });
        }
        if Family::of(&to.ip()) != self.inner.family {
            return Err(Error::Invalid(format!(
                "cannot send to {to} from a {} socket",
                self.inner.family
            )));
        }
        self.inner
            .sock
            .send_to(data, to)
            .await
            .map_err(io_err(format!("send {} bytes to {to}", data.len())))
    }

    async fn resolve(&self, host: &str) -> Result<IpAddr> {
        let family = self.inner.family;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(ip);
        }
        let addrs = tokio::net::lookup_host((host, 0))
            .await
            .map_err(io_err(format!("resolve {host}")))?;
        addrs
            .map(|a| a.ip())
            .find(|ip| Family::of(ip) == family)
            .ok_or_else(|| Error::Resolve {
                host: host.to_string(),
                family: family.name(),
            })
    }

    /// Receive one datagram (up to 65,535 bytes).
    pub async fn recv(&self) -> Result<Message> {
        self.check_open()?;
        let mut buf = vec![0u8; 65_536];
        let closed = self.inner.closed.clone();
        let (n, from) = tokio::select! {
            _ = closed.cancelled() => return Err(Error::Closed),
            r = self.inner.sock.recv_from(&mut buf) => r.map_err(io_err("receive"))?,
        };
        buf.truncate(n);
        Ok(Message {
            data: Bytes::from(buf),
            rinfo: RemoteInfo {
                address: from.ip(),
                family: Family::of(&from.ip()),
                port: from.port(),
                size: n,
            },
        })
    }

    /// Node's event interface: a receiver of [`Event`]s, starting with
    /// `Listening` and ending with `Close` once [`DgramSocket::close`] is
    /// called. A receive error is reported as `Error` and receiving goes on.
    /// Events wait in a bounded queue (1024), so a slow reader slows the
    /// socket rather than growing memory (the kernel drops what overflows).
    pub fn events(&self) -> Events {
        let (tx, rx) = mpsc::channel(1024);
        let me = self.clone();
        tokio::spawn(async move {
            match me.address() {
                Ok(a) => {
                    let _ = tx.send(Event::Listening(a)).await;
                }
                Err(_) => {
                    let _ = tx.send(Event::Close).await;
                    return;
                }
            }
            loop {
                let ev = match me.recv().await {
                    Ok(m) => Event::Message(m),
                    Err(Error::Closed) => break,
                    Err(Error::Io { source, .. }) => Event::Error(source),
                    Err(e) => Event::Error(std::io::Error::other(e.to_string())),
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Close).await;
        });
        Events { rx }
    }

    /// Close the socket: pending and later receives end, sends fail with
    /// [`Error::Closed`], and `events()` streams end with `Close`. The port
    /// is released when the last clone is dropped.
    pub fn close(&self) {
        self.inner.closed.trigger();
    }

    /// Whether [`DgramSocket::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_triggered()
    }
}

/// The events of one socket (see [`DgramSocket::events`]).
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` after `Close`.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}
