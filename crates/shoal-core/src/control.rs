//! The control socket behind `shoal ctl`.
//!
//! A server (cluster primary, proxy, broker) listens on a Unix socket, mode
//! 0600, at [`socket_path`]`(name)`. A client writes one JSON object on one line,
//! e.g. `{"cmd":"reload"}` or `{"cmd":"scale","workers":4}`, and reads one JSON
//! line back: `{"ok":true,...}` or `{"ok":false,"error":"..."}`. Requests are
//! capped at [`MAX_REQUEST`] bytes; a malformed request gets an error reply and
//! the server goes on.
//!
//! A client that connects and sends nothing, or half a line, is answered with
//! an error and closed after [`REQUEST_TIMEOUT`]; at most
//! [`MAX_CONNECTIONS`] are served at once and the rest are told the server is
//! busy and closed at once. So stuck or runaway clients can hold only a few
//! descriptors, and a cluster primary always has the ones it needs to restart
//! a worker.

use serde_json::{json, Value};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::Shutdown;

/// Largest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 1 << 20;

/// Longest a client may take to send its request line, and the server to
/// write its reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Control connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// The directory holding control sockets: `$SHOAL_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/shoal`, else `/tmp/shoal-<uid>`.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHOAL_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("shoal");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/shoal-{uid}"))
}

/// The control socket path for a server called `name`.
pub fn socket_path(name: &str) -> PathBuf {
    runtime_dir().join(format!("{name}.sock"))
}

/// A successful reply carrying `fields` (an object) plus `"ok": true`.
pub fn ok(fields: Value) -> Value {
    let mut v = if fields.is_object() {
        fields
    } else {
        json!({ "result": fields })
    };
    v["ok"] = Value::Bool(true);
    v
}

/// An error reply.
pub fn err(message: impl std::fmt::Display) -> Value {
    json!({ "ok": false, "error": message.to_string() })
}

/// Bind the control socket at `path` (creating its directory, mode 0700, and
/// replacing a stale socket that nobody answers on). Fails if a live server
/// already answers there.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use by a running server (pick another --name)",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve requests on `listener` until `shutdown` fires, calling `handler` for
/// each well-formed request. Removes the socket file at `path` on exit.
pub async fn serve<H, F>(listener: UnixListener, path: PathBuf, shutdown: Shutdown, handler: H)
where
    H: Fn(Value) -> F + Send + Sync + 'static,
    F: Future<Output = Value> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut last_warning: Option<std::time::Instant> = None;
    let mut unlogged = 0u64;
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors, say: wait a little, and say so at
                    // most once a second.
                    unlogged += 1;
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, failures = unlogged, "control socket accept failed");
                        last_warning = Some(std::time::Instant::now());
                        unlogged = 0;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Too many open: answer without waiting and close.
            let mut reply = serde_json::to_vec(&err(format!(
                "busy: {MAX_CONNECTIONS} control connections are open; try again"
            )))
            .unwrap_or_default();
            reply.push(b'\n');
            let _ = stream.try_write(&reply);
            unlogged += 1;
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(
                    max = MAX_CONNECTIONS,
                    refused = unlogged,
                    "control socket busy: connections refused"
                );
                last_warning = Some(std::time::Instant::now());
                unlogged = 0;
            }
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_one(stream, handler.as_ref()).await {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
            drop(slot);
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn handle_one<H, F>(stream: UnixStream, handler: &H) -> io::Result<()>
where
    H: Fn(Value) -> F,
    F: Future<Output = Value>,
{
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(r).take(MAX_REQUEST as u64 + 1);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let timed_out = match read {
        Ok(r) => {
            r?;
            false
        }
        Err(_) => true,
    };
    let reply = if timed_out {
        err(format!(
            "no complete request line within {}s",
            REQUEST_TIMEOUT.as_secs()
        ))
    } else if line.len() > MAX_REQUEST {
        err(format!("request longer than {MAX_REQUEST} bytes"))
    } else {
        match serde_json::from_slice::<Value>(&line) {
            Ok(v) if v.get("cmd").and_then(Value::as_str).is_some() => handler(v).await,
            Ok(_) => err("request must be a JSON object with a string \"cmd\""),
            Err(e) => err(format!("malformed request: {e}")),
        }
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    let write = async {
        w.write_all(&out).await?;
        w.shutdown().await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "reply not read")))
}

/// Send one request to the server at `path` and return its reply.
pub async fn request(path: &Path, req: &Value, timeout: Duration) -> io::Result<Value> {
    let fut = async {
        let stream = UnixStream::connect(path).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot reach {}: {e} (is the server running?)",
                    path.display()
                ),
            )
        })?;
        let (r, mut w) = stream.into_split();
        let mut out = serde_json::to_vec(req)?;
        out.push(b'\n');
        w.write_all(&out).await?;
        let mut line = String::new();
        BufReader::new(r).read_line(&mut line).await?;
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "control request timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_bad_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let listener = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        let sd = Shutdown::new();
        let task = tokio::spawn(serve(
            listener,
            path.clone(),
            sd.clone(),
            |v: Value| async move { ok(json!({ "echo": v["cmd"] })) },
        ));
        let t = Duration::from_secs(5);
        let r = request(&path, &json!({"cmd":"status"}), t).await.unwrap();
        assert_eq!(r, json!({"ok": true, "echo": "status"}));
        let r = request(&path, &json!([1, 2]), t).await.unwrap();
        assert_eq!(r["ok"], false);
        // A second server on the same live path is refused.
        assert_eq!(
            bind(&path).await.unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        // Raw garbage gets an error reply and the server keeps serving.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"{not json\n").await.unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).await.unwrap();
        assert!(reply.contains("malformed request"), "{reply}");
        let r = request(&path, &json!({"cmd":"again"}), t).await.unwrap();
        assert_eq!(r["echo"], "again");
        sd.trigger();
        task.await.unwrap();
        assert!(!path.exists());
    }
}

#[cfg(test)]
mod limits {
    use super::*;

    /// Clients that connect and send nothing are answered and closed at
    /// the timeout; past the cap they are told the server is busy at once;
    /// and a real request is served once the idle ones are gone.
    #[tokio::test]
    async fn idle_clients_are_closed_at_the_timeout_and_capped_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let listener = bind(&path).await.unwrap();
        let sd = Shutdown::new();
        tokio::spawn(serve(
            listener,
            path.clone(),
            sd.clone(),
            |_v: Value| async { ok(json!({})) },
        ));
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        // Let the server take them all.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = UnixStream::connect(&path).await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(1), extra.read_to_string(&mut reply))
            .await
            .expect("a client past the cap waits instead of being told")
            .unwrap();
        assert!(reply.contains("busy"), "{reply}");

        tokio::time::sleep(REQUEST_TIMEOUT - Duration::from_millis(100)).await;
        for mut c in idle {
            let mut reply = String::new();
            tokio::time::timeout(Duration::from_secs(2), c.read_to_string(&mut reply))
                .await
                .expect("an idle client was not closed at the timeout")
                .unwrap();
            assert!(reply.contains("no complete request"), "{reply}");
        }
        let r = request(&path, &json!({"cmd":"status"}), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r["ok"], true);
        sd.trigger();
    }
}
