//! The cluster's answers on the control socket (`shoal ctl`): `status`,
//! `reload`, `scale`, `stop`, `send`. Malformed requests get an error reply;
//! the primary goes on.

use serde_json::{json, Value};
use shoal_core::control::{err, ok};

use crate::primary::Cluster;

/// Answer one request.
pub async fn handle(c: &Cluster, req: Value) -> Value {
    let cmd = req.get("cmd").and_then(Value::as_str).unwrap_or("");
    let r = match cmd {
        "status" => c.status().await.map(|s| ok(json!({ "status": s }))),
        "reload" => c.reload().await.map(|r| match r {
            Ok(n) => ok(json!({ "replaced": n })),
            Err(e) => err(format!("reload failed: {e}")),
        }),
        "scale" => match req.get("workers").and_then(Value::as_u64) {
            Some(n) => c.scale(n as usize).await.map(|r| match r {
                Ok(n) => ok(json!({ "workers": n })),
                Err(e) => err(e),
            }),
            None => return err("scale needs \"workers\": a positive integer"),
        },
        "stop" => c
            .disconnect()
            .await
            .map(|_| ok(json!({ "stopping": true }))),
        "send" => match req.get("message") {
            Some(m) => c
                .send_all(m.clone())
                .await
                .map(|n| ok(json!({ "sent": n }))),
            None => return err("send needs \"message\": any JSON value"),
        },
        other => {
            return err(format!(
                "unknown command {other:?}; try status, reload, scale, stop, send"
            ))
        }
    };
    r.unwrap_or_else(err)
}
