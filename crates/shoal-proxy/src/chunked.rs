//! Strict `Transfer-Encoding: chunked` (RFC 9112 §7.1), parsed and written
//! anew: the proxy never forwards a chunked byte it did not itself validate.
//!
//! A body is followed byte by byte. Size lines are 1 to 15 hex digits, then
//! optional extensions (`;` after optional whitespace), then CRLF; the data
//! is followed by CRLF; the trailer section is header fields, each ending in
//! CRLF, and ends at an empty line. A bare LF or CR anywhere, a control
//! character in an extension or a trailer field, whitespace inside a size
//! (`5 6`), an obsolete line fold, a trailer field without a colon or with a
//! name that is not a token, and a trailer field that would change framing or
//! routing (`Content-Length`, `Transfer-Encoding`, `Host`, `Trailer`, and the
//! hop-by-hop fields) are [`BadChunk`]: the proxy answers 400 to a client,
//! 502 when an origin sent it. Common origins end the trailer section at a
//! bare LF; a proxy that let one through would hand them a second, hidden
//! request (request smuggling), so nothing lenient is passed on.
//!
//! The output ([`ChunkedOut`]) is either the data alone (for HTTP/1.0
//! clients) or the body re-encoded canonically: `{size:x}\r\n`, the data,
//! `\r\n`, `0\r\n`, validated trailer fields as `name: value\r\n`, `\r\n`.
//! Chunk extensions are dropped, as nginx and HAProxy drop them.
//!
//! Limits: a size line with its extensions is at most [`MAX_CHUNK_LINE`]
//! bytes, the trailer section at most [`MAX_TRAILERS`]; past them the body is
//! malformed. Memory held per body: one trailer line while it is read.

/// Longest size line (digits, extensions and CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted, in bytes.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// What [`Chunked::feed`] appends to its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedOut {
    /// The data only, framing and trailers removed.
    Data,
    /// The body in canonical chunked form.
    Reencoded,
}

/// Malformed chunked encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Reading size digits.
    Size,
    /// Whitespace after the digits: only more whitespace, `;` or CR.
    SizeWs,
    /// Inside chunk extensions, up to CR.
    Ext,
    /// After the size line's CR.
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line, up to CR.
    TrailerLine,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final empty line's CR.
    EndLf,
    Done,
}

/// Follows a chunked body to its end, validating every byte of framing and
/// writing the body out anew (see the module docs).
#[derive(Debug)]
pub struct Chunked {
    st: St,
    size: u64,
    digits: u8,
    /// Bytes of the current size line so far.
    line: usize,
    /// The trailer line being read (without its CRLF).
    trailer: Vec<u8>,
    /// Bytes of the trailer section so far.
    trailers: usize,
    /// Data bytes so far.
    data: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            st: St::Size,
            size: 0,
            digits: 0,
            line: 0,
            trailer: Vec::new(),
            trailers: 0,
            data: 0,
        }
    }
}

/// A byte an extension may hold: visible ASCII, space, tab, or obs-text.
fn ext_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// An RFC 9110 `tchar`.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Trailer fields that would change how the message is framed, routed or
/// carried (RFC 9110 §6.5.1): never accepted in a trailer section.
fn forbidden_trailer(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 11] = [
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"trailer",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"upgrade",
        b"content-encoding",
        b"content-type",
    ];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Validate one trailer field line and append it canonically to `out`.
fn trailer_field(line: &[u8], out: Option<&mut Vec<u8>>) -> Result<(), BadChunk> {
    let colon = line.iter().position(|&b| b == b':').ok_or(BadChunk)?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| tchar(b)) || forbidden_trailer(name) {
        return Err(BadChunk);
    }
    let value = line[colon + 1..].trim_ascii();
    if !value.iter().all(|&b| ext_byte(b)) {
        return Err(BadChunk);
    }
    if let Some(o) = out {
        o.extend_from_slice(name);
        o.extend_from_slice(b": ");
        o.extend_from_slice(value);
        o.extend_from_slice(b"\r\n");
    }
    Ok(())
}

