//! The chapter's `cluster.isMaster` pattern in Rust: the same executable is
//! the primary and, re-run by it, every worker. Each worker answers HTTP
//! requests on the shared port with "Hello from N".
//!
//! ```sh
//! cargo run -p shoal-cluster --example self_cluster -- 127.0.0.1:8080
//! curl 127.0.0.1:8080
//! ```

use shoal_cluster::{role, Cluster, ClusterSpec, Event, Ready};
use shoal_core::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if role::is_worker() {
        return worker().await;
    }
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let mut spec = ClusterSpec::current_exe()?;
    spec.name = "self".into();
    spec.listen = vec![addr.parse()?];
    spec.ready = Ready::Ipc;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals()?;
    let (cluster, running) = Cluster::new(spec, shutdown).await?;
    let mut events = cluster.subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if !matches!(e, Event::Message { .. }) {
                println!("primary: {}", e.describe());
            }
        }
    });
    cluster.begin().await?;
    running.wait().await?;
    Ok(())
}

async fn worker() -> Result<(), Box<dyn std::error::Error>> {
    let id = role::worker_id().unwrap_or(0);
    let listener = tokio::net::TcpListener::from_std(role::take_tcp_listeners()?.remove(0))?;
    let channel = shoal_process::Channel::from_env()?;
    role::notify_ready(channel.as_ref()).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            // One request per connection is enough for a demonstration.
            if s.read(&mut buf).await.is_ok() {
                let body = format!("Hello from {id}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
    }
}
