//! SIGHUP (or `shoal ctl --name up reload`): re-read the topology file and
//! apply what changed, while everything keeps running.
//!
//! - An invalid file is refused with its file:line: key: message; nothing
//!   changes.
//! - Parts are added and removed in dependency order: an added broker or
//!   collector starts first (a changed one restarts, see [`crate::restart`]),
//!   then added clusters (until their workers are online), then changed
//!   clusters are reloaded, then the proxy is started, swapped or stopped,
//!   then removed clusters stop, then a removed collector or broker. So the
//!   proxy never points at a cluster that is not there yet, and a removed
//!   cluster is out of the proxy before it stops.
//! - A changed cluster: a new command or arguments go to its primary (the
//!   chapter's `setupMaster`), a new `workers` scales it (a count set by
//!   `shoal ctl scale` stays unless the file's `workers` changed, as PM2's
//!   `pm2 scale` and `pm2 reload ecosystem` do), a new broker or collector
//!   address in its environment goes to its primary, then a rolling reload
//!   replaces its workers one at a time. Its other keys (other env, grace,
//!   listen, ...) are not applied to a running primary; that is logged, and
//!   a cluster where only those changed keeps its workers. After the broker
//!   restarted, the clusters with `AMQP_URL` get a rolling reload too (their
//!   workers' connections were closed).
//! - A changed proxy table: swapped in as the proxy's next generation (as
//!   its own reload does; listeners may change, `admin` may not).
//! - A changed broker, collector or dashboard restarts with its new
//!   configuration; a collector whose only change is its mapping file's
//!   content reloads it and keeps its counters (see [`crate::restart`]).
//! - Unchanged parts are not touched: their processes keep their pids.
//!
//! "Changed" compares the validated configurations (their debug text), so a
//! comment or a reordering changes nothing. An added part that cannot start
//! is reported (part, key, cause) and the rest of the change still applies.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use shoal_cluster::ClusterSpec;
use shoal_core::Shutdown;
use shoal_dgram::statsd;
use tokio::sync::Mutex;

use crate::config::Plan;
use crate::error::UpError;
use crate::restart::{mapping_text, Outcome, AMQP_KEYS, STATSD_KEYS};
use crate::running::Parts;
use crate::start::{start_broker, start_cluster, start_proxy, start_stats, View};

/// Why a reload did not do all it was asked.
#[derive(Debug)]
pub enum ReloadError {
    /// Nothing was done (an invalid file, an unknown part, a stop under way).
    Refused(String),
    /// Some of it was done; the message says what failed and what was done.
    Partial(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Refused(m) => write!(f, "reload refused, everything keeps running: {m}"),
            ReloadError::Partial(m) => write!(f, "reload not fully applied: {m}"),
        }
    }
}

/// What a reload compares with and acts on.
pub struct Reloader {
    builtin: bool,
    builtin_worker: bool,
    pub(crate) file: PathBuf,
    pub(crate) parts: Arc<Parts>,
    pub(crate) root: Shutdown,
    pub(crate) state: Mutex<State>,
    /// The control socket's view, for the dashboard (set once it exists).
    pub(crate) topology: OnceLock<(crate::control::Topology, Shutdown)>,
    /// The running dashboard: its address and its stop.
    pub(crate) dashboard: std::sync::Mutex<Option<(SocketAddr, Shutdown)>>,
}

/// The configuration the running parts were started or last reloaded with.
pub(crate) struct State {
    /// As the file says (the clusters' `workers` included).
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Worker counts set by `shoal ctl scale`, until the file's `workers`
    /// of that cluster changes.
    pub scaled: BTreeMap<String, usize>,
    pub proxy: Option<String>,
    pub broker: Option<shoal_broker::Config>,
    pub stats: Option<statsd::Config>,
    /// The collector's mapping file, as it was last loaded.
    pub mapping: Option<Vec<u8>>,
    pub dashboard: Option<SocketAddr>,
}

pub(crate) fn text<T: std::fmt::Debug>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(|v| format!("{v:?}"))
}

/// A start failure during a reload: nothing else was stopped for it.
pub(crate) fn not_started(e: UpError) -> String {
    match e {
        UpError::Start { part, key, cause } => format!("{part}: {key}: {cause} (not started)"),
        other => other.to_string(),
    }
}

/// The value of `key` in `env`.
pub(crate) fn env_get<'a>(env: &'a [(OsString, OsString)], key: &str) -> Option<&'a OsString> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Whether `env` has one of `vars` (key and value): what the topology gave
/// it, not a value its own table set.
pub(crate) fn got(env: &[(OsString, OsString)], vars: &[(&str, String)]) -> bool {
    vars.iter()
        .any(|(k, v)| env_get(env, k).is_some_and(|e| e == v.as_str()))
}

