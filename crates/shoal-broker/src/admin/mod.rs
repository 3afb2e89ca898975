//! Operation: the admin HTTP listener and the control-socket handler
//! behind `shoal ctl broker`.
//!
//! The listener serves `/metrics` (Prometheus text, [`prom`]) and, under
//! `/api/`, RabbitMQ 3.10's management HTTP API for what Shoal has: the
//! read views ([`views`]), the writes ([`writes`]), users, vhosts and
//! permissions ([`users`]), policies ([`policies`]), definitions export
//! and import ([`definitions`]) and the health checks ([`health`]), behind HTTP
//! basic auth with RabbitMQ's user tags ([`auth`]); message rates come from
//! a once-a-second sampler ([`rates`]); [`json`] holds the conversions.
//!
//! The listener is bounded: at most [`MAX_CONNECTIONS`] connections (more
//! wait in the accept backlog), request heads within [`HEADER_TIMEOUT`],
//! bodies of at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`], and a
//! connection lives at most [`CONN_LIFETIME`].

pub mod auth;
pub mod definitions;
pub mod health;
pub mod json;
pub mod policies;
pub mod prom;
pub mod rates;
pub mod users;
pub mod views;
pub mod writes;

use crate::error::{code, AmqpError};
use crate::server::Broker;
use auth::Caller;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use json::{shape_list, shape_one};
use rates::Rates;
use serde_json::{json, Value};
use shoal_core::Shutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use views::Ctx;

pub use prom::metrics_text;

/// Most admin HTTP connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest request body (definitions imports, publishes), as RabbitMQ's
/// default `management.http.max_body_size`.
pub const MAX_BODY: usize = 20 << 20;
/// Most bytes of an oversized body read and thrown away before the 413,
/// so that the client reads the answer instead of a reset connection.
pub const DRAIN_MAX: usize = 64 << 20;
/// Time allowed to send a request head (also the keep-alive idle limit).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest an admin connection is kept.
pub const CONN_LIFETIME: Duration = Duration::from_secs(300);

/// An error answer in RabbitMQ's shape: `{"error": ..., "reason": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
    /// Send `WWW-Authenticate` (no or wrong credentials only).
    challenge: bool,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            reason: reason.into(),
            challenge: false,
        }
    }

    /// 400.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    /// 401 with `WWW-Authenticate` (no or wrong credentials).
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        ApiError {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "not_authorised", reason)
        }
    }

    /// 401 without a challenge: authenticated, but its tags or permissions
    /// do not allow the request. RabbitMQ 3.x's `not_authorised` answers
    /// 401 there (its code notes 403 as a change for 4.0), and clients
    /// written against it test for 401.
    pub fn not_authorised(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "not_authorised", reason)
    }

    /// 404, RabbitMQ's body.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }

    fn not_allowed(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", reason)
    }

    fn response(self) -> Response<Full<Bytes>> {
        let body = json!({"error": self.error, "reason": self.reason});
        let mut r = respond(self.status, "application/json", body.to_string());
        if self.challenge {
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        r
    }
}

impl From<AmqpError> for ApiError {
    fn from(e: AmqpError) -> Self {
        match e.code {
            code::NOT_FOUND => Self::new(StatusCode::NOT_FOUND, "Object Not Found", e.text),
            code::ACCESS_REFUSED => Self::not_authorised(e.text),
            _ => Self::bad_request(e.text),
        }
    }
}

/// A successful answer.
pub struct Reply {
    status: StatusCode,
    body: Option<Value>,
    location: Option<String>,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json(v: Value) -> Self {
        Self::with_status(StatusCode::OK, v)
    }

    /// `status` with a JSON body.
    pub fn with_status(status: StatusCode, v: Value) -> Self {
        Reply {
            status,
            body: Some(v),
            location: None,
        }
    }

    /// 201, no body.
    pub fn created() -> Self {
        Reply {
            status: StatusCode::CREATED,
            body: None,
            location: None,
        }
    }

    /// 204.
    pub fn no_content() -> Self {
        Reply {
            status: StatusCode::NO_CONTENT,
            body: None,
            location: None,
        }
    }

