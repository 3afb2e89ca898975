//! Worker output written to files (`--log-dir`, PM2's log files): one file
//! per stream (`NAME-out.log`, `NAME-error.log`) or one for both
//! (`--merge-logs`: `NAME.log`), each line prefixed with an RFC 3339 time
//! and the worker id.
//!
//! Each file has one writer thread that owns it, so that lines from
//! concurrent workers never interleave mid-line and a slow or full disk never
//! blocks the primary's task. The lines queued for a file are bounded in
//! bytes ([`QUEUE_BYTES`]): a worker that floods its output waits for the
//! disk (its pipe fills), the primary's memory does not grow. A write that
//! fails (full disk, removed directory) drops the line, counts it and logs
//! once until writing works again.
//!
//! The files are reopened on request (SIGUSR1, for logrotate's `create`
//! mode) and rotated by size when `--log-max-size` is set: `NAME-out.log`
//! becomes `NAME-out.log.1`, the older ones shift up to `--log-keep`, and the
//! oldest is dropped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Where and how worker output goes to files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSpec {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// One file for stdout and stderr instead of one per stream.
    pub merge: bool,
    /// Rotate a file before it would pass this many bytes.
    pub max_size: Option<u64>,
    /// How many rotated files to keep (`NAME.1` .. `NAME.N`).
    pub keep: u32,
}

impl LogSpec {
    /// Defaults: separate files, no size rotation, 5 rotated files kept.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogSpec {
            dir: dir.into(),
            merge: false,
            max_size: None,
            keep: 5,
        }
    }
}

/// The most bytes of lines waiting to be written to one file.
pub const QUEUE_BYTES: usize = 1 << 20;

/// How often a file that could not be opened is tried again.
const RETRY_OPEN: Duration = Duration::from_secs(1);

/// One log file as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LogInfo {
    /// `out`, `error` or `all` (merged).
    pub stream: &'static str,
    /// Its path.
    pub path: String,
    /// Lines dropped because the file could not be written.
    pub dropped_lines: u64,
}

enum Msg {
    Line(Vec<u8>, OwnedSemaphorePermit),
    Reopen,
    Flush(oneshot::Sender<std::result::Result<(), String>>),
}

/// One open log file: lines go to its writer thread.
pub(crate) struct LogFile {
    stream: &'static str,
    path: PathBuf,
    tx: mpsc::UnboundedSender<Msg>,
    budget: Arc<Semaphore>,
    dropped: Arc<AtomicU64>,
}

