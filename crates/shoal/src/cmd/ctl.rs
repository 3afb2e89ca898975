//! `shoal ctl`: send one request to a running server's control socket (a
//! cluster, a proxy, a broker, by `--name`) and print the reply.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  shoal ctl status                      # table of the workers of cluster \"cluster\"
  shoal ctl --name web status --json    # the same, as JSON
  shoal ctl --name web reload           # rolling reload; returns when done
  shoal ctl --name web scale 4          # or +1 / -1
  shoal ctl --name web restart          # all at once (reload is rolling)
  shoal ctl --name web signal USR2      # to every worker
  shoal ctl --name web logs -n 50 -f    # last 50 lines of each --log-dir file, then follow
  shoal ctl --name web flush            # empty the --log-dir files
  shoal ctl --name web send '{\"cmd\":\"flush\"}'
  shoal ctl --name web stop
  shoal ctl --name proxy status         # a proxy's upstream servers: state, connections, responses
  shoal ctl --name proxy add-server web 127.0.0.1:8003 --weight 2
  shoal ctl --name proxy drain-server web 127.0.0.1:8001   # no new requests; watch ACTIVE reach 0
  shoal ctl --name proxy remove-server web 127.0.0.1:8001
  shoal ctl broker list-queues          # queues of broker \"broker\" (like rabbitmqctl list_queues)
  shoal ctl --name stats flush          # a collector flushes now
  shoal ctl list                        # every running Shoal server and topology here
  shoal ctl --name up scale web 4       # a topology's cluster web (+N / -N too); the others stay
  shoal ctl --name up reload web        # a rolling reload of cluster web only
  shoal ctl --name up reload broker     # restart the broker with the file's [broker] (data kept)
  shoal ctl --name up reload stats      # the file's new [stats], or its mapping file reread
  shoal ctl --name up reload            # re-read the whole topology file (as SIGHUP)

What each server accepts (anything else is refused with this list):
  cluster   status, reload, scale, restart, signal, send, stop
  proxy     status, reload, stop, add-server, set-server, drain-server, remove-server
  broker    status, stop, and broker list-queues|list-exchanges|list-connections|overview
  stats     status, flush, reload (its mapping file), stop
  up        status, reload [PART], scale CLUSTER N|+N|-N, stop, and add-server|set-server|
            drain-server|remove-server for its proxy
            (a topology: PART is a cluster (web or cluster.web), proxy, broker, stats or
            dashboard; --name PART reaches a cluster of it too)

Control sockets live in $SHOAL_RUNTIME_DIR, else $XDG_RUNTIME_DIR/shoal, else /tmp/shoal-UID.")]
pub struct CtlArgs {
    /// The server's name (its --name) [default: cluster; broker for `ctl broker`].
    #[arg(long, global = true)]
    pub name: Option<String>,
    /// Print the raw JSON reply.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait for the reply (a rolling reload can take a while).
    #[arg(long, value_name = "DURATION", default_value = "5m", global = true)]
    pub timeout: String,
    #[command(subcommand)]
    pub request: Request,
}

