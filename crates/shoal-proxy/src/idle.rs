//! Idle keep-alive connections wait here between requests: each worker has
//! one set of them, and one sweeper task that wakes those whose idle limit
//! has passed (checked every [`SWEEP_EVERY`], nginx's keep-alive timers are
//! as coarse) and all of them when the server stops. A connection so waits
//! with a slot in a vector instead of a timer and a shutdown registration
//! of its own: for the thousands of idle clients a proxy holds, that is
//! most of what each would cost.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use shoal_core::Shutdown;
use slab::Slab;
use tokio::io::unix::AsyncFd;

use crate::listener::{Admitted, ListenerCtx};
use crate::state::Shared;
use crate::upstream::now_ms;

/// How often a worker's sweeper looks for connections past their limit.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// One worker's idle connections.
#[derive(Default)]
pub struct IdleSet {
    slots: Mutex<Slab<Slot>>,
}

struct Slot {
    /// `None`: already woken.
    waker: Option<Waker>,
    /// When the idle limit passes ([`now_ms`]).
    deadline: u64,
    /// When the connection should leave its task ([`PARK_AFTER`] idle).
    park_at: u64,
    /// What the sweeper decided, for the connection's next poll.
    verdict: Option<Wake>,
}

impl IdleSet {
    /// Number of connections waiting (for status output and tests).
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Whether no connection waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wake the connections whose limit is at or before `now` (they
    /// close), or every connection when `all` (the server stops); wake
    /// those idle for [`PARK_AFTER`] to leave their task. Woken slots stay
    /// taken until their connection leaves.
    pub fn sweep(&self, now: u64, all: bool) {
        let mut woken = Vec::new();
        {
            let mut slots = self.slots.lock();
            for (_, slot) in slots.iter_mut() {
                let verdict = if all || slot.deadline <= now {
                    Wake::Close
                } else if slot.park_at <= now {
                    Wake::Park
                } else {
                    continue;
                };
                if let Some(w) = slot.waker.take() {
                    slot.verdict = Some(verdict);
                    woken.push(w);
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
    /// Idle for [`PARK_AFTER`]: the connection should hand its socket to
    /// the worker's [`Parked`] set and end its task.
    Park,
}

/// How long a plain TCP connection waits idle in its own task before it
/// leaves it for the worker's [`Parked`] set.
pub const PARK_AFTER: Duration = Duration::from_millis(500);

/// A connection's wait in its worker's [`IdleSet`] until `ready` says the
/// client sent, the limit `t` passes or `stop` fires. A future of a few
/// words: it is part of every idle connection's task.
///
/// With `park`, a wait that lasts [`PARK_AFTER`] ends with [`Wake::Park`].
pub fn wait<'a, R>(
    set: &'a IdleSet,
    t: Duration,
    park: bool,
    stop: &'a Shutdown,
    ready: R,
) -> Wait<'a, R>
where
    R: FnMut(&mut Context<'_>) -> Poll<std::io::Result<()>> + Unpin,
{
    let now = now_ms();
    Wait {
        entry: Entry { set, key: None },
        stop,
        ready,
        deadline: now + t.as_millis() as u64,
        park_at: if park {
            now + PARK_AFTER.as_millis() as u64
        } else {
            u64::MAX
        },
    }
}

/// The future of [`wait`].
pub struct Wait<'a, R> {
    entry: Entry<'a>,
    stop: &'a Shutdown,
    ready: R,
    deadline: u64,
    park_at: u64,
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
        match w.entry.park(cx.waker(), w.deadline, w.park_at) {
            Some(v) => Poll::Ready(v),
            None => Poll::Pending,
        }
    }
}

/// A connection's slot while it waits; dropping it frees the slot.
struct Entry<'a> {
    set: &'a IdleSet,
    key: Option<usize>,
}

impl Entry<'_> {
    /// Register (again) to be woken; returns the sweeper's verdict instead
    /// if it has given one.
    fn park(&mut self, waker: &Waker, deadline: u64, park_at: u64) -> Option<Wake> {
        let mut slots = self.set.slots.lock();
        match self.key {
            Some(k) => {
                let slot = &mut slots[k];
                if let Some(v) = slot.verdict.take() {
                    return Some(v);
                }
                match &mut slot.waker {
                    Some(w) if w.will_wake(waker) => {}
                    w => *w = Some(waker.clone()),
                }
            }
            None => {
                self.key = Some(slots.insert(Slot {
                    waker: Some(waker.clone()),
                    deadline,
                    park_at,
                    verdict: None,
                }));
            }
        }
        None
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            let mut slots = self.set.slots.lock();
            slots.remove(k);
            shrink_if_drained(&mut slots);
        }
    }
}

