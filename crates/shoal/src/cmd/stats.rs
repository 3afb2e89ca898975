//! `shoal stats`: the statsd-compatible collector (see docs/dgram.md).

use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_core::parse_duration;
use shoal_dgram::statsd::{self, FileConfig, HttpSetting};

/// Receive statsd metrics over UDP (and TCP), aggregate them per flush
/// interval exactly as the statsd daemon does, and publish them to Prometheus
/// (`/metrics`), Graphite and/or JSON lines on stdout.
///
/// Command-line options override the same keys of `--config`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  shoal stats                       # UDP 127.0.0.1:8125, /metrics on :9102, flush 10s
  shoal stats --udp 0.0.0.0:8125 --flush 5s --graphite 127.0.0.1:2003
  shoal stats --json --no-http --flush 1s       # one JSON line per flush on stdout
  shoal stats --config examples/stats.toml
  shoal stats --mapping-config examples/stats-mapping.yml   # statsd_exporter mappings; kill -HUP rereads it
  echo 'api.hits:1|c|#env:prod' | nc -u -w0 127.0.0.1 8125 && curl -s 127.0.0.1:9102/metrics

Control socket (name `stats`, see --name): {\"cmd\":\"flush\"} flushes now, {\"cmd\":\"status\"} returns
the health counters, {\"cmd\":\"reload\"} rereads the mapping file, {\"cmd\":\"stop\"} stops
(e.g. `shoal ctl --name stats stop`). SIGHUP rereads the mapping file (a bad one is refused and
logged with file:line; the old mapping stays). SIGTERM/SIGINT flush the last interval before exit.")]
pub struct StatsArgs {
    /// The options (boxed: they are large, and live in the CLI's enum).
    #[command(flatten)]
    pub opts: Box<StatsOptions>,
}

/// The options of `shoal stats`.
#[derive(Args, Debug)]
pub struct StatsOptions {
    /// UDP address to receive statsd datagrams on (repeatable).
    /// [default: 127.0.0.1:8125]
    #[arg(long, value_name = "ADDR:PORT")]
    pub udp: Vec<SocketAddr>,
    /// Also accept newline-separated statsd lines over TCP on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub tcp: Option<SocketAddr>,
    /// Serve the Prometheus endpoint `/metrics` here. [default: 127.0.0.1:9102]
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "no_http")]
    pub http: Option<SocketAddr>,
    /// Turn the Prometheus endpoint off.
    #[arg(long)]
    pub no_http: bool,
    /// Flush interval: rates are per second of this interval. [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub flush: Option<Duration>,
    /// Send every flush to this Graphite plaintext receiver (statsd's legacy namespace).
    #[arg(long, value_name = "HOST:PORT")]
    pub graphite: Option<String>,
    /// Print every flush as one JSON line on stdout.
    #[arg(long)]
    pub json: bool,
    /// Timer percentile (repeatable; negative = top N%). [default: 90 95 99]
    #[arg(long = "percentile", value_name = "P", allow_negative_numbers = true)]
    pub percentiles: Vec<f64>,
    /// Drop counters, timers, sets and gauges that had no update in an interval
    /// (statsd's deleteIdleStats) instead of reporting 0 / the last value.
    #[arg(long)]
    pub delete_idle: bool,
    /// Receive sockets (and threads) per UDP address, sharing it with
    /// SO_REUSEPORT. [default: one per core]
    #[arg(long, value_name = "N")]
    pub sockets: Option<usize>,
    /// SO_RCVBUF per socket, in bytes. [default: 33554432 (32 MiB)]
    #[arg(long, value_name = "BYTES")]
    pub receive_buffer: Option<usize>,
    /// Largest datagram accepted; longer ones are counted and dropped. [default: 65535]
    #[arg(long, value_name = "BYTES")]
    pub max_datagram: Option<usize>,
    /// Distinct series the collector keeps in all (counters, gauges, timers,
    /// sets); lines of new series beyond it are counted
    /// (shoal_stats_series_dropped_total) and dropped. [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_series: Option<usize>,
    /// Forget a series after this long without an update (counted in
    /// shoal_stats_series_expired_total); `0s` keeps series forever, as
    /// statsd does. [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub series_ttl: Option<Duration>,
    /// Also report the collector's own counts as statsd does, as counters
    /// statsd.packets_received, statsd.metrics_received and
    /// statsd.bad_lines_seen (in every sink).
    #[arg(long)]
    pub statsd_health: bool,
    /// Pass every datagram received on to another statsd as well (as
    /// statsd_exporter's --statsd.relay.address does), to migrate gradually;
    /// what cannot be passed on is counted in shoal_stats_relay_dropped_total.
    #[arg(long, value_name = "HOST:PORT")]
    pub relay: Option<std::net::SocketAddr>,
    /// A prometheus/statsd_exporter mapping file (YAML: `mappings:` with
    /// glob or regex `match`, `name`, `labels`, `observer_type`, `ttl`, ...;
    /// see docs/dgram.md). Reread on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub mapping_config: Option<PathBuf>,
    /// Also expose every timer no mapping takes as a cumulative Prometheus
    /// histogram in ms (`<name>_bucket`), aggregatable across instances; its
    /// last-interval statsd quantiles move to `<name>_interval`.
    #[arg(long)]
    pub timer_histogram: bool,
    /// A bucket bound for --timer-histogram, in ms (repeatable).
    /// [default: 5 10 25 50 100 250 500 1000 2500 5000 10000]
    #[arg(long = "histogram-bucket", value_name = "MS")]
    pub histogram_buckets: Vec<f64>,
    /// Control socket name (under $SHOAL_RUNTIME_DIR). [default: stats]
    #[arg(long)]
    pub name: Option<String>,
    /// A TOML file with the same keys (see examples/stats.toml).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl StatsOptions {
    fn overrides(&self) -> FileConfig {
        FileConfig {
            udp: (!self.udp.is_empty()).then(|| self.udp.clone()),
            tcp: self.tcp,
            http: match (self.no_http, self.http) {
                (true, _) => Some(HttpSetting::Off(false)),
                (false, Some(a)) => Some(HttpSetting::Addr(a)),
                _ => None,
            },
            flush: self.flush,
            graphite: self.graphite.clone(),
            json: self.json.then_some(true),
            percentiles: (!self.percentiles.is_empty()).then(|| self.percentiles.clone()),
            delete_idle: self.delete_idle.then_some(true),
            sockets: self.sockets,
            receive_buffer: self.receive_buffer,
            max_datagram: self.max_datagram,
            max_series: self.max_series,
            series_ttl: self.series_ttl,
            statsd_health: self.statsd_health.then_some(true),
            relay: self.relay,
            mapping_config: self.mapping_config.clone(),
            timer_histogram: self.timer_histogram.then_some(true),
            histogram_buckets: (!self.histogram_buckets.is_empty())
                .then(|| self.histogram_buckets.clone()),
            name: self.name.clone(),
            ..FileConfig::default()
        }
    }
}

pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    let args = args.opts;
    let (file, path, text) = match &args.config {
        Some(p) => {
            let (f, text) = FileConfig::load(p)?;
            (f, p.clone(), text)
        }
        None => (
            FileConfig::default(),
            Path::new("<command line>").to_path_buf(),
            String::new(),
        ),
    };
    let config = file.merge(args.overrides()).into_config(&path, &text)?;
    super::run_with_signals(super::Threads::Exactly(2), None, |shutdown| async move {
        // A hangup rereads the mapping file (as statsd_exporter rereads
        // its own); it never ends the collector and loses the interval.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let running = statsd::start(config, shutdown).await?;
        let reload = running.mapping.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match &reload {
                    None => tracing::info!("SIGHUP: no mapping file to reread (--mapping-config); other settings need a restart"),
                    Some(r) => match r.reload() {
                        Ok(n) => tracing::info!(file = %r.path().display(), mappings = n, "mapping file reloaded"),
                        Err(e) => tracing::error!(error = %e, "mapping file refused; the previous mapping stays"),
                    },
                }
            }
        });
        let show = |a: Option<SocketAddr>| a.map_or("-".to_string(), |a| a.to_string());
        let udp: Vec<String> = running.udp.iter().map(|a| a.to_string()).collect();
        // One stable line for scripts and tests to wait on.
        let ready = format!(
            "shoal stats: ready udp={} tcp={} http={} control={}\n",
            udp.join(","),
            show(running.tcp),
            show(running.http),
            running
                .control
                .as_ref()
                .map_or("-".to_string(), |p| p.display().to_string())
        );
        shoal_core::output::stderr(ready.as_bytes());
        running.wait().await?;
        Ok(())
    })
}
