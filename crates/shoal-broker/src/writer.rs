//! A connection's writer task: drains the [`Out`] queue, encodes frames in
//! batches (one `write` for many deliveries), coalesces publisher confirms
//! into `multiple` acks, holds confirms back until the store has synced the
//! message, and sends heartbeats when the connection is otherwise idle.
//! A socket write that stalls past `send_timeout` (the client stopped
//! reading) ends the writer, which ends the connection.

use crate::codec::{put_content, put_deliver, put_frame, put_method};
use crate::outbox::{Backlog, Inbox, Kick, Out, OUTBOX_MAX};
use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, AMQPClass};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Parameters negotiated at connection.tune-ok, read by the writer.
#[derive(Debug)]
pub struct WireParams {
    /// Negotiated frame_max.
    pub frame_max: AtomicU32,
    /// Negotiated heartbeat (s, 0 = off).
    pub heartbeat: AtomicU32,
    /// Longest a socket write may stall.
    pub send_timeout: Duration,
}

/// Write all of `buf`; false when the socket failed or the write stalled
/// past `limit`. The timer is only armed when the socket does not take the
/// bytes at once, which is the rare case.
async fn put<W: AsyncWrite + Unpin>(w: &mut W, buf: &[u8], limit: Duration) -> bool {
    let mut write = std::pin::pin!(w.write_all(buf));
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    let done = match first {
        Poll::Ready(r) => Ok(r),
        Poll::Pending => tokio::time::timeout(limit, write).await,
    };
    match done {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!(
                send_timeout = ?limit,
                "closing connection: the client has not read for send_timeout"
            );
            false
        }
    }
}

/// Marks the backlog's writer as ended however `run` returns, waking a
/// connection paused on it.
struct EndGuard(Arc<Backlog>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.writer_ended();
    }
}

const BATCH_BYTES: usize = 256 * 1024;

/// Store syncs in a row that wake the writer without a confirm waiting for
/// a sync having come since, before it stops watching syncs: a publisher
/// that stopped confirming (or confirms rarely while other connections
/// keep the store busy) is then not woken by every other connection's sync.
const IDLE_SYNCS: u32 = 2;

/// Room for queued items kept between batches (an item is 120 bytes; the
/// writer's list and the queue's are swapped, so each may keep this much).
const ITEMS_KEPT: usize = 256;

fn flush_acks(buf: &mut Vec<u8>, pending: &mut FxHashMap<u16, (u64, u64)>) {
    for (ch, (first, last)) in pending.drain() {
        put_method(
            buf,
            ch,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: last,
                multiple: last > first,
            })),
        );
    }
}

