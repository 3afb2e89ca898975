//! The server: binds listeners (HTTP, TCP, optionally TLS), the admin
//! listener and the control socket; runs accept loops under a connection cap;
//! reloads on SIGHUP or `{"cmd":"reload"}`; stops gracefully on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use shoal_core::{control, Shutdown};

use crate::accesslog::AccessLog;
use crate::config::{Config, ListenerConfig, Protocol};
use crate::error::{ProxyError, Result};
use crate::metrics::Metrics;
use crate::state::{Generation, Shared};

struct Bound {
    /// One socket per worker thread, all on the same port (SO_REUSEPORT), so
    /// that accepting is spread over the threads like nginx's `reuseport`.
    listeners: Vec<TcpListener>,
    config: ListenerConfig,
    tls: Option<TlsAcceptor>,
}

/// A bound, not yet running proxy.
pub struct Server {
    shared: Arc<Shared>,
    bound: Vec<Bound>,
    admin: Option<TcpListener>,
    control: Option<(UnixListener, PathBuf)>,
}

/// Build the TLS acceptor of a listener, if it has certificates.
fn tls_for(l: &ListenerConfig) -> Result<Option<TlsAcceptor>> {
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

impl Server {
    /// Bind everything `config` asks for. Port 0 picks a free port (see
    /// [`Server::local_addrs`]).
    pub async fn bind(config: Config) -> Result<Server> {
        config.check()?;
        let mut bound = Vec::new();
        for l in &config.listeners {
            let tls = tls_for(l)?;
            let listeners =
                bind_reuseport(l.address, accept_threads()).map_err(|source| ProxyError::Bind {
                    addr: l.address,
                    source,
                })?;
            bound.push(Bound {
                listeners,
                config: l.clone(),
                tls,
            });
        }
        let admin = match config.admin {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|source| ProxyError::Bind { addr: a, source })?,
            ),
            None => None,
        };
        let control = match &config.control_name {
            Some(name) => {
                let path = control::socket_path(name);
                let l = control::bind(&path)
                    .await
                    .map_err(|source| ProxyError::Control {
                        path: path.display().to_string(),
                        source,
                    })?;
                Some((l, path))
            }
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let log = match &config.access_log {
            Some(p) => Some(
                AccessLog::open(p, metrics.clone())
                    .await
                    .map_err(ProxyError::Io)?,
            ),
            None => None,
        };
        let shutdown = Shutdown::new();
        let gen = Generation::new(config, None, shutdown.child());
        let shared = Arc::new(Shared {
            current: arc_swap::ArcSwap::from_pointee(gen),
            metrics,
            log,
            shutdown,
        });
        Ok(Server {
            shared,
            bound,
            admin,
            control,
        })
    }

    /// The addresses the listeners got, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound
            .iter()
            .filter_map(|b| b.listeners.first().and_then(|l| l.local_addr().ok()))
            .collect()
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// A handle to reload or inspect the running proxy from code.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Serve until `shutdown` fires, then let in-flight requests finish
    /// (up to the configured grace period).
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let shared = self.shared.clone();
        let cfg = shared.current.load();
        let max = cfg.config.limits.max_connections;
        let grace = cfg.config.timeouts.shutdown_grace;
        drop(cfg);
        crate::health::start(&shared.current.load());
        let permits = Arc::new(Semaphore::new(max));
        let mut tasks = Vec::new();
        for b in self.bound {
            tracing::info!(address = %b.config.address, protocol = ?b.config.protocol, tls = b.tls.is_some(), "listening");
            let Bound {
                listeners,
                config,
                tls,
            } = b;
            let config = Arc::new(config);
            for listener in listeners {
                tasks.push(tokio::spawn(accept_loop(
                    listener,
                    config.clone(),
                    tls.clone(),
                    shared.clone(),
                    permits.clone(),
                    shutdown.clone(),
                )));
            }
        }
        if let Some(a) = self.admin {
            tracing::info!(address = ?a.local_addr().ok(), "admin listening (/metrics, /status)");
            tasks.push(tokio::spawn(crate::admin::serve(
                a,
                shared.clone(),
                shutdown.clone(),
            )));
        }
        if let Some((l, path)) = self.control {
            let h = Handle {
                shared: shared.clone(),
            };
            tracing::info!(path = %path.display(), "control socket ready");
            tasks.push(tokio::spawn(control::serve(
                l,
                path,
                shutdown.clone(),
                move |req| {
                    let h = h.clone();
                    async move { h.control(&req) }
                },
            )));
        }
        let hup = {
            let h = Handle {
                shared: shared.clone(),
            };
            let sd = shutdown.clone();
            let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = sd.cancelled() => return,
                        s = sig.recv() => if s.is_none() { return },
                    }
                    tracing::info!("SIGHUP received, reloading");
                    let _ = h.reload();
                }
            })
        };
        shutdown.cancelled().await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        shared.shutdown.trigger();
        hup.abort();
        for t in tasks {
            let _ = t.await;
        }
        let all = max.min(u32::MAX as usize) as u32;
        if !shoal_core::shutdown::within_grace(grace, permits.acquire_many(all)).await {
            tracing::warn!(?grace, "grace period over; closing remaining connections");
        }
        Ok(())
    }
}

/// Accepting threads: one per runtime worker.
fn accept_threads() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(1)
        .clamp(1, 64)
}

