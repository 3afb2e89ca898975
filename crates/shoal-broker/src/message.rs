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

/// The `expiration` property, as the broker reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiration {
    /// Absent.
    #[default]
    None,
    /// A non-negative integer of milliseconds.
    Ms(u64),
    /// Present but not a non-negative integer.
    Invalid,
}

impl Expiration {
    /// Read from the property's text.
    pub fn parse(s: Option<&str>) -> Expiration {
        match s {
            None => Expiration::None,
            Some(s) => s.parse::<u64>().map_or(Expiration::Invalid, Expiration::Ms),
        }
    }
}

/// The properties the broker reads on every message, decoded up front
/// (the rest stay encoded, as sent): small, so the frames of a publish
/// carry them without moving a whole [`BasicProperties`] around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Essentials {
    /// `delivery-mode` (absent: 0).
    pub delivery_mode: u8,
    /// `priority` (absent: 0).
    pub priority: u8,
    /// `expiration`.
    pub expiration: Expiration,
    /// `reply-to` is direct reply-to's pseudo-queue ([`crate::vhost::REPLY_TO`]).
    pub direct_reply: bool,
}

impl Essentials {
    /// Read from decoded properties.
    pub fn of(p: &BasicProperties) -> Essentials {
        Essentials {
            delivery_mode: p.delivery_mode().unwrap_or(0),
            priority: p.priority().unwrap_or(0),
            expiration: Expiration::parse(p.expiration().as_ref().map(|s| s.as_str())),
            direct_reply: p.reply_to().as_ref().map(|r| r.as_str()) == Some(crate::vhost::REPLY_TO),
        }
    }
}

/// Why RabbitMQ refuses an `expiration` that is not a non-negative
/// integer, in its words: Erlang's `string:to_integer` reads an optional
/// sign and digits, and what is left or a negative value is refused.
fn expiration_refusal(text: &str) -> String {
    let signed = text.strip_prefix(['+', '-']).map_or(0, |_| 1);
    let digits = text[signed..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    if digits == 0 {
        return "no_integer".to_string();
    }
    let (number, rest) = text.split_at(signed + digits);
    if !rest.is_empty() {
        return format!("{{leftover_string,\"{rest}\"}}");
    }
    let n = number
        .parse::<i128>()
        .map_or_else(|_| number.to_string(), |n| n.to_string());
    format!("{{value_negative,{n}}}")
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
        Self::from_wire(exchange, routing_key, Essentials::of(props), &raw, body)
    }

    /// Build from properties as they came on the wire (`raw_props`, kept
    /// byte for byte and sent to consumers as they are, as RabbitMQ does)
    /// and what the broker reads of them (`props`), and the body in parts.
    /// The names may be given as owned `String`s, which are then moved,
    /// not copied.
    pub fn from_wire<B: AsRef<[u8]>>(
        exchange: impl Into<Box<str>>,
        routing_key: impl Into<Box<str>>,
        props: Essentials,
        raw_props: &[u8],
        body: &[B],
    ) -> Message {
        let size: usize = body.iter().map(|b| b.as_ref().len()).sum();
        let mut data = Vec::with_capacity(raw_props.len() + size);
        data.extend_from_slice(raw_props);
        for b in body {
            data.extend_from_slice(b.as_ref());
        }
        Self::from_data(exchange, routing_key, props, data, raw_props.len())
    }

    /// Build from the message's bytes as they were received: the
    /// properties as sent (the first `props_len` bytes, see
    /// [`Message::from_wire`]) and then the body; `data` is kept, not copied.
    pub fn from_data(
        exchange: impl Into<Box<str>>,
        routing_key: impl Into<Box<str>>,
        props: Essentials,
        data: Vec<u8>,
        props_len: usize,
    ) -> Message {
        Message {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            data: data.into_boxed_slice(),
            props_len: props_len as u32,
            delivery_mode: props.delivery_mode,
            priority: props.priority,
            expiration: props.expiration,
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
            Essentials::of(&props),
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
            Expiration::Invalid => {
                let text = self
                    .properties()
                    .expiration()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                Err(format!(
                    "invalid expiration '{text}': {}",
                    expiration_refusal(&text)
                ))
            }
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

/// Encoded basic properties (flags + fields, as on the wire) with the
/// `reply-to` field, which must be present, replaced by `reply_to`; every
/// other byte is kept. `None` if `raw` is malformed or has no reply-to.
pub fn with_reply_to(raw: &[u8], reply_to: &str) -> Option<Vec<u8>> {
    let new_len = u8::try_from(reply_to.len()).ok()?;
    // Property flag words: bit 15 first; bit 0 says another word follows.
    let mut at = 0;
    let flags = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
    loop {
        let w = u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?]);
        at += 2;
        if w & 1 == 0 {
            break;
        }
    }
    const REPLY_TO_BIT: u16 = 1 << 9;
    if flags & REPLY_TO_BIT == 0 {
        return None;
    }
    let short = |at: usize| raw.get(at).map(|n| at + 1 + usize::from(*n));
    // Fields before reply-to: content-type, content-encoding (shortstr),
    // headers (table), delivery-mode, priority (octet), correlation-id.
    for bit in (10..=15).rev() {
        if flags & (1 << bit) == 0 {
            continue;
        }
        at = match bit {
            13 => {
                let n = u32::from_be_bytes(raw.get(at..at + 4)?.try_into().ok()?);
                at + 4 + usize::try_from(n).ok()?
            }
            12 | 11 => at + 1,
            _ => short(at)?,
        };
    }
    let end = short(at)?;
    if end > raw.len() {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + reply_to.len());
    out.extend_from_slice(&raw[..at]);
    out.push(new_len);
    out.extend_from_slice(reply_to.as_bytes());
    out.extend_from_slice(&raw[end..]);
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_refused_in_rabbitmqs_words() {
        assert_eq!(expiration_refusal("abc"), "no_integer");
        assert_eq!(expiration_refusal("-5"), "{value_negative,-5}");
        assert_eq!(expiration_refusal("12x"), "{leftover_string,\"x\"}");
        assert_eq!(expiration_refusal("1.5"), "{leftover_string,\".5\"}");
    }

    #[test]
    fn reply_to_is_replaced_in_place() {
        let mut headers = FieldTable::default();
        headers.insert("z".into(), AMQPValue::Boolean(true));
        headers.insert("a".into(), AMQPValue::LongInt(7));
        let props = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_priority(4)
            .with_correlation_id("c1".into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_message_id("m1".into());
        let mut raw = Vec::new();
        encode_properties_into(&props, &mut raw);
        let out = with_reply_to(&raw, "amq.rabbitmq.reply-to.tok").unwrap();
        let (_, back) = parse_properties(&out[..]).unwrap();
        assert_eq!(
            back.reply_to().as_ref().unwrap().as_str(),
            "amq.rabbitmq.reply-to.tok"
        );
        assert_eq!(back.message_id().as_ref().unwrap().as_str(), "m1");
        assert_eq!(back.correlation_id().as_ref().unwrap().as_str(), "c1");
        assert_eq!(back.headers(), props.headers());
        assert_eq!(*back.priority(), Some(4));
        // Without reply-to, or truncated: None, never a panic.
        let mut plain = Vec::new();
        encode_properties_into(&BasicProperties::default().with_priority(1), &mut plain);
        assert!(with_reply_to(&plain, "x").is_none());
        for n in 0..raw.len() {
            let _ = with_reply_to(&raw[..n], "x");
        }
    }
}
