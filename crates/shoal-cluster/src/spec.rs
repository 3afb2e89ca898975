//! What a cluster runs: the worker command, how many workers, which
//! addresses they share, how readiness is detected and the supervision
//! limits. Parsing of the textual forms the CLI accepts lives here too.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::ClusterError;

/// A listening address: TCP (`127.0.0.1:8080`, `[::1]:8080`) or a Unix
/// socket path (`unix:/run/app.sock`), with an optional name for
/// `LISTEN_FDNAMES` (`http=127.0.0.1:8080`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// The name passed in `LISTEN_FDNAMES` (default `listen<N>`).
    pub name: Option<String>,
    /// The address.
    pub addr: ListenAddr,
}

/// The address part of a [`ListenSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(std::net::SocketAddr),
    /// A Unix stream socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FromStr for ListenSpec {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rest) = match s.split_once('=') {
            Some((n, r)) if !n.is_empty() && !n.contains(':') && !n.contains('/') => {
                (Some(n.to_string()), r)
            }
            _ => (None, s),
        };
        let addr = if let Some(p) = rest.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(ClusterError::Spec(format!(
                    "--listen {s}: empty Unix socket path"
                )));
            }
            ListenAddr::Unix(PathBuf::from(p))
        } else {
            let a = rest.parse::<std::net::SocketAddr>().map_err(|_| {
                ClusterError::Spec(format!(
                    "--listen {s}: expected host:port (127.0.0.1:8080, [::1]:8080) or unix:/path"
                ))
            })?;
            ListenAddr::Tcp(a)
        };
        Ok(ListenSpec { name, addr })
    }
}

/// How the primary learns that a worker is ready to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// The worker sends `"ready"` (PM2's convention) or `{"cmd":"online"}` on the IPC channel.
    Ipc,
    /// The worker sends `READY=1` to `$NOTIFY_SOCKET` (systemd's `sd_notify`).
    Notify,
    /// The worker is considered ready this long after it started.
    Delay(Duration),
    /// A Node worker is ready once its server listens (Node's cluster
    /// `listening`); with `Delay`, the default, that also counts, earlier.
    Listening,
}

impl FromStr for Ready {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ipc" => Ok(Ready::Ipc),
            "notify" => Ok(Ready::Notify),
            "listening" => Ok(Ready::Listening),
            _ => match s.strip_prefix("delay:").map(str::parse::<u64>) {
                Some(Ok(ms)) => Ok(Ready::Delay(Duration::from_millis(ms))),
                _ => Err(ClusterError::Spec(format!(
                    "--ready {s}: expected ipc, notify, listening or delay:MS (e.g. delay:500)"
                ))),
            },
        }
    }
}

/// How many workers: a number, or `auto` (one per core).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerCount(pub usize);

impl FromStr for WorkerCount {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(WorkerCount(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ));
        }
        match s.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(WorkerCount(n)),
            _ => Err(ClusterError::Spec(format!(
                "--workers {s}: expected 1..1024 or auto"
            ))),
        }
    }
}

/// Everything a primary needs to run.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The cluster's name: log prefix, control socket name.
    pub name: String,
    /// The worker program.
    pub exec: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment for every worker.
    pub env: Vec<(OsString, OsString)>,
    /// Initial number of workers.
    pub workers: usize,
    /// Addresses every worker serves.
    pub listen: Vec<ListenSpec>,
    /// Give each worker its own `SO_REUSEPORT` socket instead of sharing one.
    pub reuse_port: bool,
    /// Readiness detection.
    pub ready: Ready,
    /// How long a worker being stopped gets, from its IPC disconnect (SIGTERM
    /// follows shortly after), before SIGKILL.
    pub grace: Duration,
    /// How long a new worker may take to become ready (PM2's
    /// `listen_timeout`): one that is not is killed and reported by id (and
    /// restarted with backoff); in a reload, the reload fails and the old
    /// workers keep serving.
    pub listen_timeout: Duration,
    /// Do not relay the workers' stdout/stderr.
    pub silent: bool,
    /// Relay the workers' stdout to our stderr (keeps our stdout for `--json` events).
    pub worker_stdout_to_stderr: bool,
    /// Replace workers that die unexpectedly.
    pub restart: bool,
    /// Consecutive quick failures after which a worker slot gives up.
    pub max_restarts: u32,
    /// A worker that ran at least this long is healthy: its failure count resets.
    pub min_uptime: Duration,
    /// First restart delay; doubles with each quick failure.
    pub backoff_initial: Duration,
    /// Largest restart delay.
    pub backoff_max: Duration,
    /// Replace every worker this often, as a rolling reload (PM2's
    /// `cron_restart` for a fixed period): for apps that leak or go stale.
    pub restart_every: Option<Duration>,
    /// Rolling reload at each match of this cron expression (PM2's
    /// `cron_restart`).
    pub restart_cron: Option<crate::cron::CronSchedule>,
    /// Rolling reload when a file under these paths changes (PM2's `--watch`).
    pub watch: Option<crate::watch::WatchSpec>,
    /// Write worker output to files instead of our stdout/stderr.
    pub logs: Option<crate::logfile::LogSpec>,
    /// A worker whose resident memory passes this many bytes is replaced,
    /// as a rolling reload replaces it (PM2's `max_memory_restart`).
    pub max_memory: Option<u64>,
    /// Whether workers speak Node's cluster protocol (see [`crate::node`]).
    pub node_cluster: crate::node::NodeCluster,
    /// How Node workers' TCP servers get connections; `None`: reuse-port
    /// with `reuse_port`, else Node's `NODE_CLUSTER_SCHED_POLICY`, else
    /// shared (see [`ClusterSpec::node_schedule`]).
    pub schedule: Option<crate::node::Schedule>,
    /// The address for a Node worker's `listen(port)` without a host
    /// (Node binds every interface, `::`).
    pub bind_host: Option<std::net::IpAddr>,
    /// Serve `shoal ctl` on the control socket for `name`.
    pub control: bool,
    /// React to SIGHUP (reload) and SIGTTIN/SIGTTOU (scale up/down).
    pub signals: bool,
}

