//! Frame codec on top of `amq-protocol`: [`decode_frame`] checks the frame
//! header (type, size against `frame_max`, frame-end octet) before parsing,
//! so an oversized or garbage frame is refused without allocating, and a
//! method or content header whose field tables nest too deeply
//! ([`crate::nesting`]) is refused before the recursive parser sees it; the
//! frames every message costs are read by [`crate::fastpath`] instead of the
//! general parser, and a content header keeps its property bytes as sent
//! (see [`Inbound::Header`]). The server handles frames as they lie in its
//! read buffer ([`Frame`]); [`decode`] takes them off a buffer as owned
//! [`Inbound`] frames, content sliced out without copying. The `put_*`
//! functions append encoded frames to the writer's buffer.

use crate::error::AmqpError;
use crate::fastpath::{Fast, Head};
use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::AMQPClass;
use bytes::{Buf, Bytes, BytesMut};

/// Frame-end octet.
pub const FRAME_END: u8 = 0xCE;
/// Bytes of frame overhead (7 header + 1 end).
pub const FRAME_OVERHEAD: usize = 8;

/// A decoded inbound frame that owns its bytes (see [`decode`]).
#[derive(Debug)]
pub enum Inbound {
    /// Method or heartbeat.
    Frame(Box<AMQPFrame>),
    /// `basic.publish` or `basic.ack` (see [`crate::fastpath`]).
    Fast(u16, Fast),
    /// Content body (not copied).
    Body(u16, Bytes),
    /// Content header: what the broker reads of it, and its property
    /// section (flags and fields) exactly as the client sent it, so the
    /// broker hands consumers the same bytes (header tables keep their
    /// order and types; decoding and re-encoding would sort them).
    Header(u16, Head, Bytes),
}

/// A decoded inbound frame that borrows the read buffer (see
/// [`decode_frame`]): the server's form, so that a message's bytes are
/// copied once, from the read buffer into the message, and no frame costs a
/// shared reference count.
#[derive(Debug)]
pub enum Frame<'a> {
    /// Method or heartbeat.
    Frame(Box<AMQPFrame>),
    /// `basic.publish` or `basic.ack` (see [`crate::fastpath`]).
    Fast(u16, Fast),
    /// Content body.
    Body(u16, &'a [u8]),
    /// Content header: what the broker reads of it, and its property
    /// section exactly as sent (see [`Inbound::Header`]).
    Header(u16, Head, &'a [u8]),
}

/// What [`decode_frame`] found at the start of a buffer.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A whole frame, and the bytes of the buffer it takes.
    Whole(Frame<'a>, usize),
    /// Not a whole frame yet: the buffer must hold this many bytes first.
    Partial(usize),
}

/// Bytes before a content header's properties: class, weight, body size.
const HEADER_FIXED: usize = 12;

/// Decode the frame at the start of `buf` without taking anything from it.
pub fn decode_frame(buf: &[u8], frame_max: u32) -> Result<Decoded<'_>, AmqpError> {
    if buf.len() < 7 {
        return Ok(Decoded::Partial(7));
    }
    let kind = buf[0];
    if !matches!(kind, 1 | 2 | 3 | 8) {
        return Err(AmqpError::frame_error(format!("unknown frame type {kind}")));
    }
    let ch = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if size + FRAME_OVERHEAD > frame_max as usize {
        return Err(AmqpError::frame_error(format!(
            "frame size {} exceeds frame_max {frame_max}",
            size + FRAME_OVERHEAD
        )));
    }
    let total = size + FRAME_OVERHEAD;
    if buf.len() < total {
        return Ok(Decoded::Partial(total));
    }
    if buf[total - 1] != FRAME_END {
        return Err(AmqpError::frame_error("frame end octet missing"));
    }
    let payload = &buf[7..total - 1];
    if kind == 3 {
        return Ok(Decoded::Whole(Frame::Body(ch, payload), total));
    }
    if crate::nesting::check_frame(kind, payload).is_err() {
        return Err(AmqpError::frame_error(format!(
            "field tables nest deeper than {} levels",
            crate::nesting::MAX_DEPTH
        )));
    }
    let head = match kind {
        1 => {
            if let Some(m) = crate::fastpath::method(payload) {
                return Ok(Decoded::Whole(Frame::Fast(ch, m), total));
            }
            None
        }
        2 => crate::fastpath::header(payload),
        _ => None,
    };
    let head = match head {
        Some(h) => h,
        None => match parse_frame(&buf[..total]) {
            Ok((_, AMQPFrame::Header(_, h))) => Head::of(&h),
            Ok((_, f)) => return Ok(Decoded::Whole(Frame::Frame(Box::new(f)), total)),
            Err(e) => {
                let what = if kind == 1 { "method" } else { "frame" };
                return Err(AmqpError::frame_error(format!("cannot decode {what}: {e}")));
            }
        },
    };
    if total - 1 < 7 + HEADER_FIXED {
        return Err(AmqpError::frame_error("content header too short"));
    }
    let props = &buf[7 + HEADER_FIXED..total - 1];
    Ok(Decoded::Whole(Frame::Header(ch, head, props), total))
}

