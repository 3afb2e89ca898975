//! A bound on how deeply client field tables and arrays nest, checked on the
//! raw frame bytes before `amq-protocol` parses them.
//!
//! `amq-protocol` decodes a field table recursively, one stack frame set per
//! level, and so do `Drop`, `PartialEq`, encoding and JSON rendering of the
//! decoded value. A 14 KB frame can nest 2,000 tables, enough to overflow a
//! runtime worker's 2 MiB stack and abort the whole broker. [`check_frame`]
//! walks the tables of a method or content-header frame iteratively (an
//! explicit stack of at most [`MAX_DEPTH`] region ends, no allocation) and
//! refuses a frame that nests deeper, so every later recursive pass over
//! client data is bounded by the same depth.
//!
//! RabbitMQ has no such limit (Erlang's stacks grow on the heap); no known
//! client nests beyond four levels (`x-death` headers: table, array, table).
//!
//! The walk follows the parser's path exactly: entries in order, sizes by
//! the same type tags `amq-protocol` accepts. Where the bytes are malformed
//! the walk stops and leaves the error to the parser, which stops at the same
//! place and so has not recursed deeper than the walk has seen.

/// Deepest nesting of field tables and arrays accepted in a frame (the
/// outermost table is depth 1).
pub const MAX_DEPTH: usize = 64;

/// The frame nests deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep;

/// Check the field tables of one frame: `kind` is the frame type (1 method,
/// 2 content header), `payload` the bytes between the frame header and the
/// frame-end octet. Other frame types carry no tables.
pub fn check_frame(kind: u8, payload: &[u8]) -> Result<(), TooDeep> {
    let at = match kind {
        1 => method_table_offset(payload),
        2 => header_table_offset(payload),
        _ => None,
    };
    match at {
        Some(at) if at <= payload.len() => check_table(&payload[at..]),
        _ => Ok(()),
    }
}

/// What precedes a method's field table.
#[derive(Clone, Copy)]
enum Field {
    Octet,
    Short,
    ShortStr,
}

/// Offset of the (single) field table in a method payload, for the methods
/// that have one; these are all of AMQP 0-9-1's, whichever side sends them,
/// because the parser decodes server methods too.
fn method_table_offset(p: &[u8]) -> Option<usize> {
    use Field::{Octet, Short, ShortStr};
    let class = u16::from_be_bytes([*p.first()?, *p.get(1)?]);
    let method = u16::from_be_bytes([*p.get(2)?, *p.get(3)?]);
    let before: &[Field] = match (class, method) {
        (10, 10) => &[Octet, Octet],                     // connection.start
        (10, 11) => &[],                                 // connection.start-ok
        (40, 10) => &[Short, ShortStr, ShortStr, Octet], // exchange.declare
        (40, 30) | (40, 40) => &[Short, ShortStr, ShortStr, ShortStr, Octet], // exchange.(un)bind
        (50, 10) => &[Short, ShortStr, Octet],           // queue.declare
        (50, 20) => &[Short, ShortStr, ShortStr, ShortStr, Octet], // queue.bind
        (50, 50) => &[Short, ShortStr, ShortStr, ShortStr], // queue.unbind
        (60, 20) => &[Short, ShortStr, ShortStr, Octet], // basic.consume
        _ => return None,
    };
    let mut at = 4;
    for f in before {
        at += match f {
            Octet => 1,
            Short => 2,
            ShortStr => 1 + usize::from(*p.get(at)?),
        };
    }
    Some(at)
}

/// Offset of the `headers` table in a content header payload, if present:
/// class, weight, body size, property flags, then content-type and
/// content-encoding (short strings) when their flags are set.
fn header_table_offset(p: &[u8]) -> Option<usize> {
    let flags = u16::from_be_bytes([*p.get(12)?, *p.get(13)?]);
    if flags & (1 << 13) == 0 {
        return None;
    }
    let mut at = 14;
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 {
            at += 1 + usize::from(*p.get(at)?);
        }
    }
    Some(at)
}

