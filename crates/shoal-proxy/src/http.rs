//! One client connection in HTTP mode: read a request head, route it, pick a
//! server, forward the request, stream the response back, repeat while the
//! connection is kept alive. Retries go to the next server on failures before
//! any response byte (nginx's `proxy_next_upstream error timeout`), `101`
//! responses become a two-way tunnel, and the proxy answers 400/404/408/431/
//! 502/503/504 itself.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::accesslog::Entry;
use crate::balance::{Context, PeerView};
use crate::codec::{
    self, parse_request, ClientSide, Forwarding, Framing, HeaderPos, ReadBuf, RequestInfo,
    ResponseInfo,
};
use crate::config::HashKey;
use crate::error::UpstreamFailure;
use crate::router::normalize_host;
use crate::state::{Generation, Shared};
use crate::timer::{lazy, Timer};
use crate::upstream::{Lease, NoPeer, PeerId};
use shoal_core::Shutdown;

mod body;
mod exchange;

use body::{copy_body, write_t, CopyError};
use exchange::{read_response_head, send_request, tunnel, SendError};

/// Request bodies up to this size are read whole before forwarding, so that
/// the request can be retried on another server.
const BUFFER_BODY: u64 = 64 * 1024;
/// Size a body buffer may grow to.
const BODY_BUF_MAX: usize = 256 * 1024;

/// A client stream as the HTTP side uses it: plain TCP or TLS.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Whether [`ClientStream::poll_idle_ready`] can tell. A TLS session
    /// cannot (it may already hold decrypted bytes): such a connection keeps
    /// its buffer while idle.
    const WAITS_UNBUFFERED: bool = false;

    /// Poll until a read would not wait, without reading anything, so that
    /// an idle keep-alive connection can wait with no buffer.
    fn poll_idle_ready(&self, _cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The plain socket, out of tokio's hands, for a connection that parks
    /// (see [`crate::idle::Parked`]); `None` for streams that cannot.
    fn into_parkable(self) -> Option<std::net::TcpStream>
    where
        Self: Sized,
    {
        None
    }
}

impl ClientStream for TcpStream {
    const WAITS_UNBUFFERED: bool = true;