/// Run until the queue closes, `Out::Close` arrives or the socket fails;
/// true when it ended cleanly (not on a failed or stalled write).
pub async fn run<W: AsyncWrite + Unpin>(
    mut w: W,
    mut inbox: Inbox,
    params: Arc<WireParams>,
    backlog: Arc<Backlog>,
) -> bool {
    let _end = EndGuard(backlog.clone());
    let limit = params.send_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut kick: Option<Kick> = None;
    let mut synced: Option<tokio::sync::watch::Receiver<u64>> = None;
    // Syncs that woke this task with no confirm waiting for one since (see
    // `Inbox::watch_syncs`).
    let mut idle_syncs = 0u32;
    // Confirms to coalesce, by channel (a fast Fx hash of the number).
    let mut acks: FxHashMap<u16, (u64, u64)> = FxHashMap::default();
    // What was taken from the queue, in order.
    let mut items: VecDeque<Out> = VecDeque::new();
    // Heartbeats go out when nothing else has for half the negotiated
    // interval. One timer for the connection: it is moved on when it fires
    // early (something was written since it was set), not re-armed per batch.
    let heartbeat = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(heartbeat);
    let mut idle_since = tokio::time::Instant::now();
    loop {
        let hb = params.heartbeat.load(Ordering::Relaxed);
        let every = Duration::from_millis(u64::from(hb) * 500);
        if hb > 0 && idle_since + every < heartbeat.deadline() {
            heartbeat.as_mut().reset(idle_since + every);
        }
        // Items left from a batch cut at BATCH_BYTES go first, before any
        // wait.
        if items.is_empty() {
            let watching = inbox.watching_syncs();
            let sync_seen = async {
                match synced.as_mut() {
                    Some(rx) if watching => rx.changed().await.is_ok(),
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                more = inbox.take(&mut items) => {
                    if !more {
                        break;
                    }
                }
                ok = sync_seen => {
                    // A sync: what it lets out is taken at the top of the loop;
                    // nothing queued, several times in a row: stop watching.
                    idle_syncs += 1;
                    if !ok || idle_syncs >= IDLE_SYNCS {
                        inbox.watch_syncs(false);
                    }
                    continue;
                }
                _ = &mut heartbeat, if hb > 0 => {
                    let due = idle_since + every;
                    if due <= tokio::time::Instant::now() {
                        put_frame(&mut buf, &AMQPFrame::Heartbeat);
                        if !put(&mut w, &buf, limit).await {
                            return false;
                        }
                        buf.clear();
                        idle_since = tokio::time::Instant::now();
                    }
                    heartbeat.as_mut().reset(idle_since + every);
                    continue;
                }
            }
        }
        let frame_max = params.frame_max.load(Ordering::Relaxed);
        let mut close = false;
        let mut delivered = 0usize;
        let mut weight = 0usize;
        while let Some(it) = items.pop_front() {
            weight += it.weight();
            match it {
                Out::Confirm {
                    ch,
                    tag,
                    nack,
                    wait_seq,
                } => {
                    if wait_seq > 0 {
                        if let Some(rx) = synced.as_mut() {
                            idle_syncs = 0;
                            inbox.watch_syncs(true);
                            if *rx.borrow() < wait_seq {
                                flush_acks(&mut buf, &mut acks);
                                if !buf.is_empty() {
                                    if !put(&mut w, &buf, limit).await {
                                        return false;
                                    }
                                    buf.clear();
                                }
                                while *rx.borrow_and_update() < wait_seq {
                                    if rx.changed().await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    if nack {
                        if let Some((first, last)) = acks.remove(&ch) {
                            acks.insert(ch, (first, last));
                            flush_acks(&mut buf, &mut acks);
                        }
                        put_method(
                            &mut buf,
                            ch,
                            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                                delivery_tag: tag,
                                multiple: false,
                                requeue: false,
                            })),
                        );
                    } else {
                        acks.entry(ch)
                            .and_modify(|e| e.1 = tag)
                            .or_insert((tag, tag));
                    }
                }
                other => {
                    flush_acks(&mut buf, &mut acks);
                    match other {
                        Out::Method(ch, m) => put_method(&mut buf, ch, m),
                        Out::Deliver {
                            ch,
                            consumer_tag,
                            tag,
                            redelivered,
                            msg,
                        } => {
                            put_deliver(
                                &mut buf,
                                ch,
                                &consumer_tag,
                                tag,
                                redelivered,
                                &msg.exchange,
                                &msg.routing_key,
                            );
                            put_content(&mut buf, ch, msg.raw_properties(), msg.body(), frame_max);
                            delivered += 1;
                        }
                        Out::GetOk {
                            ch,
                            tag,
                            redelivered,
                            count,
                            msg,
                        } => {
                            put_method(
                                &mut buf,
                                ch,
                                AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                                    delivery_tag: tag,
                                    redelivered,
                                    exchange: (&*msg.exchange).into(),
                                    routing_key: (&*msg.routing_key).into(),
                                    message_count: count,
                                })),
                            );
                            put_content(&mut buf, ch, msg.raw_properties(), msg.body(), frame_max);
                        }
                        Out::Return {
                            ch,
                            code,
                            text,
                            msg,
                        } => {
                            put_method(
                                &mut buf,
                                ch,
                                AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                                    reply_code: code,
                                    reply_text: text.into(),
                                    exchange: (&*msg.exchange).into(),
                                    routing_key: (&*msg.routing_key).into(),
                                })),
                            );
                            put_content(&mut buf, ch, msg.raw_properties(), msg.body(), frame_max);
                        }
                        Out::UseStore(rx) => synced = Some(rx),
                        Out::UseKick(k) => kick = Some(k),
                        Out::Close => close = true,
                        Out::Confirm { .. } => {}
                    }
                }
            }
            if close || buf.len() >= BATCH_BYTES {
                break;
            }
            if items.is_empty() {
                inbox.try_take(&mut items);
            }
        }
        flush_acks(&mut buf, &mut acks);
        if !buf.is_empty() {
            if !put(&mut w, &buf, limit).await {
                return false;
            }
            buf.clear();
        }
        if hb > 0 {
            idle_since = tokio::time::Instant::now();
        }
        backlog.replies_written(weight);
        // The list is swapped with the queue's: after a burst of replies
        // (up to REPLIES_HIGH of them) neither keeps its size for good.
        if items.is_empty() && items.capacity() > ITEMS_KEPT {
            items = VecDeque::new();
        }
        if delivered > 0 {
            let left = backlog.pending.fetch_sub(delivered, Ordering::Relaxed) - delivered;
            if left < OUTBOX_MAX / 2 && backlog.starved.swap(false, Ordering::Relaxed) {
                if let Some(k) = &kick {
                    (k.0)();
                }
            }
        }
        if close {
            let _ = w.flush().await;
            let _ = w.shutdown().await;
            return true;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Inbound};
    use crate::fastpath::Fast;
    use crate::outbox::Outbox;
    use bytes::BytesMut;
    use tokio::io::AsyncReadExt;

    /// The next `basic.ack` the writer sends: (tag, multiple); None if none
    /// comes within half a second.
    async fn next_ack(rd: &mut tokio::io::DuplexStream, buf: &mut BytesMut) -> Option<(u64, bool)> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            while let Some(f) = decode(buf, 131_072).expect("the writer sent a bad frame") {
                if let Inbound::Fast(1, Fast::Ack(a)) = f {
                    return Some((a.delivery_tag, a.multiple));
                }
            }
            match tokio::time::timeout_at(deadline, rd.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Confirms waiting for a store sync go out once the sync is done,
    /// whether the writer was woken by the confirm or (watching syncs) only
    /// by the sync; a confirm queued after the sync it waits for has
    /// happened goes out at once, as no later sync may ever come.
    #[tokio::test]
    async fn confirms_go_out_once_synced_and_never_wait_for_a_sync_already_done() {
        let (wr, mut rd) = tokio::io::duplex(1 << 16);
        let backlog = Arc::new(Backlog::default());
        let (out, inbox) = Outbox::channel(backlog.clone());
        let params = Arc::new(WireParams {
            frame_max: AtomicU32::new(131_072),
            heartbeat: AtomicU32::new(0),
            send_timeout: Duration::from_secs(5),
        });
        let writer = tokio::spawn(run(wr, inbox, params, backlog));
        let (synced, watched) = tokio::sync::watch::channel(0u64);
        out.send(Out::UseStore(watched)).unwrap();
        let now = || *synced.borrow();
        let mut buf = BytesMut::new();
        const EARLY: &str = "confirmed before its sync";

        // The first: the writer is not watching syncs yet; it is woken, and
        // holds the confirm until the sync.
        out.send_confirm(1, 1, false, 5, now).unwrap();
        assert_eq!(next_ack(&mut rd, &mut buf).await, None, "{EARLY}");
        synced.send_replace(5);
        assert_eq!(next_ack(&mut rd, &mut buf).await, Some((1, false)));

        // Now watching: a confirm for a later sync is queued without a
        // wake-up and goes out at that sync.
        out.send_confirm(1, 2, false, 9, now).unwrap();
        assert_eq!(next_ack(&mut rd, &mut buf).await, None, "{EARLY}");
        synced.send_replace(9);
        assert_eq!(next_ack(&mut rd, &mut buf).await, Some((2, false)));

        // The sync came before the confirm was queued: no sync is left to
        // wake the writer, so the send does.
        synced.send_replace(20);
        tokio::task::yield_now().await;
        out.send_confirm(1, 3, false, 15, now).unwrap();
        assert_eq!(
            next_ack(&mut rd, &mut buf).await,
            Some((3, false)),
            "a confirm whose sync was already done waited for another"
        );

        // A burst queued while watching goes out as one multiple ack.
        for tag in 4..=10 {
            out.send_confirm(1, tag, false, 30, now).unwrap();
        }
        synced.send_replace(30);
        assert_eq!(next_ack(&mut rd, &mut buf).await, Some((10, true)));

        drop(out);
        assert!(
            writer.await.unwrap(),
            "the writer ends cleanly when its queue does"
        );
    }
}
