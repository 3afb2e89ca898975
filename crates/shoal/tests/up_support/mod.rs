//! What the `shoal up` tests share: free ports, a small topology (broker,
//! collector, one Node cluster, proxy, dashboard) and a running `shoal up`
//! that is stopped on drop.
#![allow(dead_code)]

use crate::cluster_support::{kill, repo, shoal, TempDir};

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const T: Duration = Duration::from_secs(60);

/// A free TCP port (see [`crate::cluster_support::free_port`]).
pub fn free_tcp() -> u16 {
    crate::cluster_support::free_port()
}

/// A free UDP port (see [`crate::cluster_support::free_port`]).
pub fn free_udp() -> u16 {
    crate::cluster_support::free_port()
}

pub struct Ports {
    pub amqp: u16,
    pub udp: u16,
    pub metrics: u16,
    pub web: u16,
    pub proxy: u16,
    pub dashboard: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            amqp: free_tcp(),
            udp: free_udp(),
            metrics: free_tcp(),
            web: free_tcp(),
            proxy: free_tcp(),
            dashboard: free_tcp(),
        }
    }
}

pub fn topology(p: &Ports, data: &std::path::Path) -> String {
    let node_path = repo().join("tests/node/node_modules");
    format!(
        r#"[dashboard]
listen = "127.0.0.1:{dashboard}"

{broker}
[stats]
udp = ["127.0.0.1:{udp}"]
http = "127.0.0.1:{metrics}"
flush = "500ms"
sockets = 1

[cluster.web]
workers = 2
command = ["node", "examples/up/web.js"]
bind_host = "127.0.0.1"
ready = "listening"
grace = "5s"

[cluster.web.env]
PORT = "{web}"
SERVER_NAME = "web"
NODE_PATH = "{node_path}"

{proxy}"#,
        broker = broker_table(p.amqp, data),
        udp = p.udp,
        metrics = p.metrics,
        web = p.web,
        proxy = proxy_table(p.proxy),
        dashboard = p.dashboard,
        node_path = node_path.display(),
    )
}

/// A `[broker]` table on `amqp`, without the admin listener, keeping its
/// data under `data/broker`.
pub fn broker_table(amqp: u16, data: &std::path::Path) -> String {
    format!(
        "[broker]\nlisten = \"127.0.0.1:{amqp}\"\nadmin_listen = \"\"\ndata_dir = \"{}\"\n",
        data.join("broker").display()
    )
}

/// A `[proxy]` table on `port` in front of cluster `web`.
pub fn proxy_table(port: u16) -> String {
    format!(
        r#"[proxy]
workers = 1

[[proxy.listeners]]
address = "127.0.0.1:{port}"

[proxy.upstreams.app]
keepalive = 0
servers = "cluster:web"

[[proxy.routes]]
path = "/"
upstream = "app"
"#
    )
}

/// A running `shoal up FILE`, killed on drop.
pub struct Up {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
    pub rt: TempDir,
    pub file: PathBuf,
}

impl Up {
    pub fn spawn(text: &str) -> Up {
        Up::spawn_with_env(text, &[])
    }

    /// Like [`Up::spawn`], with `env` set for `shoal up`.
    pub fn spawn_with_env(text: &str, env: &[(&str, &std::ffi::OsStr)]) -> Up {
        let rt = TempDir::new();
        let file = rt.path().join("topology.toml");
        std::fs::write(&file, text).unwrap();
        let mut child = Command::new(shoal())
            .arg("up")
            .arg(&file)
            .current_dir(repo())
            .env("SHOAL_RUNTIME_DIR", rt.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let s = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut g = s.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        Up {
            child,
            stderr,
            rt,
            file,
        }
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait for the banner; panics with the log if it exits first.
    pub fn wait_running(&mut self) {
        if let Err(e) = self.try_wait_running() {
            panic!("{e}");
        }
    }

    /// Wait for the banner; the log if it exits first.
    pub fn try_wait_running(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if self.log().contains("shoal up: running") {
                return Ok(());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "shoal up exited ({st}) before running:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no banner within {T:?}:\n{}", self.log());
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("shoal up did not exit within {T:?}:\n{}", self.log());
    }

    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(shoal())
            .arg("ctl")
            .args(args)
            .env("SHOAL_RUNTIME_DIR", self.rt.path())
            .output()
            .unwrap()
    }

    /// The pids of the workers the log says were forked.
    pub fn forked_pids(&self) -> Vec<u32> {
        self.log()
            .lines()
            .filter(|l| l.contains(" forked (pid "))
            .filter_map(|l| {
                let rest = l.split(" forked (pid ").nth(1)?;
                rest.split(')').next()?.parse().ok()
            })
            .collect()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill(self.child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The pid in a worker's answer, `Hello from web worker 1 (pid 123)`.
pub fn pid_of(body: &str) -> Option<u32> {
    body.split("(pid ").nth(1)?.split(')').next()?.parse().ok()
}

/// Whether `node` runs here; if not, says the test is skipped.
pub fn needs_node() -> bool {
    let yes = node_available();
    if !yes {
        eprintln!("skipped: node is not on PATH");
    }
    yes
}

/// [`topology`] running on fresh ports (with the data dir to keep).
pub fn start_topology() -> (Up, Ports, TempDir) {
    let data = TempDir::new();
    let p = Ports::new();
    let mut up = Up::spawn(&topology(&p, data.path()));
    up.wait_running();
    (up, p, data)
}

impl Up {
    /// SIGTERM, and it exits 0.
    pub fn stop(mut self) {
        kill(self.child.id(), "TERM");
        let st = self.wait_exit();
        assert!(st.success(), "{st}:\n{}", self.log());
    }
}

/// `shoal ctl --json status`, parsed.
pub fn status(up: &Up) -> serde_json::Value {
    let out = up.ctl(&["--json", "status"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The parts' labels, in order.
pub fn labels(st: &serde_json::Value) -> Vec<String> {
    st["up"]["parts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["part"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of `part`'s online workers, sorted.
pub fn pids(st: &serde_json::Value, part: &str) -> Vec<u64> {
    let mut v: Vec<u64> = st["up"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["part"] == part)
        .flat_map(|p| {
            p["status"]["workers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|w| w["state"] == "online")
        .filter_map(|w| w["pid"].as_u64())
        .collect();
    v.sort();
    v
}

/// Wait until the log of `up` has `needle`.
pub fn wait_log(up: &Up, needle: &str) {
    let deadline = Instant::now() + T;
    while !up.log().contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in:\n{}", up.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}
