//! The admin listener: `GET /metrics` (Prometheus text) and `GET /status`
//! (JSON), one request per connection.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use shoal_core::Shutdown;

use crate::codec::{self, parse_request, ReadBuf, RequestInfo};
use crate::state::Shared;

/// Serve admin requests on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    loop {
        let Some((stream, peer)) = crate::listener::accept(&listener, &shutdown).await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(Duration::from_secs(30), one(stream, &shared))
                .await
                .is_err()
            {
                tracing::debug!(client = %peer, "admin request timed out");
            }
        });
    }
}

async fn one(mut stream: TcpStream, shared: &Shared) {
    let mut buf = ReadBuf::new(4096);
    let mut info = RequestInfo::default();
    let mut headers = Vec::new();
    let mut out = Vec::new();
    loop {
        match buf.fill(&mut stream, 16 * 1024).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match parse_request(buf.chunk(), 100, &mut info, &mut headers) {
            Ok(None) => continue,
            Ok(Some(_)) => break,
            Err(rej) => {
                codec::simple_response(rej.status, "text/plain", b"bad request\n", true, &mut out);
                let _ = stream.write_all(&out).await;
                return;
            }
        }
    }
    let path = info.target.split('?').next().unwrap_or("");
    let gen = shared.current.load_full();
    match (info.method.as_str(), path) {
        ("GET", "/metrics") => {
            let body = shared.metrics.render(&gen);
            codec::simple_response(
                200,
                shoal_core::metrics::CONTENT_TYPE,
                body.as_bytes(),
                true,
                &mut out,
            );
        }
        ("GET", "/status") => {
            let body = shared.status_json().to_string();
            codec::simple_response(200, "application/json", body.as_bytes(), true, &mut out);
        }
        _ => codec::simple_response(
            404,
            "text/plain",
            b"try /metrics or /status\n",
            true,
            &mut out,
        ),
    }
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
