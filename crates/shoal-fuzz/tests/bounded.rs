//! The fuzz harnesses as bounded property tests, run by `cargo test` on
//! stable: every harness on a server-sized stack, fed arbitrary bytes and
//! inputs shaped like its protocol (so the generator reaches past the first
//! byte check), up to the broker's frame maximum.
//!
//! libFuzzer runs the same harnesses without a bound (`fuzz/`, nightly); this
//! file is the floor every `cargo test` keeps.

use proptest::collection::vec;
use proptest::prelude::*;
use shoal_fuzz::{on_server_stack, MAX_INPUT, TARGETS};

fn run(name: &str, data: &[u8]) {
    let (_, f) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no harness {name}"));
    on_server_stack(*f, data);
}

/// A field table nesting `levels` deep (`b'F'` a table, `b'A'` an array at
/// each level), as a client could put in client-properties or headers.
fn nested_table(levels: &[u8]) -> Vec<u8> {
    // Built inside out: the innermost table is empty.
    let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec();
    for kind in levels.iter().rev() {
        let mut entry = Vec::new();
        match kind {
            b'A' => {
                // an array holding one table value
                entry.push(b'F');
                entry.extend_from_slice(&inner);
                let mut arr = Vec::new();
                arr.extend_from_slice(&(entry.len() as u32).to_be_bytes());
                arr.extend_from_slice(&entry);
                let mut field = vec![1, b'k', b'A'];
                field.extend_from_slice(&arr);
                inner = field;
            }
            _ => {
                let mut field = vec![1, b'k', b'F'];
                field.extend_from_slice(&inner);
                inner = field;
            }
        }
        let mut table = (inner.len() as u32).to_be_bytes().to_vec();
        table.extend_from_slice(&inner);
        inner = table;
    }
    inner
}

/// One AMQP frame around `payload`.
fn frame(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(end);
    f
}

/// A `connection.start-ok` whose client-properties table is `table`.
fn start_ok(table: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 10, 0, 11];
    p.extend_from_slice(table);
    p.extend_from_slice(&[5, b'P', b'L', b'A', b'I', b'N']);
    p.extend_from_slice(&5u32.to_be_bytes());
    p.extend_from_slice(b"\0u\0pw");
    p.extend_from_slice(&[5, b'e', b'n', b'_', b'U', b'S']);
    frame(1, 0, &p, 0xCE)
}

/// A content header (basic class) whose headers table is `table`.
fn content_header(table: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 0];
    p.extend_from_slice(&5u64.to_be_bytes());
    p.extend_from_slice(&0x2000u16.to_be_bytes()); // headers present
    p.extend_from_slice(table);
    frame(2, 1, &p, 0xCE)
}

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> + Clone {
    proptest::sample::select(options)
}

/// HTTP/1.x head lines, with the framing headers and line ends that matter.
fn http_head() -> impl Strategy<Value = Vec<u8>> {
    let start = pick(&[
        "GET / HTTP/1.1",
        "POST /p HTTP/1.1",
        "HEAD /h HTTP/1.0",
        "HTTP/1.1 200 OK",
        "HTTP/1.1 204 No Content",
        "HTTP/1.1 304 Not Modified",
        "HTTP/1.0 101 Switching",
        "GET  / HTTP/1.1",
        "GET /\0 HTTP/1.1",
        "",
    ]);
    let header = pick(&[
        "Host: a",
        "Content-Length: 5",
        "Content-Length: 5, 5",
        "Content-Length: -1",
        "Content-Length: 99999999999999999999",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: chunked, gzip",
        "Transfer-Encoding : chunked",
        "Connection: close, upgrade",
        "Upgrade: websocket",
        "Expect: 100-continue",
        " folded",
        "X: \x01\x7f",
        "Bad Name: v",
        ":",
    ]);
    let eol = pick(&["\r\n", "\n", "\r", ""]);
    (
        start,
        vec((header, eol.clone()), 0..12),
        eol,
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(start, headers, end, tail)| {
            let mut out = start.as_bytes().to_vec();
            out.extend_from_slice(b"\r\n");
            for (h, e) in headers {
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(e.as_bytes());
            }
            out.extend_from_slice(end.as_bytes());
            out.extend_from_slice(&tail);
            out
        })
}

