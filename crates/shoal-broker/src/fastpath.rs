//! Hand-written decoding of the frames every message costs: `basic.publish`,
//! `basic.ack` and a content header whose properties have no header table.
//! `amq-protocol`'s parser (nom combinators, one error context per field)
//! costs thousands of instructions for each; these read the bytes directly,
//! into small types ([`Fast`], [`Head`]) rather than `amq-protocol`'s frame
//! and properties, which are hundreds of bytes and were copied at every
//! step from the read buffer to the queue. A header yields only what the
//! broker reads of every message ([`crate::message::Essentials`]); its
//! properties stay as sent. Any content header (tables included) ends up
//! as a [`Head`]: the parser's result is summed up the same way.
//!
//! Each function returns `None` unless the payload is exactly what it
//! expects (known class and method, every length in bounds, strings valid
//! UTF-8, nothing left over), and the caller then hands the frame to
//! `amq-protocol` as before: the result of a frame is the same either way,
//! errors included, and only the common, well-formed frames take the short
//! path. The tests check both paths agree (on the [`Head`] of a header).

use crate::message::{Essentials, Expiration};
use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{basic, AMQPClass};

/// A cursor over a frame payload.
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_be_bytes(b.try_into().ok()?))
    }

    fn shortstr(&mut self) -> Option<&'a str> {
        let n = usize::from(self.u8()?);
        let b = self.take(n)?;
        if b.is_ascii() {
            // Names are ASCII nearly always: checked a word at a time,
            // where `from_utf8` goes byte by byte through a short string.
            // SAFETY: ASCII is valid UTF-8.
            return Some(unsafe { std::str::from_utf8_unchecked(b) });
        }
        std::str::from_utf8(b).ok()
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// A method `method` decodes: the two every message costs, kept out of
/// `amq-protocol`'s (large) frame type so that they move cheaply.
#[derive(Debug, Clone, PartialEq)]
pub enum Fast {
    /// basic.publish.
    Publish(basic::Publish),
    /// basic.ack.
    Ack(basic::Ack),
}

impl Fast {
    /// As `amq-protocol` would have decoded it.
    pub fn into_class(self) -> AMQPClass {
        AMQPClass::Basic(match self {
            Fast::Publish(p) => basic::AMQPMethod::Publish(p),
            Fast::Ack(a) => basic::AMQPMethod::Ack(a),
        })
    }
}

/// A method frame's payload (class, method, arguments): `basic.publish` or
/// `basic.ack`, decoded; `None` for any other method or anything unusual.
pub fn method(payload: &[u8]) -> Option<Fast> {
    let mut r = Rd(payload);
    let (class, method) = (r.u16()?, r.u16()?);
    // Each arm checks that nothing is left before it builds its value, which
    // is then returned as built, not moved out of a local.
    match (class, method) {
        (60, 40) => {
            let _reserved = r.u16()?;
            let exchange = r.shortstr()?;
            let routing_key = r.shortstr()?;
            let bits = r.u8()?;
            r.done().then(|| {
                Fast::Publish(basic::Publish {
                    exchange: exchange.into(),
                    routing_key: routing_key.into(),
                    mandatory: bits & 1 != 0,
                    immediate: bits & 2 != 0,
                })
            })
        }
        (60, 80) => {
            let delivery_tag = r.u64()?;
            let bits = r.u8()?;
            r.done().then_some(Fast::Ack(basic::Ack {
                delivery_tag,
                multiple: bits & 1 != 0,
            }))
        }
        _ => None,
    }
}

/// A content header as the broker reads it: class, body size, and the
/// properties it needs on every message (the rest stay encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Class id (60 for basic).
    pub class_id: u16,
    /// Body size announced.
    pub body_size: u64,
    /// What the broker reads of the properties.
    pub props: Essentials,
}

impl Head {
    /// From a header `amq-protocol` decoded.
    pub fn of(h: &AMQPContentHeader) -> Head {
        Head {
            class_id: h.class_id,
            body_size: h.body_size,
            props: Essentials::of(&h.properties),
        }
    }
}

