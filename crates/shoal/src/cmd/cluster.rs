//! `shoal cluster`: run N copies of a server on shared listening sockets,
//! supervised (the chapter's `cluster`, for any language). Parses the flags
//! into a `ClusterSpec` and runs `shoal_cluster::Cluster`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shoal_cluster::{Cluster, ClusterSpec, ListenSpec, Ready, WorkerCount};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  # Everything from a file (flags given here win over it):
  shoal cluster --config examples/cluster/cluster.toml

  # The chapter's cluster program, unchanged (listen(8080) in each worker;
  # Shoal speaks Node's cluster protocol and shares one socket):
  shoal cluster -w 2 --bind-host 127.0.0.1 -- node examples/cluster/chapter_cluster.js

  # A server that takes its socket as fd 3 (any language), on every core:
  shoal cluster -w auto -l 127.0.0.1:8080 -- node examples/cluster/server.js

  # Two gunicorn workers on one inherited socket (gunicorn reads LISTEN_FDS):
  shoal cluster -w 2 -l 127.0.0.1:8000 --name web -- gunicorn app:app

  # Node's round-robin: the primary accepts, each worker gets connections in turn:
  shoal cluster -w 2 --schedule rr --bind-host 127.0.0.1 -- node examples/cluster/chapter_cluster.js

  # Each worker its own SO_REUSEPORT socket; ready when it sends \"ready\" over IPC:
  shoal cluster -w 4 -l 127.0.0.1:8080 --reuse-port --ready ipc -- node server.js

Workers get their listeners as fds 3, 4, ... with LISTEN_FDS, LISTEN_PID and
LISTEN_FDNAMES (systemd socket activation), SHOAL_WORKER_ID (1..N) and a
Node-compatible IPC channel (NODE_CHANNEL_FD). Node workers also get
NODE_UNIQUE_ID: cluster.isWorker is true, and their servers get their
sockets from Shoal as from Node's own primary.

  # PM2-style: log files with rotation, reload on file change and at 03:00:
  shoal cluster -w 2 --log-dir logs --log-max-size 10M --watch . \\
      --restart-cron \"0 3 * * *\" -- node app.js

