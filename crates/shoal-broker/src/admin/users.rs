//! The management API's writes of users, vhosts and permissions
//! (`PUT`/`DELETE` on `/api/users/{name}`, `/api/vhosts/{name}` and
//! `/api/permissions/{vhost}/{user}`), administrators only, as RabbitMQ:
//! 201 created, 204 updated or deleted, 404 for what does not exist, 400
//! with the reason for a bad body, a bad pattern or a limit reached.

use super::auth::Caller;
use super::json::field_str;
use super::{ApiError, Reply};
use crate::accounts::{parse_tags, Secret, MAX_PASSWORD};
use crate::manage::Refused;
use crate::server::Broker;
use hyper::StatusCode;
use serde_json::Value;

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Invalid(why) => ApiError::bad_request(why),
            Refused::NotFound(_) => ApiError::not_found(),
            Refused::Store(why) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                why,
            ),
        }
    }
}

fn created_or_updated(created: bool) -> Reply {
    if created {
        Reply::created()
    } else {
        Reply::no_content()
    }
}

/// A user's password and tags from a `PUT /api/users` body or a
/// definitions entry: `password`, or `password_hash` with
/// `hashing_algorithm` as RabbitMQ exports them (neither: no password
/// login; both: 400, as RabbitMQ); `tags` a comma list or an array (`required`: as
/// RabbitMQ's API, which answers 400 without it).
pub fn user_fields(body: &Value, required: bool) -> Result<(Secret, Vec<String>), ApiError> {
    let secret = match (
        field_str(body, "password")?,
        field_str(body, "password_hash")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "both_password_and_password_hash_are_provided",
            ))
        }
        (Some(p), _) if p.len() > MAX_PASSWORD => {
            return Err(ApiError::bad_request(format!(
                "password is longer than {MAX_PASSWORD} bytes"
            )))
        }
        (Some(p), _) => Secret::hash(p),
        (None, Some(h)) => Secret::from_export(h, field_str(body, "hashing_algorithm")?)
            .map_err(ApiError::bad_request)?,
        (None, None) => Secret::None,
    };
    if required && body.get("tags").is_none() {
        return Err(ApiError::bad_request(
            "tags_not_present (tags is required: a comma-separated list, may be empty)",
        ));
    }
    let tags = parse_tags(body.get("tags")).map_err(ApiError::bad_request)?;
    Ok((secret, tags))
}

/// `PUT /api/users/{name}`.
pub fn put_user(b: &Broker, c: &Caller, name: &str, body: &Value) -> Result<Reply, ApiError> {
    c.require_admin()?;
    let (secret, tags) = user_fields(body, true)?;
    Ok(created_or_updated(b.put_user(name, &secret, tags)?))
}

/// `DELETE /api/users/{name}`: its connections are closed.
pub fn delete_user(b: &Broker, c: &Caller, name: &str) -> Result<Reply, ApiError> {
    c.require_admin()?;
    b.delete_user(name)?;
    Ok(Reply::no_content())
}

/// `PUT /api/vhosts/{name}` (`description`, `tags` and `tracing` are
/// accepted and not kept).
pub fn put_vhost(b: &Broker, c: &Caller, name: &str) -> Result<Reply, ApiError> {
    c.require_admin()?;
    Ok(created_or_updated(b.put_vhost(name)?))
}

/// `DELETE /api/vhosts/{name}`: its queues and messages go, its
/// connections are closed.
pub fn delete_vhost(b: &Broker, c: &Caller, name: &str) -> Result<Reply, ApiError> {
    c.require_admin()?;
    b.delete_vhost(name)?;
    Ok(Reply::no_content())
}

/// The three patterns of a permissions body or definitions entry.
pub fn patterns(body: &Value) -> Result<[&str; 3], ApiError> {
    let get = |k: &str| {
        field_str(body, k)?.ok_or_else(|| ApiError::bad_request(format!("key_missing: {k}")))
    };
    Ok([get("configure")?, get("write")?, get("read")?])
}

/// `PUT /api/permissions/{vhost}/{user}`.
pub fn put_permission(
    b: &Broker,
    c: &Caller,
    vhost: &str,
    user: &str,
    body: &Value,
) -> Result<Reply, ApiError> {
    c.require_admin()?;
    Ok(created_or_updated(b.set_permission(
        user,
        vhost,
        patterns(body)?,
    )?))
}

/// `DELETE /api/permissions/{vhost}/{user}`.
pub fn delete_permission(
    b: &Broker,
    c: &Caller,
    vhost: &str,
    user: &str,
) -> Result<Reply, ApiError> {
    c.require_admin()?;
    b.clear_permission(user, vhost)?;
    Ok(Reply::no_content())
}
