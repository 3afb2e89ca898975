//! What a connection's writer task is asked to send: method frames, content
//! deliveries (encoded by the writer, outside any lock), publisher confirms
//! (held until the store has synced the message), heartbeats; and the
//! [`Backlog`] of what is queued but not yet written, which bounds it.
//!
//! Two bounds, as RabbitMQ's flow control has: deliveries stop at
//! [`OUTBOX_MAX`] per connection (the vhost holds the rest in the queue), and
//! replies to the client's own methods (method replies, `get-ok` and
//! `return` with their bodies, confirms) are weighed in bytes: past
//! [`REPLIES_HIGH`] the connection stops reading from its client until the
//! writer has brought them under [`REPLIES_LOW`], so a client that pipelines
//! and never reads cannot grow the broker.

use crate::message::MessageRef;
use amq_protocol::protocol::AMQPClass;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::{error::SendError, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

/// One item for the writer.
#[derive(Debug)]
pub enum Out {
    /// A method frame.
    Method(u16, AMQPClass),
    /// basic.deliver + content.
    Deliver {
        /// Channel.
        ch: u16,
        /// Consumer tag.
        consumer_tag: Arc<str>,
        /// Delivery tag.
        tag: u64,
        /// Redelivered flag.
        redelivered: bool,
        /// The message.
        msg: MessageRef,
    },
    /// basic.get-ok + content.
    GetOk {
        /// Channel.
        ch: u16,
        /// Delivery tag.
        tag: u64,
        /// Redelivered flag.
        redelivered: bool,
        /// Messages left in the queue.
        count: u32,
        /// The message.
        msg: MessageRef,
    },
    /// basic.return + content.
    Return {
        /// Channel.
        ch: u16,
        /// Reply code (312 NO_ROUTE).
        code: u16,
        /// Reply text.
        text: &'static str,
        /// The message.
        msg: MessageRef,
    },
    /// Publisher confirm, sent once the store has synced `wait_seq`.
    Confirm {
        /// Channel.
        ch: u16,
        /// Publish sequence number.
        tag: u64,
        /// basic.nack instead of basic.ack.
        nack: bool,
        /// Store sequence to wait for (0: none).
        wait_seq: u64,
    },
    /// The vhost's store sync watermark, for confirms.
    UseStore(tokio::sync::watch::Receiver<u64>),
    /// Called by the writer when a starved connection's backlog drains, so
    /// the vhost resumes delivering to it.
    UseKick(Kick),
    /// Flush and close the socket.
    Close,
}

impl Out {
    /// Bytes this item weighs in [`Backlog::replies`]: deliveries are
    /// bounded by count instead ([`Backlog::pending`]), control items weigh
    /// nothing, replies weigh an estimate of their size in memory.
    pub fn weight(&self) -> usize {
        const ITEM: usize = 128;
        match self {
            Out::Deliver { .. } | Out::UseStore(_) | Out::UseKick(_) | Out::Close => 0,
            Out::Method(..) | Out::Confirm { .. } => ITEM,
            Out::GetOk { msg, .. } | Out::Return { msg, .. } => {
                ITEM + msg.body().len() + msg.raw_properties().len()
            }
        }
    }
}

/// The sending side of a connection's writer queue; every item sent is
/// weighed into the connection's [`Backlog`].
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: UnboundedSender<Out>,
    backlog: Arc<Backlog>,
}

