//! SIGHUP (or `shoal ctl --name up reload`): re-read the topology file and
//! apply what changed, while everything keeps running.
//!
//! - An invalid file is refused with its file:line: key: message; nothing
//!   changes.
//! - Parts added or removed (a new `[cluster.NAME]`, a `[proxy]` that
//!   appeared) are refused too: that takes a restart of `shoal up`.
//! - A changed cluster: a new command or arguments go to its primary (the
//!   chapter's `setupMaster`), a new `workers` scales it, then a rolling
//!   reload replaces its workers one at a time. Its other keys (env, grace,
//!   listen, ...) are not applied to a running primary; that is logged.
//! - A changed proxy table: swapped in as the proxy's next generation (as
//!   its own reload does; listeners may change, `admin` may not).
//! - The broker and the collector are not reloaded; a change is logged.
//!
//! "Changed" compares the validated configurations (their debug text), so a
//! comment or a reordering changes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use shoal_cluster::{Cluster, ClusterSpec};
use tokio::sync::Mutex;

use crate::config::Plan;

/// What a reload compares with and acts on.
pub struct Reloader {
    builtin: bool,
    file: PathBuf,
    state: Mutex<State>,
}

struct State {
    clusters: BTreeMap<String, (Option<Cluster>, ClusterSpec)>,
    proxy: Option<(Option<shoal_proxy::Handle>, String)>,
    others: String,
}

fn others(plan: &Plan) -> String {
    format!("{:?}{:?}", plan.broker, plan.stats)
}

impl Reloader {
    /// Remember `plan` as started (`builtin`: it came from the default text).
    pub fn new(plan: &Plan, builtin: bool) -> Reloader {
        Reloader {
            builtin,
            file: plan.file.clone(),
            state: Mutex::new(State {
                clusters: plan
                    .clusters
                    .iter()
                    .map(|c| (c.table.clone(), (None, c.spec.clone())))
                    .collect(),
                proxy: plan.proxy.as_ref().map(|p| (None, format!("{p:?}"))),
                others: others(plan),
            }),
        }
    }

    /// Give it the running parts' handles.
    pub async fn attach(&self, views: &[(String, crate::start::View)]) {
        let mut st = self.state.lock().await;
        for (label, view) in views {
            match view {
                crate::start::View::Cluster { cluster, .. } => {
                    if let Some(table) = label.strip_prefix("cluster.") {
                        if let Some(slot) = st.clusters.get_mut(table) {
                            slot.0 = Some(cluster.clone());
                        }
                    }
                }
                crate::start::View::Proxy { handle, .. } => {
                    if let Some(p) = st.proxy.as_mut() {
                        p.0 = Some(handle.clone());
                    }
                }
                _ => {}
            }
        }
    }

    /// Re-read the file and apply what changed: what was done, or why not.
    pub async fn reload(&self) -> Result<Vec<String>, String> {
        let plan = if self.builtin {
            crate::config::default_plan()
        } else {
            crate::config::load(&self.file)
        }
        .map_err(|e| e.to_string())?;
        let mut st = self.state.lock().await;
        let old: Vec<&String> = st.clusters.keys().collect();
        let new: Vec<&String> = plan.clusters.iter().map(|c| &c.table).collect();
        if old != new || st.proxy.is_some() != plan.proxy.is_some() {
            return Err(
                "parts were added or removed; that takes a restart of shoal up".to_string(),
            );
        }
        let mut done = Vec::new();
        if others(&plan) != st.others {
            done.push(
                "broker/stats: changed, but they are not reloaded (restart shoal up for that)"
                    .to_string(),
            );
        }
        if let (Some(new), Some((Some(handle), old))) = (plan.proxy, st.proxy.as_mut()) {
            let text = format!("{new:?}");
            if text != *old {
                let n = handle.apply(new).map_err(|e| format!("proxy: {e}"))?;
                *old = text;
                done.push(format!("proxy: generation {n}"));
            }
        }
        for c in plan.clusters {
            let Some((Some(cluster), old)) = st.clusters.get_mut(&c.table) else {
                continue;
            };
            if format!("{:?}", c.spec) == format!("{old:?}") {
                continue;
            }
            let label = format!("cluster.{}", c.table);
            let new = c.spec;
            if new.exec != old.exec || new.args != old.args || new.silent != old.silent {
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
            let n = cluster
                .reload()
                .await
                .map_err(|e| format!("{label}: {e}"))?
                .map_err(|e| format!("{label}: reload: {e}"))?;
            *old = new;
            done.push(format!("{label}: rolling reload of {n} workers{note}"));
        }
        if done.is_empty() {
            done.push("nothing changed".to_string());
        }
        Ok(done)
    }
}
