//! A published message as the broker keeps it: exchange, routing key,
//! properties and body, shared by every queue it was routed to.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use std::sync::Arc;

/// An immutable message; queues hold `Arc<Message>`.
#[derive(Debug, Clone)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Content-header properties.
    pub properties: BasicProperties,
    /// Body bytes.
    pub body: Bytes,
}

/// Shared message.
pub type MessageRef = Arc<Message>;

impl Message {
    /// Delivery mode 2.
    pub fn persistent(&self) -> bool {
        *self.properties.delivery_mode() == Some(2)
    }

    /// Per-message TTL from the `expiration` property, in milliseconds.
    /// `Err` when the property is present but not a non-negative integer.
    pub fn expiration_ms(&self) -> Result<Option<u64>, String> {
        match self.properties.expiration() {
            None => Ok(None),
            Some(s) => s
                .as_str()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("invalid expiration {:?}", s.as_str())),
        }
    }

    /// Priority property (0 if absent).
    pub fn priority(&self) -> u8 {
        self.properties.priority().unwrap_or(0)
    }

    /// The message's headers table, if any.
    pub fn headers(&self) -> Option<&FieldTable> {
        self.properties.headers().as_ref()
    }

    /// Approximate bytes this message holds in memory.
    pub fn mem_size(&self) -> usize {
        std::mem::size_of::<Message>()
            + self.body.len()
            + self.exchange.len()
            + self.routing_key.len()
    }
}

/// Read an integer-ish AMQP value (clients send ttl/lengths as any int type).
pub fn value_as_i64(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(x) => Some(i64::from(*x)),
        AMQPValue::ShortShortUInt(x) => Some(i64::from(*x)),
        AMQPValue::ShortInt(x) => Some(i64::from(*x)),
        AMQPValue::ShortUInt(x) => Some(i64::from(*x)),
        AMQPValue::LongInt(x) => Some(i64::from(*x)),
        AMQPValue::LongUInt(x) => Some(i64::from(*x)),
        AMQPValue::LongLongInt(x) => Some(*x),
        AMQPValue::Timestamp(x) => i64::try_from(*x).ok(),
        _ => None,
    }
}

/// Read a string-ish AMQP value.
pub fn value_as_str(v: &AMQPValue) -> Option<&str> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str()),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
