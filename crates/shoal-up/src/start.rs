//! The ordered start, the wait, and the ordered stop of a topology.
//!
//! Start: the control socket (so a second `shoal up` with the same name
//! fails before anything runs), then the broker and the collector, then each
//! cluster until all its workers are online (or `up.ready_timeout`), then the
//! proxy. Every address is tried before the part that binds it starts, so a
//! port in use is reported with the part and the key that named it. If any
//! part fails, the parts already started are stopped in reverse order and
//! the error is returned: nothing is left running.
//!
//! Stop (TERM/INT, `shoal ctl --name up stop`, or a part that ended on its
//! own): the proxy first, then the clusters (their workers drain within the
//! cluster's `grace`), then the broker and the collector, each waited for
//! within its grace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_cluster::{Cluster, ListenAddr};
use shoal_core::Shutdown;
use shoal_dgram::statsd;

use crate::config::{ClusterPlan, Plan};
use crate::error::UpError;
use crate::running::{stop_all, Done, Part, Parts};

/// What the control socket and the banner know of a running part.
#[derive(Clone)]
pub enum View {
    /// The statsd collector.
    Stats {
        /// UDP addresses.
        udp: Vec<SocketAddr>,
        /// Prometheus endpoint.
        http: Option<SocketAddr>,
        /// Its control socket.
        control: Option<PathBuf>,
        /// Rereads its mapping file, if it has one.
        mapping: Option<statsd::MappingReload>,
    },
    /// The broker.
    Broker {
        /// AMQP address.
        listen: SocketAddr,
        /// Admin HTTP address.
        admin: Option<SocketAddr>,
        /// Its control socket name.
        name: String,
    },
    /// A cluster.
    Cluster {
        /// The handle to its primary.
        cluster: Cluster,
        /// What it serves.
        serves: Vec<SocketAddr>,
        /// Its command line.
        command: String,
    },
    /// The proxy.
    Proxy {
        /// Its handle (status, reload).
        handle: shoal_proxy::Handle,
        /// Its listeners.
        listen: Vec<SocketAddr>,
        /// Its admin address.
        admin: Option<SocketAddr>,
    },
}

fn try_tcp(part: &str, key: String, a: SocketAddr) -> Result<(), UpError> {
    std::net::TcpListener::bind(a)
        .map(drop)
        .map_err(|e| UpError::start(part, key, format!("cannot bind {a}: {e}")))
}

fn try_udp(part: &str, key: String, a: SocketAddr) -> Result<(), UpError> {
    std::net::UdpSocket::bind(a)
        .map(drop)
        .map_err(|e| UpError::start(part, key, format!("cannot bind {a}: {e}")))
}

/// Start the statsd collector.
pub async fn start_stats(config: statsd::Config) -> Result<Part, UpError> {
    for (i, a) in config.udp.iter().enumerate() {
        try_udp("stats", format!("udp[{i}]"), *a)?;
    }
    if let Some(a) = config.tcp {
        try_tcp("stats", "tcp".into(), a)?;
    }
    if let Some(a) = config.http {
        try_tcp("stats", "http".into(), a)?;
    }
    let sd = Shutdown::new();
    let running = statsd::start(config, sd.clone()).await.map_err(|e| {
        let key = if e.to_string().contains("control socket") {
            "name"
        } else {
            "udp"
        };
        UpError::start("stats", key, e)
    })?;
    let view = View::Stats {
        udp: running.udp.clone(),
        http: running.http,
        control: running.control.clone(),
        mapping: running.mapping.clone(),
    };
    let done = tokio::spawn(async move { running.wait().await.map_err(|e| e.to_string()) });
    Ok(Part {
        label: "stats".into(),
        view,
        shutdown: sd,
        done: Done::new(done),
        thread: None,
        grace: Duration::from_secs(15),
    })
}