/// Replace `key`'s value `from` by `to` in `env` (a value the cluster's own
/// table set is another value, and stays).
pub(crate) fn env_swap(env: &mut [(OsString, OsString)], key: &str, from: &str, to: &str) -> bool {
    let mut changed = false;
    for (k, v) in env.iter_mut() {
        if k == key && v == from && from != to {
            *v = to.into();
            changed = true;
        }
    }
    changed
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
                scaled: BTreeMap::new(),
                proxy: text(&plan.proxy),
                broker: plan.broker.clone(),
                stats: plan.stats.clone(),
                mapping: mapping_text(plan.stats.as_ref()),
                dashboard: plan.dashboard,
            }),
            topology: OnceLock::new(),
            dashboard: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn view(&self, label: &str) -> Option<View> {
        self.parts
            .views()
            .into_iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v)
    }

    /// Read and validate the file again (the built-in text for the default).
    pub(crate) fn plan(&self) -> Result<Plan, ReloadError> {
        let mut plan = if self.builtin {
            crate::config::default_plan()
        } else {
            crate::config::load(&self.file)
        }
        .map_err(|e| ReloadError::Refused(e.to_string()))?;
        if self.builtin_worker {
            let exe = std::env::current_exe()
                .map_err(|e| ReloadError::Refused(format!("the built-in worker: {e}")))?;
            crate::config::use_builtin_worker(&mut plan, &exe);
        }
        Ok(plan)
    }

    /// Re-read the file and apply what changed: what was done, or why not
    /// (an invalid file: nothing was done; a part that could not start: the
    /// rest was done, and the message says what).
    pub async fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let plan = self.plan()?;
        let mut st = self.state.lock().await;
        if self.root.is_triggered() {
            return Err(ReloadError::Refused("the topology is stopping".into()));
        }
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let Plan {
            broker,
            stats,
            mut clusters,
            proxy,
            dashboard,
            ready_timeout,
            ..
        } = plan;

        let (want_broker, want_stats) = (broker.is_some(), stats.is_some());
        // What the clusters got from the topology, before and after.
        let amqp_vars = [
            crate::config::broker_env(broker.as_ref()),
            crate::config::broker_env(st.broker.as_ref()),
        ]
        .concat();
        let stats_vars = [
            crate::config::stats_env(stats.as_ref()),
            crate::config::stats_env(st.stats.as_ref()),
        ]
        .concat();

        // 1. The broker and the collector: added, or changed (restarted).
        // The clusters' environment follows what runs in the end.
        let mut reconnect = false;
        match (broker, st.broker.clone()) {
            (Some(b), None) => match start_broker(b.clone()).await {
                Ok(p) => {
                    done.push("broker: started".to_string());
                    self.parts.add(p);
                    st.broker = Some(b);
                }
                Err(e) => failed.push(not_started(e)),
            },
            (Some(b), Some(old)) if text(&Some(&b)) != text(&Some(&old)) => {
                let (new_vars, old_vars) = (
                    crate::config::broker_env(Some(&b)),
                    crate::config::broker_env(Some(&old)),
                );
                match self.restart_broker(old.clone(), b.clone()).await {
                    Outcome::New => {
                        done.push("broker: restarted with its new configuration".into());
                        st.broker = Some(b);
                        reconnect = true;
                    }
                    Outcome::Old(e) => {
                        failed.push(e);
                        reconnect = true;
                        swap_vars(&mut clusters, &new_vars, &old_vars);
                    }
                    Outcome::Down(e) => {
                        failed.push(e);
                        st.broker = None;
                    }
                }
            }
            _ => {}
        }
        let mut moved_stats = false;
        match (stats, st.stats.clone()) {
            (Some(s), None) => match start_stats(s.clone()).await {
                Ok(p) => {
                    done.push("stats: started".to_string());
                    self.parts.add(p);
                    st.mapping = mapping_text(Some(&s));
                    st.stats = Some(s);
                }
                Err(e) => failed.push(not_started(e)),
            },
            (Some(s), Some(old)) => {
                let (new_vars, old_vars) = (
                    crate::config::stats_env(Some(&s)),
                    crate::config::stats_env(Some(&old)),
                );
                match self.apply_stats(&mut st, old, s).await {
                    Ok(Some(what)) => {
                        moved_stats = new_vars != old_vars;
                        done.push(what);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        failed.push(e);
                        swap_vars(&mut clusters, &new_vars, &old_vars);
                    }
                }
            }
            _ => {}
        }
        if dashboard != st.dashboard {
            match self.restart_dashboard(st.dashboard, dashboard).await {
                Ok(what) => {
                    done.push(what);
                    st.dashboard = dashboard;
                }
                Err(e) => failed.push(e),
            }
        }

        // 2. Added clusters; 3. changed ones (and those whose broker
        // connection was closed by its restart, or whose collector moved).
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
            let force = (reconnect && got(&c.spec.env, &amqp_vars))
                || (moved_stats && got(&c.spec.env, &stats_vars));
            if !force && format!("{:?}", c.spec) == format!("{old:?}") {
                continue;
            }
            match self.reload_cluster(&label, &old, &c.spec, force).await {
                Ok(what) => {
                    done.push(what);
                    if c.spec.workers != old.workers {
                        st.scaled.remove(&c.table);
                    }
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
            (Some(p), true) if new_proxy != st.proxy => match self.swap_proxy(p) {
                Ok(what) => {
                    done.push(what);
                    st.proxy = new_proxy;
                }
                Err(e) => failed.push(e),
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
            st.scaled.remove(table);
            done.push(format!("{label}: stopped"));
        }
        if !want_stats && st.stats.is_some() {
            if let Some(p) = self.parts.take("stats") {
                p.stop().await;
            }
            (st.stats, st.mapping) = (None, None);
            done.push("stats: stopped".to_string());
        }
        if !want_broker && st.broker.is_some() {
            if let Some(p) = self.parts.take("broker") {
                p.stop().await;
            }
            st.broker = None;
            done.push("broker: stopped".to_string());
        }
        finish(done, failed)
    }

    /// Apply a changed `[cluster.NAME]` to its running primary; `force`: a
    /// rolling reload even if nothing it applies changed (the broker
    /// restarted, or the collector moved).
    pub(crate) async fn reload_cluster(
        &self,
        label: &str,
        old: &ClusterSpec,
        new: &ClusterSpec,
        force: bool,
    ) -> Result<String, String> {
        let Some(View::Cluster { cluster, .. }) = self.view(label) else {
            return Err(format!("{label}: not running"));
        };
        // A broker or collector address that changed in its environment.
        let moved = [AMQP_KEYS, STATSD_KEYS].concat().iter().any(|k| {
            matches!((env_get(&old.env, k), env_get(&new.env, k)), (Some(a), Some(b)) if a != b)
        });
        let mut rest = new.clone();
        rest.exec = old.exec.clone();
        rest.args = old.args.clone();
        rest.silent = old.silent;
        rest.workers = old.workers;
        if moved {
            rest.env = old.env.clone();
        }
        let note = if format!("{rest:?}") != format!("{old:?}") {
            " (its other changed keys take a restart of shoal up)"
        } else {
            ""
        };
        let command = new.exec != old.exec || new.args != old.args || new.silent != old.silent;
        if !command && new.workers == old.workers && !moved && !force {
            return Ok(format!(
                "{label}: changed keys are not applied to running workers; they take a restart of shoal up"
            ));
        }
        let fail = |e: &dyn std::fmt::Display| format!("{label}: {e}");
        if command {
            cluster
                .setup_primary(new.exec.clone(), new.args.clone(), new.silent)
                .await
                .map_err(|e| fail(&e))?;
        }
        if moved || force {
            cluster
                .set_env(new.env.clone())
                .await
                .map_err(|e| fail(&e))?;
        }
        if new.workers != old.workers {
            cluster
                .scale(new.workers)
                .await
                .map_err(|e| fail(&e))?
                .map_err(|e| format!("{label}: workers: {e}"))?;
        }
        let n = cluster
            .reload()
            .await
            .map_err(|e| fail(&e))?
            .map_err(|e| format!("{label}: reload: {e}"))?;
        let why = if moved {
            " (with the broker's or collector's new address)"
        } else if force && !command && new.workers == old.workers {
            " (to connect to the restarted broker or moved collector)"
        } else {
            ""
        };
        Ok(format!("{label}: rolling reload of {n} workers{why}{note}"))
    }
}