impl Chunked {
    /// Whether the last chunk and the trailer section have been read.
    pub fn done(&self) -> bool {
        self.st == St::Done
    }

    /// How many data bytes the body has carried so far.
    pub fn data_len(&self) -> u64 {
        self.data
    }

    /// Read from `input` up to the end of the body, appending the output
    /// `mode` asks for to `out`. Returns how many input bytes belong to the
    /// body; fewer than `input.len()` only once [`Chunked::done`].
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        mode: ChunkedOut,
    ) -> Result<usize, BadChunk> {
        let reencode = mode == ChunkedOut::Reencoded;
        let mut i = 0;
        while i < input.len() && self.st != St::Done {
            let b = input[i];
            match self.st {
                St::Data(left) => {
                    let take = (left.min((input.len() - i) as u64)) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.data += take as u64;
                    let left = left - take as u64;
                    self.st = if left == 0 {
                        St::DataCr
                    } else {
                        St::Data(left)
                    };
                    continue;
                }
                St::Size | St::SizeWs | St::Ext => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(BadChunk);
                    }
                    self.st = self.size_line(b)?;
                }
                St::SizeLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    if reencode {
                        let mut hex = [0u8; 16];
                        out.extend_from_slice(hex_digits(self.size, &mut hex));
                        out.extend_from_slice(b"\r\n");
                    }
                    self.st = if self.size == 0 {
                        St::TrailerStart
                    } else {
                        St::Data(self.size)
                    };
                    self.size = 0;
                    self.digits = 0;
                    self.line = 0;
                }
                St::DataCr => self.st = expect(b, b'\r', St::DataLf)?,
                St::DataLf => {
                    self.st = expect(b, b'\n', St::Size)?;
                    if reencode {
                        out.extend_from_slice(b"\r\n");
                    }
                }
                St::TrailerStart => {
                    self.trailers += 1;
                    self.st = match b {
                        b'\r' => St::EndLf,
                        // An obsolete line fold, or a bare LF.
                        b' ' | b'\t' | b'\n' => return Err(BadChunk),
                        _ => {
                            self.trailer.clear();
                            self.trailer.push(b);
                            St::TrailerLine
                        }
                    };
                }
                St::TrailerLine => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(BadChunk);
                    }
                    match b {
                        b'\r' => self.st = St::TrailerLf,
                        b'\n' => return Err(BadChunk),
                        _ => self.trailer.push(b),
                    }
                }
                St::TrailerLf => {
                    self.trailers += 1;
                    self.st = expect(b, b'\n', St::TrailerStart)?;
                    trailer_field(&self.trailer, reencode.then_some(&mut *out))?;
                    self.trailer.clear();
                }
                St::EndLf => {
                    self.st = expect(b, b'\n', St::Done)?;
                    if reencode {
                        out.extend_from_slice(b"\r\n");
                    }
                    self.trailer = Vec::new();
                }
                St::Done => break,
            }
            i += 1;
        }
        Ok(i)
    }

    /// The state after byte `b` of a size line.
    fn size_line(&mut self, b: u8) -> Result<St, BadChunk> {
        Ok(match (self.st, b) {
            (St::Size, _) if b.is_ascii_hexdigit() => {
                if self.digits >= 15 {
                    return Err(BadChunk);
                }
                self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                self.digits += 1;
                St::Size
            }
            (St::Size, _) if self.digits == 0 => return Err(BadChunk),
            (St::Size | St::SizeWs, b' ' | b'\t') => St::SizeWs,
            (St::Size | St::SizeWs, b';') => St::Ext,
            (St::Size | St::SizeWs | St::Ext, b'\r') => St::SizeLf,
            (St::Ext, _) if ext_byte(b) => St::Ext,
            _ => return Err(BadChunk),
        })
    }
}