/// Start the broker and wait until it answers on its control socket.
pub async fn start_broker(config: shoal_broker::Config) -> Result<Part, UpError> {
    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| UpError::start("broker", "listen", format!("cannot bind {listen}: {e}")))?;
    if let Some(a) = config.admin_listen {
        try_tcp("broker", "admin_listen".into(), a)?;
    }
    let name = config.name.clone();
    let sock = shoal_core::control::socket_path(&name);
    let probe = json!({"cmd": "overview"});
    if shoal_core::control::request(&sock, &probe, Duration::from_secs(1))
        .await
        .is_ok()
    {
        return Err(UpError::start(
            "broker",
            "name",
            format!(
                "a broker already answers on control socket {} (give this one another name)",
                sock.display()
            ),
        ));
    }
    let view = View::Broker {
        listen: listener.local_addr().unwrap_or(listen),
        admin: config.admin_listen,
        name: name.clone(),
    };
    let sd = Shutdown::new();
    let sd2 = sd.clone();
    let mut done = tokio::spawn(async move {
        shoal_broker::serve(listener, config, sd2)
            .await
            .map_err(|e| e.to_string())
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if done.is_finished() {
            let cause = match (&mut done).await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => "it ended at once".to_string(),
                Err(e) => e.to_string(),
            };
            let key = if cause.contains("control socket") {
                "name"
            } else if cause.contains("admin") {
                "admin_listen"
            } else {
                "data_dir"
            };
            return Err(UpError::start("broker", key, cause));
        }
        if let Ok(v) = shoal_core::control::request(&sock, &probe, Duration::from_millis(500)).await
        {
            if v["ok"] == true {
                break;
            }
        }
        if Instant::now() > deadline {
            sd.trigger();
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
            return Err(UpError::start(
                "broker",
                "data_dir",
                "not ready after 15s (its control socket does not answer)",
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(Part {
        label: "broker".into(),
        view,
        shutdown: sd,
        done: Done::new(done),
        thread: None,
        grace: Duration::from_secs(15),
    })
}

/// Start a cluster on its own thread and wait until all its workers are online.
pub async fn start_cluster(
    plan: ClusterPlan,
    ready_timeout: Duration,
    root: &Shutdown,
) -> Result<Part, UpError> {
    let label = format!("cluster.{}", plan.table);
    let spec = plan.spec;
    for (i, l) in spec.listen.iter().enumerate() {
        if let (ListenAddr::Tcp(a), false) = (&l.addr, spec.reuse_port) {
            try_tcp(&label, format!("listen[{i}]"), *a)?;
        }
    }
    if let Some(a) = plan.lazy_port {
        try_tcp(&label, "env.PORT".into(), a)?;
    }
    let target = spec.workers;
    let grace = spec.grace + Duration::from_secs(5);
    let command = std::iter::once(&spec.exec)
        .chain(spec.args.iter())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let sd = Shutdown::new();
    let sd2 = sd.clone();
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    // The primary's own thread and runtime: the workers are tied to the
    // thread that forked them (PR_SET_PDEATHSIG), so it must live as long
    // as the cluster does.
    let thread = std::thread::Builder::new()
        .name(format!("up-{}", plan.table))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = handle_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let r = rt.block_on(async move {
                let (cluster, running) = match Cluster::new(spec, sd2.clone()).await {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                if let Err(e) = cluster.begin().await {
                    let _ = handle_tx.send(Err(e.to_string()));
                    sd2.trigger();
                    return running.wait().await.map_err(|e| e.to_string());
                }
                let _ = handle_tx.send(Ok(cluster));
                running.wait().await.map_err(|e| e.to_string())
            });
            let _ = done_tx.send(r);
        })
        .map_err(|e| UpError::start(&label, "command", format!("cannot start a thread: {e}")))?;
    let cluster = match handle_rx.await {
        Ok(Ok(c)) => c,
        Ok(Err(cause)) => {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            let key = if cause.contains("control socket") {
                "name"
            } else if cause.contains("bind") || cause.contains("listen") {
                "listen"
            } else {
                "command"
            };
            return Err(UpError::start(&label, key, cause));
        }
        Err(_) => {
            return Err(UpError::start(
                &label,
                "command",
                "the cluster's thread ended before it started",
            ))
        }
    };
    let done = tokio::spawn(async move {
        done_rx
            .await
            .unwrap_or_else(|_| Err("the cluster's thread ended".into()))
    });
    let mut part = Part {
        label: label.clone(),
        view: View::Cluster {
            cluster: cluster.clone(),
            serves: plan.serves,
            command,
        },
        shutdown: sd,
        done: Done::new(done),
        thread: Some(thread),
        grace,
    };
    let deadline = Instant::now() + ready_timeout;
    let failure = loop {
        if root.is_triggered() {
            break None;
        }
        if part.done.is_finished() {
            break Some((
                "command",
                "its workers gave up before they were online (see their output above)".to_string(),
            ));
        }
        match cluster.status().await {
            Ok(st) => {
                let online = st.workers.iter().filter(|w| w.state == "online").count();
                let restarts: u32 = st.workers.iter().map(|w| w.restarts).sum();
                if online >= target {
                    break None;
                }
                if restarts >= 3 {
                    break Some((
                        "command",
                        format!("its workers keep exiting before they are online ({restarts} restarts; see their output above)"),
                    ));
                }
                if Instant::now() > deadline {
                    break Some((
                        "ready",
                        format!(
                            "{online} of {target} workers online after {:?} (up.ready_timeout)",
                            ready_timeout
                        ),
                    ));
                }
            }
            Err(e) => break Some(("command", e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if let Some((key, cause)) = failure {
        part.grace = Duration::from_secs(10);
        part.stop().await;
        return Err(UpError::start(&label, key, cause));
    }
    Ok(part)
}

/// Bind the proxy and start serving.
pub async fn start_proxy(config: shoal_proxy::Config) -> Result<Part, UpError> {
    for (i, l) in config.listeners.iter().enumerate() {
        try_tcp("proxy", format!("listeners[{i}].address"), l.address)?;
    }
    if let Some(a) = config.admin {
        try_tcp("proxy", "admin.address".into(), a)?;
    }
    let server = shoal_proxy::Server::bind(config)
        .await
        .map_err(|e| UpError::start("proxy", "listeners", e))?;
    let view = View::Proxy {
        handle: server.handle(),
        listen: server.local_addrs(),
        admin: server.admin_addr(),
    };
    let sd = Shutdown::new();
    let sd2 = sd.clone();
    let done = tokio::spawn(async move { server.run(sd2).await.map_err(|e| e.to_string()) });
    Ok(Part {
        label: "proxy".into(),
        view,
        shutdown: sd,
        done: Done::new(done),
        thread: None,
        grace: Duration::from_secs(30),
    })
}

async fn start_all(plan: Plan, parts: &Parts, root: &Shutdown) -> Result<(), UpError> {
    if let Some(b) = plan.broker {
        parts.add(start_broker(b).await?);
    }
    if let Some(s) = plan.stats {
        parts.add(start_stats(s).await?);
    }
    for c in plan.clusters {
        if root.is_triggered() {
            return Ok(());
        }
        parts.add(start_cluster(c, plan.ready_timeout, root).await?);
    }
    if let Some(p) = plan.proxy {
        if !root.is_triggered() {
            parts.add(start_proxy(p).await?);
        }
    }
    Ok(())
}

/// SIGHUP: re-read the file and apply what changed (see [`crate::reload`]).
fn spawn_hangup(reloader: Arc<crate::reload::Reloader>, sd: Shutdown) -> Result<(), UpError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| UpError::start("up", "signals", format!("cannot handle SIGHUP: {e}")))?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sd.cancelled() => return,
                s = hup.recv() => if s.is_none() { return },
            }
            tracing::info!("SIGHUP received: re-reading the topology");
            match reloader.reload().await {
                Ok(done) => {
                    for d in done {
                        tracing::info!("reload: {d}");
                    }
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
    });
    Ok(())
}

/// Run the topology until `shutdown` fires (TERM/INT, `ctl stop`) or a part
/// ends on its own; then stop every part in reverse order.
pub async fn run(plan: Plan, shutdown: Shutdown) -> Result<(), UpError> {
    if plan.broker.is_none()
        && plan.stats.is_none()
        && plan.clusters.is_empty()
        && plan.proxy.is_none()
    {
        return Err(UpError::start(
            "up",
            plan.file.display().to_string(),
            "nothing to start: no [cluster.NAME], [proxy], [broker] or [stats] table",
        ));
    }
    let sock = shoal_core::control::socket_path(&plan.name);
    let listener = shoal_core::control::bind(&sock).await.map_err(|e| {
        UpError::start(
            "up",
            "up.name",
            format!("control socket {}: {e}", sock.display()),
        )
    })?;
    let name = plan.name.clone();
    let file = plan.file.clone();
    let dashboard = plan.dashboard;
    let worker_note = plan.worker_note.clone().filter(|_| plan.builtin_worker);
    let (parts, mut ended) = Parts::new();
    let reloader = Arc::new(crate::reload::Reloader::new(
        &plan,
        parts.clone(),
        shutdown.clone(),
    ));
    if let Err(e) = start_all(plan, &parts, &shutdown).await {
        stop_all(parts.take_all()).await;
        let _ = std::fs::remove_file(&sock);
        return Err(e);
    }
    if shutdown.is_triggered() {
        stop_all(parts.take_all()).await;
        let _ = std::fs::remove_file(&sock);
        return Ok(());
    }
    let ctl_sd = Shutdown::new();
    let topology = crate::control::Topology {
        name: name.clone(),
        file,
        parts: parts.clone(),
        stop: shutdown.clone(),
        reloader: reloader.clone(),
    };
    reloader.set_topology(topology.clone(), ctl_sd.clone());
    let dash = match dashboard {
        Some(addr) => match reloader.start_dashboard(addr) {
            Ok(a) => Some(a),
            Err(e) => {
                stop_all(parts.take_all()).await;
                let _ = std::fs::remove_file(&sock);
                return Err(e);
            }
        },
        None => None,
    };
    spawn_hangup(reloader.clone(), ctl_sd.clone())?;
    let ctl_task = tokio::spawn(crate::control::serve(
        listener,
        sock,
        ctl_sd.clone(),
        topology,
    ));
    shoal_core::output::stderr(
        crate::banner::text(&name, &parts.views(), dash, worker_note.as_deref()).as_bytes(),
    );

    // Wait for a stop, or for a part that ends on its own.
    let ended = tokio::select! {
        _ = shutdown.cancelled() => None,
        e = ended.recv() => e,
    };
    if let Some((part, cause)) = &ended {
        tracing::error!(%part, "stopped on its own ({cause}); stopping the topology");
    } else {
        tracing::info!("stopping: proxy, then clusters, then broker and stats");
    }
    stop_all(parts.take_all()).await;
    reloader.stop_dashboard();
    ctl_sd.trigger();
    // It removes its socket file on the way out.
    let _ = tokio::time::timeout(Duration::from_secs(2), ctl_task).await;
    match ended {
        Some((part, cause)) => Err(UpError::Ended { part, cause }),
        None => Ok(()),
    }
}
