//! The collector's runtime: binds everything, runs the receive threads, the
//! flush loop (timer, `{"cmd":"flush"}` on the control socket, and a last
//! flush at shutdown), the Prometheus HTTP endpoint and the TCP line input,
//! and the mapping file (reloaded by [`MappingReload`], on SIGHUP or the
//! control socket's `{"cmd":"reload"}`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::aggregate::{ingest, BadSample, Interval, KeyBuf, Shard};
use super::config::Config;
use super::flush::{Snapshot, State};
use super::health::{self, Health};
use super::mapping::{Mapper, MappingError};
use super::{graphite, json as json_sink, prometheus, receive};
use crate::error::{io_err, Error, Result};
use shoal_core::Shutdown;

/// Longest line accepted on the TCP input.
pub const MAX_TCP_LINE: usize = 65_536;

/// What the server shares between its tasks.
struct Shared {
    shards: Vec<Arc<Shard>>,
    bad: Arc<BadSample>,
    inodes: Vec<u64>,
    rcvbuf_base: u64,
    /// The last flush, and the mapping it was made with.
    last: Mutex<(Arc<Snapshot>, Arc<Mapper>)>,
    /// The mapping in force (swapped on reload).
    mapper: Arc<ArcSwap<Mapper>>,
    /// How to reload it, when a file was given.
    reload: Option<MappingReload>,
    /// The flush state's series figures, as of the last flush.
    kept: KeptSeries,
    /// Name collisions met while rendering `/metrics`.
    collisions: prometheus::Collisions,
}

/// What the flush state keeps, published after each flush.
#[derive(Default)]
struct KeptSeries {
    series: AtomicU64,
    dropped: AtomicU64,
    expired: AtomicU64,
}

impl Shared {
    fn health(&self) -> Health {
        let mut h = Health::collect(&self.shards, &self.inodes, self.rcvbuf_base);
        h.series = self.kept.series.load(Ordering::Relaxed);
        h.series_dropped += self.kept.dropped.load(Ordering::Relaxed);
        h.series_expired = self.kept.expired.load(Ordering::Relaxed);
        h
    }
}

/// A started collector: where it listens, and the task to await.
pub struct Running {
    /// The bound UDP addresses (one per configured address).
    pub udp: Vec<SocketAddr>,
    /// The bound TCP address.
    pub tcp: Option<SocketAddr>,
    /// The bound Prometheus address.
    pub http: Option<SocketAddr>,
    /// The control socket.
    pub control: Option<PathBuf>,
    /// Reloads the mapping file, if one was given.
    pub mapping: Option<MappingReload>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    /// Wait until the collector has stopped (after `shutdown` fired and the
    /// last interval was flushed).
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| Error::Invalid(format!("collector task failed: {e}")))?
    }
}

/// Rereads the mapping file into the running collector: the new mapping
/// applies from the next flush (and scrape) on; a file that cannot be used
/// is refused, and the mapping in force stays.
#[derive(Clone)]
pub struct MappingReload {
    path: PathBuf,
    current: Arc<ArcSwap<Mapper>>,
}

impl MappingReload {
    /// Reread the file; returns how many mappings it has.
    pub fn reload(&self) -> std::result::Result<usize, MappingError> {
        let m = Mapper::load(&self.path)?;
        let n = m.len();
        self.current.store(Arc::new(m));
        Ok(n)
    }

    /// The mapping file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Bind a TCP listener, naming the address on failure.
async fn bind_tcp(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = l.local_addr().map_err(io_err("read the bound address"))?;
    Ok((l, bound))
}

/// Bind and start the collector; returns once every socket is bound. Every
/// socket is bound before any thread or task starts, so a failure leaves
/// nothing running.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running> {
    let mapper = match &config.mapping {
        Some(p) => Mapper::load(p).map_err(|e| Error::Invalid(e.to_string()))?,
        None => Mapper::default(),
    };
    let mappings = mapper.len();
    let mapper = Arc::new(ArcSwap::from_pointee(mapper));
    let reload = config.mapping.as_ref().map(|p| MappingReload {
        path: p.clone(),
        current: mapper.clone(),
    });
    let mut udp = Vec::new();
    let mut sockets = Vec::new();
    for addr in &config.udp {
        let socks = receive::bind_sockets(*addr, config.sockets, config.receive_buffer)?;
        udp.push(
            socks[0]
                .local_addr()
                .map_err(io_err("read the bound address"))?,
        );
        sockets.extend(socks);
    }
    let tcp = match config.tcp {
        Some(addr) => Some(bind_tcp(addr).await?),
        None => None,
    };
    let http = match config.http {
        Some(addr) => Some(bind_tcp(addr).await?),
        None => None,
    };
    let control_listener = match &config.control {
        Some(path) => Some((
            shoal_core::control::bind(path)
                .await
                .map_err(io_err(format!("bind control socket {}", path.display())))?,
            path.clone(),
        )),
        None => None,
    };

