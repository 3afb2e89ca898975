//! The admin listener: `GET /metrics` (Prometheus text), `GET /status`
//! (JSON), and an nginx Plus-style API over the upstreams' servers:
//!
//! - `GET /api/upstreams`, `GET /api/upstreams/NAME`: status, as `/status`;
//! - `GET /api/upstreams/NAME/servers`: the servers' settings;
//! - `POST /api/upstreams/NAME/servers` `{"server": "HOST:PORT", ...}`: add;
//! - `PATCH /api/upstreams/NAME/servers/HOST:PORT` `{"drain": true}`, etc.;
//! - `DELETE /api/upstreams/NAME/servers/HOST:PORT`: remove.
//!
//! Writes need `[admin] write = true` (nginx Plus's `api write=on`) and are
//! answered 405 otherwise. One request per connection.

use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use shoal_core::Shutdown;

use crate::codec::{self, parse_request, Framing, ReadBuf, RequestInfo};
use crate::error::ProxyError;
use crate::server::Handle;
use crate::servers::{self, EditError, ServerEdit};

/// Largest request body the API reads.
const MAX_BODY: u64 = 64 * 1024;

/// Serve admin requests on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, handle: Handle, shutdown: Shutdown) {
    loop {
        let Some((stream, peer)) = crate::listener::accept(&listener, &shutdown).await else {
            return;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(Duration::from_secs(30), one(stream, &handle))
                .await
                .is_err()
            {
                tracing::debug!(client = %peer, "admin request timed out");
            }
        });
    }
}

