//! The collector's configuration: the TOML file's shape ([`FileConfig`]) and
//! the validated [`Config`] the server runs with.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::flush::FlushRules;
use crate::error::{Error, Result};
use shoal_core::config::ConfigError;

/// `examples/stats.toml`, as read from disk. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// UDP addresses to receive statsd datagrams on.
    pub udp: Option<Vec<SocketAddr>>,
    /// A TCP address for newline-separated statsd lines.
    pub tcp: Option<SocketAddr>,
    /// The Prometheus endpoint (`/metrics`); `false` turns it off.
    pub http: Option<HttpSetting>,
    /// The flush interval.
    #[serde(default, with = "humantime_serde")]
    pub flush: Option<Duration>,
    /// A Graphite plaintext receiver (`host:port`).
    pub graphite: Option<String>,
    /// Print each flush as one JSON line on stdout.
    pub json: Option<bool>,
    /// Timer percentiles.
    pub percentiles: Option<Vec<f64>>,
    /// Set every `delete_*` below at once (statsd's `deleteIdleStats`).
    pub delete_idle: Option<bool>,
    pub delete_counters: Option<bool>,
    pub delete_timers: Option<bool>,
    pub delete_sets: Option<bool>,
    pub delete_gauges: Option<bool>,
    /// Idle flushes before a deleted gauge goes.
    pub gauges_max_ttl: Option<u32>,
    /// Receive sockets (and threads) per UDP address; 0 = one per core.
    pub sockets: Option<usize>,
    /// SO_RCVBUF per socket, in bytes.
    pub receive_buffer: Option<usize>,
    /// Largest datagram accepted, in bytes; longer ones are counted and dropped.
    pub max_datagram: Option<usize>,
    /// Distinct series the collector keeps in all (and each receive socket
    /// per interval); lines of new series beyond it are counted and dropped.
    pub max_series: Option<usize>,
    /// How long a series may go without an update before it is forgotten
    /// (`0s`: never).
    #[serde(default, with = "humantime_serde")]
    pub series_ttl: Option<Duration>,
    /// Also report the collector's own counts under statsd's names, as
    /// counters: `statsd.packets_received`, `statsd.metrics_received`,
    /// `statsd.bad_lines_seen` (so statsd dashboards keep working).
    pub statsd_health: Option<bool>,
    /// Pass every datagram received on to this statsd (`host:port`) as
    /// well, as statsd_exporter's relay does, for a gradual migration.
    pub relay: Option<SocketAddr>,
    /// A statsd_exporter mapping file (YAML), reread on SIGHUP; a relative
    /// path is taken from the config file's directory.
    pub mapping_config: Option<PathBuf>,
    /// Also expose every unmapped timer as a cumulative histogram (ms).
    pub timer_histogram: Option<bool>,
    /// Its bucket bounds, in ms.
    pub histogram_buckets: Option<Vec<f64>>,
    /// Control socket name (`shoal ctl`), under the runtime directory.
    pub name: Option<String>,
}

/// `http = "127.0.0.1:9102"` or `http = false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HttpSetting {
    Off(bool),
    Addr(SocketAddr),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP addresses (at least one).
    pub udp: Vec<SocketAddr>,
    /// Optional TCP line input.
    pub tcp: Option<SocketAddr>,
    /// Prometheus endpoint.
    pub http: Option<SocketAddr>,
    /// Flush interval (> 0).
    pub flush: Duration,
    /// Graphite receiver.
    pub graphite: Option<String>,
    /// JSON lines on stdout.
    pub json: bool,
    /// Report the collector's counts as statsd's own counters too.
    pub statsd_health: bool,
    /// What to keep across flushes.
    pub rules: FlushRules,
    /// Receive sockets per UDP address (≥ 1).
    pub sockets: usize,
    /// SO_RCVBUF asked for each socket.
    pub receive_buffer: usize,
    /// Receive buffer per datagram.
    pub max_datagram: usize,
    /// Series kept in all, and per shard and interval.
    pub max_series: usize,
    /// Where every received datagram is passed on to, if anywhere.
    pub relay: Option<SocketAddr>,
    /// The mapping file, if any.
    pub mapping: Option<PathBuf>,
    /// Control socket path, if any.
    pub control: Option<PathBuf>,
}

