//! One harness per parser of untrusted input. Each takes arbitrary bytes,
//! runs them through the parser the server runs them through, and asserts
//! what a server relies on: no panic, a bounded result, the documented error.
//! The same functions are driven by libFuzzer (`fuzz/`, nightly) and by the
//! bounded property tests in `tests/bounded.rs` (stable, in `cargo test`).
//!
//! Servers parse on tokio worker threads with 2 MiB stacks; a harness must be
//! run on such a stack ([`on_server_stack`], or `ulimit -s 2048` for
//! libFuzzer) so that unbounded recursion is found as the overflow it is.
//!
//! # Layout
//! - [`TARGETS`]: every harness by name (the fuzz targets' names).
//! - [`amqp_frames`], [`amqp_field_table`]: the broker's frame decoder and
//!   the field-table nesting check in front of `amq-protocol`.
//! - [`http_request_head`], [`http_response_head`], [`http_chunked`]: the
//!   proxy's HTTP/1.x head parsers and chunked-body follower.
//! - [`statsd_datagram`]: the collector's line and segment parser.
//! - [`ipc_stream`]: the IPC channel's line framer and JSON decoding.
//! - [`control_request`]: a control-socket request line.
//! - [`toml_config`]: the broker's, proxy's, cluster's and collector's
//!   config files.

use bytes::BytesMut;
use std::path::Path;

/// The stack size of a tokio runtime worker thread (tokio's default).
pub const SERVER_STACK: usize = 2 << 20;

/// Largest input the harnesses are meant for: the broker's default
/// `frame_max` (131 072) plus headroom for several frames.
pub const MAX_INPUT: usize = 256 * 1024;

/// A harness: arbitrary bytes in, a panic on a broken promise.
pub type Harness = fn(&[u8]);

/// Every harness, by name.
pub const TARGETS: &[(&str, Harness)] = &[
    ("amqp_frames", amqp_frames),
    ("amqp_field_table", amqp_field_table),
    ("http_request_head", http_request_head),
    ("http_response_head", http_response_head),
    ("http_chunked", http_chunked),
    ("statsd_datagram", statsd_datagram),
    ("ipc_stream", ipc_stream),
    ("control_request", control_request),
    ("toml_config", toml_config),
];

/// Run `f(data)` on a thread with a server's stack size; a panic (or a
/// stack overflow, which aborts) fails the caller.
pub fn on_server_stack(f: Harness, data: &[u8]) {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .stack_size(SERVER_STACK)
            .spawn_scoped(s, || f(data))
            .expect("spawn a harness thread");
        if let Err(p) = h.join() {
            std::panic::resume_unwind(p);
        }
    });
}

/// AMQP frames as a client sends them: each decodes, asks for more bytes,
/// or fails with 501 FRAME_ERROR.
pub fn amqp_frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        match shoal_broker::codec::decode(&mut buf, 131_072) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                assert_eq!(e.code, 501, "{e}");
                break;
            }
        }
    }
}

/// A field table: refused by the nesting check, or parsed (and dropped,
/// compared and re-encoded, the recursive passes the broker makes).
pub fn amqp_field_table(data: &[u8]) {
    if shoal_broker::nesting::check_table(data).is_err() {
        return;
    }
    if let Ok((_, table)) = amq_protocol::types::parsing::parse_field_table(data) {
        // Compared as the broker compares header tables; not asserted
        // equal, since a NaN double is unequal to itself (found by
        // libFuzzer: a table holding one `d` field of 0xff bytes).
        let copy = table.clone();
        let _ = std::hint::black_box(copy == table);
        let _ = amq_protocol::types::generation::gen_field_table(&table)(
            amq_protocol::frame::WriteContext::from(Vec::new()),
        );
    }
}

/// An HTTP/1.x request head: a head, "need more", or a 4xx rejection.
pub fn http_request_head(data: &[u8]) {
    let mut info = shoal_proxy::codec::RequestInfo::default();
    let mut headers = Vec::new();
    match shoal_proxy::codec::parse_request(data, 100, &mut info, &mut headers) {
        Ok(Some(n)) => {
            assert!(n <= data.len());
            let _ = info.body();
        }
        Ok(None) => {}
        // A malformed head is a 4xx; a well-formed version it does not
        // speak is 505. Nothing else, and never a panic.
        Err(r) => assert!((400..500).contains(&r.status) || r.status == 505, "{r:?}"),
    }
}

