//! The topology file → a validated [`Plan`].
//!
//! The file's tables are the other parts' own file types, deserialized in
//! place (`[cluster.NAME]` is `shoal_cluster::file::FileConfig`, `[proxy]`
//! is `shoal_proxy::config::FileConfig`, `[broker]` and `[stats]` likewise),
//! then validated by the same functions their subcommands use, so a key means
//! the same in both places and a typo is an error naming the file, line and
//! the key's full path (`cluster.web.workerz`).
//!
//! One addition: a proxy upstream may say `servers = "cluster:web"` (or a
//! list of such strings) for "the addresses cluster `web` serves". That line
//! is rewritten, before the proxy's table is parsed, into the servers'
//! inline-table list on the same line, so error lines stay true.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shoal_cluster::{ClusterSpec, ListenAddr};
use shoal_core::config::{parse_toml, ConfigError};
use shoal_dgram::statsd;

/// The default topology built into the binary (`shoal up` with no file).
pub const DEFAULT_TOPOLOGY: &str = include_str!("../../../examples/up/default.toml");

/// The Node worker the default topology runs (written out next to the
/// control sockets when `examples/up/web.js` is not in the current directory).
pub const DEFAULT_WORKER_JS: &str = include_str!("../../../examples/up/web.js");

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    up: Option<UpFile>,
    /// Parsed again so that an unknown key is reported in context; the
    /// clusters themselves come from pass 1.
    #[serde(default)]
    #[allow(dead_code)]
    cluster: BTreeMap<String, shoal_cluster::file::FileConfig>,
    proxy: Option<shoal_proxy::config::FileConfig>,
    broker: Option<shoal_broker::config::FileConfig>,
    stats: Option<statsd::FileConfig>,
    dashboard: Option<DashboardFile>,
}

/// `[dashboard]`: the live HTML page over every part.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DashboardFile {
    /// Where it listens (HTTP), e.g. "127.0.0.1:8090".
    listen: String,
}

/// `[up]`: settings of the topology itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpFile {
    /// Control socket name (`shoal ctl --name NAME status`).
    name: Option<String>,
    /// How long a cluster may take until all its workers are online.
    ready_timeout: Option<String>,
}

/// Only the clusters, to learn their addresses before the proxy is parsed.
#[derive(Debug, Deserialize)]
struct ClustersOnly {
    #[serde(default)]
    cluster: BTreeMap<String, shoal_cluster::file::FileConfig>,
}

/// One cluster of the plan.
#[derive(Debug)]
pub struct ClusterPlan {
    /// Its table name (`web` for `[cluster.web]`).
    pub table: String,
    /// What to run.
    pub spec: ClusterSpec,
    /// The TCP addresses its workers serve (`listen`, or a Node worker's
    /// `PORT` on `bind_host`): what `cluster:NAME` resolves to.
    pub serves: Vec<SocketAddr>,
    /// An address the primary binds lazily (a Node worker's `PORT`): checked
    /// free before the start.
    pub lazy_port: Option<SocketAddr>,
}

/// A validated topology: what to start, in order.
#[derive(Debug)]
pub struct Plan {
    /// The file it came from (`<default topology>` for the built-in one).
    pub file: PathBuf,
    /// Whether it is the built-in default (a reload re-reads that text).
    pub builtin: bool,
    /// The control socket's name.
    pub name: String,
    /// How long a cluster may take until its workers are online.
    pub ready_timeout: Duration,
    /// The broker, if any.
    pub broker: Option<shoal_broker::Config>,
    /// The statsd collector, if any.
    pub stats: Option<statsd::Config>,
    /// The clusters, in the file's (alphabetical) order.
    pub clusters: Vec<ClusterPlan>,
    /// The proxy, if any.
    pub proxy: Option<shoal_proxy::Config>,
    /// Where the dashboard listens, if it is on.
    pub dashboard: Option<SocketAddr>,
    /// Whether clusters run the built-in worker instead of the default's
    /// Node one (see [`use_builtin_worker`]).
    pub builtin_worker: bool,
    /// Why the clusters run the built-in worker, for the banner.
    pub worker_note: Option<String>,
}

/// Read and validate a topology file.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    let text = shoal_core::config::read_text(path)?;
    parse(path, &text)
}

