//! Command-line definition (clap derive) and dispatch to `cmd::*`.

use clap::{Args, Parser, Subcommand};

use crate::cmd;

/// Shoal scales network services across the cores of one machine and across
/// machines: a cluster supervisor, a load-balancing proxy, an AMQP broker and
/// a UDP metrics collector, in one binary.
#[derive(Parser, Debug)]
#[command(name = "shoal", version, propagate_version = true)]
#[command(
    after_help = "Run `shoal <COMMAND> --help` for the options and examples of each part.\n\
Logs go to stderr; set SHOAL_LOG (e.g. SHOAL_LOG=debug) for more detail."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options that every subcommand accepts.
#[derive(Args, Debug)]
pub struct GlobalArgs {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// More log detail (-v debug, -vv trace). SHOAL_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run N copies of a server on one shared port (Node's cluster, for any language).
    Cluster(Box<cmd::cluster::ClusterArgs>),
    /// Talk to a running cluster, proxy or broker through its control socket.
    Ctl(cmd::ctl::CtlArgs),
    /// HTTP/TCP reverse proxy and load balancer (nginx upstream semantics).
    Proxy(cmd::proxy::ProxyArgs),
    /// AMQP 0-9-1 message broker for RabbitMQ clients.
    Broker(cmd::broker::BrokerArgs),
    /// statsd-compatible UDP metrics collector.
    Stats(cmd::stats::StatsArgs),
    /// A whole topology from one file: broker, stats, clusters, proxy, in order.
    Up(cmd::up::UpArgs),
    /// The built-in HTTP worker that `shoal up` runs for the default
    /// topology's clusters when `node` is not on the PATH.
    #[command(hide = true)]
    UpWorker,
    /// Send and receive UDP datagrams and multicast (the chapter's dgram examples).
    Dgram(cmd::dgram::DgramArgs),
    /// Load generators used by bench/ (e.g. `shoal bench statsd`).
    Bench(cmd::bench::BenchArgs),
}

/// Log to stderr through [`shoal_core::output`], so a log reader that stops
/// reading or goes away costs log lines, never the server (a failed write is
/// not reported: tracing's own report of it would panic on a closed stderr).
/// Keep the guard until the process ends.
pub fn init_logging(g: &GlobalArgs) -> shoal_core::output::Guard {
    use tracing_subscriber::EnvFilter;
    let default = if g.quiet {
        "warn"
    } else {
        match g.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let guard = shoal_core::output::init();
    use shoal_core::output::{Queued, Which};
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Queued(Which::Stderr))
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if g.log_json {
        b.json().init();
    } else {
        b.init();
    }
    guard
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cluster(a) => cmd::cluster::run(*a),
        Command::Ctl(a) => cmd::ctl::run(a),
        Command::Proxy(a) => cmd::proxy::run(a),
        Command::Broker(a) => cmd::broker::run(a),
        Command::Stats(a) => cmd::stats::run(a),
        Command::Up(a) => cmd::up::run(a),
        Command::UpWorker => cmd::up::worker(),
        Command::Dgram(a) => cmd::dgram::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    }
}