/// An HTTP/1.x response head from an upstream.
pub fn http_response_head(data: &[u8]) {
    let mut info = shoal_proxy::codec::ResponseInfo::default();
    let mut headers = Vec::new();
    let head_request = data.first().is_some_and(|b| b & 1 == 1);
    if let Ok(Some(n)) =
        shoal_proxy::codec::parse_response(data, 100, head_request, &mut info, &mut headers)
    {
        assert!(n <= data.len());
    }
}

/// A chunked body, fed whole and in two pieces: both agree, the body never
/// claims more than the input, and what the proxy writes anew is canonical:
/// read again it is the same body, ends exactly where it ends, and carries
/// the same data (what an origin parses is what the proxy parsed).
pub fn http_chunked(data: &[u8]) {
    use shoal_proxy::codec::{Chunked, ChunkedOut};
    let feed_split = |mode: ChunkedOut| {
        let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
        let mut c = Chunked::default();
        let mut out = Vec::new();
        let r = c.feed(&data[..cut], &mut out, mode).and_then(|a| {
            if c.done() {
                Ok(a)
            } else {
                c.feed(&data[cut..], &mut out, mode).map(|b| a + b)
            }
        });
        (r, c.done(), out)
    };
    let mut whole = Chunked::default();
    let mut wire = Vec::new();
    let r = whole.feed(data, &mut wire, ChunkedOut::Reencoded);
    let (r_split, done_split, wire_split) = feed_split(ChunkedOut::Reencoded);
    assert_eq!(r, r_split);
    let Ok(used) = r else { return };
    assert!(used <= data.len());
    assert_eq!(whole.done(), done_split);
    assert_eq!(wire, wire_split);
    if !whole.done() {
        return;
    }
    let (_, _, decoded) = feed_split(ChunkedOut::Data);
    let mut again = Chunked::default();
    let mut rewire = Vec::new();
    assert_eq!(
        again.feed(&wire, &mut rewire, ChunkedOut::Reencoded),
        Ok(wire.len())
    );
    assert!(again.done());
    assert_eq!(rewire, wire, "canonical output is a fixed point");
    let mut redecoded = Vec::new();
    let mut d = Chunked::default();
    assert_eq!(
        d.feed(&wire, &mut redecoded, ChunkedOut::Data),
        Ok(wire.len())
    );
    assert_eq!(redecoded, decoded);
}

/// A statsd/DogStatsD datagram: every line and segment parses or is
/// refused, and every value and tag of a parsed line can be walked.
pub fn statsd_datagram(data: &[u8]) {
    use shoal_dgram::statsd::parse;
    for line in parse::lines(data) {
        parse::parse_segments(line, |r| {
            if let Ok(l) = r {
                l.for_each_value(|_| {});
                l.for_each_tag(|_, _| {});
            }
        });
    }
}

/// The IPC byte stream from a child: lines capped at 64 KiB, each line JSON
/// (or refused), as the channel's reader decodes it.
pub fn ipc_stream(data: &[u8]) {
    use shoal_process::framing::{Frame, Framer};
    let mut framer = Framer::new(64 * 1024);
    let mut frames = Vec::new();
    let cut = data.len() / 2;
    framer.push(&data[..cut], &mut frames);
    framer.push(&data[cut..], &mut frames);
    for f in frames {
        if let Frame::Line(_, line) = f {
            assert!(line.len() <= 64 * 1024);
            let _ = serde_json::from_slice::<serde_json::Value>(&line);
        }
    }
}

/// A control-socket request line: JSON or refused, and the error reply
/// renders.
pub fn control_request(data: &[u8]) {
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(v) => {
            let _ = serde_json::to_vec(&shoal_core::control::ok(v));
        }
        Err(e) => {
            let _ = serde_json::to_vec(&shoal_core::control::err(e));
        }
    }
}

/// A config file, as each server's loader reads it: valid, or an error
/// that renders (naming file, line and key).
pub fn toml_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.toml");
    if let Err(e) = shoal_broker::Config::parse(file, text) {
        let _ = e.to_string();
    }
    if let Err(e) = shoal_proxy::config::Config::parse(file, text) {
        let _ = e.to_string();
    }
    if let Err(e) = shoal_cluster::file::parse(file, text) {
        let _ = e.to_string();
    }
    match shoal_core::config::parse_toml::<shoal_dgram::statsd::FileConfig>(file, text) {
        Ok(fc) => {
            if let Err(e) = fc.into_config(file, text) {
                let _ = e.to_string();
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
