//! `shoal proxy`: the HTTP/TCP reverse proxy and load balancer.

use anyhow::{bail, Context as _};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_core::parse_duration;
use shoal_proxy::config::{resolve, CertificateConfig, HashKey, Strategy, StrategyName};
use shoal_proxy::{Config, ServerConfig};

/// Balance HTTP requests or TCP connections over upstream servers, with
/// nginx's upstream semantics (weights, max_fails/fail_timeout, backup, down,
/// max_conns, least_conn, ip_hash, hash, random) and node-http-proxy's host
/// and path routing. Reloads its file on SIGHUP or `shoal ctl --name NAME reload`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
  shoal proxy --config examples/proxy.toml\n  \
  shoal proxy --check examples/proxy.toml\n  \
  shoal proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002\n  \
  shoal proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:8001,weight=10 --upstream 127.0.0.1:8002,weight=20\n  \
  shoal proxy --listen 127.0.0.1:5673 --tcp --upstream 127.0.0.1:5672 --upstream 127.0.0.1:5674,backup\n  \
  shoal proxy --listen 127.0.0.1:8443 --cert site.pem --key site.key --upstream 127.0.0.1:8001\n  \
  kill -HUP <pid>   # or: shoal ctl --name proxy reload")]
pub struct ProxyArgs {
    /// The TOML configuration (see examples/proxy.toml for every key).
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["listen", "check"])]
    pub config: Option<PathBuf>,

    /// Validate FILE, print a summary and exit (status 1 with file:line: key: message on error).
    #[arg(long, value_name = "FILE")]
    pub check: Option<PathBuf>,

    #[command(flatten)]
    pub quick: Box<QuickArgs>,

    /// Name of the control socket (`shoal ctl --name NAME reload|status`).
    #[arg(long, default_value = "proxy")]
    pub name: String,

    /// Do not open a control socket.
    #[arg(long)]
    pub no_control: bool,

    /// Worker threads, each serving its own share of connections with its own
    /// upstream keep-alive pool (default: the file's `workers`, else one per
    /// core).
    #[arg(long, visible_alias = "workers", value_name = "N")]
    pub threads: Option<usize>,
}

/// The quick form's options (no configuration file).
#[derive(Args, Debug)]
pub struct QuickArgs {
    /// Quick form: the address to listen on (needs at least one --upstream).
    #[arg(short, long, value_name = "ADDR", requires = "upstream")]
    pub listen: Option<String>,

    /// Quick form: an upstream server, `HOST:PORT[,weight=N][,max_fails=N][,fail_timeout=10s][,max_conns=N][,backup][,down]`. Repeat for more.
    #[arg(short, long, value_name = "SERVER")]
    pub upstream: Vec<String>,

    /// Quick form: round_robin (default), least_conn, ip_hash, hash (on the path) or random.
    #[arg(short, long, default_value = "round_robin")]
    pub strategy: StrategyName,

    /// Quick form, strategy hash: what to hash, `path` (default) or `header:NAME`.
    #[arg(long, value_name = "KEY")]
    pub hash_key: Option<String>,

    /// Quick form: terminate TLS with this PEM certificate chain (needs --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Quick form: the PEM private key for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Quick form: balance raw TCP connections instead of HTTP requests.
    #[arg(long)]
    pub tcp: bool,

    /// Quick form: serve /metrics and /status on this address.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// Quick form: write an nginx "combined" access log to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<String>,
}

fn parse_server(spec: &str) -> anyhow::Result<ServerConfig> {
    let mut parts = spec.split(',');
    let addr = parts.next().unwrap_or("");
    let address: SocketAddr =
        resolve(addr).map_err(|e| anyhow::anyhow!("--upstream {spec:?}: {e}"))?;
    let mut s = ServerConfig {
        name: addr.to_string(),
        ..ServerConfig::new(address)
    };
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let num = |v: &str| {
            v.parse::<u64>()
                .with_context(|| format!("--upstream {spec:?}: {k}={v:?} is not a number"))
        };
        match k {
            "weight" => s.weight = num(v)?.max(1) as u32,
            "max_fails" => s.max_fails = num(v)? as u32,
            "max_conns" => s.max_conns = num(v)? as usize,
            "fail_timeout" => {
                s.fail_timeout = parse_duration(v).map_err(|e| anyhow::anyhow!("--upstream {spec:?}: fail_timeout={e}"))?
            }
            "backup" => s.backup = true,
            "down" => s.down = true,
            other => bail!("--upstream {spec:?}: unknown parameter {other:?} (weight, max_fails, fail_timeout, max_conns, backup, down)"),
        }
    }
    Ok(s)
}

