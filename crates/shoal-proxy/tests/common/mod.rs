//! Test helpers: the chapter's Node server as a child process (killed by pid
//! on drop), small Rust backends with chosen behaviours, a hyper client, and
//! a proxy started in-process on port 0.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use shoal_core::Shutdown;
use shoal_proxy::{Config, Handle, Server};

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn node_path() -> PathBuf {
    workspace().join("tests/node/node_modules")
}

/// A child process killed (by its pid) when dropped.
pub struct Proc {
    pub child: Child,
    pub port: u16,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start a node script that prints `listening PORT` when ready.
pub fn node(script: &str, port: u16, name: &str) -> Proc {
    let mut child = Command::new("node")
        .arg(workspace().join(script))
        .arg(port.to_string())
        .arg(name)
        .env("NODE_PATH", node_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node must be installed");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let mut p = Proc { child, port: 0 };
    BufReader::new(out)
        .read_line(&mut line)
        .expect("read node's ready line");
    p.port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("node {script} did not start: {line:?}"));
    p
}

/// The chapter's server answering `HOST <name>`.
pub fn node_host(name: &str) -> Proc {
    node("examples/proxy/server.js", 0, name)
}

/// How a Rust backend answers.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// `HOST <name>` with Content-Length, keep-alive.
    Name,
    /// Like Name, but paths starting with /slow wait this long first.
    Slow(Duration),
    /// Accept and read, never answer.
    Hang,
    /// Answer with the request head as the body (to inspect forwarded headers),
    /// and the request body's length in `X-Body-Len`.
    Echo,
}

/// A small HTTP/1.1 server in the test process; stops on drop.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// What `GET /health` answers: 200 when true, 503 when false.
    pub healthy: Arc<std::sync::atomic::AtomicBool>,
    stop: Shutdown,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

impl Backend {
    pub async fn start(name: &str, b: Behaviour) -> Backend {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, b).await
    }

    pub async fn start_on(addr: SocketAddr, name: &str, b: Behaviour) -> Backend {
        let l = TcpListener::bind(addr).await.expect("bind backend");
        let addr = l.local_addr().unwrap();
        let stop = Shutdown::new();
        let hits = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (s2, h2, name, ok2) = (
            stop.clone(),
            hits.clone(),
            name.to_string(),
            healthy.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (sock, _) = tokio::select! {
                    _ = s2.cancelled() => return,
                    r = l.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                let (s3, h3, name, ok3) = (s2.clone(), h2.clone(), name.clone(), ok2.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = s3.cancelled() => {}
                        _ = backend_conn(sock, &name, b, h3, ok3, &s3) => {}
                    }
                });
            }
        });
        Backend {
            addr,
            hits,
            healthy,
            stop,
        }
    }

    pub fn stop(&self) {
        self.stop.trigger();
    }
}

async fn backend_conn(
    mut s: TcpStream,
    name: &str,
    b: Behaviour,
    hits: Arc<AtomicUsize>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    stop: &Shutdown,
) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        // Read one head.
        let (head_len, path, body_len, chunked) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hs);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let cl = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .unwrap_or(0);
                let chunked = req
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
                break (n, req.path.unwrap_or("/").to_string(), cl, chunked);
            }
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&tmp[..k]),
            }
        };
        // A stopped backend answers nothing more, even on a connection
        // whose task has not yet seen the stop (a test that stops it and
        // then sends a request must not race the cancellation).
        if stop.is_triggered() {
            return;
        }
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        buf.drain(..head_len);
        if path == "/health" {
            let (code, text) = if healthy.load(Ordering::SeqCst) {
                (200, "OK")
            } else {
                (503, "Unavailable")
            };
            let resp = format!("HTTP/1.1 {code} {text}\r\nContent-Length: 0\r\n\r\n");
            if s.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        hits.fetch_add(1, Ordering::SeqCst);
        // Read the body.
        let body: Vec<u8> = if chunked {
            loop {
                if let Some(pos) = find(&buf, b"0\r\n\r\n") {
                    let raw: Vec<u8> = buf.drain(..pos + 5).collect();
                    break dechunk(&raw);
                }
                match s.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&tmp[..k]),
                }
            }
        } else {
            while buf.len() < body_len {
                match s.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&tmp[..k]),
                }
            }
            buf.drain(..body_len).collect()
        };
        let reply = match b {
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Behaviour::Slow(d) => {
                if path.starts_with("/slow") {
                    tokio::time::sleep(d).await;
                }
                format!("HOST {name}")
            }
            Behaviour::Name => format!("HOST {name}"),
            Behaviour::Echo => head,
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Body-Len: {}\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            reply.len(),
            reply
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = find(raw, b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..nl]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[nl + 2..nl + 2 + size]);
        raw = &raw[nl + 2 + size + 2..];
    }
}

/// A proxy running in this process.
pub struct Proxy {
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub handle: Handle,
    stop: Shutdown,
}

impl Proxy {
    /// Wait (up to 10 s) until the status field `key` equals `want`: the
    /// counters move just after the socket events a client sees.
    pub async fn wait_status(&self, key: &str, want: u64) {
        let ok = eventually(10, || async { self.handle.status()[key] == want }).await;
        assert!(ok, "{key} never reached {want}: {}", self.handle.status());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

pub async fn start_proxy(config: Config) -> Proxy {
    let server = Server::bind(config).await.expect("bind proxy");
    let addrs = server.local_addrs();
    let admin = server.admin_addr();
    let handle = server.handle();
    let stop = Shutdown::new();
    let s2 = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = server.run(s2).await {
            eprintln!("proxy stopped: {e}");
        }
    });
    Proxy {
        addr: addrs[0],
        addrs,
        admin,
        handle,
        stop,
    }
}

/// Parse `text` as a proxy config (listeners on port 0 get replaced by the caller).
pub fn config(text: &str) -> Config {
    Config::parse(std::path::Path::new("test.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `path` through `addr` with `host`; returns status and body.
pub async fn get(c: &HttpClient, addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    request(c, addr, "GET", host, path, Bytes::new()).await
}

pub async fn request(
    c: &HttpClient,
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    body: Bytes,
) -> (u16, String) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(body))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An empty-bodied client for the rare case a body type must be Empty.
pub fn empty() -> Empty<Bytes> {
    Empty::new()
}

/// Send raw bytes on a fresh connection and read until the server closes
/// (or 10 s pass); returns what came back.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An address on which nothing listens (bound once, then released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Poll `f` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `n` GETs of `/` through `p` (each must be a 200): how many times each
/// body was answered.
pub async fn tally(
    c: &HttpClient,
    p: &Proxy,
    n: usize,
) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for _ in 0..n {
        let (s, body) = get(c, p.addr, "localhost", "/").await;
        assert_eq!(s, 200, "{body}");
        *m.entry(body).or_default() += 1;
    }
    m
}
