//! Configuration: the TOML file's shape ([`FileConfig`], serde with
//! `deny_unknown_fields`) and its validation into a [`Config`] the server runs.
//!
//! Errors name the file, the line and the key (through
//! `shoal_core::config`). A [`Config`] can also be built in code, which is how a
//! library user plugs in their own [`Balance`](crate::balance::Balance).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_core::config::{load_toml, parse_toml, ConfigError};

use crate::balance::Balance;
use crate::error::{ProxyError, Result};

/// The file as written. See `examples/proxy.toml` for every key explained.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub listeners: Vec<FileListener>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, FileUpstream>,
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    #[serde(default)]
    pub limits: FileLimits,
    pub admin: Option<FileAdmin>,
    pub access_log: Option<FileAccessLog>,
    /// Worker threads; 0 or absent: one per core.
    #[serde(default)]
    pub workers: usize,
    /// The DNS resolver for `resolve`, `service` and `discover` servers.
    pub resolver: Option<crate::discover::FileResolver>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub address: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// For `protocol = "tcp"`: the upstream to balance connections over.
    pub upstream: Option<String>,
    #[serde(default)]
    pub tls: Vec<FileCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SNI names this certificate answers; empty means "the default".
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// What a listener speaks.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Tcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    #[serde(default)]
    pub strategy: StrategyName,
    /// For `strategy = "hash"`: `"path"` or `"header:NAME"`.
    pub hash_key: Option<String>,
    /// Idle keep-alive connections kept per server (nginx `keepalive`).
    pub keepalive: Option<usize>,
    pub servers: Vec<FileServer>,
    pub health_check: Option<FileHealthCheck>,
}

/// The built-in balancing strategies.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    #[default]
    RoundRobin,
    LeastConn,
    IpHash,
    Hash,
    Random,
}

impl std::str::FromStr for StrategyName {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "round_robin" | "rr" => StrategyName::RoundRobin,
            "least_conn" => StrategyName::LeastConn,
            "ip_hash" => StrategyName::IpHash,
            "hash" => StrategyName::Hash,
            "random" => StrategyName::Random,
            other => {
                return Err(format!(
                    "unknown strategy {other:?} (round_robin, least_conn, ip_hash, hash, random)"
                ))
            }
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    /// `HOST:PORT`; may be absent when `service` or `discover` is given.
    #[serde(default)]
    pub address: String,
    /// Re-resolve `address`'s host name at its TTL (nginx's `resolve`).
    #[serde(default)]
    pub resolve: bool,
    /// An SRV name (`_http._tcp.web.internal`) giving targets and ports, or
    /// nginx's `service=` joined to the host in `address` (`http`:
    /// `_http._tcp.HOST`).
    pub service: Option<String>,
    /// A DNS-SD service type (`_http._tcp.example.internal`) to browse.
    pub discover: Option<String>,
    pub weight: Option<u32>,
    pub max_fails: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub fail_timeout: Option<Duration>,
    #[serde(default)]
    pub backup: bool,
    #[serde(default)]
    pub down: bool,
    /// No new requests; those in flight finish (nginx Plus's `drain`).
    #[serde(default)]
    pub drain: bool,
    /// 0 (the default) means unlimited.
    #[serde(default)]
    pub max_conns: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    /// `"http"` (GET `path`, expect `expect_status`) or `"tcp"` (connect only).
    #[serde(default = "default_check_kind")]
    pub kind: String,
    #[serde(default = "default_check_path")]
    pub path: String,
    #[serde(default = "default_expect")]
    pub expect_status: u16,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

fn default_check_kind() -> String {
    "http".into()
}
fn default_check_path() -> String {
    "/".into()
}
fn default_expect() -> u16 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// Host to match (`www.mywebsite.com`); absent matches every host.
    pub host: Option<String>,
    /// Path prefix to match (`/friends`); absent matches every path.
    pub path: Option<String>,
    /// A named upstream ...
    pub upstream: Option<String>,
    /// ... or a single address.
    pub target: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    #[serde(default, with = "humantime_serde")]
    pub connect: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_header: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub client_header: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_keepalive: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub request: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_body_size: Option<u64>,
    pub allow_trace: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub address: String,
    /// Allow the API's writes (add, change, drain, remove upstream servers),
    /// as nginx Plus's `api write=on`; off, they are answered 405.
    #[serde(default)]
    pub write: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    /// A file path, or `"-"` for stdout.
    pub path: String,
}

