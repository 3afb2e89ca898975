//! Shared pieces of the `dgram_*` tests: child processes whose output lines
//! arrive on channels (killed on drop), `shoal dgram listen` started and
//! waited for, free ports.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long anything may take before a test gives up (only matters on failure).
pub const WAIT: Duration = Duration::from_secs(60);

/// A child process; stdout and stderr lines arrive on channels. Killed on drop.
pub struct Proc {
    pub child: Child,
    pub out: mpsc::Receiver<String>,
    pub err: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `shoal` binary under test.
pub fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

/// Node's module path for the test clients.
pub fn node_path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node/node_modules")
}

/// A UDP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pump(r: impl std::io::Read + Send + 'static, tag: &'static str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tag == "stderr" {
                eprintln!("[child] {l}");
            }
            let _ = tx.send(l);
        }
    });
    rx
}

/// Start `cmd` with piped output.
pub fn spawn(cmd: &mut Command) -> Proc {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = pump(child.stdout.take().expect("stdout"), "stdout");
    let err = pump(child.stderr.take().expect("stderr"), "stderr");
    Proc { child, out, err }
}

fn wait_line(rx: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if pred(&l) => return l,
            Ok(_) => {}
            Err(_) => panic!("no {what} line in time"),
        }
    }
}

/// Start a `shoal dgram listen` and wait until it is listening.
pub fn start_listener(cmd: &mut Command) -> Proc {
    let p = spawn(cmd);
    p.wait_err(|l| l.starts_with("Listening for datagrams"));
    p
}

impl Proc {
    /// The first stdout line matching `pred` (others are skipped).
    pub fn wait_out(&self, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.out, "matching stdout", pred)
    }

    /// The first stderr line matching `pred`.
    pub fn wait_err(&self, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.err, "matching stderr", pred)
    }

    /// The next `n` stdout lines, parsed as JSON.
    pub fn take_json(&self, n: usize) -> Vec<Value> {
        (0..n)
            .map(|_| serde_json::from_str(&self.wait_out(|_| true)).expect("JSON line"))
            .collect()
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Run `shoal dgram send ARGS...` to completion; fails the test on an error.
pub fn send(args: &[&str]) {
    let out = shoal()
        .args(["dgram", "send"])
        .args(args)
        .output()
        .expect("run shoal dgram send");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
