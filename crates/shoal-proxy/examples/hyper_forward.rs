//! `hyper_forward`: an HTTP/1.1 reverse proxy written with hyper, for a
//! **benchmark comparison, not a product**.
//!
//! It does the job `shoal proxy` does on its keep-alive benchmark (round robin
//! over a few HTTP/1.1 upstreams, keep-alive on both sides, streaming bodies)
//! the way a hyper user who cares about speed would write it, so that shoal's
//! hand-written HTTP/1 engine (`src/http.rs`, `src/codec.rs`) can be measured
//! side by side with hyper and nginx on the same machine. It has no
//! configuration, routing, health checks, retries after a sent request,
//! metrics, logging or graceful shutdown.
//!
//! ```text
//! hyper_forward LISTEN_ADDR UPSTREAM1 [UPSTREAM2 ...] [--threads N] [--client pool|legacy]
//!               [--no-header-timeout]
//! ```
//!
//! Thread per core: `N` OS threads (default: the number of cores), each with
//! its own `tokio` current-thread runtime, its own `SO_REUSEPORT` listening
//! socket (backlog 4096, `TCP_DEFER_ACCEPT` like nginx `deferred` and shoal's
//! HTTP listener, `TCP_NODELAY` set on the listening socket so that accepted
//! sockets inherit it, as shoal does) and its own upstream client. Nothing is
//! shared between threads. The global allocator is mimalloc (`no_thp`), the
//! one the `shoal` binary uses.
//!
//! Upstream clients (`--client`):
//! - `pool` (default, the faster one: on wrk `-t2 -c64` over two nginx
//!   backends it took 11% less proxy CPU per request than `legacy`, keep-alive
//!   and `Connection: close` alike): a per-thread, per-upstream stack of idle
//!   `hyper::client::conn::http1` senders, at most 64 idle per upstream
//!   (behind a never-contended mutex);
//! - `legacy`: `hyper_util::client::legacy::Client` with an `HttpConnector`
//!   (`set_nodelay(true)`) and `pool_max_idle_per_host(64)`.
//!
//! Per request: round robin over the upstreams (a per-thread counter); the
//! request head is rewritten to HTTP/1.1 toward the upstream (`legacy`: the
//! URI gets the upstream authority; `pool`: origin-form on a connection to that
//! upstream), `Host` is kept, `X-Forwarded-For` is appended, hop-by-hop
//! headers (`Connection` and the fields it lists, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are
//! removed both ways and hyper re-frames the bodies. The request's `Incoming`
//! body goes straight into the upstream request and the upstream's `Incoming`
//! response body straight back. An upstream failure gives `502`.
//!
//! The server side is `hyper::server::conn::http1` with keep-alive on and a
//! `TokioTimer`, so hyper's default 30 s header-read timeout applies (shoal
//! runs with timeouts too); `--no-header-timeout` leaves the timer out, to
//! measure what it costs.
//!
//! Build: `cargo build --release --example hyper_forward -p shoal-proxy`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

/// The `shoal` binary's allocator, so that the comparison is of the HTTP
/// engines, not of glibc malloc against mimalloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The response body: the upstream's, or our own 502.
type Body = Either<Incoming, Full<Bytes>>;

/// Idle connections kept per upstream (per thread), like nginx `keepalive 64`.
const MAX_IDLE: usize = 64;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[derive(Clone, Copy, PartialEq)]
enum ClientKind {
    Pool,
    Legacy,
}

struct Args {
    listen: SocketAddr,
    upstreams: Vec<SocketAddr>,
    threads: usize,
    client: ClientKind,
    header_timeout: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: hyper_forward LISTEN_ADDR UPSTREAM1 [UPSTREAM2 ...] [--threads N] [--client pool|legacy] [--no-header-timeout]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut client = ClientKind::Pool;
    let mut header_timeout = true;
    let mut addrs = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => {
                threads = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            "--client" => {
                client = match it.next().as_deref() {
                    Some("pool") => ClientKind::Pool,
                    Some("legacy") => ClientKind::Legacy,
                    _ => usage(),
                }
            }
            "--no-header-timeout" => header_timeout = false,
            "-h" | "--help" => usage(),
            _ => addrs.push(a.parse::<SocketAddr>().unwrap_or_else(|_| usage())),
        }
    }
    if addrs.len() < 2 {
        usage();
    }
    let listen = addrs.remove(0);
    Args {
        listen,
        upstreams: addrs,
        threads,
        client,
        header_timeout,
    }
}