/// Decode one frame from `buf` and take it off (its content sliced out of
/// the buffer without copying); `Ok(None)` means more bytes are needed (room
/// for them is reserved).
pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Inbound>, AmqpError> {
    let (frame, used) = match decode_frame(buf, frame_max)? {
        Decoded::Whole(f, used) => (f, used),
        Decoded::Partial(total) => {
            buf.reserve(total.saturating_sub(buf.len()));
            return Ok(None);
        }
    };
    // Content lies at a fixed place in its frame: after the frame header,
    // and for a content header after its class, weight and body size.
    let (ch, head, start) = match frame {
        Frame::Frame(f) => {
            buf.advance(used);
            return Ok(Some(Inbound::Frame(f)));
        }
        Frame::Fast(ch, m) => {
            buf.advance(used);
            return Ok(Some(Inbound::Fast(ch, m)));
        }
        Frame::Body(ch, _) => (ch, None, 7),
        Frame::Header(ch, h, _) => (ch, Some(h), 7 + HEADER_FIXED),
    };
    let mut content = buf.split_to(used).freeze();
    content.truncate(used - 1);
    content.advance(start);
    Ok(Some(match head {
        None => Inbound::Body(ch, content),
        Some(h) => Inbound::Header(ch, h, content),
    }))
}

/// Append any frame (via amq-protocol).
pub fn put_frame(out: &mut Vec<u8>, frame: &AMQPFrame) {
    let buf = std::mem::take(out);
    match gen_frame(frame)(WriteContext::from(buf)) {
        Ok(ctx) => *out = ctx.write,
        Err(e) => tracing::error!(error = ?e, "frame encoding failed"),
    }
}

/// Append a method frame.
pub fn put_method(out: &mut Vec<u8>, ch: u16, m: AMQPClass) {
    put_frame(out, &AMQPFrame::Method(ch, m));
}

/// Append a `basic.deliver` method frame, encoded in place: the writer sends
/// one per delivery, and going through [`put_method`] would copy the
/// consumer tag, exchange and routing key into owned strings first.
/// Byte for byte what `put_method` writes for the same fields.
pub fn put_deliver(
    out: &mut Vec<u8>,
    ch: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    let (tag, ex, key) = (
        shortstr(consumer_tag),
        shortstr(exchange),
        shortstr(routing_key),
    );
    // class, method, tag length | tag | delivery tag, redelivered, exchange
    // length | exchange | key length | key
    let size = 5 + tag.len() + 10 + ex.len() + 1 + key.len();
    out.reserve(7 + size + 1);
    // The fixed fields go in a few copies, not one push per field.
    let mut head = [0u8; 12];
    head[..7].copy_from_slice(&frame_head(1, ch, size));
    head[7..9].copy_from_slice(&60u16.to_be_bytes());
    head[9..11].copy_from_slice(&60u16.to_be_bytes());
    head[11] = tag.len() as u8;
    out.extend_from_slice(&head);
    out.extend_from_slice(tag);
    let mut mid = [0u8; 10];
    mid[..8].copy_from_slice(&delivery_tag.to_be_bytes());
    mid[8] = u8::from(redelivered);
    mid[9] = ex.len() as u8;
    out.extend_from_slice(&mid);
    out.extend_from_slice(ex);
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    out.push(FRAME_END);
}

/// A short string's bytes. The broker's names are at most 255 bytes (the
/// protocol carries them as short strings to begin with); a longer one is
/// cut at 255 rather than corrupting the frame.
fn shortstr(s: &str) -> &[u8] {
    &s.as_bytes()[..s.len().min(255)]
}

/// A frame's first 7 octets: type, channel, payload size.
fn frame_head(kind: u8, ch: u16, size: usize) -> [u8; 7] {
    let mut h = [kind, 0, 0, 0, 0, 0, 0];
    h[1..3].copy_from_slice(&ch.to_be_bytes());
    h[3..7].copy_from_slice(&(size as u32).to_be_bytes());
    h
}

