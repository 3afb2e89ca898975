//! HTTP/1.x framing: a reusable read buffer, request and response head
//! parsing (httparse) with the smuggling checks, the chunked-body state
//! machine, and the rewriting of heads for the other side (hop-by-hop headers
//! out, `X-Forwarded-*` and `Via` in).
//!
//! Parsing never allocates per request: header positions go into a reused
//! `Vec<HeaderPos>`, and the strings a request needs later (method, target,
//! host) into reused `String`s.

use std::io;
use std::mem::MaybeUninit;
use tokio::io::{AsyncRead, AsyncReadExt};

pub use crate::chunked::{BadChunk, Chunked, ChunkedOut};
use crate::config::HEADERS_CAP;

mod rewrite;
pub use rewrite::{
    itoa, reason_phrase, simple_response, write_client_response, write_upstream_request,
    ClientSide, Forwarding, ItoaBuf,
};

/// Spare read buffers of the usual size, per thread (so per worker), for
/// connections that gave theirs back while idle: taking one is a pop, not an
/// allocation. At most this many are kept.
const SPARES_MAX: usize = 64;

thread_local! {
    static SPARES: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most a buffer grows to for streaming (see [`ReadBuf::fill`]).
const STREAM_MAX: usize = 64 * 1024;

/// A growable read buffer with a consumed prefix. Memory is taken on the
/// first read (so idle connections that never send cost nothing here), and
/// reads go into spare capacity without zeroing it first.
pub struct ReadBuf {
    /// `data[start..]` is unread; `data.len()` is the end of what was read.
    data: Vec<u8>,
    initial: usize,
    start: usize,
    /// The last read filled all the room there was: more is likely waiting.
    brimmed: bool,
}

impl ReadBuf {
    /// A buffer of `cap` bytes to start with.
    pub fn new(cap: usize) -> Self {
        ReadBuf {
            data: Vec::new(),
            initial: cap.max(64),
            start: 0,
            brimmed: false,
        }
    }

    /// The unread bytes.
    pub fn chunk(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Number of unread bytes.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Give the memory back (the next read takes it again): a buffer of
    /// the initial size goes to this thread's spares. Anything unread is
    /// dropped.
    pub fn release(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        self.start = 0;
        self.brimmed = false;
        if data.capacity() == self.initial {
            data.clear();
            SPARES.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < SPARES_MAX {
                    s.push(data);
                }
            });
        }
    }

    /// Whether the last read filled all the room there was: more bytes are
    /// likely waiting in the socket already.
    pub fn brimmed(&self) -> bool {
        self.brimmed
    }

    /// Drop everything buffered.
    pub fn clear(&mut self) {
        self.data.clear();
        self.start = 0;
    }

    /// Mark `n` bytes as read.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
        if self.start == self.data.len() {
            self.clear();
        }
    }

    /// Read more bytes from `r`, growing up to `max` bytes of unread data.
    /// Returns the count read (0 at EOF). Fails with `OutOfMemory` kind when
    /// the unread data already fills `max`.
    ///
    /// A buffer starts small (most heads and bodies are), and one that is
    /// being streamed through grows: when the last read filled all the room
    /// there was, an emptied buffer doubles (up to 64 KiB, and `max`) before
    /// the next read, so a large body moves in fewer, larger reads.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R, max: usize) -> io::Result<usize> {
        if self.data.capacity() == 0 {
            let initial = self.initial;
            self.data = SPARES
                .with(|s| s.borrow_mut().pop())
                .filter(|b| b.capacity() == initial)
                .unwrap_or_else(|| Vec::with_capacity(initial));
        }
        if self.data.len() == self.data.capacity() {
            if self.start > 0 {
                self.data.drain(..self.start);
                self.start = 0;
            } else if self.data.capacity() < max {
                let want = (self.data.capacity() * 2).clamp(1024, max);
                self.data.reserve_exact(want - self.data.len());
            } else {
                return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer full"));
            }
        } else if self.brimmed && self.data.is_empty() {
            let cap = self.data.capacity();
            let want = (cap * 2).min(STREAM_MAX).min(max);
            if want > cap {
                self.data = Vec::with_capacity(want);
            }
        }
        let room = self.data.capacity() - self.data.len();
        let n = r.read_buf(&mut self.data).await?;
        self.brimmed = n == room;
        Ok(n)
    }
}

/// Where one header's name and value sit in the buffer.
#[derive(Clone, Copy, Debug)]
pub struct HeaderPos {
    pub name: (usize, usize),
    pub value: (usize, usize),
}

