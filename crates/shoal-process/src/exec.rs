//! Fully buffered runs: `exec` (a command line through `/bin/sh -c`) and
//! `exec_file` (a program and its arguments, no shell), with `timeout`,
//! `kill_signal`, `max_buffer` and `encoding`, like Node's.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::child::{spawn, ExitStatus, SpawnOptions};
use crate::stdio::Stdio;

/// How to turn the captured bytes into [`Output`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 text (invalid sequences become U+FFFD). Node's default.
    #[default]
    Utf8,
    /// One byte per character (ISO-8859-1).
    Latin1,
    /// The raw bytes (Node's `encoding: 'buffer'`).
    Buffer,
}

/// Captured stdout or stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Decoded text.
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl Output {
    fn decode(bytes: Vec<u8>, enc: Encoding) -> Output {
        match enc {
            Encoding::Utf8 => Output::Text(
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            Encoding::Latin1 => Output::Text(bytes.iter().map(|&b| b as char).collect()),
            Encoding::Buffer => Output::Bytes(bytes),
        }
    }

    /// The text (raw bytes are decoded lossily as UTF-8).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Output::Text(s) => s.as_str().into(),
            Output::Bytes(b) => String::from_utf8_lossy(b),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Output::Text(s) => s.len(),
            Output::Bytes(b) => b.len(),
        }
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Options of [`exec`] and [`exec_file`].
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// The child's whole environment; `None` inherits ours.
    pub env: Option<BTreeMap<OsString, OsString>>,
    /// Decoding of stdout and stderr.
    pub encoding: Encoding,
    /// Kill the child with `kill_signal` after this long.
    pub timeout: Option<Duration>,
    /// Most bytes accepted on stdout or on stderr; past it the child is killed.
    pub max_buffer: usize,
    /// The signal sent on timeout or overflow (default SIGTERM).
    pub kill_signal: i32,
    /// The shell for [`exec`] (default `/bin/sh`).
    pub shell: PathBuf,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            cwd: None,
            env: None,
            encoding: Encoding::Utf8,
            timeout: None,
            max_buffer: 1024 * 1024,
            kill_signal: libc::SIGTERM,
            shell: PathBuf::from("/bin/sh"),
        }
    }
}

/// A finished run's output.
#[derive(Clone, Debug)]
pub struct ExecOutput {
    /// What the child wrote on stdout.
    pub stdout: Output,
    /// What the child wrote on stderr.
    pub stderr: Output,
}

/// Why a run failed.
#[derive(Debug)]
pub enum ExecFailure {
    /// It could not be started.
    Spawn(crate::Error),
    /// It ran and exited with a non-zero code or by a signal.
    Exited(ExitStatus),
    /// It ran past `timeout` and was sent `kill_signal`.
    Timeout(Duration, ExitStatus),
    /// stdout or stderr passed `max_buffer` and the child was sent `kill_signal`.
    MaxBuffer(&'static str, usize, ExitStatus),
    /// Reading its output failed.
    Io(std::io::Error),
}

/// The error of [`exec`]/[`exec_file`]: what happened, the command, and the
/// output captured up to that point.
#[derive(Debug, thiserror::Error)]
#[error("command failed: {cmd}: {failure}")]
pub struct ExecError {
    /// The command line (or program and arguments).
    pub cmd: String,
    /// What went wrong.
    pub failure: ExecFailure,
    /// stdout captured before the failure.
    pub stdout: Output,
    /// stderr captured before the failure.
    pub stderr: Output,
}

impl ExecError {
    /// The exit code, when it exited.
    pub fn code(&self) -> Option<i32> {
        self.status().and_then(|s| s.code)
    }
    /// The signal that ended it, when one did.
    pub fn signal(&self) -> Option<i32> {
        self.status().and_then(|s| s.signal)
    }
    fn status(&self) -> Option<ExitStatus> {
        match &self.failure {
            ExecFailure::Exited(s)
            | ExecFailure::Timeout(_, s)
            | ExecFailure::MaxBuffer(_, _, s) => Some(*s),
            _ => None,
        }
    }
}

impl fmt::Display for ExecFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecFailure::Spawn(e) => write!(f, "{e}"),
            ExecFailure::Exited(s) => write!(f, "{s}"),
            ExecFailure::Timeout(d, s) => write!(f, "timed out after {d:?} ({s})"),
            ExecFailure::MaxBuffer(which, n, s) => {
                write!(f, "{which} exceeded max_buffer of {n} bytes ({s})")
            }
            ExecFailure::Io(e) => write!(f, "reading output: {e}"),
        }
    }
}

/// Run `command_line` through the shell and collect its output.
pub async fn exec(command_line: &str, opts: ExecOptions) -> Result<ExecOutput, ExecError> {
    let shell = opts.shell.clone();
    run(
        shell.into_os_string(),
        vec![OsString::from("-c"), OsString::from(command_line)],
        command_line.to_string(),
        opts,
    )
    .await
}

/// Run `file` with `args` (no shell) and collect its output.
pub async fn exec_file<I, A>(
    file: &str,
    args: I,
    opts: ExecOptions,
) -> Result<ExecOutput, ExecError>
where
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut shown = file.to_string();
    for a in &args {
        shown.push(' ');
        shown.push_str(&a.to_string_lossy());
    }
    run(OsString::from(file), args, shown, opts).await
}

