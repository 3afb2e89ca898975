//! What a connection's writer task is asked to send: method frames, content
//! deliveries (encoded by the writer, outside any lock), publisher confirms
//! (held until the store has synced the message), heartbeats; the queue
//! that carries them ([`Outbox`] to send, [`Inbox`] for the writer); and
//! the [`Backlog`] of what is queued but not yet written, which bounds it.
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
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
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
///
/// The queue is a locked list the writer takes whole (one lock per batch,
/// not one per item as a channel costs). A send wakes the writer, except a
/// publisher confirm that must wait for a store sync while the writer
/// watches the store's syncs: the sync wakes it then, so a burst of
/// confirmed persistent publishes costs the writer one wake-up (at the
/// sync), not two (at the publish and again at the sync).
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    backlog: Arc<Backlog>,
    /// Live [`Outbox`] handles; the writer's queue ends when none is left.
    senders: AtomicUsize,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Out>,
    /// The writer, waiting for items.
    waker: Option<Waker>,
    /// The writer has ended ([`Inbox`] dropped): sends fail.
    closed: bool,
    /// The writer looks at the queue after each store sync (see
    /// [`Inbox::watch_syncs`]).
    watching_syncs: bool,
}

/// The error of a send to a writer that has ended: the item, unsent.
#[derive(Debug)]
pub struct SendError(pub Out);

impl Clone for Outbox {
    fn clone(&self) -> Outbox {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: the writer's wait ends (its waker is taken
            // under the lock, after the count fell, so a writer about to
            // wait sees one or the other).
            self.wake();
        }
    }
}

