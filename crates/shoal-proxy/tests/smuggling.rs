//! No client may be handed another client's response. Attackers talk to the
//! proxy over raw sockets; behind it a recording origin parses requests as
//! leniently as common origins do (lines may end in a bare LF, the chunked
//! trailer section ends at the first empty line) and answers each request
//! with the path it parsed, so that a smuggled request or a shifted response
//! queue shows as a victim reading someone else's path.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the origin does after answering a request whose path names it.
#[derive(Clone, Copy)]
enum Misbehave {
    /// Nothing: a well-behaved keep-alive origin.
    No,
    /// `/late`: bytes past Content-Length arrive 50 ms after the response.
    Late,
    /// `/body204`: a 204 with a body after it.
    Body204,
    /// `/twice`: a second response nobody asked for, 50 ms later.
    Twice,
}

/// The origin's record of every request it parsed, by path.
type Log = Arc<parking_lot::Mutex<Vec<String>>>;

/// A lenient HTTP/1.1 origin on 127.0.0.1 (see the module docs).
async fn origin() -> (SocketAddr, Log) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(origin_conn(s, log2.clone()));
        }
    });
    (addr, log)
}

/// One line, without its LF and an optional CR before it.
async fn line(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut v = Vec::new();
    if r.read_until(b'\n', &mut v).await.ok()? == 0 {
        return None;
    }
    while matches!(v.last(), Some(b'\n' | b'\r')) {
        v.pop();
    }
    Some(String::from_utf8_lossy(&v).into_owned())
}