impl HeaderPos {
    /// The name bytes in `buf`.
    pub fn name<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.name.0..self.name.1]
    }
    /// The value bytes in `buf`.
    pub fn value<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.value.0..self.value.1]
    }
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// A request head the proxy refuses, with the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

const fn reject(status: u16, reason: &'static str) -> Reject {
    Reject { status, reason }
}

/// What the proxy needs to know about a request (reused between requests).
#[derive(Default, Debug)]
pub struct RequestInfo {
    pub method: String,
    pub target: String,
    /// The Host header as sent (empty if none).
    pub host: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub framing: Option<Framing>,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
    /// `Upgrade` protocol when the client asks to switch (and said so in `Connection`).
    pub upgrade: Option<String>,
    pub expect_continue: bool,
    /// The target was in absolute form: `host` is its authority, and the
    /// client's `Host` field is replaced by it upstream (RFC 9112 §3.2.2).
    pub host_from_target: bool,
    pub referer: String,
    pub user_agent: String,
    /// Positions of `Connection`-listed tokens (removed as hop-by-hop).
    pub conn_tokens: Vec<(usize, usize)>,
}

impl RequestInfo {
    /// Whether a retry on another server is safe (RFC 9110 idempotent methods).
    pub fn idempotent(&self) -> bool {
        matches!(
            self.method.as_str(),
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        )
    }

    /// The framing decided at parse time.
    pub fn body(&self) -> Framing {
        self.framing.unwrap_or(Framing::None)
    }
}

fn offset(buf: &[u8], part: &[u8]) -> (usize, usize) {
    let s = part.as_ptr() as usize - buf.as_ptr() as usize;
    (s, s + part.len())
}

/// Note where a header's name and value sit in `buf`.
#[inline]
fn record_header(headers: &mut Vec<HeaderPos>, buf: &[u8], name: &[u8], value: &[u8]) {
    headers.push(HeaderPos {
        name: offset(buf, name),
        value: offset(buf, value),
    });
}

/// Fold one `Content-Length` value into the one seen so far: `None` when it
/// is malformed or differs from an earlier one (both are smuggling signs).
#[inline]
fn merge_content_length(seen: Option<u64>, value: &[u8]) -> Option<u64> {
    let len = parse_content_length(value)?;
    match seen {
        Some(prev) if prev != len => None,
        _ => Some(len),
    }
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The request line's third token if it is a well-formed `HTTP/d.d`
/// version: its major digit, minor digit and the minor's position in `buf`.
/// A version this proxy does not speak (`HTTP/2.0`) is 505, as nginx
/// answers; anything else in that place is a malformed request, 400.
fn well_formed_version(buf: &[u8]) -> Option<(u8, u8, usize)> {
    let line_end = buf.iter().position(|&b| b == b'\r' || b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    let mut tokens = line.split(|&b| b == b' ');
    let (_method, _target, version) = (tokens.next()?, tokens.next()?, tokens.next()?);
    if tokens.next().is_some() {
        return None;
    }
    match version.strip_prefix(b"HTTP/") {
        Some([major, b'.', minor]) if major.is_ascii_digit() && minor.is_ascii_digit() => {
            Some((major - b'0', minor - b'0', line.len() - 1))
        }
        _ => None,
    }
}

/// Parse a request head at the start of `buf`. `Ok(None)` means "need more
/// bytes"; `Ok(Some(n))` gives the head's length. Enforces the smuggling
/// rules: `Content-Length` with `Transfer-Encoding`, conflicting or malformed
/// `Content-Length`, any `Transfer-Encoding` but a lone `chunked`, and
/// missing or repeated `Host` in HTTP/1.1 are all 400.
pub fn parse_request(
    buf: &[u8],
    max_headers: usize,
    info: &mut RequestInfo,
    headers: &mut Vec<HeaderPos>,
) -> Result<Option<usize>, Reject> {
    let mut raw: [MaybeUninit<httparse::Header<'_>>; HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(buf, &mut raw[..max_headers.min(HEADERS_CAP)]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(reject(431, "Request Header Fields Too Large"))
        }
        Err(httparse::Error::Version) => match well_formed_version(buf) {
            // HTTP/1.2 and later 1.x are served as 1.1 (RFC 9110 §2.5): the
            // same head with the minor digit read as 1, same positions.
            Some((1, minor, at)) if minor > 1 => {
                let mut as_11 = buf.to_vec();
                as_11[at] = b'1';
                return parse_request(&as_11, max_headers, info, headers);
            }
            Some(_) => return Err(reject(505, "HTTP Version Not Supported")),
            None => return Err(reject(400, "Bad Request")),
        },
        Err(_) => return Err(reject(400, "Bad Request")),
    };
    let minor = req.version.unwrap_or(1);
    info.minor = minor;
    info.method.clear();
    info.method.push_str(req.method.unwrap_or(""));
    info.target.clear();
    info.target.push_str(req.path.unwrap_or(""));
    info.host.clear();
    info.referer.clear();
    info.user_agent.clear();
    info.upgrade = None;
    info.expect_continue = false;
    info.host_from_target = false;
    info.conn_tokens.clear();
    headers.clear();

    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut chunked = false;
    let mut hosts = 0;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut conn_upgrade = false;
    let mut upgrade_value: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        record_header(headers, buf, name, value);
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = Some(
                merge_content_length(content_length, value).ok_or(reject(400, "Bad Request"))?,
            );
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te_seen || minor == 0 || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(reject(400, "Bad Request"));
            }
            te_seen = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            info.host
                .push_str(std::str::from_utf8(value).map_err(|_| reject(400, "Bad Request"))?);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in value.split(|&b| b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    conn_upgrade = true;
                } else if !t.is_empty() {
                    info.conn_tokens.push(offset(buf, t));
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_value = Some(value);
        } else if name.eq_ignore_ascii_case(b"expect") {
            info.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"referer") {
            info.referer.push_str(&String::from_utf8_lossy(value));
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            info.user_agent.push_str(&String::from_utf8_lossy(value));
        }
    }
    if te_seen && content_length.is_some() {
        return Err(reject(400, "Bad Request"));
    }
    if hosts > 1 || (hosts == 0 && minor == 1) || !valid_host(info.host.as_bytes()) {
        return Err(reject(400, "Bad Request"));
    }
    absolute_form(info)?;
    info.framing = Some(if chunked {
        Framing::Chunked
    } else {
        match content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    });
    info.keep_alive = if minor == 1 {
        !conn_close
    } else {
        conn_keep_alive && !conn_close
    };
    if conn_upgrade && minor == 1 {
        if let Some(u) = upgrade_value {
            info.upgrade = Some(String::from_utf8_lossy(u).into_owned());
        }
    }
    Ok(Some(n))
}

