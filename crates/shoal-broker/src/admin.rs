//! Operation: the admin HTTP server (`/metrics` in Prometheus text, and a
//! JSON API under `/api/` like RabbitMQ's management plugin: overview,
//! connections, channels, exchanges, queues) and the control-socket handler
//! behind `shoal ctl broker list-queues`.

use crate::server::Broker;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use shoal_core::metrics::TextWriter;
use shoal_core::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;

/// One queue row.
pub fn queues_json(b: &Broker) -> Vec<Value> {
    let mut rows = Vec::new();
    for (vname, v) in &b.vhosts {
        let g = v.lock();
        for q in g.queues.values() {
            rows.push(json!({
                "vhost": vname,
                "name": q.name,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "exclusive": q.exclusive_owner.is_some(),
                "messages_ready": q.len,
                "messages_unacknowledged": q.unacked,
                "messages": q.len + q.unacked,
                "message_bytes_ready": q.bytes,
                "consumers": q.consumers.len(),
                "published": q.stat_published,
                "delivered": q.stat_delivered,
                "acked": q.stat_acked,
            }));
        }
    }
    rows.sort_by(|a, b| {
        (a["vhost"].as_str(), a["name"].as_str()).cmp(&(b["vhost"].as_str(), b["name"].as_str()))
    });
    rows
}

fn exchanges_json(b: &Broker) -> Vec<Value> {
    let mut rows = vec![];
    for (vname, v) in &b.vhosts {
        let g = v.lock();
        rows.push(json!({"vhost": vname, "name": "", "type": "direct", "durable": true, "auto_delete": false, "internal": false, "bindings": g.queues.len()}));
        for e in g.exchanges.values() {
            rows.push(json!({
                "vhost": vname, "name": e.name, "type": e.kind.as_str(), "durable": e.durable,
                "auto_delete": e.auto_delete, "internal": e.internal, "bindings": e.bindings.len(),
            }));
        }
    }
    rows
}

fn channels_json(b: &Broker) -> Vec<Value> {
    let mut rows = vec![];
    for (vname, v) in &b.vhosts {
        let g = v.lock();
        for (key, c) in &g.channels {
            rows.push(json!({
                "vhost": vname, "connection": key >> 16, "number": c.id,
                "consumers": c.consumers.len(), "messages_unacknowledged": c.unacked.len(),
                "prefetch_count": c.prefetch, "global_prefetch_count": c.global_prefetch,
            }));
        }
    }
    rows
}

/// The overview document.
pub fn overview(b: &Broker) -> Value {
    let mut totals =
        json!({"messages": 0u64, "messages_ready": 0u64, "messages_unacknowledged": 0u64});
    let (mut ready, mut unacked, mut published, mut delivered, mut acked) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut queues = 0;
    for v in b.vhosts.values() {
        let g = v.lock();
        queues += g.queues.len();
        for q in g.queues.values() {
            ready += q.len as u64;
            unacked += q.unacked as u64;
        }
        published += g.stats.published;
        delivered += g.stats.delivered;
        acked += g.stats.acked;
    }
    totals["messages"] = json!(ready + unacked);
    totals["messages_ready"] = json!(ready);
    totals["messages_unacknowledged"] = json!(unacked);
    json!({
        "product_name": "Shoal",
        "product_version": env!("CARGO_PKG_VERSION"),
        "listen": b.config.listen.to_string(),
        "uptime_s": b.started.elapsed().as_secs(),
        "queue_totals": totals,
        "message_stats": {"publish": published, "deliver_get": delivered, "ack": acked},
        "object_totals": {"connections": b.connections().len(), "connections_handshaking": b.metrics.handshaking.load(Ordering::Relaxed), "queues": queues, "vhosts": b.vhosts.len()},
        "alarm": *b.alarm.borrow(),
    })
}

