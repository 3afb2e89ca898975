//! Active health checks: one task per server probes it every `interval`
//! (an HTTP `GET path` expecting a status, or a bare TCP connect); `fall`
//! failures in a row take it out, `rise` successes bring it back. These sit
//! alongside the passive `max_fails` / `fail_timeout` accounting.

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::HealthCheckConfig;
use crate::state::Generation;
use crate::upstream::Peer;

/// Start the checkers of `gen`; they stop when `gen.tasks` fires.
pub fn start(gen: &Generation) {
    for up in gen.upstreams.values() {
        let Some(hc) = up.health_check.clone() else {
            continue;
        };
        for peer in up.peers() {
            let peer = peer.clone();
            let hc = hc.clone();
            let stop = gen.tasks.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = check_loop(peer, hc) => {}
                }
            });
        }
    }
}

async fn check_loop(peer: Arc<Peer>, hc: HealthCheckConfig) {
    let (mut ups, mut downs) = (0u32, 0u32);
    loop {
        let ok = probe(&peer, &hc).await;
        if ok {
            ups += 1;
            downs = 0;
            if !peer.healthy() && ups >= hc.rise {
                peer.set_healthy(true);
            }
        } else {
            downs += 1;
            ups = 0;
            if peer.healthy() && downs >= hc.fall {
                peer.set_healthy(false);
            }
        }
        tokio::time::sleep(hc.interval).await;
    }
}

/// One probe: true when the server passed.
pub async fn probe(peer: &Peer, hc: &HealthCheckConfig) -> bool {
    tokio::time::timeout(hc.timeout, probe_inner(peer, hc))
        .await
        .unwrap_or(false)
}

async fn probe_inner(peer: &Peer, hc: &HealthCheckConfig) -> bool {
    let Ok(mut s) = TcpStream::connect(peer.address()).await else {
        return false;
    };
    let Some(path) = &hc.http_path else {
        return true;
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shoal-health-check\r\nConnection: close\r\n\r\n",
        peer.config.name
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 1024];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    status_of(&buf[..n]) == Some(hc.expect_status)
}

/// The status code of a response's first line.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.strip_prefix(b"HTTP/1.")?;
    let code = line.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(status_of(b"garbage"), None);
    }
}
