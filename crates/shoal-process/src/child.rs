//! Starting children (`spawn`, `fork`) and the handle to a running child:
//! pid, stdio streams, `kill` that never hits a reused pid, the IPC channel
//! and the child's events (message, exit, close, disconnect, error).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::fdmap::FdPlan;
use crate::handle::Handle;
use crate::ipc::{self, Incoming, Sender};
use crate::stdio::Stdio;

/// Options of [`spawn`], after Node's `child_process.spawn`.
#[derive(Debug, Default)]
pub struct SpawnOptions {
    /// Working directory of the child (default: ours).
    pub cwd: Option<PathBuf>,
    /// The child's whole environment; `None` inherits ours.
    pub env: Option<BTreeMap<OsString, OsString>>,
    /// Variables added on top of `env` (or of ours).
    pub extra_env: Vec<(OsString, OsString)>,
    /// Run the child in its own session and process group (`setsid`), so that
    /// it can outlive us and our terminal's signals do not reach it.
    pub detached: bool,
    /// Run the child in its own process group (without a new session), so that
    /// it and its own children can be signalled together.
    pub process_group: bool,
    /// Kill the child with SIGKILL if the thread that started it dies
    /// (`PR_SET_PDEATHSIG`); start children from a long-lived thread.
    pub kill_on_parent_death: bool,
    /// User id to run as.
    pub uid: Option<u32>,
    /// Group id to run as.
    pub gid: Option<u32>,
    /// What each descriptor is; missing entries for 0–2 are `Pipe`. Empty
    /// means `["pipe", "pipe", "pipe"]`.
    pub stdio: Vec<Stdio>,
    /// Descriptors to place at fixed numbers (≥ 3) in the child, e.g. the
    /// listeners of socket activation. Applied after `stdio`.
    pub fds: Vec<(RawFd, OwnedFd)>,
    /// `argv[0]` as the child sees it (default: the command).
    pub arg0: Option<OsString>,
}

/// Options of [`fork`], after Node's `child_process.fork`.
#[derive(Debug, Default)]
pub struct ForkOptions {
    /// Working directory of the child.
    pub cwd: Option<PathBuf>,
    /// The child's whole environment; `None` inherits ours.
    pub env: Option<BTreeMap<OsString, OsString>>,
    /// The program that runs the module (default `node`).
    pub exec_path: Option<PathBuf>,
    /// Arguments for `exec_path` before the module (Node's `execArgv`).
    pub exec_argv: Vec<OsString>,
    /// Pipe the child's stdio to us (`child.stdout`...) instead of sharing ours.
    pub silent: bool,
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExitStatus {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal number, if a signal killed it.
    pub signal: Option<i32>,
}

impl ExitStatus {
    fn from_std(s: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus {
            code: s.code(),
            signal: s.signal(),
        }
    }

    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The signal's name (`SIGTERM`), if a signal killed it.
    pub fn signal_name(&self) -> Option<&'static str> {
        self.signal.map(signal_name)
    }
}

/// The name of signal `n` (`SIGKILL`), or `SIG?` if unknown.
pub fn signal_name(n: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(n).map_or("SIG?", |s| s.as_str())
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by {}", signal_name(s)),
            (None, None) => write!(f, "unknown status"),
        }
    }
}

/// What a child reports, in order, through [`Child::next_event`].
#[derive(Debug)]
pub enum ChildEvent {
    /// A message on the IPC channel, with the handle sent along, if any.
    Message(Value, Option<Handle>),
    /// One of Node's internal messages (`cmd` starting with `NODE_`).
    Internal(Value),
    /// Something unusable arrived (a line that is not JSON...); the channel goes on.
    Error(Error),
    /// The IPC channel closed (either side disconnected, or the child exited).
    Disconnect,
    /// The child exited.
    Exit(ExitStatus),
    /// The child exited and its IPC channel is closed.
    Close(ExitStatus),
}

/// A running (or finished) child process.
#[derive(Debug)]
pub struct Child {
    pid: u32,
    /// The child's stdin, when `stdio[0]` is `Pipe`.
    pub stdin: Option<ChildStdin>,
    /// The child's stdout, when `stdio[1]` is `Pipe`.
    pub stdout: Option<ChildStdout>,
    /// The child's stderr, when `stdio[2]` is `Pipe`.
    pub stderr: Option<ChildStderr>,
    /// Our ends of `Pipe` entries at descriptors 3 and up, by descriptor.
    pub extra: BTreeMap<RawFd, std::os::unix::net::UnixStream>,
    channel: Option<Sender>,
    events: mpsc::Receiver<ChildEvent>,
    status: watch::Receiver<Option<ExitStatus>>,
    pidfd: Option<Arc<OwnedFd>>,
}