// ---------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------

/// A validated configuration, ready to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub admin: Option<SocketAddr>,
    /// Whether the admin API takes writes (`[admin] write = true`).
    pub admin_write: bool,
    pub access_log: Option<String>,
    /// The file this came from; a reload reads it again.
    pub source: Option<PathBuf>,
    /// Control socket name (`shoal ctl --name NAME`); `None` binds none.
    pub control_name: Option<String>,
    /// Worker threads, each with its own runtime, sockets and upstream
    /// pools (nginx's `worker_processes`); 0: one per core.
    pub workers: usize,
    /// Servers found over DNS at run time (see [`crate::discover`]).
    pub discovery: Vec<crate::discover::Source>,
    /// How those are looked up.
    pub resolver: crate::discover::ResolverSettings,
}

/// One listening socket.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub protocol: Protocol,
    /// TCP mode: the upstream to balance over.
    pub upstream: Option<String>,
    pub tls: Vec<CertificateConfig>,
}

/// One TLS certificate chain and key, with the SNI names it serves.
#[derive(Clone, Debug)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_names: Vec<String>,
}

/// How an upstream chooses among its servers.
#[derive(Clone)]
pub enum Strategy {
    /// One of the built-in strategies.
    Builtin(StrategyName),
    /// A library user's own function, shared by the primary and backup tiers.
    Custom(Arc<dyn Balance>),
}

impl std::fmt::Debug for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Builtin(n) => write!(f, "{n:?}"),
            Strategy::Custom(_) => write!(f, "Custom"),
        }
    }
}

/// What the `hash` strategy hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    Path,
    Header(String),
}

/// A named group of servers.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub strategy: Strategy,
    pub hash_key: HashKey,
    pub keepalive: usize,
    pub servers: Vec<ServerConfig>,
    pub health_check: Option<HealthCheckConfig>,
}

/// One upstream server with nginx's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// As written (for logs and metrics).
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub backup: bool,
    pub down: bool,
    /// Draining: no new requests, those in flight finish.
    pub drain: bool,
    pub max_conns: usize,
    /// For a server found over DNS: the name, service or DNS-SD type it
    /// came from (see [`crate::discover`]).
    pub from: Option<String>,
}

impl ServerConfig {
    /// A server with nginx's defaults (weight 1, max_fails 1, fail_timeout 10s).
    pub fn new(address: SocketAddr) -> Self {
        ServerConfig {
            name: address.to_string(),
            address,
            weight: 1,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            backup: false,
            down: false,
            drain: false,
            max_conns: 0,
            from: None,
        }
    }
}

/// Active health checking of an upstream's servers.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheckConfig {
    /// `Some(path)` for HTTP checks, `None` for TCP connect checks.
    pub http_path: Option<String>,
    pub expect_status: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// A route: host and/or path prefix to an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    /// Path prefix; `"/"` matches everything.
    pub path: String,
    /// The upstream's name (single targets get an implicit upstream).
    pub upstream: String,
}

/// Timeouts, nginx-style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to an upstream server (`proxy_connect_timeout`).
    pub connect: Duration,
    /// A deadline for an upstream's whole response head, from when the
    /// request was sent (504 past it), and the longest wait between reads
    /// of a response body (`proxy_read_timeout`).
    pub upstream_header: Duration,
    /// A deadline for a client's whole request head, from its first byte
    /// (from the connection's start for the first request); 408 past it
    /// (nginx's `client_header_timeout`, HAProxy's `timeout http-request`).
    pub client_header: Duration,
    /// An idle client keep-alive connection (`keepalive_timeout`), and the
    /// longest wait between reads of a request body.
    pub idle: Duration,
    /// How long an idle upstream connection stays in the pool.
    pub upstream_keepalive: Duration,
    /// On shutdown, how long in-flight requests get to finish.
    pub shutdown_grace: Duration,
    /// If set, a deadline for a whole exchange after its request head: the
    /// request body, every upstream attempt and the response. Past it the
    /// client gets 504 if no response had started, else the connection
    /// closes.
    pub request: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            upstream_header: Duration::from_secs(60),
            client_header: Duration::from_secs(60),
            idle: Duration::from_secs(75),
            upstream_keepalive: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            request: None,
        }
    }
}