fn summary(c: &Config) -> String {
    let mut out = String::new();
    let workers = shoal_proxy::workers::resolve_count(c.workers);
    if c.workers == 0 {
        out.push_str(&format!("workers {workers} (one per core)\n"));
    } else {
        out.push_str(&format!("workers {workers}\n"));
    }
    for l in &c.listeners {
        out.push_str(&format!(
            "listener {} {:?}{}\n",
            l.address,
            l.protocol,
            if l.tls.is_empty() { "" } else { " tls" }
        ));
    }
    for (name, u) in &c.upstreams {
        let dns: Vec<String> = c
            .discovery
            .iter()
            .filter(|d| &d.upstream == name)
            .map(|d| d.label())
            .collect();
        let dns = if dns.is_empty() {
            String::new()
        } else {
            format!(", and from DNS: {}", dns.join(", "))
        };
        out.push_str(&format!(
            "upstream {name} ({:?}): {} servers{dns}\n",
            u.strategy,
            u.servers.len()
        ));
    }
    for r in &c.routes {
        out.push_str(&format!(
            "route {}{} -> {}\n",
            r.host.as_deref().unwrap_or("*"),
            r.path,
            r.upstream
        ));
    }
    out
}

pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.check {
        let c = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        print!("{}", summary(&c));
        println!("{}: ok", path.display());
        return Ok(());
    }
    let mut config = match (&args.config, &args.quick.listen) {
        (Some(path), _) => Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        (None, Some(listen)) => {
            let addr = resolve(listen).map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
            let servers = args.quick.upstream.iter().map(|s| parse_server(s)).collect::<anyhow::Result<Vec<_>>>()?;
            if servers.iter().all(|s| s.backup) {
                bail!("at least one --upstream must not be a backup");
            }
            let mut c = Config::quick(addr, servers, Strategy::Builtin(args.quick.strategy), args.quick.tcp)?;
            if let Some(a) = &args.quick.admin {
                c.admin = Some(resolve(a).map_err(|e| anyhow::anyhow!("--admin: {e}"))?);
            }
            c.access_log = args.quick.access_log.clone();
            if let Some(k) = &args.quick.hash_key {
                let key = match k.strip_prefix("header:") {
                    Some(h) if !h.is_empty() => HashKey::Header(h.to_ascii_lowercase()),
                    _ if k == "path" => HashKey::Path,
                    _ => bail!("--hash-key {k:?}: expected path or header:NAME"),
                };
                for u in c.upstreams.values_mut() {
                    u.hash_key = key.clone();
                }
            }
            if let (Some(cert), Some(key)) = (&args.quick.cert, &args.quick.key) {
                for l in &mut c.listeners {
                    l.tls = vec![CertificateConfig { cert: cert.clone(), key: key.clone(), server_names: vec![] }];
                }
            }
            c
        }
        (None, None) => bail!("give --config FILE, --check FILE, or --listen ADDR with --upstream SERVER (see --help)"),
    };
    if !args.no_control {
        config.control_name = Some(args.name.clone());
    }
    if let Some(n) = args.threads {
        config.workers = n.max(1);
    }
    // The proxy's own worker threads serve connections; this runtime only
    // runs the control plane (signals, reload, health checks, admin). Once
    // stopped, the proxy waits at most a second for tasks still running.
    super::run_with_signals(
        super::Threads::One,
        Some(Duration::from_secs(1)),
        |shutdown| async move {
            let server = shoal_proxy::Server::bind(config).await?;
            for a in server.local_addrs() {
                tracing::info!(address = %a, "shoal proxy ready");
            }
            server.run(shutdown).await?;
            Ok(())
        },
    )
}
