//! `/api/policies[/{vhost}[/{name}]]`: RabbitMQ's policies, as
//! `rabbitmqadmin declare|list|delete policy` use them. Reading and
//! writing take the `policymaker` or `administrator` tag, and a
//! policymaker only in vhosts it has permissions in, as RabbitMQ.

use super::auth::Caller;
use super::writes::vhost;
use super::{ApiError, Reply};
use crate::server::Broker;
use crate::vhost::Policy;
use serde_json::{json, Value};

/// 401 unless `c` may see and change the policies of `vhost`.
fn allowed(c: &Caller, vhost: &str) -> Result<(), ApiError> {
    if c.is_admin() || (c.tags.iter().any(|t| t == "policymaker") && c.permission(vhost).is_some())
    {
        Ok(())
    } else {
        Err(ApiError::not_authorised("Not policymaker user"))
    }
}

/// The policies of every vhost the caller may see (or of `only`), sorted
/// by vhost and name, each with its `vhost`.
pub fn list(b: &Broker, c: &Caller, only: Option<&str>) -> Result<Vec<Value>, ApiError> {
    if let Some(v) = only {
        vhost(b, v)?;
        allowed(c, v)?;
    } else if !c.is_admin() && !c.tags.iter().any(|t| t == "policymaker") {
        return Err(ApiError::not_authorised("Not policymaker user"));
    }
    let vhosts = b.vhosts();
    let mut names: Vec<&String> = vhosts
        .keys()
        .filter(|n| only.is_none_or(|o| o == *n) && allowed(c, n).is_ok())
        .collect();
    names.sort();
    let mut rows = Vec::new();
    for n in names {
        for p in vhosts[n].lock().policies() {
            let mut row = json!({"vhost": n});
            if let (Value::Object(r), Value::Object(pj)) = (&mut row, p.to_json()) {
                r.extend(pj);
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// `GET /api/policies/{vhost}/{name}`.
pub fn get(b: &Broker, c: &Caller, v: &str, name: &str) -> Result<Reply, ApiError> {
    list(b, c, Some(v))?
        .into_iter()
        .find(|r| r["name"].as_str() == Some(name))
        .map(Reply::json)
        .ok_or_else(ApiError::not_found)
}

/// `PUT /api/policies/{vhost}/{name}`: 201 when new, 204 when replaced.
pub fn put(b: &Broker, c: &Caller, v: &str, name: &str, body: &Value) -> Result<Reply, ApiError> {
    let vh = b.vhost(v).ok_or_else(|| {
        ApiError::new(hyper::StatusCode::NOT_FOUND, "not_found", "vhost_not_found")
    })?;
    allowed(c, v)?;
    let p = Policy::from_json(name, body).map_err(ApiError::bad_request)?;
    Ok(if vh.lock().put_policy(p) {
        Reply::created()
    } else {
        Reply::no_content()
    })
}

/// `DELETE /api/policies/{vhost}/{name}`: 204, or 404 if there is none.
pub fn delete(b: &Broker, c: &Caller, v: &str, name: &str) -> Result<Reply, ApiError> {
    let vh = vhost(b, v)?;
    allowed(c, v)?;
    if vh.lock().delete_policy(name) {
        Ok(Reply::no_content())
    } else {
        Err(ApiError::not_found())
    }
}