/// A content header's payload (class, weight, body size, properties),
/// read when its properties carry no header table (the one field that
/// needs the full parser) and no flag word past the first. Every field is
/// checked as the parser checks it (lengths, UTF-8), so `None` here is the
/// only way a header the parser would refuse can come out.
pub fn header(payload: &[u8]) -> Option<Head> {
    let mut r = Rd(payload);
    let class_id = r.u16()?;
    let _weight = r.u16()?;
    let body_size = r.u64()?;
    let flags = r.u16()?;
    // Bit 13: headers; bits 1 and 0: reserved and continuation.
    if flags & (1 << 13 | 0b11) != 0 {
        return None;
    }
    let on = |bit: u16| flags & (1 << bit) != 0;
    let mut p = Essentials::default();
    // content-type, content-encoding
    for bit in [15, 14] {
        if on(bit) {
            r.shortstr()?;
        }
    }
    if on(12) {
        p.delivery_mode = r.u8()?;
    }
    if on(11) {
        p.priority = r.u8()?;
    }
    if on(10) {
        r.shortstr()?; // correlation-id
    }
    if on(9) {
        p.direct_reply = r.shortstr()? == crate::vhost::REPLY_TO;
    }
    if on(8) {
        p.expiration = Expiration::parse(Some(r.shortstr()?));
    }
    if on(7) {
        r.shortstr()?; // message-id
    }
    if on(6) {
        r.u64()?; // timestamp
    }
    // type, user-id, app-id, cluster-id
    for bit in [5, 4, 3, 2] {
        if on(bit) {
            r.shortstr()?;
        }
    }
    r.done().then_some(Head {
        class_id,
        body_size,
        props: p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::put_frame;
    use amq_protocol::frame::{parse_frame, AMQPFrame};
    use amq_protocol::protocol::BasicProperties;
    use proptest::prelude::*;

    /// The payload of the single frame in `out`.
    fn payload(out: &[u8]) -> &[u8] {
        &out[7..out.len() - 1]
    }

    /// What the parser makes of the frame in `out`, in the fast path's terms.
    fn slow(out: &[u8]) -> Option<Result<AMQPClass, Head>> {
        match parse_frame(out).ok()?.1 {
            AMQPFrame::Method(_, m) => Some(Ok(m)),
            AMQPFrame::Header(_, h) => Some(Err(Head::of(&h))),
            _ => None,
        }
    }

    fn fast_method(p: &[u8]) -> Option<Result<AMQPClass, Head>> {
        method(p).map(|m| Ok(m.into_class()))
    }

    fn fast_header(p: &[u8]) -> Option<Result<AMQPClass, Head>> {
        header(p).map(Err)
    }

    fn short() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-z.\\-é]{0,20}").unwrap()
    }

    proptest! {
        #[test]
        fn publish_and_ack_decode_as_the_parser_does(
            ex in short(), rk in short(), mandatory: bool, immediate: bool,
            tag: u64, multiple: bool, ch in 1u16..100,
        ) {
            let mut out = Vec::new();
            put_frame(&mut out, &AMQPFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Publish(
                basic::Publish { exchange: ex.as_str().into(), routing_key: rk.as_str().into(), mandatory, immediate },
            ))));
            let fast = fast_method(payload(&out));
            prop_assert!(fast.is_some());
            prop_assert_eq!(fast, slow(&out));
            let mut out = Vec::new();
            put_frame(&mut out, &AMQPFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Ack(
                basic::Ack { delivery_tag: tag, multiple },
            ))));
            let fast = fast_method(payload(&out));
            prop_assert!(fast.is_some());
            prop_assert_eq!(fast, slow(&out));
        }

        #[test]
        fn headers_without_a_table_decode_as_the_parser_does(
            size: u64,
            ct in proptest::option::of(short()), ce in proptest::option::of(short()),
            dm in proptest::option::of(any::<u8>()), pr in proptest::option::of(any::<u8>()),
            corr in proptest::option::of(short()), reply in proptest::option::of(short()),
            exp in proptest::option::of(short()), id in proptest::option::of(short()),
            ts in proptest::option::of(any::<u64>()), kind in proptest::option::of(short()),
            user in proptest::option::of(short()), app in proptest::option::of(short()),
            cluster in proptest::option::of(short()),
        ) {
            let mut p = BasicProperties::default();
            if let Some(v) = ct { p = p.with_content_type(v.as_str().into()); }
            if let Some(v) = ce { p = p.with_content_encoding(v.as_str().into()); }
            if let Some(v) = dm { p = p.with_delivery_mode(v); }
            if let Some(v) = pr { p = p.with_priority(v); }
            if let Some(v) = corr { p = p.with_correlation_id(v.as_str().into()); }
            if let Some(v) = reply { p = p.with_reply_to(v.as_str().into()); }
            if let Some(v) = exp { p = p.with_expiration(v.as_str().into()); }
            if let Some(v) = id { p = p.with_message_id(v.as_str().into()); }
            if let Some(v) = ts { p = p.with_timestamp(v); }
            if let Some(v) = kind { p = p.with_type(v.as_str().into()); }
            if let Some(v) = user { p = p.with_user_id(v.as_str().into()); }
            if let Some(v) = app { p = p.with_app_id(v.as_str().into()); }
            if let Some(v) = cluster { p = p.with_cluster_id(v.as_str().into()); }
            let h = AMQPContentHeader { class_id: 60, body_size: size, properties: p };
            let mut out = Vec::new();
            put_frame(&mut out, &AMQPFrame::Header(3, h));
            let fast = fast_header(payload(&out));
            prop_assert!(fast.is_some());
            prop_assert_eq!(fast, slow(&out));
        }

        /// Cut short, padded or corrupted, a frame either decodes the same
        /// both ways or is left to the parser.
        #[test]
        fn damaged_frames_never_decode_differently(cut in 0usize..40, junk: u8, at in 0usize..40) {
            let mut out = Vec::new();
            put_frame(&mut out, &AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Publish(
                basic::Publish { exchange: "ex".into(), routing_key: "key".into(), mandatory: true, immediate: false },
            ))));
            let h = AMQPContentHeader {
                class_id: 60,
                body_size: 5,
                properties: BasicProperties::default().with_delivery_mode(2).with_reply_to("r".into()),
            };
            put_frame(&mut out, &AMQPFrame::Header(1, h));
            let split = 8 + u32::from_be_bytes([out[3], out[4], out[5], out[6]]) as usize;
            let frames = [out[..split].to_vec(), out[split..].to_vec()];
            for f in frames {
                let mut p = payload(&f).to_vec();
                p.truncate(p.len().saturating_sub(cut % 4));
                if cut % 3 == 0 {
                    p.push(junk);
                }
                if let Some(b) = p.get_mut(at) {
                    *b = junk;
                }
                let mut framed = f[..3].to_vec();
                framed.extend_from_slice(&(p.len() as u32).to_be_bytes());
                framed.extend_from_slice(&p);
                framed.push(0xCE);
                let fast = if f[0] == 1 {
                    fast_method(&p)
                } else {
                    fast_header(&p)
                };
                if let Some(fast) = fast {
                    prop_assert_eq!(Some(fast), slow(&framed));
                }
            }
        }
    }

    #[test]
    fn a_header_table_or_another_method_is_left_to_the_parser() {
        let mut out = Vec::new();
        let mut t = amq_protocol::types::FieldTable::default();
        t.insert("a".into(), amq_protocol::types::AMQPValue::LongInt(1));
        let h = AMQPContentHeader {
            class_id: 60,
            body_size: 1,
            properties: BasicProperties::default().with_headers(t),
        };
        put_frame(&mut out, &AMQPFrame::Header(1, h));
        assert!(header(payload(&out)).is_none());
        let mut out = Vec::new();
        put_frame(
            &mut out,
            &AMQPFrame::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                    prefetch_count: 1,
                    global: false,
                })),
            ),
        );
        assert!(method(payload(&out)).is_none());
    }

    #[test]
    fn essentials_are_read_from_the_header() {
        let read = |props: BasicProperties| {
            let mut out = Vec::new();
            let h = AMQPContentHeader {
                class_id: 60,
                body_size: 3,
                properties: props,
            };
            put_frame(&mut out, &AMQPFrame::Header(1, h));
            header(payload(&out)).unwrap().props
        };
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_priority(7)
            .with_reply_to(crate::vhost::REPLY_TO.into())
            .with_expiration("1500".into());
        let want = Essentials {
            delivery_mode: 2,
            priority: 7,
            expiration: Expiration::Ms(1500),
            direct_reply: true,
        };
        assert_eq!(read(props), want);
        let props = BasicProperties::default().with_expiration("soon".into());
        assert_eq!(read(props).expiration, Expiration::Invalid);
    }
}
