//! RabbitMQ's health-check endpoints (`/api/health/checks/...`) and the
//! aliveness test: 200 `{"status":"ok"}` when the check passes, 503 with
//! `{"status":"failed","reason":...}` when it does not.

use super::views::node_name;
use super::writes::vhost;
use super::{ApiError, Reply};
use crate::server::Broker;
use crate::vhost::AckMode;
use hyper::StatusCode;
use serde_json::{json, Value};

fn failed(mut body: Value) -> Reply {
    body["status"] = json!("failed");
    Reply::with_status(StatusCode::SERVICE_UNAVAILABLE, body)
}

fn alarms(b: &Broker) -> Reply {
    if !*b.alarm.borrow() {
        return Reply::json(json!({"status": "ok"}));
    }
    let disk =
        crate::server::disk_free(&b.config.data_dir).is_some_and(|f| f < b.config.disk_free_limit);
    let resource = if disk { "disk" } else { "memory" };
    failed(json!({
        "reason": "There are alarms in effect in the cluster",
        "alarms": [{"node": node_name(b), "resource": resource}],
    }))
}

/// The protocol names RabbitMQ accepts for `protocol-listener`, mapped to
/// Shoal's listeners.
fn protocol_of(name: &str) -> Option<&'static str> {
    match name {
        "amqp" | "amqp091" | "amqp0-9-1" | "amqp0.9.1" => Some("amqp"),
        "http" | "management" => Some("http"),
        _ => None,
    }
}

/// `/api/health/checks/{rest}`.
pub fn check(b: &Broker, rest: &[&str]) -> Result<Reply, ApiError> {
    let admin = b.config.admin_listen;
    let ports: Vec<u16> = std::iter::once(b.config.listen.port())
        .chain(admin.map(|a| a.port()))
        .collect();
    Ok(match rest {
        ["alarms"] | ["local-alarms"] => alarms(b),
        ["virtual-hosts"] | ["node-is-quorum-critical"] | ["node-is-mirror-sync-critical"] => {
            // Every configured vhost is open for the broker's lifetime;
            // there are no mirrored or quorum queues to lose.
            Reply::json(json!({"status": "ok"}))
        }
        ["port-listener", port] => {
            let p: u16 = port
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{port:?} is not a port number")))?;
            if ports.contains(&p) {
                Reply::json(json!({"status": "ok", "port": p}))
            } else {
                failed(json!({"reason": "No active listener", "missing": p, "ports": ports}))
            }
        }
        ["protocol-listener", proto] => match protocol_of(proto) {
            Some("http") if admin.is_none() => failed(
                json!({"reason": "No active listener", "missing": proto, "protocols": ["amqp"]}),
            ),
            Some(_) => Reply::json(json!({"status": "ok", "protocol": proto})),
            None => failed(json!({
                "reason": "No active listener", "missing": proto,
                "protocols": if admin.is_some() { json!(["amqp", "http"]) } else { json!(["amqp"]) },
            })),
        },
        _ => return Err(ApiError::not_found()),
    })
}

/// `/api/aliveness-test/{vhost}`: declare the queue `aliveness-test`,
/// publish a message to it and get it back.
pub fn aliveness(b: &Broker, v: &str) -> Result<Reply, ApiError> {
    const Q: &str = "aliveness-test";
    let vh = vhost(b, v)?;
    let mut g = vh.lock();
    g.declare_queue(0, Q, false, false, false, false, Default::default())?;
    let props = amq_protocol::protocol::BasicProperties::default();
    g.publish(crate::message::Message::new("", Q, &props, b"test_message"))?;
    let got = g.get_for_api(Q, 1, AckMode::AckRequeueFalse)?;
    Ok(match got.first() {
        Some(m) if m.msg.body() == b"test_message" => Reply::json(json!({"status": "ok"})),
        _ => failed(json!({"reason": "the test message did not come back"})),
    })
}
