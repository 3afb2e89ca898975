//! Rewriting heads for the other side: a request head for the upstream
//! (hop-by-hop fields out, `X-Forwarded-*` and `Via` in, HTTP/1.1), a
//! response head for the client (framing fixed for its HTTP version), the
//! proxy's own small responses, and the integer formatting they share.

use super::{Framing, HeaderPos, RequestInfo, ResponseInfo};

/// Header names that belong to one connection and are never forwarded.
fn hop_by_hop(name: &[u8]) -> bool {
    // `Trailer` is end-to-end (RFC 9110 §6.6.2): it stays.
    const HOP: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"upgrade",
        b"transfer-encoding",
        b"content-length",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn listed(buf: &[u8], tokens: &[(usize, usize)], name: &[u8]) -> bool {
    tokens
        .iter()
        .any(|&(s, e)| buf[s..e].eq_ignore_ascii_case(name))
}

/// Connection facts used when rewriting a request for an upstream.
pub struct Forwarding<'a> {
    /// The client's IP as text.
    pub client_ip: &'a str,
    /// `http` or `https`.
    pub proto: &'a str,
    /// Host to send when the client sent none (HTTP/1.0).
    pub fallback_host: &'a str,
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Write the request head to send upstream into `out` (cleared first):
/// HTTP/1.1, `Host` kept, hop-by-hop fields dropped, `X-Forwarded-For`
/// extended, `X-Forwarded-Proto`/`-Host` set, `Via` extended, and
/// `Connection: upgrade` + `Upgrade` for upgrade requests.
pub fn write_upstream_request(
    buf: &[u8],
    headers: &[HeaderPos],
    info: &RequestInfo,
    fwd: &Forwarding<'_>,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(info.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(info.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff: Option<&[u8]> = None;
    let mut via: Option<&[u8]> = None;
    for h in headers {
        let name = h.name(buf);
        if hop_by_hop(name) || listed(buf, &info.conn_tokens, name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff = Some(h.value(buf));
            continue;
        }
        if name.eq_ignore_ascii_case(b"via") {
            via = Some(h.value(buf));
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
            || (info.expect_continue && name.eq_ignore_ascii_case(b"expect"))
            || (info.host_from_target && name.eq_ignore_ascii_case(b"host"))
        {
            continue;
        }
        push_header(out, name, h.value(buf));
    }
    if info.host.is_empty() {
        push_header(out, b"Host", fwd.fallback_host.as_bytes());
    } else if info.host_from_target {
        push_header(out, b"Host", info.host.as_bytes());
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prev) = xff {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(fwd.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    push_header(out, b"X-Forwarded-Proto", fwd.proto.as_bytes());
    if !info.host.is_empty() {
        push_header(out, b"X-Forwarded-Host", info.host.as_bytes());
    }
    out.extend_from_slice(b"Via: ");
    if let Some(prev) = via {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(if info.minor == 0 {
        b"1.0 shoal\r\n"
    } else {
        b"1.1 shoal\r\n"
    });
    match info.body() {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {
            if matches!(info.method.as_str(), "POST" | "PUT" | "PATCH") {
                out.extend_from_slice(b"Content-Length: 0\r\n");
            }
        }
    }
    if let Some(u) = &info.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        push_header(out, b"Upgrade", u.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response head is sent to the client.
pub struct ClientSide {
    /// Client speaks HTTP/1.0 (chunked bodies are decoded for it).
    pub http10: bool,
    /// The proxy will keep the client connection open after this response.
    pub keep_alive: bool,
    /// This is a `101 Switching Protocols` being passed through.
    pub upgrade: Option<String>,
    /// A read-until-close body is sent chunked (HTTP/1.1 clients).
    pub rechunk: bool,
}

/// Write the response head for the client into `out` (cleared first).
pub fn write_client_response(
    buf: &[u8],
    headers: &[HeaderPos],
    info: &ResponseInfo,
    side: &ClientSide,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(if side.http10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(itoa(info.status as u64).as_bytes());
    out.push(b' ');
    if info.reason.1 > info.reason.0 {
        out.extend_from_slice(&buf[info.reason.0..info.reason.1]);
    } else {
        out.extend_from_slice(reason_phrase(info.status).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let framing = info.framing.unwrap_or(Framing::None);
    for h in headers {
        let name = h.name(buf);
        if name.eq_ignore_ascii_case(b"content-length") {
            // Kept as sent when it delimits the body (also for HEAD and
            // 304); never on 1xx or 204 (RFC 9110 §8.6).
            let no_length = info.status == 204 || (100..200).contains(&info.status);
            if framing != Framing::Chunked && !no_length {
                push_header(out, name, h.value(buf));
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if framing == Framing::Chunked && !side.http10 {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
            continue;
        }
        if hop_by_hop(name) || listed(buf, &info.conn_tokens, name) {
            continue;
        }
        push_header(out, name, h.value(buf));
    }
    if side.rechunk {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if let Some(u) = &side.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        push_header(out, b"Upgrade", u.as_bytes());
    } else if !side.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if side.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A short response the proxy makes itself (errors, admin).
pub fn simple_response(
    status: u16,
    content_type: &str,
    body: &[u8],
    close: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa(status as u64).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nServer: shoal\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa(body.len() as u64).as_bytes());
    out.extend_from_slice(if close {
        b"\r\nConnection: close\r\n\r\n"
    } else {
        b"\r\n\r\n"
    });
    out.extend_from_slice(body);
}

/// The standard reason phrase for the statuses the proxy produces.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Decimal text of `n` without allocating on the heap.
pub fn itoa(mut n: u64) -> ItoaBuf {
    let mut b = ItoaBuf {
        buf: [0; 20],
        start: 20,
    };
    loop {
        b.start -= 1;
        b.buf[b.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b
}

/// The result of [`itoa`].
pub struct ItoaBuf {
    buf: [u8; 20],
    start: usize,
}

impl ItoaBuf {
    /// The digits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}