    fn poll_idle_ready(&self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn into_parkable(self) -> Option<std::net::TcpStream> {
        self.into_std().ok()
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {}

/// The workspace of a request in progress: buffers, parsed heads and
/// scratch space. A connection holds one only while it has a request to
/// serve; between requests it goes back to its worker's spares (see
/// [`Conn::take`]), as nginx frees a keep-alive connection's request pool,
/// so an idle keep-alive connection costs little more than its task.
struct Conn {
    buf: ReadBuf,
    up_buf: ReadBuf,
    info: RequestInfo,
    headers: Vec<HeaderPos>,
    resp: ResponseInfo,
    resp_headers: Vec<HeaderPos>,
    out: Vec<u8>,
    scratch: Vec<u8>,
    key: Vec<u8>,
    host: String,
    views: Vec<PeerView>,
    tried: Vec<PeerId>,
    /// The client's address, and its IP as text for `X-Forwarded-For`
    /// (kept from the last connection that used this workspace when the
    /// address is the same).
    peer: SocketAddr,
    client_ip: String,
    /// The listener's address as text, the `Host` of requests without one.
    local: Option<SocketAddr>,
    fallback_host: String,
    proto: &'static str,
    /// Limits waits for the client's request head. Like `up_timer`, it
    /// stays with the workspace, armed or not.
    client_timer: Timer,
    /// Limits waits for an upstream's response head. A timer of its own:
    /// with one timer for both, different `idle` and `upstream_header`
    /// limits would re-arm it twice per request. It stays with the
    /// workspace, armed or not: whichever connection uses it next polls it
    /// with its own waker.
    up_timer: Timer,
    /// A response to the request in progress has begun to go out (so a
    /// request deadline can no longer answer 504).
    answering: bool,
}

/// The size a request's read buffers start at, for the client's side and
/// the upstream's: one page, as nginx's `proxy_buffer_size`. A longer head
/// grows the buffer; a large body grows it while it streams (to 64 KiB).
const READ_BUF: usize = 4096;

/// Most spare workspaces a worker keeps.
const SPARE_WORKSPACES: usize = 64;
/// Scratch vectors that grew past this many elements are not kept spare.
const SPARE_VEC_MAX: usize = 64;

thread_local! {
    // Boxed: a workspace is handed out and kept as a `Box`, so taking and
    // giving one back moves a pointer, not the struct.
    #[allow(clippy::vec_box)]
    static WORKSPACES: std::cell::RefCell<Vec<Box<Conn>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Conn {
    /// A workspace for a request of the client `peer` on the listener at
    /// `local`: one of this worker's spares if there is one.
    fn take(peer: SocketAddr, local: SocketAddr, tls: bool) -> Box<Conn> {
        let mut c = WORKSPACES
            .with(|w| w.borrow_mut().pop())
            .unwrap_or_else(|| {
                Box::new(Conn {
                    buf: ReadBuf::new(READ_BUF),
                    up_buf: ReadBuf::new(READ_BUF),
                    info: RequestInfo::default(),
                    headers: Vec::new(),
                    resp: ResponseInfo::default(),
                    resp_headers: Vec::new(),
                    out: Vec::new(),
                    scratch: Vec::new(),
                    key: Vec::new(),
                    host: String::new(),
                    views: Vec::new(),
                    tried: Vec::new(),
                    peer,
                    client_ip: String::new(),
                    local: None,
                    fallback_host: String::new(),
                    proto: "http",
                    client_timer: Timer::new(),
                    up_timer: Timer::new(),
                    answering: false,
                })
            });
        if c.client_ip.is_empty() || c.peer.ip() != peer.ip() {
            c.client_ip.clear();
            let _ = write!(c.client_ip, "{}", peer.ip());
        }
        c.peer = peer;
        if c.local != Some(local) {
            c.fallback_host.clear();
            let _ = write!(c.fallback_host, "{local}");
            c.local = Some(local);
        }
        c.proto = if tls { "https" } else { "http" };
        c
    }

    /// Give the workspace back to this worker's spares (or free it), with
    /// its read buffers going to their own spares. Anything still buffered
    /// is dropped.
    fn give_back(mut self: Box<Conn>) {
        self.buf.release();
        self.up_buf.release();
        // A body streamed through `scratch` (chunked framing is written
        // anew there) leaves it as large as a read: keep a page of each.
        self.out.shrink_to(4096);
        self.scratch.shrink_to(4096);
        let oversized = self.headers.capacity() > SPARE_VEC_MAX
            || self.resp_headers.capacity() > SPARE_VEC_MAX
            || self.views.capacity() > SPARE_VEC_MAX
            || self.tried.capacity() > SPARE_VEC_MAX
            || self.key.capacity() > 4096
            || self.host.capacity() > 4096;
        if !oversized {
            WORKSPACES.with(|w| {
                let mut w = w.borrow_mut();
                if w.len() < SPARE_WORKSPACES {
                    w.push(self);
                }
            });
        }
    }

    /// Write the upstream's response head (the first `head` bytes of
    /// `up_buf`), rewritten for the client, into `out`, and drop it from
    /// `up_buf`.
    fn take_response_head(&mut self, head: usize, side: &ClientSide) {
        self.answering = true;
        codec::write_client_response(
            self.up_buf.chunk(),
            &self.resp_headers,
            &self.resp,
            side,
            &mut self.out,
        );
        self.up_buf.consume(head);
    }
}

/// Serve one client connection until it closes, errs, or `stop` fires (a
/// worker's child of the server's shutdown: idle keep-alive connections
/// close then). `admitted` keeps the connection counted and under
/// `max_connections` until this ends.
///
/// Between requests the connection holds no workspace, timer or shutdown
/// registration: it waits in its worker's [`crate::idle`] set. And this is
/// a plain function returning the future rather than an `async fn`, which
/// would keep each argument twice in its state: this state is most of what
/// an idle keep-alive connection costs.
#[allow(clippy::manual_async_fn)] // see above: on purpose
pub fn serve<S: ClientStream + 'static>(
    mut client: S,
    peer: SocketAddr,
    ctx: Arc<crate::listener::ListenerCtx>,
    tls: bool,
    admitted: crate::listener::Admitted,
    stop: Shutdown,
    resumed: bool,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // `admitted.shared()` at each use rather than kept in a local:
        // a local would take a word of every idle connection's task.
        let mut work: Option<Box<Conn>> = None;
        // The configuration generation, re-read before each request (a
        // reload applies from the next request on) but cloned only when it
        // changed, so the request path touches no reference count other
        // cores share.
        let mut gen = admitted.shared().current.load_full();
        // A resumed connection (see `crate::idle::Parked`) has served a
        // request before, and its next one is readable.
        let mut first = !resumed;
        loop {
            if S::WAITS_UNBUFFERED && !first && work.as_ref().is_some_and(|c| c.buf.is_empty()) {
                // Idle between requests: give the workspace back and wait
                // for the next request with nothing but the socket.
                if let Some(c) = work.take() {
                    c.give_back();
                }
                // A `move` closure over `&mut client`: borrowing it shared
                // would need `S: Sync`.
                let waiting = &mut client;
                let idle = gen.config.timeouts.idle;
                let parked = &admitted.shared().parked;
                let since = crate::upstream::now_ms();
                let woke = crate::idle::wait(
                    admitted.shared().idle.local(),
                    idle,
                    parked.local().is_open(),
                    &stop,
                    move |cx| waiting.poll_idle_ready(cx),
                )
                .await;
                match woke {
                    crate::idle::Wake::Readable => {}
                    crate::idle::Wake::Close => break,
                    crate::idle::Wake::Park => {
                        drop(gen);
                        let shared = admitted.shared().clone();
                        if let Some(stream) = client.into_parkable() {
                            let c = crate::idle::ParkedConn {
                                stream,
                                peer,
                                ctx,
                                admitted,
                                stop,
                                deadline: since + idle.as_millis() as u64,
                            };
                            if let Err(c) = shared.parked.local().park(c) {
                                tracing::debug!(client = %c.peer, "could not park an idle connection; closed");
                            }
                        }
                        return;
                    }
                }
            }
            {
                let now = admitted.shared().current.load();
                if !Arc::ptr_eq(&now, &gen) {
                    gen = arc_swap::Guard::into_inner(now);
                }
            }
            let c = work.get_or_insert_with(|| Conn::take(peer, ctx.local, tls));
            // Boxed, so that the task of an idle connection is only as large
            // as the idle wait needs, not as large as a request in flight.
            let request = Box::pin(one_request(
                &mut client,
                c,
                admitted.shared(),
                &gen,
                &stop,
                first,
            ));
            match request.await {
                Ok(true) => first = false,
                Ok(false) => break,
                Err(e) => {
                    tracing::debug!(client = %peer, error = %e, "client connection ended");
                    break;
                }
            }
        }
        // TLS needs its close_notify; unread bytes would make close() send
        // a reset that can destroy the last response. Otherwise dropping
        // closes.
        let unread = work.as_ref().is_some_and(|c| !c.buf.is_empty());
        if let Some(c) = work {
            c.give_back();
        }
        if tls || unread {
            let _ = client.shutdown().await;
        }
    }
}

/// Send a response the proxy made, count and log it. Returns whether the
/// connection may go on.
async fn local_response<S: AsyncWrite + Unpin>(
    client: &mut S,
    c: &mut Conn,
    shared: &Shared,
    status: u16,
    keep: bool,
    started: Option<Instant>,
) -> io::Result<bool> {
    c.answering = true;
    let body = format!("{} {}\n", status, codec::reason_phrase(status));
    codec::simple_response(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        !keep,
        &mut c.out,
    );
    shared.metrics.local_status(status);
    let t = shared.current.load().config.timeouts.idle;
    write_t(client, &c.out, t).await?;
    finish(c, shared, status, body.len() as u64, started);
    Ok(keep)
}

fn finish(c: &Conn, shared: &Shared, status: u16, bytes: u64, started: Option<Instant>) {
    if let Some(s) = started {
        shared.metrics.observe(s.elapsed());
    }
    if let Some(log) = &shared.log {
        log.log(&Entry {
            client: c.peer.ip(),
            method: &c.info.method,
            target: &c.info.target,
            minor: c.info.minor,
            status,
            bytes,
            referer: &c.info.referer,
            user_agent: &c.info.user_agent,
        });
    }
}

/// Read the request head. `Ok(None)`: the connection ended quietly.
async fn read_head<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    c: &mut Conn,
    shared: &Shared,
    gen: &Generation,
    stop: &Shutdown,
    first: bool,
) -> io::Result<Option<usize>> {
    let limits = gen.config.limits;
    let t = gen.config.timeouts;
    // The head's deadline: set when it starts (its first byte, or the
    // connection's start for the first request), never moved by later reads.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if !c.buf.is_empty() {
            match parse_request(
                c.buf.chunk(),
                limits.max_headers,
                &mut c.info,
                &mut c.headers,
            ) {
                Ok(Some(n)) => return Ok(Some(n)),
                Ok(None) => {}
                Err(rej) => {
                    tracing::info!(client = %c.peer, status = rej.status, "rejected request head");
                    c.info.method.clear();
                    c.info.target.clear();
                    local_response(client, c, shared, rej.status, false, None).await?;
                    return Ok(None);
                }
            }
        }
        let idle = c.buf.is_empty();
        let wait = if idle && !first {
            t.idle
        } else {
            let now = tokio::time::Instant::now();
            deadline
                .get_or_insert(now + t.client_header)
                .saturating_duration_since(now)
        };
        let read = tokio::select! {
            biased;
            r = c.client_timer.limit(wait, c.buf.fill(client, limits.max_header_bytes)) => r,
            _ = stop.cancelled(), if idle => return Ok(None),
        };
        match read {
            Ok(Ok(0)) => return Ok(None),
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::OutOfMemory => {
                // A head larger than the limit: 414 when the request line
                // alone fills it (nginx), else 431.
                let status = if c.buf.chunk().contains(&b'\n') {
                    431
                } else {
                    414
                };
                c.info.method.clear();
                c.info.target.clear();
                local_response(client, c, shared, status, false, None).await?;
                return Ok(None);
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                if !idle {
                    c.info.method.clear();
                    c.info.target.clear();
                    local_response(client, c, shared, 408, false, None).await?;
                }
                return Ok(None);
            }
        }
    }
}

