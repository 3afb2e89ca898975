//! The cluster's answers on the control socket (`shoal ctl`): `status`,
//! `reload`, `restart`, `scale` (to N or by ±N), `signal`, `stop`, `send`,
//! `flush` and `reopen_logs` (the `--log-dir` files). Malformed requests get an error reply;
//! the primary goes on.

use serde_json::{json, Value};
use shoal_core::control::{err, ok};

use crate::primary::Cluster;

/// Answer one request.
pub async fn handle(c: &Cluster, req: Value) -> Value {
    let cmd = req.get("cmd").and_then(Value::as_str).unwrap_or("");
    // `shoal ctl scale CLUSTER N` / `reload PART` name a part of a topology;
    // a lone cluster is only itself.
    for key in ["cluster", "part"] {
        if let Some(other) = req.get(key).and_then(Value::as_str) {
            if other != c.name() {
                return err(format!(
                    "this is cluster {:?}, not a topology with a part {other:?}: leave the name out (shoal ctl --name {} {cmd} ...)",
                    c.name(),
                    c.name()
                ));
            }
        }
    }
    let r = match cmd {
        "status" => c.status().await.map(|s| ok(json!({ "status": s }))),
        "reload" => c.reload().await.map(|r| match r {
            Ok(n) => ok(json!({ "replaced": n })),
            Err(e) => err(format!("reload failed: {e}")),
        }),
        "scale" => {
            let done = match (
                req.get("workers").and_then(Value::as_u64),
                req.get("by").and_then(Value::as_i64),
            ) {
                (Some(n), _) => c.scale(n as usize).await,
                (None, Some(by)) => c.scale_by(by).await,
                _ => {
                    return err("scale needs \"workers\" (a positive integer) or \"by\" (+N or -N)")
                }
            };
            done.map(|r| match r {
                Ok(n) => ok(json!({ "workers": n })),
                Err(e) => err(e),
            })
        }
        "restart" => c.restart_all().await.map(|r| match r {
            Ok(n) => ok(json!({ "restarting": n })),
            Err(e) => err(e),
        }),
        "signal" => {
            let Some(sig) = req.get("signal").and_then(signal_number) else {
                return err("signal needs \"signal\": a name (USR2, SIGHUP) or a number");
            };
            c.signal_all(sig).await.map(|r| match r {
                Ok(n) => ok(json!({ "signalled": n })),
                Err(e) => err(e),
            })
        }
        "reopen_logs" => c.reopen_logs().await.map(|_| ok(json!({ "reopened": true }))),
        "flush" => c.flush_logs().await.map(|r| match r {
            Ok(n) => ok(json!({ "flushed": n })),
            Err(e) => err(e),
        }),
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
                "unknown command {other:?}; try status, reload, restart, scale, signal, stop, send, flush, reopen_logs"
            ))
        }
    };
    r.unwrap_or_else(err)
}

/// A signal given as `"USR2"`, `"SIGUSR2"` or a number.
fn signal_number(v: &Value) -> Option<i32> {
    if let Some(n) = v.as_i64() {
        return i32::try_from(n).ok().filter(|n| (1..=64).contains(n));
    }
    let name = v.as_str()?.trim().to_ascii_uppercase();
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let full = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal_number(&json!("USR2")), Some(libc::SIGUSR2));
        assert_eq!(signal_number(&json!("sighup")), Some(libc::SIGHUP));
        assert_eq!(signal_number(&json!(15)), Some(15));
        assert_eq!(signal_number(&json!("9")), Some(9));
        for bad in [json!("NOPE"), json!(0), json!(99), json!(null)] {
            assert_eq!(signal_number(&bad), None, "{bad}");
        }
    }
}
