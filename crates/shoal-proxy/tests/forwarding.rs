//! Forwarding behaviour: routing, headers, bodies, smuggling, WebSocket,
//! reload, TCP mode, admin — with real backends and real clients (hyper,
//! Python `websockets`, raw sockets for malformed input).

mod common;

use bytes::Bytes;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_like_node_http_proxy() {
    let one = node_host("one");
    let two = node_host("two");
    let three = node_host("three");
    let cfg = format!(
        r#"
[[listeners]]
address = "127.0.0.1:0"

[[routes]]
host = "www.mywebsite.com"
path = "/friends"
target = "127.0.0.1:{}"

[[routes]]
host = "www.mywebsite.com"
path = "/foes"
target = "127.0.0.1:{}"

[[routes]]
host = "www.myothersite.com"
target = "127.0.0.1:{}"
"#,
        one.port, two.port, three.port
    );
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    assert_eq!(
        get(&c, p.addr, "www.mywebsite.com", "/friends/7").await.1,
        "HOST one"
    );
    assert_eq!(
        get(&c, p.addr, "www.mywebsite.com:80", "/foes").await.1,
        "HOST two"
    );
    assert_eq!(
        get(&c, p.addr, "WWW.MyOtherSite.com", "/anything").await.1,
        "HOST three"
    );
    assert_eq!(get(&c, p.addr, "www.mywebsite.com", "/other").await.0, 404);
    assert_eq!(get(&c, p.addr, "unknown.example", "/").await.0, 404);
}

/// Run `python3 -c script args...` (60 s at most); assert success, return stdout.
async fn python(script: &str, args: &[String]) -> String {
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("python timed out")
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A proxy started from a config file (which the test may rewrite and reload).
async fn file_proxy(text: &str) -> (tempfile::TempDir, std::path::PathBuf, Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let p = start_proxy(shoal_proxy::Config::load(&path).unwrap()).await;
    (dir, path, p)
}

fn single(addr: std::net::SocketAddr) -> String {
    format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[routes]]\ntarget = \"{addr}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_headers_and_streams_bodies() {
    let echo = Backend::start("echo", Behaviour::Echo).await;
    let p = start_proxy(config(&single(echo.addr))).await;
    // Headers: Host kept, X-Forwarded-*, Via; hop-by-hop gone.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /h?q=1 HTTP/1.1\r\nHost: www.a.com\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let resp = read_one_response(&mut s).await;
    assert!(resp.contains("GET /h?q=1 HTTP/1.1"), "{resp}");
    assert!(resp.contains("Host: www.a.com"), "{resp}");
    assert!(
        resp.contains("X-Forwarded-For: 10.0.0.1, 127.0.0.1"),
        "{resp}"
    );
    assert!(resp.contains("X-Forwarded-Proto: http"), "{resp}");
    assert!(resp.contains("X-Forwarded-Host: www.a.com"), "{resp}");
    assert!(resp.contains("Via: 1.1 shoal"), "{resp}");
    assert!(
        !resp.contains("X-Hop") && !resp.contains("Keep-Alive"),
        "{resp}"
    );

    // Bodies: a 1 MiB fixed-length body and a chunked one (streamed).
    let c = client();
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{}/up", p.addr))
        .body(http_body_util::Full::new(big))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.headers()["x-body-len"], "1048576");
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    let resp = read_one_response(&mut s).await;
    assert!(resp.contains("X-Body-Len: 11"), "{resp}");
    assert!(
        resp.contains("Transfer-Encoding: chunked"),
        "backend saw chunked framing: {resp}"
    );
}

