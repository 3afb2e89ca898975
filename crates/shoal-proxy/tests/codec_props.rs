//! Property tests (a fuzz stand-in) for the HTTP/1 codec: arbitrary input
//! never panics, and chunked bodies split anywhere decode to what was sent.

use proptest::prelude::*;
use shoal_proxy::codec::{parse_request, parse_response, Chunked, RequestInfo, ResponseInfo};

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
        let _ = c.feed(&data, Some(&mut Vec::new()));
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
            let used = c.feed(&wire[pos..pos + step], Some(&mut out)).unwrap();
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
