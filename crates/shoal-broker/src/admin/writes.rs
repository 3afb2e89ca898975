//! The management API's writes: declare and delete queues and exchanges,
//! create and delete bindings (by `properties_key`), purge, publish and get.
//! Each is checked against the caller's AMQP permissions in the vhost, as
//! RabbitMQ does (configure to declare/delete, write to publish and to bind
//! a destination, read to get, purge and bind a source).

use super::auth::Caller;
use super::json::{field_args, field_bool, field_str, field_u64, json_to_props, props_to_json};
use super::views::{props_key, quote};
use super::{ApiError, Reply};
use crate::config::Access;
use crate::exchange::Dest;
use crate::message::Message;
use crate::server::Broker;
use crate::vhost::{AckMode, VHost};
use base64::Engine;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Most messages one `get` request may take.
pub const GET_MAX: u64 = 10_000;

/// A vhost by name, or 404.
pub fn vhost(b: &Broker, name: &str) -> Result<Arc<Mutex<VHost>>, ApiError> {
    b.vhost(name).ok_or_else(ApiError::not_found)
}

/// A locked vhost that owns its reference (the vhost map may change).
type Locked = parking_lot::ArcMutexGuard<parking_lot::RawMutex, VHost>;

/// `vhost` locked for a `kind` (`queue`/`exchange`) `name` operation that
/// needs `access`: 404 for a missing vhost, 403 without the permission.
fn locked(
    b: &Broker,
    c: &Caller,
    v: &str,
    access: Access,
    kind: &str,
    name: &str,
) -> Result<Locked, ApiError> {
    let vh = vhost(b, v)?;
    c.check(v, access, kind, name)?;
    Ok(vh.lock_arc())
}

/// [`locked`] for an existing queue: 404 when `name` is not declared.
fn locked_queue(
    b: &Broker,
    c: &Caller,
    v: &str,
    access: Access,
    name: &str,
) -> Result<Locked, ApiError> {
    let g = locked(b, c, v, access, "queue", name)?;
    if g.queues.contains_key(name) {
        Ok(g)
    } else {
        Err(ApiError::not_found())
    }
}

/// 204 for a declaration of what `existed`, 201 for a new one.
fn declared(existed: bool) -> Reply {
    if existed {
        Reply::no_content()
    } else {
        Reply::created()
    }
}

fn flag(query: &[(String, String)], key: &str) -> bool {
    query.iter().any(|(k, v)| k == key && v == "true")
}

/// `PUT /api/queues/{vhost}/{name}`: 201 created, 204 already there (and
/// equivalent), 400 with RabbitMQ's wording if not equivalent.
pub fn put_queue(
    b: &Broker,
    c: &Caller,
    v: &str,
    name: &str,
    body: &Value,
) -> Result<Reply, ApiError> {
    let mut g = locked(b, c, v, Access::Configure, "queue", name)?;
    let durable = field_bool(body, "durable", false)?;
    let auto_delete = field_bool(body, "auto_delete", false)?;
    let args = field_args(body)?;
    let existed = g.queues.contains_key(name);
    g.declare_queue(0, name, false, durable, false, auto_delete, args)?;
    Ok(declared(existed))
}

/// `DELETE /api/queues/{vhost}/{name}` (`if-unused`, `if-empty`).
pub fn delete_queue(
    b: &Broker,
    c: &Caller,
    v: &str,
    name: &str,
    query: &[(String, String)],
) -> Result<Reply, ApiError> {
    let mut g = locked_queue(b, c, v, Access::Configure, name)?;
    g.delete_queue(0, name, flag(query, "if-unused"), flag(query, "if-empty"))?;
    Ok(Reply::no_content())
}

/// `DELETE /api/queues/{vhost}/{name}/contents`.
pub fn purge(b: &Broker, c: &Caller, v: &str, name: &str) -> Result<Reply, ApiError> {
    let mut g = locked_queue(b, c, v, Access::Read, name)?;
    g.purge_queue(0, name)?;
    Ok(Reply::no_content())
}

