//! Running state: a [`Generation`] (one validated configuration compiled into
//! a router and live upstreams) behind an `ArcSwap`, so that a reload swaps it
//! atomically while in-flight requests finish on the generation they loaded.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

use shoal_core::Shutdown;

use crate::accesslog::AccessLog;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::upstream::Upstream;

/// One configuration, compiled.
pub struct Generation {
    pub config: Config,
    pub router: Router,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// Stops this generation's health checkers when it is replaced.
    pub tasks: Shutdown,
    /// Increases by one per reload.
    pub number: u64,
    /// Worker threads (each keeps its own idle upstream connections).
    pub workers: usize,
}

impl Generation {
    /// Compile `config` for `workers` worker threads; servers that also
    /// exist in `old` keep their counters.
    pub fn new(
        config: Config,
        old: Option<&Generation>,
        tasks: Shutdown,
        workers: usize,
    ) -> Generation {
        let upstreams = config
            .upstreams
            .iter()
            .map(|(name, u)| {
                let prev = old.and_then(|o| o.upstreams.get(name)).map(|a| a.as_ref());
                (
                    name.clone(),
                    Arc::new(Upstream::new(name, u, prev, workers)),
                )
            })
            .collect();
        Generation {
            router: Router::new(config.routes.clone()),
            upstreams,
            tasks,
            number: old.map_or(1, |o| o.number + 1),
            workers,
            config,
        }
    }

    /// JSON for `/status` and `{"cmd":"status"}`.
    pub fn status_json(&self, metrics: &Metrics) -> serde_json::Value {
        let mut ups: Vec<serde_json::Value> =
            self.upstreams.values().map(|u| u.status_json()).collect();
        ups.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        serde_json::json!({
            "generation": self.number,
            "workers": self.workers,
            "config": self.config.source.as_ref().map(|p| p.display().to_string()),
            "listeners": self.config.listeners.iter().map(|l| serde_json::json!({
                "address": l.address.to_string(),
                "protocol": format!("{:?}", l.protocol).to_lowercase(),
                "tls": !l.tls.is_empty(),
            })).collect::<Vec<_>>(),
            "active_connections": metrics.active_connections(),
            "requests_total": metrics.requests_total(),
            "upstreams": ups,
        })
    }
}

impl Shared {
    /// Make `config` the running generation after `old` (servers that stay
    /// keep their state), start its health checks; its number. Callers hold
    /// [`crate::discover::Discovery::hold`].
    pub fn install(&self, config: Config, old: &Generation) -> u64 {
        let gen = Generation::new(config, Some(old), self.shutdown.child(), old.workers);
        crate::health::start(&gen);
        let n = gen.number;
        self.current.store(Arc::new(gen));
        n
    }

    /// The `/status` JSON: the generation's upstreams and counters, plus
    /// the keep-alive connections between requests (nginx's "Waiting"):
    /// those waiting in their tasks and those parked without one.
    pub fn status_json(&self) -> serde_json::Value {
        let gen = self.current.load();
        let mut v = gen.status_json(&self.metrics);
        v["idle_connections"] = self.idle.iter().map(|s| s.len()).sum::<usize>().into();
        v["parked_connections"] = self.parked.iter().map(|p| p.len()).sum::<usize>().into();
        if !gen.config.discovery.is_empty() {
            v["discovery"] = self.discovery.status_json(&gen.config);
        }
        v
    }
}

/// What every connection task shares.
pub struct Shared {
    pub current: ArcSwap<Generation>,
    pub metrics: Arc<Metrics>,
    pub log: Option<AccessLog>,
    /// Fires on shutdown: idle keep-alive connections close.
    pub shutdown: Shutdown,
    /// Each worker's idle keep-alive connections.
    pub idle: crate::workers::PerWorker<crate::idle::IdleSet>,
    /// Each worker's parked connections (idle for a while, no task).
    pub parked: crate::workers::PerWorker<crate::idle::Parked>,
    /// How many client connections each worker may have open: its share of
    /// `limits.max_connections` (nginx's `worker_connections` is likewise
    /// per worker).
    pub worker_connections: i64,
    /// Signalled on a worker when a connection ends while it was full.
    pub room: crate::workers::PerWorker<tokio::sync::Notify>,
    /// Servers found over DNS, and the task's state that finds them.
    pub discovery: crate::discover::Discovery,
}
