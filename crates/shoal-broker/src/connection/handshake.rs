//! The connection handshake, from `connection.start` to `connection.open-ok`:
//! server properties and capabilities, SASL PLAIN and AMQPLAIN logins,
//! tuning, the vhost check; and the connection-level methods after it
//! (close, blocked, update-secret).

use super::{Conn, State, Step};
use crate::error::{AmqpError, AmqpResult};
use crate::message::value_as_str;
use crate::outbox::Out;
use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Conn {
    pub(super) fn send_start(&self) {
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
            "consumer_priorities",
            "direct_reply_to",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        props.insert("product".into(), s("Shoal"));
        props.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
        props.insert("platform".into(), s("Rust"));
        // RabbitMQ sends one too; some clients show it.
        props.insert(
            "copyright".into(),
            s("Copyright (c) the Shoal authors; MIT OR Apache-2.0"),
        );
        props.insert("information".into(), s("AMQP 0-9-1 broker, part of Shoal"));
        props.insert("cluster_name".into(), s("shoal"));
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        self.send_conn(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: props,
            mechanisms: "PLAIN AMQPLAIN".into(),
            locales: "en_US".into(),
        }));
    }

    pub(super) fn on_connection_method(&mut self, method: AMQPClass) -> AmqpResult<Step> {
        let (cid, mid) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let AMQPClass::Connection(cm) = method else {
            return Err(
                AmqpError::command_invalid("non-connection method on channel 0").on(cid, mid),
            );
        };
        match (&self.state, cm) {
            (State::Closing, connection::AMQPMethod::CloseOk(_)) => Ok(Step::Stop),
            (State::Closing, connection::AMQPMethod::Close(_)) => {
                self.send_conn(connection::AMQPMethod::CloseOk(connection::CloseOk {}));
                Ok(Step::Stop)
            }
            (State::Closing, _) => Ok(Step::Continue),
            (State::StartOk, connection::AMQPMethod::StartOk(s)) => match self.on_start_ok(s) {
                Ok(()) => Ok(Step::Continue),
                // Clients without `authentication_failure_close` expect the
                // socket to be closed on a failed login, as the spec says.
                Err(_) if !self.auth_failure_close => Ok(Step::Stop),
                Err(e) => Err(e.on(cid, mid)),
            },
            (State::TuneOk, connection::AMQPMethod::TuneOk(t)) => {
                if t.frame_max != 0 {
                    if t.frame_max < 4096 {
                        return Err(AmqpError::not_allowed(format!(
                            "frame_max={} < 4096",
                            t.frame_max
                        ))
                        .on(cid, mid));
                    }
                    self.frame_max = self.frame_max.min(t.frame_max);
                }
                if t.channel_max != 0 {
                    self.channel_max = self.channel_max.min(t.channel_max);
                }
                self.heartbeat = t.heartbeat;
                self.params
                    .frame_max
                    .store(self.frame_max, Ordering::Relaxed);
                self.params
                    .heartbeat
                    .store(u32::from(self.heartbeat), Ordering::Relaxed);
                self.state = State::Open;
                Ok(Step::Continue)
            }
            (State::Open, connection::AMQPMethod::Open(o)) => {
                let name = o.virtual_host.as_str().to_string();
                let Some(v) = self.broker.vhost(&name) else {
                    return Err(
                        AmqpError::not_allowed(format!("vhost {name} not found")).on(cid, mid)
                    );
                };
                self.perm_gen = self.broker.accounts_generation();
                let perm = self
                    .broker
                    .accounts()
                    .permission(&self.user, &name)
                    .cloned();
                let Some(perm) = perm else {
                    return Err(AmqpError::not_allowed(format!(
                        "access to vhost '{name}' refused for user '{}'",
                        self.user
                    ))
                    .on(cid, mid));
                };
                self.permission = Some(perm);
                let store = v.lock().store.clone();
                let _ = self.out.send(Out::UseStore(store.synced()));
                self.store = Some(store);
                let (kv, id) = (Arc::downgrade(&v), self.id);
                let _ = self
                    .out
                    .send(Out::UseKick(crate::outbox::Kick(Arc::new(move || {
                        if let Some(v) = kv.upgrade() {
                            v.lock().kick_connection(id);
                        }
                    }))));
                self.vhost = Some(v);
                self.vhost_name = name.clone();
                let tuned = crate::server::Tuned {
                    frame_max: self.frame_max,
                    channel_max: self.channel_max,
                    heartbeat: self.heartbeat,
                };
                self.broker.conn_update(self.id, &self.user, &name, tuned);
                self.state = State::Running;
                self.pre_login.done();
                self.send_conn(connection::AMQPMethod::OpenOk(connection::OpenOk {}));
                Ok(Step::Continue)
            }
            (State::Running, connection::AMQPMethod::Close(c)) => {
                tracing::debug!(peer = %self.peer, code = c.reply_code, text = %c.reply_text, "client closed connection");
                if let Some(v) = &self.vhost {
                    v.lock().connection_closed(self.id);
                }
                self.send_conn(connection::AMQPMethod::CloseOk(connection::CloseOk {}));
                Ok(Step::Stop)
            }
            (_, connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_)) => {
                Ok(Step::Continue)
            }
            (State::Running, connection::AMQPMethod::UpdateSecret(_)) => {
                self.send_conn(connection::AMQPMethod::UpdateSecretOk(
                    connection::UpdateSecretOk {},
                ));
                Ok(Step::Continue)
            }
            (_, other) => Err(AmqpError::command_invalid(format!(
                "unexpected connection method {other:?} in state {:?}",
                self.state
            ))
            .on(cid, mid)),
        }
    }

    fn on_start_ok(&mut self, s: connection::StartOk) -> AmqpResult<()> {
        if let Some(AMQPValue::FieldTable(caps)) = s.client_properties.inner().get("capabilities") {
            let flag = |k: &str| {
                caps.inner()
                    .get(k)
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false)
            };
            self.cancel_notify = flag("consumer_cancel_notify");
            self.blocked_cap = flag("connection.blocked");
            self.auth_failure_close = flag("authentication_failure_close");
        }
        let mech = s.mechanism.as_str();
        let creds = match mech {
            "PLAIN" => parse_plain(s.response.as_bytes()),
            "AMQPLAIN" => parse_amqplain(s.response.as_bytes()),
            other => {
                return Err(AmqpError::access_refused_hard(format!(
                    "unsupported authentication mechanism '{other}' (use PLAIN or AMQPLAIN)"
                )))
            }
        };
        let accounts = self.broker.accounts();
        let ok = creds.as_ref().and_then(|(u, p)| {
            let user = accounts.users.get(u)?;
            if !user.password.verify(p) {
                return None;
            }
            if user.loopback_only && !self.peer.ip().is_loopback() {
                return None;
            }
            Some(u.clone())
        });
        match ok {
            Some(u) => {
                self.user = u;
                self.broker.conn_login(self.id, mech, &s.client_properties);
            }
            None => {
                self.broker
                    .metrics
                    .auth_failures
                    .fetch_add(1, Ordering::Relaxed);
                let who = creds.map(|c| c.0).unwrap_or_default();
                tracing::info!(peer = %self.peer, user = %who, "login refused");
                return Err(AmqpError::access_refused_hard(format!(
                    "Login was refused using authentication mechanism {mech}. For details see the broker logfile."
                )));
            }
        }
        self.state = State::TuneOk;
        self.send_conn(connection::AMQPMethod::Tune(connection::Tune {
            channel_max: self.channel_max,
            frame_max: self.frame_max,
            heartbeat: self.heartbeat,
        }));
        Ok(())
    }
}

