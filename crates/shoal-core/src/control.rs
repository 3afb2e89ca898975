//! The control socket behind `shoal ctl`.
//!
//! A server (cluster primary, proxy, broker) listens on a Unix socket, mode
//! 0600, at [`socket_path`]`(name)`. A client writes one JSON object on one line,
//! e.g. `{"cmd":"reload"}` or `{"cmd":"scale","workers":4}`, and reads one JSON
//! line back: `{"ok":true,...}` or `{"ok":false,"error":"..."}`. Requests are
//! capped at [`MAX_REQUEST`] bytes; a malformed request gets an error reply and
//! the server goes on.

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
    let mut v = if fields.is_object() { fields } else { json!({ "result": fields }) };
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
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running server (pick another --name)", path.display()),
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
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_one(stream, handler.as_ref()).await {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
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
    reader.read_until(b'\n', &mut line).await?;
    let reply = if line.len() > MAX_REQUEST {
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
    w.write_all(&out).await?;
    w.shutdown().await
}

/// Send one request to the server at `path` and return its reply.
pub async fn request(path: &Path, req: &Value, timeout: Duration) -> io::Result<Value> {
    let fut = async {
        let stream = UnixStream::connect(path).await.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot reach {}: {e} (is the server running?)", path.display()))
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
        let task = tokio::spawn(serve(listener, path.clone(), sd.clone(), |v: Value| async move {
            ok(json!({ "echo": v["cmd"] }))
        }));
        let t = Duration::from_secs(5);
        let r = request(&path, &json!({"cmd":"status"}), t).await.unwrap();
        assert_eq!(r, json!({"ok": true, "echo": "status"}));
        let r = request(&path, &json!([1, 2]), t).await.unwrap();
        assert_eq!(r["ok"], false);
        // A second server on the same live path is refused.
        assert_eq!(bind(&path).await.unwrap_err().kind(), io::ErrorKind::AddrInUse);
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