/// Put `from`'s values back as `to`'s in every cluster's environment (a part
/// whose new address did not come up: the clusters keep the old one).
fn swap_vars(
    clusters: &mut [crate::config::ClusterPlan],
    from: &[(&str, String)],
    to: &[(&str, String)],
) {
    for c in clusters {
        for ((k, f), (_, t)) in from.iter().zip(to) {
            env_swap(&mut c.spec.env, k, f, t);
        }
    }
}

/// What was done, or what failed (and what was done besides).
pub(crate) fn finish(
    mut done: Vec<String>,
    failed: Vec<String>,
) -> Result<Vec<String>, ReloadError> {
    if !failed.is_empty() {
        let mut msg = failed.join("; ");
        if !done.is_empty() {
            msg.push_str(&format!("; applied: {}", done.join("; ")));
        }
        return Err(ReloadError::Partial(msg));
    }
    if done.is_empty() {
        done.push("nothing changed".to_string());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn only_what_the_topology_gave_is_swapped() {
        let given = [("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/".to_string())];
        let mut ours = env(&[("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")]);
        let mut own = env(&[("AMQP_URL", "amqp://elsewhere:5672/")]);
        assert!(got(&ours, &given));
        assert!(!got(&own, &given));
        let to = "amqp://guest:guest@127.0.0.1:5673/";
        assert!(env_swap(&mut ours, "AMQP_URL", &given[0].1, to));
        assert!(!env_swap(&mut own, "AMQP_URL", &given[0].1, to));
        assert_eq!(env_get(&ours, "AMQP_URL").unwrap(), to);
        assert_eq!(env_get(&own, "AMQP_URL").unwrap(), "amqp://elsewhere:5672/");
    }
}
