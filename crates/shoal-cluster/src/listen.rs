//! Binding the addresses workers serve: once in the primary (shared by every
//! worker as fds 3, 4, … per systemd's socket activation), or, with
//! `--reuse-port`, one `SO_REUSEPORT` socket per worker.

use std::os::fd::OwnedFd;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::error::{ClusterError, Result};
use crate::spec::{ListenAddr, ListenSpec};

/// Backlog of every listening socket.
const BACKLOG: i32 = 1024;

/// The primary's sockets for all `--listen` addresses.
#[derive(Debug)]
pub struct Listeners {
    entries: Vec<Entry>,
    reuse_port: bool,
}

#[derive(Debug)]
struct Entry {
    name: String,
    /// The address actually bound (port 0 resolved).
    addr: ListenAddr,
    /// Shared mode: the listening socket. Reuse-port mode: a bound socket
    /// that does not listen, holding the port for the workers' sockets.
    socket: Socket,
    /// A Unix socket file we created and remove on drop.
    unix_path: Option<std::path::PathBuf>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Listeners {
    /// Bind every address. A port already in use is an error naming it.
    pub fn bind(specs: &[ListenSpec], reuse_port: bool) -> Result<Listeners> {
        let mut entries = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let name = spec.name.clone().unwrap_or_else(|| format!("listen{i}"));
            let shown = spec.addr.to_string();
            let bind_err = |source| ClusterError::Bind {
                addr: shown.clone(),
                source,
            };
            let entry = match &spec.addr {
                ListenAddr::Tcp(a) => {
                    let s = tcp_socket(a, reuse_port).map_err(bind_err)?;
                    s.bind(&SockAddr::from(*a)).map_err(bind_err)?;
                    if !reuse_port {
                        s.listen(BACKLOG).map_err(bind_err)?;
                    }
                    let local = s
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_socket())
                        .unwrap_or(*a);
                    Entry {
                        name,
                        addr: ListenAddr::Tcp(local),
                        socket: s,
                        unix_path: None,
                    }
                }
                ListenAddr::Unix(p) => {
                    remove_stale_unix_socket(p).map_err(bind_err)?;
                    let s = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(bind_err)?;
                    s.bind(&SockAddr::unix(p).map_err(bind_err)?)
                        .map_err(bind_err)?;
                    s.listen(BACKLOG).map_err(bind_err)?;
                    Entry {
                        name,
                        addr: spec.addr.clone(),
                        socket: s,
                        unix_path: Some(p.clone()),
                    }
                }
            };
            entries.push(entry);
        }
        Ok(Listeners {
            entries,
            reuse_port,
        })
    }

    /// How many addresses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The addresses actually bound, in order.
    pub fn addrs(&self) -> Vec<ListenAddr> {
        self.entries.iter().map(|e| e.addr.clone()).collect()
    }

    /// `LISTEN_FDNAMES`: the names joined by `:`.
    pub fn fdnames(&self) -> String {
        self.entries
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Descriptors for one new worker, in order: duplicates of the shared
    /// listeners, or fresh `SO_REUSEPORT` listeners on the same addresses.
    pub fn for_worker(&self) -> std::io::Result<Vec<OwnedFd>> {
        (0..self.entries.len())
            .map(|i| self.socket_for_worker(i).map(OwnedFd::from))
            .collect()
    }

    fn socket_for_worker(&self, i: usize) -> std::io::Result<Socket> {
        let e = &self.entries[i];
        match (&e.addr, self.reuse_port) {
            (ListenAddr::Tcp(a), true) => {
                let s = tcp_socket(a, true)?;
                s.bind(&SockAddr::from(*a))?;
                s.listen(BACKLOG)?;
                Ok(s)
            }
            _ => e.socket.try_clone(),
        }
    }
}

fn tcp_socket(a: &std::net::SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(*a), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if a.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    Ok(s)
}

/// Remove a Unix socket file that nobody listens on any more; refuse to
/// touch a live one or a file that is not a socket.
fn remove_stale_unix_socket(p: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if !m.file_type().is_socket() => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        )),
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(p).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "a server is already listening there",
                ));
            }
            std::fs::remove_file(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_in_use_is_named_and_port_zero_resolves() {
        let l = Listeners::bind(&["127.0.0.1:0".parse().unwrap()], false).unwrap();
        let ListenAddr::Tcp(a) = l.addrs()[0].clone() else {
            panic!()
        };
        assert_ne!(a.port(), 0);
        let e = Listeners::bind(&[a.to_string().parse().unwrap()], false).unwrap_err();
        assert!(e.to_string().contains(&a.to_string()), "{e}");
        assert_eq!(l.fdnames(), "listen0");
        assert_eq!(l.for_worker().unwrap().len(), 1);
    }

    #[test]
    fn reuse_port_gives_each_worker_its_own_socket() {
        let l = Listeners::bind(&["127.0.0.1:0".parse().unwrap()], true).unwrap();
        let a = l.for_worker().unwrap();
        let b = l.for_worker().unwrap();
        let la = std::net::TcpListener::from(a.into_iter().next().unwrap());
        let lb = std::net::TcpListener::from(b.into_iter().next().unwrap());
        assert_eq!(la.local_addr().unwrap(), lb.local_addr().unwrap());
    }
}