/// Request and connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request (or response) head in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields in one head; more gets 431.
    pub max_headers: usize,
    /// Most client connections at once (per listener set); extra wait.
    pub max_connections: usize,
    /// Largest request body in bytes; larger gets 413 (nginx's
    /// `client_max_body_size`). 0: no limit (bodies stream, they are not
    /// held).
    pub max_body_size: u64,
    /// Whether TRACE requests are forwarded; refused with 405 otherwise
    /// (a TRACE echoes the request, credentials included).
    pub allow_trace: bool,
}

/// The most header fields a head may carry at all (stack array size).
pub const HEADERS_CAP: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_connections: 20_000,
            max_body_size: 0,
            allow_trace: false,
        }
    }
}

/// Default idle connections kept per upstream server.
pub const DEFAULT_KEEPALIVE: usize = 64;

impl Config {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let (file, text): (FileConfig, String) = load_toml(path)?;
        let mut c = validate(file, path, &text)?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// Validate TOML text read from `path` (used by tests and `--check`).
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let file: FileConfig = parse_toml(path, text)?;
        validate(file, path, text)
    }

    /// Validate an already parsed file (e.g. the `[proxy]` table of a
    /// `shoal up` topology); `path` and `text` locate errors.
    pub fn from_file(file: FileConfig, path: &Path, text: &str) -> Result<Config> {
        validate(file, path, text)
    }

    /// The quick form: one HTTP (or TCP) listener, one upstream `default`.
    pub fn quick(
        listen: SocketAddr,
        servers: Vec<ServerConfig>,
        strategy: Strategy,
        tcp: bool,
    ) -> Result<Config> {
        let mut upstreams = BTreeMap::new();
        upstreams.insert(
            "default".to_string(),
            UpstreamConfig {
                strategy,
                hash_key: HashKey::Path,
                keepalive: DEFAULT_KEEPALIVE,
                servers,
                health_check: None,
            },
        );
        let c = Config {
            listeners: vec![ListenerConfig {
                address: listen,
                protocol: if tcp { Protocol::Tcp } else { Protocol::Http },
                upstream: Some("default".into()),
                tls: vec![],
            }],
            upstreams,
            routes: vec![RouteConfig {
                host: None,
                path: "/".into(),
                upstream: "default".into(),
            }],
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            admin: None,
            admin_write: false,
            access_log: None,
            source: None,
            control_name: None,
            workers: 0,
            discovery: Vec::new(),
            resolver: Default::default(),
        };
        c.check()?;
        Ok(c)
    }

    /// Cross-checks that hold for configs built in code too.
    pub fn check(&self) -> Result<()> {
        if self.listeners.is_empty() {
            return Err(ProxyError::Invalid("no listeners".into()));
        }
        for (name, u) in &self.upstreams {
            if u.servers.is_empty() && !self.discovery.iter().any(|d| &d.upstream == name) {
                return Err(ProxyError::Invalid(format!(
                    "upstream {name:?} has no servers"
                )));
            }
            if u.servers.iter().any(|s| s.weight == 0) {
                return Err(ProxyError::Invalid(format!(
                    "upstream {name:?}: weight must be at least 1"
                )));
            }
        }
        for r in &self.routes {
            if !self.upstreams.contains_key(&r.upstream) {
                return Err(ProxyError::Invalid(format!(
                    "route to unknown upstream {:?}",
                    r.upstream
                )));
            }
        }
        for l in &self.listeners {
            if l.protocol == Protocol::Tcp {
                match &l.upstream {
                    Some(u) if self.upstreams.contains_key(u) => {}
                    _ => {
                        return Err(ProxyError::Invalid(format!(
                            "tcp listener {} needs an existing upstream",
                            l.address
                        )))
                    }
                }
            }
        }
        if self.limits.max_headers > HEADERS_CAP {
            return Err(ProxyError::Invalid(format!(
                "limits.max_headers is at most {HEADERS_CAP}"
            )));
        }
        Ok(())
    }
}

/// Parse a duration like `10s`, `500ms` or `1m 30s`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text)
        .map_err(|e| format!("{text:?}: {e} (e.g. 10s, 500ms)"))
}

