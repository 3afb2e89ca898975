//! Shared by the `shoal proxy` binary tests: children and scratch
//! directories cleaned up on drop, free ports, the binary with its own
//! runtime directory, and plain GETs over a socket.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child killed by pid on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("shoal-proxy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[path = "../cluster_support/ports.rs"]
mod ports;
#[allow(unused_imports)]
pub use ports::free_port;

/// The shoal binary with its control sockets in `runtime`.
pub fn shoal(runtime: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shoal"));
    c.env("SHOAL_RUNTIME_DIR", runtime);
    c
}

/// One GET of `path` with `Connection: close`, by hand over a socket;
/// for a 200, the body's `HOST ...` line (what the tests' Node servers
/// answer), else the whole body.
pub fn get_path(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    if !out.starts_with("HTTP/1.1 200") {
        return None;
    }
    // The Node servers answer chunked: "8\r\nHOST one\r\n0\r\n\r\n".
    let body = out.split("\r\n\r\n").nth(1)?;
    Some(
        body.lines()
            .find(|l| l.starts_with("HOST "))
            .unwrap_or(body)
            .to_string(),
    )
}

/// [`get_path`] of `/`.
pub fn get(addr: SocketAddr) -> Option<String> {
    get_path(addr, "/")
}

/// Whether `f` came true within `secs` seconds.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Start `cmd`, a server that prints `listening PORT` first; the child
/// and its port.
pub fn listening(mut cmd: Command) -> (Proc, u16) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected \"listening PORT\", got {line:?}"));
    (Proc(child), port)
}
