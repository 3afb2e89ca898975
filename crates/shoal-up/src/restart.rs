//! Restarting a part of a running topology with a new configuration: the
//! broker, the collector, the dashboard; the proxy's next generation; the
//! collector's mapping file reloaded in place.
//!
//! A restart stops the old part (within its grace), then starts the new
//! one. If the new one cannot start, the error names the part, the key and
//! the cause, and the old configuration is started again; if even that
//! fails, the part is down and the message says so (nothing is left down
//! without a word). The broker keeps its `data_dir`, so its durable queues
//! and persistent messages are there after the restart.
//!
//! A collector whose settings did not change but whose mapping file did is
//! not restarted: the running collector rereads the file (as `shoal stats`
//! does on SIGHUP), so its counters are kept.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_core::Shutdown;
use shoal_dgram::statsd;

use crate::error::UpError;
use crate::reload::{not_started, text, Reloader, State};
use crate::running::Part;
use crate::start::{start_broker, start_stats, View};

/// The environment keys that carry the broker's address.
pub const AMQP_KEYS: &[&str] = &["AMQP_URL"];
/// The environment keys that carry the collector's address.
pub const STATSD_KEYS: &[&str] = &["STATSD_HOST", "STATSD_PORT"];

/// How a restart ended.
pub enum Outcome {
    /// The new configuration runs.
    New,
    /// The new one could not start; the old one runs again (why).
    Old(String),
    /// Neither could start: the part is down (why).
    Down(String),
}

/// The content of the collector's mapping file, if it has one (and it can
/// be read).
pub fn mapping_text(stats: Option<&statsd::Config>) -> Option<Vec<u8>> {
    stats
        .and_then(|s| s.mapping.as_ref())
        .and_then(|p| std::fs::read(p).ok())
}

fn cause(e: UpError) -> String {
    not_started(e)
        .trim_end_matches(" (not started)")
        .to_string()
}

impl Reloader {
    /// Stop `label`, start it with `new`; if that fails, with `old` again.
    async fn restart<C, F, Fut>(&self, label: &str, old: C, new: C, start: F) -> Outcome
    where
        F: Fn(C) -> Fut,
        Fut: std::future::Future<Output = Result<Part, UpError>>,
    {
        if let Some(p) = self.parts.take(label) {
            p.stop().await;
        }
        let why = match start(new).await {
            Ok(p) => {
                self.parts.add(p);
                tracing::info!(part = label, "restarted with its new configuration");
                return Outcome::New;
            }
            Err(e) => cause(e),
        };
        tracing::error!(
            part = label,
            "the new configuration cannot start: {why}; starting the old one again"
        );
        match start(old).await {
            Ok(p) => {
                self.parts.add(p);
                Outcome::Old(format!(
                    "{why} (the new configuration could not start; the old one runs again)"
                ))
            }
            Err(e) => Outcome::Down(format!(
                "{why} (the new configuration could not start, and the old one could not start again: {}): {label} is not running",
                cause(e)
            )),
        }
    }

    /// Restart the broker with `new` (its data dir is kept, so are its
    /// durable queues and persistent messages).
    pub(crate) async fn restart_broker(
        &self,
        old: shoal_broker::Config,
        new: shoal_broker::Config,
    ) -> Outcome {
        self.restart("broker", old, new, start_broker).await
    }

    /// Apply `new` to the running collector: restart it if its settings
    /// changed, reload its mapping file if only that file's content did.
    /// What was done (`None`: nothing changed), or what failed.
    pub(crate) async fn apply_stats(
        &self,
        st: &mut State,
        old: statsd::Config,
        new: statsd::Config,
    ) -> Result<Option<String>, String> {
        let content = mapping_text(Some(&new));
        if text(&Some(&new)) == text(&Some(&old)) {
            if content == st.mapping {
                return Ok(None);
            }
            let r = self.reload_mapping();
            if r.is_ok() {
                st.mapping = content;
            }
            return r.map(Some);
        }
        match self.restart("stats", old, new.clone(), start_stats).await {
            Outcome::New => {
                st.stats = Some(new);
                st.mapping = content;
                Ok(Some(
                    "stats: restarted with its new configuration (its counters start again)".into(),
                ))
            }
            Outcome::Old(e) => Err(e),
            Outcome::Down(e) => {
                (st.stats, st.mapping) = (None, None);
                Err(e)
            }
        }
    }

    /// Tell the running collector to reread its mapping file.
    pub(crate) fn reload_mapping(&self) -> Result<String, String> {
        match self.view("stats") {
            Some(View::Stats {
                mapping: Some(r), ..
            }) => match r.reload() {
                Ok(n) => Ok(format!(
                    "stats: mapping file {} reloaded ({n} mappings; counters kept)",
                    r.path().display()
                )),
                Err(e) => Err(format!(
                    "stats: mapping_config: {e} (the previous mapping stays)"
                )),
            },
            Some(View::Stats { mapping: None, .. }) => {
                Err("stats: it has no mapping_config to reload".into())
            }
            _ => Err("stats: not running".into()),
        }
    }

    /// Swap the proxy's configuration for `config` (its next generation).
    pub(crate) fn swap_proxy(&self, config: shoal_proxy::Config) -> Result<String, String> {
        match self.view("proxy") {
            Some(View::Proxy { handle, .. }) => match handle.apply(config) {
                Ok(n) => Ok(format!("proxy: generation {n}")),
                Err(e) => Err(format!("proxy: {e}")),
            },
            _ => Err("proxy: not running".to_string()),
        }
    }

    /// Start the dashboard on `addr` (once the control socket's view is set).
    pub(crate) fn start_dashboard(&self, addr: SocketAddr) -> Result<SocketAddr, UpError> {
        let Some((topology, parent)) = self.topology.get() else {
            return Err(UpError::start("dashboard", "listen", "not ready"));
        };
        let sd = parent.child();
        let bound = crate::dashboard::start(addr, topology.clone(), sd.clone())?;
        *self.dashboard.lock().unwrap_or_else(|p| p.into_inner()) = Some((bound, sd));
        Ok(bound)
    }

    /// Move the dashboard from `old` to `new` (either may be off); if the
    /// new address cannot be bound, the old one is served again.
    pub(crate) async fn restart_dashboard(
        &self,
        old: Option<SocketAddr>,
        new: Option<SocketAddr>,
    ) -> Result<String, String> {
        let running = self
            .dashboard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((_, sd)) = running {
            sd.trigger();
        }
        let Some(addr) = new else {
            return Ok("dashboard: stopped".into());
        };
        let why = match self.start_dashboard(addr) {
            Ok(a) => return Ok(format!("dashboard: now on http://{a}/")),
            Err(e) => cause(e),
        };
        let Some(back) = old else {
            return Err(format!("{why} (not started)"));
        };
        // The old listener closes as its task sees the stop.
        for _ in 0..20 {
            if self.start_dashboard(back).is_ok() {
                return Err(format!(
                    "{why} (the new address could not be bound; the dashboard stays on http://{back}/)"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "{why} (and its old address {back} could not be bound again: the dashboard is not running)"
        ))
    }

    /// Stop the dashboard (the topology stops).
    pub(crate) fn stop_dashboard(&self) {
        if let Some((_, sd)) = self
            .dashboard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            sd.trigger();
        }
    }

    /// Give the dashboard the control socket's view of the topology, and the
    /// stop its own stop is a child of.
    pub fn set_topology(&self, topology: crate::control::Topology, parent: Shutdown) {
        let _ = self.topology.set((topology, parent));
    }
}
