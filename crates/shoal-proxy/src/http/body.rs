//! Copying a message body between the client and the upstream under the
//! connection's timeouts: pieces written behind a not-yet-sent head in one
//! write, chunked framing kept, removed or added as the peers' versions need.

use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::BODY_BUF_MAX;
use crate::codec::{Chunked, ChunkedOut, Framing, ReadBuf};
use crate::timer::lazy;

/// Most re-encoded chunked bytes held back to be written together.
const COALESCE_MAX: usize = 64 * 1024;

/// How a body copy ended badly.
pub(super) enum CopyError {
    /// The side being read from failed or ended early.
    Read,
    /// The side being written to failed.
    Write,
    /// Malformed chunked encoding.
    Bad,
    /// A chunked body larger than its limit.
    TooLarge,
}

pub(super) async fn write_t<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    t: Duration,
) -> io::Result<()> {
    match lazy(t, w.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

pub(super) async fn fill_t<R: AsyncRead + Unpin>(
    buf: &mut ReadBuf,
    r: &mut R,
    max: usize,
    t: Duration,
) -> Result<usize, CopyError> {
    match lazy(t, buf.fill(r, max)).await {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => Err(CopyError::Read),
        Ok(Ok(n)) => Ok(n),
    }
}

/// Write `piece` of a body, behind `prefix` (a head not sent yet) in one
/// write when there is one; `prefix` is empty afterwards.
pub(super) async fn send_piece<W: AsyncWrite + Unpin>(
    dst: &mut W,
    prefix: &mut Vec<u8>,
    piece: &[u8],
    t: Duration,
) -> Result<(), CopyError> {
    if !prefix.is_empty() {
        prefix.extend_from_slice(piece);
        write_t(dst, prefix, t)
            .await
            .map_err(|_| CopyError::Write)?;
        prefix.clear();
    } else if !piece.is_empty() {
        write_t(dst, piece, t).await.map_err(|_| CopyError::Write)?;
    }
    Ok(())
}

/// Copy one body framed by `framing` from `src` (starting with what `buf`
/// holds) to `dst`, sending `prefix` (a head) first, in the same write as the
/// first body bytes. With `transform`, chunked framing is removed (for
/// HTTP/1.0 clients) and a read-until-close body is chunked (for HTTP/1.1
/// clients, whose connection then stays open). Returns the body bytes read.
#[allow(clippy::too_many_arguments)]
pub(super) async fn copy_body<R, W>(
    framing: Framing,
    src: &mut R,
    buf: &mut ReadBuf,
    dst: &mut W,
    prefix: &mut Vec<u8>,
    transform: bool,
    scratch: &mut Vec<u8>,
    t: Duration,
    max_data: u64,
) -> Result<u64, CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut written = 0u64;
    match framing {
        Framing::None => {
            write_t(dst, prefix, t)
                .await
                .map_err(|_| CopyError::Write)?;
        }
        Framing::Length(n) => {
            let mut left = n;
            loop {
                let take = (left.min(buf.len() as u64)) as usize;
                send_piece(dst, prefix, &buf.chunk()[..take], t).await?;
                buf.consume(take);
                left -= take as u64;
                written += take as u64;
                if left == 0 {
                    break;
                }
                fill_t(buf, src, BODY_BUF_MAX, t).await?;
            }
        }
        Framing::Chunked => {
            // Never the bytes as received: the framing is validated and
            // written anew (see `crate::chunked`).
            let mut dec = Chunked::default();
            let mode = if transform {
                ChunkedOut::Data
            } else {
                ChunkedOut::Reencoded
            };
            scratch.clear();
            loop {
                let used = dec
                    .feed(buf.chunk(), scratch, mode)
                    .map_err(|_| CopyError::Bad)?;
                buf.consume(used);
                if dec.data_len() > max_data {
                    return Err(CopyError::TooLarge);
                }
                // The last read filled the buffer, so the rest is likely
                // waiting already: read it before writing, and a body a
                // little larger than one read goes out in one write.
                if !dec.done() && buf.brimmed() && scratch.len() < COALESCE_MAX {
                    fill_t(buf, src, BODY_BUF_MAX, t).await?;
                    continue;
                }
                send_piece(dst, prefix, scratch, t).await?;
                written += scratch.len() as u64;
                scratch.clear();
                if dec.done() {
                    break;
                }
                fill_t(buf, src, BODY_BUF_MAX, t).await?;
            }
        }
        Framing::UntilClose => loop {
            let avail = buf.len();
            scratch.clear();
            if transform && avail > 0 {
                // Re-chunk for an HTTP/1.1 client so its connection can stay open.
                scratch.extend_from_slice(format!("{avail:x}\r\n").as_bytes());
                scratch.extend_from_slice(buf.chunk());
                scratch.extend_from_slice(b"\r\n");
            }
            let piece: &[u8] = if transform { scratch } else { buf.chunk() };
            send_piece(dst, prefix, piece, t).await?;
            buf.consume(avail);
            written += avail as u64;
            match lazy(t, buf.fill(src, BODY_BUF_MAX)).await {
                Ok(Ok(0)) => {
                    if transform {
                        write_t(dst, b"0\r\n\r\n", t)
                            .await
                            .map_err(|_| CopyError::Write)?;
                    }
                    break;
                }
                Ok(Ok(_)) => {}
                _ => return Err(CopyError::Read),
            }
        },
    }
    Ok(written)
}
