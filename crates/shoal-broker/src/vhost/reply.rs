//! Direct reply-to (`amq.rabbitmq.reply-to`), as RabbitMQ has it: a channel
//! consumes the pseudo-queue in no-ack mode; a message it publishes with
//! `reply_to` `amq.rabbitmq.reply-to` has the property rewritten (by the
//! connection, see [`crate::message::with_reply_to`]) to
//! `amq.rabbitmq.reply-to.<token>`, and a publish of a reply to that routing
//! key on the default exchange goes straight to the consuming channel, from
//! any connection. Nothing is queued: a reply for a channel that is gone is
//! unroutable. The token is random and names one channel's reply consumer.

use super::*;

/// The pseudo-queue's name.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The prefix of a reply's routing key (the name plus a dot).
pub const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

impl VHost {
    /// basic.consume of the pseudo-queue on channel `key`.
    pub(super) fn consume_reply(
        &mut self,
        key: u64,
        tag: &str,
        no_ack: bool,
    ) -> AmqpResult<String> {
        if !no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        let mut token = random_suffix(24);
        while self.replies.contains_key(&token) {
            token = random_suffix(24);
        }
        let ch = self.chan(key)?;
        if ch.reply.is_some() {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        let tag = ch.claim_consumer_tag(tag, REPLY_TO)?;
        ch.reply = Some((Arc::from(tag.as_str()), token.clone()));
        self.replies.insert(token, key);
        Ok(tag)
    }

    /// The reply token of channel `key`'s reply consumer, if it has one.
    pub fn reply_token(&self, key: u64) -> Option<String> {
        self.channels
            .get(&key)
            .and_then(|c| c.reply.as_ref())
            .map(|(_, t)| t.clone())
    }

    /// Channel `key`'s reply consumer is cancelled or its channel closed.
    pub(super) fn drop_reply(&mut self, key: u64) {
        if let Some((_, token)) = self.channels.get_mut(&key).and_then(|c| c.reply.take()) {
            self.replies.remove(&token);
        }
    }

    /// Deliver a reply published to `amq.rabbitmq.reply-to.<token>`; false
    /// if no channel consumes with that token (unroutable).
    pub(super) fn publish_reply(&mut self, token: &str, msg: Message) -> bool {
        let Some(ch) = self
            .replies
            .get(token)
            .and_then(|k| self.channels.get_mut(k))
        else {
            return false;
        };
        let Some((consumer_tag, _)) = ch.reply.clone() else {
            return false;
        };
        let tag = ch.next_tag;
        ch.next_tag += 1;
        let sent = ch.out.send(Out::Deliver {
            ch: ch.id,
            consumer_tag,
            tag,
            redelivered: false,
            msg: Arc::new(msg),
        });
        if sent.is_ok() {
            self.stats.delivered += 1;
        }
        true
    }
}