#[derive(Subcommand, Debug)]
pub enum Request {
    /// Every server: a cluster's workers (id, pid, state, uptime, restarts,
    /// RSS, CPU%), a proxy's servers, a broker's totals, a collector's health,
    /// a topology's parts.
    Status,
    /// Cluster, proxy, stats, up: a cluster replaces its workers one at a
    /// time; a proxy re-reads its config; a collector its mapping file; a
    /// topology re-reads its file, or with PART applies it to that part
    /// only (a cluster: rolling reload; proxy: its table; broker, stats,
    /// dashboard: restarted with their table, a collector whose table is
    /// unchanged rereads its mapping file).
    Reload {
        /// A topology's part: `web` (or `cluster.web`), `proxy`, `broker`,
        /// `stats`, `dashboard`.
        part: Option<String>,
    },
    /// Cluster: set the number of workers: `4`, or `+2` / `-1` relative to
    /// now. A topology: `scale CLUSTER N` for one of its clusters.
    #[command(override_usage = "shoal ctl scale [OPTIONS] [CLUSTER] <N|+N|-N>")]
    Scale {
        /// A topology's cluster; for a lone cluster, the number of workers.
        #[arg(allow_hyphen_values = true, value_name = "CLUSTER")]
        first: String,
        /// The new number of workers, or a change (`+N`, `-N`).
        #[arg(allow_hyphen_values = true, value_name = "N")]
        workers: Option<String>,
    },
    /// Cluster: restart every worker at once (not rolling: use `reload` for that).
    Restart,
    /// Cluster: send a signal to every worker (e.g. `USR2`, `SIGHUP`, `10`).
    Signal {
        /// The signal's name or number.
        signal: String,
    },
    /// Every server: stop gracefully (as SIGTERM does).
    Stop,
    /// Cluster: deliver a JSON message to every worker's IPC channel.
    Send {
        /// The message, as JSON (e.g. '"ready"' or '{"cmd":"flush"}').
        message: String,
    },
    /// Stats: flush a `shoal stats` collector now (the interval's aggregates
    /// go to its sinks at once). Cluster: empty its --log-dir files and
    /// remove the rotated ones (`pm2 flush`).
    Flush,
    /// A cluster's --log-dir files: the last lines of each (`pm2 logs`), then
    /// with --follow the new ones as they come.
    Logs {
        /// Keep printing new lines (across rotation) until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines of each file to print.
        #[arg(short = 'n', long, value_name = "N", default_value_t = 15)]
        lines: usize,
    },
    /// Make a cluster reopen its --log-dir files (as SIGUSR1 does; for logrotate).
    ReopenLogs,
    /// Every running Shoal server and topology on this machine (each control
    /// socket in the runtime directory): name, kind, pid, state.
    List,
    /// Proxy: add a server to an upstream at runtime (new requests may go
    /// to it at once; a reload re-reads the file and forgets it).
    AddServer {
        /// The upstream's name (`default` for the quick form).
        upstream: String,
        /// HOST:PORT.
        address: String,
        /// A backup server: used only when no primary is available.
        #[arg(long)]
        backup: bool,
        #[command(flatten)]
        settings: ServerSettings,
    },
    /// Proxy: change a server's weight, max_fails, fail_timeout, max_conns,
    /// down or drain state at runtime.
    SetServer {
        upstream: String,
        address: String,
        #[command(flatten)]
        settings: ServerSettings,
    },
    /// Proxy: stop sending a server new requests; those in flight finish.
    /// `status` shows its ACTIVE count fall to 0; then remove-server it.
    DrainServer { upstream: String, address: String },
    /// Proxy: take a server out of an upstream (requests in flight finish).
    RemoveServer { upstream: String, address: String },
    /// Broker: its queues, exchanges, connections or overview.
    #[command(subcommand)]
    Broker(super::ctl_broker::BrokerCtl),
}

/// A proxy server's settings for `add-server` and `set-server`.
#[derive(Args, Debug, Default)]
pub struct ServerSettings {
    /// Share of the requests, relative to the others' weights.
    #[arg(long, value_name = "N")]
    weight: Option<u32>,
    /// Failures within fail_timeout that take the server out (0: never).
    #[arg(long, value_name = "N")]
    max_fails: Option<u32>,
    /// How long failures count, and how long a failed-out server stays out.
    #[arg(long, value_name = "DURATION")]
    fail_timeout: Option<String>,
    /// Most requests in flight to it at once (0: no limit).
    #[arg(long, value_name = "N")]
    max_conns: Option<u64>,
    /// Mark it down (no requests), or with --down=false up again.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    down: Option<bool>,
    /// Drain it (no new requests), or with --drain=false take new ones again.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    drain: Option<bool>,
}

