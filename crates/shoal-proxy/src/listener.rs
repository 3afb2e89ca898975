//! Listening sockets: one SO_REUSEPORT socket per worker thread per address,
//! the accept loops under the shared connection cap, the small per-connection
//! task that waits for a client's first byte, and changing the set of
//! listeners (added, removed, new TLS certificates) on reload.

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use shoal_core::Shutdown;

use crate::config::{ListenerConfig, Protocol};
use crate::error::{ProxyError, Result};
use crate::state::Shared;

/// What every connection of one listener uses; replaced on reload.
pub struct ListenerCtx {
    pub config: ListenerConfig,
    /// The bound address (the real port when the config said 0).
    pub local: SocketAddr,
    pub tls: Option<TlsAcceptor>,
    pub upstream: Arc<str>,
}

/// One configured listener while it runs.
pub struct Live {
    pub ctx: ArcSwap<ListenerCtx>,
    /// Stops this listener's accept loops (a child of the server's shutdown).
    pub stop: Shutdown,
}

/// Sockets bound for a listener whose accept loops have not started yet:
/// one per worker thread, registered with that worker's runtime when its
/// accept loop starts there.
pub struct Pending {
    pub sockets: Vec<std::net::TcpListener>,
    pub live: Arc<Live>,
}

/// Every running listener, plus what new accept loops need.
pub struct ListenerSet {
    pub live: Mutex<Vec<Arc<Live>>>,
    /// The worker runtimes; socket `i` of a listener is served by worker `i`.
    pub workers: Vec<tokio::runtime::Handle>,
}

/// Build the TLS acceptor of a listener, if it has certificates (reads the files).
pub fn tls_for(l: &ListenerConfig) -> Result<Option<TlsAcceptor>> {
    if l.tls.is_empty() {
        return Ok(None);
    }
    let alpn: &[&[u8]] = if l.protocol == Protocol::Http {
        &[b"http/1.1"]
    } else {
        &[]
    };
    crate::tls::acceptor(&l.tls, alpn).map(Some)
}

/// Ask the kernel to hand over connections only once the client has sent
/// data (`TCP_DEFER_ACCEPT`, nginx's `listen ... deferred`), waiting up to
/// `secs` seconds. Until then an idle connection costs the proxy no task and
/// no memory, and `accept` returns with the request already readable. Only
/// for client-speaks-first protocols (HTTP, and TLS's ClientHello).
#[cfg(target_os = "linux")]
fn set_defer_accept(s: &socket2::Socket, secs: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: `s` is an open socket; the option value is a c_int that lives
    // for the duration of the call, and its size is passed with it.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_defer_accept(_: &socket2::Socket, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// Bind `n` listening sockets on `addr` with SO_REUSEPORT (port 0: the first
/// picks the port, the others join it), non-blocking, with `TCP_NODELAY` for
/// accepted sockets to inherit. `defer` > 0 sets `TCP_DEFER_ACCEPT` to that
/// many seconds.
pub fn bind_reuseport(
    addr: SocketAddr,
    n: usize,
    defer: u32,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(at), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        // Accepted sockets inherit TCP_NODELAY: one setsockopt per listener
        // instead of one per connection.
        s.set_tcp_nodelay(true)?;
        s.bind(&at.into())?;
        if defer > 0 {
            set_defer_accept(&s, defer)?;
        }
        s.listen(4096)?;
        let l: std::net::TcpListener = s.into();
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// Bind a listener's sockets, one per worker (`workers`), and load its TLS
/// material. HTTP listeners defer
/// accepting until the client sends (for up to `client_header`, as nginx does
/// with `deferred`); the first-byte wait in [`connection`] stays for the
/// connections the kernel hands over when that period ends.
pub fn bind(
    l: &ListenerConfig,
    parent: &Shutdown,
    client_header: Duration,
    workers: usize,
) -> Result<Pending> {
    let tls = tls_for(l)?;
    let defer = match l.protocol {
        Protocol::Http => u32::try_from(client_header.as_secs().max(1)).unwrap_or(u32::MAX),
        Protocol::Tcp => 0,
    };
    let sockets =
        bind_reuseport(l.address, workers.max(1), defer).map_err(|source| ProxyError::Bind {
            addr: l.address,
            source,
        })?;
    let local = sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .unwrap_or(l.address);
    let ctx = ListenerCtx {
        config: l.clone(),
        local,
        tls,
        upstream: Arc::from(l.upstream.clone().unwrap_or_default()),
    };
    let live = Arc::new(Live {
        ctx: ArcSwap::from_pointee(ctx),
        stop: parent.child(),
    });
    Ok(Pending { sockets, live })
}

impl ListenerSet {
    /// Start the accept loops of `p` and register it; returns the tasks.
    pub fn start(&self, p: Pending, shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
        {
            let ctx = p.live.ctx.load();
            tracing::info!(address = %ctx.local, protocol = ?ctx.config.protocol, tls = ctx.tls.is_some(), "listening");
        }
        let tasks = p
            .sockets
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let (live, shared) = (p.live.clone(), shared.clone());
                self.workers[i % self.workers.len()].spawn(async move {
                    // Registering here ties the socket to this worker's reactor.
                    match TcpListener::from_std(s) {
                        Ok(l) => accept_loop(l, live, shared).await,
                        Err(e) => tracing::error!(error = %e, "cannot register a listening socket"),
                    }
                })
            })
            .collect();
        self.live.lock().push(p.live);
        tasks
    }

    /// Prepare to make the running listeners match `wanted`: listeners at an
    /// address that stays get the new settings (TLS files are re-read); new
    /// addresses are bound now. Nothing changes until [`ListenerSet::commit`];
    /// an error here leaves everything as it was.
    pub fn prepare(
        &self,
        wanted: &[ListenerConfig],
        client_header: Duration,
        shared: &Shared,
    ) -> Result<Plan> {
        let live = self.live.lock();
        let mut plan = Plan {
            updates: Vec::new(),
            added: Vec::new(),
            keep: Vec::new(),
        };
        for l in wanted {
            plan.keep.push(l.address);
            match live
                .iter()
                .find(|e| e.ctx.load().config.address == l.address)
            {
                Some(e) => {
                    let ctx = ListenerCtx {
                        config: l.clone(),
                        local: e.ctx.load().local,
                        tls: tls_for(l)?,
                        upstream: Arc::from(l.upstream.clone().unwrap_or_default()),
                    };
                    plan.updates.push((e.clone(), ctx));
                }
                None => plan.added.push(bind(
                    l,
                    &shared.shutdown,
                    client_header,
                    self.workers.len(),
                )?),
            }
        }
        Ok(plan)
    }

    /// Apply a prepared plan: update, start new listeners, stop removed ones
    /// (their open connections finish).
    pub fn commit(&self, plan: Plan, shared: &Arc<Shared>) {
        for (e, ctx) in plan.updates {
            e.ctx.store(Arc::new(ctx));
        }
        self.live.lock().retain(|e| {
            let keep = plan.keep.contains(&e.ctx.load().config.address);
            if !keep {
                tracing::info!(address = %e.ctx.load().local, "listener removed by reload");
                e.stop.trigger();
            }
            keep
        });
        for p in plan.added {
            // These accept loops end with the listener's stop token.
            drop(self.start(p, shared));
        }
    }
}

