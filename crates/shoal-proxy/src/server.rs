//! The server: binds listeners (HTTP, TCP, optionally TLS), the admin
//! listener and the control socket; runs accept loops under a connection cap;
//! reloads on SIGHUP or `{"cmd":"reload"}`; stops gracefully on shutdown.

use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};

use shoal_core::{control, Shutdown};

use crate::accesslog::AccessLog;
use crate::config::Config;
use crate::error::{ProxyError, Result};
use crate::listener::{self, ListenerSet, Pending};
use crate::metrics::Metrics;
use crate::servers::{self, ServerEdit};
use crate::state::{Generation, Shared};
use crate::workers::{self, Workers};

/// A bound, not yet running proxy.
pub struct Server {
    shared: Arc<Shared>,
    pending: Vec<Pending>,
    listeners: Arc<ListenerSet>,
    admin: Option<TcpListener>,
    control: Option<(UnixListener, PathBuf)>,
    /// Dropped last: stops the worker threads.
    workers: Workers,
}

impl Server {
    /// Bind everything `config` asks for and start the worker threads
    /// (`config.workers`, one per core when 0). Port 0 picks a free port (see
    /// [`Server::local_addrs`]).
    pub async fn bind(config: Config) -> Result<Server> {
        config.check()?;
        let n = workers::resolve_count(config.workers);
        let metrics = Arc::new(Metrics::new(n));
        let shutdown = Shutdown::new();
        let mut pending = Vec::new();
        for l in &config.listeners {
            pending.push(listener::bind(
                l,
                &shutdown,
                config.timeouts.client_header,
                n,
            )?);
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
        let log = match &config.access_log {
            Some(p) => Some(
                AccessLog::open(p, metrics.clone())
                    .await
                    .map_err(ProxyError::Io)?,
            ),
            None => None,
        };
        let worker_connections = config.limits.max_connections.div_ceil(n).max(1) as i64;
        let workers = Workers::start(n).map_err(ProxyError::Io)?;
        tracing::debug!(workers = n, "worker threads started");
        let discovery = crate::discover::Discovery::new(metrics.clone());
        let mut config = config;
        discovery.start(&mut config).await;
        let gen = Generation::new(config, None, shutdown.child(), n);
        let shared = Arc::new(Shared {
            current: arc_swap::ArcSwap::from_pointee(gen),
            metrics,
            log,
            shutdown,
            idle: workers::PerWorker::new(n),
            parked: workers::PerWorker::new(n),
            worker_connections,
            room: workers::PerWorker::new(n),
            discovery,
        });
        for h in workers.handles() {
            h.spawn(crate::idle::sweeper(shared.clone()));
        }
        let listeners = Arc::new(ListenerSet {
            live: Mutex::new(Vec::new()),
            workers: workers.handles(),
        });
        Ok(Server {
            shared,
            pending,
            listeners,
            admin,
            control,
            workers,
        })
    }

    /// The addresses the listeners got, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.pending
            .iter()
            .map(|p| p.live.ctx.load().local)
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
            listeners: self.listeners.clone(),
        }
    }

    fn handle_for(&self, shared: &Arc<Shared>) -> Handle {
        Handle {
            shared: shared.clone(),
            listeners: self.listeners.clone(),
        }
    }

    /// Serve until `shutdown` fires, then let in-flight requests finish
    /// (up to the configured grace period).
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let shared = self.shared.clone();
        let cfg = shared.current.load();
        let grace = cfg.config.timeouts.shutdown_grace;
        drop(cfg);
        crate::health::start(&shared.current.load());
        let handle = self.handle_for(&shared);
        let mut tasks = Vec::new();
        for p in self.pending {
            tasks.extend(self.listeners.start(p, &shared));
        }
        tracing::info!(workers = self.workers.len(), "worker threads serving");
        tasks.push(tokio::spawn(crate::discover::run(
            shared.clone(),
            shutdown.clone(),
        )));
        if let Some(a) = self.admin {
            tracing::info!(address = ?a.local_addr().ok(), "admin listening (/metrics, /status, /api/upstreams)");
            tasks.push(tokio::spawn(crate::admin::serve(
                a,
                handle.clone(),
                shutdown.clone(),
            )));
        }
        if let Some((l, path)) = self.control {
            let h = handle.clone();
            let stop = shutdown.clone();
            tracing::info!(path = %path.display(), "control socket ready");
            tasks.push(tokio::spawn(control::serve(
                l,
                path,
                shutdown.clone(),
                move |req| {
                    let h = h.clone();
                    let stop = stop.clone();
                    async move {
                        if req["cmd"] == "stop" {
                            // The same graceful stop as SIGTERM.
                            stop.trigger();
                            return control::ok(serde_json::json!({ "stopping": true }));
                        }
                        h.control(&req)
                    }
                },
            )));
        }
        let hup = {
            let h = handle.clone();
            let sd = shutdown.clone();
            let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = sd.cancelled() => return,
                        s = sig.recv() => if s.is_none() { return },
                    }
                    // Without a file of its own (the quick CLI form, or a
                    // proxy inside `shoal up`, whose topology reloads it)
                    // there is nothing to re-read; the signal is still
                    // caught, so it never ends the process.
                    if h.shared.current.load().config.source.is_none() {
                        tracing::debug!("SIGHUP: no config file to re-read");
                        continue;
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
        let metrics = shared.metrics.clone();
        let all_closed = async move {
            while metrics.active_connections() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        if !shoal_core::shutdown::within_grace(grace, all_closed).await {
            tracing::warn!(?grace, "grace period over; closing remaining connections");
        }
        Ok(())
    }
}