impl ClusterSpec {
    /// A spec with the defaults: one worker per core, `delay:500`
    /// readiness, 10 s grace, restarts with backoff, control socket on.
    pub fn new(exec: impl Into<OsString>, args: Vec<OsString>) -> Self {
        ClusterSpec {
            name: "cluster".into(),
            exec: exec.into(),
            args,
            env: Vec::new(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            listen: Vec::new(),
            reuse_port: false,
            ready: Ready::Delay(Duration::from_millis(500)),
            grace: Duration::from_secs(10),
            listen_timeout: Duration::from_secs(60),
            silent: false,
            worker_stdout_to_stderr: false,
            restart: true,
            max_restarts: 10,
            min_uptime: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            max_memory: None,
            restart_every: None,
            restart_cron: None,
            watch: None,
            logs: None,
            node_cluster: crate::node::NodeCluster::Auto,
            schedule: None,
            bind_host: None,
            control: true,
            signals: false,
        }
    }

    /// The chapter's `cluster.isMaster` pattern: workers re-run this same
    /// executable with the same arguments (see [`crate::role::is_primary`]).
    pub fn current_exe() -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let args = std::env::args_os().skip(1).collect();
        Ok(Self::new(exe, args))
    }

    /// How Node workers' TCP servers get connections: `schedule` if set,
    /// else reuse-port with `reuse_port`, else as Node's primary reads
    /// `NODE_CLUSTER_SCHED_POLICY` (`rr`), else shared.
    pub fn node_schedule(&self) -> crate::node::Schedule {
        use crate::node::Schedule;
        match self.schedule {
            Some(s) => s,
            None if self.reuse_port => Schedule::ReusePort,
            None => Schedule::from_env(),
        }
    }

    /// Check the values that can be wrong.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.name.is_empty() || self.name.contains('/') || self.name.len() > 64 {
            return Err(ClusterError::Spec(format!(
                "--name {:?}: use 1–64 characters without '/'",
                self.name
            )));
        }
        if self.workers == 0 {
            return Err(ClusterError::Spec("--workers must be at least 1".into()));
        }
        if self.reuse_port && self.schedule == Some(crate::node::Schedule::RoundRobin) {
            return Err(ClusterError::Spec(
                "--schedule rr and --reuse-port cannot be combined: the primary accepts every connection itself under rr".into(),
            ));
        }
        if self.reuse_port {
            if let Some(l) = self
                .listen
                .iter()
                .find(|l| matches!(l.addr, ListenAddr::Unix(_)))
            {
                return Err(ClusterError::Spec(format!(
                    "--reuse-port works with TCP addresses only, not {}",
                    l.addr
                )));
            }
        }
        if let Some(w) = &self.watch {
            w.validate()?;
        }
        if let Some(l) = &self.logs {
            if l.keep > 1000 {
                return Err(ClusterError::Spec(format!(
                    "--log-keep {}: use 0..1000",
                    l.keep
                )));
            }
        }
        Ok(())
    }

    /// The delay before restart attempt `failures` (1-based).
    pub fn backoff(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(20);
        self.backoff_initial
            .saturating_mul(1u32 << shift)
            .min(self.backoff_max)
    }
}

/// Parse a size like `200M`, `1G`, `512K` or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, ClusterError> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let m = match t[i..].trim().to_ascii_uppercase().as_str() {
                "K" | "KB" | "KIB" => 1 << 10,
                "M" | "MB" | "MIB" => 1 << 20,
                "G" | "GB" | "GIB" => 1 << 30,
                _ => 0,
            };
            (&t[..i], m)
        }
    };
    match (num.parse::<u64>(), mult) {
        (Ok(n), m) if m > 0 && n > 0 => Ok(n.saturating_mul(m)),
        _ => Err(ClusterError::Spec(format!(
            "{s:?}: expected a size such as 200M, 1G or 512K"
        ))),
    }
}

/// Parse a duration like `10s`, `500ms` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, ClusterError> {
    shoal_core::parse_duration(s).map_err(ClusterError::Spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_ready_and_counts() {
        let l: ListenSpec = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(l.addr.to_string(), "127.0.0.1:8080");
        let l: ListenSpec = "[::1]:0".parse().unwrap();
        assert!(matches!(l.addr, ListenAddr::Tcp(a) if a.is_ipv6()));
        let l: ListenSpec = "http=unix:/tmp/x.sock".parse().unwrap();
        assert_eq!(l.name.as_deref(), Some("http"));
        assert_eq!(l.addr, ListenAddr::Unix("/tmp/x.sock".into()));
        assert!("localhost"
            .parse::<ListenSpec>()
            .unwrap_err()
            .to_string()
            .contains("host:port"));
        assert_eq!(
            "delay:250".parse::<Ready>().unwrap(),
            Ready::Delay(Duration::from_millis(250))
        );
        assert!("soon".parse::<Ready>().is_err());
        assert!("auto".parse::<WorkerCount>().unwrap().0 >= 1);
        assert!("0".parse::<WorkerCount>().is_err());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("200M").unwrap(), 200 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "M", "12X", "-5M", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = ClusterSpec::new("x", vec![]);
        assert_eq!(s.backoff(1), Duration::from_millis(100));
        assert_eq!(s.backoff(3), Duration::from_millis(400));
        assert_eq!(s.backoff(30), Duration::from_secs(10));
    }
}