fn main() {
    let args = parse_args();
    // shoal's own listener setup: one SO_REUSEPORT socket per thread (the
    // kernel spreads connections over them), TCP_NODELAY inherited by
    // accepted sockets, TCP_DEFER_ACCEPT like nginx's `deferred`.
    let listeners = shoal_proxy::listener::bind_reuseport(args.listen, args.threads, 30)
        .unwrap_or_else(|e| {
            eprintln!("hyper_forward: bind {}: {e}", args.listen);
            std::process::exit(1)
        });
    let mut handles = Vec::with_capacity(args.threads);
    for (i, listener) in listeners.into_iter().enumerate() {
        let upstreams = args.upstreams.clone();
        let client = args.client;
        let header_timeout = args.header_timeout;
        let h = std::thread::Builder::new()
            .name(format!("hyper-fwd-{i}"))
            .spawn(move || worker(listener, upstreams, client, header_timeout))
            .expect("spawn worker thread");
        handles.push(h);
    }
    for h in handles {
        let _ = h.join();
    }
}

/// One thread: a current-thread runtime and the accept loop. Tasks are
/// spawned with `tokio::spawn` on that runtime (a `LocalSet` with `Rc` state
/// measured no faster); the per-thread state's atomics and mutex are never
/// contended.
fn worker(
    listener: std::net::TcpListener,
    upstreams: Vec<SocketAddr>,
    client: ClientKind,
    header_timeout: bool,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("register listener");
        let fwd = Arc::new(Forwarder::new(&upstreams, client));
        let mut server = http1::Builder::new();
        server.keep_alive(true);
        if header_timeout {
            // hyper's default 30 s header-read timeout needs a timer.
            server.timer(TokioTimer::new());
        }
        let server = Arc::new(server);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    eprintln!("hyper_forward: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            // The peer address is fixed for the connection: format it once.
            let xff =
                HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a header value");
            let fwd = fwd.clone();
            let server = server.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| forward(fwd.clone(), xff.clone(), req));
                let _ = server.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
}

/// Per-thread forwarding state.
struct Forwarder {
    next: AtomicUsize,
    upstreams: Upstreams,
}

// One per thread, so the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Upstreams {
    Pool(Vec<Arc<Pool>>),
    Legacy {
        client: Client<HttpConnector, Incoming>,
        authorities: Vec<Authority>,
    },
}

impl Forwarder {
    fn new(addrs: &[SocketAddr], kind: ClientKind) -> Self {
        let upstreams = match kind {
            ClientKind::Pool => Upstreams::Pool(
                addrs
                    .iter()
                    .map(|&addr| {
                        Arc::new(Pool {
                            addr,
                            idle: Mutex::new(Vec::with_capacity(MAX_IDLE)),
                        })
                    })
                    .collect(),
            ),
            ClientKind::Legacy => {
                let mut conn = HttpConnector::new();
                conn.set_nodelay(true);
                let client = Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(MAX_IDLE)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(conn);
                let authorities = addrs
                    .iter()
                    .map(|a| {
                        Authority::try_from(a.to_string())
                            .expect("a socket address is an authority")
                    })
                    .collect();
                Upstreams::Legacy {
                    client,
                    authorities,
                }
            }
        };
        Forwarder {
            next: AtomicUsize::new(0),
            upstreams,
        }
    }

    fn pick(&self, n: usize) -> usize {
        // Only this thread touches it: a plain load and store.
        let i = self.next.load(Ordering::Relaxed);
        self.next
            .store(if i + 1 >= n { 0 } else { i + 1 }, Ordering::Relaxed);
        i
    }
}