/// `PUT /api/exchanges/{vhost}/{name}`.
pub fn put_exchange(
    b: &Broker,
    c: &Caller,
    v: &str,
    name: &str,
    body: &Value,
) -> Result<Reply, ApiError> {
    let mut g = locked(b, c, v, Access::Configure, "exchange", name)?;
    let kind = field_str(body, "type")?.ok_or_else(|| {
        ApiError::bad_request("key_missing: type (direct, fanout, topic or headers)")
    })?;
    let durable = field_bool(body, "durable", false)?;
    let auto_delete = field_bool(body, "auto_delete", false)?;
    let internal = field_bool(body, "internal", false)?;
    let args = field_args(body)?;
    let existed = g.exchanges.contains_key(name);
    g.declare_exchange(name, kind, false, durable, auto_delete, internal, args)?;
    Ok(declared(existed))
}

/// `DELETE /api/exchanges/{vhost}/{name}` (`if-unused`).
pub fn delete_exchange(
    b: &Broker,
    c: &Caller,
    v: &str,
    name: &str,
    query: &[(String, String)],
) -> Result<Reply, ApiError> {
    let mut g = locked(b, c, v, Access::Configure, "exchange", name)?;
    if !name.is_empty() && !g.exchanges.contains_key(name) {
        return Err(ApiError::not_found());
    }
    g.delete_exchange(name, flag(query, "if-unused"))?;
    Ok(Reply::no_content())
}

/// The destination named by a binding path's `q`/`e` segment.
pub fn dest(kind: &str, name: &str) -> Result<Dest, ApiError> {
    match kind {
        "q" => Ok(Dest::Queue(name.to_string())),
        "e" => Ok(Dest::Exchange(name.to_string())),
        _ => Err(ApiError::not_found()),
    }
}

fn check_bind(c: &Caller, v: &str, source: &str, d: &Dest) -> Result<(), ApiError> {
    match d {
        Dest::Queue(q) => c.check(v, Access::Write, "queue", q)?,
        Dest::Exchange(x) => c.check(v, Access::Write, "exchange", x)?,
    }
    c.check(v, Access::Read, "exchange", source)
}

fn require_ends(g: &VHost, source: &str, d: &Dest) -> Result<(), ApiError> {
    let dest_there = match d {
        Dest::Queue(q) => g.queues.contains_key(q),
        Dest::Exchange(x) => g.exchanges.contains_key(x),
    };
    if (source.is_empty() || g.exchanges.contains_key(source)) && dest_there {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// A binding path: `/api/bindings/{vhost}/e/{source}/{q|e}/{dest}`.
pub struct BindingPath<'a> {
    /// Vhost.
    pub vhost: &'a str,
    /// Source exchange.
    pub source: &'a str,
    /// `q` or `e`.
    pub kind: &'a str,
    /// Destination name.
    pub dest: &'a str,
}

impl BindingPath<'_> {
    /// Its vhost and destination, after the caller's permissions are checked.
    fn open(&self, b: &Broker, c: &Caller) -> Result<(Arc<Mutex<VHost>>, Dest), ApiError> {
        let vh = vhost(b, self.vhost)?;
        let d = dest(self.kind, self.dest)?;
        check_bind(c, self.vhost, self.source, &d)?;
        Ok((vh, d))
    }
}

/// `POST` a binding path: 201 with the new binding's path (ending in its
/// `properties_key`) in `Location`.
pub fn post_binding(
    b: &Broker,
    c: &Caller,
    p: &BindingPath,
    body: &Value,
) -> Result<Reply, ApiError> {
    let (vh, d) = p.open(b, c)?;
    let key = field_str(body, "routing_key")?.unwrap_or("");
    let args = field_args(body)?;
    let mut g = vh.lock();
    require_ends(&g, p.source, &d)?;
    let pk = props_key(key, &args);
    g.bind(0, p.source, d, key, args)?;
    let mut r = Reply::created();
    r.location = Some(format!(
        "/api/bindings/{}/e/{}/{}/{}/{pk}",
        quote(p.vhost),
        quote(p.source),
        p.kind,
        quote(p.dest)
    ));
    Ok(r)
}

/// `DELETE` a binding path's binding by its `properties_key`.
pub fn delete_binding(
    b: &Broker,
    c: &Caller,
    p: &BindingPath,
    props: &str,
) -> Result<Reply, ApiError> {
    let (vh, d) = p.open(b, c)?;
    let source = p.source;
    if source.is_empty() {
        return Err(ApiError::not_authorised(
            "operation not permitted on the default exchange",
        ));
    }
    let mut g = vh.lock();
    let found = g.exchanges.get(source).and_then(|x| {
        x.bindings.iter().find(|bd| {
            let pk = props_key(&bd.key, &bd.args);
            bd.dest == d && (pk == props || super::decode(&pk) == props)
        })
    });
    let Some(bd) = found else {
        return Err(ApiError::not_found());
    };
    let (key, args) = (bd.key.clone(), bd.args.clone());
    g.unbind(0, source, d, &key, &args)?;
    Ok(Reply::no_content())
}

