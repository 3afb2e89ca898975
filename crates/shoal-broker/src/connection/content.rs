//! A published message as it arrives: `basic.publish` starts it, the
//! content header and body frames complete it (a body in one frame is kept
//! as it was read, with no list of parts), and it then goes to the vhost,
//! with direct reply-to's `reply-to` rewritten, a return if unroutable and a
//! confirm if the channel is in confirm mode.

use super::{Chan, Conn, TxOp};
use crate::config::Access;
use crate::error::{code, AmqpError, AmqpResult};
use crate::fastpath::Head;
use crate::message::{Essentials, Message};
use crate::outbox::Out;
use crate::server::Broker;
use crate::store::Store;
use crate::vhost::{chan_key, Routed, VHost};
use amq_protocol::protocol::basic;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A message being received on a channel.
pub(super) struct Pending {
    exchange: String,
    routing_key: String,
    mandatory: bool,
    /// What the broker reads of the properties, once the header came.
    props: Option<Essentials>,
    /// The message's bytes as they come: the properties as sent (see
    /// [`crate::codec::Inbound::Header`]), then the body. Copied once, from
    /// the read buffer, and kept by the message.
    data: Vec<u8>,
    /// Bytes of properties at the start of `data`.
    props_len: usize,
    /// The body size the header announced.
    size: u64,
    /// Counted only once a body spans frames: a message that arrives in
    /// one frame is never held across reads and costs no shared counter.
    held: Option<HeldBody>,
}

/// Body bytes reserved for a message when its header comes, at most: a
/// larger body's buffer grows as it arrives (to twice what came, at most,
/// and what came is counted toward the memory alarm), so headers that
/// announce large bodies that never come hold no more than this each, past
/// their properties, on each of a connection's channels.
const BODY_RESERVED_AT_HEADER: u64 = 4 * 1024;

/// Body bytes of one message being received, counted in the broker's
/// [`crate::server::Metrics::assembling`] (and so toward the memory alarm)
/// until the message is complete or abandoned.
struct HeldBody {
    broker: Arc<Broker>,
    bytes: u64,
}

impl HeldBody {
    fn add(&mut self, n: u64) {
        self.bytes += n;
        let total = self
            .broker
            .metrics
            .assembling
            .fetch_add(n, Ordering::Relaxed)
            + n;
        // Bodies alone past the watermark: the alarm goes on now, not at
        // the next tick, which a fast client (or a loaded machine) would
        // outrun by tens of MiB. The tick clears it as usual.
        if total > self.broker.config.memory_high_watermark && !*self.broker.alarm.borrow() {
            tracing::warn!(
                receiving_bytes = total,
                "resource alarm set: message bodies being received pass the memory watermark; blocking publishers"
            );
            self.broker.alarm.send_replace(true);
        }
    }
}

