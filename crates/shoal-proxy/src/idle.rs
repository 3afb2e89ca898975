//! Idle keep-alive connections wait here between requests: each worker has
//! one set of them, and one sweeper task that wakes those whose idle limit
//! has passed (checked every [`SWEEP_EVERY`], nginx's keep-alive timers are
//! as coarse) and all of them when the server stops. A connection so waits
//! with a slot in a vector instead of a timer and a shutdown registration
//! of its own: for the thousands of idle clients a proxy holds, that is
//! most of what each would cost.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use shoal_core::Shutdown;

use crate::state::Shared;
use crate::upstream::now_ms;

/// How often a worker's sweeper looks for connections past their limit.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// One worker's idle connections.
#[derive(Default)]
pub struct IdleSet {
    inner: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    /// Indexes of unused slots.
    free: Vec<u32>,
}

struct Slot {
    /// `None`: unused, or already woken.
    waker: Option<Waker>,
    /// When the idle limit passes ([`now_ms`]).
    deadline: u64,
}

impl IdleSet {
    /// Number of connections waiting (for status output and tests).
    pub fn len(&self) -> usize {
        let s = self.inner.lock();
        s.slots.len() - s.free.len()
    }

    /// Whether no connection waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wake the connections whose limit is at or before `now`, or every
    /// connection when `all`. Woken slots stay taken until their
    /// connection leaves.
    pub fn sweep(&self, now: u64, all: bool) {
        let mut woken = Vec::new();
        {
            let mut s = self.inner.lock();
            for slot in &mut s.slots {
                if all || slot.deadline <= now {
                    if let Some(w) = slot.waker.take() {
                        woken.push(w);
                    }
                }
            }
        }
        // Woken outside the lock: a waker may run code that takes it.
        woken.into_iter().for_each(Waker::wake);
    }
}

/// How an idle wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The client sent something (or closed: the next read tells).
    Readable,
    /// The idle limit passed, the socket failed, or the server stops.
    Close,
}

/// A connection's wait in its worker's [`IdleSet`] until `ready` says the
/// client sent, the limit `t` passes or `stop` fires. A future of a few
/// words: it is part of every idle connection's task.
pub fn wait<'a, R>(set: &'a IdleSet, t: Duration, stop: &'a Shutdown, ready: R) -> Wait<'a, R>
where
    R: FnMut(&mut Context<'_>) -> Poll<std::io::Result<()>> + Unpin,
{
    Wait {
        entry: Entry { set, key: None },
        stop,
        ready,
        deadline: now_ms() + t.as_millis() as u64,
    }
}

/// The future of [`wait`].
pub struct Wait<'a, R> {
    entry: Entry<'a>,
    stop: &'a Shutdown,
    ready: R,
    deadline: u64,
}

impl<R> std::future::Future for Wait<'_, R>
where
    R: FnMut(&mut Context<'_>) -> Poll<std::io::Result<()>> + Unpin,
{
    type Output = Wake;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Wake> {
        let w = self.get_mut();
        if let Poll::Ready(r) = (w.ready)(cx) {
            return Poll::Ready(if r.is_ok() {
                Wake::Readable
            } else {
                Wake::Close
            });
        }
        if w.stop.is_triggered() || now_ms() >= w.deadline {
            return Poll::Ready(Wake::Close);
        }
        w.entry.park(cx.waker(), w.deadline);
        Poll::Pending
    }
}

/// A connection's slot while it waits; dropping it frees the slot.
struct Entry<'a> {
    set: &'a IdleSet,
    key: Option<u32>,
}

impl Entry<'_> {
    fn park(&mut self, waker: &Waker, deadline: u64) {
        let mut s = self.set.inner.lock();
        match self.key {
            Some(k) => {
                let slot = &mut s.slots[k as usize];
                match &mut slot.waker {
                    Some(w) if w.will_wake(waker) => {}
                    w => *w = Some(waker.clone()),
                }
                slot.deadline = deadline;
            }
            None => {
                let slot = Slot {
                    waker: Some(waker.clone()),
                    deadline,
                };
                let k = match s.free.pop() {
                    Some(k) => {
                        s.slots[k as usize] = slot;
                        k
                    }
                    None => {
                        s.slots.push(slot);
                        (s.slots.len() - 1) as u32
                    }
                };
                self.key = Some(k);
            }
        }
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            let mut s = self.set.inner.lock();
            s.slots[k as usize] = Slot {
                waker: None,
                deadline: u64::MAX,
            };
            s.free.push(k);
            // A burst of idle connections that has gone leaves no large
            // vectors behind.
            if s.free.len() == s.slots.len() && s.slots.capacity() > 1024 {
                *s = Slots::default();
            }
        }
    }
}

/// The sweeper of the calling worker's set. Once the server stops it wakes
/// every idle connection (they close) at every tick, for connections that
/// were about to wait just then; it ends with the worker.
pub async fn sweeper(shared: Arc<Shared>) {
    let set = shared.idle.local();
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Until the server stops: wake the connections past their limit.
    loop {
        tokio::select! {
            _ = tick.tick() => set.sweep(now_ms(), false),
            _ = shared.shutdown.cancelled() => break,
        }
    }
    // Then wake them all, now and at every tick.
    loop {
        set.sweep(now_ms(), true);
        tick.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn sweeps_wake_what_is_due_and_everything_at_shutdown() {
        let set = IdleSet::default();
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let mut ea = Entry {
            set: &set,
            key: None,
        };
        let mut eb = Entry {
            set: &set,
            key: None,
        };
        ea.park(&wa, 100);
        eb.park(&wb, 200);
        assert_eq!(set.len(), 2);
        set.sweep(150, false);
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 0);
        // A woken slot is not woken twice.
        set.sweep(150, false);
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        // Parked again with a later limit: not due.
        ea.park(&wa, 300);
        set.sweep(250, false);
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        // Shutdown wakes everyone parked.
        eb.park(&wb, 10_000);
        set.sweep(0, true);
        assert_eq!(a.0.load(Ordering::SeqCst), 2);
        assert_eq!(b.0.load(Ordering::SeqCst), 2);
        drop(ea);
        assert_eq!(set.len(), 1);
        // The freed slot is reused.
        let mut ec = Entry {
            set: &set,
            key: None,
        };
        ec.park(&wa, 1);
        assert_eq!(ec.key, Some(0));
        drop((eb, ec));
        assert!(set.is_empty());
    }
}
