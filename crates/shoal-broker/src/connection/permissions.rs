//! Permission checks on a connection, as RabbitMQ's channel makes them:
//! a check that passed on a channel is remembered (the last
//! [`PERMISSION_CACHE`]) and not made again; any other is made against the
//! permissions in force, looked up again whenever the broker's users or
//! permissions changed (SIGHUP, the management API). So a change applies
//! to new channels and to resources a channel has not used yet.

use super::Conn;
use crate::config::Access;
use crate::error::{AmqpError, AmqpResult};

/// How many passed permission checks a channel remembers (RabbitMQ's
/// `MAX_PERMISSION_CACHE_SIZE`).
pub const PERMISSION_CACHE: usize = 12;

/// The checks that passed on one channel, most recent first: (access,
/// whether a queue, name).
#[derive(Default)]
pub(super) struct PermCache(Vec<(u8, bool, String)>);

impl PermCache {
    fn hit(&self, key: (u8, bool), name: &str) -> bool {
        self.0.iter().any(|(a, q, n)| (*a, *q) == key && n == name)
    }

    fn remember(&mut self, key: (u8, bool), name: &str) {
        self.0.insert(0, (key.0, key.1, name.to_string()));
        self.0.truncate(PERMISSION_CACHE);
    }
}

impl Conn {
    /// Whether the user may `access` `kind` `name` on channel `ch`: a check
    /// that passed on the channel before passes; others use the
    /// permissions in force (RabbitMQ's per-channel permission cache).
    pub(super) fn allowed(
        &mut self,
        ch: u16,
        access: Access,
        kind: &str,
        name: &str,
    ) -> AmqpResult<()> {
        let key = (access as u8, kind == "queue");
        if self
            .channels
            .get(&ch)
            .is_some_and(|c| c.perm_cache.hit(key, name))
        {
            return Ok(());
        }
        let gen = self.broker.accounts_generation();
        if gen != self.perm_gen {
            self.perm_gen = gen;
            self.permission = self
                .broker
                .accounts()
                .permission(&self.user, &self.vhost_name)
                .cloned();
        }
        if self
            .permission
            .as_ref()
            .is_some_and(|p| p.allows(access, name))
        {
            if let Some(c) = self.channels.get_mut(&ch) {
                c.perm_cache.remember(key, name);
            }
            return Ok(());
        }
        let what = match access {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        };
        Err(AmqpError::access_refused(format!(
            "{what} access to {kind} '{name}' in vhost '{}' refused for user '{}'",
            self.vhost_name, self.user
        )))
    }
}

impl Conn {
    /// RabbitMQ's check of a published message's `user-id` property: when
    /// set, it must name the connection's user, or the channel is closed
    /// 406 PRECONDITION_FAILED. `raw_props` are the properties as sent;
    /// they are decoded only when the flag of `user-id` is set.
    pub(super) fn check_user_id(&self, raw_props: &[u8]) -> AmqpResult<()> {
        const USER_ID_FLAG: u16 = 1 << 4;
        let flags = match raw_props {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        };
        if flags & USER_ID_FLAG == 0 {
            return Ok(());
        }
        let Ok((_, props)) = amq_protocol::protocol::basic::parse_properties(raw_props) else {
            return Ok(());
        };
        match props.user_id() {
            Some(u) if u.as_str() != self.user => Err(AmqpError::precondition_failed(format!(
                "user_id property set to '{}' but authenticated user was '{}'",
                u.as_str(),
                self.user
            ))),
            _ => Ok(()),
        }
    }
}