/// Resolve `text` (`host:port`) to one socket address.
pub fn resolve(text: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    text.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {text:?}: {e} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn validate(file: FileConfig, path: &Path, text: &str) -> Result<Config> {
    let bad =
        |key: &str, msg: String| ProxyError::Config(ConfigError::invalid(path, text, key, msg));
    // For keys inside inline tables (`servers = [ { ... } ]`) the key's own
    // line cannot be found by name; the line holding `hint` (the server's
    // address) is the next best.
    let bad_near = |key: &str, hint: &str, msg: String| {
        let mut e = ConfigError::invalid(path, text, key, msg);
        let last = key.rsplit('.').next().unwrap_or(key);
        if e.line.is_some() {
            // Found where the document sets it.
        } else if let Some(i) = text
            .lines()
            .position(|l| l.contains(hint) && l.contains(last))
        {
            e.line = Some(i + 1);
        } else if e.line.is_none() {
            e.line = text.lines().position(|l| l.contains(hint)).map(|i| i + 1);
        }
        ProxyError::Config(e)
    };
    let t = Timeouts::default();
    let ft = &file.timeouts;
    let timeouts = Timeouts {
        connect: ft.connect.unwrap_or(t.connect),
        upstream_header: ft.upstream_header.unwrap_or(t.upstream_header),
        client_header: ft.client_header.unwrap_or(t.client_header),
        idle: ft.idle.unwrap_or(t.idle),
        upstream_keepalive: ft.upstream_keepalive.unwrap_or(t.upstream_keepalive),
        shutdown_grace: ft.shutdown_grace.unwrap_or(t.shutdown_grace),
        request: ft.request.or(t.request).filter(|d| !d.is_zero()),
    };
    for (k, v) in [
        ("timeouts.connect", timeouts.connect),
        ("timeouts.upstream_header", timeouts.upstream_header),
        ("timeouts.client_header", timeouts.client_header),
        ("timeouts.idle", timeouts.idle),
    ] {
        if v.is_zero() {
            return Err(bad(k, "must be more than 0".into()));
        }
    }
    let l = Limits::default();
    let limits = Limits {
        max_header_bytes: file.limits.max_header_bytes.unwrap_or(l.max_header_bytes),
        max_headers: file.limits.max_headers.unwrap_or(l.max_headers),
        max_connections: file.limits.max_connections.unwrap_or(l.max_connections),
        max_body_size: file.limits.max_body_size.unwrap_or(l.max_body_size),
        allow_trace: file.limits.allow_trace.unwrap_or(l.allow_trace),
    };
    if limits.max_header_bytes < 256 {
        return Err(bad(
            "limits.max_header_bytes",
            "must be at least 256".into(),
        ));
    }
    if limits.max_headers == 0 || limits.max_headers > HEADERS_CAP {
        return Err(bad(
            "limits.max_headers",
            format!("must be between 1 and {HEADERS_CAP}"),
        ));
    }
    if limits.max_connections == 0 {
        return Err(bad("limits.max_connections", "must be at least 1".into()));
    }

    let mut upstreams = BTreeMap::new();
    let mut discovery = Vec::new();
    for (name, u) in file.upstreams {
        let key = |k: &str| format!("upstreams.{name}.{k}");
        if u.servers.is_empty() {
            return Err(bad(
                &key("servers"),
                "an upstream needs at least one server".into(),
            ));
        }
        let hash_key = match (u.strategy, u.hash_key.as_deref()) {
            (_, None) | (_, Some("path")) => HashKey::Path,
            (_, Some(h)) => match h.strip_prefix("header:") {
                Some(hn) if !hn.is_empty() => HashKey::Header(hn.to_ascii_lowercase()),
                _ => {
                    return Err(bad(
                        &key("hash_key"),
                        format!("{h:?}: expected \"path\" or \"header:NAME\""),
                    ))
                }
            },
        };
        let mut servers = Vec::new();
        let hashed = matches!(u.strategy, StrategyName::IpHash | StrategyName::Hash);
        let (primary, backup) = (
            u.servers.iter().any(|s| !s.backup),
            u.servers.iter().any(|s| s.backup),
        );
        for (i, s) in u.servers.into_iter().enumerate() {
            let sk = |k: &str| format!("upstreams.{name}.servers[{i}].{k}");
            let hint = crate::discover::hint(&s);
            let weight = s.weight.unwrap_or(1);
            if weight == 0 {
                return Err(bad_near(&sk("weight"), &hint, "must be at least 1".into()));
            }
            let template = ServerConfig {
                name: s.address.clone(),
                weight,
                max_fails: s.max_fails.unwrap_or(1),
                fail_timeout: s.fail_timeout.unwrap_or(Duration::from_secs(10)),
                backup: s.backup,
                down: s.down,
                drain: s.drain,
                max_conns: s.max_conns,
                ..ServerConfig::new(SocketAddr::from(([0, 0, 0, 0], 0)))
            };
            match crate::discover::Source::from_entry(&name, &s, template.clone(), hashed)
                .map_err(|(k, m)| bad_near(&sk(k), &hint, m))?
            {
                Some(src) => discovery.push(src),
                None => {
                    let address =
                        resolve(&s.address).map_err(|m| bad_near(&sk("address"), &hint, m))?;
                    servers.push(ServerConfig {
                        address,
                        ..template
                    });
                }
            }
        }
        if !primary {
            return Err(bad(
                &key("servers"),
                "every server is a backup; at least one must be primary".into(),
            ));
        }
        if backup && hashed {
            return Err(bad(
                &key("strategy"),
                "backup servers cannot be used with hash strategies (as in nginx)".into(),
            ));
        }
        let health_check = match u.health_check {
            None => None,
            Some(h) => {
                let http_path = match h.kind.as_str() {
                    "http" => {
                        if !h.path.starts_with('/') {
                            return Err(bad(&key("health_check.path"), "must start with /".into()));
                        }
                        Some(h.path)
                    }
                    "tcp" => None,
                    other => {
                        return Err(bad(
                            &key("health_check.kind"),
                            format!("{other:?}: expected \"http\" or \"tcp\""),
                        ))
                    }
                };
                let interval = h.interval.unwrap_or(Duration::from_secs(5));
                if interval.is_zero() {
                    return Err(bad(
                        &key("health_check.interval"),
                        "must be more than 0".into(),
                    ));
                }
                Some(HealthCheckConfig {
                    http_path,
                    expect_status: h.expect_status,
                    interval,
                    timeout: h.timeout.unwrap_or(Duration::from_secs(2)),
                    rise: h.rise.unwrap_or(2).max(1),
                    fall: h.fall.unwrap_or(3).max(1),
                })
            }
        };
        upstreams.insert(
            name.clone(),
            UpstreamConfig {
                strategy: Strategy::Builtin(u.strategy),
                hash_key,
                keepalive: u.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
                servers,
                health_check,
            },
        );
    }

    let mut routes = Vec::new();
    for (i, r) in file.routes.into_iter().enumerate() {
        let rk = |k: &str| format!("routes[{i}].{k}");
        let upstream = match (r.upstream, r.target) {
            (Some(u), None) => {
                if !upstreams.contains_key(&u) {
                    return Err(bad(&rk("upstream"), format!("no upstream named {u:?}")));
                }
                u
            }
            (None, Some(t)) => {
                let address = resolve(&t).map_err(|m| bad(&rk("target"), m))?;
                let name = format!("target:{t}");
                upstreams
                    .entry(name.clone())
                    .or_insert_with(|| UpstreamConfig {
                        strategy: Strategy::Builtin(StrategyName::RoundRobin),
                        hash_key: HashKey::Path,
                        keepalive: DEFAULT_KEEPALIVE,
                        servers: vec![ServerConfig {
                            name: t.clone(),
                            ..ServerConfig::new(address)
                        }],
                        health_check: None,
                    });
                name
            }
            _ => {
                return Err(bad(
                    &rk("upstream"),
                    "a route needs exactly one of `upstream` or `target`".into(),
                ))
            }
        };
        let host = r
            .host
            .map(|h| crate::router::normalize_host(&h).to_string());
        let path = r.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            return Err(bad(&rk("path"), "must start with /".into()));
        }
        routes.push(RouteConfig {
            host,
            path,
            upstream,
        });
    }

    let mut listeners = Vec::new();
    for (i, l) in file.listeners.into_iter().enumerate() {
        let lk = |k: &str| format!("listeners[{i}].{k}");
        let address = resolve(&l.address).map_err(|m| bad(&lk("address"), m))?;
        match l.protocol {
            Protocol::Tcp => match &l.upstream {
                Some(u) if upstreams.contains_key(u) => {}
                Some(u) => return Err(bad(&lk("upstream"), format!("no upstream named {u:?}"))),
                None => {
                    return Err(bad(
                        &lk("protocol"),
                        "a tcp listener needs `upstream = NAME`".into(),
                    ))
                }
            },
            Protocol::Http => {
                if l.upstream.is_some() {
                    return Err(bad(
                        &lk("upstream"),
                        "http listeners use [[routes]]; `upstream` is for tcp listeners".into(),
                    ));
                }
            }
        }
        let tls = l
            .tls
            .into_iter()
            .map(|c| CertificateConfig {
                cert: relative_to(path, &c.cert),
                key: relative_to(path, &c.key),
                server_names: c
                    .server_names
                    .iter()
                    .map(|n| n.to_ascii_lowercase())
                    .collect(),
            })
            .collect();
        listeners.push(ListenerConfig {
            address,
            protocol: l.protocol,
            upstream: l.upstream,
            tls,
        });
    }
    if listeners.is_empty() {
        return Err(bad(
            "listeners",
            "at least one [[listeners]] is needed".into(),
        ));
    }
    if listeners.iter().any(|l| l.protocol == Protocol::Http) && routes.is_empty() {
        return Err(bad(
            "routes",
            "http listeners need at least one [[routes]] entry".into(),
        ));
    }
    let admin_write = file.admin.as_ref().is_some_and(|a| a.write);
    let admin = match file.admin {
        Some(a) => Some(resolve(&a.address).map_err(|m| bad("admin.address", m))?),
        None => None,
    };
    if file.workers > crate::workers::MAX_WORKERS {
        return Err(bad(
            "workers",
            format!(
                "at most {} worker threads (0 means one per core)",
                crate::workers::MAX_WORKERS
            ),
        ));
    }
    let c = Config {
        listeners,
        upstreams,
        routes,
        timeouts,
        limits,
        admin,
        admin_write,
        access_log: file.access_log.map(|a| a.path),
        source: None,
        control_name: None,
        workers: file.workers,
        discovery,
        resolver: crate::discover::ResolverSettings::from_file(file.resolver.as_ref())
            .map_err(|(k, m)| bad(&format!("resolver.{k}"), m))?,
    };
    c.check()?;
    Ok(c)
}