impl LogFile {
    fn open(stream: &'static str, path: PathBuf, spec: &LogSpec) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            path: path.clone(),
            file: None,
            size: 0,
            max_size: spec.max_size,
            keep: spec.keep,
            dropped: dropped.clone(),
            failing: None,
            last_open: None,
        };
        std::thread::Builder::new()
            .name(format!("log-{stream}"))
            .spawn(move || writer.run(rx))?;
        Ok(Arc::new(LogFile {
            stream,
            path,
            tx,
            budget: Arc::new(Semaphore::new(QUEUE_BYTES)),
            dropped,
        }))
    }

    /// Queue one line (it ends with `\n`): waits while [`QUEUE_BYTES`] are
    /// already queued, so the caller (a worker's output relay) slows to the
    /// disk's pace.
    pub(crate) async fn write(&self, line: Vec<u8>) {
        let n = line.len().clamp(1, QUEUE_BYTES) as u32;
        let Ok(permit) = self.budget.clone().acquire_many_owned(n).await else {
            return;
        };
        if self.tx.send(Msg::Line(line, permit)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn info(&self) -> LogInfo {
        LogInfo {
            stream: self.stream,
            path: self.path.display().to_string(),
            dropped_lines: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The log files of a cluster.
pub(crate) struct Logs {
    out: Arc<LogFile>,
    err: Arc<LogFile>,
}

impl Logs {
    /// Start the writers for `name`'s files in `spec.dir`. A directory that
    /// cannot be made or written is logged; its lines are dropped (counted)
    /// and the files are tried again as lines come.
    pub(crate) fn open(name: &str, spec: &LogSpec) -> std::io::Result<Logs> {
        // Absolute, so that `ctl logs` run from elsewhere finds the files.
        let dir = std::path::absolute(&spec.dir).unwrap_or_else(|_| spec.dir.clone());
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), "cannot create the log directory: {e}; worker output is dropped until it can be written");
        }
        let file = |suffix: &str| dir.join(format!("{name}{suffix}.log"));
        if spec.merge {
            let all = LogFile::open("all", file(""), spec)?;
            Ok(Logs {
                out: all.clone(),
                err: all,
            })
        } else {
            Ok(Logs {
                out: LogFile::open("out", file("-out"), spec)?,
                err: LogFile::open("error", file("-error"), spec)?,
            })
        }
    }

    /// The file for a worker's stdout.
    pub(crate) fn out(&self) -> Arc<LogFile> {
        self.out.clone()
    }

    /// The file for a worker's stderr.
    pub(crate) fn err(&self) -> Arc<LogFile> {
        self.err.clone()
    }

    fn files(&self) -> Vec<&Arc<LogFile>> {
        if Arc::ptr_eq(&self.out, &self.err) {
            vec![&self.out]
        } else {
            vec![&self.out, &self.err]
        }
    }

    /// The files, for `status`.
    pub(crate) fn info(&self) -> Vec<LogInfo> {
        self.files().into_iter().map(|f| f.info()).collect()
    }

    /// Close and open the files again by name (after logrotate moved them).
    pub(crate) fn reopen(&self) {
        for f in self.files() {
            let _ = f.tx.send(Msg::Reopen);
        }
    }

    /// Empty the files and remove the rotated ones (`pm2 flush`); resolves
    /// once every writer has done so.
    pub(crate) fn flush(&self) -> impl std::future::Future<Output = Result<usize, String>> {
        let waits: Vec<_> = self
            .files()
            .into_iter()
            .map(|f| {
                let (tx, rx) = oneshot::channel();
                let sent = f.tx.send(Msg::Flush(tx)).is_ok();
                (f.path.display().to_string(), sent.then_some(rx))
            })
            .collect();
        async move {
            let n = waits.len();
            for (path, rx) in waits {
                match rx {
                    Some(rx) => match rx.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(format!("{path}: {e}")),
                        Err(_) => return Err(format!("{path}: its writer has stopped")),
                    },
                    None => return Err(format!("{path}: its writer has stopped")),
                }
            }
            Ok(n)
        }
    }
}

/// A line as written: `2026-12-06T19:20:01.123Z [NAME ID] text\n`.
pub(crate) fn stamp(prefix: &str, text: &[u8]) -> Vec<u8> {
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let mut line = Vec::with_capacity(now.len() + 1 + prefix.len() + text.len());
    line.extend_from_slice(now.as_bytes());
    line.push(b' ');
    line.extend_from_slice(prefix.as_bytes());
    line.extend_from_slice(text);
    line
}

/// The thread that owns one file.
struct Writer {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: Option<u64>,
    keep: u32,
    dropped: Arc<AtomicU64>,
    /// Lines dropped since writing started failing (and why), to log once.
    failing: Option<(u64, String)>,
    last_open: Option<Instant>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        self.try_open();
        while let Some(m) = rx.blocking_recv() {
            match m {
                Msg::Line(line, permit) => {
                    self.line(&line);
                    drop(permit);
                }
                Msg::Reopen => {
                    self.file = None;
                    self.last_open = None;
                    self.try_open();
                    tracing::info!(path = %self.path.display(), "log file reopened");
                }
                Msg::Flush(reply) => {
                    let _ = reply.send(self.flush());
                }
            }
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
    }