/// A response: status, content type, body.
type Answer = (u16, &'static str, Vec<u8>);

fn json_answer(status: u16, v: &Value) -> Answer {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    (status, "application/json", body)
}

/// nginx Plus's error shape: `{"error": {"status", "text"}}`.
fn error_answer(status: u16, text: impl std::fmt::Display) -> Answer {
    json_answer(
        status,
        &json!({ "error": { "status": status, "text": text.to_string() } }),
    )
}

async fn one(mut stream: TcpStream, handle: &Handle) {
    let mut buf = ReadBuf::new(4096);
    let mut info = RequestInfo::default();
    let mut headers = Vec::new();
    let mut out = Vec::new();
    let head = loop {
        match buf.fill(&mut stream, 16 * 1024).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match parse_request(buf.chunk(), 100, &mut info, &mut headers) {
            Ok(None) => continue,
            Ok(Some(n)) => break n,
            Err(rej) => {
                codec::simple_response(rej.status, "text/plain", b"bad request\n", true, &mut out);
                let _ = stream.write_all(&out).await;
                return;
            }
        }
    };
    let (status, ctype, body) = match info.framing {
        Some(Framing::Chunked) => error_answer(411, "send the body with a Content-Length"),
        Some(Framing::Length(n)) if n > MAX_BODY => {
            error_answer(413, format!("the body is over {MAX_BODY} bytes"))
        }
        framing => {
            let want = match framing {
                Some(Framing::Length(n)) => n as usize,
                _ => 0,
            };
            while buf.len() < head + want {
                match buf.fill(&mut stream, head + want).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            let body = &buf.chunk()[head..head + want];
            answer(handle, &info.method, &info.target, body)
        }
    };
    codec::simple_response(status, ctype, &body, true, &mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Route one request.
fn answer(handle: &Handle, method: &str, target: &str, body: &[u8]) -> Answer {
    let path = target.split('?').next().unwrap_or("");
    let shared = handle.shared();
    match (method, path) {
        ("GET", "/metrics") => {
            let gen = shared.current.load_full();
            let text = shared.metrics.render(&gen);
            (200, shoal_core::metrics::CONTENT_TYPE, text.into_bytes())
        }
        ("GET", "/status") => json_answer(200, &shared.status_json()),
        _ => match path.strip_prefix("/api/upstreams") {
            Some(rest) => api(handle, method, rest, body),
            None => (
                404,
                "text/plain",
                b"try /metrics, /status or /api/upstreams\n".to_vec(),
            ),
        },
    }
}

/// `/api/upstreams...`; `rest` is what follows that prefix.
fn api(handle: &Handle, method: &str, rest: &str, body: &[u8]) -> Answer {
    let parts: Vec<String> = rest
        .split('/')
        .filter(|p| !p.is_empty())
        .map(percent_decode)
        .collect();
    // The status walks every server: only the reads that show it build it.
    let upstreams = || handle.shared().status_json()["upstreams"].take();
    let write = handle.shared().current.load().config.admin_write;
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match (method, parts.as_slice()) {
        ("GET", []) => json_answer(200, &upstreams()),
        ("GET", [name]) => match upstreams()
            .as_array()
            .and_then(|a| a.iter().find(|u| u["name"] == *name))
        {
            Some(u) => json_answer(200, u),
            None => error_answer(404, format!("no upstream {name:?}")),
        },
        ("GET", [name, "servers"]) => {
            let gen = handle.shared().current.load_full();
            match gen.config.upstreams.get(*name) {
                Some(u) => json_answer(
                    200,
                    &Value::Array(u.servers.iter().map(servers::server_json).collect()),
                ),
                None => error_answer(404, format!("no upstream {name:?}")),
            }
        }
        ("POST" | "PATCH" | "DELETE", [_, "servers", ..]) if !write => error_answer(
            405,
            "writes are off: set write = true in the proxy's [admin] table",
        ),
        ("POST", [name, "servers"]) => edit(handle, name, 201, || {
            let v = parse_body(body)?;
            servers::only_known_keys(&v, &["server", "address", "backup"])
                .map_err(EditError::Invalid)?;
            let address = match (&v["server"], &v["address"]) {
                (Value::String(s), _) | (Value::Null, Value::String(s)) => s.clone(),
                _ => {
                    return Err(EditError::Invalid(
                        "missing \"server\": \"HOST:PORT\"".into(),
                    ))
                }
            };
            let backup = servers::bool_field(&v, "backup")
                .map_err(EditError::Invalid)?
                .unwrap_or(false);
            Ok(ServerEdit::Add {
                address,
                backup,
                changes: servers::changes_from(&v).map_err(EditError::Invalid)?,
            })
        }),
        ("PATCH", [name, "servers", address]) => edit(handle, name, 200, || {
            let v = parse_body(body)?;
            servers::only_known_keys(&v, &[]).map_err(EditError::Invalid)?;
            let changes = servers::changes_from(&v).map_err(EditError::Invalid)?;
            Ok(ServerEdit::Set {
                address: address.to_string(),
                changes,
            })
        }),
        ("DELETE", [name, "servers", address]) => edit(handle, name, 200, || {
            Ok(ServerEdit::Remove {
                address: address.to_string(),
            })
        }),
        (_, [] | [_] | [_, "servers"] | [_, "servers", _]) => {
            error_answer(405, format!("{method} is not allowed here"))
        }
        _ => error_answer(404, "no such API path"),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, EditError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(EditError::Invalid("the body must be a JSON object".into())),
        Err(e) => Err(EditError::Invalid(format!("the body is not JSON: {e}"))),
    }
}

/// Run one edit built by `make` and answer `ok` with the server's settings.
fn edit(
    handle: &Handle,
    upstream: &str,
    ok: u16,
    make: impl FnOnce() -> Result<ServerEdit, EditError>,
) -> Answer {
    let e = match make() {
        Ok(e) => e,
        Err(e) => return error_answer(e.http_status(), e),
    };
    match handle.edit_servers(upstream, &e) {
        Ok(server) => json_answer(ok, &server),
        Err(ProxyError::Edit(e)) => error_answer(e.http_status(), e),
        Err(e) => error_answer(400, e),
    }
}

/// `%3A` and the like in a path segment (an IPv6 server's brackets and
/// colons may come encoded).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
