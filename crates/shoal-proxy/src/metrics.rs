//! Proxy-wide counters and the Prometheus rendering of them plus every
//! upstream server's counters (requests by server and status class, failures,
//! health, active and idle connections, a latency histogram).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use shoal_core::metrics::{Kind, TextWriter};

use crate::state::Generation;
use crate::upstream::Peer;
use crate::workers::PerWorker;

/// Latency histogram bucket bounds, seconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Statuses the proxy answers itself (each gets a counter).
pub const LOCAL_STATUSES: [u16; 9] = [400, 404, 408, 431, 501, 502, 503, 504, 505];

/// What every request and connection updates, kept per worker (see
/// [`PerWorker`]).
#[derive(Default)]
pub struct RequestCounters {
    /// Client connections open now (HTTP and TCP); a worker's slot can go
    /// below zero only if a connection ended on another worker, never.
    active_connections: AtomicI64,
    /// Client connections accepted.
    connections: AtomicU64,
    /// Requests answered (any status).
    requests: AtomicU64,
    /// Latency histogram: counts per bucket (non-cumulative) + overflow.
    buckets: [AtomicU64; 13],
    latency_sum_us: AtomicU64,
}

/// Counters shared by every connection.
pub struct Metrics {
    /// Requests, by worker.
    per_request: PerWorker<RequestCounters>,
    /// Responses the proxy made itself, indexed like [`LOCAL_STATUSES`].
    pub local: [AtomicU64; 9],
    /// WebSocket/Upgrade tunnels opened.
    pub tunnels_total: AtomicU64,
    /// TCP-mode connections proxied.
    pub tcp_sessions_total: AtomicU64,
    /// Reloads applied / refused.
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Access-log lines dropped because the writer fell behind.
    pub log_dropped: AtomicU64,
    /// DNS lookups of discovery sources, by [`crate::discover::RESULTS`].
    pub dns_lookups: [AtomicU64; 3],
    /// Generations swapped in because DNS answers changed.
    pub dns_updates: AtomicU64,
}