impl Drop for HeldBody {
    fn drop(&mut self) {
        self.broker
            .metrics
            .assembling
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The channel content on `ch` is for, or None when that channel is closing
/// (its content is dropped).
fn content_chan(channels: &mut FxHashMap<u16, Chan>, ch: u16) -> AmqpResult<Option<&mut Chan>> {
    let c = channels
        .get_mut(&ch)
        .ok_or_else(|| AmqpError::channel_error(format!("content on closed channel {ch}")))?;
    Ok((!c.closing).then_some(c))
}

impl Conn {
    /// basic.publish: the message starts; its content follows.
    pub(super) fn on_publish(&mut self, ch: u16, p: basic::Publish) -> AmqpResult<()> {
        let ex = p.exchange.as_str();
        let c = self.chan_mut(ch)?;
        let cached = matches!(&c.write_ok, Some((e, true)) if e == ex);
        if !cached {
            self.allowed(ch, Access::Write, "exchange", ex)?;
            self.chan_mut(ch)?.write_ok = Some((ex.to_string(), true));
        }
        if p.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        self.chan_mut(ch)?.pending = Some(Pending {
            exchange: p.exchange.into(),
            routing_key: p.routing_key.into(),
            mandatory: p.mandatory,
            props: None,
            data: Vec::new(),
            props_len: 0,
            size: 0,
            held: None,
        });
        Ok(())
    }

    /// The channel a content frame comes on: an error if it is not open,
    /// `None` while it is closing (its content is dropped then).
    pub(super) fn on_header(&mut self, ch: u16, h: Head, raw: &[u8]) -> AmqpResult<()> {
        let max = self.broker.config.max_message_size;
        let Some(c) = content_chan(&mut self.channels, ch)? else {
            return Ok(());
        };
        let Some(p) = c.pending.as_mut() else {
            return Err(AmqpError::unexpected_frame(format!(
                "content header without basic.publish on channel {ch}"
            )));
        };
        if p.props.is_some() {
            return Err(AmqpError::unexpected_frame(format!(
                "second content header on channel {ch}"
            )));
        }
        if h.class_id != 60 {
            return Err(AmqpError::frame_error(format!(
                "content header class {} is not basic",
                h.class_id
            )));
        }
        if h.body_size > max {
            let e = AmqpError::precondition_failed(format!(
                "message size {} is larger than configured max size {max}",
                h.body_size
            ))
            .on(60, 40);
            self.soft_close(ch, e);
            return Ok(());
        }
        p.props = Some(h.props);
        p.size = h.body_size;
        let reserved = h.body_size.min(BODY_RESERVED_AT_HEADER) as usize;
        p.data = Vec::with_capacity(raw.len() + reserved);
        p.data.extend_from_slice(raw);
        p.props_len = raw.len();
        if p.size == 0 {
            self.complete(ch)?;
        }
        Ok(())
    }

    pub(super) fn on_body(&mut self, ch: u16, b: &[u8]) -> AmqpResult<()> {
        let broker = &self.broker;
        let Some(c) = content_chan(&mut self.channels, ch)? else {
            return Ok(());
        };
        let Some(p) = c.pending.as_mut().filter(|p| p.props.is_some()) else {
            return Err(AmqpError::unexpected_frame(format!(
                "content body without header on channel {ch}"
            )));
        };
        let had = (p.data.len() - p.props_len) as u64;
        let got = had + b.len() as u64;
        if got > p.size {
            return Err(AmqpError::frame_error(format!(
                "content body exceeds the announced size {} on channel {ch}",
                p.size
            )));
        }
        if got < p.size {
            p.held
                .get_or_insert_with(|| HeldBody {
                    broker: broker.clone(),
                    bytes: 0,
                })
                .add(b.len() as u64);
        }
        if p.data.capacity() - p.data.len() < b.len() {
            // Grow to twice what came, at most, and never past the
            // announced size, so the buffer ends as long as the message.
            let left = (p.size - had) as usize;
            p.data.reserve_exact(left.min(p.data.len().max(b.len())));
        }
        p.data.extend_from_slice(b);
        if got == p.size {
            self.complete(ch)?;
        }
        Ok(())
    }

    /// The message on `ch` is complete: its bytes are in its [`Pending`].
    pub(super) fn complete(&mut self, ch: u16) -> AmqpResult<()> {
        // One lookup of the channel for what is needed of it here.
        let c = self.chan_mut(ch)?;
        let Some(p) = c.pending.take() else {
            return Ok(());
        };
        let in_tx = c.tx.is_some();
        let props = p.props.unwrap_or_default();
        let (mut data, mut props_len) = (p.data, p.props_len);
        if let Err(e) = self.check_user_id(&data[..props_len]) {
            self.soft_close(ch, e.on(60, 40));
            return Ok(());
        }
        if props.direct_reply {
            // Direct reply-to: name this channel's reply consumer, as RabbitMQ.
            let token = self.vhost()?.lock().reply_token(chan_key(self.id, ch));
            let rewritten = token.and_then(|t| {
                let to = format!("{}{t}", crate::vhost::REPLY_TO_PREFIX);
                crate::message::with_reply_to(&data[..props_len], &to)
            });
            let Some(mut bytes) = rewritten else {
                let e = AmqpError::precondition_failed("fast reply consumer does not exist");
                self.soft_close(ch, e.on(60, 40));
                return Ok(());
            };
            props_len = bytes.len();
            bytes.extend_from_slice(&data[p.props_len..]);
            data = bytes;
        }
        let msg = Message::from_data(p.exchange, p.routing_key, props, data, props_len);
        // The vhost is lent out of `self` while the message goes to it (the
        // two calls below do not look for it there), not cloned: no shared
        // reference count to touch per message.
        let Some(v) = self.vhost.take() else {
            return Err(AmqpError::command_invalid("no vhost open"));
        };
        let done = if in_tx {
            self.hold_for_commit(ch, &v, msg, p.mandatory)
        } else {
            self.deliver_publish(ch, &v, msg, p.mandatory, None)
        };
        self.vhost = Some(v);
        match done {
            Ok(()) => Ok(()),
            Err(e) if e.hard => Err(e),
            Err(e) => {
                self.soft_close(ch, e.on(60, 40));
                Ok(())
            }
        }
    }

    /// A publish on a transactional channel: checked and routed now (an
    /// error closes the channel before anything of the transaction is
    /// applied), delivered at tx.commit.
    fn hold_for_commit(
        &mut self,
        ch: u16,
        v: &Arc<Mutex<VHost>>,
        msg: Message,
        mandatory: bool,
    ) -> AmqpResult<()> {
        let routed = v.lock().route_publish(&msg)?;
        if let Some(ops) = self.chan_mut(ch)?.tx.as_mut() {
            ops.push(TxOp::Publish(Box::new(msg), mandatory, routed));
        }
        Ok(())
    }

    /// Publish `msg` (routed now, or as `routed` says if it was routed at
    /// publish time in a transaction): metrics, the store's group commit,
    /// a return if unroutable and mandatory, a confirm in confirm mode.
    pub(super) fn deliver_publish(
        &mut self,
        ch: u16,
        v: &Arc<Mutex<VHost>>,
        msg: Message,
        mandatory: bool,
        routed: Option<Routed>,
    ) -> AmqpResult<()> {
        let c = self.chan_mut(ch)?;
        let confirm = c.confirm;
        if confirm {
            c.publish_seq += 1;
        }
        let seq = c.publish_seq;
        if confirm {
            self.broker
                .metrics
                .received_confirm
                .fetch_add(1, Ordering::Relaxed);
        }
        let returned = mandatory.then(|| Arc::new(msg.clone()));
        if self.store_hold.is_none() && msg.persistent() {
            // The syncer waits for the rest of what was read (group commit).
            self.store_hold = self.store.as_ref().map(Store::hold);
        }
        let res = match routed {
            Some(r) => v.lock().publish_routed(msg, r),
            None => v.lock().publish(msg)?,
        };
        self.broker
            .metrics
            .published
            .fetch_add(1, Ordering::Relaxed);
        if !res.routed {
            if let Some(msg) = returned {
                v.lock().stats.returned += 1;
                let _ = self.out.send(Out::Return {
                    ch,
                    code: code::NO_ROUTE,
                    text: "NO_ROUTE",
                    msg,
                });
            }
        }
        if confirm {
            if !res.rejected {
                self.broker
                    .metrics
                    .confirmed
                    .fetch_add(1, Ordering::Relaxed);
            }
            let store = &self.store;
            let synced = || store.as_ref().map_or(u64::MAX, |s| s.synced_seq());
            let _ = self
                .out
                .send_confirm(ch, seq, res.rejected, res.wait_seq, synced);
        }
        Ok(())
    }
}
