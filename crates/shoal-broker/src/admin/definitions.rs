//! `/api/definitions[/{vhost}]`: export (GET) and import (POST) of
//! exchanges, queues and bindings in RabbitMQ's definitions format.
//!
//! Users, vhosts and permissions are exported (configured and runtime
//! ones; passwords as RabbitMQ's salted hashes) and imported as the
//! management API's writes create them; an entry that the configuration
//! file defines is left as configured (a permission that differs from the
//! file's is a 400). Policies are exported and imported (an invalid one is
//! a 400 before anything changes); parameters do not exist in Shoal: an
//! import that carries any is a 400, so nothing is silently dropped.

use super::json::{json_to_table, table_to_json};
use super::users::user_fields;
use super::views::{permissions, users, RABBITMQ_VERSION};
use super::{ApiError, Reply};
use crate::exchange::Dest;
use crate::server::Broker;
use crate::vhost::{Policy, VHost};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Export the definitions of every vhost, or of one (`only`; the objects
/// then carry no `vhost` field, as RabbitMQ's per-vhost export).
pub fn export(b: &Broker, only: Option<&str>) -> Value {
    let (mut queues, mut exchanges, mut bindings) = (vec![], vec![], vec![]);
    let mut policies = vec![];
    let vhosts = b.vhosts();
    let mut names: Vec<&String> = vhosts
        .keys()
        .filter(|n| only.is_none_or(|o| o == *n))
        .collect();
    names.sort();
    for vname in &names {
        let g = vhosts[*vname].lock();
        let with_vhost = |mut v: Value| {
            if only.is_none() {
                v["vhost"] = json!(vname);
            }
            v
        };
        for p in g.policies() {
            policies.push(with_vhost(p.to_json()));
        }
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
        "policies": policies, "parameters": [],
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
    users: Vec<Value>,
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
    // Users, vhosts and permissions change together, or not at all.
    let file = b.file_accounts();
    let mut users = Vec::new();
    for (i, u) in doc.users.iter().enumerate() {
        let name = u["name"].as_str().ok_or_else(|| {
            ApiError::bad_request(format!("definitions: users[{i}].name missing"))
        })?;
        let (secret, tags) = user_fields(u, false)?;
        if !file.users.contains_key(name) {
            users.push((name, secret, tags));
        }
    }
    let mut perms = Vec::new();
    for p in &doc.permissions {
        match file.permissions.get(&(p.user.clone(), p.vhost.clone())) {
            Some(c) if c.patterns == [p.configure.clone(), p.write.clone(), p.read.clone()] => {}
            Some(_) => return Err(ApiError::bad_request(format!("permissions of user '{}' in vhost '{}' differ from the broker's configuration file, where they are defined", p.user, p.vhost))),
            None => perms.push(p),
        }
    }
    if !doc.parameters.is_empty() {
        return Err(ApiError::bad_request(
            "parameters are not supported by Shoal; remove them from the definitions",
        ));
    }
    let mut policies = Vec::new();
    for (i, p) in doc.policies.iter().enumerate() {
        let name = p["name"].as_str().ok_or_else(|| {
            ApiError::bad_request(format!("definitions: policies[{i}].name missing"))
        })?;
        let policy = Policy::from_json(name, p)
            .map_err(|e| ApiError::bad_request(format!("definitions: policy '{name}': {e}")))?;
        policies.push((p["vhost"].as_str().map(str::to_string), policy));
    }
    let vhosts: Vec<&str> = doc.vhosts.iter().map(|v| v.name.as_str()).collect();
    let perms: Vec<_> = perms
        .iter()
        .map(|p| {
            let pats = [p.configure.as_str(), p.write.as_str(), p.read.as_str()];
            (p.user.as_str(), p.vhost.as_str(), pats)
        })
        .collect();
    b.import_accounts(users, &vhosts, &perms)?;
    let vname = |v: &Option<String>| -> Result<Arc<Mutex<VHost>>, ApiError> {
        let n = v.as_deref().or(only).unwrap_or("/");
        b.vhost(n)
            .ok_or_else(|| ApiError::bad_request(format!("definitions: no vhost '{n}'")))
    };
    let args = |v: &Value, what: &str| json_to_table(v, what).map_err(ApiError::bad_request);
    for (v, p) in policies {
        vname(&v)?.lock().put_policy(p);
    }
    for x in &doc.exchanges {
        let v = vname(&x.vhost)?;
        let a = args(&x.arguments, "exchange arguments")?;
        v.lock().declare_exchange(
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
        v.lock()
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
        v.lock().bind(0, &bd.source, dest, &bd.routing_key, a)?;
    }
    Ok(Reply::no_content())
}
