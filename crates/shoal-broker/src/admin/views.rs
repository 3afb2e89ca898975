//! The management API's read views, in RabbitMQ 3.10's JSON shapes:
//! overview, nodes, vhosts, queues, exchanges, bindings, connections,
//! channels, consumers, users, permissions, whoami and the health checks.
//! Each list is filtered by what the caller's tags let it see
//! ([`super::auth`]).

use super::auth::Caller;
use super::json::table_to_json;
use super::rates::{g, q, Rates};
use crate::exchange::Dest;
use crate::queue::Queue;
use crate::server::{Broker, ConnInfo};
use crate::vhost::{chan_conn, Policy, VHost};
use amq_protocol::types::FieldTable;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The RabbitMQ release whose management API (paths, JSON shapes, status
/// codes) Shoal follows; reported as `rabbitmq_version` and
/// `management_version` so tools pick the matching API.
pub const RABBITMQ_VERSION: &str = "3.10.8";

/// What a view needs: the broker, the rates and (for filtering) the caller.
pub struct Ctx<'a> {
    /// The broker.
    pub b: &'a Broker,
    /// Message rates.
    pub rates: &'a Rates,
    /// Who asks (None: the control socket, which sees everything).
    pub caller: Option<&'a Caller>,
}

impl Ctx<'_> {
    fn sees_vhost(&self, v: &str) -> bool {
        self.caller.is_none_or(|c| c.sees_vhost(v))
    }

    fn sees_user(&self, u: &str) -> bool {
        self.caller.is_none_or(|c| c.sees_user(u))
    }

    /// Visible vhosts (all, or only `only`), sorted by name.
    fn vhosts(&self, only: Option<&str>) -> Vec<(String, Arc<parking_lot::Mutex<VHost>>)> {
        let mut v: Vec<_> = self
            .b
            .vhosts()
            .iter()
            .filter(|(n, _)| self.sees_vhost(n) && only.is_none_or(|o| o == n.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// `name@host`, as RabbitMQ names nodes `rabbit@host`.
pub fn node_name(b: &Broker) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{}@{}", b.config.name, host)
}

fn rate(r: f64) -> Value {
    json!({ "rate": r })
}

/// One queue in RabbitMQ's shape.
pub fn queue_row(
    vname: &str,
    qu: &Queue,
    policy: Option<&Policy>,
    rates: &Rates,
    node: &str,
) -> Value {
    let qr = |i| rate(rates.queue(vname, &qu.name, i));
    let effective = policy.map_or_else(|| json!({}), |p| json!(p.definition));
    let (ready, unacked) = (qu.len as u64, qu.unacked as u64);
    json!({
        "name": &*qu.name, "vhost": vname, "node": node, "type": "classic", "state": "running",
        "durable": qu.durable, "auto_delete": qu.auto_delete, "exclusive": qu.exclusive_owner.is_some(),
        "arguments": table_to_json(&qu.arguments), "policy": qu.policy,
        "effective_policy_definition": effective, "operator_policy": null,
        "messages": ready + unacked, "messages_details": qr(q::MESSAGES),
        "messages_ready": ready, "messages_ready_details": qr(q::READY),
        "messages_unacknowledged": unacked, "messages_unacknowledged_details": qr(q::UNACKED),
        "message_bytes_ready": qu.bytes,
        "consumers": qu.consumers.len(),
        "message_stats": {
            "publish": qu.stat_published, "publish_details": qr(q::PUBLISH),
            "deliver_get": qu.stat_delivered, "deliver_get_details": qr(q::DELIVER_GET),
            "ack": qu.stat_acked, "ack_details": qr(q::ACK),
        },
    })
}

/// Queues of every visible vhost (or of `only`), sorted by vhost and name.
pub fn queues(cx: &Ctx, only: Option<&str>) -> Vec<Value> {
    let node = node_name(cx.b);
    let mut rows = Vec::new();
    for (vname, v) in &cx.vhosts(only) {
        let g = v.lock();
        let mut qs: Vec<&Queue> = g.queues.values().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        rows.extend(qs.into_iter().map(|qu| {
            let policy = g.policies().find(|p| qu.policy.as_ref() == Some(&p.name));
            queue_row(vname, qu, policy, cx.rates, &node)
        }));
    }
    rows
}

/// Exchanges (the default exchange `""` included, as RabbitMQ lists it).
pub fn exchanges(cx: &Ctx, only: Option<&str>) -> Vec<Value> {
    let mut rows = vec![];
    for (vname, v) in &cx.vhosts(only) {
        let g = v.lock();
        rows.push(json!({"name": "", "vhost": vname, "type": "direct", "durable": true,
            "auto_delete": false, "internal": false, "arguments": {}, "user_who_performed_action": "rmq-internal"}));
        let mut xs: Vec<_> = g.exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for e in xs {
            rows.push(json!({
                "name": e.name, "vhost": vname, "type": e.kind.as_str(), "durable": e.durable,
                "auto_delete": e.auto_delete, "internal": e.internal,
                "arguments": table_to_json(&e.arguments),
                "policy": e.policy.as_ref().map(|(name, _)| name),
            }));
        }
    }
    rows
}

/// `s` URL-quoted for a path segment (letters, digits, `-`, `.`, `_` kept).
pub fn quote(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const Q: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');
    utf8_percent_encode(s, Q).to_string()
}

/// RabbitMQ's `properties_key` of a binding: the routing key (URL-quoted;
/// `~` when empty) and, with arguments, `~` and a hash of them. Opaque to
/// clients, which take it from the listing to delete the binding.
pub fn props_key(key: &str, args: &FieldTable) -> String {
    let quoted = quote(key);
    if args.inner().is_empty() {
        return if key.is_empty() { "~".into() } else { quoted };
    }
    let hash = crc32fast::hash(table_to_json(args).to_string().as_bytes());
    use base64::Engine;
    let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.to_be_bytes());
    format!("{quoted}~{h}")
}

fn binding_row(vname: &str, source: &str, dest: &Dest, key: &str, args: &FieldTable) -> Value {
    let (dtype, dname) = match dest {
        Dest::Queue(q) => ("queue", q),
        Dest::Exchange(x) => ("exchange", x),
    };
    json!({
        "source": source, "vhost": vname, "destination": dname, "destination_type": dtype,
        "routing_key": key, "arguments": table_to_json(args), "properties_key": props_key(key, args),
    })
}

/// Bindings of one vhost: each queue's implicit binding from the default
/// exchange first, then every exchange's, sorted as RabbitMQ lists them.
pub fn vhost_bindings(vname: &str, g: &VHost) -> Vec<Value> {
    let mut qs: Vec<&String> = g.queues.keys().collect();
    qs.sort();
    let none = FieldTable::default();
    let mut rows: Vec<Value> = qs
        .into_iter()
        .map(|q| binding_row(vname, "", &Dest::Queue(q.clone()), q, &none))
        .collect();
    let mut xs: Vec<_> = g.exchanges.values().collect();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    for e in xs {
        for bd in &e.bindings {
            rows.push(binding_row(vname, &e.name, &bd.dest, &bd.key, &bd.args));
        }
    }
    rows
}

/// Bindings of every visible vhost (or `only`).
pub fn bindings(cx: &Ctx, only: Option<&str>) -> Vec<Value> {
    let mut rows = vec![];
    for (vname, v) in &cx.vhosts(only) {
        rows.extend(vhost_bindings(vname, &v.lock()));
    }
    rows
}

fn split_addr(a: &str) -> (Value, Value) {
    match a.parse::<std::net::SocketAddr>() {
        Ok(s) => (json!(s.ip().to_string()), json!(s.port())),
        Err(_) => (json!(a), Value::Null),
    }
}

/// RabbitMQ's connection name: `peer -> local`.
pub fn conn_name(c: &ConnInfo) -> String {
    format!("{} -> {}", c.peer, c.local)
}

/// Open connections the caller may see.
pub fn connections(cx: &Ctx) -> Vec<Value> {
    let node = node_name(cx.b);
    let mut chans: HashMap<u64, usize> = HashMap::new();
    for v in cx.b.vhosts().values() {
        for k in v.lock().channels.keys() {
            *chans.entry(chan_conn(*k)).or_default() += 1;
        }
    }
    cx.b.connections()
        .into_iter()
        .filter(|c| cx.sees_user(&c.user))
        .filter(|c| c.vhost.is_empty() || cx.sees_vhost(&c.vhost))
        .map(|c| {
            let (ph, pp) = split_addr(&c.peer);
            let (h, p) = split_addr(&c.local);
            json!({
                "name": conn_name(&c), "node": node, "user": c.user, "vhost": c.vhost,
                "peer_host": ph, "peer_port": pp, "host": h, "port": p,
                "state": if c.user.is_empty() { "starting" } else { "running" },
                "channels": chans.get(&c.id).copied().unwrap_or(0),
                "protocol": "AMQP 0-9-1", "type": "network", "ssl": false,
                "connected_at": c.connected_at,
                "client_properties": table_to_json(&c.client_properties),
                "auth_mechanism": c.auth_mechanism,
                "frame_max": c.tuned.frame_max, "channel_max": c.tuned.channel_max,
                "timeout": c.tuned.heartbeat,
            })
        })
        .collect()
}

/// What a channel or consumer row says about its connection.
struct ChanOwner {
    name: String,
    user: String,
    peer_host: Value,
    peer_port: Value,
}

fn owners(b: &Broker) -> HashMap<u64, ChanOwner> {
    b.connections()
        .into_iter()
        .map(|c| {
            let (peer_host, peer_port) = split_addr(&c.peer);
            (
                c.id,
                ChanOwner {
                    name: conn_name(&c),
                    user: c.user,
                    peer_host,
                    peer_port,
                },
            )
        })
        .collect()
}

/// Open channels the caller may see.
pub fn channels(cx: &Ctx) -> Vec<Value> {
    let node = node_name(cx.b);
    let own = owners(cx.b);
    let mut rows = vec![];
    for (vname, v) in &cx.vhosts(None) {
        let g = v.lock();
        let mut keys: Vec<&u64> = g.channels.keys().collect();
        keys.sort();
        for key in keys {
            let c = &g.channels[key];
            let Some(o) = own.get(&chan_conn(*key)) else {
                continue;
            };
            if !cx.sees_user(&o.user) {
                continue;
            }
            rows.push(json!({
                "name": format!("{} ({})", o.name, c.id), "node": node, "number": c.id,
                "user": o.user, "vhost": vname, "state": if c.flow { "running" } else { "flow" },
                "connection_details": {"name": o.name, "peer_host": o.peer_host, "peer_port": o.peer_port},
                "consumer_count": c.consumers.len(), "messages_unacknowledged": c.unacked.len(),
                "prefetch_count": c.prefetch, "global_prefetch_count": c.global_prefetch,
            }));
        }
    }
    rows
}

/// Consumers the caller may see (of every visible vhost, or `only`).
pub fn consumers(cx: &Ctx, only: Option<&str>) -> Vec<Value> {
    let own = owners(cx.b);
    let mut rows = vec![];
    for (vname, v) in &cx.vhosts(only) {
        let g = v.lock();
        let mut qs: Vec<&Queue> = g.queues.values().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for qu in qs {
            for (i, c) in qu.consumers.iter().enumerate() {
                let Some(o) = own.get(&chan_conn(c.chan)) else {
                    continue;
                };
                if !cx.sees_user(&o.user) {
                    continue;
                }
                let number = g.channels.get(&c.chan).map_or(0, |ch| ch.id);
                let active = !qu.args.single_active || i == 0;
                let args = if c.priority != 0 {
                    json!({"x-priority": c.priority})
                } else {
                    json!({})
                };
                rows.push(json!({
                    "consumer_tag": &*c.tag, "queue": {"name": &*qu.name, "vhost": vname},
                    "channel_details": {"name": format!("{} ({number})", o.name), "number": number,
                        "connection_name": o.name, "peer_host": o.peer_host, "peer_port": o.peer_port, "user": o.user},
                    "ack_required": !c.no_ack, "exclusive": c.exclusive, "prefetch_count": c.prefetch,
                    "active": active, "activity_status": if active { "up" } else { "waiting" },
                    "arguments": args,
                }));
            }
        }
    }
    rows
}

fn totals(cx: &Ctx) -> (u64, u64, usize, usize, usize, usize) {
    let (mut ready, mut unacked, mut queues, mut exchanges, mut consumers, mut channels) =
        (0u64, 0u64, 0, 0, 0, 0);
    for (_, v) in &cx.vhosts(None) {
        let g = v.lock();
        queues += g.queues.len();
        exchanges += g.exchanges.len() + 1;
        channels += g.channels.len();
        for qu in g.queues.values() {
            ready += qu.len as u64;
            unacked += qu.unacked as u64;
            consumers += qu.consumers.len();
        }
    }
    (ready, unacked, queues, exchanges, consumers, channels)
}

/// Message counters summed over visible vhosts: (published, delivered, acked, returned).
fn message_counts(cx: &Ctx) -> [u64; 4] {
    let mut c = [0u64; 4];
    for (_, v) in &cx.vhosts(None) {
        let s = v.lock().stats;
        for (i, n) in [s.published, s.delivered, s.acked, s.returned]
            .into_iter()
            .enumerate()
        {
            c[i] += n;
        }
    }
    c
}

/// The exchange types, as `/api/overview` lists them.
fn exchange_types() -> Value {
    json!(["direct", "fanout", "headers", "topic"]
        .iter()
        .map(|t| json!({"name": t, "description": format!("AMQP {t} exchange, as per the AMQP specification"), "enabled": true}))
        .collect::<Vec<_>>())
}

/// `/api/overview`.
pub fn overview(cx: &Ctx) -> Value {
    let b = cx.b;
    let node = node_name(b);
    let (ready, unacked, queues, exchanges, consumers, channels) = totals(cx);
    let [published, delivered, acked, returned] = message_counts(cx);
    let r = |i| rate(cx.rates.global(i));
    let conns = connections(cx).len();
    let admin = b.config.admin_listen;
    json!({
        "management_version": RABBITMQ_VERSION, "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "Shoal", "product_version": env!("CARGO_PKG_VERSION"),
        "rates_mode": "basic", "exchange_types": exchange_types(),
        "cluster_name": node, "node": node,
        "listen": b.config.listen.to_string(),
        "uptime_s": b.started.elapsed().as_secs(),
        "alarm": *b.alarm.borrow(),
        "message_stats": {
            "publish": published, "publish_details": r(g::PUBLISH),
            "deliver_get": delivered, "deliver_get_details": r(g::DELIVER_GET),
            "ack": acked, "ack_details": r(g::ACK),
            "return_unroutable": returned, "return_unroutable_details": r(g::RETURN),
            "confirm": b.metrics.confirmed.load(Ordering::Relaxed), "confirm_details": r(g::CONFIRM),
        },
        "queue_totals": {
            "messages": ready + unacked, "messages_details": r(g::MESSAGES),
            "messages_ready": ready, "messages_ready_details": r(g::READY),
            "messages_unacknowledged": unacked, "messages_unacknowledged_details": r(g::UNACKED),
        },
        "object_totals": {
            "connections": conns, "channels": channels, "consumers": consumers,
            "exchanges": exchanges, "queues": queues,
            "connections_handshaking": b.metrics.handshaking.load(Ordering::Relaxed),
            "vhosts": cx.vhosts(None).len(),
        },
        "listeners": listeners(b, &node),
        "contexts": admin.map(|a| vec![json!({"node": node, "description": "RabbitMQ Management", "path": "/", "ip": a.ip().to_string(), "port": a.port().to_string()})]).unwrap_or_default(),
    })
}

fn listeners(b: &Broker, node: &str) -> Vec<Value> {
    let mut l = vec![
        json!({"node": node, "protocol": "amqp", "ip_address": b.config.listen.ip().to_string(), "port": b.config.listen.port()}),
    ];
    if let Some(a) = b.config.admin_listen {
        l.push(json!({"node": node, "protocol": "http", "ip_address": a.ip().to_string(), "port": a.port()}));
    }
    l
}

fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

fn fds() -> (u64, u64) {
    let used = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (used, if rc == 0 { lim.rlim_cur } else { 0 })
}

/// `/api/nodes`: this one node. `mem_used` is the process's resident
/// memory; `mem_limit` is `memory_high_watermark`, which the broker compares
/// with its estimate of queued message bytes.
pub fn nodes(b: &Broker) -> Vec<Value> {
    let disk_free = crate::server::disk_free(&b.config.data_dir).unwrap_or(0);
    let disk_alarm = disk_free < b.config.disk_free_limit;
    let alarm = *b.alarm.borrow();
    let (fd_used, fd_total) = fds();
    vec![json!({
        "name": node_name(b), "type": "disc", "running": true, "os_pid": std::process::id().to_string(),
        "uptime": b.started.elapsed().as_millis() as u64, "rates_mode": "basic", "partitions": [],
        "mem_used": rss_bytes(), "mem_limit": b.config.memory_high_watermark, "mem_alarm": alarm && !disk_alarm,
        "disk_free": disk_free, "disk_free_limit": b.config.disk_free_limit, "disk_free_alarm": disk_alarm,
        "fd_used": fd_used, "fd_total": fd_total,
        "sockets_used": b.connections().len(), "sockets_total": b.config.max_connections,
        "exchange_types": exchange_types(),
    })]
}

/// `/api/vhosts` rows.
pub fn vhosts(cx: &Ctx) -> Vec<Value> {
    cx.vhosts(None)
        .into_iter()
        .map(|(name, v)| {
            let g = v.lock();
            let (ready, unacked) = g.queues.values().fold((0u64, 0u64), |(r, u), qu| {
                (r + qu.len as u64, u + qu.unacked as u64)
            });
            json!({
                "name": name, "description": "", "tags": [], "tracing": false,
                "default_queue_type": "classic", "metadata": {"description": "", "tags": []},
                "messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked,
                "cluster_state": {node_name(cx.b): "running"},
            })
        })
        .collect()
}

/// `/api/users` rows with RabbitMQ's `password_hash` and
/// `hashing_algorithm` (a configured plain password is shown hashed).
pub fn users(b: &Broker) -> Vec<Value> {
    let a = b.accounts();
    let mut names: Vec<&String> = a.users.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let u = &a.users[n];
            let (hash, algo) = u.password.export(n);
            json!({"name": n, "password_hash": hash, "hashing_algorithm": algo, "tags": u.tags, "limits": {}})
        })
        .collect()
}

/// `/api/permissions` rows, optionally only one user's or one vhost's.
pub fn permissions(b: &Broker, user: Option<&str>, vhost: Option<&str>) -> Vec<Value> {
    let a = b.accounts();
    let mut rows: Vec<Value> = a
        .permissions
        .iter()
        .filter(|((u, v), _)| user.is_none_or(|x| x == u) && vhost.is_none_or(|x| x == v))
        .map(|((u, v), p)| {
            json!({"user": u, "vhost": v, "configure": p.patterns[0], "write": p.patterns[1], "read": p.patterns[2]})
        })
        .collect();
    rows.sort_by(|x, y| {
        (x["user"].as_str(), x["vhost"].as_str()).cmp(&(y["user"].as_str(), y["vhost"].as_str()))
    });
    rows
}
