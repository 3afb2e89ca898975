//! Shared by the cluster tests: `shoal cluster --json` run as a user runs
//! it (events read from stdout, `shoal ctl` against its control socket),
//! plain HTTP GETs, and process checks.

#![allow(dead_code)]

mod ports;
#[allow(unused_imports)]
pub use ports::free_port;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const T: Duration = Duration::from_secs(60);

pub fn shoal() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `shoal cluster --json`, killed (with its workers) on drop.
pub struct Primary {
    pub child: Child,
    pub events: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
    pub rt: TempDir,
    pub name: String,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    pub worker_pids: Vec<u32>,
}

impl Primary {
    pub fn start(name: &str, flags: &[&str], command: &[&str]) -> Primary {
        Self::start_with_env(name, flags, command, &[])
    }

    /// [`Primary::start`] with extra environment for the primary (and so
    /// for its workers).
    pub fn start_with_env(
        name: &str,
        flags: &[&str],
        command: &[&str],
        env: &[(&str, &str)],
    ) -> Primary {
        let rt = TempDir::new();
        let mut cmd = Command::new(shoal());
        cmd.envs(env.iter().copied());
        cmd.arg("cluster")
            .args(["--name", name, "--json"])
            .args(flags)
            .args(if command.is_empty() {
                &[][..]
            } else {
                &["--"][..]
            })
            .args(command)
            .current_dir(repo())
            .env("SHOAL_RUNTIME_DIR", rt.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => panic!("stdout line is not a JSON event: {line}"),
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Primary {
            child,
            events: rx,
            seen: Vec::new(),
            rt,
            name: name.to_string(),
            stderr,
            worker_pids: Vec::new(),
        }
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until the primary's stderr contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + T;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the next event matching `pred` (earlier ones are kept in `seen`).
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    if v["event"] == "fork" {
                        self.worker_pids.push(v["pid"].as_u64().unwrap() as u32);
                    }
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {what} event; seen {:?}\nlog:\n{}",
                    self.seen,
                    self.log()
                ),
            }
        }
    }

    /// Wait until workers 1..=n have all been online (in any order).
    pub fn all_online(&mut self, n: u64) {
        let done = |seen: &[Value]| {
            (1..=n).all(|id| seen.iter().any(|v| v["event"] == "online" && v["id"] == id))
        };
        while !done(&self.seen) {
            self.wait_for("online", |v| v["event"] == "online");
        }
    }

    pub fn event(&mut self, kind: &str) -> Value {
        self.wait_for(kind, |v| v["event"] == kind)
    }

    /// The first listen address from the setup event.
    pub fn addr(&mut self) -> String {
        let setup = self.seen.iter().find(|v| v["event"] == "setup").cloned();
        let setup = setup.unwrap_or_else(|| self.event("setup"));
        setup["listen"][0].as_str().unwrap().to_string()
    }

    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(shoal())
            .arg("ctl")
            .args(["--name", &self.name])
            .args(args)
            .env("SHOAL_RUNTIME_DIR", self.rt.path())
            .output()
            .unwrap()
    }

    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ctl(&a);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ctl {args:?}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    pub fn signal(&self, sig: &str) {
        kill(self.child.id(), sig);
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + T;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "primary did not exit\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        while let Ok(v) = self.events.try_recv() {
            if v["event"] == "fork" {
                self.worker_pids.push(v["pid"].as_u64().unwrap_or(0) as u32);
            }
        }
        for &pid in &self.worker_pids {
            if alive(pid) {
                // PDEATHSIG should already have killed it; a last resort for a failing test.
                kill(pid, "KILL");
            }
        }
    }
}

/// Send signal `sig` (`TERM`, `KILL`, ...) to `pid` with kill(1).
pub fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status();
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("shoal-cluster-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The zombie children of `parent`.
pub fn zombies_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(i) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[i + 2..].split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 2..].chars().next())
            .is_some_and(|st| st != 'Z' && st != 'X'),
        Err(_) => false,
    }
}

/// One HTTP/1.1 GET on a new connection; `None` on any failure.
pub fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let (head, mut body) = resp.split_once("\r\n\r\n")?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((code, body.to_string()));
    }
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some((code, out));
        }
        out.push_str(rest.get(..n)?);
        body = rest.get(n + 2..)?;
    }
}

pub fn server_js() -> String {
    repo()
        .join("examples/cluster/server.js")
        .display()
        .to_string()
}

pub fn write_script(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// GET / until `want` different bodies came back (or the time is up), every
/// answer a 200; the bodies, sorted. Time-bounded, not count-bounded: on a
/// loaded machine a worker that is "online" may still be starting, or not
/// scheduled for a while.
pub fn distinct_answers(addr: &str, want: usize) -> Vec<String> {
    let mut from = std::collections::BTreeSet::new();
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let (code, body) = get(addr, "/").expect("request failed");
        assert_eq!(code, 200);
        from.insert(body);
        if from.len() == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    from.into_iter().collect()
}

/// Online workers' (id, pid) from `ctl status --json`.
pub fn pids(p: &Primary) -> Vec<(u64, u64)> {
    let st = p.ctl_json(&["status"]);
    let mut v: Vec<(u64, u64)> = st["status"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "online")
        .map(|w| (w["id"].as_u64().unwrap(), w["pid"].as_u64().unwrap()))
        .collect();
    v.sort();
    v
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GETs to `addr`, each on a new connection, until `stop` (or 100,000 of
/// them): (answered 200, failures).
pub fn get_until(
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok < 100_000 {
            match get(&addr, "/") {
                Some((200, _)) => ok += 1,
                other => failed.push(format!("{other:?}")),
            }
        }
        (ok, failed)
    })
}