/// The built-in default topology, validated. Its worker script is
/// `examples/up/web.js` when the current directory has it (a checkout),
/// else the copy built into the binary, written to the runtime directory.
pub fn default_plan() -> Result<Plan, ConfigError> {
    let mut plan = parse(Path::new("<default topology>"), DEFAULT_TOPOLOGY)?;
    plan.builtin = true;
    let script = Path::new("examples/up/web.js");
    if !script.exists() {
        let dir = shoal_core::control::runtime_dir();
        let copy = dir.join("up-web.js");
        let written =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&copy, DEFAULT_WORKER_JS));
        if let Err(e) = written {
            return Err(ConfigError {
                file: copy,
                line: None,
                column: None,
                key: None,
                message: format!("cannot write the default worker script: {e}"),
            });
        }
        for c in &mut plan.clusters {
            for a in &mut c.spec.args {
                if Path::new(a.as_os_str()) == script {
                    *a = copy.clone().into_os_string();
                }
            }
        }
    }
    Ok(plan)
}

/// Whether a cluster runs the default topology's Node worker
/// (`node examples/up/web.js`, or the copy written as `up-web.js`).
fn runs_default_worker(spec: &ClusterSpec) -> bool {
    let script = |a: &std::ffi::OsString| {
        let p = Path::new(a);
        p.ends_with("up/web.js") || p.file_name().is_some_and(|f| f == "up-web.js")
    };
    Path::new(&spec.exec)
        .file_name()
        .is_some_and(|f| f == "node")
        && spec.args.len() == 1
        && script(&spec.args[0])
}