fn long_at(p: &[u8], at: usize) -> Option<usize> {
    let b = p.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Walk one field table (`p` starts at its length) and everything nested in
/// it.
pub fn check_table(p: &[u8]) -> Result<(), TooDeep> {
    // (end offset, is a table) of each open region, outermost first.
    let mut ends = [(0usize, false); MAX_DEPTH];
    let Some(len) = long_at(p, 0) else {
        return Ok(());
    };
    ends[0] = (4usize.saturating_add(len), true);
    let mut depth = 1;
    let mut at = 4;
    loop {
        let (end, table) = ends[depth - 1];
        if end > p.len() {
            return Ok(()); // a region longer than its parent: the parser refuses it
        }
        if at >= end {
            depth -= 1;
            if depth == 0 {
                return Ok(());
            }
            at = end;
            continue;
        }
        if table {
            let Some(&klen) = p.get(at) else {
                return Ok(());
            };
            at += 1 + usize::from(klen);
        }
        let Some(&tag) = p.get(at) else {
            return Ok(());
        };
        at += 1;
        at += match tag {
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'L' | b'l' | b'd' | b'T' => 8,
            b'V' => 0,
            b'S' | b'x' => match long_at(p, at) {
                Some(n) => n.saturating_add(4),
                None => return Ok(()),
            },
            b'A' | b'F' => {
                let Some(n) = long_at(p, at) else {
                    return Ok(());
                };
                if depth == MAX_DEPTH {
                    return Err(TooDeep);
                }
                ends[depth] = ((at + 4).saturating_add(n), tag == b'F');
                depth += 1;
                4
            }
            _ => return Ok(()), // unknown type: the parser refuses it here
        };
        if at > end {
            return Ok(()); // an entry that runs past its region: the parser refuses it
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};

    fn nested_tables(depth: usize) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("leaf".into(), AMQPValue::LongString("x".into()));
        for _ in 1..depth {
            let mut outer = FieldTable::default();
            outer.insert("n".into(), AMQPValue::ShortShortUInt(1));
            outer.insert("t".into(), AMQPValue::FieldTable(t));
            t = outer;
        }
        t
    }

    fn encoded(t: &FieldTable) -> Vec<u8> {
        amq_protocol::types::generation::gen_field_table(t)(
            amq_protocol::frame::WriteContext::from(Vec::new()),
        )
        .expect("encode")
        .write
    }

    /// Raw bytes of a table nesting `depth` levels (tables, or tables and
    /// arrays alternating), built without the recursive encoder so that very
    /// deep inputs are cheap.
    fn raw_nested(depth: usize, arrays: bool) -> Vec<u8> {
        let mut inner = vec![0, 0, 0, 0];
        let mut inner_tag = b'F';
        for level in 1..depth {
            // The outermost container is a table, as in every frame.
            let outer_is_array = arrays && level % 2 == 1 && level + 1 < depth;
            let mut entry = Vec::new();
            if !outer_is_array {
                entry.extend_from_slice(&[1, b'k']);
            }
            entry.push(inner_tag);
            entry.extend_from_slice(&inner);
            let mut region = (entry.len() as u32).to_be_bytes().to_vec();
            region.extend_from_slice(&entry);
            inner = region;
            inner_tag = if outer_is_array { b'A' } else { b'F' };
        }
        inner
    }

    #[test]
    fn shallow_tables_pass_and_deep_ones_are_refused() {
        for depth in [1, 2, 4, MAX_DEPTH] {
            assert_eq!(
                check_table(&encoded(&nested_tables(depth))),
                Ok(()),
                "{depth}"
            );
        }
        assert_eq!(
            check_table(&encoded(&nested_tables(MAX_DEPTH + 1))),
            Err(TooDeep)
        );
        assert_eq!(check_table(&raw_nested(5_000, false)), Err(TooDeep));
        assert_eq!(check_table(&raw_nested(5_000, true)), Err(TooDeep));
    }

    #[test]
    fn the_walk_counts_as_the_parser_parses() {
        // Every value type before the nested table must be skipped by its
        // true size, or the nesting after it would be missed.
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::Boolean(true));
        t.insert("b".into(), AMQPValue::ShortInt(-2));
        t.insert("c".into(), AMQPValue::LongUInt(7));
        t.insert("d".into(), AMQPValue::Double(1.5));
        t.insert("e".into(), AMQPValue::Timestamp(9));
        t.insert("f".into(), AMQPValue::LongString("long".into()));
        t.insert("g".into(), AMQPValue::ByteArray(vec![1u8, 2, 3].into()));
        t.insert("h".into(), AMQPValue::Void);
        let mut arr = FieldArray::default();
        arr.push(AMQPValue::LongLongInt(3));
        arr.push(AMQPValue::FieldTable(nested_tables(MAX_DEPTH - 2)));
        t.insert("z".into(), AMQPValue::FieldArray(arr.clone()));
        assert_eq!(check_table(&encoded(&t)), Ok(()));
        let mut arr2 = FieldArray::default();
        arr2.push(AMQPValue::FieldTable(nested_tables(MAX_DEPTH - 1)));
        t.insert("z".into(), AMQPValue::FieldArray(arr2));
        assert_eq!(check_table(&encoded(&t)), Err(TooDeep));
    }

    #[test]
    fn malformed_bytes_are_left_to_the_parser() {
        assert_eq!(check_table(&[]), Ok(()));
        assert_eq!(check_table(&[0, 0, 0, 9, 1]), Ok(()));
        assert_eq!(check_table(&[0, 0, 0, 3, 1, b'k', b'?']), Ok(()));
        assert_eq!(
            check_table(&[0xff, 0xff, 0xff, 0xff, 1, b'k', b'F']),
            Ok(())
        );
    }

    #[test]
    fn frames_find_their_tables() {
        use amq_protocol::protocol::{basic, connection, AMQPClass};
        let deep = nested_tables(MAX_DEPTH + 1);
        let start_ok =
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: deep.clone(),
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            }));
        let consume = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "tag".into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: deep.clone(),
        }));
        for class in [start_ok, consume] {
            let mut out = Vec::new();
            crate::codec::put_method(&mut out, 1, class);
            assert_eq!(check_frame(1, &out[7..out.len() - 1]), Err(TooDeep));
        }
        let props = amq_protocol::protocol::BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(deep);
        let mut raw = Vec::new();
        crate::message::encode_properties_into(&props, &mut raw);
        let mut out = Vec::new();
        crate::codec::put_content(&mut out, 1, &raw, b"", 4096);
        assert_eq!(check_frame(2, &out[7..out.len() - 1]), Err(TooDeep));
        let shallow = amq_protocol::protocol::BasicProperties::default()
            .with_content_encoding("gzip".into())
            .with_headers(nested_tables(3));
        let mut raw = Vec::new();
        crate::message::encode_properties_into(&shallow, &mut raw);
        let mut out = Vec::new();
        crate::codec::put_content(&mut out, 1, &raw, b"", 4096);
        assert_eq!(check_frame(2, &out[7..out.len() - 1]), Ok(()));
    }
}
