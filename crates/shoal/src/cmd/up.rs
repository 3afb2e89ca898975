//! `shoal up`: a whole topology (broker, collector, clusters, proxy) from one
//! file, in one process. Loads the file (or the built-in default) into a
//! `shoal_up::Plan` and runs it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

/// Start a topology: `[broker]`, `[stats]`, any number of `[cluster.NAME]`
/// and a `[proxy]` in front, each with the same keys as its own `--config`
/// file. Started in that order (clusters until their workers are online),
/// stopped in reverse on TERM/INT. With no FILE, the built-in default: the
/// chapter end to end on loopback.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  shoal up                          # the built-in default (two Node clusters, proxy on 127.0.0.1:8080, broker, stats)
  shoal up --print-default > my.toml
  shoal up my.toml
  shoal up --check my.toml          # validate only (file:line: key: message on error)
  shoal ctl status                  # every part of the running topology (--json for programs)
  shoal ctl --name up stop

In a proxy upstream, servers = \"cluster:web\" (or [\"cluster:a\", \"cluster:b\"]) means the
addresses cluster `web` serves. Clusters get AMQP_URL, STATSD_HOST and STATSD_PORT.
Docs: docs/up.md")]
pub struct UpArgs {
    /// The topology file [default: the built-in one; see --print-default].
    #[arg(value_name = "FILE.toml")]
    pub file: Option<PathBuf>,
    /// Print the built-in default topology and exit.
    #[arg(long, conflicts_with_all = ["file", "check"])]
    pub print_default: bool,
    /// Validate the file (or the default), print its parts and exit.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.print_default {
        print!("{}", shoal_up::DEFAULT_TOPOLOGY);
        return Ok(());
    }
    let mut plan = match &args.file {
        Some(p) => shoal_up::load(p)?,
        None => shoal_up::default_plan()?,
    };
    let node_on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("node").is_file()));
    // The default's Node worker (examples/up/web.js) becomes the built-in
    // one (the banner says why) where it could not run, or could not publish
    // its events (amqplib not installed where NODE_PATH points, as when the
    // default runs outside a checkout).
    let why = if !node_on_path {
        Some("node is not on PATH".to_string())
    } else if !shoal_up::default_worker_loads_amqplib(&plan) {
        Some(
            "node cannot load the amqplib module that examples/up/web.js publishes with \
             (in a checkout: cd tests/node && npm ci)"
                .to_string(),
        )
    } else {
        None
    };
    if let Some(why) = why {
        let exe = std::env::current_exe().context("the built-in worker: where is shoal?")?;
        shoal_up::use_builtin_worker(&mut plan, &exe);
        plan.worker_note = Some(why);
    }
    if args.check {
        for c in &plan.clusters {
            println!(
                "cluster.{} workers {} serves {:?}",
                c.table, c.spec.workers, c.serves
            );
        }
        if let Some(b) = &plan.broker {
            println!("broker {}", b.listen);
        }
        if let Some(s) = &plan.stats {
            println!("stats udp {:?}", s.udp);
        }
        if let Some(p) = &plan.proxy {
            for l in &p.listeners {
                println!("proxy {}", l.address);
            }
        }
        println!("{}: ok", plan.file.display());
        return Ok(());
    }
    super::run_with_signals(
        super::Threads::PerCore,
        Some(Duration::from_secs(2)),
        |shutdown| async move {
            shoal_up::run(plan, shutdown).await?;
            Ok(())
        },
    )
}

/// `shoal up-worker` (hidden): the built-in HTTP worker, see `shoal_up::worker`.
pub fn worker() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(shoal_up::worker::run())
        .context("shoal up-worker")
}