impl ServerSettings {
    /// Into `req`'s keys, as the proxy's control socket reads them.
    fn fill(&self, req: &mut Value) {
        let pairs = [
            ("weight", self.weight.map(Value::from)),
            ("max_fails", self.max_fails.map(Value::from)),
            ("fail_timeout", self.fail_timeout.clone().map(Value::from)),
            ("max_conns", self.max_conns.map(Value::from)),
            ("down", self.down.map(Value::from)),
            ("drain", self.drain.map(Value::from)),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                req[k] = v;
            }
        }
    }
}

pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let name = args.name.as_deref();
    let req = match &args.request {
        Request::Broker(cmd) => {
            return super::ctl_broker::run(cmd, name.unwrap_or("broker"), args.json);
        }
        Request::Status => json!({"cmd": "status"}),
        Request::Reload { part } => match part {
            Some(p) => json!({"cmd": "reload", "part": p}),
            None => json!({"cmd": "reload"}),
        },
        Request::Scale { first, workers } => {
            let (cluster, w) = match workers {
                Some(w) => (Some(first.as_str()), w.trim()),
                None => (None, first.trim()),
            };
            let mut req = if let Some(d) = w.strip_prefix('+').or(w.strip_prefix('-').map(|_| w)) {
                let by: i64 = d
                    .parse()
                    .ok()
                    .filter(|n: &i64| *n != 0)
                    .with_context(|| format!("scale {w}: expected N, +N or -N"))?;
                json!({"cmd": "scale", "by": by})
            } else {
                let n: u64 = w
                    .parse()
                    .with_context(|| format!("scale {w}: expected N, +N or -N"))?;
                json!({"cmd": "scale", "workers": n})
            };
            if let Some(c) = cluster {
                req["cluster"] = json!(c);
            }
            req
        }
        Request::List => return list(args.json),
        Request::Logs { follow, lines } => {
            let timeout = shoal_core::parse_duration(&args.timeout)
                .map_err(anyhow::Error::msg)
                .context("--timeout")?;
            let name = name.unwrap_or_else(default_name);
            return super::ctl_logs::run(name, *lines, *follow, args.json, timeout);
        }
        Request::ReopenLogs => json!({"cmd": "reopen_logs"}),
        Request::Flush => json!({"cmd": "flush"}),
        Request::Restart => json!({"cmd": "restart"}),
        Request::Signal { signal } => json!({"cmd": "signal", "signal": signal}),
        Request::Stop => json!({"cmd": "stop"}),
        Request::AddServer {
            upstream,
            address,
            backup,
            settings,
        } => {
            let mut req = json!({"cmd": "add-server", "upstream": upstream, "address": address});
            if *backup {
                req["backup"] = json!(true);
            }
            settings.fill(&mut req);
            req
        }
        Request::SetServer {
            upstream,
            address,
            settings,
        } => {
            let mut req = json!({"cmd": "set-server", "upstream": upstream, "address": address});
            settings.fill(&mut req);
            req
        }
        Request::DrainServer { upstream, address } => {
            json!({"cmd": "drain-server", "upstream": upstream, "address": address})
        }
        Request::RemoveServer { upstream, address } => {
            json!({"cmd": "remove-server", "upstream": upstream, "address": address})
        }
        Request::Send { message } => {
            let m: Value = serde_json::from_str(message).with_context(|| {
                format!("send: {message:?} is not JSON (quote strings: '\"hi\"')")
            })?;
            json!({"cmd": "send", "message": m})
        }
    };
    let name = name.unwrap_or_else(default_name);
    let timeout = shoal_core::parse_duration(&args.timeout)
        .map_err(anyhow::Error::msg)
        .context("--timeout")?;
    let reply = request(name, &req, timeout)?;
    if args.json {
        println!("{reply}");
    } else if reply["ok"] != true {
        // Fall through to the error below.
    } else if let Some(up) = reply
        .get("up")
        .filter(|_| matches!(args.request, Request::Status))
    {
        print!("{}", up_table(up));
    } else if let Some(st) = reply
        .get("status")
        .filter(|_| matches!(args.request, Request::Status))
    {
        print!("{}", status_table(st));
    } else if let (Some(server), Some(line)) =
        (reply.get("server"), server_edit_line(&args.request))
    {
        println!("{line}: {}", server_settings(server));
    } else if let Some(ups) = reply
        .get("upstreams")
        .and_then(Value::as_array)
        .filter(|_| matches!(args.request, Request::Status))
    {
        print!("{}", proxy_table(&reply, ups));
    } else {
        let mut rest = reply.clone();
        if let Some(o) = rest.as_object_mut() {
            o.remove("ok");
        }
        println!(
            "ok {}",
            if rest.as_object().is_some_and(|o| o.is_empty()) {
                String::new()
            } else {
                rest.to_string()
            }
        );
    }
    if reply["ok"] != true {
        let e = reply["error"]
            .as_str()
            .unwrap_or("the server refused the request");
        if e.starts_with("unknown command") {
            anyhow::bail!("{name}: {e}{}", accepts_hint(name));
        }
        anyhow::bail!("{name}: {e}");
    }
    Ok(())
}