/// SASL PLAIN: `authzid \0 user \0 password`.
fn parse_plain(resp: &[u8]) -> Option<(String, String)> {
    let mut parts = resp.split(|b| *b == 0);
    let _authz = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let pass = std::str::from_utf8(parts.next()?).ok()?;
    Some((user.to_string(), pass.to_string()))
}

/// AMQPLAIN: a field table (without its length prefix) with LOGIN and PASSWORD.
fn parse_amqplain(resp: &[u8]) -> Option<(String, String)> {
    use amq_protocol::types::parsing::parse_field_table;
    let mut framed = Vec::with_capacity(resp.len() + 4);
    framed.extend_from_slice(&(resp.len() as u32).to_be_bytes());
    framed.extend_from_slice(resp);
    // The response is a long string, so the frame check did not walk it.
    if crate::nesting::check_table(&framed).is_err() || crate::nesting::check_table(resp).is_err() {
        return None;
    }
    let table = match parse_field_table(&framed[..]) {
        Ok((_, t)) => t,
        Err(_) => parse_field_table(resp).ok()?.1,
    };
    let get = |k: &str| {
        table
            .inner()
            .get(k)
            .and_then(value_as_str)
            .map(str::to_string)
    };
    Some((get("LOGIN")?, get("PASSWORD")?))
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn sasl_parsers() {
        assert_eq!(
            parse_plain(b"\0guest\0guest"),
            Some(("guest".into(), "guest".into()))
        );
        assert_eq!(parse_plain(b"guest"), None);
        let mut t = FieldTable::default();
        t.insert("LOGIN".into(), AMQPValue::LongString("u".into()));
        t.insert("PASSWORD".into(), AMQPValue::LongString("p".into()));
        let mut enc = amq_protocol::types::generation::gen_field_table(&t)(
            amq_protocol::frame::WriteContext::from(Vec::new()),
        )
        .unwrap()
        .write;
        // With the table's own length prefix (some clients) and without (the spec).
        assert_eq!(parse_amqplain(&enc), Some(("u".into(), "p".into())));
        let bare = enc.split_off(4);
        assert_eq!(parse_amqplain(&bare), Some(("u".into(), "p".into())));
    }
}