/// Prometheus text.
pub fn metrics_text(b: &Broker) -> String {
    use shoal_core::metrics::Kind;
    let mut w = TextWriter::new();
    let m = &b.metrics;
    let mut one = |name: &str, kind: Kind, help: &str, v: f64| {
        w.family(name, kind, help).sample(name, &[], v);
    };
    let counters = [
        (
            "shoal_broker_connections_total",
            "Connections accepted.",
            &m.connections_total,
        ),
        (
            "shoal_broker_connections_refused_total",
            "Connections refused at the cap.",
            &m.connections_refused,
        ),
        (
            "shoal_broker_protocol_errors_total",
            "Connections closed for protocol errors.",
            &m.protocol_errors,
        ),
        (
            "shoal_broker_auth_failures_total",
            "Refused logins.",
            &m.auth_failures,
        ),
        (
            "shoal_broker_handshake_timeouts_total",
            "Connections closed for not completing the handshake within handshake_timeout.",
            &m.handshake_timeouts,
        ),
    ];
    for (name, help, count) in counters {
        one(
            name,
            Kind::Counter,
            help,
            count.load(Ordering::Relaxed) as f64,
        );
    }
    one(
        "shoal_broker_connections",
        Kind::Gauge,
        "Open connections.",
        b.connections().len() as f64,
    );
    one(
        "shoal_broker_connections_handshaking",
        Kind::Gauge,
        "Connections accepted that have not completed the handshake.",
        m.handshaking.load(Ordering::Relaxed) as f64,
    );
    one(
        "shoal_broker_message_bytes_receiving",
        Kind::Gauge,
        "Bytes of message bodies received but not yet complete (counted toward the memory alarm).",
        m.assembling.load(Ordering::Relaxed) as f64,
    );
    one(
        "shoal_broker_alarm",
        Kind::Gauge,
        "1 while publishers are blocked by a resource alarm.",
        if *b.alarm.borrow() { 1.0 } else { 0.0 },
    );
    // (family, kind, help) then rows of (labels, value), so each family is contiguous.
    type Rows = Vec<(Vec<(String, String)>, f64)>;
    let mut fams: Vec<(&str, Kind, &str, Rows)> = vec![
        (
            "shoal_broker_published_total",
            Kind::Counter,
            "Messages published.",
            vec![],
        ),
        (
            "shoal_broker_delivered_total",
            Kind::Counter,
            "Messages delivered (consume and get).",
            vec![],
        ),
        (
            "shoal_broker_acked_total",
            Kind::Counter,
            "Messages acknowledged.",
            vec![],
        ),
        (
            "shoal_broker_returned_total",
            Kind::Counter,
            "Unroutable mandatory messages returned.",
            vec![],
        ),
        (
            "shoal_broker_dead_lettered_total",
            Kind::Counter,
            "Messages dead-lettered.",
            vec![],
        ),
        (
            "shoal_broker_dropped_total",
            Kind::Counter,
            "Messages dropped (expired, overflow, rejected).",
            vec![],
        ),
        (
            "shoal_broker_store_segments",
            Kind::Gauge,
            "Segment files in the message store.",
            vec![],
        ),
        (
            "shoal_broker_store_live_records",
            Kind::Gauge,
            "Live records in the message store.",
            vec![],
        ),
        (
            "shoal_broker_store_write_errors_total",
            Kind::Counter,
            "Message store batches whose write or fsync failed (each is retried; none is confirmed until written).",
            vec![],
        ),
        (
            "shoal_broker_queue_messages_ready",
            Kind::Gauge,
            "Messages ready in a queue.",
            vec![],
        ),
        (
            "shoal_broker_queue_messages_unacked",
            Kind::Gauge,
            "Delivered, unacknowledged messages.",
            vec![],
        ),
        (
            "shoal_broker_queue_consumers",
            Kind::Gauge,
            "Consumers of a queue.",
            vec![],
        ),
    ];
    for (vname, v) in &b.vhosts {
        let g = v.lock();
        let vl = vec![("vhost".to_string(), vname.clone())];
        let st = g.store.stats();
        let vals = [
            g.stats.published as f64,
            g.stats.delivered as f64,
            g.stats.acked as f64,
            g.stats.returned as f64,
            g.stats.dead_lettered as f64,
            g.stats.dropped as f64,
            st.segments as f64,
            st.live as f64,
            st.write_errors as f64,
        ];
        for (i, val) in vals.into_iter().enumerate() {
            fams[i].3.push((vl.clone(), val));
        }
        for q in g.queues.values() {
            let ql = vec![
                ("vhost".to_string(), vname.clone()),
                ("queue".to_string(), q.name.clone()),
            ];
            fams[9].3.push((ql.clone(), q.len as f64));
            fams[10].3.push((ql.clone(), q.unacked as f64));
            fams[11].3.push((ql, q.consumers.len() as f64));
        }
    }
    for (name, kind, help, rows) in fams {
        w.family(name, kind, help);
        for (labels, val) in rows {
            let l: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            w.sample(name, &l, val);
        }
    }
    w.finish()
}