/// `POST /api/exchanges/{vhost}/{name}/publish` (`amq.default` is the
/// default exchange): `{"routed": bool}`.
pub fn publish(
    b: &Broker,
    c: &Caller,
    v: &str,
    xname: &str,
    body: &Value,
) -> Result<Reply, ApiError> {
    let vh = vhost(b, v)?;
    let x = if xname == "amq.default" { "" } else { xname };
    c.check(v, Access::Write, "exchange", xname)?;
    let rk = field_str(body, "routing_key")?
        .ok_or_else(|| ApiError::bad_request("key_missing: routing_key"))?;
    if rk.len() > 255 {
        return Err(ApiError::bad_request(
            "routing_key is longer than 255 bytes",
        ));
    }
    let payload =
        field_str(body, "payload")?.ok_or_else(|| ApiError::bad_request("key_missing: payload"))?;
    let data = match field_str(body, "payload_encoding")?.unwrap_or("string") {
        "string" => payload.as_bytes().to_vec(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?,
        other => {
            return Err(ApiError::bad_request(format!(
                "payload_encoding must be \"string\" or \"base64\", not {other:?}"
            )))
        }
    };
    if data.len() as u64 > b.config.max_message_size {
        return Err(ApiError::bad_request(format!(
            "payload is larger than max_message_size ({} bytes)",
            b.config.max_message_size
        )));
    }
    let props = json_to_props(body.get("properties").unwrap_or(&Value::Null))
        .map_err(ApiError::bad_request)?;
    let mut g = vh.lock();
    if !x.is_empty() && !g.exchanges.contains_key(x) {
        return Err(ApiError::not_found());
    }
    let res = g.publish(Message::new(x, rk, &props, &data))?;
    b.metrics.published.fetch_add(1, Ordering::Relaxed);
    Ok(Reply::json(json!({ "routed": res.routed })))
}

/// `POST /api/queues/{vhost}/{name}/get`: `count`, `ackmode`,
/// `encoding` (`auto`: text if UTF-8, else base64; `base64`), `truncate`.
pub fn get(b: &Broker, c: &Caller, v: &str, qname: &str, body: &Value) -> Result<Reply, ApiError> {
    let vh = vhost(b, v)?;
    c.check(v, Access::Read, "queue", qname)?;
    let count = field_u64(body, "count")?.unwrap_or(1);
    if count > GET_MAX {
        return Err(ApiError::bad_request(format!(
            "count must be at most {GET_MAX}"
        )));
    }
    let mode_s = field_str(body, "ackmode")?.ok_or_else(|| {
        ApiError::bad_request("key_missing: ackmode (ack_requeue_true, ack_requeue_false, reject_requeue_true or reject_requeue_false)")
    })?;
    let mode = AckMode::parse(mode_s)
        .ok_or_else(|| ApiError::bad_request(format!("unknown ackmode {mode_s:?}")))?;
    let base64_only = match field_str(body, "encoding")?.unwrap_or("auto") {
        "auto" => false,
        "base64" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "encoding must be \"auto\" or \"base64\", not {other:?}"
            )))
        }
    };
    let truncate = field_u64(body, "truncate")?;
    let got = {
        let mut g = vh.lock();
        if !g.queues.contains_key(qname) {
            return Err(ApiError::not_found());
        }
        g.get_for_api(qname, count as usize, mode)?
    };
    let rows: Vec<Value> = got
        .into_iter()
        .map(|m| {
            let body = m.msg.body();
            let cut = truncate.map_or(body.len(), |t| body.len().min(t as usize));
            let part = &body[..cut];
            let (payload, enc) = match std::str::from_utf8(part) {
                Ok(s) if !base64_only => (s.to_string(), "string"),
                _ => (
                    base64::engine::general_purpose::STANDARD.encode(part),
                    "base64",
                ),
            };
            json!({
                "payload_bytes": body.len(), "redelivered": m.redelivered,
                "exchange": &*m.msg.exchange, "routing_key": &*m.msg.routing_key,
                "message_count": m.left, "properties": props_to_json(&m.msg.properties()),
                "payload": payload, "payload_encoding": enc,
            })
        })
        .collect();
    Ok(Reply::json(Value::Array(rows)))
}
