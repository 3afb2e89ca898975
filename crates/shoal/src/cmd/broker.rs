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
shoal ctl broker list-queues                   # like rabbitmqctl list_queues\n  \
shoal broker --sched-batch                     # less CPU per message, a little more latency\n\n\
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
    /// Run under Linux's SCHED_BATCH scheduling policy, as `chrt -b 0` or
    /// systemd's CPUSchedulingPolicy=batch would: a frame that arrives while
    /// another task runs on the CPU no longer preempts it, so the broker
    /// wakes less often and reads more per wake-up. With clients on the same
    /// cores this cut CPU per message by 10-20% and added about 20 µs to the
    /// median latency (docs/broker.md, "CPU and scheduling").
    #[arg(long)]
    pub sched_batch: bool,
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
    if args.sched_batch {
        // Before the runtime starts: the threads it makes inherit the policy.
        batch_scheduling()?;
        tracing::info!("scheduling policy SCHED_BATCH (--sched-batch)");
    }
    super::run_with_signals(super::Threads::PerCore, None, |shutdown| async move {
        shoal_broker::run(config, shutdown).await?;
        Ok(())
    })
}

/// Put every thread of this process under SCHED_BATCH: those running now
/// (the log writers) and, since a new thread inherits its creator's policy,
/// the runtime's, started after this.
fn batch_scheduling() -> anyhow::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    let tasks = std::fs::read_dir("/proc/self/task")
        .map_err(|e| anyhow::anyhow!("--sched-batch: cannot list /proc/self/task: {e}"))?;
    for tid in tasks.flatten().filter_map(|t| t.file_name().to_str()?.parse().ok()) {
        // SAFETY: sched_setscheduler reads `param` and changes only the
        // policy of thread `tid` of this process.
        if unsafe { libc::sched_setscheduler(tid, libc::SCHED_BATCH, &param) } != 0 {
            let e = std::io::Error::last_os_error();
            anyhow::bail!("--sched-batch: cannot set the SCHED_BATCH policy: {e}");
        }
    }
    Ok(())
}
