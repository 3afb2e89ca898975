//! One exchange with the chosen upstream server: sending the request head
//! and body, reading the response head (interim 1xx responses passed on),
//! and the two-way tunnel after a `101 Switching Protocols`.

use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::body::{copy_body, write_t, CopyError};
use super::{finish, local_response, Conn};
use crate::codec::{self, parse_response, ClientSide, Framing};
use crate::error::UpstreamFailure;
use crate::state::{Generation, Shared};
use crate::upstream::Lease;

/// Most interim (1xx) responses relayed before one final response; more is
/// a bad response (502).
const MAX_INTERIM: usize = 16;

pub(super) enum SendError {
    /// The client went away.
    Client,
    /// The client's chunked body is malformed (answered 400).
    BadBody,
    /// The client's chunked body is over `max_body_size` (answered 413).
    TooLarge,
    /// Writing to the upstream failed.
    Upstream,
}

/// Send the prepared head and the request body. Returns whether body bytes
/// were consumed from the client (so the request cannot be replayed).
pub(super) async fn send_request<S: AsyncRead + Unpin>(
    client: &mut S,
    conn: &mut TcpStream,
    c: &mut Conn,
    body: Framing,
    buffered_len: Option<usize>,
    t: Duration,
    max_data: u64,
) -> Result<bool, SendError> {
    c.up_buf.clear();
    if let Some(n) = buffered_len {
        c.scratch.clear();
        c.scratch.extend_from_slice(&c.out);
        c.scratch.extend_from_slice(&c.buf.chunk()[..n]);
        write_t(conn, &c.scratch, t)
            .await
            .map_err(|_| SendError::Upstream)?;
        return Ok(false);
    }
    let mut head = std::mem::take(&mut c.out);
    let r = copy_body(
        body,
        client,
        &mut c.buf,
        conn,
        &mut head,
        false,
        &mut c.scratch,
        t,
        max_data,
    )
    .await;
    c.out = head;
    match r {
        Ok(_) => Ok(true),
        Err(CopyError::Write) => Err(SendError::Upstream),
        Err(CopyError::Bad) => Err(SendError::BadBody),
        Err(CopyError::TooLarge) => Err(SendError::TooLarge),
        Err(CopyError::Read) => Err(SendError::Client),
    }
}

/// Read the response head into `c.up_buf`, passing 1xx interim responses
/// (other than 101) to the client. Returns the head's length.
pub(super) async fn read_response_head<S: AsyncWrite + Unpin>(
    conn: &mut TcpStream,
    c: &mut Conn,
    gen: &Generation,
    head_req: bool,
    client: &mut S,
) -> Result<usize, UpstreamFailure> {
    let limits = gen.config.limits;
    let t = gen.config.timeouts.upstream_header;
    // A deadline for the whole head, interim responses included.
    let deadline = tokio::time::Instant::now() + t;
    let mut interim = 0;
    let mut got_any = false;
    loop {
        if !c.up_buf.is_empty() {
            got_any = true;
            match parse_response(
                c.up_buf.chunk(),
                limits.max_headers,
                head_req,
                &mut c.resp,
                &mut c.resp_headers,
            ) {
                Ok(Some(n)) => {
                    let s = c.resp.status;
                    if (100..200).contains(&s) && s != 101 {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(UpstreamFailure::BadResponse);
                        }
                        if c.info.minor == 1 && !(s == 100 && c.info.expect_continue) {
                            let side = ClientSide {
                                http10: false,
                                keep_alive: true,
                                upgrade: None,
                                rechunk: false,
                            };
                            codec::write_client_response(
                                c.up_buf.chunk(),
                                &c.resp_headers,
                                &c.resp,
                                &side,
                                &mut c.scratch,
                            );
                            let _ = write_t(client, &c.scratch, t).await;
                        }
                        c.up_buf.consume(n);
                        continue;
                    }
                    return Ok(n);
                }
                Ok(None) => {}
                Err(_) => return Err(UpstreamFailure::BadResponse),
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c
            .up_timer
            .limit(left, c.up_buf.fill(conn, limits.max_header_bytes))
            .await
        {
            Err(_) => return Err(UpstreamFailure::Timeout),
            Ok(Ok(0)) => {
                return Err(if got_any {
                    UpstreamFailure::BadResponse
                } else {
                    UpstreamFailure::Broken
                });
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::OutOfMemory => {
                return Err(UpstreamFailure::BadResponse)
            }
            Ok(Err(_)) => {
                return Err(if got_any {
                    UpstreamFailure::BadResponse
                } else {
                    UpstreamFailure::Broken
                });
            }
        }
    }
}

/// Pass a `101 Switching Protocols` to the client and copy bytes both ways
/// until either side closes.
pub(super) async fn tunnel<S>(
    client: &mut S,
    mut conn: TcpStream,
    c: &mut Conn,
    shared: &Shared,
    head: usize,
    lease: Lease<'_>,
    started: Instant,
) -> io::Result<bool>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(proto) = c.info.upgrade.clone() else {
        tracing::warn!(server = %lease.peer.config.name, "101 response to a request that did not ask to upgrade");
        return local_response(client, c, shared, 502, false, Some(started)).await;
    };
    shared
        .metrics
        .tunnels_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let side = ClientSide {
        http10: false,
        keep_alive: false,
        upgrade: Some(proto),
        rechunk: false,
    };
    c.take_response_head(head, &side);
    c.out.extend_from_slice(c.up_buf.chunk());
    let t = shared.current.load().config.timeouts.idle;
    write_t(client, &c.out, t).await?;
    if !c.buf.is_empty() {
        write_t(&mut conn, c.buf.chunk(), t).await?;
    }
    finish(c, shared, 101, 0, Some(started));
    let r = tokio::io::copy_bidirectional(client, &mut conn).await;
    drop(lease);
    if let Err(e) = r {
        tracing::debug!(error = %e, "tunnel ended with an error");
    }
    Ok(false)
}
