//! How the syncer thread tells the connections' tasks how far the store has
//! synced ([`Store::synced`](super::Store::synced), which publisher confirms
//! wait on).
//!
//! Waking a task from a thread outside the runtime queues it on the
//! runtime's shared queue and unparks a worker; the worker that finds it
//! then wakes another to look for more work, so on a small machine every
//! sync cost a second worker a wake-up for nothing (about one per sync, a
//! quarter of the context switches of a paced persistent load). Here the
//! syncer writes to an eventfd instead, which the runtime's I/O driver
//! watches like a socket: the worker already waiting in `epoll_wait` (or
//! the next one to look) runs a small relay task, and the relay wakes the
//! waiting writers from inside the runtime, where tokio runs them on the
//! same worker. The eventfd is written only when the relay has taken the
//! previous signal (`poked`), so a burst of syncs costs one write and one
//! read.
//!
//! Without a runtime at hand when the store opens (tools, some tests), or
//! if the eventfd cannot be made, the syncer sends on the channel itself,
//! as before.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

/// The store's synced sequence number, as the syncer advances it and as
/// tasks see it.
pub(super) struct SyncSignal {
    /// What the syncer last reported (ahead of `tx` while a relay runs).
    seq: AtomicU64,
    /// What tasks watch.
    tx: watch::Sender<u64>,
    /// The eventfd a relay task watches, when one runs (the syncer writes
    /// to it).
    efd: Option<AsyncFd<OwnedFd>>,
    /// A signal is written and the relay has not taken it yet.
    poked: AtomicBool,
    /// The syncer has stopped: the relay forwards what is left and ends.
    closed: AtomicBool,
    /// The relay task runs (false once it has ended or was dropped with its
    /// runtime; the syncer then sends on the channel itself).
    relaying: AtomicBool,
}