/// Whether `node` can load the `amqplib` module that the default's Node
/// worker publishes with, under the first such cluster's `NODE_PATH` (the
/// default's is relative to a checkout, so it is missing when `shoal up`
/// runs elsewhere). `true` when no cluster runs the default worker; `false`
/// when node does not answer within 5 seconds.
pub fn default_worker_loads_amqplib(plan: &Plan) -> bool {
    let Some(c) = plan.clusters.iter().find(|c| runs_default_worker(&c.spec)) else {
        return true;
    };
    let mut cmd = std::process::Command::new(&c.spec.exec);
    cmd.args(["-e", "require.resolve('amqplib')"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in &c.spec.env {
        if k == "NODE_PATH" {
            cmd.env(k, v);
        }
    }
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// For a machine without `node`: every cluster that runs the default's Node
/// worker runs the built-in one instead (`EXE up-worker`, see
/// [`crate::worker`]) on a listener its primary binds at the address the
/// Node worker would have served (`bind_host` and `PORT`), ready by
/// `READY=1`. The changed clusters' tables.
pub fn use_builtin_worker(plan: &mut Plan, exe: &Path) -> Vec<String> {
    let mut changed = Vec::new();
    for c in &mut plan.clusters {
        if !runs_default_worker(&c.spec) {
            continue;
        }
        let Some(addr) = c.lazy_port.take() else {
            continue;
        };
        c.spec.exec = exe.as_os_str().to_owned();
        c.spec.args = vec!["up-worker".into()];
        c.spec.listen = vec![shoal_cluster::ListenSpec {
            name: None,
            addr: ListenAddr::Tcp(addr),
        }];
        c.spec.ready = shoal_cluster::Ready::Notify;
        c.spec.node_cluster = shoal_cluster::node::NodeCluster::Off;
        changed.push(c.table.clone());
    }
    plan.builtin_worker = !changed.is_empty();
    changed
}

/// Validate topology `text` read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Plan, ConfigError> {
    // Pass 1: the clusters, for their addresses.
    let first: ClustersOnly = parse_toml(path, text)?;
    let mut clusters = Vec::new();
    for (table, f) in first.cluster {
        clusters.push(cluster_plan(path, text, table, f)?);
    }
    let serves: BTreeMap<String, Vec<SocketAddr>> = clusters
        .iter()
        .map(|c| (c.table.clone(), c.serves.clone()))
        .collect();
    // Pass 2: everything, with `cluster:NAME` resolved in place.
    let resolved = resolve_cluster_refs(path, text, &serves)?;
    let file: TopologyFile = parse_toml(path, &resolved)?;
    let text = resolved.as_str();

    let up = file.up.unwrap_or(UpFile {
        name: None,
        ready_timeout: None,
    });
    let ready_timeout = match up.ready_timeout {
        Some(t) => shoal_core::parse_duration(&t)
            .map_err(|e| ConfigError::invalid(path, text, "up.ready_timeout", e.to_string()))?,
        None => Duration::from_secs(30),
    };
    let broker = match file.broker {
        Some(b) => {
            let mut c = shoal_broker::Config::from_file(b, path, text)
                .map_err(|e| within(e, text, "broker"))?;
            // The topology's SIGHUP restarts a changed broker.
            c.hangup = false;
            Some(c)
        }
        None => None,
    };
    let stats = match file.stats {
        Some(mut s) => {
            // A relative mapping file is taken from the topology file's
            // directory, as `shoal stats --config` takes it from its file's.
            if let (Some(m), Some(dir)) = (&s.mapping_config, path.parent()) {
                if m.is_relative() {
                    s.mapping_config = Some(dir.join(m));
                }
            }
            Some(s.into_config(path, text).map_err(|e| match e {
                shoal_dgram::Error::Config(c) => within(c, text, "stats"),
                other => ConfigError::invalid(path, text, "stats", other.to_string()),
            })?)
        }
        None => None,
    };
    let proxy = match file.proxy {
        Some(p) => {
            let mut c = shoal_proxy::Config::from_file(p, path, text).map_err(|e| match e {
                shoal_proxy::ProxyError::Config(c) => within(c, text, "proxy"),
                other => ConfigError::invalid(path, text, "proxy", other.to_string()),
            })?;
            c.control_name = None;
            Some(c)
        }
        None => None,
    };
    let dashboard = match file.dashboard {
        Some(d) => Some(d.listen.parse::<SocketAddr>().map_err(|e| {
            ConfigError::invalid(
                path,
                text,
                "dashboard.listen",
                format!(
                    "{:?} is not an address like \"127.0.0.1:8090\": {e}",
                    d.listen
                ),
            )
        })?),
        None => None,
    };
    // The clusters' environment: where the broker and the collector are.
    let vars = [broker_env(broker.as_ref()), stats_env(stats.as_ref())].concat();
    for c in &mut clusters {
        let env = &mut c.spec.env;
        for (k, v) in &vars {
            if !env.iter().any(|(ek, _)| ek == k) {
                env.push((k.into(), v.into()));
            }
        }
    }
    Ok(Plan {
        file: path.to_path_buf(),
        builtin: false,
        name: up.name.unwrap_or_else(|| "up".to_string()),
        ready_timeout,
        broker,
        stats,
        clusters,
        proxy,
        dashboard,
        builtin_worker: false,
        worker_note: None,
    })
}

/// The environment a cluster gets for the broker (`AMQP_URL`), unless its
/// own `env` sets it.
pub fn broker_env(broker: Option<&shoal_broker::Config>) -> Vec<(&'static str, String)> {
    broker
        .map(|b| {
            let a = reachable(b.listen);
            vec![("AMQP_URL", format!("amqp://guest:guest@{a}/"))]
        })
        .unwrap_or_default()
}

/// The environment a cluster gets for the collector (`STATSD_HOST`,
/// `STATSD_PORT`: its first UDP address), unless its own `env` sets them.
pub fn stats_env(stats: Option<&statsd::Config>) -> Vec<(&'static str, String)> {
    match stats.and_then(|s| s.udp.first()) {
        Some(u) => {
            let a = reachable(*u);
            vec![
                ("STATSD_HOST", a.ip().to_string()),
                ("STATSD_PORT", a.port().to_string()),
            ]
        }
        None => Vec::new(),
    }
}

/// The address a local client connects to for a server bound on `a`
/// (an unspecified address becomes loopback).
pub fn reachable(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::new(
            if a.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            },
            a.port(),
        )
    } else {
        a
    }
}

fn cluster_plan(
    path: &Path,
    text: &str,
    table: String,
    f: shoal_cluster::file::FileConfig,
) -> Result<ClusterPlan, ConfigError> {
    let section = format!("cluster.{table}");
    let named = f.name.is_some();
    let mut spec =
        shoal_cluster::file::from_file(path, text, f).map_err(|e| within(e, text, &section))?;
    if !named {
        spec.name = table.clone();
    }
    if spec.exec.is_empty() {
        return Err(ConfigError::invalid(
            path,
            text,
            &format!("{section}.command"),
            "missing: the worker command and its arguments, e.g. [\"node\", \"server.js\"]",
        ))
        .map_err(|e| within_line(e, text, &section, "command"));
    }
    let mut serves: Vec<SocketAddr> = spec
        .listen
        .iter()
        .filter_map(|l| match &l.addr {
            ListenAddr::Tcp(a) => Some(reachable(*a)),
            ListenAddr::Unix(_) => None,
        })
        .collect();
    let mut lazy_port = None;
    if spec.listen.is_empty() {
        if let Some((_, v)) = spec.env.iter().find(|(k, _)| k == "PORT") {
            let port: u16 = v.to_string_lossy().parse().map_err(|_| {
                within_line(
                    ConfigError::invalid(
                        path,
                        text,
                        &format!("{section}.env.PORT"),
                        format!("{v:?} is not a port number"),
                    ),
                    text,
                    &section,
                    "PORT",
                )
            })?;
            let host = spec.bind_host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let a = SocketAddr::new(host, port);
            lazy_port = Some(a);
            serves.push(reachable(a));
        }
    }
    Ok(ClusterPlan {
        table,
        spec,
        serves,
        lazy_port,
    })
}