fn relative_to(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    config
        .parent()
        .map_or_else(|| p.to_path_buf(), |d| d.join(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("t.toml"), text)
    }

    const BASE: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[upstreams.lb]
servers = [ { address = "127.0.0.1:8001", weight = 10 }, { address = "127.0.0.1:8002", weight = 20, max_fails = 2, fail_timeout = "20s" } ]

[[routes]]
upstream = "lb"
"#;

    #[test]
    fn parses_with_nginx_defaults() {
        let c = parse(BASE).unwrap();
        let u = &c.upstreams["lb"];
        assert_eq!(u.servers[0].weight, 10);
        assert_eq!(u.servers[0].max_fails, 1);
        assert_eq!(u.servers[0].fail_timeout, Duration::from_secs(10));
        assert_eq!(u.servers[1].fail_timeout, Duration::from_secs(20));
        assert_eq!(c.routes[0].path, "/");
    }

    #[test]
    fn zero_weight_names_line_and_key() {
        let text = BASE.replace("weight = 10", "weight = 0");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("upstreams.lb.servers[0].weight"), "{e}");
        assert!(e.starts_with("t.toml:"), "{e}");
    }

    #[test]
    fn unknown_upstream_in_route_is_an_error() {
        let text = BASE.replace("upstream = \"lb\"", "upstream = \"nope\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("routes[0].upstream") && e.contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn workers_default_to_per_core_and_are_bounded() {
        assert_eq!(parse(BASE).unwrap().workers, 0);
        assert_eq!(parse(&format!("workers = 3\n{BASE}")).unwrap().workers, 3);
        let e = parse(&format!("workers = 65\n{BASE}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":1:") && e.contains("workers") && e.contains("at most 64"),
            "{e}"
        );
    }

    #[test]
    fn target_routes_make_an_implicit_upstream() {
        let text = format!("{BASE}\n[[routes]]\nhost = \"WWW.Example.com:80\"\npath = \"/friends\"\ntarget = \"127.0.0.1:9001\"\n");
        let c = parse(&text).unwrap();
        assert_eq!(c.routes[1].host.as_deref(), Some("www.example.com"));
        assert!(c.upstreams.contains_key("target:127.0.0.1:9001"));
    }

    #[test]
    fn typo_is_rejected() {
        let text = BASE.replace("weight = 20", "wieght = 20");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("wieght"), "{e}");
    }
}
