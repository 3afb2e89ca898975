//! `/metrics` in Prometheus text: Shoal's own `shoal_broker_*` families and,
//! next to them, the families RabbitMQ's Prometheus plugin
//! (`rabbitmq_prometheus`) exports, under its names and labels, so that
//! dashboards built for RabbitMQ show Shoal. `/metrics` has RabbitMQ's
//! aggregated form (no per-queue labels on `rabbitmq_*`);
//! `/metrics/per-object` adds the per-queue `rabbitmq_queue_*` samples with
//! `vhost` and `queue` labels, as RabbitMQ's endpoint of that name does.

use super::views::{node_name, RABBITMQ_VERSION};
use crate::server::Broker;
use shoal_core::metrics::{Kind, TextWriter};
use std::sync::atomic::Ordering;

/// Prometheus text.
pub fn metrics_text(b: &Broker, per_object: bool) -> String {
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
    let mut fams: Vec<Family> = vec![
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
    for (vname, v) in b.vhosts().iter() {
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
                ("queue".to_string(), q.name.to_string()),
            ];
            fams[9].3.push((ql.clone(), q.len as f64));
            fams[10].3.push((ql.clone(), q.unacked as f64));
            fams[11].3.push((ql, q.consumers.len() as f64));
        }
    }
    write_families(&mut w, fams);
    rabbitmq_families(&mut w, b, per_object);
    w.finish()
}

/// Samples of one family: (labels, value).
type Rows = Vec<(Vec<(String, String)>, f64)>;

/// (family, kind, help, rows).
type Family<'a> = (&'a str, Kind, &'a str, Rows);

fn write_families(w: &mut TextWriter, fams: Vec<Family>) {
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
}

fn plain(v: f64) -> Rows {
    vec![(vec![], v)]
}

fn amqp(v: f64) -> Rows {
    vec![(vec![("protocol".to_string(), "amqp091".to_string())], v)]
}

/// The `rabbitmq_*` families.
fn rabbitmq_families(w: &mut TextWriter, b: &Broker, per_object: bool) {
    let (mut queues, mut channels, mut consumers, mut ready, mut unacked) = (0, 0, 0, 0u64, 0u64);
    let (mut published, mut delivered, mut acked, mut returned, mut q_published) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut per_q: [Rows; 5] = Default::default();
    let vhosts = b.vhosts();
    let mut names: Vec<&String> = vhosts.keys().collect();
    names.sort();
    for vname in names {
        let g = vhosts[vname].lock();
        queues += g.queues.len();
        channels += g.channels.len();
        published += g.stats.published;
        delivered += g.stats.delivered;
        acked += g.stats.acked;
        returned += g.stats.returned;
        let mut qs: Vec<_> = g.queues.values().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs {
            consumers += q.consumers.len();
            ready += q.len as u64;
            unacked += q.unacked as u64;
            q_published += q.stat_published;
            if per_object {
                let l = vec![
                    ("vhost".to_string(), vname.clone()),
                    ("queue".to_string(), q.name.to_string()),
                ];
                let vals = [
                    q.len as f64,
                    q.unacked as f64,
                    (q.len + q.unacked) as f64,
                    q.consumers.len() as f64,
                    q.stat_published as f64,
                ];
                for (i, v) in vals.into_iter().enumerate() {
                    per_q[i].push((l.clone(), v));
                }
            }
        }
    }
    let m = &b.metrics;
    let node = node_name(b);
    let labelled = |pairs: &[(&str, &str)]| -> Rows {
        vec![(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            1.0,
        )]
    };
    let [q_ready, q_unacked, q_messages, q_consumers, q_pub] = per_q;
    let pick = |agg: f64, rows: Rows| {
        if per_object {
            rows
        } else {
            vec![(vec![], agg)]
        }
    };
    let fams: Vec<Family> = vec![
        ("rabbitmq_identity_info", Kind::Gauge, "RabbitMQ node & cluster identity info",
            labelled(&[("rabbitmq_node", &node), ("rabbitmq_cluster", &node), ("rabbitmq_cluster_permanent_id", &node)])),
        ("rabbitmq_build_info", Kind::Gauge, "RabbitMQ & Erlang/OTP version info",
            labelled(&[("rabbitmq_version", RABBITMQ_VERSION), ("prometheus_plugin_version", RABBITMQ_VERSION), ("product_name", "Shoal"), ("product_version", env!("CARGO_PKG_VERSION"))])),
        ("rabbitmq_connections", Kind::Gauge, "Connections currently open", plain(b.connections().len() as f64)),
        ("rabbitmq_connections_opened_total", Kind::Counter, "Total number of connections opened", plain(m.connections_total.load(Ordering::Relaxed) as f64)),
        ("rabbitmq_channels", Kind::Gauge, "Channels currently open", plain(channels as f64)),
        ("rabbitmq_consumers", Kind::Gauge, "Consumers currently connected", plain(consumers as f64)),
        ("rabbitmq_queues", Kind::Gauge, "Queues available", plain(queues as f64)),
        ("rabbitmq_queue_messages_ready", Kind::Gauge, "Messages ready to be delivered to consumers", pick(ready as f64, q_ready)),
        ("rabbitmq_queue_messages_unacked", Kind::Gauge, "Messages delivered to consumers but not yet acknowledged", pick(unacked as f64, q_unacked)),
        ("rabbitmq_queue_messages", Kind::Gauge, "Sum of ready and unacknowledged messages - total queue depth", pick((ready + unacked) as f64, q_messages)),
        ("rabbitmq_queue_consumers", Kind::Gauge, "Consumers on a queue", pick(consumers as f64, q_consumers)),
        ("rabbitmq_queue_messages_published_total", Kind::Counter, "Total number of messages published to queues", pick(q_published as f64, q_pub)),
        ("rabbitmq_global_messages_received_total", Kind::Counter, "Total number of messages received from publishers", amqp(published as f64)),
        ("rabbitmq_global_messages_received_confirm_total", Kind::Counter, "Total number of messages received from publishers expecting confirmations", amqp(m.received_confirm.load(Ordering::Relaxed) as f64)),
        ("rabbitmq_global_messages_confirmed_total", Kind::Counter, "Total number of messages confirmed to publishers", amqp(m.confirmed.load(Ordering::Relaxed) as f64)),
        ("rabbitmq_global_messages_unroutable_returned_total", Kind::Counter, "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", amqp(returned as f64)),
        ("rabbitmq_global_messages_delivered_total", Kind::Counter, "Total number of messages delivered to consumers", amqp(delivered as f64)),
        ("rabbitmq_global_messages_acknowledged_total", Kind::Counter, "Total number of messages acknowledged by consumers", amqp(acked as f64)),
        ("rabbitmq_resident_memory_limit_bytes", Kind::Gauge, "Memory high watermark in bytes", plain(b.config.memory_high_watermark as f64)),
        ("rabbitmq_disk_space_available_limit_bytes", Kind::Gauge, "Free disk space low watermark in bytes", plain(b.config.disk_free_limit as f64)),
        ("rabbitmq_disk_space_available_bytes", Kind::Gauge, "Disk space available in bytes", plain(crate::server::disk_free(&b.config.data_dir).unwrap_or(0) as f64)),
    ];
    write_families(w, fams);
}