/// The default UDP address.
pub const DEFAULT_UDP: &str = "127.0.0.1:8125";
/// Default `histogram_buckets` (ms): statsd_exporter's default buckets
/// (the Prometheus client's, in seconds) in statsd's unit.
pub const DEFAULT_HISTOGRAM_BUCKETS_MS: &[f64] = &[
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// The default Prometheus address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:9102";

impl Default for Config {
    fn default() -> Self {
        Config {
            udp: vec![SocketAddr::from(([127, 0, 0, 1], 8125))],
            tcp: None,
            http: Some(SocketAddr::from(([127, 0, 0, 1], 9102))),
            flush: Duration::from_secs(10),
            graphite: None,
            json: false,
            statsd_health: false,
            rules: FlushRules::default(),
            sockets: default_sockets(),
            receive_buffer: 32 << 20,
            max_datagram: 65_535,
            max_series: 1_000_000,
            relay: None,
            mapping: None,
            control: Some(shoal_core::control::socket_path("stats")),
        }
    }
}

fn default_sockets() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parse a duration such as `10s`, `500ms`, `1m 30s`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

impl FileConfig {
    /// `self` with every key that `over` sets replaced (command-line
    /// options over the file).
    pub fn merge(self, over: FileConfig) -> FileConfig {
        FileConfig {
            udp: over.udp.or(self.udp),
            tcp: over.tcp.or(self.tcp),
            http: over.http.or(self.http),
            flush: over.flush.or(self.flush),
            graphite: over.graphite.or(self.graphite),
            json: over.json.or(self.json),
            percentiles: over.percentiles.or(self.percentiles),
            delete_idle: over.delete_idle.or(self.delete_idle),
            delete_counters: over.delete_counters.or(self.delete_counters),
            delete_timers: over.delete_timers.or(self.delete_timers),
            delete_sets: over.delete_sets.or(self.delete_sets),
            delete_gauges: over.delete_gauges.or(self.delete_gauges),
            gauges_max_ttl: over.gauges_max_ttl.or(self.gauges_max_ttl),
            sockets: over.sockets.or(self.sockets),
            receive_buffer: over.receive_buffer.or(self.receive_buffer),
            max_datagram: over.max_datagram.or(self.max_datagram),
            max_series: over.max_series.or(self.max_series),
            series_ttl: over.series_ttl.or(self.series_ttl),
            statsd_health: over.statsd_health.or(self.statsd_health),
            relay: over.relay.or(self.relay),
            mapping_config: over.mapping_config.or(self.mapping_config),
            timer_histogram: over.timer_histogram.or(self.timer_histogram),
            histogram_buckets: over.histogram_buckets.or(self.histogram_buckets),
            name: over.name.or(self.name),
        }
    }

    /// Read and parse a TOML file.
    pub fn load(path: &Path) -> Result<(Self, String)> {
        let (mut f, text): (FileConfig, String) = shoal_core::config::load_toml(path)?;
        if let (Some(m), Some(dir)) = (&f.mapping_config, path.parent()) {
            if m.is_relative() {
                f.mapping_config = Some(dir.join(m));
            }
        }
        Ok((f, text))
    }

    /// Validate into a [`Config`]; `file`/`text` locate errors.
    pub fn into_config(self, file: &Path, text: &str) -> Result<Config> {
        let bad = |key: &str, msg: &str| Error::Config(ConfigError::invalid(file, text, key, msg));
        let mut c = Config::default();
        if let Some(udp) = self.udp {
            if udp.is_empty() {
                return Err(bad("udp", "needs at least one address"));
            }
            c.udp = udp;
        }
        c.tcp = self.tcp;
        match self.http {
            Some(HttpSetting::Off(false)) => c.http = None,
            Some(HttpSetting::Off(true)) => {}
            Some(HttpSetting::Addr(a)) => c.http = Some(a),
            None => {}
        }
        if let Some(f) = self.flush {
            c.flush = f;
        }
        c.graphite = self.graphite;
        c.relay = self.relay;
        c.mapping = self.mapping_config;
        if self.timer_histogram.unwrap_or(false) || self.histogram_buckets.is_some() {
            let b = self
                .histogram_buckets
                .unwrap_or_else(|| DEFAULT_HISTOGRAM_BUCKETS_MS.to_vec());
            if b.is_empty()
                || b.iter().any(|x| !x.is_finite())
                || b.windows(2).any(|w| w[0] >= w[1])
            {
                return Err(bad(
                    "histogram_buckets",
                    "must be finite, increasing, at least one",
                ));
            }
            c.rules.timer_buckets = Some(b);
        }
        c.json = self.json.unwrap_or(false);
        c.statsd_health = self.statsd_health.unwrap_or(false);
        if let Some(p) = self.percentiles {
            c.rules.percentiles = p;
        }
        let all = self.delete_idle.unwrap_or(false);
        c.rules.delete_counters = self.delete_counters.unwrap_or(all);
        c.rules.delete_timers = self.delete_timers.unwrap_or(all);
        c.rules.delete_sets = self.delete_sets.unwrap_or(all);
        c.rules.delete_gauges = self.delete_gauges.unwrap_or(all);
        if let Some(t) = self.gauges_max_ttl {
            c.rules.gauges_max_ttl = t;
        }
        if let Some(s) = self.sockets {
            c.sockets = if s == 0 { default_sockets() } else { s };
        }
        if let Some(b) = self.receive_buffer {
            c.receive_buffer = b;
        }
        if let Some(m) = self.max_datagram {
            c.max_datagram = m;
        }
        if let Some(m) = self.max_series {
            c.max_series = m;
        }
        c.rules.max_series = c.max_series;
        if let Some(t) = self.series_ttl {
            c.rules.series_ttl = (!t.is_zero()).then(|| t.as_secs().max(1));
        }
        if let Some(n) = self.name {
            c.control = Some(shoal_core::control::socket_path(&n));
        }
        c.validate().map_err(|(key, msg)| bad(key, &msg))?;
        Ok(c)
    }
}

impl Config {
    /// Check the ranges; the error names the key.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.flush.is_zero() {
            return Err(("flush", "must be longer than 0".into()));
        }
        if self.http.is_none() && self.graphite.is_none() && !self.json {
            return Err((
                "http",
                "every sink is off: enable http, graphite or json".into(),
            ));
        }
        for p in &self.rules.percentiles {
            if !(*p != 0.0 && p.abs() <= 100.0 && p.is_finite()) {
                return Err((
                    "percentiles",
                    format!("{p} is not in [-100, 0) or (0, 100]"),
                ));
            }
        }
        if self.rules.gauges_max_ttl == 0 {
            return Err(("gauges_max_ttl", "must be at least 1".into()));
        }
        if !(512..=65_535).contains(&self.max_datagram) {
            return Err(("max_datagram", "must be between 512 and 65535".into()));
        }
        if self.max_series == 0 {
            return Err(("max_series", "must be at least 1".into()));
        }
        if self.sockets == 0 || self.sockets > 256 {
            return Err((
                "sockets",
                "must be between 1 and 256 (0 in the file means one per core)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let text = "udp = [\"127.0.0.1:9000\"]\nflush = \"2s\"\nhttp = false\njson = true\npercentiles = [90, 99.9]\ndelete_idle = true\n";
        let (f, t): (FileConfig, _) = (
            shoal_core::config::parse_toml(Path::new("s.toml"), text).unwrap(),
            text,
        );
        let c = f.into_config(Path::new("s.toml"), t).unwrap();
        assert_eq!(c.flush, Duration::from_secs(2));
        assert!(c.http.is_none() && c.json && c.rules.delete_gauges);
        assert_eq!(c.rules.percentiles, vec![90.0, 99.9]);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let text = "json = false\nhttp = false\n";
        let f: FileConfig = shoal_core::config::parse_toml(Path::new("s.toml"), text).unwrap();
        let e = f
            .into_config(Path::new("s.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("s.toml:2: http: every sink is off"), "{e}");
        let text = "percentiles = [0]\n";
        let f: FileConfig = shoal_core::config::parse_toml(Path::new("s.toml"), text).unwrap();
        let e = f
            .into_config(Path::new("s.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("s.toml:1: percentiles:"), "{e}");
        let e =
            shoal_core::config::parse_toml::<FileConfig>(Path::new("s.toml"), "flsh = \"1s\"\n")
                .unwrap_err();
        assert_eq!(e.line, Some(1));
    }
}
