//! Property tests (a fuzz stand-in) for the HTTP/1 codec: arbitrary input
//! never panics, and chunked bodies split anywhere decode to what was sent.

use proptest::prelude::*;
use shoal_proxy::codec::{
    parse_request, parse_response, Chunked, ChunkedOut, RequestInfo, ResponseInfo,
};

fn encode(data: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes.get(i).copied().unwrap_or(7).clamp(1, rest.len());
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut info = RequestInfo::default();
        let mut h = Vec::new();
        let _ = parse_request(&data, 100, &mut info, &mut h);
        let mut r = ResponseInfo::default();
        let _ = parse_response(&data, 100, false, &mut r, &mut h);
        let mut c = Chunked::default();
        let _ = c.feed(&data, &mut Vec::new(), ChunkedOut::Reencoded);
    }

    #[test]
    fn request_like_input_never_panics(
        method in "(GET|POST|PUT|HEAD)",
        path in "/[a-z0-9/?=&%]{0,40}",
        headers in proptest::collection::vec(("[A-Za-z-]{1,20}", "[ -~]{0,40}"), 0..20),
    ) {
        let mut text = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in &headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("\r\n");
        let mut info = RequestInfo::default();
        let mut h = Vec::new();
        let _ = parse_request(text.as_bytes(), 100, &mut info, &mut h);
    }

    #[test]
    fn chunked_round_trips_across_any_split(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        sizes in proptest::collection::vec(1usize..600, 0..20),
        split in proptest::collection::vec(1usize..300, 1..40),
    ) {
        let mut wire = encode(&data, &sizes);
        wire.extend_from_slice(b"NEXT");
        let mut c = Chunked::default();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut k = 0;
        while !c.done() && pos < wire.len() {
            let step = split[k % split.len()].min(wire.len() - pos);
            let used = c
                .feed(&wire[pos..pos + step], &mut out, ChunkedOut::Data)
                .unwrap();
            pos += used;
            k += 1;
            if used < step {
                break;
            }
        }
        prop_assert!(c.done());
        prop_assert_eq!(&wire[pos..], b"NEXT");
        prop_assert_eq!(out, data);
    }
}

/// How a lenient origin reads a chunked body (as h11, nginx and HAProxy
/// do): lines may end in a bare LF, extensions and whitespace after the size
/// are skipped, and the trailer section ends at the first empty line.
/// Returns the data and how many bytes the body took, or `None`.
fn lenient_origin(wire: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut pos = 0;
    let mut data = Vec::new();
    let line = |pos: &mut usize| -> Option<Vec<u8>> {
        let end = wire[*pos..].iter().position(|&b| b == b'\n')? + *pos;
        let l = wire[*pos..end]
            .strip_suffix(b"\r")
            .unwrap_or(&wire[*pos..end]);
        *pos = end + 1;
        Some(l.to_vec())
    };
    loop {
        let l = line(&mut pos)?;
        let digits: Vec<u8> = l
            .iter()
            .copied()
            .take_while(u8::is_ascii_hexdigit)
            .collect();
        let n = usize::from_str_radix(std::str::from_utf8(&digits).ok()?, 16).ok()?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(wire.get(pos..pos + n)?);
        pos += n;
        line(&mut pos)?;
    }
    while !line(&mut pos)?.is_empty() {}
    Some((data, pos))
}

/// A chunked body as an attacker might shape it: chunks with extensions,
/// trailers, line ends that are CRLF or a bare LF, stray whitespace, a hidden
/// request after it.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let eol = prop_oneof![4 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..]), 1 => Just(&b"\r"[..])];
    let chunk = (
        proptest::collection::vec(any::<u8>(), 1..40),
        prop_oneof![Just(String::new()), "[ ;a-z=\"\t\x00]{0,8}"],
        eol.clone(),
        eol.clone(),
    );
    let trailer = ("[A-Za-z-]{0,8}", "[: a-z\x01]{0,8}", eol.clone());
    (
        proptest::collection::vec(chunk, 0..5),
        proptest::collection::vec(trailer, 0..3),
        eol.clone(),
        eol,
    )
        .prop_map(|(chunks, trailers, last_eol, end_eol)| {
            let mut w = Vec::new();
            for (data, ext, e1, e2) in chunks {
                w.extend_from_slice(format!("{:x}{ext}", data.len()).as_bytes());
                w.extend_from_slice(e1);
                w.extend_from_slice(&data);
                w.extend_from_slice(e2);
            }
            w.extend_from_slice(b"0");
            w.extend_from_slice(last_eol);
            for (name, value, e) in trailers {
                w.extend_from_slice(name.as_bytes());
                w.extend_from_slice(value.as_bytes());
                w.extend_from_slice(e);
            }
            w.extend_from_slice(end_eol);
            w.extend_from_slice(b"GET /hidden HTTP/1.1\r\nHost: x\r\n\r\n");
            w
        })
}

proptest! {
    /// Whatever the proxy accepts, it writes anew so that a lenient origin
    /// reads the same data and sees the body end exactly where the proxy's
    /// output ends: nothing is left over to become a second request.
    #[test]
    fn what_the_origin_parses_is_what_the_proxy_parsed(wire in hostile_body(), step in 1usize..64) {
        let mut c = Chunked::default();
        let mut forwarded = Vec::new();
        let mut decoded = Vec::new();
        let mut d = Chunked::default();
        let mut pos = 0;
        while pos < wire.len() && !c.done() {
            let piece = &wire[pos..(pos + step).min(wire.len())];
            let Ok(used) = c.feed(piece, &mut forwarded, ChunkedOut::Reencoded) else {
                return Ok(());
            };
            prop_assert_eq!(d.feed(&piece[..used], &mut decoded, ChunkedOut::Data), Ok(used));
            pos += used;
        }
        if !c.done() {
            // The proxy is still waiting for the body's end; so would the
            // origin be, on what it was sent.
            prop_assert!(lenient_origin(&forwarded).is_none());
            return Ok(());
        }
        let (origin_data, origin_used) = lenient_origin(&forwarded).expect("origin parses");
        prop_assert_eq!(origin_used, forwarded.len());
        prop_assert_eq!(origin_data, decoded);
    }
}
