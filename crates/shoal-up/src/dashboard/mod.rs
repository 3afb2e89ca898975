//! The dashboard: a small HTTP server (`[dashboard] listen`) with one HTML
//! page that shows every part of the topology live, and the JSON it reads.
//!
//! - `GET /` the page, `/dashboard.js` and `/dashboard.css` its script and
//!   style: plain files built into the binary (`include_str!`), no build
//!   step, nothing fetched from elsewhere.
//! - `GET /api/status` the topology's status: the same JSON as `shoal ctl
//!   --json status` (the control socket's `status`), computed at most twice
//!   a second however many pages poll it.
//!
//! The page polls `/api/status` every second and redraws in place (no
//! reload); rates (requests/s, messages/s, packets/s) are computed in the
//! page from two consecutive samples. Bounded: at most
//! [`MAX_CONNECTIONS`] connections (more are closed at once), a request's
//! head must arrive within [`HEAD_TIMEOUT`], a response not taken by the
//! client within [`WRITE_TIMEOUT`] drops the connection, and a connection
//! lives at most [`MAX_LIFETIME`] (the page reconnects by itself).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use shoal_core::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};

use crate::control::Topology;
use crate::error::UpError;

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a request's head may take to arrive (also the keep-alive idle time).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to read a response before it is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection is kept.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// A status younger than this is served again instead of asked anew.
const FRESH: Duration = Duration::from_millis(500);

struct State {
    topology: Topology,
    cache: Mutex<Option<(Instant, Bytes)>>,
}

impl State {
    async fn status(&self) -> Bytes {
        let mut cache = self.cache.lock().await;
        if let Some((at, body)) = cache.as_ref() {
            if at.elapsed() < FRESH {
                return body.clone();
            }
        }
        let v = crate::control::handle(&self.topology, json!({"cmd": "status"})).await;
        let body = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        *cache = Some((Instant::now(), body.clone()));
        body
    }
}

/// Bind `addr` and serve the dashboard until `shutdown` fires; the bound address.
/// (Not async: a reload restarts the dashboard, and the dashboard's answers
/// run a reload's code, so an async `start` would be a future that contains
/// itself.)
pub fn start(
    addr: SocketAddr,
    topology: Topology,
    shutdown: Shutdown,
) -> Result<SocketAddr, UpError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(TcpListener::from_std)
        .map_err(|e| UpError::start("dashboard", "listen", format!("cannot bind {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let state = Arc::new(State {
        topology,
        cache: Mutex::new(None),
    });
    tokio::spawn(accept_loop(listener, state, shutdown));
    Ok(bound)
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("dashboard: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "dashboard: {MAX_CONNECTIONS} connections already; closed");
            continue;
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let io = hyper_util::rt::TokioIo::new(WriteDeadline::new(stream, WRITE_TIMEOUT));
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                r = &mut conn => if let Err(e) = r {
                    tracing::debug!(%peer, "dashboard connection: {e}");
                },
                _ = tokio::time::sleep(MAX_LIFETIME) => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn reply(status: StatusCode, kind: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = kind.parse() {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

async fn route(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "the dashboard answers GET only\n",
        );
    }
    match req.uri().path() {
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/dashboard.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
        "/dashboard.css" => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/api/status" => reply(StatusCode::OK, "application/json", state.status().await),
        other => {
            let v: Value = json!({"error": format!("no such page {other:?}"),
                                  "pages": ["/", "/api/status"]});
            reply(
                StatusCode::NOT_FOUND,
                "application/json",
                serde_json::to_vec(&v).unwrap_or_default(),
            )
        }
    }
}

mod deadline;
use deadline::WriteDeadline;