impl Child {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, once the child has exited (and been reaped).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.status.borrow()
    }

    /// Wait for the child to exit.
    pub async fn wait(&self) -> ExitStatus {
        wait_status(self.status.clone()).await
    }

    /// A future that resolves when the child exits, independent of `self`.
    pub fn exited(&self) -> impl std::future::Future<Output = ExitStatus> + Send + 'static {
        wait_status(self.status.clone())
    }

    /// Send `signal` (e.g. `libc::SIGTERM`). Returns `Ok(false)` if the child
    /// has already exited; a pid reused by another process is never signalled
    /// (the signal goes through a pidfd).
    pub fn kill(&self, signal: i32) -> io::Result<bool> {
        kill_via(self.pidfd.as_deref(), self.pid, &self.status, signal)
    }

    /// A cheap handle that can signal the child from elsewhere.
    pub fn killer(&self) -> Killer {
        Killer {
            pidfd: self.pidfd.clone(),
            pid: self.pid,
            status: self.status.clone(),
        }
    }

    /// Whether the IPC channel is open.
    pub fn connected(&self) -> bool {
        self.channel.as_ref().is_some_and(Sender::connected)
    }

    /// Close the IPC channel (the child sees `'disconnect'`).
    pub async fn disconnect(&self) -> Result<()> {
        let ch = self.channel.as_ref().ok_or(Error::NoChannel)?;
        ch.disconnect().await;
        Ok(())
    }

    /// Send a message (and optionally a handle) on the IPC channel.
    pub async fn send<T: Serialize + ?Sized>(&self, msg: &T, handle: Option<Handle>) -> Result<()> {
        self.channel
            .as_ref()
            .ok_or(Error::NoChannel)?
            .send(msg, handle)
            .await
    }

    /// A clone of the IPC sender, if the child has a channel.
    pub fn sender(&self) -> Option<Sender> {
        self.channel.clone()
    }

    /// The next event; `None` after [`ChildEvent::Close`].
    pub async fn next_event(&mut self) -> Option<ChildEvent> {
        self.events.recv().await
    }
}

async fn wait_status(mut rx: watch::Receiver<Option<ExitStatus>>) -> ExitStatus {
    match rx.wait_for(Option::is_some).await {
        Ok(s) => s.unwrap_or(ExitStatus {
            code: None,
            signal: None,
        }),
        Err(_) => ExitStatus {
            code: None,
            signal: None,
        },
    }
}

/// Signals one child from anywhere; see [`Child::kill`].
#[derive(Clone, Debug)]
pub struct Killer {
    pidfd: Option<Arc<OwnedFd>>,
    pid: u32,
    status: watch::Receiver<Option<ExitStatus>>,
}

