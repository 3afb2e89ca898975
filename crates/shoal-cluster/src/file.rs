//! The cluster's TOML file (`shoal cluster --config FILE`): the same settings
//! as the flags, parsed with `deny_unknown_fields` so that a typo is an error
//! naming the file, line and key, then validated into a [`ClusterSpec`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use shoal_core::config::{load_toml, parse_toml, ConfigError};

use crate::spec::{parse_duration, ClusterSpec, ListenSpec, Ready, WorkerCount};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Cluster name.
    pub name: Option<String>,
    /// A number or `"auto"`.
    pub workers: Option<Count>,
    /// The worker command and its arguments.
    pub command: Option<Vec<String>>,
    /// Addresses (`host:port`, `[::1]:port`, `unix:/path`, optionally `name=ADDR`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// One `SO_REUSEPORT` socket per worker.
    pub reuse_port: Option<bool>,
    /// `ipc`, `notify` or `delay:MS`.
    pub ready: Option<String>,
    /// Between SIGTERM and SIGKILL.
    pub grace: Option<String>,
    /// How long a new worker may take to be ready (PM2's `listen_timeout`;
    /// `ready_timeout` is the older name).
    #[serde(alias = "ready_timeout")]
    pub listen_timeout: Option<String>,
    /// Do not relay worker output.
    pub silent: Option<bool>,
    /// Replace workers that exit.
    pub restart: Option<bool>,
    /// Quick failures before giving up.
    pub max_restarts: Option<u32>,
    /// Uptime that resets the failure count.
    pub min_uptime: Option<String>,
    /// Extra environment for the workers.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Replace every worker this often, rolling (`6h`, `30m`).
    pub restart_every: Option<String>,
    /// Replace a worker over this much resident memory (`200M`, `1G`).
    pub max_memory: Option<String>,
    /// Rolling reload at each match of this cron expression.
    pub restart_cron: Option<String>,
    /// Rolling reload when files under these paths change.
    pub watch: Option<Vec<String>>,
    /// Globs whose changes do not count (default `node_modules`, `.git`).
    pub watch_ignore: Option<Vec<String>>,
    /// Quiet period before a `watch` reload (`1s`).
    pub watch_delay: Option<String>,
    /// Write worker output to files in this directory.
    pub log_dir: Option<String>,
    /// One file for stdout and stderr.
    pub merge_logs: Option<bool>,
    /// Rotate a log file before it passes this size (`10M`).
    pub log_max_size: Option<String>,
    /// Rotated log files kept.
    pub log_keep: Option<u32>,
    /// `auto`, `on` or `off`: Node's cluster protocol.
    pub node_cluster: Option<String>,
    /// The address for a Node worker's `listen(port)` without a host.
    pub bind_host: Option<String>,
    /// `shared`, `reuse-port` or `rr`: how Node workers get connections.
    pub schedule: Option<String>,
}

/// `workers = 4` or `workers = "auto"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Count {
    /// A number.
    Number(u64),
    /// `"auto"` (or a number as a string).
    Text(String),
}

/// Read and validate `path`.
pub fn load(path: &Path) -> Result<ClusterSpec, ConfigError> {
    let (file, text) = load_toml::<FileConfig>(path)?;
    into_spec(path, &text, file)
}

/// Parse and validate `text` as if read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<ClusterSpec, ConfigError> {
    let file = parse_toml::<FileConfig>(path, text)?;
    into_spec(path, text, file)
}

/// Validate an already parsed file (e.g. a `[cluster.NAME]` table of a
/// `shoal up` topology); `path` and `text` locate errors.
pub fn from_file(path: &Path, text: &str, f: FileConfig) -> Result<ClusterSpec, ConfigError> {
    into_spec(path, text, f)
}