/// Whether `h` can be a `Host` value: a reg-name, IPv4 or bracketed IP
/// literal with an optional port (RFC 3986 §3.2.2), or empty. No spaces,
/// userinfo (`@`), path, query or fragment characters.
fn valid_host(h: &[u8]) -> bool {
    h.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b))
}

/// A request target in absolute form (`GET http://host/path HTTP/1.1`) is
/// turned into origin form (`/path`), and its authority replaces the Host
/// for routing (RFC 9112 §3.2.2). Origin form and `*` pass; others are 400.
fn absolute_form(info: &mut RequestInfo) -> Result<(), Reject> {
    let t = &info.target;
    if t.starts_with('/') || t == "*" || info.method == "CONNECT" {
        return Ok(());
    }
    let lower = t.get(..8).unwrap_or(t).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &t[7..]
    } else if lower.starts_with("https://") {
        &t[8..]
    } else {
        return Err(reject(400, "Bad Request"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(reject(400, "Bad Request"));
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if !valid_host(authority.as_bytes()) {
        return Err(reject(400, "Bad Request"));
    }
    info.host = authority.to_string();
    info.target = path;
    info.host_from_target = true;
    Ok(())
}

/// What the proxy needs to know about a response.
#[derive(Debug, Default, Clone)]
pub struct ResponseInfo {
    pub status: u16,
    pub minor: u8,
    pub framing: Option<Framing>,
    /// Whether the upstream connection may be reused after the body.
    pub reusable: bool,
    pub conn_tokens: Vec<(usize, usize)>,
    /// Position of the reason phrase.
    pub reason: (usize, usize),
}

/// A response head that is not HTTP/1.x (or has too many fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse;

/// Parse a response head. `head_request` says the body is empty regardless.
/// `Ok(None)` means "need more bytes"; `Err(BadResponse)` means the bytes are not an
/// HTTP/1.x response head (or it has too many fields).
pub fn parse_response(
    buf: &[u8],
    max_headers: usize,
    head_request: bool,
    info: &mut ResponseInfo,
    headers: &mut Vec<HeaderPos>,
) -> Result<Option<usize>, BadResponse> {
    let mut raw: [MaybeUninit<httparse::Header<'_>>; HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; HEADERS_CAP];
    let mut resp = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut raw[..max_headers.min(HEADERS_CAP)],
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse),
    };
    let status = resp.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(BadResponse);
    }
    info.status = status;
    info.minor = resp.version.unwrap_or(1);
    info.reason = offset(buf, resp.reason.unwrap_or("").as_bytes());
    if resp.reason.unwrap_or("").is_empty() {
        info.reason = (0, 0);
    }
    info.conn_tokens.clear();
    headers.clear();
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut close = info.minor == 0;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        record_header(headers, buf, name, value);
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = Some(merge_content_length(content_length, value).ok_or(BadResponse)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only a final `chunked` delimits; anything else reads to close.
            chunked = value
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                close = true;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in value.split(|&b| b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    if info.minor == 0 {
                        close = false;
                    }
                } else if !t.is_empty() && !t.eq_ignore_ascii_case(b"upgrade") {
                    info.conn_tokens.push(offset(buf, t));
                }
            }
        }
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(len) = content_length {
        if len == 0 {
            Framing::None
        } else {
            Framing::Length(len)
        }
    } else {
        close = true;
        Framing::UntilClose
    };
    info.framing = Some(framing);
    info.reusable = !close;
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Option<usize>, Reject> {
        let mut info = RequestInfo::default();
        let mut h = Vec::new();
        parse_request(text.as_bytes(), 100, &mut info, &mut h)
    }

    #[test]
    fn smuggling_shapes_are_rejected() {
        let bad = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        ];
        for b in bad {
            assert_eq!(req(b).unwrap_err().status, 400, "{b:?}");
        }
        // Duplicate but equal lengths are accepted.
        assert!(req(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
        )
        .unwrap()
        .is_some());
    }

    #[test]
    fn an_unsupported_version_is_505_and_a_garbled_one_400() {
        assert_eq!(
            req("GET / HTTP/2.0\r\nHost: a\r\n\r\n").unwrap_err().status,
            505
        );
        assert_eq!(req("GET / HTTP/3.1\r\n\r\n").unwrap_err().status, 505);
        // Found by the http_request_head fuzz target: was answered 505.
        for garbled in [
            "~T~ 0 \x02",
            "GET / HTTP/1.1x\r\n\r\n",
            "GET / HTTPS/1.1\r\n\r\n",
        ] {
            assert_eq!(req(garbled).unwrap_err().status, 400, "{garbled:?}");
        }
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let mut info = RequestInfo::default();
        let mut h = Vec::new();
        let t = b"GET http://www.mywebsite.com:8080/friends?x=1 HTTP/1.1\r\nHost: other\r\n\r\n";
        parse_request(t, 100, &mut info, &mut h).unwrap().unwrap();
        assert_eq!(info.target, "/friends?x=1");
        assert_eq!(info.host, "www.mywebsite.com:8080");
        assert_eq!(
            req("GET ftp://x/ HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert!(req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .is_some());
    }

    #[test]
    fn partial_and_limits() {
        assert_eq!(req("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let t = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(req(&t).unwrap_err().status, 431);
    }

    #[test]
    fn rewrite_adds_forwarding_and_drops_hop_by_hop() {
        let text = b"GET /x HTTP/1.1\r\nHost: www.a.com\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: */*\r\n\r\n";
        let mut info = RequestInfo::default();
        let mut h = Vec::new();
        parse_request(text, 100, &mut info, &mut h)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        let fwd = Forwarding {
            client_ip: "127.0.0.1",
            proto: "http",
            fallback_host: "x",
        };
        write_upstream_request(text, &h, &info, &fwd, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("GET /x HTTP/1.1\r\nHost: www.a.com\r\n"),
            "{s}"
        );
        assert!(s.contains("X-Forwarded-For: 1.2.3.4, 127.0.0.1\r\n"), "{s}");
        assert!(s.contains("X-Forwarded-Host: www.a.com\r\n"), "{s}");
        assert!(s.contains("Via: 1.1 shoal\r\n"), "{s}");
        assert!(
            !s.contains("X-Secret") && !s.contains("Keep-Alive") && !s.contains("Connection"),
            "{s}"
        );
    }

    /// Rewrite `text` for the upstream as the proxy would.
    fn upstream_head(text: &[u8]) -> String {
        let mut info = RequestInfo::default();
        let mut h = Vec::new();
        parse_request(text, 100, &mut info, &mut h)
            .unwrap()
            .unwrap();
        let fwd = Forwarding {
            client_ip: "127.0.0.1",
            proto: "http",
            fallback_host: "x",
        };
        let mut out = Vec::new();
        write_upstream_request(text, &h, &info, &fwd, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn absolute_form_replaces_the_host_field() {
        let s = upstream_head(
            b"GET http://internal.example/admin HTTP/1.1\r\nHost: public.example\r\n\r\n",
        );
        assert!(s.starts_with("GET /admin HTTP/1.1\r\n"), "{s}");
        assert!(s.contains("Host: internal.example\r\n"), "{s}");
        assert!(!s.contains("public.example"), "{s}");
    }

    #[test]
    fn later_http_1x_is_served_as_1_1_and_bad_hosts_are_400() {
        let s = upstream_head(b"GET /v HTTP/1.2\r\nHost: a\r\nX-K: v\r\n\r\n");
        assert!(
            s.starts_with("GET /v HTTP/1.1\r\nHost: a\r\nX-K: v\r\n"),
            "{s}"
        );
        assert_eq!(req("GET / HTTP/1.9\r\nHost: a\r\n"), Ok(None));
        for host in ["a b@c", "a@b", "a/b", "a?b", "a#b", "\u{e9}"] {
            let text = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(req(&text).unwrap_err().status, 400, "{host}");
        }
        for host in [
            "a.example:8080",
            "[::1]:80",
            "10.0.0.1",
            "xn--bcher-kva.example",
        ] {
            let text = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert!(req(&text).unwrap().is_some(), "{host}");
        }
        assert_eq!(
            req("GET http://a b/ HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn statuses_outside_100_to_599_are_bad_responses() {
        let mut info = ResponseInfo::default();
        let mut h = Vec::new();
        for head in [
            "HTTP/1.1 000 X\r\n\r\n",
            "HTTP/1.1 600 X\r\n\r\n",
            "HTTP/1.1 099 X\r\n\r\n",
        ] {
            assert_eq!(
                parse_response(head.as_bytes(), 100, false, &mut info, &mut h),
                Err(BadResponse),
                "{head}"
            );
        }
    }

    #[test]
    fn no_length_on_204_and_the_trailer_field_is_end_to_end() {
        let resp = b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\nX-A: 1\r\n\r\n";
        let mut info = ResponseInfo::default();
        let mut h = Vec::new();
        parse_response(resp, 100, false, &mut info, &mut h)
            .unwrap()
            .unwrap();
        let side = ClientSide {
            http10: false,
            keep_alive: true,
            upgrade: None,
            rechunk: false,
        };
        let mut out = Vec::new();
        write_client_response(resp, &h, &info, &side, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n");
        let s = upstream_head(
            b"POST / HTTP/1.1\r\nHost: a\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(s.contains("Trailer: X-Sum\r\n"), "{s}");
    }

    #[test]
    fn response_framing() {
        let mut info = ResponseInfo::default();
        let mut h = Vec::new();
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(
            parse_response(r, 100, false, &mut info, &mut h),
            Ok(Some(r.len() - 3))
        );
        assert_eq!(info.framing, Some(Framing::Length(3)));
        assert!(info.reusable);
        let r = b"HTTP/1.1 200 OK\r\n\r\n";
        parse_response(r, 100, false, &mut info, &mut h).unwrap();
        assert_eq!(info.framing, Some(Framing::UntilClose));
        assert!(!info.reusable);
        parse_response(r, 100, true, &mut info, &mut h).unwrap();
        assert_eq!(info.framing, Some(Framing::None));
        assert!(parse_response(b"garbage\r\n\r\n", 100, false, &mut info, &mut h).is_err());
    }

    #[tokio::test]
    async fn a_buffer_grows_while_a_body_streams_through_it_and_not_otherwise() {
        // A reader with plenty waiting fills the buffer each time: it
        // doubles between reads, up to 64 KiB.
        let body = vec![7u8; 1 << 20];
        let mut src: &[u8] = &body;
        let mut b = ReadBuf::new(4096);
        let mut sizes = Vec::new();
        for _ in 0..6 {
            let n = b.fill(&mut src, 1 << 20).await.unwrap();
            sizes.push(n);
            b.consume(n);
        }
        assert_eq!(sizes, [4096, 8192, 16384, 32768, 65536, 65536]);
        // Released, it starts small again.
        b.release();
        let n = b.fill(&mut src, 1 << 20).await.unwrap();
        assert_eq!(n, 4096);
        // Small reads (a head, a short body) never grow it.
        let mut b = ReadBuf::new(4096);
        for _ in 0..4 {
            let mut small: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
            let n = b.fill(&mut small, 1 << 20).await.unwrap();
            b.consume(n);
        }
        let mut big: &[u8] = &body;
        assert_eq!(b.fill(&mut big, 1 << 20).await.unwrap(), 4096);
        // Nor past `max`.
        let mut b = ReadBuf::new(4096);
        let mut src: &[u8] = &body;
        for want in [4096, 6000, 6000] {
            let n = b.fill(&mut src, 6000).await.unwrap();
            assert_eq!(n, want);
            b.consume(n);
        }
    }
}
