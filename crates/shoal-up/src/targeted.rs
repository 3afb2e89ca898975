//! The control socket's commands on one part of the topology:
//!
//! - `scale CLUSTER N` (or `by: ±N`): that cluster's worker count; the other
//!   clusters keep their workers. The topology remembers the count, so a
//!   later SIGHUP compares against what runs: the file's `workers` wins
//!   only if it changed since it was last applied (PM2: `pm2 scale` stays
//!   until `pm2 reload ecosystem` brings a changed `instances`).
//! - `reload PART`: a cluster (`web` or `cluster.web`) gets a rolling reload
//!   of its workers with what it runs now (new pids, no dropped request; the
//!   file is not read, as `pm2 reload APP`); the proxy swaps in its table as
//!   the file says now; the broker restarts with its table as the file says
//!   now (and the clusters with `AMQP_URL` get a rolling reload to connect
//!   again); the collector restarts if its table changed, else rereads its
//!   mapping file (its counters are kept); the dashboard moves to the file's
//!   address.

use serde_json::{json, Value};

use crate::reload::{env_swap, finish, got, text, ReloadError, Reloader, State};
use crate::restart::Outcome;
use crate::start::View;

/// A new worker count: absolute, or relative to the running one.
#[derive(Debug, Clone, Copy)]
pub enum Scale {
    /// `N`.
    To(usize),
    /// `+N` / `-N`.
    By(i64),
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

impl Reloader {
    /// The running parts' labels, and `dashboard` when it is on.
    fn part_labels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.parts.views().into_iter().map(|(l, _)| l).collect();
        if self
            .dashboard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            v.push("dashboard".into());
        }
        v
    }

    /// `shoal ctl scale [CLUSTER] N`: the cluster's new worker count.
    pub async fn scale(&self, cluster: Option<&str>, to: Scale) -> Result<Value, String> {
        let mut st = self.state.lock().await;
        let names: Vec<String> = st.clusters.keys().cloned().collect();
        let table = match cluster {
            Some(c) => {
                let t = c.strip_prefix("cluster.").unwrap_or(c);
                if !st.clusters.contains_key(t) {
                    return Err(format!(
                        "unknown cluster {c:?} (this topology's clusters: {})",
                        list(&names)
                    ));
                }
                t.to_string()
            }
            None if names.len() == 1 => names[0].clone(),
            None => {
                return Err(format!(
                    "scale needs a cluster: shoal ctl --name NAME scale CLUSTER N (this topology's clusters: {})",
                    list(&names)
                ))
            }
        };
        let label = format!("cluster.{table}");
        let Some(View::Cluster { cluster, .. }) = self.view(&label) else {
            return Err(format!("{label}: not running"));
        };
        let r = match to {
            Scale::To(n) => cluster.scale(n).await,
            Scale::By(d) => cluster.scale_by(d).await,
        };
        let n = r
            .map_err(|e| format!("{label}: {e}"))?
            .map_err(|e| format!("{label}: {e}"))?;
        st.scaled.insert(table, n);
        tracing::info!(part = %label, workers = n, "scaled");
        Ok(json!({"part": label, "workers": n}))
    }

    /// `shoal ctl reload PART`.
    pub async fn reload_part(&self, part: &str) -> Result<Vec<String>, ReloadError> {
        let refused = |m: String| ReloadError::Refused(m);
        let known = self.part_labels();
        let label = if known.iter().any(|l| l == part) {
            part.to_string()
        } else if known.contains(&format!("cluster.{part}")) {
            format!("cluster.{part}")
        } else {
            return Err(refused(format!(
                "unknown part {part:?} (this topology runs: {}; a cluster may be named without `cluster.`)",
                list(&known)
            )));
        };
        if let Some(View::Cluster { cluster, .. }) = self.view(&label) {
            let n = cluster
                .reload()
                .await
                .map_err(|e| refused(format!("{label}: {e}")))?
                .map_err(|e| refused(format!("{label}: reload: {e}")))?;
            return Ok(vec![format!("{label}: rolling reload of {n} workers")]);
        }
        let plan = self.plan()?;
        let mut st = self.state.lock().await;
        if self.root.is_triggered() {
            return Err(refused("the topology is stopping".into()));
        }
        let absent = |t: &str| {
            refused(format!(
                "the file has no [{t}] now (a reload without a part stops it)"
            ))
        };
        let (mut done, mut failed) = (Vec::new(), Vec::new());
        match label.as_str() {
            "proxy" => {
                let p = plan.proxy.ok_or_else(|| absent("proxy"))?;
                let t = text(&Some(&p));
                match self.swap_proxy(p) {
                    Ok(w) => {
                        done.push(w);
                        st.proxy = t;
                    }
                    Err(e) => failed.push(e),
                }
            }
            "broker" => {
                let new = plan.broker.ok_or_else(|| absent("broker"))?;
                let Some(old) = st.broker.clone() else {
                    return Err(refused("broker: not running".into()));
                };
                let vars = |b| crate::config::broker_env(Some(b));
                let (from, to) = (vars(&old), vars(&new));
                let moved = match self.restart_broker(old, new.clone()).await {
                    Outcome::New => {
                        done.push("broker: restarted".into());
                        st.broker = Some(new);
                        Some(to)
                    }
                    Outcome::Old(e) => {
                        failed.push(e);
                        Some(from.clone())
                    }
                    Outcome::Down(e) => {
                        failed.push(e);
                        st.broker = None;
                        None
                    }
                };
                if let Some(to) = moved {
                    self.roll(&mut st, &from, &to, &mut done, &mut failed).await;
                }
            }
            "stats" => {
                let new = plan.stats.ok_or_else(|| absent("stats"))?;
                let Some(old) = st.stats.clone() else {
                    return Err(refused("stats: not running".into()));
                };
                let vars = |s| crate::config::stats_env(Some(s));
                let (from, to) = (vars(&old), vars(&new));
                let same = text(&Some(&new)) == text(&Some(&old));
                let r = if same && new.mapping.is_some() {
                    // Unchanged settings: reread the mapping file even if
                    // its content did not change, as `shoal ctl --name
                    // stats reload` does.
                    self.reload_mapping().map(|w| {
                        st.mapping = crate::restart::mapping_text(Some(&new));
                        Some(w)
                    })
                } else {
                    self.apply_stats(&mut st, old, new).await.map(|w| {
                        Some(w.unwrap_or_else(|| {
                            "stats: nothing changed (not restarted; its counters are kept)".into()
                        }))
                    })
                };
                match r {
                    Ok(w) => {
                        done.extend(w);
                        if from != to {
                            self.roll(&mut st, &from, &to, &mut done, &mut failed).await;
                        }
                    }
                    Err(e) => failed.push(e),
                }
            }
            "dashboard" => {
                if plan.dashboard != st.dashboard {
                    match self.restart_dashboard(st.dashboard, plan.dashboard).await {
                        Ok(w) => {
                            done.push(w);
                            st.dashboard = plan.dashboard;
                        }
                        Err(e) => failed.push(e),
                    }
                }
            }
            other => return Err(refused(format!("{other}: cannot be reloaded on its own"))),
        }
        finish(done, failed)
    }

    /// The clusters that got `from` in their environment from the topology:
    /// the values `from` become `to`, and a rolling reload (their workers
    /// connect to the restarted or moved part).
    async fn roll(
        &self,
        st: &mut State,
        from: &[(&str, String)],
        to: &[(&str, String)],
        done: &mut Vec<String>,
        failed: &mut Vec<String>,
    ) {
        let tables: Vec<String> = st.clusters.keys().cloned().collect();
        for table in tables {
            let Some(spec) = st.clusters.get_mut(&table) else {
                continue;
            };
            if !got(&spec.env, from) {
                continue;
            }
            for ((k, f), (_, t)) in from.iter().zip(to) {
                env_swap(&mut spec.env, k, f, t);
            }
            let label = format!("cluster.{table}");
            let Some(View::Cluster { cluster, .. }) = self.view(&label) else {
                continue;
            };
            if let Err(e) = cluster.set_env(spec.env.clone()).await {
                failed.push(format!("{label}: {e}"));
                continue;
            }
            match cluster.reload().await {
                Ok(Ok(n)) => done.push(format!("{label}: rolling reload of {n} workers")),
                Ok(Err(e)) => failed.push(format!("{label}: reload: {e}")),
                Err(e) => failed.push(format!("{label}: {e}")),
            }
        }
    }
}