fn into_spec(path: &Path, text: &str, f: FileConfig) -> Result<ClusterSpec, ConfigError> {
    let bad = |key: &str, msg: String| ConfigError::invalid(path, text, key, msg);
    // The command may also come from the command line; an empty one is filled in there.
    let command = f.command.unwrap_or_default();
    let (exec, args) = match command.split_first() {
        Some((e, a)) => (e.clone(), a.iter().map(Into::into).collect()),
        None => (String::new(), Vec::new()),
    };
    let mut spec = ClusterSpec::new(exec, args);
    if let Some(n) = f.name {
        spec.name = n;
    }
    if let Some(w) = f.workers {
        let s = match w {
            Count::Number(n) => n.to_string(),
            Count::Text(t) => t,
        };
        spec.workers = s
            .parse::<WorkerCount>()
            .map_err(|e| bad("workers", e.to_string()))?
            .0;
    }
    for (i, l) in f.listen.iter().enumerate() {
        let parsed = l
            .parse::<ListenSpec>()
            .map_err(|e| bad(&format!("listen[{i}]"), e.to_string()))?;
        spec.listen.push(parsed);
    }
    spec.reuse_port = f.reuse_port.unwrap_or(spec.reuse_port);
    if let Some(r) = f.ready {
        spec.ready = r
            .parse::<Ready>()
            .map_err(|e| bad("ready", e.to_string()))?;
    }
    for (key, value, slot) in [
        ("grace", f.grace, &mut spec.grace),
        ("listen_timeout", f.listen_timeout, &mut spec.listen_timeout),
        ("min_uptime", f.min_uptime, &mut spec.min_uptime),
    ] {
        if let Some(v) = value {
            *slot = parse_duration(&v).map_err(|e| bad(key, e.to_string()))?;
        }
    }
    if let Some(e) = f.restart_every {
        spec.restart_every =
            Some(parse_duration(&e).map_err(|e| bad("restart_every", e.to_string()))?);
    }
    if let Some(m) = f.max_memory {
        spec.max_memory =
            Some(crate::spec::parse_size(&m).map_err(|e| bad("max_memory", e.to_string()))?);
    }
    if let Some(c) = f.restart_cron {
        spec.restart_cron = Some(
            c.parse()
                .map_err(|e: crate::ClusterError| bad("restart_cron", e.to_string()))?,
        );
    }
    if let Some(paths) = f.watch {
        let mut w = crate::watch::WatchSpec::new(paths.into_iter().map(Into::into).collect());
        if let Some(i) = f.watch_ignore {
            w.ignore = i;
        }
        if let Some(d) = f.watch_delay {
            w.delay = parse_duration(&d).map_err(|e| bad("watch_delay", e.to_string()))?;
        }
        w.validate().map_err(|e| bad("watch", e.to_string()))?;
        spec.watch = Some(w);
    }
    if let Some(d) = f.log_dir {
        let mut l = crate::logfile::LogSpec::new(d);
        l.merge = f.merge_logs.unwrap_or(false);
        if let Some(m) = f.log_max_size {
            l.max_size =
                Some(crate::spec::parse_size(&m).map_err(|e| bad("log_max_size", e.to_string()))?);
        }
        if let Some(k) = f.log_keep {
            l.keep = k;
        }
        spec.logs = Some(l);
    }
    if let Some(n) = f.node_cluster {
        spec.node_cluster = n
            .parse()
            .map_err(|e: crate::ClusterError| bad("node_cluster", e.to_string()))?;
    }
    if let Some(sched) = f.schedule {
        spec.schedule = Some(
            sched
                .parse()
                .map_err(|e: crate::ClusterError| bad("schedule", e.to_string()))?,
        );
    }
    if let Some(h) = f.bind_host {
        spec.bind_host = Some(h.parse().map_err(|_| {
            bad(
                "bind_host",
                format!("{h:?}: expected an IP address (e.g. 127.0.0.1)"),
            )
        })?);
    }
    spec.silent = f.silent.unwrap_or(spec.silent);
    spec.restart = f.restart.unwrap_or(spec.restart);
    spec.max_restarts = f.max_restarts.unwrap_or(spec.max_restarts);
    spec.env = f
        .env
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    if let Err(e) = spec.validate() {
        let key = if e.to_string().starts_with("--log-keep") {
            "log_keep"
        } else if spec.reuse_port {
            "reuse_port"
        } else {
            "name"
        };
        return Err(bad(key, e.to_string()));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_annotated_example_parses() {
        let p =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster/cluster.toml");
        let spec = load(&p).unwrap();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.workers, 2);
        assert_eq!(spec.exec, "node");
        assert_eq!(spec.listen.len(), 1);
        assert_eq!(
            spec.ready,
            Ready::Delay(std::time::Duration::from_millis(500))
        );
        assert_eq!(spec.grace, std::time::Duration::from_secs(10));
        assert!(spec
            .env
            .iter()
            .any(|(k, v)| k == "NODE_ENV" && v == "production"));
    }

    #[test]
    fn the_schedule_key_is_read_and_checked() {
        let p = Path::new("c.toml");
        let spec = parse(p, "command = [\"node\"]\nschedule = \"rr\"\n").unwrap();
        assert_eq!(spec.node_schedule(), crate::node::Schedule::RoundRobin);
        let e = parse(p, "command = [\"node\"]\nschedule = \"fair\"\n").unwrap_err();
        assert!(e.to_string().starts_with("c.toml:2: schedule:"), "{e}");
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let p = Path::new("c.toml");
        let e = parse(p, "name = \"x\"\nworkerz = 2\n").unwrap_err();
        assert!(e.to_string().starts_with("c.toml:2"), "{e}");
        assert!(e.to_string().contains("workerz"), "{e}");
        let e = parse(p, "command = [\"node\"]\nready = \"soon\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml:2: ready: --ready soon: expected ipc, notify, listening or delay:MS (e.g. delay:500)"
        );
        let e = parse(p, "listen = [\"127.0.0.1:80\", \"nowhere\"]\n").unwrap_err();
        assert!(e.to_string().contains("listen[1]"), "{e}");
        let e = parse(p, "grace = \"soonish\"\n").unwrap_err();
        assert!(e.to_string().starts_with("c.toml:1: grace:"), "{e}");
        let e = parse(p, "workers = 0\n").unwrap_err();
        assert!(e.to_string().contains("workers"), "{e}");
        let e = parse(p, "name = \"x\"\nrestart_cron = \"0 25 * * *\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.toml:2: restart_cron: --restart-cron"),
            "{e}"
        );
        let e = parse(p, "log_dir = \"/tmp/l\"\nlog_keep = 5000\n").unwrap_err();
        assert!(e.to_string().starts_with("c.toml:2: log_keep:"), "{e}");
        let e = parse(p, "watch = [\"/no/such/dir\"]\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.toml:1: watch: --watch /no/such/dir"),
            "{e}"
        );
        let s = parse(p, "ready_timeout = \"5s\"\nlog_dir = \"logs\"\nmerge_logs = true\nlog_max_size = \"1M\"\n").unwrap();
        assert_eq!(s.listen_timeout, std::time::Duration::from_secs(5));
        let l = s.logs.unwrap();
        assert!(l.merge && l.max_size == Some(1 << 20) && l.keep == 5);
    }
}