/// Bind `n` listening sockets on `addr` with SO_REUSEPORT (port 0: the first
/// picks the port, the others join it).
fn bind_reuseport(addr: SocketAddr, n: usize) -> std::io::Result<Vec<TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(at), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&at.into())?;
        s.listen(4096)?;
        let l = TcpListener::from_std(s.into())?;
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// What every connection of one listening socket shares.
struct ListenerCtx {
    local: SocketAddr,
    tls: Option<TlsAcceptor>,
    upstream: Arc<str>,
    protocol: Protocol,
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ListenerConfig>,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    shutdown: Shutdown,
) {
    let ctx = Arc::new(ListenerCtx {
        local: listener.local_addr().unwrap_or(config.address),
        tls,
        upstream: Arc::from(config.upstream.clone().unwrap_or_default()),
        protocol: config.protocol,
    });
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            ctx.clone(),
            shared.clone(),
            permit,
        ));
    }
}

/// One accepted connection. Its future stays small while the client has not
/// spoken (an HTTP client speaks first): until then it holds no buffers or
/// connection state, so idle connections cost little memory. `peek` (not
/// `readable`, which may wake spuriously) waits for a real byte.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    use std::sync::atomic::Ordering;
    let m = &shared.metrics;
    m.active_connections.fetch_add(1, Ordering::Relaxed);
    m.connections_total.fetch_add(1, Ordering::Relaxed);
    let t = shared.current.load().config.timeouts.client_header;
    let ready = ctx.protocol == Protocol::Tcp || {
        let mut first = [0u8; 1];
        tokio::select! {
            r = tokio::time::timeout(t, stream.peek(&mut first)) => matches!(r, Ok(Ok(n)) if n > 0),
            _ = shared.shutdown.cancelled() => false,
        }
    };
    if ready {
        Box::pin(after_ready(stream, peer, &ctx, shared.clone(), t)).await;
    }
    shared
        .metrics
        .active_connections
        .fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

/// Everything after the client spoke (TLS handshake, then HTTP or TCP).
async fn after_ready(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: &ListenerCtx,
    shared: Arc<Shared>,
    t: Duration,
) {
    let (local, protocol, upstream) = (ctx.local, ctx.protocol, &*ctx.upstream);
    match &ctx.tls {
        None => serve_stream(stream, peer, local, false, protocol, upstream, shared).await,
        Some(acc) => match tokio::time::timeout(t, acc.accept(stream)).await {
            Ok(Ok(s)) => serve_stream(s, peer, local, true, protocol, upstream, shared).await,
            Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
        },
    }
}

async fn serve_stream<S>(
    s: S,
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
    protocol: Protocol,
    upstream: &str,
    shared: Arc<Shared>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    match protocol {
        Protocol::Http => crate::http::serve(s, peer, local, tls, shared).await,
        Protocol::Tcp => crate::tcp::serve(s, peer, upstream, shared).await,
    }
}

/// Reload and inspect a running proxy.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Re-read the configuration file and swap it in. New requests use the
    /// new configuration; requests in flight finish on the old one. A bad file
    /// is refused and the old configuration stays. Listeners cannot change.
    pub fn reload(&self) -> Result<u64> {
        let r = self.try_reload();
        use std::sync::atomic::Ordering;
        match &r {
            Ok(n) => {
                self.shared
                    .metrics
                    .reloads_ok
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation = n, "configuration reloaded");
            }
            Err(e) => {
                self.shared
                    .metrics
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "reload refused; the running configuration stays");
            }
        }
        r
    }

    fn try_reload(&self) -> Result<u64> {
        let old = self.shared.current.load_full();
        let Some(path) = old.config.source.clone() else {
            return Err(ProxyError::Reload(
                "started without --config; nothing to re-read".into(),
            ));
        };
        let mut new = Config::load(&path)?;
        new.control_name = old.config.control_name.clone();
        self.apply(new)
    }

    /// Swap in `new` (already validated) as the next generation.
    pub fn apply(&self, new: Config) -> Result<u64> {
        new.check()?;
        let old = self.shared.current.load_full();
        let same = |a: &ListenerConfig, b: &ListenerConfig| {
            a.address == b.address
                && a.protocol == b.protocol
                && a.upstream == b.upstream
                && a.tls
                    .iter()
                    .map(|c| (&c.cert, &c.key))
                    .eq(b.tls.iter().map(|c| (&c.cert, &c.key)))
        };
        if new.listeners.len() != old.config.listeners.len()
            || !new
                .listeners
                .iter()
                .zip(&old.config.listeners)
                .all(|(a, b)| same(a, b))
            || new.admin != old.config.admin
            || new.access_log != old.config.access_log
        {
            return Err(ProxyError::Reload(
                "listeners, admin and access_log cannot change on reload; restart the proxy for that".into(),
            ));
        }
        let gen = Generation::new(new, Some(&old), self.shared.shutdown.child());
        crate::health::start(&gen);
        let n = gen.number;
        self.shared.current.store(Arc::new(gen));
        old.tasks.trigger();
        Ok(n)
    }

    /// The status document.
    pub fn status(&self) -> serde_json::Value {
        self.shared.current.load().status_json(&self.shared.metrics)
    }

    /// The Prometheus text.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render(&self.shared.current.load())
    }

    /// Answer one control-socket request.
    pub fn control(&self, req: &serde_json::Value) -> serde_json::Value {
        match req["cmd"].as_str() {
            Some("reload") => match self.reload() {
                Ok(n) => control::ok(serde_json::json!({ "generation": n })),
                Err(e) => control::err(e),
            },
            Some("status") => control::ok(self.status()),
            Some(other) => control::err(format!(
                "unknown command {other:?} (proxy knows reload, status)"
            )),
            None => control::err("missing cmd"),
        }
    }
}

/// Bind and serve `config` until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<()> {
    Server::bind(config).await?.run(shutdown).await
}