impl Metrics {
    /// Zeroed counters for `workers` worker threads.
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            per_request: PerWorker::new(workers),
            local: Default::default(),
            tunnels_total: AtomicU64::new(0),
            tcp_sessions_total: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            log_dropped: AtomicU64::new(0),
            dns_lookups: Default::default(),
            dns_updates: AtomicU64::new(0),
        }
    }

    /// A client connection was accepted (on the calling worker).
    pub fn connection_opened(&self) {
        let c = self.per_request.local();
        c.active_connections.fetch_add(1, Ordering::Relaxed);
        c.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection accepted by the calling worker ended. Returns
    /// how many the worker had open before.
    pub fn connection_closed(&self) -> i64 {
        let c = self.per_request.local();
        c.active_connections.fetch_sub(1, Ordering::Relaxed)
    }

    /// Client connections open on the calling worker.
    pub fn local_active_connections(&self) -> i64 {
        self.per_request
            .local()
            .active_connections
            .load(Ordering::Relaxed)
    }

    /// Client connections open now.
    pub fn active_connections(&self) -> i64 {
        self.per_request
            .iter()
            .map(|c| c.active_connections.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests answered since start.
    pub fn requests_total(&self) -> u64 {
        self.per_request
            .iter()
            .map(|c| c.requests.load(Ordering::Relaxed))
            .sum()
    }

    /// Count a response the proxy made itself.
    pub fn local_status(&self, status: u16) {
        if let Some(i) = LOCAL_STATUSES.iter().position(|s| *s == status) {
            self.local[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Record one request's total time.
    pub fn observe(&self, d: Duration) {
        let c = self.per_request.local();
        c.requests.fetch_add(1, Ordering::Relaxed);
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        c.buckets[i].fetch_add(1, Ordering::Relaxed);
        c.latency_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Histogram bucket `i` summed over workers.
    fn bucket(&self, i: usize) -> u64 {
        self.per_request
            .iter()
            .map(|c| c.buckets[i].load(Ordering::Relaxed))
            .sum()
    }

    /// Render everything in the Prometheus text format.
    pub fn render(&self, gen: &Generation) -> String {
        let mut w = TextWriter::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        w.family(
            "shoal_proxy_active_connections",
            Kind::Gauge,
            "Client connections open now.",
        )
        .sample(
            "shoal_proxy_active_connections",
            &[],
            self.active_connections() as f64,
        );
        w.family(
            "shoal_proxy_connections_total",
            Kind::Counter,
            "Client connections accepted.",
        )
        .sample(
            "shoal_proxy_connections_total",
            &[],
            self.per_request
                .iter()
                .map(|c| c.connections.load(Ordering::Relaxed))
                .sum::<u64>() as f64,
        );
        w.family(
            "shoal_proxy_tunnels_total",
            Kind::Counter,
            "Upgrade (WebSocket) tunnels opened.",
        )
        .sample("shoal_proxy_tunnels_total", &[], g(&self.tunnels_total));
        w.family(
            "shoal_proxy_tcp_sessions_total",
            Kind::Counter,
            "TCP-mode connections proxied.",
        )
        .sample(
            "shoal_proxy_tcp_sessions_total",
            &[],
            g(&self.tcp_sessions_total),
        );
        w.family(
            "shoal_proxy_reloads_total",
            Kind::Counter,
            "Configuration reloads by result.",
        )
        .sample(
            "shoal_proxy_reloads_total",
            &[("result", "ok")],
            g(&self.reloads_ok),
        )
        .sample(
            "shoal_proxy_reloads_total",
            &[("result", "failed")],
            g(&self.reloads_failed),
        );
        let f = w.family(
            "shoal_proxy_dns_lookups_total",
            Kind::Counter,
            "DNS lookups of servers' names, services and DNS-SD types, by result (ok, empty, failed).",
        );
        for (r, n) in crate::discover::RESULTS.iter().zip(&self.dns_lookups) {
            f.sample("shoal_proxy_dns_lookups_total", &[("result", r)], g(n));
        }
        w.family(
            "shoal_proxy_dns_updates_total",
            Kind::Counter,
            "Generations swapped in because DNS answers changed the servers.",
        )
        .sample("shoal_proxy_dns_updates_total", &[], g(&self.dns_updates));
        w.family(
            "shoal_proxy_access_log_dropped_total",
            Kind::Counter,
            "Access log lines dropped (writer behind).",
        )
        .sample(
            "shoal_proxy_access_log_dropped_total",
            &[],
            g(&self.log_dropped),
        );
        w.family(
            "shoal_proxy_local_responses_total",
            Kind::Counter,
            "Responses the proxy made itself, by status.",
        );
        for (i, s) in LOCAL_STATUSES.iter().enumerate() {
            let code = s.to_string();
            w.sample(
                "shoal_proxy_local_responses_total",
                &[("code", &code)],
                g(&self.local[i]),
            );
        }
        w.family(
            "shoal_proxy_request_duration_seconds",
            Kind::Histogram,
            "Time from request head to response end.",
        );
        let mut cum = 0u64;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.bucket(i);
            let le = b.to_string();
            w.sample(
                "shoal_proxy_request_duration_seconds_bucket",
                &[("le", &le)],
                cum as f64,
            );
        }
        cum += self.bucket(BUCKETS.len());
        w.sample(
            "shoal_proxy_request_duration_seconds_bucket",
            &[("le", "+Inf")],
            cum as f64,
        );
        w.sample(
            "shoal_proxy_request_duration_seconds_sum",
            &[],
            self.per_request
                .iter()
                .map(|c| c.latency_sum_us.load(Ordering::Relaxed))
                .sum::<u64>() as f64
                / 1e6,
        );
        w.sample(
            "shoal_proxy_request_duration_seconds_count",
            &[],
            cum as f64,
        );

        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        w.family(
            "shoal_proxy_upstream_responses_total",
            Kind::Counter,
            "Upstream responses by server and status class.",
        );
        for (name, up) in &gen.upstreams {
            for p in up.peers() {
                for (i, c) in classes.iter().enumerate() {
                    w.sample(
                        "shoal_proxy_upstream_responses_total",
                        &[("upstream", name), ("server", &p.config.name), ("code", c)],
                        p.stats.responses(i) as f64,
                    );
                }
            }
        }
        let now = crate::upstream::now_ms();
        let b = |x: bool| if x { 1.0 } else { 0.0 };
        per_peer(
            &mut w,
            gen,
            "shoal_proxy_upstream_failures_total",
            Kind::Counter,
            "Failed attempts per upstream server.",
            |p| g(&p.stats.failures),
        );
        per_peer(
            &mut w,
            gen,
            "shoal_proxy_upstream_pool_discards_total",
            Kind::Counter,
            "Idle pooled connections closed because the server closed them, sent unrequested bytes, or idled past the limit.",
            |p| g(&p.stats.pool_discards),
        );
        per_peer(
            &mut w,
            gen,
            "shoal_proxy_upstream_up",
            Kind::Gauge,
            "1 when the server may get new traffic (not down or draining, healthy, not failed out).",
            |p| b(p.usable(now)),
        );
        per_peer(
            &mut w,
            gen,
            "shoal_proxy_upstream_draining",
            Kind::Gauge,
            "1 while the server is draining: no new requests, those in flight finish.",
            |p| b(p.config.drain),
        );
        per_peer(
            &mut w,
            gen,
            "shoal_proxy_upstream_healthy",
            Kind::Gauge,
            "Active health check verdict (1 without checks).",
            |p| b(p.healthy()),
        );
        per_peer(
            &mut w,
            gen,
            "shoal_proxy_upstream_active",
            Kind::Gauge,
            "Requests or connections in flight per server.",
            |p| p.active() as f64,
        );
        per_peer(
            &mut w,
            gen,
            "shoal_proxy_upstream_idle_connections",
            Kind::Gauge,
            "Idle keep-alive connections per server.",
            |p| p.idle_count() as f64,
        );
        w.finish()
    }
}

/// One family with a sample per upstream server.
fn per_peer(
    w: &mut TextWriter,
    gen: &Generation,
    family: &str,
    kind: Kind,
    help: &str,
    value: impl Fn(&Peer) -> f64,
) {
    w.family(family, kind, help);
    for (name, up) in &gen.upstreams {
        for p in up.peers() {
            w.sample(
                family,
                &[("upstream", name), ("server", &p.config.name)],
                value(p),
            );
        }
    }
}