impl Outbox {
    /// A writer queue accounted in `backlog`: the sender, and the receiver
    /// for the writer task.
    pub fn channel(backlog: Arc<Backlog>) -> (Outbox, UnboundedReceiver<Out>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Outbox { tx, backlog }, rx)
    }

    /// Queue `out` for the writer, counted in the backlog (a delivery in
    /// `pending`, a reply by weight in `replies`); fails once the writer has
    /// ended.
    pub fn send(&self, out: Out) -> Result<(), SendError<Out>> {
        // Counted before it is sent: the writer may take it and subtract
        // it before `send` returns.
        let w = out.weight();
        let delivery = matches!(out, Out::Deliver { .. });
        self.count(w, delivery, true);
        self.tx
            .send(out)
            .inspect_err(|_| self.count(w, delivery, false))
    }

    fn count(&self, weight: usize, delivery: bool, add: bool) {
        let counter = if delivery {
            &self.backlog.pending
        } else if weight > 0 {
            &self.backlog.replies
        } else {
            return;
        };
        let n = if delivery { 1 } else { weight };
        if add {
            counter.fetch_add(n, Ordering::Relaxed);
        } else {
            counter.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// Re-run delivery for a connection's consumers.
#[derive(Clone)]
pub struct Kick(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Kick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kick")
    }
}

/// What is queued for a connection's writer but not yet written: the
/// vhost stops delivering to a connection past [`OUTBOX_MAX`] deliveries,
/// so a slow consumer leaves messages in its queue (where flow control and
/// limits apply) instead of in memory buffers; the connection stops reading
/// from its client past [`REPLIES_HIGH`] bytes of replies.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Deliveries queued, not yet written.
    pub pending: AtomicUsize,
    /// A delivery was held back because of the backlog.
    pub starved: AtomicBool,
    /// Weight ([`Out::weight`]) of replies queued, not yet written.
    pub replies: AtomicUsize,
    /// The writer has ended: nothing queued will be written.
    pub writer_gone: AtomicBool,
    /// Woken when `replies` falls under [`REPLIES_LOW`] or the writer ends.
    pub drained: Notify,
}

impl Backlog {
    /// Whether the connection should stop reading from its client.
    pub fn replies_over_high(&self) -> bool {
        self.replies.load(Ordering::Relaxed) > REPLIES_HIGH
    }

    /// The writer wrote items weighing `weight`.
    pub fn replies_written(&self, weight: usize) {
        if weight == 0 {
            return;
        }
        let before = self.replies.fetch_sub(weight, Ordering::Relaxed);
        if before - weight < REPLIES_LOW && before >= REPLIES_LOW {
            self.drained.notify_waiters();
        }
    }

    /// The writer has ended.
    pub fn writer_ended(&self) {
        self.writer_gone.store(true, Ordering::Relaxed);
        self.drained.notify_waiters();
    }

    /// Wait until replies are under [`REPLIES_LOW`] or the writer has ended.
    pub async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.replies.load(Ordering::Relaxed) < REPLIES_LOW
                || self.writer_gone.load(Ordering::Relaxed)
            {
                return;
            }
            notified.await;
        }
    }
}

/// Most deliveries queued for one connection's writer.
pub const OUTBOX_MAX: usize = 4096;

/// Bytes of queued replies past which a connection stops reading.
pub const REPLIES_HIGH: usize = 16 << 20;

/// Bytes of queued replies under which a paused connection reads again.
pub const REPLIES_LOW: usize = 8 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;

    /// The writer may take an item the moment it is queued; its weight must
    /// already be counted, or the writer's subtraction underflows (a panic
    /// in debug builds, a huge backlog that never drains in release).
    #[test]
    fn a_reply_taken_by_the_writer_at_once_never_underflows_the_backlog() {
        let backlog = Arc::new(Backlog::default());
        let (out, mut rx) = Outbox::channel(backlog.clone());
        const N: usize = 200_000;
        let writer = {
            let backlog = backlog.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                while seen < N {
                    match rx.try_recv() {
                        Ok(item) => {
                            let w = item.weight();
                            assert!(backlog.replies.load(Ordering::Relaxed) >= w);
                            backlog.replies_written(w);
                            seen += 1;
                        }
                        Err(_) => std::hint::spin_loop(),
                    }
                }
            })
        };
        for _ in 0..N {
            let ack = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 1,
                multiple: false,
            }));
            out.send(Out::Method(1, ack)).unwrap();
        }
        writer.join().expect("writer saw an item before its weight");
        assert_eq!(backlog.replies.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_send_to_a_gone_writer_leaves_nothing_counted() {
        let backlog = Arc::new(Backlog::default());
        let (out, rx) = Outbox::channel(backlog.clone());
        drop(rx);
        assert!(out
            .send(Out::Confirm {
                ch: 1,
                tag: 1,
                nack: false,
                wait_seq: 0
            })
            .is_err());
        assert_eq!(backlog.replies.load(Ordering::Relaxed), 0);
        assert_eq!(backlog.pending.load(Ordering::Relaxed), 0);
    }
}