/// A chunked body: size lines (some malformed), extensions, data, trailers.
fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let size = pick(&[
        "0",
        "1",
        "5",
        "a",
        "A",
        "ffffffffffffffffff",
        "5 6",
        " 5",
        "5 ",
        "-1",
        "",
        "0x5",
    ]);
    let ext = pick(&["", ";x", ";x=1", ";x=\"q\"", "; x", ";\0", "\t;x"]);
    let eol = pick(&["\r\n", "\n", "\r", "\r\r\n"]);
    let trailer = pick(&["X-T: 1", "Content-Length: 1", "GET / HTTP/1.1", " fold", ""]);
    (
        vec(
            (size, ext, eol.clone(), vec(any::<u8>(), 0..20), eol.clone()),
            0..6,
        ),
        vec((trailer, eol.clone()), 0..3),
        eol,
    )
        .prop_map(|(chunks, trailers, end)| {
            let mut out = Vec::new();
            for (s, x, e1, data, e2) in chunks {
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(x.as_bytes());
                out.extend_from_slice(e1.as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(e2.as_bytes());
            }
            out.extend_from_slice(b"0\r\n");
            for (t, e) in trailers {
                out.extend_from_slice(t.as_bytes());
                out.extend_from_slice(e.as_bytes());
            }
            out.extend_from_slice(end.as_bytes());
            out
        })
}

/// statsd and DogStatsD lines.
fn statsd_lines() -> impl Strategy<Value = Vec<u8>> {
    let name = "[a-zA-Z0-9._ /;=\\-:|@#\u{0}é]{0,12}";
    let value = pick(&[
        "1",
        "-1",
        "+3",
        "1.5e3",
        "NaN",
        "inf",
        "",
        "1:2:3",
        "999999999999999999999",
    ]);
    let kind = pick(&["c", "g", "ms", "h", "s", "d", "x", ""]);
    let extra = pick(&[
        "",
        "|@0.5",
        "|@0",
        "|@-1",
        "|#a:b,c",
        "|#",
        "|c:abc",
        "|T1700000000",
        "|e:x",
        "|card:high",
        "|@0.1|#t",
    ]);
    let line = (name, value, kind, extra).prop_map(|(n, v, k, x)| format!("{n}:{v}|{k}{x}"));
    let event = pick(&[
        "_e{5,4}:title|text|#a",
        "_e{99,1}:x|y",
        "_sc|name|0|#t",
        "_sc|x",
    ]);
    vec(
        prop_oneof![3 => line, 1 => event.prop_map(str::to_owned)],
        0..20,
    )
    .prop_map(|lines| lines.join("\n").into_bytes())
}

/// JSON-ish lines: values, deep nesting, broken escapes.
fn json_lines() -> impl Strategy<Value = Vec<u8>> {
    let piece = pick(&[
        "{\"cmd\":\"status\"}",
        "{\"cmd\":\"NODE_CLUSTER\",\"act\":\"online\"}",
        "{\"a\":[1,2,{\"b\":null}]}",
        "\"\\ud800\"",
        "\"\\u00\"",
        "1e99999",
        "-0",
        "[",
        "]",
        "{",
        "}",
        "\n",
        "\u{0}",
    ]);
    (vec(piece, 0..30), 0usize..20_000).prop_map(|(pieces, depth)| {
        let mut out = "[".repeat(depth).into_bytes();
        for p in pieces {
            out.extend_from_slice(p.as_bytes());
        }
        out.push(b'\n');
        out
    })
}