Signals: TERM/INT stop gracefully, HUP rolling reload, TTIN/TTOU one worker
more/less, USR1 reopen the --log-dir files. At runtime: shoal ctl --name NAME
status|reload|restart|scale N|signal SIG|logs|flush|stop|send JSON")]
pub struct ClusterArgs {
    /// Read the settings from a TOML file (see examples/cluster/cluster.toml);
    /// flags given here win over the file.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Number of workers, or `auto` for one per core [default: auto].
    #[arg(short, long, value_name = "N|auto")]
    pub workers: Option<String>,
    /// An address every worker serves, bound once by the primary:
    /// `host:port`, `[::1]:port` or `unix:/path`, optionally `name=ADDR`
    /// (the name goes into LISTEN_FDNAMES). Repeat for more.
    #[arg(short, long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Give each worker its own SO_REUSEPORT socket on the same address (the
    /// kernel spreads connections evenly) instead of one shared socket.
    #[arg(long)]
    pub reuse_port: bool,
    /// When a worker counts as ready: `ipc` (it sends "ready" or
    /// {"cmd":"online"}), `notify` (READY=1 on $NOTIFY_SOCKET) or `delay:MS`
    /// [default: delay:500].
    #[arg(long, value_name = "MODE")]
    pub ready: Option<String>,
    /// How long a worker asked to stop gets before SIGKILL (e.g. 10s, 500ms):
    /// it is sent the IPC disconnect, then SIGTERM unless it exited within
    /// 250 ms (or half the grace, if shorter) [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// How long a new worker may take to become ready (PM2's
    /// listen_timeout): one that is not is killed, named in the log and
    /// restarted with backoff; during a reload the reload fails and the old
    /// workers keep serving [default: 60s].
    #[arg(long, value_name = "DURATION", alias = "ready-timeout")]
    pub listen_timeout: Option<String>,
    /// The cluster's name: worker output prefix `[NAME id]` and control
    /// socket for `shoal ctl --name` [default: cluster].
    #[arg(long)]
    pub name: Option<String>,
    /// Print events as JSON lines on stdout (worker stdout then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Do not relay the workers' stdout/stderr.
    #[arg(long)]
    pub silent: bool,
    /// Consecutive quick failures after which a worker id gives up [default: 10].
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<u32>,
    /// A worker that stayed up this long after being ready is healthy (its
    /// failure count resets) [default: 1s].
    #[arg(long, value_name = "DURATION")]
    pub min_uptime: Option<String>,
    /// Do not replace workers that exit; the primary ends when they all have.
    #[arg(long)]
    pub no_restart: bool,
    /// Replace every worker this often, one at a time as a rolling reload
    /// does (e.g. 6h; PM2's cron restart for a fixed period).
    #[arg(long, value_name = "DURATION")]
    pub restart_every: Option<String>,
    /// Rolling reload at each match of a cron expression, local time (PM2's
    /// --cron-restart): 5 fields, e.g. "0 3 * * *", or 6 with seconds first.
    #[arg(long, value_name = "EXPR")]
    pub restart_cron: Option<String>,
    /// Rolling reload when a file under PATH changes (directories
    /// recursively). Repeat for more paths.
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<std::path::PathBuf>,
    /// A glob whose matching changes do not count (against each path
    /// component and the path under the watched one); repeat for more
    /// [default: node_modules, .git].
    #[arg(long, value_name = "GLOB", requires = "watch")]
    pub watch_ignore: Vec<String>,
    /// How long files must stay unchanged before the --watch reload [default: 1s].
    #[arg(long, value_name = "DURATION", requires = "watch")]
    pub watch_delay: Option<String>,
    /// Write the workers' stdout and stderr to NAME-out.log and
    /// NAME-error.log in DIR (created if missing) instead of our output,
    /// each line prefixed with the time and the worker; SIGUSR1 reopens
    /// them (logrotate). See them with `shoal ctl logs`.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<std::path::PathBuf>,
    /// Write stdout and stderr to one file, NAME.log.
    #[arg(long, requires = "log_dir")]
    pub merge_logs: bool,
    /// Rotate a log file before it passes SIZE (e.g. 10M): NAME-out.log
    /// becomes NAME-out.log.1, older ones shift up.
    #[arg(long, value_name = "SIZE", requires = "log_dir")]
    pub log_max_size: Option<String>,
    /// How many rotated files to keep per log (0..1000) [default: 5].
    #[arg(long, value_name = "N", requires = "log_dir")]
    pub log_keep: Option<u32>,
    /// Print a systemd service unit that runs this same command line from
    /// this directory (reload = SIGHUP = rolling reload), then exit; like
    /// `pm2 startup`. The primary binds its own sockets.
    #[arg(long)]
    pub print_systemd_unit: bool,
    /// Replace a worker whose resident memory passes SIZE (e.g. 200M, 1G),
    /// one at a time as a rolling reload does (PM2's --max-memory-restart).
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// Speak Node's cluster protocol to the workers (NODE_UNIQUE_ID;
    /// `listen(8080)` asks the primary for the socket): `auto` when the
    /// command is `node`, `on` or `off` [default: auto].
    #[arg(long, value_name = "auto|on|off")]
    pub node_cluster: Option<String>,
    /// How Node workers' TCP servers get connections: `shared` (one socket,
    /// the kernel picks the worker), `reuse-port` (a SO_REUSEPORT socket per
    /// worker) or `rr` (Node's round-robin: the primary accepts and hands
    /// each connection to the next worker) [default: shared, or rr when
    /// NODE_CLUSTER_SCHED_POLICY=rr].
    #[arg(long, value_name = "shared|reuse-port|rr")]
    pub schedule: Option<String>,
    /// The address a Node worker's `listen(PORT)` binds when it names no
    /// host (Node itself binds every interface, `::`), e.g. 127.0.0.1.
    #[arg(long, value_name = "IP")]
    pub bind_host: Option<std::net::IpAddr>,
    /// The worker command and its arguments (after `--`); required unless the
    /// config file has `command`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

fn duration(flag: &str, s: &str) -> anyhow::Result<Duration> {
    shoal_core::parse_duration(s)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("--{flag}"))
}

