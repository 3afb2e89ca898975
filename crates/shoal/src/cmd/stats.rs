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
  echo 'api.hits:1|c|#env:prod' | nc -u -w0 127.0.0.1 8125 && curl -s 127.0.0.1:9102/metrics

Control socket (name `stats`, see --name): {\"cmd\":\"flush\"} flushes now, {\"cmd\":\"status\"} returns
the health counters, {\"cmd\":\"stop\"} stops (e.g. `shoal ctl --name stats stop`).
SIGTERM/SIGINT also flush the last interval before exit.")]
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
        // A hangup (the terminal closed, or `kill -HUP` out of habit) must
        // not end the collector and lose the interval: nothing it reads is
        // reloadable, so it is logged and ignored.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP ignored: shoal stats rereads nothing at runtime (restart it to change settings)");
            }
        });
        let running = statsd::start(config, shutdown).await?;
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
