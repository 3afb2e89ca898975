//! Worker threads, the way nginx runs worker processes: each thread has its
//! own current-thread tokio runtime, accepts from its own SO_REUSEPORT socket
//! of every listener and serves those connections start to finish, with its
//! own idle pool of upstream connections. A connection's task never moves to
//! another core and never waits for a wake-up from one, which on a small
//! machine is worth about a tenth of the CPU a request costs (see
//! docs/BENCHMARKS.md). The control plane (reload, health checks, admin,
//! access log) stays on the runtime that called [`crate::Server::bind`].

use std::cell::Cell;
use std::io;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use shoal_core::Shutdown;
use tokio::runtime::{Builder, Handle};

thread_local! {
    /// This thread's worker number; 0 on threads that are not workers.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The number of the worker running the caller (0 outside the workers).
/// Per-worker state, such as upstream idle pools, is indexed by it.
pub fn index() -> usize {
    INDEX.with(|i| i.get())
}

/// One worker per core when the configuration says 0.
pub fn resolve_count(configured: usize) -> usize {
    if configured > 0 {
        return configured.min(MAX_WORKERS);
    }
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
}

/// What each worker thread runs every [`HOUSEKEEPING_EVERY`] (see [`set_housekeeping`]).
static HOUSEKEEPING: OnceLock<fn()> = OnceLock::new();

/// How often a worker runs the housekeeping function.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(250);

/// Have every worker thread call `f` four times a second, for the program
/// to return memory its allocator holds free to the system: a burst of
/// requests leaves freed buffers behind, and an allocator that returns
/// memory only while the thread allocates (mimalloc purges on later
/// activity) would otherwise keep them while the worker sits idle. The
/// `shoal` binary passes mimalloc's `mi_collect`; with glibc's malloc it
/// would be `malloc_trim`. Set once, before the first server starts; later
/// calls are ignored.
pub fn set_housekeeping(f: fn()) {
    let _ = HOUSEKEEPING.set(f);
}

/// Upper bound on worker threads.
pub const MAX_WORKERS: usize = 64;

/// Running worker threads. Dropping this stops them: tasks still running on
/// them are cancelled, as a runtime's shutdown does.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: Shutdown,
}

impl Workers {
    /// Start `n` (at least one) worker threads named `shoal-proxy-N`.
    pub fn start(n: usize) -> io::Result<Workers> {
        let n = n.clamp(1, MAX_WORKERS);
        let stop = Shutdown::new();
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            let stopped = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("shoal-proxy-{i}"))
                .spawn(move || {
                    INDEX.with(|x| x.set(i));
                    if let Some(&f) = HOUSEKEEPING.get() {
                        rt.spawn(async move {
                            let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
                            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            loop {
                                tick.tick().await;
                                f();
                            }
                        });
                    }
                    rt.block_on(stopped.cancelled());
                    // Dropping the runtime here cancels what still runs on it.
                    drop(rt);
                });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.trigger();
                    return Err(e);
                }
            }
        }
        Ok(Workers {
            handles,
            threads,
            stop,
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtimes, to spawn a task on worker `i` with `handles()[i].spawn`.
    pub fn handles(&self) -> Vec<Handle> {
        self.handles.clone()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.trigger();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A value per worker thread, each on its own cache line: a worker updates
/// its own slot without pulling a line another core keeps writing (a shared
/// counter bumped by every request costs a cross-core transfer each time).
/// Readers that want the total add the slots up.
pub struct PerWorker<T> {
    slots: Box<[Padded<T>]>,
}

/// Aligned to two cache lines (the adjacent-line prefetcher pairs them).
#[repr(align(128))]
struct Padded<T>(T);

impl<T: Default> PerWorker<T> {
    /// One default value per worker, for `n` (at least one) workers.
    pub fn new(n: usize) -> Self {
        PerWorker {
            slots: (0..n.max(1)).map(|_| Padded(T::default())).collect(),
        }
    }
}

impl<T> PerWorker<T> {
    /// The calling worker's slot (slot 0 outside the workers).
    pub fn local(&self) -> &T {
        &self.slots[index() % self.slots.len()].0
    }

    /// Every slot, for totals.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|p| &p.0)
    }
}

impl<T> std::fmt::Debug for PerWorker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PerWorker({} slots)", self.slots.len())
    }
}