/// What a proxy server edit did, in words, for the line printed after it.
fn server_edit_line(r: &Request) -> Option<String> {
    Some(match r {
        Request::AddServer {
            upstream, address, ..
        } => format!("upstream {upstream}: added {address}"),
        Request::SetServer {
            upstream, address, ..
        } => format!("upstream {upstream}: changed {address}"),
        Request::DrainServer { upstream, address } => format!(
            "upstream {upstream}: {address} is draining (no new requests; `status` shows its ACTIVE requests fall to 0, then remove-server it)"
        ),
        Request::RemoveServer { upstream, address } => {
            format!("upstream {upstream}: removed {address} (requests in flight finish)")
        }
        _ => return None,
    })
}

/// A proxy server's settings on one line.
fn server_settings(s: &Value) -> String {
    let mut flags = Vec::new();
    for f in ["backup", "down", "drain"] {
        if s[f] == true {
            flags.push(if f == "drain" { "draining" } else { f });
        }
    }
    format!(
        "weight {}, max_fails {}, fail_timeout {}, max_conns {}{}",
        s["weight"],
        s["max_fails"],
        s["fail_timeout"].as_str().unwrap_or("?"),
        s["max_conns"],
        if flags.is_empty() {
            String::new()
        } else {
            format!(", {}", flags.join(", "))
        }
    )
}

/// What a `shoal up` topology's control socket answers.
pub const UP_ACCEPTS: &str = shoal_up::control::KNOWS;

/// The commands a server of each kind answers (its control handler's).
pub const ACCEPTS: &[(&str, &str)] = &[
    (
        "cluster",
        "status, reload, scale, restart, signal, send, stop",
    ),
    (
        "proxy",
        "status, reload, stop, add-server, set-server, drain-server, remove-server",
    ),
    (
        "broker",
        "status, stop, broker list-queues|list-exchanges|list-connections|overview",
    ),
    ("stats", "status, flush, reload, stop"),
    ("topology", UP_ACCEPTS),
];

/// "NAME is a KIND: shoal ctl --name NAME accepts ...", from its status.
fn accepts_hint(name: &str) -> String {
    let Ok(r) = request(
        name,
        &json!({"cmd": "status"}),
        std::time::Duration::from_secs(2),
    ) else {
        return String::new();
    };
    let (kind, _, _) = describe(&r);
    match ACCEPTS.iter().find(|(k, _)| *k == kind) {
        Some((_, cmds)) => {
            format!("\n{name} is a {kind} server: shoal ctl --name {name} accepts {cmds}")
        }
        None => String::new(),
    }
}

/// Without `--name`: the cluster called "cluster", or else a running `shoal
/// up` topology (control socket "up") when no such cluster runs.
fn default_name<'a>() -> &'a str {
    let exists = |n: &str| shoal_core::control::socket_path(n).exists();
    if !exists("cluster") && exists("up") {
        "up"
    } else {
        "cluster"
    }
}