/// A burst of connections that has gone leaves no large vector behind.
fn shrink_if_drained<T>(slab: &mut Slab<T>) {
    if slab.is_empty() && slab.capacity() > 1024 {
        *slab = Slab::new();
    }
}

/// Connections that have left their task after [`PARK_AFTER`] idle: each
/// is an entry here, its socket in the worker's own epoll set (one-shot),
/// no longer registered with tokio. When its client sends, the sweeper gives
/// it a new task; at its idle limit, or when the server stops, it is closed.
/// What such a connection costs the proxy is its entry, about 100 bytes,
/// against the 540 of a connection waiting in its task.
pub struct Parked {
    /// The worker's epoll set for parked sockets; -1 until its sweeper runs.
    epoll: AtomicI32,
    conns: Mutex<Slab<ParkedConn>>,
}

impl Default for Parked {
    fn default() -> Self {
        Parked {
            epoll: AtomicI32::new(-1),
            conns: Mutex::default(),
        }
    }
}

/// A parked connection: what its new task will need.
pub struct ParkedConn {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub ctx: Arc<ListenerCtx>,
    pub admitted: Admitted,
    pub stop: Shutdown,
    /// When its idle limit passes ([`now_ms`]).
    pub deadline: u64,
}

impl Parked {
    /// Whether connections can park here (the worker's sweeper runs).
    pub fn is_open(&self) -> bool {
        self.epoll.load(Ordering::Relaxed) >= 0
    }

    /// Number of parked connections.
    pub fn len(&self) -> usize {
        self.conns.lock().len()
    }

    /// Whether no connection is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Park `c`; on failure (no epoll set yet, or the kernel refused) `c`
    /// comes back.
    pub fn park(&self, c: ParkedConn) -> Result<(), ParkedConn> {
        let ep = self.epoll.load(Ordering::Relaxed);
        if ep < 0 {
            return Err(c);
        }
        let fd = c.stream.as_raw_fd();
        let mut conns = self.conns.lock();
        let entry = conns.vacant_entry();
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: entry.key() as u64,
        };
        // SAFETY: `ep` is this set's epoll descriptor (open while the
        // sweeper runs), `fd` an open socket, `ev` a valid event.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(c);
        }
        entry.insert(c);
        Ok(())
    }

    /// Take the connection at `key` out (and its socket out of the set).
    fn take(&self, key: usize) -> Option<ParkedConn> {
        let c = self.conns.lock().try_remove(key)?;
        self.unwatch(&c);
        Some(c)
    }

    fn unwatch(&self, c: &ParkedConn) {
        let ep = self.epoll.load(Ordering::Relaxed);
        // SAFETY: as in `park`; a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                ep,
                libc::EPOLL_CTL_DEL,
                c.stream.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Take out the connections whose limit is at or before `now` (all of
    /// them with `all`), to be closed.
    fn expire(&self, now: u64, all: bool) -> Vec<ParkedConn> {
        let mut conns = self.conns.lock();
        let due: Vec<usize> = conns
            .iter()
            .filter(|(_, c)| all || c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        let out: Vec<ParkedConn> = due.into_iter().map(|k| conns.remove(k)).collect();
        shrink_if_drained(&mut conns);
        drop(conns);
        for c in &out {
            self.unwatch(c);
        }
        out
    }
}

/// Give a parked connection whose client sent a new task on this worker.
fn resume(c: ParkedConn) {
    match tokio::net::TcpStream::from_std(c.stream) {
        Ok(s) => {
            tokio::spawn(crate::http::serve(
                s, c.peer, c.ctx, false, c.admitted, c.stop, true,
            ));
        }
        Err(e) => {
            tracing::debug!(client = %c.peer, error = %e, "cannot resume a parked connection")
        }
    }
}

/// The worker's epoll set for parked connections, watched through tokio.
fn parked_epoll(parked: &Parked) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: epoll_create1 takes no pointers; the result is checked.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "no epoll set for idle connections; they stay in their tasks");
        return None;
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an `OwnedFd` keeps its one descriptor open until dropped,
    // which is when the `AsyncFd` drops it.
    match unsafe { AsyncFd::register(owned) } {
        Ok(a) => {
            parked.epoll.store(fd, Ordering::Relaxed);
            Some(a)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no epoll set for idle connections; they stay in their tasks");
            None
        }
    }
}