impl Killer {
    /// Send `signal`; `Ok(false)` if the child has already exited.
    pub fn kill(&self, signal: i32) -> io::Result<bool> {
        kill_via(self.pidfd.as_deref(), self.pid, &self.status, signal)
    }
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

fn kill_via(
    pidfd: Option<&OwnedFd>,
    pid: u32,
    status: &watch::Receiver<Option<ExitStatus>>,
    signal: i32,
) -> io::Result<bool> {
    if status.borrow().is_some() {
        return Ok(false);
    }
    let r = match pidfd {
        // SAFETY: plain syscall on a descriptor we own; no pointers but NULL.
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        },
        // Without pidfd (old kernels): the status check above narrows the race.
        None => unsafe { libc::kill(pid as libc::pid_t, signal) as libc::c_long },
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscall; the result is a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        None
    } else {
        // SAFETY: the kernel just gave us this descriptor.
        Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// Start `command` with `args`, like Node's `child_process.spawn`. The
/// command is looked up in `PATH`. Must be called inside a tokio runtime.
pub fn spawn<S, I, A>(command: S, args: I, opts: SpawnOptions) -> Result<Child>
where
    S: Into<OsString>,
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let command: OsString = command.into();
    let mut cmd = tokio::process::Command::new(&command);
    cmd.args(args.into_iter().map(Into::into));
    if let Some(a0) = &opts.arg0 {
        cmd.arg0(a0);
    }
    if let Some(cwd) = &opts.cwd {
        cmd.current_dir(cwd);
    }
    if let Some(env) = &opts.env {
        cmd.env_clear();
        cmd.envs(env);
    }
    cmd.envs(opts.extra_env.iter().map(|(k, v)| (k, v)));
    if let Some(uid) = opts.uid {
        cmd.uid(uid);
    }
    if let Some(gid) = opts.gid {
        cmd.gid(gid);
    }
    if opts.process_group && !opts.detached {
        cmd.process_group(0);
    }

    let mut stdio = opts.stdio;
    while stdio.len() < 3 {
        stdio.push(Stdio::Pipe);
    }
    let mut plan = FdPlan::default();
    let mut channel = None;
    let mut extra_ours = BTreeMap::new();
    for (n, entry) in stdio.into_iter().enumerate() {
        let n = n as RawFd;
        if n < 3 {
            let s = match entry {
                Stdio::Pipe => std::process::Stdio::piped(),
                Stdio::Ignore => std::process::Stdio::null(),
                Stdio::Inherit => std::process::Stdio::inherit(),
                Stdio::Fd(fd) => std::process::Stdio::from(fd),
                Stdio::Ipc => {
                    return Err(Error::InvalidOptions(format!(
                        "stdio[{n}]: the IPC channel must be at descriptor 3 or higher"
                    )))
                }
            };
            match n {
                0 => cmd.stdin(s),
                1 => cmd.stdout(s),
                _ => cmd.stderr(s),
            };
            continue;
        }
        match entry {
            Stdio::Ignore => {}
            Stdio::Inherit => plan.inherit(n),
            Stdio::Fd(fd) => plan.place(n, fd),
            Stdio::Pipe => {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
                extra_ours.insert(n, ours);
                plan.place(n, theirs.into());
            }
            Stdio::Ipc => {
                if channel.is_some() {
                    return Err(Error::InvalidOptions(
                        "stdio: more than one `ipc` entry".into(),
                    ));
                }
                let (ch, theirs) = ipc::pair()?;
                plan.place(n, theirs);
                cmd.env(ipc::CHANNEL_FD_ENV, n.to_string());
                cmd.env(ipc::SERIALIZATION_ENV, "json");
                channel = Some(ch);
            }
        }
    }
    for (n, fd) in opts.fds {
        if n < 3 {
            return Err(Error::InvalidOptions(format!(
                "fds: descriptor {n} is below 3"
            )));
        }
        plan.place(n, fd);
    }
    let detached = opts.detached;
    let pdeathsig = opts.kill_on_parent_death;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut prepared = plan.prepare();
    // SAFETY: the closure only makes async-signal-safe system calls (fcntl,
    // dup2, setsid, prctl, getppid) and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            prepared.apply()?;
            if detached && libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if pdeathsig {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::other("parent exited during spawn"));
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        program: command.to_string_lossy().into_owned(),
        source,
    })?;
    drop(plan);
    let pid = child.id().unwrap_or(0);
    let pidfd = pidfd_open(pid).map(Arc::new);
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let (ev_tx, ev_rx) = mpsc::channel(256);
    let (st_tx, st_rx) = watch::channel(None);
    let parts = Arc::new(AtomicU8::new(if channel.is_some() { 2 } else { 1 }));
    let sender = channel.map(|ch| {
        let (tx, mut rx) = ch.split();
        let ev = ev_tx.clone();
        let parts = parts.clone();
        let st = st_rx.clone();
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let e = match item {
                    Incoming::Message(v, h) => ChildEvent::Message(v, h),
                    Incoming::Internal(v) => ChildEvent::Internal(v),
                    Incoming::Error(e) => ChildEvent::Error(e),
                };
                let _ = ev.send(e).await;
            }
            let _ = ev.send(ChildEvent::Disconnect).await;
            if parts.fetch_sub(1, Ordering::SeqCst) == 1 {
                let s = wait_status(st).await;
                let _ = ev.send(ChildEvent::Close(s)).await;
            }
        });
        tx
    });
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => ExitStatus::from_std(s),
            Err(e) => {
                tracing::warn!(pid, error = %e, "waiting for child failed");
                ExitStatus {
                    code: None,
                    signal: None,
                }
            }
        };
        let _ = st_tx.send(Some(status));
        let _ = ev_tx.send(ChildEvent::Exit(status)).await;
        if parts.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _ = ev_tx.send(ChildEvent::Close(status)).await;
        }
    });
    Ok(Child {
        pid,
        stdin,
        stdout,
        stderr,
        extra: extra_ours,
        channel: sender,
        events: ev_rx,
        status: st_rx,
        pidfd,
    })
}

/// Start a Node program (`exec_path`, default `node`) with an IPC channel at
/// descriptor 3, like Node's `child_process.fork`. Must be called inside a
/// tokio runtime.
pub fn fork<P, I, A>(module: P, args: I, opts: ForkOptions) -> Result<Child>
where
    P: Into<OsString>,
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let exec = opts
        .exec_path
        .map_or_else(|| OsString::from("node"), PathBuf::into_os_string);
    let mut argv: Vec<OsString> = opts.exec_argv;
    argv.push(module.into());
    argv.extend(args.into_iter().map(Into::into));
    let mut stdio = if opts.silent {
        Stdio::pipe()
    } else {
        Stdio::inherit()
    };
    stdio.push(Stdio::Ipc);
    spawn(
        exec,
        argv,
        SpawnOptions {
            cwd: opts.cwd,
            env: opts.env,
            stdio,
            ..SpawnOptions::default()
        },
    )
}