/// One table over every part of a `shoal up` topology.
fn up_table(up: &Value) -> String {
    let mut out = format!(
        "topology {}  pid {}  file {}\n",
        cell(&up["name"]),
        up["pid"],
        cell(&up["file"])
    );
    for p in up["parts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        out.push('\n');
        let label = cell(&p["part"]);
        match p["kind"].as_str() {
            Some("cluster") => {
                out.push_str(&format!(
                    "[{label}] serves {}  `{}`\n",
                    join(&p["serves"]),
                    cell(&p["command"])
                ));
                out.push_str(&status_table(&p["status"]));
            }
            Some("proxy") => {
                out.push_str(&format!("[{label}]\n"));
                let st = &p["status"];
                let ups = st["upstreams"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                out.push_str(&proxy_table(st, ups));
            }
            Some("broker") => {
                let o = &p["overview"];
                let totals = &o["object_totals"];
                let detail = if o["ok"] == true {
                    format!(
                        "connections {}  queues {}  messages {}",
                        cell(&totals["connections"]),
                        cell(&totals["queues"]),
                        cell(&o["queue_totals"]["messages"])
                    )
                } else {
                    format!("(no answer: {})", cell(&o["error"]))
                };
                out.push_str(&format!(
                    "[{label}] amqp {}  admin {}  {detail}\n",
                    cell(&p["listen"]),
                    cell(&p["admin"])
                ));
            }
            Some("stats") => {
                let h = &p["status"]["health"];
                let detail = if h.is_object() {
                    h.as_object()
                        .map(|o| {
                            o.iter()
                                .filter(|(_, v)| v.is_number())
                                .map(|(k, v)| format!("{k} {v}"))
                                .collect::<Vec<_>>()
                                .join("  ")
                        })
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "[{label}] udp {}  metrics {}  {detail}\n",
                    join(&p["udp"]),
                    cell(&p["http"])
                ));
            }
            _ => out.push_str(&format!("[{label}] {p}\n")),
        }
    }
    out
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// Send one request to the control socket of the server called `name`.
pub fn request(name: &str, req: &Value, timeout: std::time::Duration) -> anyhow::Result<Value> {
    let path = shoal_core::control::socket_path(name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(shoal_core::control::request(&path, req, timeout))?)
}

/// `shoal ctl list`: ask every control socket in the runtime directory for
/// its status (2 s each) and say what answers.
fn list(as_json: bool) -> anyhow::Result<()> {
    let dir = shoal_core::control::runtime_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".sock"))
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut rows = Vec::new();
    for name in &names {
        let row = match request(
            name,
            &json!({"cmd": "status"}),
            std::time::Duration::from_secs(2),
        ) {
            Ok(r) if r["ok"] == true => {
                let (kind, pid, detail) = describe(&r);
                json!({"name": name, "kind": kind, "pid": pid, "state": "running", "detail": detail})
            }
            Ok(r) => json!({"name": name, "kind": "?", "pid": null, "state": "running",
                            "detail": r["error"].as_str().unwrap_or("")}),
            Err(e) => json!({"name": name, "kind": "?", "pid": null, "state": "not answering",
                             "detail": format!("{e:#}")}),
        };
        rows.push(row);
    }
    if as_json {
        println!(
            "{}",
            json!({"runtime_dir": dir.display().to_string(), "servers": rows})
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("no Shoal server has a control socket in {}", dir.display());
        return Ok(());
    }
    println!(
        "{:<16} {:<9} {:>8}  {:<14} DETAIL",
        "NAME", "KIND", "PID", "STATE"
    );
    for r in &rows {
        println!(
            "{:<16} {:<9} {:>8}  {:<14} {}",
            r["name"].as_str().unwrap_or("?"),
            r["kind"].as_str().unwrap_or("?"),
            r["pid"].as_u64().map_or("-".to_string(), |p| p.to_string()),
            r["state"].as_str().unwrap_or("?"),
            r["detail"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

/// What kind of server a status reply comes from, its pid if it says, and a
/// one-line summary.
fn describe(r: &Value) -> (&'static str, Option<u64>, String) {
    if let Some(up) = r.get("up") {
        let parts = up["parts"].as_array().map_or(0, Vec::len);
        return ("topology", up["pid"].as_u64(), format!("{parts} part(s)"));
    }
    if let Some(st) = r.get("status").filter(|s| s.get("workers").is_some()) {
        let n = st["workers"].as_array().map_or(0, Vec::len);
        let listen = st["listen"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return (
            "cluster",
            st["primary"]["pid"].as_u64(),
            format!("{n} worker(s) on {listen}"),
        );
    }
    if r.get("upstreams").is_some() {
        let n = r["upstreams"].as_array().map_or(0, Vec::len);
        return (
            "proxy",
            None,
            format!("{n} upstream(s), {} requests", r["requests_total"]),
        );
    }
    if r.get("health").is_some() {
        return ("stats", None, format!("{} series", r["health"]["series"]));
    }
    if let Some(t) = r.get("object_totals") {
        return (
            "broker",
            None,
            format!(
                "{} on {}: {} connection(s), {} queue(s)",
                "amqp",
                r["listen"].as_str().unwrap_or("?"),
                t["connections"],
                t["queues"]
            ),
        );
    }
    ("server", None, String::new())
}

/// A table a person can read, from a cluster's status (other servers' status
/// objects are printed as JSON).
fn status_table(st: &Value) -> String {
    let Some(workers) = st.get("workers").and_then(Value::as_array) else {
        return format!("{st:#}\n");
    };
    let mut out = String::new();
    let p = &st["primary"];
    out.push_str(&format!(
        "cluster {}  primary pid {}  RSS {}  workers {}/{}{}  listen {}\n",
        st["name"].as_str().unwrap_or("?"),
        p["pid"],
        mib(p["rss_bytes"].as_f64()),
        workers.len(),
        st["target"],
        if st["reloading"] == true {
            "  (reloading)"
        } else {
            ""
        },
        st["listen"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
    ));
    if let Some(limit) = st["max_memory_bytes"].as_f64() {
        out.push_str(&format!(
            "max-memory {} per worker: {} replaced for going over it\n",
            mib(Some(limit)),
            st["memory_replacements"]
        ));
    }
    out.push_str(&format!(
        "{:>4}  {:>8}  {:<9} {:>10}  {:>8}  {:>9}  {:>6}  {}\n",
        "ID", "PID", "STATE", "UPTIME", "RESTARTS", "RSS", "CPU%", "LAST EXIT"
    ));
    for w in workers {
        out.push_str(&format!(
            "{:>4}  {:>8}  {:<9} {:>10}  {:>8}  {:>9}  {:>6.1}  {}\n",
            w["id"].to_string(),
            w["pid"].to_string(),
            w["state"].as_str().unwrap_or("?"),
            uptime(w["uptime_secs"].as_f64().unwrap_or(0.0)),
            w["restarts"].to_string(),
            mib(w["rss_bytes"].as_f64()),
            w["cpu_percent"].as_f64().unwrap_or(0.0),
            w["last_exit"].as_str().unwrap_or("-"),
        ));
    }
    for f in st["logs"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let dropped = f["dropped_lines"].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "log {:<5} {}{}\n",
            cell(&f["stream"]),
            cell(&f["path"]),
            if dropped > 0 {
                format!("  ({dropped} lines dropped: not writable)")
            } else {
                String::new()
            }
        ));
    }
    out
}

/// A table of a proxy's upstream servers, from its status reply.
fn proxy_table(reply: &Value, upstreams: &[Value]) -> String {
    let listeners: Vec<String> = reply["listeners"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    let tls = if l["tls"] == true { "+tls" } else { "" };
                    format!("{} ({}{tls})", cell(&l["address"]), cell(&l["protocol"]))
                })
                .collect()
        })
        .unwrap_or_default();
    let workers = match &reply["workers"] {
        serde_json::Value::Null => String::new(),
        n => format!("  workers {n}"),
    };
    // Of the open connections, those between requests: waiting in their
    // tasks, or parked without one (nginx's "Waiting" is the sum).
    let waiting = match (&reply["idle_connections"], &reply["parked_connections"]) {
        (serde_json::Value::Null, _) | (_, serde_json::Value::Null) => String::new(),
        (i, p) => format!(" (idle {i}, parked {p})"),
    };
    let mut out = format!(
        "proxy  generation {}{workers}  active connections {}{waiting}  requests {}  listen {}\n",
        reply["generation"],
        reply["active_connections"],
        reply["requests_total"],
        listeners.join(", ")
    );
    out.push_str(&format!(
        "{:<12} {:<22} {:>6}  {:<9} {:>6} {:>5} {:>8} {:>8} {:>8}  FROM\n",
        "UPSTREAM", "SERVER", "WEIGHT", "STATE", "ACTIVE", "IDLE", "FAILS", "2xx", "5xx"
    ));
    for up in upstreams {
        for s in up["servers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            // The proxy's own word for it (`Peer::state`); a backup that is
            // up says so.
            let state = match s["state"].as_str() {
                Some("up") if s["backup"] == true => "backup",
                Some(state) => state,
                None => "?",
            };
            let row = format!(
                "{:<12} {:<22} {:>6}  {:<9} {:>6} {:>5} {:>8} {:>8} {:>8}  {}",
                cell(&up["name"]),
                cell(&s["address"]),
                cell(&s["weight"]),
                state,
                cell(&s["active"]),
                cell(&s["idle"]),
                cell(&s["failures"]),
                cell(&s["responses"]["2xx"]),
                cell(&s["responses"]["5xx"]),
                cell(&s["from"]),
            );
            // The FROM column is empty for servers not found over DNS.
            out.push_str(row.trim_end());
            out.push('\n');
        }
    }
    out
}

/// A JSON value as table text: strings bare, null empty, the rest as JSON.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn mib(b: Option<f64>) -> String {
    format!("{:.1} MiB", b.unwrap_or(0.0) / (1024.0 * 1024.0))
}

