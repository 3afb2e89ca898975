//! TCP mode (nginx's `stream`, HAProxy's `mode tcp`): each client connection
//! is balanced over an upstream with the same strategies and failure handling
//! as HTTP, then bytes are copied both ways until either side closes.
//! A failed connect counts toward `max_fails` and moves on to the next server.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::balance::Context;
use crate::state::Shared;

/// Proxy one client connection to a server of `upstream_name`.
pub async fn serve<S>(mut client: S, peer: SocketAddr, upstream_name: &str, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let gen = shared.current.load_full();
    let Some(upstream) = gen.upstreams.get(upstream_name).cloned() else {
        tracing::error!(
            upstream = upstream_name,
            "tcp listener's upstream is gone after a reload"
        );
        return;
    };
    let t = gen.config.timeouts;
    // `hash` in TCP mode hashes the client's address.
    let key = peer.ip().to_string();
    let ctx = Context {
        client_ip: peer.ip(),
        method: "",
        host: "",
        path: "",
        key: key.as_bytes(),
    };
    let mut tried = Vec::new();
    let mut views = Vec::new();
    shared
        .metrics
        .tcp_sessions_total
        .fetch_add(1, Ordering::Relaxed);
    let (lease, mut conn) = loop {
        let lease = match upstream.select(&ctx, &tried, &mut views) {
            Ok(l) => l,
            Err(no) => {
                tracing::warn!(client = %peer, upstream = upstream_name, reason = ?no, "no upstream server for tcp connection");
                let _ = client.shutdown().await;
                return;
            }
        };
        match lease.peer.connect(t.connect).await {
            Ok(s) => break (lease, s),
            Err(f) => {
                tracing::warn!(server = %lease.peer.config.name, failure = f.as_str(), "tcp upstream connect failed");
                lease.peer.fail();
                tried.push(lease.id);
            }
        }
    };
    lease.peer.succeed();
    match tokio::io::copy_bidirectional(&mut client, &mut conn).await {
        Ok((up, down)) => {
            tracing::debug!(client = %peer, server = %lease.peer.config.name, up, down, "tcp session closed")
        }
        Err(e) => tracing::debug!(client = %peer, error = %e, "tcp session ended with an error"),
    }
}