/// The state after `b` when the grammar requires `want` here.
fn expect(b: u8, want: u8, next: St) -> Result<St, BadChunk> {
    if b == want {
        Ok(next)
    } else {
        Err(BadChunk)
    }
}

/// `n` in lowercase hex, written into the end of `buf`.
fn hex_digits(mut n: u64, buf: &mut [u8; 16]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `body` in pieces of `step`; the output and the bytes used.
    fn run(body: &[u8], step: usize, mode: ChunkedOut) -> Result<(Vec<u8>, usize), BadChunk> {
        let mut c = Chunked::default();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in body.chunks(step) {
            used += c.feed(piece, &mut out, mode)?;
            if c.done() {
                return Ok((out, used));
            }
        }
        Ok((out, usize::MAX))
    }

    #[test]
    fn finds_the_end_decodes_and_reencodes() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum:  abc \r\n\r\nNEXT";
        for step in [1, 3, body.len()] {
            let (out, used) = run(body, step, ChunkedOut::Data).unwrap();
            assert_eq!(&body[used..], b"NEXT");
            assert_eq!(out, b"hello world");
            let (out, _) = run(body, step, ChunkedOut::Reencoded).unwrap();
            assert_eq!(
                out,
                b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc\r\n\r\n".as_slice()
            );
        }
        let (out, _) = run(
            b"00A \t;a=\"b c\"\r\n0123456789\r\n0\r\n\r\n",
            4,
            ChunkedOut::Reencoded,
        )
        .unwrap();
        assert_eq!(out, b"a\r\n0123456789\r\n0\r\n\r\n");
    }

    #[test]
    fn lenient_framing_is_refused() {
        let bad: &[&[u8]] = &[
            b"5\nhello\r\n0\r\n\r\n",          // bare LF after a size
            b"5\r\nhello\n0\r\n\r\n",          // bare LF after data
            b"0\r\n\n",                        // empty line ended by a bare LF
            b"0\r\nX-T: 1\n\r\n",              // trailer ended by a bare LF
            b"0\r\nX-T: 1\r\n\n",              // last line a bare LF
            b"5 6\r\nhello\r\n0\r\n\r\n",      // whitespace inside a size
            b"5;a\x00b\r\nhello\r\n0\r\n\r\n", // NUL in an extension
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",   // bare CR in an extension
            b"zz\r\n",                         // not hex
            b";x\r\n",                         // no digits
            b"0\r\nContent-Length: 5\r\n\r\n", // framing in trailers
            b"0\r\ntransfer-encoding: x\r\n\r\n",
            b"0\r\nHost: evil\r\n\r\n",
            b"0\r\nGET /admin HTTP/1.1\r\n\r\n", // a request line
            b"0\r\nX-T: 1\r\n folded\r\n\r\n",   // obsolete line fold
            b"0\r\nX T: 1\r\n\r\n",              // name not a token
            b"0\r\nX-T: a\x01b\r\n\r\n",         // CTL in a value
            b"1000000000000000\r\n",             // 16 digits
        ];
        for body in bad {
            for step in [1, body.len()] {
                assert_eq!(
                    run(body, step, ChunkedOut::Reencoded),
                    Err(BadChunk),
                    "{:?} in pieces of {step}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn lines_and_trailers_are_bounded() {
        let mut long = b"1;".to_vec();
        long.resize(MAX_CHUNK_LINE + 10, b'a');
        assert_eq!(run(&long, 100, ChunkedOut::Data), Err(BadChunk));
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILERS + 1000 {
            trailers.extend_from_slice(b"X-A: 0123456789\r\n");
        }
        assert_eq!(run(&trailers, 100, ChunkedOut::Data), Err(BadChunk));
    }

    #[test]
    fn hex_is_lowercase_and_minimal() {
        let mut b = [0; 16];
        assert_eq!(hex_digits(0, &mut b), b"0");
        assert_eq!(hex_digits(0xABCDEF, &mut b), b"abcdef");
        assert_eq!(hex_digits(u64::MAX >> 4, &mut b), b"fffffffffffffff");
    }
}
