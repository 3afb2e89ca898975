//! A published message as the broker keeps it: exchange, routing key,
//! properties and body, shared by every queue it was routed to.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, parse_properties};
use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use std::sync::Arc;

/// An immutable message; queues hold `Arc<Message>`.
///
/// Kept compact because a queue may hold millions: the encoded properties
/// (as on the wire) and the body share one allocation, and only the fields
/// the broker needs on every message (delivery mode, priority, expiration)
/// are decoded up front; the rest is decoded on demand.
#[derive(Debug, Clone)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: Box<str>,
    /// Routing key it was published with.
    pub routing_key: Box<str>,
    data: Box<[u8]>,
    props_len: u32,
    delivery_mode: u8,
    priority: u8,
    expiration: Expiration,
}

#[derive(Debug, Clone, Copy)]
enum Expiration {
    None,
    Ms(u64),
    Invalid,
}

/// Shared message.
pub type MessageRef = Arc<Message>;

impl Message {
    /// Build from decoded properties and the body (given in parts); the
    /// properties are encoded here (for messages the broker makes itself).
    pub fn from_parts(
        exchange: &str,
        routing_key: &str,
        props: &BasicProperties,
        body: &[Bytes],
    ) -> Message {
        let mut raw = Vec::new();
        encode_properties_into(props, &mut raw);
        Self::from_wire(exchange, routing_key, props, &raw, body)
    }

    /// Build from properties as they came on the wire (`raw_props`, kept
    /// byte for byte and sent to consumers as they are, as RabbitMQ does)
    /// and their decoded form `props`, and the body in parts.
    pub fn from_wire<B: AsRef<[u8]>>(
        exchange: &str,
        routing_key: &str,
        props: &BasicProperties,
        raw_props: &[u8],
        body: &[B],
    ) -> Message {
        let size: usize = body.iter().map(|b| b.as_ref().len()).sum();
        let mut data = Vec::with_capacity(raw_props.len() + size);
        data.extend_from_slice(raw_props);
        let props_len = data.len() as u32;
        for b in body {
            data.extend_from_slice(b.as_ref());
        }
        let expiration = match props.expiration() {
            None => Expiration::None,
            Some(s) => s
                .as_str()
                .parse::<u64>()
                .map_or(Expiration::Invalid, Expiration::Ms),
        };
        Message {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            data: data.into_boxed_slice(),
            props_len,
            delivery_mode: props.delivery_mode().unwrap_or(1),
            priority: props.priority().unwrap_or(0),
            expiration,
        }
    }

    /// Build from decoded properties and one body slice.
    pub fn new(exchange: &str, routing_key: &str, props: &BasicProperties, body: &[u8]) -> Message {
        Self::from_parts(
            exchange,
            routing_key,
            props,
            &[Bytes::copy_from_slice(body)],
        )
    }

    /// Build from encoded properties (as stored) and the body; `None` if the
    /// properties do not decode.
    pub fn from_raw(
        exchange: &str,
        routing_key: &str,
        raw_props: &[u8],
        body: &[u8],
    ) -> Option<Message> {
        let (_, props) = parse_properties(raw_props).ok()?;
        Some(Self::from_wire(
            exchange,
            routing_key,
            &props,
            raw_props,
            &[body],
        ))
    }

    /// The properties as encoded on the wire (flags + fields).
    pub fn raw_properties(&self) -> &[u8] {
        &self.data[..self.props_len as usize]
    }

    /// Decode the full properties (for the rare paths that need them).
    pub fn properties(&self) -> BasicProperties {
        parse_properties(self.raw_properties())
            .map(|(_, p)| p)
            .unwrap_or_default()
    }

    /// Body bytes.
    pub fn body(&self) -> &[u8] {
        &self.data[self.props_len as usize..]
    }

    /// Delivery mode 2.
    pub fn persistent(&self) -> bool {
        self.delivery_mode == 2
    }

    /// Per-message TTL from the `expiration` property, in milliseconds.
    /// `Err` when the property is present but not a non-negative integer.
    pub fn expiration_ms(&self) -> Result<Option<u64>, String> {
        match self.expiration {
            Expiration::None => Ok(None),
            Expiration::Ms(ms) => Ok(Some(ms)),
            Expiration::Invalid => Err(format!(
                "invalid expiration {:?}",
                self.properties()
                    .expiration()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )),
        }
    }

    /// Priority property (0 if absent).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The message's headers table, if any (decoded on demand).
    pub fn headers(&self) -> Option<FieldTable> {
        self.properties().headers().clone()
    }
}

/// Append encoded properties (flags + fields) to `out`.
pub fn encode_properties_into(p: &BasicProperties, out: &mut Vec<u8>) {
    let buf = std::mem::take(out);
    *out = match gen_properties(p)(WriteContext::from(buf)) {
        Ok(ctx) => ctx.write,
        Err(e) => {
            tracing::error!(error = ?e, "properties encoding failed");
            Vec::new()
        }
    };
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
