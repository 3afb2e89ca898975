//! The topology's control socket (`shoal ctl --name up status|reload|scale|stop`):
//! one status over every part, as JSON (`shoal ctl` prints it as a table);
//! `reload` of the whole file or of one part, `scale` of one cluster (see
//! [`crate::targeted`]); `stop`; the proxy's runtime server changes
//! (`add-server` ... `remove-server`), passed to it.
//!
//! A cluster's status comes from its primary's handle, the proxy's from its
//! handle, the broker's and the collector's from their own control sockets
//! (with a short timeout: a part that does not answer shows its error, the
//! rest still answers).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shoal_core::control::{err, ok};
use shoal_core::Shutdown;
use tokio::net::UnixListener;

use crate::start::View;
use crate::targeted::Scale;

/// The commands the topology's control socket answers.
pub const KNOWS: &str = "status, reload [PART], scale CLUSTER N|+N|-N, stop, and the proxy's add-server|set-server|drain-server|remove-server UPSTREAM HOST:PORT";

/// What the control socket answers about.
#[derive(Clone)]
pub struct Topology {
    /// The control socket's name.
    pub name: String,
    /// The topology file.
    pub file: PathBuf,
    /// The running parts.
    pub parts: Arc<crate::running::Parts>,
    /// Triggered by `stop`.
    pub stop: Shutdown,
    /// Does `reload`.
    pub reloader: Arc<crate::reload::Reloader>,
}

const ASK: Duration = Duration::from_secs(2);

/// At most this many of the broker's queues (by vhost and name) are listed
/// in the status; `queues_total` says how many there are.
const MAX_QUEUES: usize = 100;

async fn ask(path: &std::path::Path, cmd: &str) -> Value {
    match shoal_core::control::request(path, &json!({ "cmd": cmd }), ASK).await {
        Ok(v) => v,
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    }
}

/// The status of one part.
pub async fn part_status(label: &str, view: &View) -> Value {
    let addrs = |v: &[std::net::SocketAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    match view {
        View::Stats {
            udp, http, control, ..
        } => {
            let health = match control {
                Some(p) => ask(p, "status").await,
                None => Value::Null,
            };
            json!({"part": label, "kind": "stats", "udp": addrs(udp),
                   "http": http.map(|a| a.to_string()), "status": health})
        }
        View::Broker {
            listen,
            admin,
            name,
        } => {
            let sock = shoal_core::control::socket_path(name);
            let mut queues = ask(&sock, "list-queues").await["queues"].take();
            let total = queues.as_array().map_or(0, Vec::len);
            if let Some(q) = queues.as_array_mut() {
                q.truncate(MAX_QUEUES);
            }
            json!({"part": label, "kind": "broker", "listen": listen.to_string(),
                   "admin": admin.map(|a| a.to_string()),
                   "overview": ask(&sock, "overview").await,
                   "queues": queues, "queues_total": total})
        }
        View::Cluster {
            cluster,
            serves,
            command,
        } => {
            let status = match cluster.status().await {
                Ok(s) => serde_json::to_value(s).unwrap_or(Value::Null),
                Err(e) => json!({"error": e.to_string()}),
            };
            json!({"part": label, "kind": "cluster", "serves": addrs(serves),
                   "command": command, "status": status})
        }
        View::Proxy {
            handle,
            listen,
            admin,
        } => {
            json!({"part": label, "kind": "proxy", "listen": addrs(listen),
                   "admin": admin.map(|a| a.to_string()), "status": handle.status()})
        }
    }
}

/// Answer one request.
pub async fn handle(t: &Topology, req: Value) -> Value {
    match req["cmd"].as_str() {
        Some("status") => {
            let mut parts = Vec::new();
            for (label, view) in t.parts.views() {
                parts.push(part_status(&label, &view).await);
            }
            ok(
                json!({"up": {"name": t.name, "file": t.file.display().to_string(),
                             "pid": std::process::id(), "parts": parts}}),
            )
        }
        Some("reload") => {
            let r = match req["part"].as_str() {
                Some(part) => t.reloader.reload_part(part).await,
                None => t.reloader.reload().await,
            };
            match r {
                Ok(done) => ok(json!({"applied": done})),
                Err(e) => err(e.to_string()),
            }
        }
        Some("scale") => {
            let to = match (req["workers"].as_u64(), req["by"].as_i64()) {
                (Some(n), _) => Scale::To(n as usize),
                (None, Some(d)) => Scale::By(d),
                _ => {
                    return err(
                        "scale needs \"cluster\" and \"workers\" (a positive integer) or \"by\" (+N or -N)",
                    )
                }
            };
            match t.reloader.scale(req["cluster"].as_str(), to).await {
                Ok(v) => ok(v),
                Err(e) => err(e),
            }
        }
        Some("stop") => {
            t.stop.trigger();
            ok(json!({"stopping": true}))
        }
        // Runtime server changes go to the topology's proxy.
        Some("add-server" | "set-server" | "drain-server" | "remove-server") => {
            match t.reloader.view("proxy") {
                Some(View::Proxy { handle, .. }) => handle.control(&req),
                _ => err("this topology has no [proxy]"),
            }
        }
        Some(other) => err(format!(
            "unknown command {other:?} (shoal up knows {KNOWS})"
        )),
        None => err("missing cmd"),
    }
}

/// Serve the control socket until `shutdown` fires.
pub async fn serve(listener: UnixListener, path: PathBuf, shutdown: Shutdown, t: Topology) {
    shoal_core::control::serve(listener, path, shutdown, move |req| {
        let t = t.clone();
        async move { handle(&t, req).await }
    })
    .await
}