    // Everything is bound: start the receive threads, one shard each.
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(BadSample::default());
    let mut shards = Vec::new();
    let mut threads = Vec::new();
    let mut inodes = Vec::new();
    for sock in sockets {
        use std::os::fd::AsFd;
        inodes.extend(health::socket_inode(sock.as_fd()));
        let shard = Arc::new(new_shard(config.max_series));
        shards.push(shard.clone());
        let (bad, stop_flag, max) = (bad.clone(), stop.clone(), config.max_datagram);
        let relay = match config.relay {
            Some(addr) => Some(
                receive::relay_socket(addr)
                    .map_err(io_err(format!("open the relay socket to {addr}")))?,
            ),
            None => None,
        };
        match std::thread::Builder::new()
            .name("stats-recv".into())
            .spawn(move || receive::receive_loop(sock, shard, bad, stop_flag, max, relay))
        {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(io_err("spawn a receive thread")(e));
            }
        }
    }
    // The TCP input feeds its own shard.
    let tcp_shard = Arc::new(new_shard(config.max_series));
    shards.push(tcp_shard.clone());
    let shared = Arc::new(Shared {
        shards,
        bad,
        inodes,
        rcvbuf_base: health::host_rcvbuf_errors(),
        last: Mutex::new((Arc::new(Snapshot::default()), mapper.load_full())),
        mapper,
        reload: reload.clone(),
        kept: KeptSeries::default(),
        collisions: prometheus::Collisions::default(),
    });
    let tcp = tcp.map(|(l, bound)| {
        tokio::spawn(serve_tcp(
            l,
            tcp_shard,
            shared.bad.clone(),
            shutdown.clone(),
        ));
        bound
    });
    let http = http.map(|(l, bound)| {
        tokio::spawn(serve_http(l, shared.clone(), shutdown.clone()));
        bound
    });
    let (flush_tx, flush_rx) = mpsc::channel::<oneshot::Sender<serde_json::Value>>(8);
    let control = control_listener.map(|(l, path)| {
        let (shared, stopper) = (shared.clone(), shutdown.clone());
        tokio::spawn(shoal_core::control::serve(
            l,
            path.clone(),
            shutdown.clone(),
            move |req| {
                let (shared, flush_tx, stopper) =
                    (shared.clone(), flush_tx.clone(), stopper.clone());
                async move { control(req, &shared, &flush_tx, &stopper).await }
            },
        ));
        path
    });
    tracing::info!(udp = ?udp, tcp = ?tcp, http = ?http, sockets = config.sockets, flush = ?config.flush, mappings, "stats collector listening");
    let task = tokio::spawn(flush_loop(
        config, shared, shutdown, flush_rx, stop, threads,
    ));
    Ok(Running {
        udp,
        tcp,
        http,
        control,
        mapping: reload,
        task,
    })
}

fn new_shard(max_series: usize) -> Shard {
    Shard {
        interval: parking_lot::Mutex::new(Interval::with_limit(max_series)),
        stats: Default::default(),
    }
}

/// Run the collector until `shutdown` fires, then flush the last interval.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<()> {
    start(config, shutdown).await?.wait().await
}