/// Read one response with a Content-Length body from `s`.
async fn read_one_response(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut tmp))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_get_400_and_others_keep_being_served() {
    let echo = Backend::start("echo", Behaviour::Echo).await;
    let p = start_proxy(config(&single(echo.addr))).await;
    let attacks: [&[u8]; 5] = [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nContent-Length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ];
    for a in attacks {
        let out = raw(p.addr, a).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(!out.contains("smuggled"), "{out}");
    }
    assert_eq!(
        echo.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );
    let c = client();
    let (s, body) = get(&c, p.addr, "a", "/fine").await;
    assert_eq!(s, 200);
    assert!(body.contains("GET /fine"));
    // Header limits: too many fields is 431.
    let many: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
    let out = raw(
        p.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy_with_python_websockets() {
    let ws = node("examples/proxy/ws-echo.js", 0, "echo");
    let p = start_proxy(config(&single(
        format!("127.0.0.1:{}", ws.port).parse().unwrap(),
    )))
    .await;
    let script = r#"
import asyncio, sys
from websockets.asyncio.client import connect
async def main(url):
    async with connect(url) as ws:
        for msg in ["hello", "world"]:
            await ws.send(msg)
            print(await asyncio.wait_for(ws.recv(), 20))
asyncio.run(main(sys.argv[1]))
"#;
    let stdout = python(script, &[format!("ws://{}/chat", p.addr)]).await;
    assert_eq!(stdout.trim(), "echo: hello\necho: world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request_and_bad_config_is_refused() {
    let a = Backend::start("a", Behaviour::Name).await;
    let b = Backend::start("b", Behaviour::Name).await;
    let text = |addr: std::net::SocketAddr| {
        format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[upstreams.web]\nservers = [ {{ address = \"{addr}\" }} ]\n\n[[routes]]\nupstream = \"web\"\n")
    };
    let (_dir, path, p) = file_proxy(&text(a.addr)).await;
    let ok = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let from_b = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loads = Vec::new();
    for _ in 0..4 {
        let (ok, sent, from_b, stop, addr) = (
            ok.clone(),
            sent.clone(),
            from_b.clone(),
            stop.clone(),
            p.addr,
        );
        loads.push(tokio::spawn(async move {
            let c = client();
            // Bounded: at most 5000 requests per loader.
            for _ in 0..5000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                let (s, body) = get(&c, addr, "x", "/").await;
                assert_eq!(s, 200, "{body}");
                ok.fetch_add(1, Ordering::SeqCst);
                if body == "HOST b" {
                    from_b.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    assert!(eventually(30, || async { ok.load(Ordering::SeqCst) >= 100 }).await);
    // Same listener (port 0 stays port 0 in the file): swap upstream a -> b.
    std::fs::write(&path, text(b.addr)).unwrap();
    let g = p.handle.reload().expect("reload");
    assert_eq!(g, 2);
    // A broken file is refused; the running config stays.
    std::fs::write(&path, "[[listeners]]\naddress = 12\n").unwrap();
    let e = p.handle.reload().unwrap_err().to_string();
    assert!(e.contains("proxy.toml:2"), "{e}");
    assert!(
        eventually(30, || async { from_b.load(Ordering::SeqCst) >= 100 }).await,
        "new requests use the new config"
    );
    stop.store(true, Ordering::SeqCst);
    for l in loads {
        l.await.unwrap();
    }
    assert_eq!(ok.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
    let c = client();
    assert_eq!(get(&c, p.addr, "x", "/").await.1, "HOST b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_mode_balances_raw_connections_and_skips_dead_servers() {
    // Raw TCP servers that greet with their name.
    let mut addrs = Vec::new();
    let stop = shoal_core::Shutdown::new();
    for name in ["alpha", "beta"] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) =
                    tokio::select! { _ = stop.cancelled() => return, r = l.accept() => r.unwrap() };
                tokio::spawn(async move {
                    let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                    let mut b = [0u8; 64];
                    // Echo one message back, then close.
                    if let Ok(n) = s.read(&mut b).await {
                        let _ = s.write_all(&b[..n]).await;
                    }
                });
            }
        });
    }
    let dead = free_addr();
    let cfg = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nupstream = \"brokers\"\n\n[upstreams.brokers]\nservers = [ {{ address = \"{}\" }}, {{ address = \"{}\" }}, {{ address = \"{dead}\", fail_timeout = \"60s\" }} ]\n",
        addrs[0], addrs[1]
    );
    let p = start_proxy(config(&cfg)).await;
    let mut counts = std::collections::HashMap::new();
    for i in 0..20 {
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let name = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        let msg = format!("ping{i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
        *counts.entry(name).or_insert(0) += 1;
    }
    let (a, b) = (
        counts.get("alpha").copied().unwrap_or(0),
        counts.get("beta").copied().unwrap_or(0),
    );
    assert_eq!(a + b, 20, "{counts:?}");
    assert!((9..=11).contains(&a), "{counts:?}");
    stop.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_metrics_and_status_and_access_log_is_combined() {
    let one = node_host("one");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[upstreams.web]\nservers = [ {{ address = \"127.0.0.1:{}\" }} ]\n\n[[routes]]\nupstream = \"web\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n[access_log]\npath = \"{}\"\n",
        one.port,
        log.display()
    );
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, p.addr, "localhost", "/x").await.0, 200);
    }
    let admin = p.admin.unwrap();
    // A request is counted when its worker finishes it, which may be just
    // after the client has the response: wait for the third.
    let counted = eventually(20, || async {
        get(&c, admin, "localhost", "/metrics")
            .await
            .1
            .contains("shoal_proxy_request_duration_seconds_count 3")
    })
    .await;
    assert!(counted, "the latency histogram never counted 3 requests");
    let (s, metrics) = get(&c, admin, "localhost", "/metrics").await;
    assert_eq!(s, 200);
    assert!(
        metrics.contains(&format!(
            "shoal_proxy_upstream_responses_total{{upstream=\"web\",server=\"127.0.0.1:{}\",code=\"2xx\"}} 3",
            one.port
        )),
        "{metrics}"
    );
    assert!(metrics.contains("shoal_proxy_upstream_up{"), "{metrics}");
    let (s, status) = get(&c, admin, "localhost", "/status").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["upstreams"][0]["servers"][0]["responses"]["2xx"], 3);
    // Connections between requests, as nginx's "Waiting" (the client's
    // pooled connections may or may not still be open).
    assert!(
        v["idle_connections"].is_u64() && v["parked_connections"].is_u64(),
        "{v}"
    );
    assert!(
        eventually(20, || async {
            std::fs::read_to_string(&log)
                .map(|t| t.lines().count() >= 3)
                .unwrap_or(false)
        })
        .await
    );
    let line = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    // 127.0.0.1 - - [25/Nov/2026:22:50:17 +0000] "GET /x HTTP/1.1" 200 ...
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("] \"GET /x HTTP/1.1\" 200 "), "{line}");
}

#[test]
fn the_annotated_example_config_parses() {
    let path = workspace().join("examples/proxy.toml");
    let c = shoal_proxy::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.listeners.is_empty());
    assert!(c.upstreams.contains_key("lb_servers"));
}

/// A checked-in self-signed test certificate for `name`: (cert, key).
fn cert(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_picks_the_certificate_by_sni() {
    let one = node_host("one");
    let (ca, ka) = cert("a.test");
    let (cb, kb) = cert("b.test");
    let cfg = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[listeners.tls]]\ncert = \"{}\"\nkey = \"{}\"\nserver_names = [\"a.test\"]\n[[listeners.tls]]\ncert = \"{}\"\nkey = \"{}\"\nserver_names = [\"b.test\"]\n\n[[routes]]\ntarget = \"127.0.0.1:{}\"\n",
        ca.display(), ka.display(), cb.display(), kb.display(), one.port
    );
    let p = start_proxy(config(&cfg)).await;
    // Python's ssl verifies the chain and the name against the one CA given:
    // it only succeeds if the proxy chose that name's certificate.
    let script = r#"
import socket, ssl, sys
port, name, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname=name) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: " + name.encode() + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
print(data.decode())
"#;
    for (name, ca) in [("a.test", &ca), ("b.test", &cb)] {
        let args = [
            p.addr.port().to_string(),
            name.to_string(),
            ca.display().to_string(),
        ];
        let text = python(script, &args).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("HOST one"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_get_a_decoded_body_and_pipelining_and_expect_work() {
    // The Node server answers chunked; an HTTP/1.0 client gets plain bytes.
    let one = node_host("one");
    let p = start_proxy(config(&single(
        format!("127.0.0.1:{}", one.port).parse().unwrap(),
    )))
    .await;
    let out = raw(p.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.0 200 "), "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("transfer-encoding"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nHOST one"), "{out:?}");

    // Two pipelined requests in one write get two answers, in order.
    let echo = Backend::start("echo", Behaviour::Echo).await;
    let p = start_proxy(config(&single(echo.addr))).await;
    let out = raw(
        p.addr,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (f, s) = (
        out.find("GET /first").unwrap(),
        out.find("GET /second").unwrap(),
    );
    assert!(f < s, "{out}");
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");

    // Expect: 100-continue is answered by the proxy, then the body flows.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue\r\n\r\n"));
    s.write_all(b"hello").await.unwrap();
    let resp = read_one_response(&mut s).await;
    assert!(resp.contains("X-Body-Len: 5"), "{resp}");
    assert!(
        !resp.contains("Expect:"),
        "the proxy consumed the expectation: {resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_old_config_after_reload() {
    let a = Backend::start("a", Behaviour::Slow(Duration::from_secs(3))).await;
    let b = Backend::start("b", Behaviour::Name).await;
    let (_dir, path, p) = file_proxy(&single(a.addr)).await;
    let c = client();
    let (c2, addr) = (c.clone(), p.addr);
    let slow = tokio::spawn(async move { get(&c2, addr, "x", "/slow").await });
    assert!(eventually(20, || async { a.hits.load(Ordering::SeqCst) == 1 }).await);
    std::fs::write(&path, single(b.addr)).unwrap();
    p.handle.reload().unwrap();
    assert_eq!(get(&c, p.addr, "x", "/").await.1, "HOST b");
    assert_eq!(slow.await.unwrap(), (200, "HOST a".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_listeners() {
    let a = Backend::start("a", Behaviour::Name).await;
    let (_dir, path, p) = file_proxy(&single(a.addr)).await;
    let extra = free_addr();
    let two = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"{extra}\"\n\n[[routes]]\ntarget = \"{}\"\n",
        a.addr
    );
    std::fs::write(&path, two).unwrap();
    p.handle.reload().expect("reload with a new listener");
    let c = client();
    assert_eq!(get(&c, extra, "x", "/").await.1, "HOST a");
    assert_eq!(get(&c, p.addr, "x", "/").await.1, "HOST a");
    // Drop it again: the new address stops accepting, the first one serves on.
    std::fs::write(&path, single(a.addr)).unwrap();
    p.handle.reload().expect("reload without it");
    let closed = eventually(20, || async {
        tokio::net::TcpStream::connect(extra).await.is_err()
    })
    .await;
    assert!(closed, "removed listener still accepts");
    assert_eq!(get(&c, p.addr, "x", "/").await.1, "HOST a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_closed_by_the_server_are_not_a_failure() {
    // A server that answers one request per connection, keep-alive style,
    // then closes the idle connection 100 ms later (as servers with a short
    // keep-alive timeout do).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let served2 = served.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let served = served2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                // Bodies here are small and arrive with the head.
                served.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            });
        }
    });
    let cfg = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[upstreams.web]\nservers = [ {{ address = \"{addr}\", max_fails = 1 }} ]\n\n[[routes]]\nupstream = \"web\"\n"
    );
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    for method in ["GET", "POST", "GET", "POST"] {
        let (s, body) = request(&c, p.addr, method, "x", "/", Bytes::from_static(b"hi")).await;
        assert_eq!((s, body.as_str()), (200, "ok"), "{method}");
        // Let the server close the pooled connection.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(served.load(Ordering::SeqCst), 4);
    let st = p.handle.status();
    assert_eq!(st["upstreams"][0]["servers"][0]["failures"], 0, "{st}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_length_is_rechunked_and_the_client_stays_connected() {
    // A server that sends no length and closes to end the body.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello ")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = s.write_all(b"world").await;
            });
        }
    });
    let p = start_proxy(config(&single(addr))).await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"0\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
        assert!(!text.contains("Connection: close"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let decoded: String = body.split("\r\n").skip(1).step_by(2).collect();
        assert_eq!(decoded, "hello world", "{text}");
    }
    server.abort();
}

/// The `shoal_proxy_active_connections` gauge.
fn active_connections(p: &Proxy) -> f64 {
    let text = p.handle.metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix("shoal_proxy_active_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no active_connections gauge in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_wait_in_the_kernel_until_they_send() {
    let echo = Backend::start("echo", Behaviour::Echo).await;
    let p = start_proxy(config(&single(echo.addr))).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(p.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // TCP_DEFER_ACCEPT: connected, but not handed to the proxy yet.
    assert_eq!(active_connections(&p), 0.0);
    // Once a client speaks it is accepted and served as usual.
    let s = &mut silent[7];
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let resp = read_one_response(s).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("GET / HTTP/1.1"), "{resp}");
    assert_eq!(active_connections(&p), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_waits_without_buffers_then_is_served_then_closed_at_the_idle_limit(
) {
    let one = node_host("one");
    let cfg = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[upstreams.web]\nservers = [ {{ address = \"127.0.0.1:{}\" }} ]\n\n[[routes]]\nupstream = \"web\"\n\n[timeouts]\nidle = \"3s\"\n",
        one.port
    );
    let p = start_proxy(config(&cfg)).await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let req = b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n";
    s.write_all(req).await.unwrap();
    assert!(read_one_response(&mut s).await.contains("HOST one"));
    // Idle for a while: the connection gave its buffers back and waits for
    // readability; the next request on the same socket must still be served.
    // Soon it leaves its task: it waits parked, with no task at all.
    p.wait_status("parked_connections", 1).await;
    s.write_all(req).await.unwrap();
    assert!(read_one_response(&mut s).await.contains("HOST one"));
    // Then the idle limit (3 s) closes it.
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(8), s.read_to_end(&mut rest))
        .await
        .expect("closed within the idle limit")
        .unwrap();
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&rest));
    // Not before the idle limit (give or take the timer's granularity).
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(2_000),
        "closed after {waited:?}"
    );
    p.wait_status("active_connections", 0).await;
}

/// Send `req` from a socket bound to `from` and read the response to the end.
async fn from_ip(from: std::net::IpAddr, to: std::net::SocketAddr, req: &[u8]) -> String {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(std::net::SocketAddr::new(from, 0)).unwrap();
    let mut s = s.connect(to).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_request_workspace_carries_nothing_from_its_last_client() {
    // One worker, so every request below runs in the same few workspaces,
    // which keep the client's address text and the listener's between uses.
    let echo = Backend::start("echo", Behaviour::Echo).await;
    let cfg = format!(
        "workers = 1\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[routes]]\ntarget = \"{}\"\n",
        echo.addr
    );
    let p = start_proxy(config(&cfg)).await;
    let (a, b) = (p.addrs[0], p.addrs[1]);
    let one: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let two: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    for round in 0..3 {
        // HTTP/1.0 without Host: the proxy fills in the listener's address.
        let r = from_ip(
            one,
            a,
            b"GET /a HTTP/1.0\r\nX-Only-A: yes\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n",
        )
        .await;
        assert!(r.contains(&format!("Host: {a}\r\n")), "round {round}: {r}");
        assert!(
            r.contains("X-Forwarded-For: 10.9.9.9, 127.0.0.1\r\n"),
            "round {round}: {r}"
        );
        assert!(r.contains("X-Only-A: yes"), "round {round}: {r}");
        let r = from_ip(two, b, b"GET /b HTTP/1.0\r\n\r\n").await;
        assert!(r.contains(&format!("Host: {b}\r\n")), "round {round}: {r}");
        assert!(
            r.contains("X-Forwarded-For: 127.0.0.2\r\n"),
            "round {round}: {r}"
        );
        assert!(
            !r.contains("X-Only-A") && !r.contains("10.9.9.9"),
            "round {round}: {r}"
        );
        assert!(r.contains("GET /b HTTP/1.1"), "round {round}: {r}");
    }
}

/// A keep-alive client of an echo-backed proxy that has made one request and
/// had its answer, its connection still open.
async fn served_once(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_one_response(&mut s).await.contains("GET / HTTP/1.1"));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_proxy_closes_idle_keep_alive_connections_at_once() {
    let echo = Backend::start("echo", Behaviour::Echo).await;
    let p = start_proxy(config(&single(echo.addr))).await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(served_once(p.addr).await);
    }
    // Half of them wait long enough to leave their tasks (parked).
    p.wait_status("parked_connections", 10).await;
    for _ in 0..10 {
        idle.push(served_once(p.addr).await);
    }
    p.wait_status("idle_connections", 10).await;
    // The idle limit is 60 s: only the stop can close them this soon.
    drop(p);
    for mut s in idle {
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
            .await
            .expect("closed by the stop")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_wait_in_the_backlog_until_one_ends() {
    let echo = Backend::start("echo", Behaviour::Echo).await;
    let cfg = format!(
        "workers = 1\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[routes]]\ntarget = \"{}\"\n\n[limits]\nmax_connections = 2\n",
        echo.addr
    );
    let p = start_proxy(config(&cfg)).await;
    let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(served_once(p.addr).await);
    }
    // A third connection is left in the kernel's queue: no answer yet.
    let mut third = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    third.write_all(req).await.unwrap();
    let waited =
        tokio::time::timeout(Duration::from_millis(500), read_one_response(&mut third)).await;
    assert!(waited.is_err(), "served over the limit");
    // One ends: the third is let in and served.
    drop(open.pop());
    let r = tokio::time::timeout(Duration::from_secs(3), read_one_response(&mut third))
        .await
        .expect("served once a connection ended");
    assert!(r.contains("GET / HTTP/1.1"), "{r}");
    p.wait_status("active_connections", 2).await;
}