/// Marks a worker's parked set closed when its sweeper ends.
struct ClosedOnDrop<'a>(&'a Parked);

impl Drop for ClosedOnDrop<'_> {
    fn drop(&mut self) {
        self.0.epoll.store(-1, Ordering::Relaxed);
    }
}

/// Take out and resume the parked connections whose sockets are ready.
fn resume_ready(parked: &Parked, ep: &AsyncFd<OwnedFd>) -> bool {
    const BATCH: usize = 64;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
    // SAFETY: `events` has room for BATCH entries; timeout 0 never blocks.
    let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), BATCH as i32, 0) };
    if n <= 0 {
        return false;
    }
    for ev in &events[..n as usize] {
        if let Some(c) = parked.take(ev.u64 as usize) {
            resume(c);
        }
    }
    n as usize == BATCH
}

/// Close the calling worker's pooled upstream connections that are past
/// their limit or that their server closed or wrote to.
fn sweep_upstream_pools(shared: &Shared, now: u64) {
    let gen = shared.current.load();
    let max_idle = gen.config.timeouts.upstream_keepalive;
    for up in gen.upstreams.values() {
        for peer in up.peers() {
            peer.sweep_idle(now, max_idle);
        }
    }
}

/// The sweeper of the calling worker: wakes idle connections past their
/// limit or their park time, resumes parked connections whose clients send
/// and closes those past their limit, and drops stale pooled upstream
/// connections. Once the server stops it wakes every
/// idle connection (they close) and closes every parked one, at every tick,
/// for connections that were about to wait just then; it ends with the
/// worker.
pub async fn sweeper(shared: Arc<Shared>) {
    let set = shared.idle.local();
    let parked = shared.parked.local();
    let ep = parked_epoll(parked);
    // Declared after `ep`, so dropped before it: no connection parks into
    // a closed (and perhaps reused) descriptor once the sweeper is gone.
    let _closed = ClosedOnDrop(parked);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Until the server stops.
    loop {
        let ready = async {
            match &ep {
                Some(ep) => ep.readable().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                let now = now_ms();
                set.sweep(now, false);
                drop(parked.expire(now, false));
                sweep_upstream_pools(&shared, now);
            }
            g = ready => {
                if let (Some(mut g), Some(ep)) = (g, &ep) {
                    if !resume_ready(parked, ep) {
                        g.clear_ready();
                    }
                }
            }
            _ = shared.shutdown.cancelled() => break,
        }
    }
    // Then close them all, now and at every tick.
    loop {
        set.sweep(now_ms(), true);
        drop(parked.expire(0, true));
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
        const NEVER: u64 = u64::MAX;
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
        assert_eq!(ea.park(&wa, 100, NEVER), None);
        assert_eq!(eb.park(&wb, 200, 120), None);
        assert_eq!(set.len(), 2);
        // At 110 only a is due: woken, and told to close when it polls.
        set.sweep(110, false);
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 0);
        // A woken slot is not woken twice.
        set.sweep(110, false);
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(ea.park(&wa, 300, NEVER), Some(Wake::Close));
        // At 150 b has been idle past its park time.
        set.sweep(150, false);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert_eq!(eb.park(&wb, 200, 120), Some(Wake::Park));
        // Registered again: shutdown wakes everyone with a close.
        assert_eq!(ea.park(&wa, 300, NEVER), None);
        assert_eq!(eb.park(&wb, 10_000, NEVER), None);
        set.sweep(0, true);
        assert_eq!(a.0.load(Ordering::SeqCst), 2);
        assert_eq!(b.0.load(Ordering::SeqCst), 2);
        assert_eq!(eb.park(&wb, 10_000, NEVER), Some(Wake::Close));
        drop(ea);
        assert_eq!(set.len(), 1);
        // The freed slot is reused.
        let mut ec = Entry {
            set: &set,
            key: None,
        };
        assert_eq!(ec.park(&wa, 1, NEVER), None);
        assert_eq!(ec.key, Some(0));
        drop((eb, ec));
        assert!(set.is_empty());
    }
}