/// The control socket's commands: `status` (health), `flush` (now; replies
/// with the interval's summary), `stop` (stop receiving, flush, exit).
async fn control(
    req: serde_json::Value,
    shared: &Shared,
    flush_tx: &mpsc::Sender<oneshot::Sender<serde_json::Value>>,
    stopper: &Shutdown,
) -> serde_json::Value {
    use shoal_core::control::{err, ok};
    match req["cmd"].as_str() {
        Some("status") | Some("health") => {
            ok(json!({ "health": shared.health(), "last_bad_line": shared.bad.get() }))
        }
        Some("flush") => {
            let (tx, rx) = oneshot::channel();
            if flush_tx.send(tx).await.is_err() {
                return err("the collector is stopping");
            }
            match rx.await {
                Ok(v) => ok(v),
                Err(_) => err("the collector stopped before flushing"),
            }
        }
        Some("reload") => match &shared.reload {
            None => err("no mapping file was given (--mapping-config)"),
            Some(r) => match r.reload() {
                Ok(n) => {
                    tracing::info!(file = %r.path().display(), mappings = n, "mapping file reloaded");
                    ok(json!({ "file": r.path().display().to_string(), "mappings": n }))
                }
                Err(e) => {
                    tracing::error!(error = %e, "mapping file refused; the previous mapping stays");
                    err(e.to_string())
                }
            },
        },
        Some("stop") => {
            stopper.trigger();
            ok(json!({ "stopping": true }))
        }
        Some(other) => err(format!(
            "unknown command {other:?} (try status, flush, reload, stop)"
        )),
        None => err("missing cmd"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn flush_loop(
    config: Config,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    mut requests: mpsc::Receiver<oneshot::Sender<serde_json::Value>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
) -> Result<()> {
    let mut state = State::new(config.rules.clone());
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + config.flush, config.flush);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev_health = Health::default();
    let mut prev_own = Health::default();
    let mut started = Instant::now();
    loop {
        let reply = tokio::select! {
            _ = ticker.tick() => None,
            Some(r) = requests.recv() => Some(r),
            _ = shutdown.cancelled() => break,
        };
        // A scheduled flush uses the configured interval for rates (as
        // statsd does); an on-demand one uses the time actually elapsed.
        let secs = match reply {
            None => config.flush.as_secs_f64(),
            Some(_) => started.elapsed().as_secs_f64(),
        };
        started = Instant::now();
        let summary = flush_once(
            &config,
            &shared,
            &mut state,
            (&mut prev_health, &mut prev_own),
            secs,
        )
        .await;
        if let Some(r) = reply {
            let _ = r.send(summary);
        }
    }
    // Stop the receivers, then flush what they collected.
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    flush_once(
        &config,
        &shared,
        &mut state,
        (&mut prev_health, &mut prev_own),
        secs,
    )
    .await;
    tracing::info!("stats collector stopped after the last flush");
    Ok(())
}

/// Take every shard's interval, compute the snapshot, publish it to every
/// sink, log the one-line summary. Returns the summary as JSON.
async fn flush_once(
    config: &Config,
    shared: &Shared,
    state: &mut State,
    (prev_health, prev_own): (&mut Health, &mut Health),
    secs: f64,
) -> serde_json::Value {
    let mut intervals: Vec<Interval> = shared
        .shards
        .iter()
        .map(|s| {
            let mut g = s.interval.lock();
            let fresh = Interval::sized_like(&g);
            std::mem::replace(&mut *g, fresh)
        })
        .collect();
    if config.statsd_health {
        let now = shared.health();
        intervals.push(statsd_health_interval(&now.since(prev_own)));
        *prev_own = now;
    }
    let mapper = shared.mapper.load_full();
    state.set_mapper(mapper.clone());
    let snap = Arc::new(state.flush(intervals, secs, unix_now()));
    shared
        .kept
        .series
        .store(state.series() as u64, Ordering::Relaxed);
    shared
        .kept
        .dropped
        .store(state.series_dropped, Ordering::Relaxed);
    shared
        .kept
        .expired
        .store(state.series_expired, Ordering::Relaxed);
    let health = shared.health();
    let delta = health.since(prev_health);
    *prev_health = health.clone();
    *shared.last.lock() = (snap.clone(), mapper);
    if config.json {
        // Through the bounded output queue: a reader of stdout that is slow
        // or stuck costs JSON lines (counted), never the flush task.
        let mut line = json_sink::to_json(&snap, &delta).to_string();
        line.push('\n');
        shoal_core::output::stdout(line.as_bytes());
    }
    if let Some(addr) = &config.graphite {
        let payload = graphite::render(&snap, &delta);
        if let Err(e) = graphite::send(addr, &payload).await {
            tracing::warn!(graphite = %addr, error = %e, "graphite flush failed");
        }
    }
    let last_bad = shared.bad.get();
    tracing::info!(
        counters = snap.counters.len(),
        gauges = snap.gauges.len(),
        timers = snap.timers.len(),
        sets = snap.sets.len(),
        packets = delta.packets,
        bytes = delta.bytes,
        metrics = delta.metrics,
        bad_lines = delta.bad_lines,
        oversized = delta.oversized,
        events = delta.events,
        service_checks = delta.service_checks,
        series_dropped = delta.series_dropped,
        series_expired = delta.series_expired,
        series_kept = delta.series,
        kernel_drops = delta.kernel_drops,
        last_bad_line = %last_bad,
        "flush"
    );
    json!({
        "timestamp": snap.timestamp,
        "series": snap.counters.len() + snap.gauges.len() + snap.timers.len() + snap.sets.len(),
        "interval": delta,
    })
}

/// The collector's counts of one interval as statsd's own counters (statsd
/// counts every line it sees as received, good or bad).
fn statsd_health_interval(d: &Health) -> Interval {
    let mut i = Interval::default();
    let lines = d.metrics + d.bad_lines + d.events + d.service_checks;
    for (key, n) in [
        ("statsd.packets_received", d.packets),
        ("statsd.metrics_received", lines),
        ("statsd.bad_lines_seen", d.bad_lines),
    ] {
        *i.counters.slot(key) += n as f64;
    }
    i
}

/// Connections served at once on each TCP listener (HTTP, statsd over TCP);
/// past it the listener stops accepting until one ends (the kernel's backlog
/// holds the rest).
pub const MAX_CONNECTIONS: usize = 1024;

/// The next connection and its slot, or `None` once `shutdown` fires.
async fn accept_next(
    listener: &TcpListener,
    shutdown: &Shutdown,
    slots: &Arc<tokio::sync::Semaphore>,
    what: &str,
) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return None,
            p = slots.clone().acquire_owned() => p.ok()?,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((s, peer)) => return Some((s, peer, permit)),
                Err(e) => {
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_http(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    while let Some((stream, _, permit)) = accept_next(&listener, &shutdown, &slots, "http").await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &shared)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            // A client that sends no complete request head in 30 s is dropped.
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
            drop(permit);
        });
    }
}