/// A validation error of a part's table: the key gets the table's prefix and
/// the line is searched within that table.
fn within(mut e: ConfigError, text: &str, section: &str) -> ConfigError {
    match e.key.take() {
        Some(k) => {
            if let Some(line) = find_in_section(text, section, &k) {
                e.line = Some(line);
                e.column = None;
            }
            e.key = Some(format!("{section}.{k}"));
        }
        None => e.key = Some(section.to_string()),
    }
    e
}

/// Relocate `e` to where `key` is set in `section` (if it is).
fn within_line(mut e: ConfigError, text: &str, section: &str, key: &str) -> ConfigError {
    if let Some(line) = find_in_section(text, section, key) {
        e.line = Some(line);
    } else if let Some(line) = header_line(text, section) {
        e.line = Some(line);
    }
    e
}

fn header_of(line: &str) -> Option<String> {
    let t = line.trim_start().strip_prefix('[')?;
    let t = t.strip_prefix('[').unwrap_or(t);
    Some(t.split(']').next()?.trim().replace(['"', ' '], ""))
}

fn in_section(header: &str, section: &str) -> bool {
    header == section
        || header
            .strip_prefix(section)
            .is_some_and(|r| r.starts_with('.'))
}

fn header_line(text: &str, section: &str) -> Option<usize> {
    text.lines()
        .position(|l| header_of(l).is_some_and(|h| h == section))
        .map(|i| i + 1)
}

