//! The built-in HTTP worker (`shoal up-worker`, hidden): what the default
//! topology's clusters run when `node` is not on the PATH. It serves the same
//! answers as examples/up/web.js and reports each request the same way:
//!
//! - `Hello from NAME worker ID (pid PID)` to every request (NAME is
//!   `SERVER_NAME`, ID the worker id its primary gave it);
//! - one statsd datagram `up.requests:1|c|#server:NAME` to
//!   `STATSD_HOST:STATSD_PORT`, when set;
//! - one JSON event `{server, worker, pid, method, url, at}` published to
//!   the topic exchange `events` with routing key `web.NAME.request` at
//!   `AMQP_URL`, when set (through a bounded queue: when the broker is slow
//!   or away, events are dropped and counted, requests are still served).
//!
//! It serves on the listener its primary passes (`LISTEN_FDS`, fd 3), says
//! ready with `READY=1` (`ready = "notify"`), and stops on SIGTERM: it stops
//! accepting, serves the first request of a connection it accepted just
//! before (waiting at most [`FIRST_REQUEST_WAIT`] for it), lets the open
//! connections finish their request (at most 3 s), then exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use serde_json::json;
use tokio::sync::mpsc;

/// Events waiting for the broker; more are dropped.
const QUEUE: usize = 1024;

/// How long, once asked to stop, the open connections may take to finish
/// their request.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);
/// On SIGTERM, how long a connection that has not sent its first request
/// yet is given to send it before it is closed.
const FIRST_REQUEST_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

struct Worker {
    name: String,
    id: u32,
    statsd: Option<(std::net::UdpSocket, SocketAddr)>,
    events: Option<mpsc::Sender<Vec<u8>>>,
    dropped: AtomicU64,
}

impl Worker {
    fn answer(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        if let Some((sock, to)) = &self.statsd {
            let line = format!("up.requests:1|c|#server:{}", self.name);
            let _ = sock.send_to(line.as_bytes(), to);
        }
        if let Some(tx) = &self.events {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let event = json!({"server": self.name, "worker": self.id, "pid": std::process::id(),
                               "method": req.method().as_str(), "url": req.uri().to_string(), "at": at});
            if tx.try_send(event.to_string().into_bytes()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Response::new(Full::new(Bytes::from(format!(
            "Hello from {} worker {} (pid {})\n",
            self.name,
            self.id,
            std::process::id()
        ))))
    }
}

/// Publish what arrives on `rx` to the topic exchange `events`.
async fn publisher(url: String, name: String, mut rx: mpsc::Receiver<Vec<u8>>) {
    use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
    use lapin::types::FieldTable;
    // `amqp://host:port/` means vhost "/" to amqplib and pika (the form
    // `shoal up` hands out); to lapin it is the empty vhost: drop the slash.
    let url = match url.strip_suffix('/') {
        Some(u) if u.matches('/').count() == 2 => u.to_string(),
        _ => url,
    };
    let channel = async {
        let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        ch.exchange_declare(
            "events".into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok::<_, lapin::Error>((conn, ch))
    }
    .await;
    let (_conn, ch) = match channel {
        Ok(x) => x,
        Err(e) => {
            eprintln!("built-in worker: broker unavailable ({e}); not publishing events");
            rx.close();
            return;
        }
    };
    let key = format!("web.{name}.request");
    while let Some(body) = rx.recv().await {
        let sent = ch
            .basic_publish(
                "events".into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                lapin::BasicProperties::default(),
            )
            .await;
        if let Err(e) = sent {
            eprintln!("built-in worker: publishing failed ({e}); not publishing events");
            rx.close();
            return;
        }
    }
}

fn statsd_target() -> Option<(std::net::UdpSocket, SocketAddr)> {
    let host = std::env::var("STATSD_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port: u16 = std::env::var("STATSD_PORT").ok()?.parse().ok()?;
    let to = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()?
        .next()?;
    let bind: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    Some((std::net::UdpSocket::bind(bind).ok()?, to))
}

/// Serve until SIGTERM/SIGINT.
pub async fn run() -> std::io::Result<()> {
    let listener = shoal_cluster::role::take_tcp_listeners()?
        .into_iter()
        .next()
        .ok_or_else(|| {
            std::io::Error::other(
                "no listener was passed (LISTEN_FDS): run it as a cluster worker with listen = [...]",
            )
        })?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let name = std::env::var("SERVER_NAME").unwrap_or_else(|_| "web".into());
    let events = std::env::var("AMQP_URL").ok().map(|url| {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publisher(url, name.clone(), rx));
        tx
    });
    let worker = Arc::new(Worker {
        id: shoal_cluster::role::worker_id().unwrap_or(0),
        name,
        statsd: statsd_target(),
        events,
        dropped: AtomicU64::new(0),
    });
    shoal_cluster::role::notify_ready(None).await?;
    let stop = shoal_core::Shutdown::new();
    stop.trigger_on_signals()?;
    let open = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let w = worker.clone();
        let (stop, open) = (stop.clone(), open.clone());
        open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // Signalled once the first request has been read (a stored
            // permit, so a wait that starts later still sees it).
            let first_request = Arc::new(tokio::sync::Notify::new());
            let signal = first_request.clone();
            let svc = hyper::service::service_fn(move |req| {
                let w = w.clone();
                signal.notify_one();
                async move { Ok::<_, Infallible>(w.answer(&req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    // A connection accepted just before the stop may not
                    // have had its first request read yet; closing it as
                    // idle would fail a request its client already sent
                    // (a proxy answers 502). Serve that first request
                    // (waiting at most FIRST_REQUEST_WAIT for it), then
                    // finish what is under way and close.
                    let ended = tokio::select! {
                        _ = conn.as_mut() => true,
                        _ = tokio::time::timeout(FIRST_REQUEST_WAIT, first_request.notified()) => false,
                    };
                    if !ended {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Asked to stop: no new connections; the open ones finish their
    // request (at most DRAIN), so a rolling reload drops none.
    drop(listener);
    let deadline = std::time::Instant::now() + DRAIN;
    while open.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let dropped = worker.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        eprintln!("built-in worker: {dropped} events were dropped (the broker was too slow)");
    }
    Ok(())
}