fn respond(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(b: &Broker, path: &str) -> Response<Full<Bytes>> {
    let j = |v: Value| respond(StatusCode::OK, "application/json", v.to_string());
    match path.trim_end_matches('/') {
        "/metrics" => respond(
            StatusCode::OK,
            shoal_core::metrics::CONTENT_TYPE,
            metrics_text(b),
        ),
        "/api/overview" => j(overview(b)),
        "/api/queues" => j(Value::Array(queues_json(b))),
        "/api/exchanges" => j(Value::Array(exchanges_json(b))),
        "/api/channels" => j(Value::Array(channels_json(b))),
        "/api/connections" => j(serde_json::to_value(b.connections()).unwrap_or(Value::Null)),
        "/api/vhosts" => j(json!(b
            .config
            .vhosts
            .iter()
            .map(|v| json!({"name": v}))
            .collect::<Vec<_>>())),
        "" | "/api" => j(
            json!({"endpoints": ["/metrics", "/api/overview", "/api/connections", "/api/channels", "/api/exchanges", "/api/queues", "/api/vhosts"]}),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "application/json",
            json!({"error": "not_found", "path": path}).to_string(),
        ),
    }
}

/// Serve the admin HTTP API until shutdown.
pub async fn serve(listener: TcpListener, b: Arc<Broker>, shutdown: Shutdown) {
    use hyper_util::rt::TokioIo;
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let b = b.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let b = b.clone();
                async move {
                    let resp = if req.method() == hyper::Method::GET {
                        route(&b, req.uri().path())
                    } else {
                        respond(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "text/plain",
                            "GET only\n".into(),
                        )
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Control-socket requests: `status`/`overview`, `list-queues`,
/// `list-exchanges`, `list-connections`, and `stop` (triggers `stop`: the
/// same graceful stop as SIGTERM).
pub fn control(b: &Broker, req: Value, stop: &shoal_core::Shutdown) -> Value {
    use shoal_core::control::{err, ok};
    match req.get("cmd").and_then(Value::as_str) {
        Some("stop") => {
            stop.trigger();
            ok(json!({"stopping": true}))
        }
        Some("list-queues") => ok(json!({"queues": queues_json(b)})),
        Some("list-exchanges") => ok(json!({"exchanges": exchanges_json(b)})),
        Some("list-connections") => ok(json!({"connections": b.connections()})),
        Some("overview") | Some("status") => ok(overview(b)),
        Some(other) => err(format!("unknown command {other:?}: the broker answers status, overview, list-queues, list-exchanges, list-connections and stop (as `shoal ctl --name NAME broker list-queues`, `shoal ctl --name NAME stop`; see shoal ctl broker --help)")),
        None => err("missing \"cmd\""),
    }
}
