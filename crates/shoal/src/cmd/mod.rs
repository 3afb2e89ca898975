//! One thin module per subcommand: parse its arguments, build the library's
//! config, run it.

pub mod bench;
pub mod bench_amqp;
pub mod broker;
pub mod cluster;
pub mod ctl;
pub mod ctl_broker;
pub mod ctl_logs;
pub mod dgram;
pub mod proxy;
pub mod stats;
pub mod up;

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use shoal_core::Shutdown;

/// The threads of a subcommand's tokio runtime.
#[derive(Clone, Copy, Debug)]
pub enum Threads {
    /// The current thread only (a supervisor, or a small tool).
    One,
    /// One worker thread per core.
    PerCore,
    /// Exactly this many worker threads (at least one).
    Exactly(usize),
}

/// What every serving subcommand does around its library: start a tokio
/// runtime, make the root [`Shutdown`] and tie it to TERM/INT (and the other
/// signals it handles), run `body` with it until it ends, and, when
/// `stop_wait` is given, wait at most that long for the runtime's leftover
/// tasks instead of for all of them.
pub fn run_with_signals<F, Fut>(
    threads: Threads,
    stop_wait: Option<Duration>,
    body: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    raise_open_files_limit();
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::PerCore => tokio::runtime::Builder::new_multi_thread(),
        Threads::Exactly(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
    };
    let rt = builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let result = rt.block_on(async move {
        let shutdown = Shutdown::new();
        shutdown
            .trigger_on_signals()
            .context("cannot install signal handlers")?;
        body(shutdown).await
    });
    if let Some(wait) = stop_wait {
        rt.shutdown_timeout(wait);
    }
    result
}

/// Raise the soft limit on open descriptors to the hard one, as Go's runtime
/// does for its servers: a proxy or broker with thousands of connections
/// should not fail at the soft default of 1024 while the system allows more.
/// Workers started from here inherit it.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                tracing::debug!("could not raise the open-files limit");
            }
        }
    }
}
