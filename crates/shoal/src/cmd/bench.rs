//! `shoal bench`: load generators used by bench/ (`shoal bench statsd`,
//! `shoal bench amqp`).

use anyhow::Context;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

use shoal_dgram::loadgen::{self, Kind, LoadSpec};
use shoal_dgram::statsd::parse_duration;

/// Load generators for the benchmarks in bench/.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Send statsd lines at a fixed rate with sendmmsg; prints a JSON report
    /// (metrics, counter_metrics, datagrams, send_errors, seconds, rate).
    #[command(after_help = "\
Examples:
  shoal bench statsd --rate 200000 --duration 5s                # counters to 127.0.0.1:8125
  shoal bench statsd --target 127.0.0.1:9125 --mix c,ms,g,s --names 1000

With a counters-only mix every line is `<prefix>.<i>:1|c`, so the sum of the
collector's counters over all flushes must equal `counter_metrics`.")]
    Statsd(Box<StatsdLoad>),
    /// Publish and consume through an AMQP broker (PerfTest's flags) and
    /// report rates and latency; see bench/broker.sh.
    Amqp(Box<super::bench_amqp::BenchAmqpArgs>),
}

#[derive(Args, Debug)]
pub struct StatsdLoad {
    /// Collector address.
    #[arg(long, default_value = "127.0.0.1:8125", value_name = "ADDR:PORT")]
    pub target: SocketAddr,
    /// Metric lines per second, all senders together.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// How long to send.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Distinct metric names.
    #[arg(long, default_value_t = 100)]
    pub names: usize,
    /// Metric lines per datagram.
    #[arg(long, default_value_t = 90)]
    pub lines: usize,
    /// Metric types, cycled line by line: c, ms, g, s (comma-separated).
    #[arg(long, default_value = "c", value_delimiter = ',')]
    pub mix: Vec<Kind>,
    /// Sending sockets, one thread each (the collector's SO_REUSEPORT
    /// sockets are chosen by the sender's port).
    #[arg(long, default_value_t = 2)]
    pub senders: usize,
    /// Metric name prefix.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Amqp(a) => super::bench_amqp::run(*a),
        BenchCommand::Statsd(a) => {
            let spec = LoadSpec {
                target: a.target,
                rate: a.rate,
                duration: a.duration,
                names: a.names,
                lines_per_datagram: a.lines,
                mix: a.mix.clone(),
                senders: a.senders,
                prefix: a.prefix.clone(),
            };
            let report = loadgen::run(&spec)?;
            println!(
                "{}",
                serde_json::to_string(&report).context("encode the report")?
            );
            Ok(())
        }
    }
}