/// Append a content header (with already-encoded properties) and body
/// frames (split by `frame_max`).
pub fn put_content(out: &mut Vec<u8>, ch: u16, raw_props: &[u8], body: &[u8], frame_max: u32) {
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    let frames = body.len().div_ceil(chunk);
    out.reserve(8 + 12 + raw_props.len() + frames * 8 + body.len());
    // class 60, weight 0, body size
    let mut head = [0u8; 19];
    head[..7].copy_from_slice(&frame_head(2, ch, 12 + raw_props.len()));
    head[7..9].copy_from_slice(&60u16.to_be_bytes());
    head[11..19].copy_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(raw_props);
    out.push(FRAME_END);
    for part in body.chunks(chunk) {
        out.extend_from_slice(&frame_head(3, ch, part.len()));
        out.extend_from_slice(part);
        out.push(FRAME_END);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;

    #[test]
    fn round_trip_method_content_and_limits() {
        let mut out = Vec::new();
        put_method(
            &mut out,
            3,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "ex".into(),
                routing_key: "a.b".into(),
                mandatory: true,
                immediate: false,
            })),
        );
        let props = amq_protocol::protocol::BasicProperties::default().with_delivery_mode(2);
        let mut raw = Vec::new();
        crate::message::encode_properties_into(&props, &mut raw);
        put_content(&mut out, 3, &raw, b"hello world", 4096 + 8);
        let mut buf = BytesMut::from(&out[..]);
        let f = decode(&mut buf, 131072).unwrap().unwrap();
        assert!(matches!(f, Inbound::Fast(3, Fast::Publish(_))));
        match decode(&mut buf, 131072).unwrap().unwrap() {
            Inbound::Header(3, h, r) => {
                assert_eq!(h.body_size, 11);
                assert_eq!(h.props.delivery_mode, 2);
                assert_eq!(&r[..], &raw[..]);
            }
            other => panic!("{other:?}"),
        }
        match decode(&mut buf, 131072).unwrap().unwrap() {
            Inbound::Body(3, b) => assert_eq!(&b[..], b"hello world"),
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn deliver_encoded_in_place_matches_the_generic_encoder() {
        for (tag, redelivered, ex, rk) in [
            (1u64, false, "", "q"),
            (u64::MAX, true, "amq.topic", "a.b.c"),
            (42, false, "x", ""),
        ] {
            let mut want = Vec::new();
            put_method(
                &mut want,
                7,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: "amq.ctag-1".into(),
                    delivery_tag: tag,
                    redelivered,
                    exchange: ex.into(),
                    routing_key: rk.into(),
                })),
            );
            let mut got = vec![0xAA];
            put_deliver(&mut got, 7, "amq.ctag-1", tag, redelivered, ex, rk);
            assert_eq!(&got[1..], &want[..], "{tag} {redelivered} {ex:?} {rk:?}");
        }
    }

    /// A content header and its body, split by frame_max or in one frame
    /// or with none, are byte for byte what amq-protocol encodes.
    #[test]
    fn content_encoded_in_place_matches_the_generic_encoder() {
        use amq_protocol::frame::AMQPContentHeader;
        let props = amq_protocol::protocol::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("text/plain".into());
        let mut raw = Vec::new();
        crate::message::encode_properties_into(&props, &mut raw);
        for (body, frame_max) in [
            (&b"hello world"[..], 4096u32),
            (&b"hello world"[..], 8 + 4),
            (&b"hello world"[..], 8 + 11),
            (&b""[..], 4096),
        ] {
            let mut want = Vec::new();
            put_frame(
                &mut want,
                &AMQPFrame::Header(
                    5,
                    AMQPContentHeader {
                        class_id: 60,
                        body_size: body.len() as u64,
                        properties: props.clone(),
                    },
                ),
            );
            for part in body.chunks(frame_max as usize - 8) {
                put_frame(&mut want, &AMQPFrame::Body(5, part.to_vec()));
            }
            let mut got = vec![0xAA];
            put_content(&mut got, 5, &raw, body, frame_max);
            assert_eq!(&got[1..], &want[..], "{body:?} in frames of {frame_max}");
        }
    }

    #[test]
    fn header_properties_kept_as_sent() {
        // Flags: headers only; a table whose keys are out of order ("z" then
        // "a"), which a decode and re-encode would sort.
        let table: &[u8] = &[1, b'z', b't', 1, 1, b'a', b'I', 0, 0, 0, 7];
        let mut raw = vec![0x20, 0x00];
        raw.extend_from_slice(&(table.len() as u32).to_be_bytes());
        raw.extend_from_slice(table);
        let mut out = Vec::new();
        put_content(&mut out, 1, &raw, b"x", 131072);
        let mut buf = BytesMut::from(&out[..]);
        match decode(&mut buf, 131072).unwrap().unwrap() {
            Inbound::Header(1, h, r) => {
                assert_eq!(&r[..], &raw[..]);
                let m = crate::message::Message::from_wire("", "q", h.props, &r, &[b"x"]);
                assert_eq!(m.raw_properties(), &raw[..]);
                let m = crate::message::Message::from_raw("", "q", &raw, b"x").unwrap();
                assert_eq!(
                    m.raw_properties(),
                    &raw[..],
                    "recovered from the store as sent"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_garbage_and_oversized() {
        let mut out = Vec::new();
        put_method(
            &mut out,
            1,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        );
        let mut part = BytesMut::from(&out[..out.len() - 1]);
        assert!(decode(&mut part, 4096).unwrap().is_none());
        let mut garbage = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(decode(&mut garbage, 4096).unwrap_err().code, 501);
        let mut big = BytesMut::from(&[1u8, 0, 1, 0, 1, 0, 0][..]);
        assert_eq!(decode(&mut big, 4096).unwrap_err().code, 501);
        let mut noend = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut noend, 4096).unwrap_err().code, 501);
    }
}
