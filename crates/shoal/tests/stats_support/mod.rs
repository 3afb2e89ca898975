//! Shared pieces of the `stats_*` tests: start `shoal stats` as a child
//! process, wait for its ready line, scrape `/metrics`, ask for a flush over
//! the control socket, read its JSON lines, and kill it on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long anything may take before a test gives up (only matters on failure).
pub const WAIT: Duration = Duration::from_secs(60);

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn node_path() -> PathBuf {
    workspace().join("tests/node/node_modules")
}

/// A running `shoal stats`.
pub struct Collector {
    pub child: Child,
    pub udp: SocketAddr,
    pub tcp: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub control: PathBuf,
    pub stdout: mpsc::Receiver<String>,
    pub stderr: mpsc::Receiver<String>,
    _dir: TempDir,
}

/// A private directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("shoal-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
        .filter(|v| v != "-")
}

impl Collector {
    /// Start `shoal stats` with `args` plus a private runtime directory.
    pub fn start(args: &[&str]) -> Collector {
        let dir = TempDir::new("stats");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("stats")
            .args(args)
            .env("SHOAL_RUNTIME_DIR", &dir.0)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoal stats");
        let (out_tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = out_tx.send(l);
            }
        });
        let (err_tx, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = err_tx.send(l);
            }
        });
        let deadline = Instant::now() + WAIT;
        let ready = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stderr.recv_timeout(left) {
                Ok(l) if l.starts_with("shoal stats: ready") => break l,
                Ok(l) => eprintln!("[stats] {l}"),
                Err(_) => panic!("shoal stats did not become ready"),
            }
        };
        let udp = field(&ready, "udp")
            .and_then(|u| u.split(',').next()?.parse().ok())
            .expect("udp");
        Collector {
            child,
            udp,
            tcp: field(&ready, "tcp").map(|a| a.parse().expect("tcp addr")),
            http: field(&ready, "http").map(|a| a.parse().expect("http addr")),
            control: field(&ready, "control")
                .map(PathBuf::from)
                .expect("control"),
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// GET /metrics.
    pub fn metrics(&self) -> String {
        http_get(self.http.expect("http on"), "/metrics").1
    }

    /// The value of the sample line starting with `series ` (exact name and labels).
    pub fn value(&self, series: &str) -> Option<f64> {
        sample(&self.metrics(), series)
    }

    /// Wait until the collector has accepted at least `n` metric lines.
    pub fn wait_metrics(&self, n: u64) {
        self.wait_health("metrics", n);
    }

    /// Wait until health counter `name` (from `{"cmd":"status"}`) reaches `n`.
    pub fn wait_health(&self, name: &str, n: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.control(r#"{"cmd":"status"}"#)["health"][name]
                .as_u64()
                .unwrap_or(0);
            if got >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{name} stuck at {got}, want {n}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send one control request and return the reply.
    pub fn control(&self, req: &str) -> serde_json::Value {
        let mut s = UnixStream::connect(&self.control).expect("connect control socket");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.write_all(format!("{req}\n").as_bytes())
            .expect("write request");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read reply");
        serde_json::from_str(&line).expect("reply is JSON")
    }

    /// Flush now (control socket) and return the JSON line the flush printed.
    pub fn flush_json(&self) -> serde_json::Value {
        let r = self.control(r#"{"cmd":"flush"}"#);
        assert_eq!(r["ok"], true, "{r}");
        self.next_json()
    }

    /// The next JSON line on stdout.
    pub fn next_json(&self) -> serde_json::Value {
        let l = self
            .stdout
            .recv_timeout(WAIT)
            .expect("a JSON line on stdout");
        serde_json::from_str(&l).expect("stdout line is JSON")
    }

    /// Start with UDP on 127.0.0.1:0, the JSON sink, no HTTP, and flushes
    /// only on request (1h interval), plus `extra`.
    pub fn start_json(extra: &[&str]) -> Collector {
        Collector::start_on_request(&["--no-http"], extra)
    }

    /// As [`Collector::start_json`], with `/metrics` served on 127.0.0.1:0.
    pub fn start_json_http(extra: &[&str]) -> Collector {
        Collector::start_on_request(&["--http", "127.0.0.1:0"], extra)
    }

    fn start_on_request(http: &[&str], extra: &[&str]) -> Collector {
        let mut args = vec!["--udp", "127.0.0.1:0"];
        args.extend_from_slice(http);
        args.extend_from_slice(&["--json", "--flush", "1h"]);
        args.extend_from_slice(extra);
        Collector::start(&args)
    }

    /// Send signal `sig` (e.g. 1 for SIGHUP) to the collector.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc_kill(self.child.id() as i32, sig) };
    }

    /// Wait for a line on stderr that contains every one of `parts`, and
    /// return it.
    pub fn wait_log(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) if parts.iter().all(|p| l.contains(p)) => return l,
                Ok(_) => {}
                Err(_) => panic!("no log line with {parts:?}"),
            }
        }
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc_kill(pid, 15) };
        self.wait_exit()
    }

    /// Wait for the collector to exit on its own.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "shoal stats ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The value on the line `series value` in a Prometheus document.
pub fn sample(doc: &str, series: &str) -> Option<f64> {
    doc.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect http");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Run a program to completion, failing the test on a non-zero exit.
pub fn run_client(cmd: &mut Command) {
    let out = cmd.output().expect("run client");
    assert!(
        out.status.success(),
        "client failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// promtool's naming advice (lint, not a format error) that user-chosen
/// names may draw: a gauge called `x_sum`, `x_count` or `x_bucket` is the
/// sender's choice, and valid in the format.
/// A counter a mapping file names without `_total` (statsd_exporter keeps
/// the name the user mapped) draws advice too.
const NAMING_ADVICE: &[&str] = &[
    "non-histogram and non-summary metrics should not have",
    "non-histogram metrics should not have",
    "counter metrics should have \"_total\" suffix",
];

/// Run `promtool check metrics` on `doc`: whether it found nothing but
/// naming advice on user series, and its output.
pub fn promtool(doc: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool missing: apt-get install -y prometheus");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(doc.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let only_advice = text.lines().all(|l| {
        l.trim().is_empty()
            || (!l.starts_with("shoal_stats") && NAMING_ADVICE.iter().any(|a| l.contains(a)))
    });
    (out.status.success() || only_advice, text)
}