impl ClusterArgs {
    fn spec(&self) -> anyhow::Result<ClusterSpec> {
        let mut spec = match &self.config {
            Some(path) => shoal_cluster::file::load(path)?,
            None => ClusterSpec::new("", Vec::new()),
        };
        if let Some(flag) = self.command.first().filter(|c| c.starts_with('-')) {
            // Clap hands anything it does not know to COMMAND: a mistyped
            // flag would otherwise be run as a program.
            anyhow::bail!(
                "unknown option {flag} (see `shoal cluster --help`; the worker command goes after `--`)"
            );
        }
        if let Some((exec, args)) = self.command.split_first() {
            spec.exec = exec.into();
            spec.args = args.iter().map(Into::into).collect();
        }
        if spec.exec.is_empty() {
            anyhow::bail!("no worker command: give it after `--` (e.g. `-- node server.js`) or as `command` in --config");
        }
        if let Some(n) = &self.name {
            spec.name = n.clone();
        }
        if let Some(w) = &self.workers {
            spec.workers = w.parse::<WorkerCount>()?.0;
        }
        if !self.listen.is_empty() {
            spec.listen = self
                .listen
                .iter()
                .map(|l| l.parse::<ListenSpec>())
                .collect::<Result<_, _>>()?;
        }
        spec.reuse_port |= self.reuse_port;
        if let Some(r) = &self.ready {
            spec.ready = r.parse::<Ready>()?;
        }
        if let Some(g) = &self.grace {
            spec.grace = duration("grace", g)?;
        }
        if let Some(t) = &self.listen_timeout {
            spec.listen_timeout = duration("listen-timeout", t)?;
        }
        if let Some(c) = &self.restart_cron {
            spec.restart_cron = Some(c.parse()?);
        }
        if !self.watch.is_empty() {
            let mut w = spec
                .watch
                .take()
                .unwrap_or_else(|| shoal_cluster::watch::WatchSpec::new(Vec::new()));
            w.paths = self.watch.clone();
            if !self.watch_ignore.is_empty() {
                w.ignore = self.watch_ignore.clone();
            }
            if let Some(d) = &self.watch_delay {
                w.delay = duration("watch-delay", d)?;
            }
            spec.watch = Some(w);
        }
        if let Some(d) = &self.log_dir {
            let mut l = spec
                .logs
                .take()
                .unwrap_or_else(|| shoal_cluster::logfile::LogSpec::new(d));
            l.dir = d.clone();
            l.merge |= self.merge_logs;
            if let Some(m) = &self.log_max_size {
                l.max_size = Some(shoal_cluster::spec::parse_size(m).context("--log-max-size")?);
            }
            if let Some(k) = self.log_keep {
                l.keep = k;
            }
            spec.logs = Some(l);
        }
        if let Some(m) = &self.min_uptime {
            spec.min_uptime = duration("min-uptime", m)?;
        }
        if let Some(m) = self.max_restarts {
            spec.max_restarts = m;
        }
        if let Some(e) = &self.restart_every {
            spec.restart_every = Some(duration("restart-every", e)?);
        }
        if let Some(m) = &self.max_memory {
            spec.max_memory = Some(shoal_cluster::spec::parse_size(m).context("--max-memory")?);
        }
        if let Some(n) = &self.node_cluster {
            spec.node_cluster = n.parse()?;
        }
        if let Some(s) = &self.schedule {
            spec.schedule = Some(s.parse()?);
        }
        if let Some(h) = self.bind_host {
            spec.bind_host = Some(h);
        }
        spec.silent |= self.silent;
        spec.restart &= !self.no_restart;
        spec.worker_stdout_to_stderr = self.json;
        spec.signals = true;
        spec.validate()?;
        Ok(spec)
    }
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let spec = args.spec()?;
    if args.print_systemd_unit {
        print!("{}", systemd_unit(&spec.name)?);
        return Ok(());
    }
    // One thread: the primary only supervises, and PR_SET_PDEATHSIG ties the
    // workers to the thread that started them, which must live as long as we do.
    super::run_with_signals(super::Threads::One, None, |shutdown| async move {
        let (cluster, running) = Cluster::new(spec, shutdown.clone()).await?;
        if args.json {
            let mut events = cluster.subscribe();
            tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(e) => {
                            if let Ok(mut line) = serde_json::to_string(&e) {
                                line.push('\n');
                                // Never blocks: a stuck reader costs lines.
                                shoal_core::output::stdout(line.as_bytes());
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(
                                "{n} events dropped from --json output (stdout too slow)"
                            )
                        }
                        Err(_) => break,
                    }
                }
            });
        }
        cluster.begin().await?;
        running.wait().await?;
        Ok(())
    })
}

/// A systemd service unit that runs the command line this was called with
/// (less `--print-systemd-unit`), from the current directory: the primary
/// is the main process, SIGTERM stops it gracefully, SIGHUP (`systemctl
/// reload`) is a rolling reload, and it is restarted if it dies.
fn systemd_unit(name: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let cwd = std::env::current_dir()?;
    let quote = |a: &str| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
        {
            a.to_string()
        } else {
            format!(
                "\"{}\"",
                a.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('%', "%%")
            )
        }
    };
    let mut line = vec![quote(&exe.to_string_lossy())];
    line.extend(
        std::env::args()
            .skip(1)
            .filter(|a| a != "--print-systemd-unit")
            .map(|a| quote(&a)),
    );
    Ok(format!(
        "# shoal cluster {name}: install as /etc/systemd/system/shoal-{name}.service, then\n\
         #   systemctl daemon-reload && systemctl enable --now shoal-{name}\n\
         [Unit]\n\
         Description=shoal cluster {name}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         WorkingDirectory={cwd}\n\
         ExecStart={cmd}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         KillMode=mixed\n\
         TimeoutStopSec=30\n\
         Restart=on-failure\n\
         RestartSec=1\n\
         LimitNOFILE=65536\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        cwd = cwd.display(),
        cmd = line.join(" "),
    ))
}