/// Reload and inspect a running proxy.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    listeners: Arc<ListenerSet>,
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
        let _hold = self.shared.discovery.hold();
        let old = self.shared.current.load_full();
        let Some(path) = old.config.source.clone() else {
            return Err(ProxyError::Reload(
                "started without --config; nothing to re-read".into(),
            ));
        };
        let mut new = Config::load(&path)?;
        new.control_name = old.config.control_name.clone();
        self.apply_locked(new)
    }

    /// Swap in `new` as the next generation. Listeners are added, removed
    /// or updated (TLS files re-read) to match; `admin`, `access_log` and
    /// `limits.max_connections` need a restart. Must run inside the runtime.
    pub fn apply(&self, new: Config) -> Result<u64> {
        let _hold = self.shared.discovery.hold();
        self.apply_locked(new)
    }

    /// [`Handle::apply`] with [`crate::discover::Discovery::hold`] held:
    /// one generation change at a time (reloads, runtime edits, DNS).
    fn apply_locked(&self, new: Config) -> Result<u64> {
        new.check()?;
        // Servers found over DNS carry over.
        let new = self.shared.discovery.adopt(new);
        let old = self.shared.current.load_full();
        if new.admin != old.config.admin
            || new.access_log != old.config.access_log
            || new.limits.max_connections != old.config.limits.max_connections
        {
            return Err(ProxyError::Reload(
                "admin, access_log and limits.max_connections cannot change on reload; restart the proxy for that"
                    .into(),
            ));
        }
        let mut new = new;
        if new.workers != old.config.workers {
            // Also the case when --threads overrode the file at startup.
            tracing::warn!(
                running = old.workers,
                "the worker count changes only on restart; keeping the running workers"
            );
            new.workers = old.config.workers;
        }
        let plan =
            self.listeners
                .prepare(&new.listeners, new.timeouts.client_header, &self.shared)?;
        let n = self.shared.install(new, &old);
        self.listeners.commit(plan, &self.shared);
        old.tasks.trigger();
        Ok(n)
    }

    /// What every connection task shares (the running generation, metrics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Change one upstream's servers (see [`crate::servers`]) and swap the
    /// result in as the next generation. Returns the server's settings.
    pub fn edit_servers(&self, upstream: &str, edit: &ServerEdit) -> Result<serde_json::Value> {
        let _hold = self.shared.discovery.hold();
        let mut config = self.shared.current.load().config.clone();
        let shown = servers::apply(&mut config, upstream, edit)?;
        let n = self.apply_locked(config)?;
        tracing::info!(upstream, edit = ?edit, generation = n, "upstream servers changed at runtime");
        Ok(shown)
    }

    /// The status document.
    pub fn status(&self) -> serde_json::Value {
        self.shared.status_json()
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
            Some("add-server" | "set-server" | "drain-server" | "remove-server") => {
                match ServerEdit::from_request(req) {
                    Ok((upstream, edit)) => match self.edit_servers(&upstream, &edit) {
                        Ok(server) => control::ok(serde_json::json!({ "server": server })),
                        Err(e) => control::err(e),
                    },
                    Err(e) => control::err(e),
                }
            }
            Some(other) => control::err(format!(
                "unknown command {other:?} (the proxy answers status, reload, stop, add-server, set-server, drain-server and remove-server)"
            )),
            None => control::err("missing cmd"),
        }
    }
}

/// Bind and serve `config` until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<()> {
    Server::bind(config).await?.run(shutdown).await
}