    fn try_open(&mut self) {
        if self.last_open.is_some_and(|t| t.elapsed() < RETRY_OPEN) {
            return;
        }
        self.last_open = Some(Instant::now());
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => {
                self.size = f.metadata().map_or(0, |m| m.len());
                self.file = Some(f);
            }
            Err(e) => self.failed(format!("cannot open: {e}")),
        }
    }

    fn line(&mut self, line: &[u8]) {
        if self.file.is_none() {
            self.try_open();
        }
        if let Some(max) = self.max_size {
            if self.size > 0 && self.size + line.len() as u64 > max {
                self.rotate();
            }
        }
        let Some(f) = self.file.as_mut() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some((n, _)) = self.failing.as_mut() {
                *n += 1;
            }
            return;
        };
        match f.write_all(line) {
            Ok(()) => {
                self.size += line.len() as u64;
                if let Some((n, why)) = self.failing.take() {
                    tracing::warn!(path = %self.path.display(), "log file written again; {n} line(s) dropped ({why})");
                }
            }
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.failed(format!("write failed: {e}"));
                if let Some((n, _)) = self.failing.as_mut() {
                    *n += 1;
                }
            }
        }
    }

    /// Note a failure; logged once until a write succeeds again.
    fn failed(&mut self, why: String) {
        if self.failing.is_none() {
            tracing::error!(path = %self.path.display(), "log file: {why}; worker output is dropped (and counted) until it can be written");
            self.failing = Some((0, why));
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    /// `path.(keep-1)` → `path.keep` (the oldest goes), ..., `path` → `path.1`.
    fn rotate(&mut self) {
        self.file = None;
        for n in (1..self.keep).rev() {
            rename_if_there(&self.rotated(n), &self.rotated(n + 1));
        }
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            rename_if_there(&self.path, &self.rotated(1));
        }
        self.last_open = None;
        self.try_open();
    }

    fn flush(&mut self) -> std::result::Result<(), String> {
        for n in 1..=self.keep {
            let _ = std::fs::remove_file(self.rotated(n));
        }
        self.last_open = None;
        self.try_open();
        match self.file.as_ref() {
            Some(f) => {
                f.set_len(0).map_err(|e| e.to_string())?;
                self.size = 0;
                Ok(())
            }
            None => Err("cannot open the file".into()),
        }
    }
}

fn rename_if_there(from: &Path, to: &Path) {
    if let Err(e) = std::fs::rename(from, to) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(from = %from.display(), to = %to.display(), "log rotation: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    async fn settle(logs: &Logs) {
        // A flush round trip: it is handled after every line queued before it.
        let (tx, rx) = oneshot::channel();
        let _ = logs.out.tx.send(Msg::Flush(tx));
        let _ = rx.await;
    }

    #[tokio::test]
    async fn rotates_by_size_keeping_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = LogSpec::new(dir.path());
        spec.max_size = Some(100);
        spec.keep = 2;
        let logs = Logs::open("web", &spec).unwrap();
        let out = logs.out();
        for i in 0..10 {
            // 40 bytes a line: two fit in 100 bytes, the third rotates.
            out.write(format!("{i:0>39}\n").into_bytes()).await;
        }
        let probe = logs.err();
        probe.write(b"e\n".to_vec()).await;
        // Wait until all ten are written: the last goes to a fresh file.
        let base = dir.path().join("web-out.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lines_of(&base).iter().any(|l| l.ends_with('9')) {
            assert!(Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cur = lines_of(&base);
        let one = lines_of(&dir.path().join("web-out.log.1"));
        let two = lines_of(&dir.path().join("web-out.log.2"));
        assert_eq!(cur.len(), 2, "{cur:?}");
        assert!(cur[0].ends_with('8') && one[1].ends_with('7') && two[0].ends_with('4'));
        assert!(!dir.path().join("web-out.log.3").exists());
        assert_eq!(lines_of(&dir.path().join("web-error.log")), ["e"]);
    }

    #[tokio::test]
    async fn an_unwritable_directory_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be: nothing can be created in it.
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").unwrap();
        let mut spec = LogSpec::new(&blocker);
        spec.merge = true;
        let logs = Logs::open("web", &spec).unwrap();
        for _ in 0..3 {
            logs.out().write(b"lost\n".to_vec()).await;
        }
        settle(&logs).await;
        let info = logs.info();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].stream, "all");
        assert_eq!(info[0].dropped_lines, 3);
    }
}