/// Handle one request. Returns whether to keep the connection.
async fn one_request<S>(
    client: &mut S,
    c: &mut Conn,
    shared: &Shared,
    gen: &Generation,
    stop: &Shutdown,
    first: bool,
) -> io::Result<bool>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(head_len) = read_head(client, c, shared, gen, stop, first).await? else {
        return Ok(false);
    };
    let started = Instant::now();
    let limits = gen.config.limits;
    let refused = if c.info.method == "TRACE" && !limits.allow_trace {
        Some(405)
    } else if matches!(c.info.body(), Framing::Length(n) if limits.max_body_size > 0 && n > limits.max_body_size)
    {
        Some(413)
    } else {
        None
    };
    if let Some(status) = refused {
        tracing::info!(client = %c.peer, status, method = %c.info.method, "refused request");
        c.buf.consume(head_len);
        return local_response(client, c, shared, status, false, Some(started)).await;
    }
    c.answering = false;
    match gen.config.timeouts.request {
        None => forward(client, c, shared, gen, stop, head_len, started).await,
        Some(limit) => {
            let exchange = forward(client, c, shared, gen, stop, head_len, started);
            match tokio::time::timeout(limit, exchange).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(client = %c.peer, target = %c.info.target, "request deadline passed");
                    if c.answering {
                        finish(c, shared, 504, 0, Some(started));
                        Ok(false)
                    } else {
                        local_response(client, c, shared, 504, false, Some(started)).await
                    }
                }
            }
        }
    }
}

