//! `shoal broker`: run the AMQP 0-9-1 broker (RabbitMQ's clients work unchanged).

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Run an AMQP 0-9-1 message broker. With no flags it listens on
/// 127.0.0.1:5672, keeps its data in ./shoal-broker-data, serves the admin
/// API on 127.0.0.1:15672 and accepts user guest/guest from loopback only.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
shoal broker                                   # 127.0.0.1:5672, data in ./shoal-broker-data\n  \
shoal broker --listen 127.0.0.1:5673 --data-dir /var/lib/shoal\n  \
shoal broker --config examples/broker.toml     # users, vhosts, permissions, limits\n  \
curl -su guest:guest 127.0.0.1:15672/api/queues # RabbitMQ's management API; /metrics\n  \
shoal ctl broker list-queues                   # like rabbitmqctl list_queues\n\n\
SIGTERM/SIGINT: stop accepting, close connections with 320, fsync the store, exit.\n\
SIGHUP: reread users and permissions from --config (for new logins; the rest needs a restart).")]
pub struct BrokerArgs {
    /// TOML configuration (see examples/broker.toml). Flags override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// AMQP address to listen on [default: 127.0.0.1:5672].
    #[arg(long, short = 'l', value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Directory for durable definitions and message segments (created if missing)
    /// [default: ./shoal-broker-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin HTTP address for /metrics and /api/* [default: 127.0.0.1:15672].
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "no_admin")]
    pub admin: Option<SocketAddr>,
    /// Do not serve the admin HTTP API.
    #[arg(long)]
    pub no_admin: bool,
    /// Control socket name, for `shoal ctl broker --name NAME` [default: broker].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => shoal_broker::Config::load(path)?,
        None => shoal_broker::Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(a) = args.admin {
        config.admin_listen = Some(a);
    }
    if args.no_admin {
        config.admin_listen = None;
    }
    if let Some(n) = args.name {
        config.name = n;
    }
    super::run_with_signals(super::Threads::PerCore, None, |shutdown| async move {
        shoal_broker::run(config, shutdown).await?;
        Ok(())
    })
}