/// The service: one request in, one response out.
async fn forward(
    fwd: Arc<Forwarder>,
    peer: HeaderValue,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    strip_hop_by_hop(req.headers_mut());
    append_forwarded_for(req.headers_mut(), peer);
    *req.version_mut() = Version::HTTP_11;
    let res = match &fwd.upstreams {
        Upstreams::Pool(pools) => {
            let pool = &pools[fwd.pick(pools.len())];
            to_origin_form(req.uri_mut());
            pool.send(req).await
        }
        Upstreams::Legacy {
            client,
            authorities,
        } => {
            let auth = &authorities[fwd.pick(authorities.len())];
            to_upstream(req.uri_mut(), auth);
            client.request(req).await.map_err(drop)
        }
    };
    Ok(match res {
        Ok(mut resp) => {
            strip_hop_by_hop(resp.headers_mut());
            resp.map(Either::Left)
        }
        Err(()) => bad_gateway(),
    })
}

fn bad_gateway() -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        b"502 Bad Gateway\n",
    ))));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Drop `Connection`, the fields it names, and the fixed hop-by-hop fields.
/// hyper frames the message again on the other side (`Content-Length` is
/// kept, chunked is re-applied when the body length is unknown).
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if let header::Entry::Occupied(e) = h.entry(header::CONNECTION) {
        let (_, values) = e.remove_entry_mult();
        let listed: Vec<HeaderValue> = values.collect();
        for v in &listed {
            let Ok(s) = v.to_str() else { continue };
            for token in s.split(',') {
                let token = token.trim();
                if !token.is_empty() {
                    if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                        h.remove(name);
                    }
                }
            }
        }
    }
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        h.remove(name);
    }
}

/// Append the client address to `X-Forwarded-For` (joining earlier values).
fn append_forwarded_for(h: &mut HeaderMap, peer: HeaderValue) {
    match h.entry(X_FORWARDED_FOR) {
        header::Entry::Vacant(e) => {
            e.insert(peer);
        }
        header::Entry::Occupied(mut e) => {
            let mut b = BytesMut::new();
            for v in e.iter() {
                b.put_slice(v.as_bytes());
                b.put_slice(b", ");
            }
            b.put_slice(peer.as_bytes());
            if let Ok(v) = HeaderValue::from_maybe_shared(b.freeze()) {
                e.insert(v);
            }
        }
    }
}

/// `http://UPSTREAM/path?query` for the legacy client (which sends it in
/// origin-form and keeps our `Host`).
fn to_upstream(uri: &mut Uri, auth: &Authority) {
    let mut parts = std::mem::take(uri).into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(auth.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *uri = Uri::from_parts(parts).expect("scheme, authority and path make a URI");
}

/// Origin-form (`/path?query`) for a connection that already goes to the
/// upstream; an absolute-form request URI from the client loses its authority.
fn to_origin_form(uri: &mut Uri) {
    if uri.scheme().is_some() || uri.authority().is_some() {
        let pq = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *uri = Uri::from(pq);
    }
}

/// Idle keep-alive connections to one upstream, newest last.
struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<SendRequest<Incoming>>>,
}

impl Pool {
    /// Send on an idle connection, or on a new one. A request that hyper hands
    /// back unsent (the idle connection was closed meanwhile) is tried again on
    /// another; once a request has gone out, a failure is final (502).
    async fn send(self: &Arc<Self>, mut req: Request<Incoming>) -> Result<Response<Incoming>, ()> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.checkin(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Unsent, on a stale idle connection: try the next one.
                    Some(r) if reused => req = r,
                    _ => return Err(()),
                },
            }
        }
    }

    fn checkout(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap();
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, ()> {
        let stream = TcpStream::connect(self.addr).await.map_err(drop)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(drop)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// The connection can take the next request once hyper has read the
    /// response body to its end (hyper's client is "ready" only then). A small
    /// body usually has been read with the head: back to the pool at once.
    /// Otherwise wait for it off the request path in a task. The legacy client
    /// does the same.
    fn checkin(self: &Arc<Self>, mut sender: SendRequest<Incoming>) {
        if sender.is_ready() {
            self.push(sender);
        } else if !sender.is_closed() {
            let pool = self.clone();
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.push(sender);
                }
            });
        }
    }

    fn push(&self, sender: SendRequest<Incoming>) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }
}