/// The 1-based line where the last segment of `key` is set inside `section`
/// (its own table or one of its sub-tables).
fn find_in_section(text: &str, section: &str, key: &str) -> Option<usize> {
    let last = key.rsplit('.').next()?.split('[').next()?.trim_matches('"');
    if last.is_empty() {
        return None;
    }
    let mut inside = false;
    for (i, l) in text.lines().enumerate() {
        if let Some(h) = header_of(l) {
            inside = in_section(&h, section);
            continue;
        }
        let t = l.trim_start();
        if inside
            && t.strip_prefix(last)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

/// The cluster names a `servers = ...` line refers to, if it is one.
fn cluster_refs(line: &str) -> Option<Vec<String>> {
    let value = line
        .trim_start()
        .strip_prefix("servers")?
        .trim_start()
        .strip_prefix('=')?;
    if !value.contains("cluster:") {
        return None;
    }
    let v: toml::Table = toml::from_str(&format!("v = {value}")).ok()?;
    let names = |s: &str| s.strip_prefix("cluster:").map(str::to_string);
    match v.get("v")? {
        toml::Value::String(s) => Some(vec![names(s)?]),
        toml::Value::Array(a) => a.iter().map(|x| names(x.as_str()?)).collect(),
        _ => None,
    }
}

/// Rewrite every `servers = "cluster:NAME"` line into the cluster's addresses.
fn resolve_cluster_refs(
    path: &Path,
    text: &str,
    serves: &BTreeMap<String, Vec<SocketAddr>>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut header = String::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if let Some(h) = header_of(line) {
            header = h;
        }
        let Some(names) = cluster_refs(line) else {
            out.push_str(line);
            continue;
        };
        let fail = |message: String| ConfigError {
            file: path.to_path_buf(),
            line: Some(i + 1),
            column: None,
            key: Some(format!("{header}.servers")),
            message,
        };
        let mut list = Vec::new();
        for n in &names {
            let Some(addrs) = serves.get(n) else {
                return Err(fail(format!(
                    "\"cluster:{n}\": there is no [cluster.{n}] in this file"
                )));
            };
            if addrs.is_empty() {
                return Err(fail(format!(
                    "\"cluster:{n}\": cluster {n} serves no TCP address (give it listen = [\"HOST:PORT\"], or env PORT for a Node worker)"
                )));
            }
            list.extend(addrs.iter().map(|a| format!("{{ address = \"{a}\" }}")));
        }
        out.push_str(&format!("servers = [{}]\n", list.join(", ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_topology_parses() {
        let p = parse(Path::new("default.toml"), DEFAULT_TOPOLOGY).unwrap();
        assert_eq!(p.clusters.len(), 2);
        let proxy = p.proxy.unwrap();
        let servers: Vec<String> = proxy
            .upstreams
            .values()
            .flat_map(|u| u.servers.iter().map(|s| s.address.to_string()))
            .collect();
        assert_eq!(servers, ["127.0.0.1:8001", "127.0.0.1:8002"]);
        let env = &p.clusters[0].spec.env;
        assert!(env
            .iter()
            .any(|(k, v)| k == "AMQP_URL" && v == "amqp://guest:guest@127.0.0.1:5672/"));
        assert!(env.iter().any(|(k, v)| k == "STATSD_PORT" && v == "8125"));
    }

    #[test]
    fn unknown_keys_name_line_and_path() {
        let t = "[cluster.web]\ncommand = [\"node\", \"x.js\"]\nworkerz = 2\n";
        let e = parse(Path::new("t.toml"), t).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:3"), "{e}");
        assert!(e.contains("workerz"), "{e}");
        let t = "[stats]\nudp = [\"127.0.0.1:1\"]\n[proxy]\nlistenerz = 1\n";
        let e = parse(Path::new("t.toml"), t).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:4"), "{e}");
    }

    #[test]
    fn validation_errors_are_found_in_their_table() {
        let t = "[cluster.a]\ncommand = [\"node\"]\nworkers = 1\n\n[cluster.b]\ncommand = [\"node\"]\nworkers = 0\n";
        let e = parse(Path::new("t.toml"), t).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:7: cluster.b.workers"), "{e}");
    }

    #[test]
    fn cluster_refs_resolve_and_unknown_ones_fail() {
        let t = "[cluster.web]\ncommand = [\"x\"]\nlisten = [\"127.0.0.1:9001\"]\n[proxy]\n[[proxy.listeners]]\naddress = \"127.0.0.1:9000\"\n[proxy.upstreams.app]\nservers = \"cluster:web\"\n[[proxy.routes]]\npath = \"/\"\nupstream = \"app\"\n";
        let p = parse(Path::new("t.toml"), t).unwrap();
        let proxy = p.proxy.unwrap();
        assert_eq!(
            proxy.upstreams["app"].servers[0].address.to_string(),
            "127.0.0.1:9001"
        );
        let bad = t.replace("cluster:web", "cluster:api");
        let e = parse(Path::new("t.toml"), &bad).unwrap_err().to_string();
        assert!(
            e.starts_with("t.toml:8: proxy.upstreams.app.servers:"),
            "{e}"
        );
    }

    #[test]
    fn the_dashboard_is_on_in_the_default_and_its_address_is_checked() {
        let p = parse(Path::new("default.toml"), DEFAULT_TOPOLOGY).unwrap();
        assert_eq!(p.dashboard, Some("127.0.0.1:8090".parse().unwrap()));
        let t = "[stats]\nudp = [\"127.0.0.1:1\"]\n\n[dashboard]\nlisten = \"nowhere\"\n";
        let e = parse(Path::new("t.toml"), t).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:5: dashboard.listen:"), "{e}");
    }

    #[test]
    fn the_built_in_worker_replaces_only_the_default_node_worker() {
        let mut p = parse(Path::new("default.toml"), DEFAULT_TOPOLOGY).unwrap();
        let changed = use_builtin_worker(&mut p, Path::new("/bin/shoal"));
        assert_eq!(changed, ["web1", "web2"]);
        assert!(p.builtin_worker);
        let web1 = &p.clusters[0];
        assert_eq!(web1.spec.exec, "/bin/shoal");
        assert_eq!(web1.spec.args, ["up-worker"]);
        assert_eq!(
            web1.spec.listen[0].addr,
            ListenAddr::Tcp("127.0.0.1:8001".parse().unwrap())
        );
        assert_eq!(
            web1.serves,
            ["127.0.0.1:8001".parse::<SocketAddr>().unwrap()]
        );
        // Another Node program is left alone.
        let t =
            "[cluster.app]\ncommand = [\"node\", \"app.js\"]\n[cluster.app.env]\nPORT = \"9000\"\n";
        let mut p = parse(Path::new("t.toml"), t).unwrap();
        assert!(use_builtin_worker(&mut p, Path::new("/bin/shoal")).is_empty());
        assert!(!p.builtin_worker);
    }
}