impl Outbox {
    /// A writer queue accounted in `backlog`: the sender, and the receiver
    /// for the writer task.
    pub fn channel(backlog: Arc<Backlog>) -> (Outbox, Inbox) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            backlog,
            senders: AtomicUsize::new(1),
        });
        (
            Outbox {
                shared: shared.clone(),
            },
            Inbox {
                shared,
                watching: false,
            },
        )
    }

    /// Queue `out` for the writer, counted in the backlog (a delivery in
    /// `pending`, a reply by weight in `replies`); fails once the writer has
    /// ended.
    pub fn send(&self, out: Out) -> Result<(), SendError> {
        self.push(out, |_| true).map(|_| ())
    }

    /// Queue a delivery; the message comes back if the connection is gone.
    pub fn deliver(
        &self,
        ch: u16,
        consumer_tag: Arc<str>,
        tag: u64,
        redelivered: bool,
        msg: MessageRef,
    ) -> Result<(), MessageRef> {
        let out = Out::Deliver {
            ch,
            consumer_tag,
            tag,
            redelivered,
            msg,
        };
        match self.send(out) {
            Err(SendError(Out::Deliver { msg, .. })) => Err(msg),
            _ => Ok(()),
        }
    }

    /// Queue a publisher confirm that may go out once the store has synced
    /// `wait_seq` (0: at once). `synced` tells how far the store has
    /// synced; it is asked only when the writer watches syncs, after the
    /// confirm is queued: if that sync has already happened, no later one
    /// may come to wake the writer, so this send wakes it.
    pub fn send_confirm(
        &self,
        ch: u16,
        tag: u64,
        nack: bool,
        wait_seq: u64,
        synced: impl FnOnce() -> u64,
    ) -> Result<(), SendError> {
        let out = Out::Confirm {
            ch,
            tag,
            nack,
            wait_seq,
        };
        let lazy = self.push(out, |q| !q.watching_syncs || wait_seq == 0)?;
        if lazy && synced() >= wait_seq {
            self.wake();
        }
        Ok(())
    }

    /// Queue `out`, waking the writer if `wake` says so; true when it did
    /// not (the writer will look at the queue at the next store sync).
    fn push(&self, out: Out, wake: impl FnOnce(&Queue) -> bool) -> Result<bool, SendError> {
        // Counted before it is queued: the writer may take it and subtract
        // it before `push` returns.
        let w = out.weight();
        let delivery = matches!(out, Out::Deliver { .. });
        self.count(w, delivery, true);
        let mut q = self.shared.queue.lock();
        if q.closed {
            drop(q);
            self.count(w, delivery, false);
            return Err(SendError(out));
        }
        q.items.push_back(out);
        if !wake(&q) {
            return Ok(true);
        }
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(false)
    }

    fn wake(&self) {
        let waker = self.shared.queue.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn count(&self, weight: usize, delivery: bool, add: bool) {
        let backlog = &self.shared.backlog;
        let counter = if delivery {
            &backlog.pending
        } else if weight > 0 {
            &backlog.replies
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

/// Append `from` to `into`, leaving `from` empty: a swap of the two lists
/// when `into` is empty (the usual case), so no item is moved one by one.
fn move_all(from: &mut VecDeque<Out>, into: &mut VecDeque<Out>) {
    if into.is_empty() {
        std::mem::swap(from, into);
    } else {
        into.append(from);
    }
}

/// The writer's end of the queue.
#[derive(Debug)]
pub struct Inbox {
    shared: Arc<Shared>,
    /// The queue's `watching_syncs`, which only this end changes.
    watching: bool,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut q = self.shared.queue.lock();
        q.closed = true;
        // What was queued is never written (as a dropped channel); it is
        // dropped once the lock is released.
        let left = (std::mem::take(&mut q.items), q.waker.take());
        drop(q);
        drop(left);
    }
}

impl Inbox {
    /// Move everything queued to the end of `into`; false when nothing
    /// was queued.
    pub fn try_take(&mut self, into: &mut VecDeque<Out>) -> bool {
        let mut q = self.shared.queue.lock();
        if q.items.is_empty() {
            return false;
        }
        move_all(&mut q.items, into);
        true
    }

    /// Wait until something is queued and move it all to the end of `into`; false
    /// once every [`Outbox`] is gone and nothing is left.
    pub async fn take(&mut self, into: &mut VecDeque<Out>) -> bool {
        std::future::poll_fn(|cx| {
            let mut q = self.shared.queue.lock();
            if !q.items.is_empty() {
                move_all(&mut q.items, into);
                return Poll::Ready(true);
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return Poll::Ready(false);
            }
            match &mut q.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Whether the writer looks at the queue after every store sync, so
    /// that confirms waiting for one are queued without waking it. Turning
    /// it off is refused (false) while items are queued: one may be a
    /// confirm queued without a wake-up, which the writer must see first.
    pub fn watch_syncs(&mut self, on: bool) -> bool {
        if self.watching == on {
            return true;
        }
        let mut q = self.shared.queue.lock();
        if !on && !q.items.is_empty() {
            return false;
        }
        q.watching_syncs = on;
        self.watching = on;
        true
    }

    /// Whether the writer watches syncs ([`Inbox::watch_syncs`]).
    pub fn watching_syncs(&self) -> bool {
        self.watching
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
                let mut items = VecDeque::new();
                while seen < N {
                    if !rx.try_take(&mut items) {
                        std::hint::spin_loop();
                    }
                    for item in items.drain(..) {
                        let w = item.weight();
                        assert!(backlog.replies.load(Ordering::Relaxed) >= w);
                        backlog.replies_written(w);
                        seen += 1;
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

    /// A confirm that must wait for a sync is queued without waking the
    /// writer only while the writer watches syncs, and never when its sync
    /// has already happened; the writer cannot stop watching while such a
    /// confirm is queued; its queue ends once the last sender is gone.
    #[test]
    fn confirms_wake_the_writer_unless_it_watches_syncs_and_their_sync_is_to_come() {
        use std::future::Future;
        use std::task::Context;
        struct Wakes(AtomicUsize);
        impl futures::task::ArcWake for Wakes {
            fn wake_by_ref(w: &Arc<Self>) {
                w.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = futures::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || wakes.0.load(Ordering::SeqCst);
        let (out, mut inbox) = Outbox::channel(Arc::new(Backlog::default()));
        let mut items = VecDeque::new();
        let mut wait = |inbox: &mut Inbox, items: &mut VecDeque<Out>| {
            let mut take = std::pin::pin!(inbox.take(items));
            take.as_mut().poll(&mut cx)
        };

        assert!(wait(&mut inbox, &mut items).is_pending());
        out.send_confirm(1, 1, false, 5, || 0).unwrap();
        assert_eq!(woken(), 1, "not watching: a confirm wakes the writer");
        assert!(inbox.try_take(&mut items));
        items.clear();

        assert!(inbox.watch_syncs(true));
        assert!(wait(&mut inbox, &mut items).is_pending());
        out.send_confirm(1, 2, false, 7, || 5).unwrap();
        assert_eq!(
            woken(),
            1,
            "watching: a confirm for a later sync waits for it"
        );
        assert!(
            !inbox.watch_syncs(false),
            "stopped watching with a confirm queued that nothing will wake it for"
        );
        out.send_confirm(1, 3, false, 6, || 6).unwrap();
        assert_eq!(woken(), 2, "a confirm whose sync is done wakes the writer");
        assert!(inbox.try_take(&mut items));
        assert_eq!(items.len(), 2);
        items.clear();
        assert!(inbox.watch_syncs(false));
        out.send_confirm(1, 4, false, 9, || 6).unwrap();
        assert_eq!(woken(), 2, "the writer registered no new wait yet");
        assert!(wait(&mut inbox, &mut items).is_ready());
        items.clear();

        assert!(wait(&mut inbox, &mut items).is_pending());
        let other = out.clone();
        drop(out);
        assert_eq!(woken(), 2, "a sender is left");
        drop(other);
        assert_eq!(woken(), 3, "the last sender gone wakes the writer");
        assert_eq!(wait(&mut inbox, &mut items), Poll::Ready(false));
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