    fn response(self) -> Response<Full<Bytes>> {
        let mut r = match self.body {
            Some(v) => respond(self.status, "application/json", v.to_string()),
            None => respond(self.status, "application/json", String::new()),
        };
        if let Some(l) = self
            .location
            .and_then(|l| hyper::header::HeaderValue::from_str(&l).ok())
        {
            r.headers_mut().insert(hyper::header::LOCATION, l);
        }
        r
    }
}

fn respond(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A percent-decoded path segment (`%2F` is the vhost `/`).
pub fn decode(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
            })
            .collect()
    })
    .unwrap_or_default()
}

struct State {
    b: Arc<Broker>,
    rates: Arc<Rates>,
}

/// Serve the admin HTTP listener until shutdown.
pub async fn serve(listener: TcpListener, b: Arc<Broker>, shutdown: Shutdown) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let rates = Arc::new(Rates::default());
    tokio::spawn(rates::run(rates.clone(), b.clone(), shutdown.clone()));
    let st = Arc::new(State { b, rates });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let st = st.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let st = st.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&st, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONN_LIFETIME, conn).await;
        });
    }
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
///
/// An oversized body is refused with 413 the way nginx refuses one: a
/// client that announced it with `Expect: 100-continue` is answered at
/// once and never sends it; any other client is already sending it, so the
/// rest is read and thrown away (at most [`DRAIN_MAX`] bytes, within
/// [`BODY_TIMEOUT`]) before the answer. Answering and closing mid-body
/// makes the kernel reset the connection, and clients that write the whole
/// body before reading (urllib, requests) then see "broken pipe" instead of
/// the 413.
async fn read_body(req: Request<hyper::body::Incoming>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_request",
            format!("request body larger than {MAX_BODY} bytes"),
        )
    };
    let timed_out = || {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            format!(
                "request body not received within {}s",
                BODY_TIMEOUT.as_secs()
            ),
        )
    };
    let announced = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = req
        .headers()
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if announced.is_some_and(|n| n > DRAIN_MAX as u64)
        || (expects_continue && announced.is_some_and(|n| n > MAX_BODY as u64))
    {
        return Err(too_large());
    }
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let mut body = req.into_body();
    let mut kept = bytes::BytesMut::new();
    let mut seen: usize = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!(
                    "cannot read the request body: {e}"
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= MAX_BODY {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_MAX {
            // Past what is worth reading to be polite: answer and close.
            return Err(too_large());
        }
    }
    if seen > MAX_BODY {
        return Err(too_large());
    }
    Ok(kept.freeze())
}

