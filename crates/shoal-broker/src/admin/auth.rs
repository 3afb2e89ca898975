//! Who is asking: HTTP basic authentication against the broker's users
//! (the same accounts and loopback rule as AMQP logins), and what
//! RabbitMQ's user tags let a caller see and do in the management API.
//!
//! - `management`: the vhosts it has permissions in, its own connections
//!   and channels; writes checked against its AMQP permissions.
//! - `policymaker`: as `management`, and the policies of its vhosts.
//! - `monitoring`: also every vhost, connection and channel, and nodes.
//! - `administrator`: also users, permissions and definitions.
//!
//! No credentials or wrong ones: 401 with `WWW-Authenticate`; a user
//! without a management tag, or an action beyond its tags or permissions:
//! 401 without the challenge, as RabbitMQ 3.x's `not_authorised`.

use super::ApiError;
use crate::config::{Access, Accounts, Permission};
use base64::Engine;
use std::net::SocketAddr;
use std::sync::Arc;

/// How much a caller's tags allow, least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `management` (and `policymaker`).
    Management,
    /// `monitoring`.
    Monitoring,
    /// `administrator`.
    Administrator,
}

/// An authenticated caller.
pub struct Caller {
    /// User name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
    level: Level,
    accounts: Arc<Accounts>,
}

fn level_of(tags: &[String]) -> Option<Level> {
    tags.iter()
        .filter_map(|t| match t.as_str() {
            "administrator" => Some(Level::Administrator),
            "monitoring" => Some(Level::Monitoring),
            "management" | "policymaker" => Some(Level::Management),
            _ => None,
        })
        .max()
}

/// Check the `Authorization: Basic` header of a request from `peer`.
pub fn authenticate(
    header: Option<&hyper::header::HeaderValue>,
    peer: SocketAddr,
    accounts: Arc<Accounts>,
) -> Result<Caller, ApiError> {
    let creds = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let Some(creds) = creds else {
        return Err(ApiError::unauthorized("Not_Authorized"));
    };
    let (user, pass) = creds.split_once(':').unwrap_or((creds.as_str(), ""));
    let Some(u) = accounts.users.get(user) else {
        return Err(ApiError::unauthorized("Login failed"));
    };
    if !u.password.verify(pass) {
        return Err(ApiError::unauthorized("Login failed"));
    }
    if u.loopback_only && !peer.ip().is_loopback() {
        return Err(ApiError::unauthorized("User can only log in via localhost"));
    }
    let Some(level) = level_of(&u.tags) else {
        return Err(ApiError::not_authorised("Not management user"));
    };
    Ok(Caller {
        name: user.to_string(),
        tags: u.tags.clone(),
        level,
        accounts,
    })
}

impl Caller {
    /// Tagged `administrator`.
    pub fn is_admin(&self) -> bool {
        self.level == Level::Administrator
    }

    /// Tagged `monitoring` or `administrator`: sees everything.
    pub fn is_monitor(&self) -> bool {
        self.level >= Level::Monitoring
    }

    /// 401 (not_authorised) unless an administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not administrator user"))
        }
    }

    /// 401 (not_authorised) unless monitoring or administrator.
    pub fn require_monitor(&self) -> Result<(), ApiError> {
        if self.is_monitor() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not monitor user"))
        }
    }

    /// Whether objects of `vhost` are shown to this caller.
    pub fn sees_vhost(&self, vhost: &str) -> bool {
        self.is_monitor() || self.permission(vhost).is_some()
    }

    /// Whether a connection (or its channels, consumers) of `user` is shown.
    pub fn sees_user(&self, user: &str) -> bool {
        self.is_monitor() || user == self.name
    }

    /// Its permissions in `vhost`.
    pub fn permission(&self, vhost: &str) -> Option<&Permission> {
        self.accounts.permission(&self.name, vhost)
    }

    /// 401 (not_authorised) unless it may use `vhost` at all (has permissions there).
    pub fn require_vhost(&self, vhost: &str) -> Result<&Permission, ApiError> {
        self.permission(vhost).ok_or_else(|| {
            ApiError::not_authorised(format!(
                "access to vhost '{vhost}' refused for user '{}'",
                self.name
            ))
        })
    }

    /// 401 (not_authorised) unless its permissions in `vhost` allow `access` to `kind` `name`
    /// (RabbitMQ's AMQP permission check, with its wording).
    pub fn check(
        &self,
        vhost: &str,
        access: Access,
        kind: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let p = self.require_vhost(vhost)?;
        if p.allows(access, name) {
            Ok(())
        } else {
            Err(ApiError::not_authorised(format!(
                "access to {kind} '{name}' in vhost '{vhost}' refused for user '{}'",
                self.name
            )))
        }
    }
}
