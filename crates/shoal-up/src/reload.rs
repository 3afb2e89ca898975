//! SIGHUP (or `shoal ctl --name up reload`): re-read the topology file and
//! apply what changed, while everything keeps running.
//!
//! - An invalid file is refused with its file:line: key: message; nothing
//!   changes.
//! - Parts are added and removed in dependency order: an added broker or
//!   collector starts first, then added clusters (until their workers are
//!   online), then changed clusters are reloaded, then the proxy is started,
//!   swapped or stopped, then removed clusters stop, then a removed collector
//!   or broker. So the proxy never points at a cluster that is not there yet,
//!   and a removed cluster is out of the proxy before it stops.
//! - A changed cluster: a new command or arguments go to its primary (the
//!   chapter's `setupMaster`), a new `workers` scales it, then a rolling
//!   reload replaces its workers one at a time. Its other keys (env, grace,
//!   listen, ...) are not applied to a running primary; that is logged, and
//!   a cluster where only those changed keeps its workers.
//! - A changed proxy table: swapped in as the proxy's next generation (as
//!   its own reload does; listeners may change, `admin` may not).
//! - A changed broker, collector or dashboard is not restarted; that is
//!   logged.
//! - Unchanged parts are not touched: their processes keep their pids.
//!
//! "Changed" compares the validated configurations (their debug text), so a
//! comment or a reordering changes nothing. An added part that cannot start
//! is reported (part, key, cause) and the rest of the change still applies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use shoal_cluster::ClusterSpec;
use shoal_core::Shutdown;
use tokio::sync::Mutex;

use crate::config::Plan;
use crate::error::UpError;
use crate::running::Parts;
use crate::start::{start_broker, start_cluster, start_proxy, start_stats, View};

/// What a reload compares with and acts on.
pub struct Reloader {
    builtin: bool,
    builtin_worker: bool,
    file: PathBuf,
    parts: Arc<Parts>,
    root: Shutdown,
    state: Mutex<State>,
}

/// The configuration the running parts were started or last reloaded with.
struct State {
    clusters: BTreeMap<String, ClusterSpec>,
    proxy: Option<String>,
    broker: Option<String>,
    stats: Option<String>,
    dashboard: Option<std::net::SocketAddr>,
}

fn text<T: std::fmt::Debug>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(|v| format!("{v:?}"))
}

/// A start failure during a reload: nothing else was stopped for it.
fn not_started(e: UpError) -> String {
    match e {
        UpError::Start { part, key, cause } => format!("{part}: {key}: {cause} (not started)"),
        other => other.to_string(),
    }
}

impl Reloader {
    /// Remember `plan` as what runs; parts come and go in `parts`; `root`
    /// is the topology's stop.
    pub fn new(plan: &Plan, parts: Arc<Parts>, root: Shutdown) -> Reloader {
        Reloader {
            builtin: plan.builtin,
            builtin_worker: plan.builtin_worker,
            file: plan.file.clone(),
            parts,
            root,
            state: Mutex::new(State {
                clusters: plan
                    .clusters
                    .iter()
                    .map(|c| (c.table.clone(), c.spec.clone()))
                    .collect(),
                proxy: text(&plan.proxy),
                broker: text(&plan.broker),
                stats: text(&plan.stats),
                dashboard: plan.dashboard,
            }),
        }
    }