async fn handle(
    st: &State,
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query());
    let b = &st.b;
    match path.as_str() {
        "/metrics" | "/metrics/per-object" if method == Method::GET => {
            return respond(
                StatusCode::OK,
                shoal_core::metrics::CONTENT_TYPE,
                metrics_text(b, path.ends_with("per-object")),
            )
        }
        "/" | "/api" | "/api/" if method == Method::GET => {
            return respond(
                StatusCode::OK,
                "application/json",
                json!({"product_name": "Shoal", "management_api": "/api/ (RabbitMQ 3.10 management HTTP API; HTTP basic auth)",
                    "metrics": ["/metrics", "/metrics/per-object"]})
                .to_string(),
            )
        }
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/api/") else {
        return ApiError::not_found().response();
    };
    if ![Method::GET, Method::PUT, Method::POST, Method::DELETE].contains(&method) {
        return ApiError::not_allowed(format!(
            "{method} is not supported; use GET, PUT, POST or DELETE"
        ))
        .response();
    }
    let caller = match auth::authenticate(
        req.headers().get(hyper::header::AUTHORIZATION),
        peer,
        b.accounts(),
    ) {
        Ok(c) => c,
        Err(e) => return e.response(),
    };
    let body = if method == Method::PUT || method == Method::POST {
        match read_body(req).await {
            Ok(b) => b,
            Err(e) => return e.response(),
        }
    } else {
        Bytes::new()
    };
    let segs: Vec<String> = rest.trim_end_matches('/').split('/').map(decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let result = route(st, &caller, &method, &segs, &query, &body);
    match result {
        Ok(r) => r.response(),
        Err(e) => {
            tracing::debug!(%method, %path, status = %e.status, reason = %e.reason, "management API error");
            e.response()
        }
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("failed to parse JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// 404 for a missing vhost, 403 for one the caller may not see.
fn scoped(cx: &Ctx, c: &Caller, v: &str) -> Result<(), ApiError> {
    if cx.b.vhost(v).is_none() {
        return Err(ApiError::not_found());
    }
    if !c.sees_vhost(v) {
        return Err(ApiError::not_authorised(format!(
            "access to vhost '{v}' refused for user '{}'",
            c.name
        )));
    }
    Ok(())
}

fn find(rows: Vec<Value>, pred: impl Fn(&Value) -> bool) -> Result<Reply, ApiError> {
    rows.into_iter()
        .find(pred)
        .map(Reply::json)
        .ok_or_else(ApiError::not_found)
}

fn exchange_path_name(x: &str) -> &str {
    if x == "amq.default" {
        ""
    } else {
        x
    }
}

fn is(v: &Value, k: &str, want: &str) -> bool {
    v[k].as_str() == Some(want)
}

fn route(
    st: &State,
    c: &Caller,
    method: &Method,
    segs: &[&str],
    query: &[(String, String)],
    body: &[u8],
) -> Result<Reply, ApiError> {
    let b = &*st.b;
    let cx = Ctx {
        b,
        rates: &st.rates,
        caller: Some(c),
    };
    let list = |rows: Vec<Value>| shape_list(rows, query).map(Reply::json);
    let dtype = |t: &str| if t == "q" { "queue" } else { "exchange" };
    match (method.clone(), segs) {
        (Method::GET, ["overview"]) => Ok(Reply::json(shape_one(views::overview(&cx), query))),
        (Method::GET, ["whoami"]) => Ok(Reply::json(json!({"name": c.name, "tags": c.tags}))),
        (Method::GET, ["extensions"]) => Ok(Reply::json(json!([]))),
        (Method::GET, ["nodes"]) => {
            c.require_monitor()?;
            list(views::nodes(b))
        }
        (Method::GET, ["nodes", name]) => {
            c.require_monitor()?;
            find(views::nodes(b), |n| is(n, "name", name))
        }
        (Method::GET, ["vhosts"]) => list(views::vhosts(&cx)),
        (Method::GET, ["vhosts", v]) => {
            scoped(&cx, c, v)?;
            find(views::vhosts(&cx), |r| is(r, "name", v))
        }
        (Method::GET, ["vhosts", v, "permissions"]) => {
            c.require_admin()?;
            scoped(&cx, c, v)?;
            list(views::permissions(b, None, Some(v)))
        }
        (Method::GET, ["queues"]) => list(views::queues(&cx, None)),
        (Method::GET, ["queues", v]) => {
            scoped(&cx, c, v)?;
            list(views::queues(&cx, Some(v)))
        }
        (Method::GET, ["queues", v, q]) => {
            scoped(&cx, c, v)?;
            find(views::queues(&cx, Some(v)), |r| is(r, "name", q))
        }
        (Method::GET, ["queues", v, q, "bindings"]) => {
            scoped(&cx, c, v)?;
            writes::vhost(b, v)?
                .lock()
                .queues
                .get(*q)
                .ok_or_else(ApiError::not_found)?;
            list(
                views::bindings(&cx, Some(v))
                    .into_iter()
                    .filter(|r| is(r, "destination", q) && is(r, "destination_type", "queue"))
                    .collect(),
            )
        }
        (Method::PUT, ["queues", v, q]) => writes::put_queue(b, c, v, q, &parse_json(body)?),
        (Method::DELETE, ["queues", v, q]) => writes::delete_queue(b, c, v, q, query),
        (Method::DELETE, ["queues", v, q, "contents"]) => writes::purge(b, c, v, q),
        (Method::POST, ["queues", v, q, "get"]) => writes::get(b, c, v, q, &parse_json(body)?),
        (Method::GET, ["exchanges"]) => list(views::exchanges(&cx, None)),
        (Method::GET, ["exchanges", v]) => {
            scoped(&cx, c, v)?;
            list(views::exchanges(&cx, Some(v)))
        }
        (Method::GET, ["exchanges", v, x]) => {
            scoped(&cx, c, v)?;
            let x = exchange_path_name(x);
            find(views::exchanges(&cx, Some(v)), |r| is(r, "name", x))
        }
        (Method::GET, ["exchanges", v, x, "bindings", side @ ("source" | "destination")]) => {
            scoped(&cx, c, v)?;
            let x = exchange_path_name(x);
            if !x.is_empty() && !writes::vhost(b, v)?.lock().exchanges.contains_key(x) {
                return Err(ApiError::not_found());
            }
            list(
                views::bindings(&cx, Some(v))
                    .into_iter()
                    .filter(|r| {
                        if *side == "source" {
                            is(r, "source", x)
                        } else {
                            is(r, "destination", x) && is(r, "destination_type", "exchange")
                        }
                    })
                    .collect(),
            )
        }
        (Method::PUT, ["exchanges", v, x]) => writes::put_exchange(b, c, v, x, &parse_json(body)?),
        (Method::DELETE, ["exchanges", v, x]) => writes::delete_exchange(b, c, v, x, query),
        (Method::POST, ["exchanges", v, x, "publish"]) => {
            writes::publish(b, c, v, x, &parse_json(body)?)
        }
        (Method::GET, ["bindings"]) => list(views::bindings(&cx, None)),
        (Method::GET, ["bindings", v]) => {
            scoped(&cx, c, v)?;
            list(views::bindings(&cx, Some(v)))
        }
        (Method::GET, ["bindings", v, "e", s, t @ ("q" | "e"), d]) => {
            scoped(&cx, c, v)?;
            list(
                views::bindings(&cx, Some(v))
                    .into_iter()
                    .filter(|r| {
                        is(r, "source", s)
                            && is(r, "destination", d)
                            && is(r, "destination_type", dtype(t))
                    })
                    .collect(),
            )
        }
        (Method::POST, ["bindings", v, "e", s, t @ ("q" | "e"), d]) => {
            let p = writes::BindingPath {
                vhost: v,
                source: s,
                kind: t,
                dest: d,
            };
            writes::post_binding(b, c, &p, &parse_json(body)?)
        }
        (Method::GET, ["bindings", v, "e", s, t @ ("q" | "e"), d, props]) => {
            scoped(&cx, c, v)?;
            find(views::bindings(&cx, Some(v)), |r| {
                is(r, "source", s)
                    && is(r, "destination", d)
                    && is(r, "destination_type", dtype(t))
                    && (is(r, "properties_key", props)
                        || r["properties_key"].as_str().map(decode).as_deref() == Some(*props))
            })
        }
        (Method::DELETE, ["bindings", v, "e", s, t @ ("q" | "e"), d, props]) => {
            let p = writes::BindingPath {
                vhost: v,
                source: s,
                kind: t,
                dest: d,
            };
            writes::delete_binding(b, c, &p, props)
        }
        (Method::GET, ["connections"]) => list(views::connections(&cx)),
        (Method::GET, ["connections", name]) => {
            find(views::connections(&cx), |r| is(r, "name", name))
        }
        (Method::GET, ["channels"]) => list(views::channels(&cx)),
        (Method::GET, ["consumers"]) => list(views::consumers(&cx, None)),
        (Method::GET, ["consumers", v]) => {
            scoped(&cx, c, v)?;
            list(views::consumers(&cx, Some(v)))
        }
        (Method::GET, ["users"]) => {
            c.require_admin()?;
            list(views::users(b))
        }
        (Method::GET, ["users", u]) => {
            c.require_admin()?;
            find(views::users(b), |r| is(r, "name", u))
        }
        (Method::GET, ["users", u, "permissions"]) => {
            c.require_admin()?;
            list(views::permissions(b, Some(u), None))
        }
        (Method::GET, ["permissions"]) => {
            c.require_admin()?;
            list(views::permissions(b, None, None))
        }
        (Method::GET, ["permissions", v, u]) => {
            c.require_admin()?;
            find(views::permissions(b, Some(u), Some(v)), |_| true)
        }
        (Method::GET, ["definitions"]) => {
            c.require_admin()?;
            Ok(Reply::json(definitions::export(b, None)))
        }
        (Method::GET, ["definitions", v]) => {
            c.require_admin()?;
            writes::vhost(b, v)?;
            Ok(Reply::json(definitions::export(b, Some(v))))
        }
        (Method::POST, ["definitions"]) => {
            c.require_admin()?;
            definitions::import(b, None, body)
        }
        (Method::POST, ["definitions", v]) => {
            c.require_admin()?;
            writes::vhost(b, v)?;
            definitions::import(b, Some(v), body)
        }
        (Method::GET, ["health", "checks", rest @ ..]) => health::check(b, rest),
        (Method::GET, ["aliveness-test", v]) => {
            writes::vhost(b, v)?;
            c.require_vhost(v)?;
            health::aliveness(b, v)
        }
        (Method::PUT, ["users", u]) => users::put_user(b, c, u, &parse_json(body)?),
        (Method::DELETE, ["users", u]) => users::delete_user(b, c, u),
        (Method::PUT, ["vhosts", v]) => {
            parse_json(body)?;
            users::put_vhost(b, c, v)
        }
        (Method::DELETE, ["vhosts", v]) => users::delete_vhost(b, c, v),
        (Method::PUT, ["permissions", v, u]) => {
            users::put_permission(b, c, v, u, &parse_json(body)?)
        }
        (Method::DELETE, ["permissions", v, u]) => users::delete_permission(b, c, v, u),
        (Method::GET, ["policies"]) => list(policies::list(b, c, None)?),
        (Method::GET, ["policies", v]) => list(policies::list(b, c, Some(v))?),
        (Method::GET, ["policies", v, name]) => policies::get(b, c, v, name),
        (Method::PUT, ["policies", v, name]) => policies::put(b, c, v, name, &parse_json(body)?),
        (Method::DELETE, ["policies", v, name]) => policies::delete(b, c, v, name),
        (Method::DELETE, ["connections", _]) => Err(ApiError::not_allowed(
            "closing connections through the API is not supported",
        )),
        _ => Err(ApiError::not_found()),
    }
}

/// Control-socket requests: `status`/`overview`, `list-queues`,
/// `list-exchanges` (with each exchange's binding count),
/// `list-connections`, and `stop` (triggers `stop`: the same graceful stop
/// as SIGTERM).
pub fn control(b: &Broker, req: Value, stop: &shoal_core::Shutdown) -> Value {
    use shoal_core::control::{err, ok};
    let rates = Rates::default();
    let cx = Ctx {
        b,
        rates: &rates,
        caller: None,
    };
    match req.get("cmd").and_then(Value::as_str) {
        Some("stop") => {
            stop.trigger();
            ok(json!({"stopping": true}))
        }
        Some("list-queues") => ok(json!({"queues": views::queues(&cx, None)})),
        Some("list-exchanges") => {
            let mut rows = views::exchanges(&cx, None);
            for r in &mut rows {
                let (Some(v), Some(n)) = (r["vhost"].as_str(), r["name"].as_str()) else {
                    continue;
                };
                let Some(vh) = b.vhost(v) else { continue };
                let g = vh.lock();
                let count = if n.is_empty() {
                    g.queues.len()
                } else {
                    g.exchanges.get(n).map_or(0, |x| x.bindings.len())
                };
                r["bindings"] = json!(count);
            }
            ok(json!({ "exchanges": rows }))
        }
        Some("list-connections") => ok(json!({"connections": b.connections()})),
        Some("overview") | Some("status") => ok(views::overview(&cx)),
        Some(other) => err(format!("unknown command {other:?}: the broker answers status, overview, list-queues, list-exchanges, list-connections and stop (as `shoal ctl --name NAME broker list-queues`, `shoal ctl --name NAME stop`; see shoal ctl broker --help)")),
        None => err("missing \"cmd\""),
    }
}