fn respond(req: &Request<hyper::body::Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => {
            let (snap, mapper) = shared.last.lock().clone();
            let text = prometheus::render_mapped(
                &snap,
                &mapper,
                &shared.health(),
                &shared.bad.get(),
                &shared.collisions,
            );
            (StatusCode::OK, shoal_core::metrics::CONTENT_TYPE, text)
        }
        "/" | "/health" => (
            StatusCode::OK,
            "text/plain",
            "shoal stats: see /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

async fn serve_tcp(
    listener: TcpListener,
    shard: Arc<Shard>,
    bad: Arc<BadSample>,
    shutdown: Shutdown,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    while let Some((stream, peer, permit)) = accept_next(&listener, &shutdown, &slots, "tcp").await
    {
        let (shard, bad, shutdown) = (shard.clone(), bad.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = tcp_connection(stream, &shard, &bad, &shutdown).await {
                tracing::debug!(%peer, error = %e, "statsd tcp connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Read newline-separated lines; a line longer than [`MAX_TCP_LINE`] is
/// counted as bad and skipped.
async fn tcp_connection(
    stream: TcpStream,
    shard: &Shard,
    bad: &BadSample,
    shutdown: &Shutdown,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    let mut key = KeyBuf::default();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_TCP_LINE as u64 + 1);
        let n = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = limited.read_until(b'\n', &mut line) => r?,
        };
        if n == 0 {
            return Ok(());
        }
        shard.stats.packets.fetch_add(1, Ordering::Relaxed);
        shard.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if line.len() > MAX_TCP_LINE {
            shard.stats.oversized.fetch_add(1, Ordering::Relaxed);
            // Skip the rest of the long line.
            if line.last() != Some(&b'\n') {
                let mut rest = Vec::new();
                loop {
                    rest.clear();
                    let m = (&mut reader)
                        .take(MAX_TCP_LINE as u64)
                        .read_until(b'\n', &mut rest)
                        .await?;
                    if m == 0 || rest.last() == Some(&b'\n') {
                        break;
                    }
                }
            }
            continue;
        }
        let mut interval = shard.interval.lock();
        // Read under the lock, so the TCP lines' times follow their order.
        let at = super::aggregate::now_ns();
        ingest(&line, at, &mut interval, &mut key, &shard.stats, bad);
    }
}
