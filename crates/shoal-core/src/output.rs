//! The process's stdout and stderr for servers, written so that a slow,
//! stuck or vanished reader can never stop a server: lines go through a
//! bounded queue (16,384 writes and 8 MiB per stream) to one writer thread
//! per stream, a full queue drops new lines and counts them (and says how
//! many, on the same stream, once the reader has caught up), and a write error (the reader of a pipe gone:
//! EPIPE) is ignored. So `shoal cluster | head`, a log shipper that hangs,
//! or a terminal paused with ^S costs lines, never supervision, signals or
//! the control socket.
//!
//! The writer threads write to descriptors 1 and 2 directly, not through
//! `std::io::stdout()`, whose lock a thread stuck in a write would hold.
//! (tracing-appender's non-blocking writer does the rest of this, but its
//! guard prints through that lock when a flush times out, which deadlocks
//! exactly when the reader is stuck.)
//!
//! [`init`] starts it once per process; before that (library tests) lines
//! are written directly, errors ignored.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Writes held per stream for a reader that is behind, before new ones are
/// dropped.
pub const BUFFERED_WRITES: usize = 16_384;

/// Bytes held per stream for a reader that is behind, before new writes are
/// dropped: the queue is bounded in memory too, whatever the line sizes.
pub const BUFFERED_BYTES: usize = 8 << 20;

/// How long [`Guard`]'s drop waits for queued output to be written.
pub const FLUSH_AT_EXIT: Duration = Duration::from_secs(1);

enum Msg {
    Bytes(Vec<u8>),
    Flushed(SyncSender<()>),
}

struct Stream {
    tx: SyncSender<Msg>,
    dropped: std::sync::Arc<AtomicU64>,
    /// Bytes queued and not written yet.
    queued: std::sync::Arc<AtomicUsize>,
}

static STDOUT: OnceLock<Stream> = OnceLock::new();
static STDERR: OnceLock<Stream> = OnceLock::new();

/// Which of the process's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Descriptor 1.
    Stdout,
    /// Descriptor 2.
    Stderr,
}

impl Which {
    fn stream(self) -> &'static OnceLock<Stream> {
        match self {
            Which::Stdout => &STDOUT,
            Which::Stderr => &STDERR,
        }
    }
    fn fd(self) -> i32 {
        match self {
            Which::Stdout => 1,
            Which::Stderr => 2,
        }
    }
}

/// Started by [`init`]; dropping it waits at most [`FLUSH_AT_EXIT`] for
/// queued output to be written (a reader that does not read loses it).
#[must_use = "dropping the guard flushes the output"]
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        flush(FLUSH_AT_EXIT);
    }
}

fn writer_thread(
    which: Which,
    rx: Receiver<Msg>,
    queued: std::sync::Arc<AtomicUsize>,
    dropped: std::sync::Arc<AtomicU64>,
) {
    let mut reported = 0;
    // SAFETY: descriptors 1 and 2 stay open for the life of the process;
    // ManuallyDrop keeps this File from closing them.
    let mut out = ManuallyDrop::new(unsafe { File::from_raw_fd(which.fd()) });
    for msg in rx {
        match msg {
            Msg::Bytes(b) => {
                let _ = out.write_all(&b);
                // Once caught up, say what was lost meanwhile.
                if queued.fetch_sub(b.len(), Ordering::Relaxed) == b.len() {
                    let now = dropped.load(Ordering::Relaxed);
                    if now > reported {
                        let note = format!(
                            "shoal: {} line(s) of output dropped: the reader was too slow\n",
                            now - reported
                        );
                        let _ = out.write_all(note.as_bytes());
                        reported = now;
                    }
                }
            }
            Msg::Flushed(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

/// Start the writer threads (once per process).
pub fn init() -> Guard {
    for which in [Which::Stdout, Which::Stderr] {
        which.stream().get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel(BUFFERED_WRITES);
            let queued = std::sync::Arc::new(AtomicUsize::new(0));
            let counted = queued.clone();
            let dropped = std::sync::Arc::new(AtomicU64::new(0));
            let lost = dropped.clone();
            let name = match which {
                Which::Stdout => "shoal-stdout",
                Which::Stderr => "shoal-stderr",
            };
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || writer_thread(which, rx, counted, lost))
                .expect("spawn an output writer thread");
            Stream {
                tx,
                dropped,
                queued,
            }
        });
    }
    Guard(())
}

/// Queue `bytes` (whole lines) for `which`; never blocks, never fails.
pub fn write(which: Which, bytes: &[u8]) {
    match which.stream().get() {
        Some(s) => {
            // Counted before it is queued, so the writer never subtracts first.
            if s.queued.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len() > BUFFERED_BYTES {
                s.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                s.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match s.tx.try_send(Msg::Bytes(bytes.to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    s.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        None => {
            // SAFETY: as in writer_thread.
            let mut f = ManuallyDrop::new(unsafe { File::from_raw_fd(which.fd()) });
            let _ = f.write_all(bytes);
        }
    }
}

/// Queue `bytes` for stdout.
pub fn stdout(bytes: &[u8]) {
    write(Which::Stdout, bytes);
}

/// Queue `bytes` for stderr.
pub fn stderr(bytes: &[u8]) {
    write(Which::Stderr, bytes);
}

/// Wait at most `limit` for what is queued on both streams to be written.
pub fn flush(limit: Duration) {
    let deadline = Instant::now() + limit;
    for which in [Which::Stdout, Which::Stderr] {
        let Some(s) = which.stream().get() else {
            continue;
        };
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let mut msg = Msg::Flushed(ack_tx);
        // The queue may be full behind a stuck reader: retry until the
        // deadline rather than block.
        loop {
            match s.tx.try_send(msg) {
                Ok(()) => {
                    let _ = ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
                    break;
                }
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
    }
}

/// Writes dropped so far because a reader was behind (both streams).
pub fn dropped_writes() -> u64 {
    [Which::Stdout, Which::Stderr]
        .iter()
        .filter_map(|w| w.stream().get())
        .map(|s| s.dropped.load(Ordering::Relaxed))
        .sum()
}

/// An `io::Write` that queues each write on a stream (for tracing's
/// `with_writer(|| Queued(Which::Stderr))`: one event, one write).
#[derive(Clone, Copy, Debug)]
pub struct Queued(pub Which);

impl Write for Queued {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