    fn view(&self, label: &str) -> Option<View> {
        self.parts
            .views()
            .into_iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v)
    }

    /// Re-read the file and apply what changed: what was done, or why not
    /// (an invalid file: nothing was done; a part that could not start: the
    /// rest was done, and the message says what).
    pub async fn reload(&self) -> Result<Vec<String>, String> {
        let mut plan = if self.builtin {
            crate::config::default_plan()
        } else {
            crate::config::load(&self.file)
        }
        .map_err(|e| e.to_string())?;
        if self.builtin_worker {
            let exe = std::env::current_exe().map_err(|e| format!("the built-in worker: {e}"))?;
            crate::config::use_builtin_worker(&mut plan, &exe);
        }
        let mut st = self.state.lock().await;
        if self.root.is_triggered() {
            return Err("the topology is stopping".to_string());
        }
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let Plan {
            broker,
            stats,
            clusters,
            proxy,
            dashboard,
            ready_timeout,
            ..
        } = plan;
        let (new_broker, new_stats) = (text(&broker), text(&stats));

        // 1. An added broker or collector.
        match (broker, &st.broker) {
            (Some(b), None) => match start_broker(b).await {
                Ok(p) => {
                    done.push("broker: started".to_string());
                    self.parts.add(p);
                    st.broker = new_broker.clone();
                }
                Err(e) => failed.push(not_started(e)),
            },
            (Some(_), Some(old)) if new_broker.as_ref() != Some(old) => done.push(
                "broker: changed, but it is not restarted (restart shoal up for that)".into(),
            ),
            _ => {}
        }
        match (stats, &st.stats) {
            (Some(s), None) => match start_stats(s).await {
                Ok(p) => {
                    done.push("stats: started".to_string());
                    self.parts.add(p);
                    st.stats = new_stats.clone();
                }
                Err(e) => failed.push(not_started(e)),
            },
            (Some(_), Some(old)) if new_stats.as_ref() != Some(old) => done
                .push("stats: changed, but it is not restarted (restart shoal up for that)".into()),
            _ => {}
        }
        if dashboard != st.dashboard {
            done.push(
                "dashboard: changed, but it is not restarted (restart shoal up for that)".into(),
            );
        }

        // 2. Added clusters; 3. changed ones.
        let wanted: Vec<String> = clusters.iter().map(|c| c.table.clone()).collect();
        for c in clusters {
            let label = format!("cluster.{}", c.table);
            let Some(old) = st.clusters.get(&c.table).cloned() else {
                let (table, spec) = (c.table.clone(), c.spec.clone());
                match start_cluster(c, ready_timeout, &self.root).await {
                    Ok(p) => {
                        done.push(format!("{label}: started"));
                        self.parts.add(p);
                        st.clusters.insert(table, spec);
                    }
                    Err(e) => failed.push(not_started(e)),
                }
                continue;
            };
            if format!("{:?}", c.spec) == format!("{old:?}") {
                continue;
            }
            match self.reload_cluster(&label, &old, &c.spec).await {
                Ok(what) => {
                    done.push(what);
                    st.clusters.insert(c.table, c.spec);
                }
                Err(e) => failed.push(e),
            }
        }

        // 4. The proxy.
        let new_proxy = text(&proxy);
        match (proxy, st.proxy.is_some()) {
            (Some(p), false) => match start_proxy(p).await {
                Ok(part) => {
                    done.push("proxy: started".to_string());
                    self.parts.add(part);
                    st.proxy = new_proxy;
                }
                Err(e) => failed.push(not_started(e)),
            },
            (Some(p), true) if new_proxy != st.proxy => match self.view("proxy") {
                Some(View::Proxy { handle, .. }) => match handle.apply(p) {
                    Ok(n) => {
                        done.push(format!("proxy: generation {n}"));
                        st.proxy = new_proxy;
                    }
                    Err(e) => failed.push(format!("proxy: {e}")),
                },
                _ => failed.push("proxy: not running".to_string()),
            },
            (None, true) => {
                if let Some(p) = self.parts.take("proxy") {
                    p.stop().await;
                }
                done.push("proxy: stopped".to_string());
                st.proxy = None;
            }
            _ => {}
        }

        // 5. Removed clusters, in reverse order; 6. a removed collector, broker.
        let gone: Vec<String> = st
            .clusters
            .keys()
            .filter(|t| !wanted.contains(t))
            .cloned()
            .collect();
        for table in gone.iter().rev() {
            let label = format!("cluster.{table}");
            if let Some(p) = self.parts.take(&label) {
                p.stop().await;
            }
            st.clusters.remove(table);
            done.push(format!("{label}: stopped"));
        }
        let st = &mut *st;
        for (label, slot, new) in [
            ("stats", &mut st.stats, &new_stats),
            ("broker", &mut st.broker, &new_broker),
        ] {
            if new.is_none() && slot.is_some() {
                if let Some(p) = self.parts.take(label) {
                    p.stop().await;
                }
                *slot = None;
                done.push(format!("{label}: stopped"));
            }
        }

        if !failed.is_empty() {
            let mut msg = failed.join("; ");
            if !done.is_empty() {
                msg.push_str(&format!("; applied: {}", done.join("; ")));
            }
            return Err(msg);
        }
        if done.is_empty() {
            done.push("nothing changed".to_string());
        }
        Ok(done)
    }

    /// Apply a changed `[cluster.NAME]` to its running primary.
    async fn reload_cluster(
        &self,
        label: &str,
        old: &ClusterSpec,
        new: &ClusterSpec,
    ) -> Result<String, String> {
        let Some(View::Cluster { cluster, .. }) = self.view(label) else {
            return Err(format!("{label}: not running"));
        };
        let mut rest = new.clone();
        rest.exec = old.exec.clone();
        rest.args = old.args.clone();
        rest.silent = old.silent;
        rest.workers = old.workers;
        let note = if format!("{rest:?}") != format!("{old:?}") {
            " (its other changed keys take a restart of shoal up)"
        } else {
            ""
        };
        let command = new.exec != old.exec || new.args != old.args || new.silent != old.silent;
        if !command && new.workers == old.workers {
            return Ok(format!(
                "{label}: changed keys are not applied to running workers; they take a restart of shoal up"
            ));
        }
        if command {
            cluster
                .setup_primary(new.exec.clone(), new.args.clone(), new.silent)
                .await
                .map_err(|e| format!("{label}: {e}"))?;
        }
        if new.workers != old.workers {
            cluster
                .scale(new.workers)
                .await
                .map_err(|e| format!("{label}: {e}"))?
                .map_err(|e| format!("{label}: workers: {e}"))?;
        }
        let n = cluster
            .reload()
            .await
            .map_err(|e| format!("{label}: {e}"))?
            .map_err(|e| format!("{label}: reload: {e}"))?;
        Ok(format!("{label}: rolling reload of {n} workers{note}"))
    }
}
