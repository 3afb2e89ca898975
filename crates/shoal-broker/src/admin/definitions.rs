//! `/api/definitions[/{vhost}]`: export (GET) and import (POST) of
//! exchanges, queues and bindings in RabbitMQ's definitions format.
//!
//! Users, vhosts and permissions come from the broker's configuration file:
//! they are exported, and an import may name them only as they are
//! configured (a user or vhost that is not configured is a 400). Policies
//! and parameters do not exist in Shoal: an import that carries any is a
//! 400, so nothing is silently dropped.

use super::json::{json_to_table, table_to_json};
use super::views::{permissions, users, RABBITMQ_VERSION};
use super::{ApiError, Reply};
use crate::exchange::Dest;
use crate::server::Broker;
use serde::Deserialize;
use serde_json::{json, Value};

/// Export the definitions of every vhost, or of one (`only`; the objects
/// then carry no `vhost` field, as RabbitMQ's per-vhost export).
pub fn export(b: &Broker, only: Option<&str>) -> Value {
    let (mut queues, mut exchanges, mut bindings) = (vec![], vec![], vec![]);
    let mut names: Vec<&String> = b
        .vhosts
        .keys()
        .filter(|n| only.is_none_or(|o| o == *n))
        .collect();
    names.sort();
    for vname in &names {
        let g = b.vhosts[*vname].lock();
        let with_vhost = |mut v: Value| {
            if only.is_none() {
                v["vhost"] = json!(vname);
            }
            v
        };
        let mut qs: Vec<_> = g
            .queues
            .values()
            .filter(|q| q.durable && q.exclusive_owner.is_none())
            .collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in &qs {
            queues.push(with_vhost(
                json!({"name": &*q.name, "durable": true, "auto_delete": q.auto_delete,
                "arguments": table_to_json(&q.arguments)}),
            ));
        }
        let mut xs: Vec<_> = g
            .exchanges
            .values()
            .filter(|x| x.durable && !x.name.starts_with("amq."))
            .collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in &xs {
            exchanges.push(with_vhost(json!({"name": x.name, "type": x.kind.as_str(), "durable": true,
                "auto_delete": x.auto_delete, "internal": x.internal, "arguments": table_to_json(&x.arguments)})));
        }
        let mut all: Vec<_> = g.exchanges.values().filter(|x| x.durable).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        for x in all {
            for bd in &x.bindings {
                let (dtype, dname, durable) = match &bd.dest {
                    Dest::Queue(q) => (
                        "queue",
                        q,
                        g.queues
                            .get(q)
                            .is_some_and(|q| q.durable && q.exclusive_owner.is_none()),
                    ),
                    Dest::Exchange(e) => {
                        ("exchange", e, g.exchanges.get(e).is_some_and(|e| e.durable))
                    }
                };
                if durable {
                    bindings.push(with_vhost(
                        json!({"source": x.name, "destination": dname, "destination_type": dtype,
                        "routing_key": bd.key, "arguments": table_to_json(&bd.args)}),
                    ));
                }
            }
        }
    }
    let mut doc = json!({
        "rabbit_version": RABBITMQ_VERSION, "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "Shoal", "product_version": env!("CARGO_PKG_VERSION"),
        "queues": queues, "exchanges": exchanges, "bindings": bindings,
        "policies": [], "parameters": [],
    });
    if only.is_none() {
        doc["users"] = json!(users(b));
        doc["vhosts"] = json!(names
            .iter()
            .map(|n| json!({"name": n, "limits": [], "metadata": {"description": "", "tags": []}}))
            .collect::<Vec<_>>());
        doc["permissions"] = json!(permissions(b, None, None));
        doc["topic_permissions"] = json!([]);
        doc["global_parameters"] = json!([]);
    }
    doc
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct Perm {
    user: String,
    vhost: String,
    configure: String,
    write: String,
    read: String,
}

#[derive(Deserialize)]
struct ImpQueue {
    name: String,
    vhost: Option<String>,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct ImpExchange {
    name: String,
    vhost: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct ImpBinding {
    source: String,
    vhost: Option<String>,
    destination: String,
    destination_type: String,
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    users: Vec<Named>,
    #[serde(default)]
    vhosts: Vec<Named>,
    #[serde(default)]
    permissions: Vec<Perm>,
    #[serde(default)]
    policies: Vec<Value>,
    #[serde(default)]
    parameters: Vec<Value>,
    #[serde(default)]
    queues: Vec<ImpQueue>,
    #[serde(default)]
    exchanges: Vec<ImpExchange>,
    #[serde(default)]
    bindings: Vec<ImpBinding>,
}

/// Import `body` (into vhost `only` for objects that name none): checks
/// the whole document first, then declares exchanges, queues and bindings
/// as RabbitMQ does (an existing, equivalent object is left as it is).
pub fn import(b: &Broker, only: Option<&str>, body: &[u8]) -> Result<Reply, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let doc: Doc = serde_path_to_error::deserialize(de).map_err(|e| {
        ApiError::bad_request(format!("definitions: {} at {}", e.inner(), e.path()))
    })?;
    let a = b.accounts();
    for u in &doc.users {
        if !a.users.contains_key(&u.name) {
            return Err(ApiError::bad_request(format!("user '{}' is not in the broker's configuration file (users, vhosts and permissions are configured there)", u.name)));
        }
    }
    for v in &doc.vhosts {
        if !b.vhosts.contains_key(&v.name) {
            return Err(ApiError::bad_request(format!("vhost '{}' is not in the broker's configuration file (users, vhosts and permissions are configured there)", v.name)));
        }
    }
    for p in &doc.permissions {
        let same = a
            .permissions
            .get(&(p.user.clone(), p.vhost.clone()))
            .is_some_and(|c| c.patterns == [p.configure.clone(), p.write.clone(), p.read.clone()]);
        if !same {
            return Err(ApiError::bad_request(format!("permissions of user '{}' in vhost '{}' differ from the broker's configuration file (users, vhosts and permissions are configured there)", p.user, p.vhost)));
        }
    }
    if !doc.policies.is_empty() || !doc.parameters.is_empty() {
        return Err(ApiError::bad_request(
            "policies and parameters are not supported by Shoal; remove them from the definitions",
        ));
    }
    let vname = |v: &Option<String>| -> Result<String, ApiError> {
        let n = v.as_deref().or(only).unwrap_or("/").to_string();
        if b.vhosts.contains_key(&n) {
            Ok(n)
        } else {
            Err(ApiError::bad_request(format!(
                "vhost '{n}' is not in the broker's configuration file"
            )))
        }
    };
    let args = |v: &Value, what: &str| json_to_table(v, what).map_err(ApiError::bad_request);
    for x in &doc.exchanges {
        let v = vname(&x.vhost)?;
        let a = args(&x.arguments, "exchange arguments")?;
        b.vhosts[&v].lock().declare_exchange(
            &x.name,
            &x.kind,
            false,
            x.durable,
            x.auto_delete,
            x.internal,
            a,
        )?;
    }
    for q in &doc.queues {
        let v = vname(&q.vhost)?;
        let a = args(&q.arguments, "queue arguments")?;
        b.vhosts[&v]
            .lock()
            .declare_queue(0, &q.name, false, q.durable, false, q.auto_delete, a)?;
    }
    for bd in &doc.bindings {
        let v = vname(&bd.vhost)?;
        let dest = match bd.destination_type.as_str() {
            "queue" => Dest::Queue(bd.destination.clone()),
            "exchange" => Dest::Exchange(bd.destination.clone()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "destination_type must be \"queue\" or \"exchange\", not {other:?}"
                )))
            }
        };
        let a = args(&bd.arguments, "binding arguments")?;
        b.vhosts[&v]
            .lock()
            .bind(0, &bd.source, dest, &bd.routing_key, a)?;
    }
    Ok(Reply::no_content())
}
