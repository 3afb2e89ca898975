//! Shared helpers for the broker's binary-driving tests: start `shoal broker`
//! on a free loopback port with its own data directory, wait until it
//! accepts, kill it (by pid) when dropped; run Node/Python clients.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "shoal-broker-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
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

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `shoal broker`.
pub struct Broker {
    pub child: Option<Child>,
    pub port: u16,
    pub admin_port: u16,
    pub data: PathBuf,
    pub runtime: PathBuf,
    pub log: PathBuf,
}

pub const TIMEOUT: Duration = Duration::from_secs(60);

impl Broker {
    /// Start on fresh ports with data in `data`.
    pub fn start(data: &Path) -> Broker {
        Self::start_with(data, &[])
    }

    pub fn start_with(data: &Path, extra: &[&str]) -> Broker {
        Self::start_storing(data, &data.join("store"), extra)
    }

    /// Start with logs and runtime files in `data` and the message store in
    /// `store` (a small disk, say).
    pub fn start_storing(data: &Path, store: &Path, extra: &[&str]) -> Broker {
        for _attempt in 0..5 {
            let port = free_port();
            let admin_port = free_port();
            let runtime = data.join("run");
            let log = data.join(format!("broker-{port}.log"));
            std::fs::create_dir_all(&runtime).expect("runtime dir");
            let logf = std::fs::File::create(&log).expect("log file");
            let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
                .arg("broker")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--admin")
                .arg(format!("127.0.0.1:{admin_port}"))
                .arg("--data-dir")
                .arg(store)
                .args(extra)
                .env("SHOAL_RUNTIME_DIR", &runtime)
                .stdout(Stdio::null())
                .stderr(logf)
                .spawn()
                .expect("spawn shoal broker");
            let mut b = Broker {
                child: Some(child),
                port,
                admin_port,
                data: data.to_path_buf(),
                runtime,
                log,
            };
            if b.wait_ready() {
                return b;
            }
            b.kill();
        }
        panic!("shoal broker did not start");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return false;
                }
            }
            // The port is bound before the store is recovered: ready once
            // the broker says it is listening.
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self.log_text().contains("broker listening")
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        // SAFETY-free: use the kill(1) command with our own child's pid.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/broker_fixtures")
        .join(name)
}

/// Run a command with a hard timeout; kill it (by pid) if it overruns.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("client failed: {e}"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            let out = rx.recv_timeout(Duration::from_secs(10));
            panic!("client timed out after {timeout:?}: {out:?}");
        }
    }
}

/// `node <fixture> <port> [args]` with NODE_PATH at tests/node/node_modules.
pub fn node(script: &str, port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new("node");
    cmd.arg(fixture(script))
        .arg(port.to_string())
        .args(args)
        .env("NODE_PATH", workspace().join("tests/node/node_modules"));
    run_with_timeout(cmd, TIMEOUT)
}

/// `python3 <fixture> <port> [args]`.
pub fn python(script: &str, port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(fixture(script)).arg(port.to_string()).args(args);
    run_with_timeout(cmd, Duration::from_secs(120))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert success and print both streams on failure.
pub fn check(o: &Output, what: &str, broker: &Broker) -> String {
    let out = stdout(o);
    assert!(
        o.status.success(),
        "{what} failed: {:?}\n--- stdout\n{out}\n--- stderr\n{}\n--- broker log\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        broker.log_text()
    );
    out
}

/// Start a broker in a fresh scratch directory named after `tag` (`extra`:
/// more `shoal broker` arguments), run the fixture `script` against it with
/// `client` ([`node`] or [`python`]) and return its stdout, asserting success.
pub fn client_on_fresh_broker(
    tag: &str,
    extra: &[&str],
    client: fn(&str, u16, &[&str]) -> Output,
    script: &str,
) -> String {
    let dir = TempDir::new(tag);
    let b = Broker::start_with(dir.path(), extra);
    check(&client(script, b.port, &[]), script, &b)
}

/// Assert that `out` has a line `ok <check>` for each check.
pub fn assert_checks(out: &str, checks: &[&str]) {
    for c in checks {
        assert!(
            out.lines().any(|l| l == format!("ok {c}")),
            "check {c} missing:\n{out}"
        );
    }
}
