//! Header timeouts are deadlines, not limits per read; and the requests and
//! responses the proxy refuses (405, 413, 414, 502), as nginx and HAProxy
//! refuse them. Clients are raw sockets; origins are small servers that
//! misbehave on purpose.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn proxy_config(origin: SocketAddr, extra: &str) -> shoal_proxy::Config {
    config(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[routes]]\ntarget = \"{origin}\"\n\n{extra}\n"
    ))
}

/// An origin that reads a request head and then writes `answer` one byte
/// every `gap` (all at once when `gap` is zero), then reads on.
async fn origin(answer: &'static [u8], gap: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                if gap.is_zero() {
                    let _ = s.write_all(answer).await;
                } else {
                    for b in answer {
                        if s.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(gap).await;
                    }
                }
                let _ = s.read(&mut tmp).await;
            });
        }
    });
    addr
}

/// Write `head` one byte every 100 ms (for at most 30 s) while reading what
/// the proxy answers; returns the answer and whether the trickle was cut
/// short by it (the proxy gave up before the client finished).
async fn trickle(addr: SocketAddr, head: &[u8]) -> (String, bool) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(40), r.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    let mut cut = false;
    for b in head.iter().take(300) {
        if reader.is_finished() || w.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (reader.await.unwrap(), cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_gets_408_at_the_deadline() {
    let up = origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::ZERO,
    )
    .await;
    let p = start_proxy(proxy_config(up, "[timeouts]\nclient_header = \"1s\"\n")).await;
    // 100+ bytes at one per 100 ms: ten seconds or more, each byte well
    // inside the limit; the head as a whole is not.
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    head.extend_from_slice(&[b'X'; 80]);
    let (out, cut) = trickle(p.addr, &head).await;
    assert!(out.starts_with("HTTP/1.1 408 "), "{out:?}");
    assert!(cut, "the proxy waited for the whole trickle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_response_head_gets_504_at_the_deadline() {
    let up = origin(
        b"HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nContent-Length: 2\r\n\r\nok",
        Duration::from_millis(100),
    )
    .await;
    let p = start_proxy(proxy_config(up, "[timeouts]\nupstream_header = \"1s\"\n")).await;
    let out = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 504 "), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_deadline_ends_a_slow_exchange_with_504() {
    // The response head comes slowly, well inside `upstream_header` (60 s
    // by default); only the request deadline ends it: 504.
    let up = origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::from_millis(300),
    )
    .await;
    let p = start_proxy(proxy_config(up, "[timeouts]\nrequest = \"1s\"\n")).await;
    let out = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 504 "), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_long_lines_and_large_bodies_are_refused() {
    let up = origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::ZERO,
    )
    .await;
    let p = start_proxy(proxy_config(up, "[limits]\nmax_body_size = 100\n")).await;
    let out = raw(p.addr, b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 405 "), "{out:?}");
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(20_000));
    let out = raw(p.addr, long.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 414 "), "{out:?}");
    let many = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let out = raw(p.addr, many.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431 "), "{out:?}");
    let big = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n{}",
        "b".repeat(101)
    );
    let out = raw(p.addr, big.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 413 "), "{out:?}");
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{}\r\n1\r\nb\r\n0\r\n\r\n",
        "b".repeat(100)
    );
    let out = raw(p.addr, chunked.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 413 "), "{out:?}");
    // At the limit, and an ordinary GET, pass.
    let fits = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{}",
        "b".repeat(100)
    );
    assert!(raw(p.addr, fits.as_bytes())
        .await
        .starts_with("HTTP/1.1 200 "));
    // HTTP/1.2 is served as 1.1.
    let out = raw(
        p.addr,
        b"GET / HTTP/1.2\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_statuses_and_endless_interim_responses_are_502() {
    let zero = origin(
        b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok",
        Duration::ZERO,
    )
    .await;
    let p = start_proxy(proxy_config(zero, "")).await;
    let out = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 502 "), "{out:?}");

    let interim: &'static [u8] = Box::leak(
        "HTTP/1.1 102 Processing\r\nContent-Length: 5\r\n\r\n"
            .repeat(100)
            .into_bytes()
            .into_boxed_slice(),
    );
    let flood = origin(interim, Duration::ZERO).await;
    let p = start_proxy(proxy_config(flood, "")).await;
    let out = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let interims = out.matches("102 Processing").count();
    assert!(interims <= 16, "{interims} interim responses relayed");
    assert!(
        !out.contains("Content-Length: 5"),
        "length on a 1xx relayed: {out:?}"
    );
    assert!(out.contains("HTTP/1.1 502 "), "{out:?}");
}