fn uptime(s: f64) -> String {
    let s = s as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_status_becomes_a_table_of_servers() {
        let reply = json!({
            "ok": true, "generation": 2, "workers": 2, "active_connections": 1, "requests_total": 9,
            "listeners": [{"address": "127.0.0.1:8080", "protocol": "http", "tls": true}],
            "upstreams": [{"name": "web", "servers": [
                {"address": "10.0.0.1:80", "weight": 3, "state": "up", "backup": false,
                 "active": 1, "idle": 2, "failures": 0,
                 "responses": {"2xx": 7, "5xx": 1}},
                {"address": "10.0.0.2:80", "weight": 1, "state": "failed", "backup": false,
                 "active": 0, "idle": 0, "failures": 4,
                 "responses": {"2xx": 0, "5xx": 0}},
                {"address": "10.0.0.3:80", "weight": 1, "state": "draining", "backup": false,
                 "active": 2, "idle": 0, "failures": 0, "responses": {"2xx": 5, "5xx": 0}}
            ]}]
        });
        let ups = reply["upstreams"].as_array().unwrap();
        let t = proxy_table(&reply, ups);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(
            lines[0].contains("generation 2  workers 2")
                && lines[0].contains("127.0.0.1:8080 (http+tls)"),
            "{t}"
        );
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            ["web", "10.0.0.1:80", "3", "up", "1", "2", "0", "7", "1"]
        );
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(row[3], "failed");
        assert_eq!(row[6], "4");
        let row: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!((row[3], row[4]), ("draining", "2"), "{t}");
    }
}