/// TOML with the keys the servers read and some hostile shapes.
fn toml_text() -> impl Strategy<Value = Vec<u8>> {
    let line = pick(&[
        "listen = \"127.0.0.1:0\"",
        "listen = 5",
        "[upstream.web]",
        "servers = [\"127.0.0.1:1\"]",
        "servers = [\"127.0.0.1:1 weight=0\"]",
        "[[route]]",
        "path = \"/\"",
        "upstream = \"missing\"",
        "[users.guest]",
        "password = \"guest\"",
        "frame_max = 0",
        "frame_max = 99999999999",
        "memory_high_watermark = \"1.5\"",
        "disk_free_limit = \"-1MB\"",
        "flush_interval = \"0s\"",
        "interval = \"1x\"",
        "workers = -1",
        "command = []",
        "a.b.c.d = 1",
        "x = { y = { z = 1 } }",
        "[",
        "=",
        "\"",
    ]);
    (vec(line, 0..16), 0usize..5_000).prop_map(|(lines, depth)| {
        let mut out = lines.join("\n");
        out.push_str("\ndeep = ");
        out.push_str(&"[".repeat(depth));
        out.into_bytes()
    })
}

#[test]
fn every_harness_survives_nothing_and_the_maximum_input() {
    for (name, f) in TARGETS {
        for data in [vec![], vec![0u8; MAX_INPUT], vec![0xFFu8; MAX_INPUT]] {
            on_server_stack(*f, &data);
        }
        eprintln!("{name}: ok");
    }
}

/// Item 1 of issue 10: nested tables in start-ok and in content headers,
/// far deeper than a 2 MiB stack could recurse through.
#[test]
fn deeply_nested_field_tables_are_refused_on_a_server_stack() {
    for levels in [
        vec![b'F'; 5_000],
        vec![b'A'; 5_000],
        b"FA".repeat(3_000),
        vec![b'F'; 64],
    ] {
        let table = nested_table(&levels);
        run("amqp_field_table", &table);
        run("amqp_frames", &start_ok(&table));
        run("amqp_frames", &content_header(&table));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_bytes(target in 0..TARGETS.len(), data in vec(any::<u8>(), 0..8192)) {
        on_server_stack(TARGETS[target].1, &data);
    }

    #[test]
    fn large_arbitrary_inputs(target in 0..TARGETS.len(), len in 0..MAX_INPUT, seed in any::<u64>()) {
        // A cheap deterministic fill, so large cases do not cost the generator.
        let mut x = seed | 1;
        let data: Vec<u8> = (0..len).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect();
        on_server_stack(TARGETS[target].1, &data);
    }

    #[test]
    fn amqp_frames_shaped_like_a_client(
        frames in vec((prop_oneof![Just(1u8), Just(2), Just(3), Just(8), any::<u8>()],
                       any::<u16>(),
                       vec(any::<u8>(), 0..2048),
                       prop_oneof![4 => Just(0xCEu8), 1 => any::<u8>()]), 1..6),
        levels in vec(prop_oneof![Just(b'F'), Just(b'A')], 0..200),
    ) {
        let mut data = Vec::new();
        for (kind, ch, payload, end) in frames {
            data.extend(frame(kind, ch, &payload, end));
        }
        data.extend(start_ok(&nested_table(&levels)));
        run("amqp_frames", &data);
        run("amqp_field_table", &nested_table(&levels));
    }

    #[test]
    fn http_heads(head in http_head()) {
        run("http_request_head", &head);
        run("http_response_head", &head);
    }

    #[test]
    fn chunked_bodies(body in chunked_body()) {
        run("http_chunked", &body);
    }

    #[test]
    fn statsd_datagrams(d in statsd_lines()) {
        run("statsd_datagram", &d);
    }

    #[test]
    fn json_lines_for_ipc_and_control(d in json_lines()) {
        run("ipc_stream", &d);
        run("control_request", &d);
    }

    #[test]
    fn config_files(t in toml_text()) {
        run("toml_config", &t);
    }
}

/// Found by libFuzzer in CI: a table holding one `d` (double) field whose
/// bytes are a NaN; the harness asserted the copy equal to the original.
#[test]
fn a_nan_in_a_field_table_is_not_a_crash() {
    run(
        "amqp_field_table",
        &[
            0, 0, 0, 10, 0, 100, 255, 255, 255, 255, 255, 255, 255, 255, 1, 234, 45, 255, 0, 0, 0,
            0, 0,
        ],
    );
}