/// Forward one request whose head (`head_len` bytes of `c.buf`) was read,
/// and relay the answer. Returns whether to keep the connection.
async fn forward<S>(
    client: &mut S,
    c: &mut Conn,
    shared: &Shared,
    gen: &Generation,
    stop: &Shutdown,
    head_len: usize,
    started: Instant,
) -> io::Result<bool>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let t = gen.config.timeouts;
    let path_end = c.info.target.find('?').unwrap_or(c.info.target.len());
    // `OPTIONS *` is routed like `/`.
    let route_path = if c.info.target == "*" {
        "/"
    } else {
        &c.info.target[..path_end]
    };
    c.host.clear();
    c.host.push_str(&normalize_host(&c.info.host));
    let upstream = gen
        .router
        .route(&c.host, route_path)
        .and_then(|n| gen.upstreams.get(n));
    let body = c.info.body();
    let Some(upstream) = upstream else {
        let keep = body == Framing::None && c.info.keep_alive;
        c.buf.consume(head_len);
        return local_response(client, c, shared, 404, keep, Some(started)).await;
    };
    // The hash key, copied out before the head is consumed.
    c.key.clear();
    match &upstream.hash_key {
        HashKey::Path => c.key.extend_from_slice(c.info.target.as_bytes()),
        HashKey::Header(name) => {
            let buf = c.buf.chunk();
            if let Some(h) = c
                .headers
                .iter()
                .find(|h| h.name(buf).eq_ignore_ascii_case(name.as_bytes()))
            {
                c.key.extend_from_slice(h.value(buf));
            }
        }
    }
    let fwd = Forwarding {
        client_ip: &c.client_ip,
        proto: c.proto,
        fallback_host: &c.fallback_host,
    };
    codec::write_upstream_request(c.buf.chunk(), &c.headers, &c.info, &fwd, &mut c.out);
    c.buf.consume(head_len);

    if c.info.expect_continue && body != Framing::None {
        write_t(client, b"HTTP/1.1 100 Continue\r\n\r\n", t.idle).await?;
    }
    // Small bodies are read whole so the request stays retryable.
    let buffered_len = match body {
        Framing::None => Some(0usize),
        Framing::Length(n) if n <= BUFFER_BODY => {
            while (c.buf.len() as u64) < n {
                let r = lazy(t.idle, c.buf.fill(client, BODY_BUF_MAX)).await;
                match r {
                    Ok(Ok(k)) if k > 0 => {}
                    _ => return Ok(false),
                }
            }
            Some(n as usize)
        }
        _ => None,
    };

    let head_req = c.info.method == "HEAD";
    c.tried.clear();
    let mut last_fail: Option<UpstreamFailure> = None;
    let mut body_consumed = false;
    // Find a server that answers with a response head.
    let (lease, mut conn, head) = loop {
        let ctx = Context {
            client_ip: c.peer.ip(),
            method: &c.info.method,
            host: &c.host,
            path: &c.info.target,
            key: &c.key,
        };
        let lease: Lease = match upstream.select(&ctx, &c.tried, &mut c.views) {
            Ok(l) => l,
            Err(no) => {
                let status = match (no, last_fail) {
                    (_, Some(f)) if f.is_timeout() => 504,
                    (_, Some(_)) => 502,
                    (NoPeer::Busy, None) => 503,
                    (NoPeer::NoLive, None) => 502,
                };
                tracing::warn!(upstream = %upstream.name, status, last = last_fail.map(|f| f.as_str()), "no upstream server answered");
                let keep = c.info.keep_alive && !body_consumed && buffered_len.is_some();
                if let Some(n) = buffered_len {
                    c.buf.consume(n);
                }
                return local_response(client, c, shared, status, keep, Some(started)).await;
            }
        };
        let mut stale_retry = true;
        // Only a pooled connection that is still quiet now (see
        // `Peer::take_idle`); a request that must not be replayed is not
        // retried if it breaks anyway.
        let (mut conn, mut reused) = match lease.peer.take_idle(t.upstream_keepalive) {
            Some(s) => (s, true),
            None => match lease.peer.connect(t.connect).await {
                Ok(s) => (s, false),
                Err(f) => {
                    tracing::warn!(server = %lease.peer.config.name, failure = f.as_str(), "upstream connect failed");
                    lease.peer.fail();
                    c.tried.push(lease.id);
                    last_fail = Some(f);
                    continue;
                }
            },
        };
        let outcome = loop {
            let max_data = match gen.config.limits.max_body_size {
                0 => u64::MAX,
                n => n,
            };
            let sent =
                send_request(client, &mut conn, c, body, buffered_len, t.idle, max_data).await;
            let r = match sent {
                Err(SendError::Client) => return Ok(false),
                Err(SendError::BadBody) => {
                    tracing::info!(client = %c.peer, "malformed chunked request body");
                    return local_response(client, c, shared, 400, false, Some(started)).await;
                }
                Err(SendError::TooLarge) => {
                    tracing::info!(client = %c.peer, "chunked request body over max_body_size");
                    return local_response(client, c, shared, 413, false, Some(started)).await;
                }
                Err(SendError::Upstream) => Err(UpstreamFailure::Broken),
                Ok(consumed) => {
                    body_consumed |= consumed;
                    read_response_head(&mut conn, c, gen, head_req, client).await
                }
            };
            match r {
                Err(UpstreamFailure::Broken)
                    if reused && stale_retry && !body_consumed && c.info.idempotent() =>
                {
                    // The pooled connection had been closed by the server: use a fresh one.
                    stale_retry = false;
                    match lease.peer.connect(t.connect).await {
                        Ok(s) => {
                            conn = s;
                            reused = false;
                            continue;
                        }
                        Err(f) => break Err(f),
                    }
                }
                other => break other,
            }
        };
        match outcome {
            Ok(n) => break (lease, conn, n),
            Err(f) => {
                tracing::warn!(server = %lease.peer.config.name, failure = f.as_str(), "upstream attempt failed");
                lease.peer.fail();
                c.tried.push(lease.id);
                last_fail = Some(f);
                let retryable = !body_consumed && (f.nothing_sent() || c.info.idempotent());
                if !retryable {
                    let status = if f.is_timeout() { 504 } else { 502 };
                    return local_response(client, c, shared, status, false, Some(started)).await;
                }
            }
        }
    };
    lease.peer.succeed();
    if let Some(n) = buffered_len {
        c.buf.consume(n);
    }
    let status = c.resp.status;
    lease.peer.stats.count_status(status);

    // 101: become a tunnel.
    if status == 101 {
        return tunnel(client, conn, c, shared, head, lease, started).await;
    }
    let framing = c.resp.framing.unwrap_or(Framing::None);
    let http10 = c.info.minor == 0;
    let rechunk = framing == Framing::UntilClose && !http10 && c.info.keep_alive;
    let keep = c.info.keep_alive
        && !stop.is_triggered()
        && (framing != Framing::UntilClose || rechunk)
        && !(http10 && framing == Framing::Chunked);
    let side = ClientSide {
        http10,
        keep_alive: keep,
        upgrade: None,
        rechunk,
    };
    c.take_response_head(head, &side);
    let copied = copy_body(
        framing,
        &mut conn,
        &mut c.up_buf,
        client,
        &mut c.out,
        (http10 && framing == Framing::Chunked) || rechunk,
        &mut c.scratch,
        t.upstream_header,
        u64::MAX,
    )
    .await;
    match copied {
        Ok(bytes) => {
            if c.resp.reusable && c.up_buf.is_empty() {
                lease.peer.put_idle(conn);
            } else if c.resp.reusable {
                // Bytes past the response's end: never reused.
                lease
                    .peer
                    .stats
                    .pool_discards
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            drop(lease);
            finish(c, shared, status, bytes, Some(started));
            Ok(keep)
        }
        Err(e) => {
            let unsent = !c.out.is_empty();
            match e {
                CopyError::Bad => {
                    tracing::warn!(server = %lease.peer.config.name, "malformed chunked response body")
                }
                CopyError::Read => {
                    tracing::warn!(server = %lease.peer.config.name, "upstream response body ended early")
                }
                CopyError::Write | CopyError::TooLarge => {}
            }
            drop(lease);
            if unsent && !matches!(e, CopyError::Write) {
                // Nothing reached the client yet: it gets a 502, not a
                // truncated response.
                return local_response(client, c, shared, 502, false, Some(started)).await;
            }
            finish(c, shared, status, 0, Some(started));
            Ok(false)
        }
    }
}