/// Listener changes prepared by [`ListenerSet::prepare`].
pub struct Plan {
    updates: Vec<(Arc<Live>, ListenerCtx)>,
    added: Vec<Pending>,
    keep: Vec<SocketAddr>,
}

/// Accept one connection, backing off briefly on errors (EMFILE and friends)
/// instead of spinning; `None` once `stop` fires.
pub async fn accept(
    listener: &TcpListener,
    stop: &Shutdown,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn accept_loop(listener: TcpListener, live: Arc<Live>, shared: Arc<Shared>) {
    // This worker's own child of the server's shutdown, so that connections
    // here wait on a token no other core touches.
    let stop = shared.shutdown.child();
    loop {
        // This worker's share of `max_connections`: when it is full, leave
        // new connections in the kernel's queue until one ends here.
        while shared.metrics.local_active_connections() >= shared.worker_connections {
            tokio::select! {
                _ = live.stop.cancelled() => return,
                _ = shared.room.local().notified() => {}
            }
        }
        let Some((stream, peer)) = accept(&listener, &live.stop).await else {
            return;
        };
        let ctx = live.ctx.load_full();
        let admitted = Admitted::new(shared.clone());
        // Plain HTTP, by far the most common connection, is the task
        // itself; TLS and TCP connections, whose state is larger, run in a
        // task of their own type, so that they do not make every task large.
        // There is no separate wait for the client's first byte: HTTP and
        // TLS listeners defer accepting until the client has sent
        // (`TCP_DEFER_ACCEPT`); a connection the kernel hands over empty
        // when that period ends waits in the request-head read, under the
        // same `client_header` limit and shutdown.
        if ctx.tls.is_none() && ctx.config.protocol == Protocol::Http {
            tokio::spawn(crate::http::serve(
                stream,
                peer,
                ctx,
                false,
                admitted,
                stop.clone(),
                false,
            ));
        } else {
            tokio::spawn(other_connection(stream, peer, ctx, admitted, stop.clone()));
        }
    }
}

/// An accepted connection: counted as open on its worker, and so holding
/// its place under the worker's share of `max_connections`, until this is
/// dropped (on the same worker: a connection's task never moves).
pub struct Admitted {
    shared: Arc<Shared>,
}

impl Admitted {
    fn new(shared: Arc<Shared>) -> Admitted {
        shared.metrics.connection_opened();
        Admitted { shared }
    }

    /// What the connection's tasks share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let was = self.shared.metrics.connection_closed();
        if was >= self.shared.worker_connections {
            self.shared.room.local().notify_one();
        }
    }
}

/// A TLS or TCP connection: the TLS handshake if any (within the
/// `client_header` limit), then HTTP or TCP.
async fn other_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    admitted: Admitted,
    stop: Shutdown,
) {
    let Some(acc) = &ctx.tls else {
        return serve_stream(stream, peer, &ctx, false, admitted, stop).await;
    };
    let t = admitted
        .shared()
        .current
        .load()
        .config
        .timeouts
        .client_header;
    match tokio::time::timeout(t, acc.accept(stream)).await {
        Ok(Ok(s)) => serve_stream(s, peer, &ctx, true, admitted, stop).await,
        Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
    }
}

async fn serve_stream<S>(
    s: S,
    peer: SocketAddr,
    ctx: &Arc<ListenerCtx>,
    tls: bool,
    admitted: Admitted,
    stop: Shutdown,
) where
    S: crate::http::ClientStream + 'static,
{
    match ctx.config.protocol {
        Protocol::Http => {
            crate::http::serve(s, peer, ctx.clone(), tls, admitted, stop, false).await
        }
        Protocol::Tcp => {
            let shared = admitted.shared().clone();
            crate::tcp::serve(s, peer, &ctx.upstream, shared).await;
        }
    }
}