async fn origin_conn(s: TcpStream, log: Log) {
    let mut r = BufReader::new(s);
    loop {
        let Some(request_line) = line(&mut r).await else {
            return;
        };
        if request_line.is_empty() {
            continue;
        }
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let (mut chunked, mut length) = (false, 0usize);
        loop {
            let Some(h) = line(&mut r).await else { return };
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((&h, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        if chunked {
            loop {
                let Some(size) = line(&mut r).await else {
                    return;
                };
                let hex: String = size.chars().take_while(char::is_ascii_hexdigit).collect();
                let n = usize::from_str_radix(&hex, 16).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut data = vec![0; n];
                if r.read_exact(&mut data).await.is_err() {
                    return;
                }
                line(&mut r).await;
            }
            // Trailers, to the first empty line.
            while let Some(t) = line(&mut r).await {
                if t.is_empty() {
                    break;
                }
            }
        } else if length > 0 {
            let mut data = vec![0; length];
            if r.read_exact(&mut data).await.is_err() {
                return;
            }
        }
        log.lock().push(path.clone());
        let how = match path.as_str() {
            "/late" => Misbehave::Late,
            "/body204" => Misbehave::Body204,
            "/twice" => Misbehave::Twice,
            _ => Misbehave::No,
        };
        let w = r.get_mut();
        let answer = match how {
            Misbehave::Body204 => "HTTP/1.1 204 No Content\r\n\r\nPOISON-204".to_string(),
            _ => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                path.len()
            ),
        };
        if w.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let stray = match how {
            Misbehave::Late => Some("POISON-late".to_string()),
            Misbehave::Twice => {
                Some("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nPOISON-second".into())
            }
            _ => None,
        };
        if let Some(stray) = stray {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if w.write_all(stray.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

fn proxy_config(origin: SocketAddr, extra: &str) -> shoal_proxy::Config {
    config(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n{extra}\n[[routes]]\ntarget = \"{origin}\"\n"
    ))
}

/// Send one request on a new connection and read one response (status
/// line and body), with `Connection: close`.
async fn victim(addr: SocketAddr, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

/// Every victim, one after another, gets its own response.
async fn victims_get_their_own(addr: SocketAddr, n: usize) {
    for i in 0..n {
        let path = format!("/victim-{i}");
        let out = victim(addr, &path).await;
        assert!(out.starts_with("HTTP/1.1 200 "), "victim {i}: {out:?}");
        assert!(
            out.ends_with(&path),
            "victim {i} got another's answer: {out:?}"
        );
        assert!(
            !out.contains("POISON") && !out.contains("hidden"),
            "{out:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_hidden_in_chunked_framing_never_reaches_the_origin() {
    let (up, log) = origin().await;
    let p = start_proxy(proxy_config(up, "")).await;
    let hidden = "GET /hidden HTTP/1.1\r\nHost: a\r\n\r\n";
    let attacks = [
        // The trailer section ended by a bare LF (lenient origins stop there).
        format!("0\r\n\n{hidden}"),
        format!("0\r\nX-T: 1\n\n{hidden}"),
        format!("0\r\nX-T: 1\r\n\n{hidden}"),
        // Bare LF after a size or after data.
        format!("5\nhello\r\n0\r\n\r\n{hidden}"),
        format!("5\r\nhello\n0\r\n\r\n{hidden}"),
        // A size the origin reads differently, and control bytes.
        format!("5 6\r\nhello\r\n0\r\n\r\n{hidden}"),
        format!("5;a\x00b\r\nhello\r\n0\r\n\r\n{hidden}"),
        // Framing and a request line inside the trailers.
        format!("0\r\nContent-Length: 40\r\n\r\n{hidden}"),
        format!("0\r\nTransfer-Encoding: chunked\r\n\r\n{hidden}"),
        format!("0\r\n{hidden}"),
    ];
    for body in &attacks {
        let req =
            format!("POST /attack HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let out = raw(p.addr, req.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{body:?}: {out:?}");
        victims_get_their_own(p.addr, 3).await;
    }
    let seen = log.lock().clone();
    assert!(
        !seen.iter().any(|p| p == "/hidden"),
        "the origin parsed a hidden request: {seen:?}"
    );
    // A well-formed chunked body with extensions and a trailer field is
    // forwarded (extensions dropped, the trailer kept).
    let ok = raw(
        p.addr,
        b"POST /fine HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
    )
    .await;
    assert!(
        ok.starts_with("HTTP/1.1 200 ") && ok.ends_with("/fine"),
        "{ok:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_bytes_from_an_origin_never_reach_the_next_client() {
    let (up, _log) = origin().await;
    let p = start_proxy(proxy_config(up, "")).await;
    for attack in ["/late", "/body204", "/twice"] {
        let out = victim(p.addr, attack).await;
        assert!(out.starts_with("HTTP/1.1 2"), "{attack}: {out:?}");
        // The stray bytes arrive while the connection sits in the pool.
        tokio::time::sleep(Duration::from_millis(300)).await;
        victims_get_their_own(p.addr, 4).await;
    }
    // And when the next request comes at once, before any sweep.
    for attack in ["/late", "/twice"] {
        let _ = victim(p.addr, attack).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        victims_get_their_own(p.addr, 2).await;
    }
    let status = p.handle.status();
    let discards: u64 = status["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|u| u["servers"].as_array().cloned().unwrap_or_default())
        .map(|s| s["pool_discards"].as_u64().unwrap_or(0))
        .sum();
    assert!(discards >= 4, "poisoned connections counted: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_get_400_from_a_client_and_502_from_an_origin() {
    // A client's malformed body: 400, then the connection closes.
    let (up, _log) = origin().await;
    let p = start_proxy(proxy_config(up, "")).await;
    let out = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out:?}");

    // An origin's malformed chunked response: the client gets 502.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n")
                    .await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let p2 = start_proxy(proxy_config(bad, "")).await;
    let out = victim(p2.addr, "/").await;
    assert!(out.starts_with("HTTP/1.1 502 "), "{out:?}");
}

/// The h11 origin (tests/fixtures/h11_origin.py): its port, the process,
/// and the lines it prints, one per request it parsed.
struct H11 {
    port: u16,
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl H11 {
    async fn start() -> H11 {
        let script = workspace().join("crates/shoal-proxy/tests/fixtures/h11_origin.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 must be installed");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().unwrap_or_default();
        let port = first
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("h11 origin did not start (pip install h11): {first:?}"));
        H11 { port, child, lines }
    }

    /// Every request target the origin has parsed so far.
    async fn seen(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Ok(Some(l))) =
            tokio::time::timeout(Duration::from_millis(300), self.lines.next_line()).await
        {
            out.extend(l.strip_prefix("request ").map(str::to_string));
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h11_behind_the_proxy_sees_no_hidden_request() {
    let mut h11 = H11::start().await;
    let up: SocketAddr = ([127, 0, 0, 1], h11.port).into();
    let attack = b"POST /attack HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /hidden HTTP/1.1\r\nHost: a\r\n\r\n";
    // Sent straight to h11, the attack carries a second request: this
    // origin is one the proxy must protect.
    let mut s = TcpStream::connect(up).await.unwrap();
    s.write_all(attack).await.unwrap();
    let direct = h11.seen().await;
    assert_eq!(
        direct,
        ["/attack", "/hidden"],
        "h11 reads the bare-LF trailer end"
    );
    drop(s);

    let p = start_proxy(proxy_config(up, "")).await;
    let out = raw(p.addr, attack).await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out:?}");
    victims_get_their_own(p.addr, 3).await;
    let seen = h11.seen().await;
    assert!(!seen.iter().any(|t| t == "/hidden"), "{seen:?}");
    assert_eq!(seen.len(), 3, "only the victims reached h11: {seen:?}");
    // A well-formed chunked upload with a trailer reaches h11 whole.
    let ok = raw(
        p.addr,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n",
    )
    .await;
    assert!(
        ok.starts_with("HTTP/1.1 200 ") && ok.ends_with("/upload"),
        "{ok:?}"
    );
    let _ = h11.child.start_kill();
}
