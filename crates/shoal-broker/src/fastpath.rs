//! Hand-written decoding of the frames every message costs: `basic.publish`,
//! `basic.ack` and a content header whose properties have no header table.
//! `amq-protocol`'s parser (nom combinators, one error context per field)
//! costs thousands of instructions for each; these read the bytes directly.
//!
//! Each function returns `None` unless the payload is exactly what it
//! expects (known class and method, every length in bounds, strings valid
//! UTF-8, nothing left over), and the caller then hands the frame to
//! `amq-protocol` as before: the result of a frame is the same either way,
//! errors included, and only the common, well-formed frames take the short
//! path. The tests check both paths agree.

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, AMQPClass, BasicProperties};

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
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// A method frame's payload (class, method, arguments): `basic.publish` or
/// `basic.ack`, decoded; `None` for any other method or anything unusual.
pub fn method(ch: u16, payload: &[u8]) -> Option<AMQPFrame> {
    let mut r = Rd(payload);
    let (class, method) = (r.u16()?, r.u16()?);
    let m = match (class, method) {
        (60, 40) => {
            let _reserved = r.u16()?;
            let exchange = r.shortstr()?;
            let routing_key = r.shortstr()?;
            let bits = r.u8()?;
            basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory: bits & 1 != 0,
                immediate: bits & 2 != 0,
            })
        }
        (60, 80) => {
            let delivery_tag = r.u64()?;
            let bits = r.u8()?;
            basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag,
                multiple: bits & 1 != 0,
            })
        }
        _ => return None,
    };
    r.done()
        .then_some(AMQPFrame::Method(ch, AMQPClass::Basic(m)))
}

/// A content header's payload (class, weight, body size, properties),
/// decoded when its properties carry no header table (the one field that
/// needs the full parser) and no flag word past the first.
pub fn header(payload: &[u8]) -> Option<AMQPContentHeader> {
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
    let mut p = BasicProperties::default();
    if on(15) {
        p = p.with_content_type(r.shortstr()?.into());
    }
    if on(14) {
        p = p.with_content_encoding(r.shortstr()?.into());
    }
    if on(12) {
        p = p.with_delivery_mode(r.u8()?);
    }
    if on(11) {
        p = p.with_priority(r.u8()?);
    }
    if on(10) {
        p = p.with_correlation_id(r.shortstr()?.into());
    }
    if on(9) {
        p = p.with_reply_to(r.shortstr()?.into());
    }
    if on(8) {
        p = p.with_expiration(r.shortstr()?.into());
    }
    if on(7) {
        p = p.with_message_id(r.shortstr()?.into());
    }
    if on(6) {
        p = p.with_timestamp(r.u64()?);
    }
    if on(5) {
        p = p.with_type(r.shortstr()?.into());
    }
    if on(4) {
        p = p.with_user_id(r.shortstr()?.into());
    }
    if on(3) {
        p = p.with_app_id(r.shortstr()?.into());
    }
    if on(2) {
        p = p.with_cluster_id(r.shortstr()?.into());
    }
    r.done().then_some(AMQPContentHeader {
        class_id,
        body_size,
        properties: p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::put_frame;
    use amq_protocol::frame::parse_frame;
    use proptest::prelude::*;

    /// The payload of the single frame in `out`.
    fn payload(out: &[u8]) -> &[u8] {
        &out[7..out.len() - 1]
    }

    fn slow(out: &[u8]) -> Option<AMQPFrame> {
        parse_frame(out).ok().map(|(_, f)| f)
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
            let fast = method(ch, payload(&out));
            prop_assert!(fast.is_some());
            prop_assert_eq!(fast, slow(&out));
            let mut out = Vec::new();
            put_frame(&mut out, &AMQPFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Ack(
                basic::Ack { delivery_tag: tag, multiple },
            ))));
            let fast = method(ch, payload(&out));
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
            let fast = header(payload(&out)).map(|h| AMQPFrame::Header(3, h));
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
                    method(1, &p)
                } else {
                    header(&p).map(|h| AMQPFrame::Header(1, h))
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
        assert!(method(1, payload(&out)).is_none());
    }
}