enum Stop {
    Timeout,
    Overflow(&'static str),
}

async fn run(
    program: OsString,
    args: Vec<OsString>,
    shown: String,
    opts: ExecOptions,
) -> Result<ExecOutput, ExecError> {
    let enc = opts.encoding;
    let fail = |failure, out: Vec<u8>, err: Vec<u8>| ExecError {
        cmd: shown.clone(),
        failure,
        stdout: Output::decode(out, enc),
        stderr: Output::decode(err, enc),
    };
    let mut child = match spawn(
        program,
        args,
        SpawnOptions {
            cwd: opts.cwd.clone(),
            env: opts.env.clone(),
            stdio: vec![Stdio::Ignore, Stdio::Pipe, Stdio::Pipe],
            // Its own group, so that a timeout also reaches what the shell started.
            process_group: true,
            ..SpawnOptions::default()
        },
    ) {
        Ok(c) => c,
        Err(e) => return Err(fail(ExecFailure::Spawn(e), Vec::new(), Vec::new())),
    };
    let pid = child.pid() as libc::pid_t;
    let (Some(mut so), Some(mut se)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(fail(
            ExecFailure::Io(std::io::Error::other("stdio pipes missing")),
            Vec::new(),
            Vec::new(),
        ));
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let max = opts.max_buffer;
    let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stop: Option<Stop> = None;
    let mut bo = vec![0u8; 16 * 1024];
    let mut be = vec![0u8; 16 * 1024];
    while out_open || err_open {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = so.read(&mut bo), if out_open => match r {
                Ok(0) => out_open = false,
                Ok(n) => if append(&mut out, &bo[..n], max) { stop = Some(Stop::Overflow("stdout")); break; },
                Err(e) => return Err(fail(ExecFailure::Io(e), out, err)),
            },
            r = se.read(&mut be), if err_open => match r {
                Ok(0) => err_open = false,
                Ok(n) => if append(&mut err, &be[..n], max) { stop = Some(Stop::Overflow("stderr")); break; },
                Err(e) => return Err(fail(ExecFailure::Io(e), out, err)),
            },
            _ = sleep => { stop = Some(Stop::Timeout); break; }
        }
    }
    if stop.is_some() {
        // Signal the whole group (the child leads it) while the leader is
        // not yet reaped, so the group id cannot have been reused.
        if child.exit_status().is_none() {
            // SAFETY: plain kill(2) on our own child's process group.
            unsafe { libc::kill(-pid, opts.kill_signal) };
        }
        let _ = child.kill(opts.kill_signal);
    }
    let status = child.wait().await;
    drain(&mut so, out_open, &mut out, max).await;
    drain(&mut se, err_open, &mut err, max).await;
    match stop {
        Some(Stop::Timeout) => Err(fail(
            ExecFailure::Timeout(opts.timeout.unwrap_or_default(), status),
            out,
            err,
        )),
        Some(Stop::Overflow(which)) => {
            Err(fail(ExecFailure::MaxBuffer(which, max, status), out, err))
        }
        None if status.success() => Ok(ExecOutput {
            stdout: Output::decode(out, enc),
            stderr: Output::decode(err, enc),
        }),
        None => Err(fail(ExecFailure::Exited(status), out, err)),
    }
}

/// Append up to `max` bytes; true if `chunk` did not fit.
fn append(buf: &mut Vec<u8>, chunk: &[u8], max: usize) -> bool {
    let room = max.saturating_sub(buf.len());
    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    chunk.len() > room
}

/// After the child ended, read what is left in a pipe for a short while (a
/// grandchild may still hold it open).
async fn drain<R: AsyncRead + Unpin>(r: &mut R, open: bool, buf: &mut Vec<u8>, max: usize) {
    if !open {
        return;
    }
    let mut tmp = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        loop {
            match r.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if append(buf, &tmp[..n], max) {
                        break;
                    }
                }
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipeline_and_errors() {
        let out = exec(
            "printf 'b\\na\\nc\\n' | sort | head -n 2",
            ExecOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(out.stdout.text(), "a\nb\n");
        let e = exec("echo oops >&2; exit 3", ExecOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(3));
        assert_eq!(e.stderr.text(), "oops\n");
        let e = exec_file("/nonexistent/prog", ["x"], ExecOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e.failure, ExecFailure::Spawn(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/prog"), "{e}");
    }

    #[tokio::test]
    async fn timeout_kills_with_the_signal() {
        let opts = ExecOptions {
            timeout: Some(Duration::from_millis(300)),
            kill_signal: libc::SIGKILL,
            ..ExecOptions::default()
        };
        let e = exec("echo started; sleep 30; echo never", opts)
            .await
            .unwrap_err();
        assert!(matches!(e.failure, ExecFailure::Timeout(..)), "{e}");
        assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
        assert_eq!(e.stdout.text(), "started\n");
        assert!(e.to_string().contains("timed out"), "{e}");
    }

    #[tokio::test]
    async fn max_buffer_kills_and_says_so() {
        let opts = ExecOptions {
            max_buffer: 1000,
            ..ExecOptions::default()
        };
        let e = exec_file("/bin/sh", ["-c", "yes hello"], opts)
            .await
            .unwrap_err();
        assert!(
            matches!(e.failure, ExecFailure::MaxBuffer("stdout", 1000, _)),
            "{e}"
        );
        assert!(
            e.to_string().contains("exceeded max_buffer of 1000 bytes"),
            "{e}"
        );
        assert_eq!(e.stdout.len(), 1000);
        assert_eq!(e.signal(), Some(libc::SIGTERM));
    }

    #[tokio::test]
    async fn buffer_encoding_keeps_bytes() {
        let opts = ExecOptions {
            encoding: Encoding::Buffer,
            ..ExecOptions::default()
        };
        let out = exec("printf '\\377\\000x'", opts).await.unwrap();
        assert_eq!(out.stdout, Output::Bytes(vec![0xff, 0, b'x']));
    }
}
