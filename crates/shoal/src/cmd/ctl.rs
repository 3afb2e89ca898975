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
  shoal ctl --name web scale 4
  shoal ctl --name web send '{\"cmd\":\"flush\"}'
  shoal ctl --name web stop
  shoal ctl broker list-queues          # queues of broker \"broker\" (like rabbitmqctl list_queues)

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
    /// Workers (or the server's state): id, pid, state, uptime, restarts, RSS, CPU%.
    Status,
    /// Reload: a cluster replaces its workers one at a time; a proxy re-reads its config.
    Reload,
    /// Set the number of workers.
    Scale {
        /// The new number of workers.
        workers: u64,
    },
    /// Stop the server gracefully.
    Stop,
    /// Deliver a JSON message to every worker's IPC channel.
    Send {
        /// The message, as JSON (e.g. '"ready"' or '{"cmd":"flush"}').
        message: String,
    },
    /// Ask a `shoal broker` for its queues, exchanges, connections or overview.
    #[command(subcommand)]
    Broker(super::ctl_broker::BrokerCtl),
}

pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let name = args.name.as_deref();
    let req = match &args.request {
        Request::Broker(cmd) => {
            return super::ctl_broker::run(cmd, name.unwrap_or("broker"), args.json);
        }
        Request::Status => json!({"cmd": "status"}),
        Request::Reload => json!({"cmd": "reload"}),
        Request::Scale { workers } => json!({"cmd": "scale", "workers": workers}),
        Request::Stop => json!({"cmd": "stop"}),
        Request::Send { message } => {
            let m: Value = serde_json::from_str(message).with_context(|| {
                format!("send: {message:?} is not JSON (quote strings: '\"hi\"')")
            })?;
            json!({"cmd": "send", "message": m})
        }
    };
    let name = name.unwrap_or("cluster");
    let timeout = shoal_core::parse_duration(&args.timeout)
        .map_err(anyhow::Error::msg)
        .context("--timeout")?;
    let reply = request(name, &req, timeout)?;
    if args.json {
        println!("{reply}");
    } else if reply["ok"] != true {
        // Fall through to the error below.
    } else if let Some(st) = reply
        .get("status")
        .filter(|_| matches!(args.request, Request::Status))
    {
        print!("{}", status_table(st));
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
        anyhow::bail!("{name}: {e}");
    }
    Ok(())
}

/// Send one request to the control socket of the server called `name`.
pub fn request(name: &str, req: &Value, timeout: std::time::Duration) -> anyhow::Result<Value> {
    let path = shoal_core::control::socket_path(name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(shoal_core::control::request(&path, req, timeout))?)
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
    out.push_str(&format!(
        "{:>4}  {:>8}  {:<9} {:>10}  {:>8}  {:>9}  {:>6}\n",
        "ID", "PID", "STATE", "UPTIME", "RESTARTS", "RSS", "CPU%"
    ));
    for w in workers {
        out.push_str(&format!(
            "{:>4}  {:>8}  {:<9} {:>10}  {:>8}  {:>9}  {:>6.1}\n",
            w["id"].to_string(),
            w["pid"].to_string(),
            w["state"].as_str().unwrap_or("?"),
            uptime(w["uptime_secs"].as_f64().unwrap_or(0.0)),
            w["restarts"].to_string(),
            mib(w["rss_bytes"].as_f64()),
            w["cpu_percent"].as_f64().unwrap_or(0.0),
        ));
    }
    out
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