impl SyncSignal {
    /// A signal starting at 0, relayed through the current runtime's I/O
    /// driver when there is one.
    pub(super) fn new() -> Arc<SyncSignal> {
        let (tx, _) = watch::channel(0u64);
        let rt = tokio::runtime::Handle::try_current().ok();
        let efd = rt.as_ref().and_then(registered_eventfd);
        let signal = Arc::new(SyncSignal {
            seq: AtomicU64::new(0),
            tx,
            relaying: AtomicBool::new(efd.is_some()),
            efd,
            poked: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        if let (Some(rt), true) = (rt, signal.efd.is_some()) {
            rt.spawn(relay_task(Relaying(signal.clone())));
        }
        signal
    }

    /// A receiver of the synced sequence number.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// The synced sequence number as tasks see it.
    pub(super) fn seen(&self) -> u64 {
        *self.tx.borrow()
    }

    /// What the syncer last reported (for a blocking close).
    pub(super) fn reported(&self) -> u64 {
        self.seq.load(SeqCst)
    }

    /// Report that everything up to `seq` is on disk (the syncer thread).
    pub(super) fn advance(&self, seq: u64) {
        if self.seq.fetch_max(seq, SeqCst) >= seq {
            return;
        }
        match &self.efd {
            Some(fd) if self.relaying.load(SeqCst) => {
                if !self.poked.swap(true, SeqCst) {
                    poke(fd);
                }
            }
            _ => self.forward(),
        }
    }

    /// The syncer has stopped: let the relay end.
    pub(super) fn close(&self) {
        self.closed.store(true, SeqCst);
        if let Some(fd) = &self.efd {
            poke(fd);
        }
    }

    /// Tell the watching tasks what the syncer reported, if it is new to them.
    fn forward(&self) {
        let seq = self.seq.load(SeqCst);
        self.tx.send_if_modified(|s| {
            let higher = seq > *s;
            if higher {
                *s = seq;
            }
            higher
        });
    }
}

/// A nonblocking eventfd registered with `rt`'s I/O driver.
fn registered_eventfd(rt: &tokio::runtime::Handle) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: eventfd takes no pointers; a valid result is a new descriptor
    // that nothing else owns.
    let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` was just created and is owned here alone.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let _in_runtime = rt.enter();
    // SAFETY: the OwnedFd keeps the descriptor open, and the same one, for
    // as long as the AsyncFd owns it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
}

/// Add one to the eventfd's counter. It cannot fail in a way that matters:
/// the counter would have to reach 2^64 - 1, and the relay reads it to 0.
fn poke(fd: &AsyncFd<OwnedFd>) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to an open descriptor.
    let _ = unsafe { libc::write(fd.get_ref().as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// The relay's hold on the signal: however the relay ends (the syncer
/// stopped, or its runtime shut down and dropped it), the syncer sends on
/// the channel itself from then on, and nothing it reported is left
/// unforwarded.
struct Relaying(Arc<SyncSignal>);

impl Drop for Relaying {
    fn drop(&mut self) {
        self.0.relaying.store(false, SeqCst);
        self.0.forward();
    }
}

/// Wait for the syncer's signals and forward each to the watching tasks,
/// until the syncer has stopped.
async fn relay_task(signal: Relaying) {
    let signal = &signal.0;
    let Some(fd) = signal.efd.as_ref() else {
        return;
    };
    loop {
        let Ok(mut ready) = fd.readable().await else {
            break;
        };
        let mut counter = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from an open
        // descriptor.
        let n = unsafe {
            libc::read(
                fd.get_ref().as_raw_fd(),
                counter.as_mut_ptr().cast(),
                counter.len(),
            )
        };
        // One read takes the whole count; a signal written after it raises
        // readiness again, which clearing here does not lose (tokio keeps
        // a readiness that arrived after this guard was taken).
        ready.clear_ready();
        if n < 0 {
            continue;
        }
        signal.poked.store(false, SeqCst);
        signal.forward();
        if signal.closed.load(SeqCst) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn seen_at_least(rx: &mut watch::Receiver<u64>, seq: u64) {
        let wait = async {
            while *rx.borrow_and_update() < seq {
                rx.changed().await.expect("the signal's sender is alive");
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the watchers never saw the sync");
    }

    /// Inside a runtime the relay carries each advance to the watchers, a
    /// burst of advances included, and ends once the syncer has stopped.
    #[test]
    fn the_relay_forwards_every_advance_and_ends_with_the_syncer() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let signal = rt.block_on(async { SyncSignal::new() });
        assert!(signal.relaying.load(SeqCst), "no relay in a runtime");
        let mut rx = signal.subscribe();
        rt.block_on(async {
            for seq in 1..=200u64 {
                signal.advance(seq);
                if seq % 50 == 0 {
                    seen_at_least(&mut rx, seq).await;
                }
            }
            // Going backwards changes nothing.
            signal.advance(3);
            assert_eq!(signal.reported(), 200);
            assert_eq!(signal.seen(), 200);
        });
        signal.advance(250);
        signal.close();
        rt.block_on(async {
            seen_at_least(&mut rx, 250).await;
            let gone = async {
                while Arc::strong_count(&signal) > 1 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(5), gone)
                .await
                .expect("the relay outlived the syncer");
        });
        assert!(!signal.relaying.load(SeqCst));
    }

    /// Without a runtime, or once the relay's runtime is gone, the syncer's
    /// own advance reaches the watchers.
    #[test]
    fn without_a_relay_the_advance_is_sent_at_once() {
        let alone = SyncSignal::new();
        assert!(!alone.relaying.load(SeqCst));
        alone.advance(7);
        assert_eq!(alone.seen(), 7);

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let signal = rt.block_on(async {
            let s = SyncSignal::new();
            // Let the relay start waiting.
            tokio::task::yield_now().await;
            s
        });
        assert!(signal.relaying.load(SeqCst));
        drop(rt);
        assert!(
            !signal.relaying.load(SeqCst),
            "the dropped relay still counts"
        );
        signal.advance(9);
        assert_eq!(signal.seen(), 9);
    }
}
