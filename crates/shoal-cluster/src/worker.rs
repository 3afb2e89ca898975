//! Starting one worker process: its listeners at fds 3.. with `LISTEN_FDS`,
//! `LISTEN_PID` (its own pid) and `LISTEN_FDNAMES`, `SHOAL_WORKER_ID` (and
//! `NODE_UNIQUE_ID` for a Node worker), the Node-compatible IPC channel
//! after the listeners, `NOTIFY_SOCKET` for
//! `--ready notify`, its own process group, death with the primary, and its
//! output relayed line by line with a `[name id]` prefix (to our output, or
//! to the `--log-dir` files).

use std::ffi::OsString;

use serde_json::Value;
use shoal_process::{spawn, ChildEvent, ExitStatus, Killer, SpawnOptions, Stdio};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::error::Result;
use crate::listen::Listeners;
use crate::logfile::{LogFile, Logs};
use crate::role::{CLUSTER_NAME_ENV, LISTEN_FDS_START, WORKER_ID_ENV};
use crate::spec::{ClusterSpec, Ready};

/// What a worker's tasks report to the primary, keyed by the worker's
/// internal key (unique for the primary's lifetime; ids are reused).
#[derive(Debug)]
pub(crate) enum Report {
    Ready(u64),
    Message(u64, Value),
    /// A `NODE_CLUSTER` message (see [`crate::node`]).
    Node(u64, Value),
    IpcError(u64, String),
    Disconnected(u64),
    Exited(u64, ExitStatus),
}

/// A started worker process.
pub(crate) struct Launched {
    pub pid: u32,
    pub killer: Killer,
    pub sender: Option<shoal_process::ipc::Sender>,
    pub notify_task: Option<AbortHandle>,
    /// The primary's copies of the listeners handed to this worker at fds
    /// 3.., so that a Node worker's `listen({fd: N})` is answered with the
    /// very socket it holds (with `--reuse-port` each worker has its own).
    pub listen_fds: Vec<socket2::Socket>,
}

/// Variables a worker must not inherit from the primary's own environment.
const SCRUBBED: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NODE_UNIQUE_ID",
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    "NOTIFY_SOCKET",
    WORKER_ID_ENV,
];

/// Start worker `id` (internal `key`).
pub(crate) fn launch(
    spec: &ClusterSpec,
    listeners: &Listeners,
    id: u32,
    key: u64,
    extra_env: &[(OsString, OsString)],
    logs: Option<&Logs>,
    reports: mpsc::Sender<Report>,
) -> Result<Launched> {
    let n = listeners.len();
    let fds = listeners.for_worker()?;
    let listen_fds = fds
        .iter()
        .map(|fd| fd.try_clone().map(socket2::Socket::from))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os()
        .filter(|(k, _)| !SCRUBBED.iter().any(|s| k == s))
        .collect();
    env.extend(spec.env.iter().cloned());
    env.extend(extra_env.iter().cloned());
    env.insert(WORKER_ID_ENV.into(), id.to_string().into());
    let node = spec.node_cluster.applies_to(&spec.exec);
    if node {
        // Node's cluster module reads it: `cluster.isWorker`, `worker.id`.
        env.insert("NODE_UNIQUE_ID".into(), id.to_string().into());
    }
    env.insert(CLUSTER_NAME_ENV.into(), spec.name.clone().into());
    if n > 0 {
        env.insert("LISTEN_FDS".into(), n.to_string().into());
        env.insert("LISTEN_FDNAMES".into(), listeners.fdnames().into());
    }
    let mut notify_task = None;
    if spec.ready == Ready::Notify {
        let name = format!("shoal-{}-{}-{key}", spec.name, std::process::id());
        let sock = notify_socket(&name)?;
        env.insert("NOTIFY_SOCKET".into(), format!("@{name}").into());
        let tx = reports.clone();
        notify_task = Some(
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(len) = sock.recv(&mut buf).await {
                    let text = String::from_utf8_lossy(&buf[..len]);
                    if text.lines().any(|l| l.trim() == "READY=1") {
                        let _ = tx.send(Report::Ready(key)).await;
                    }
                }
            })
            .abort_handle(),
        );
    }

    // LISTEN_PID must be the worker's own pid, known only after fork: a tiny
    // shell sets it and execs the command in the same process.
    let (program, args): (OsString, Vec<OsString>) = if n > 0 {
        let mut a: Vec<OsString> = vec![
            "-c".into(),
            "LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"".into(),
            spec.exec.clone(),
        ];
        a.extend(spec.args.iter().cloned());
        ("/bin/sh".into(), a)
    } else {
        (spec.exec.clone(), spec.args.clone())
    };
    let out = if spec.silent {
        Stdio::Ignore
    } else {
        Stdio::Pipe
    };
    let err = if spec.silent {
        Stdio::Ignore
    } else {
        Stdio::Pipe
    };
    let mut stdio = vec![Stdio::Ignore, out, err];
    stdio.extend((0..n).map(|_| Stdio::Ignore));
    stdio.push(Stdio::Ipc);
    let opts = SpawnOptions {
        env: Some(env),
        stdio,
        fds: fds
            .into_iter()
            .enumerate()
            .map(|(i, fd)| (LISTEN_FDS_START + i as i32, fd))
            .collect(),
        process_group: true,
        kill_on_parent_death: true,
        ..SpawnOptions::default()
    };
    let mut child = match spawn(program, args, opts) {
        Ok(c) => c,
        Err(e) => {
            if let Some(t) = notify_task {
                t.abort();
            }
            return Err(e.into());
        }
    };
    let prefix = format!("[{} {id}] ", spec.name);
    let (to_out, to_err) = match logs {
        Some(l) => (Target::File(l.out()), Target::File(l.err())),
        None if spec.worker_stdout_to_stderr => (Target::Stderr, Target::Stderr),
        None => (Target::Stdout, Target::Stderr),
    };
    if let Some(o) = child.stdout.take() {
        tokio::spawn(relay(o, prefix.clone(), to_out));
    }
    if let Some(e) = child.stderr.take() {
        tokio::spawn(relay(e, prefix, to_err));
    }
    let pid = child.pid();
    let killer = child.killer();
    let sender = child.sender();
    let ready_ipc = spec.ready == Ready::Ipc;
    tokio::spawn(async move {
        while let Some(ev) = child.next_event().await {
            let r = match ev {
                ChildEvent::Message(v, _) => {
                    if ready_ipc && is_ready_message(&v) {
                        let _ = reports.send(Report::Ready(key)).await;
                    }
                    Report::Message(key, v)
                }
                ChildEvent::Internal(v) if node && v["cmd"] == "NODE_CLUSTER" => {
                    Report::Node(key, v)
                }
                ChildEvent::Internal(v) => {
                    tracing::debug!(id, message = %v, "internal message from worker ignored");
                    continue;
                }
                ChildEvent::Error(e) => Report::IpcError(key, e.to_string()),
                ChildEvent::Disconnect => Report::Disconnected(key),
                ChildEvent::Exit(s) => Report::Exited(key, s),
                ChildEvent::Close(_) => break,
            };
            if reports.send(r).await.is_err() {
                break;
            }
        }
    });
    Ok(Launched {
        pid,
        killer,
        sender,
        notify_task,
        listen_fds,
    })
}

/// `"ready"` (PM2) or `{"cmd":"online"}`.
fn is_ready_message(v: &Value) -> bool {
    v == "ready" || v.get("cmd").and_then(Value::as_str) == Some("online")
}

fn notify_socket(name: &str) -> std::io::Result<tokio::net::UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let s = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    s.set_nonblocking(true)?;
    tokio::net::UnixDatagram::from_std(s)
}

/// Longest piece of a worker's output relayed as one line; a longer line is
/// split, so a worker that never prints a newline cannot grow the primary.
const MAX_LINE: u64 = 64 * 1024;

/// Where a worker's stream goes.
enum Target {
    Stdout,
    Stderr,
    /// A `--log-dir` file: lines get a time stamp too.
    File(std::sync::Arc<LogFile>),
}

/// Copy lines from a worker's pipe to our stdout or stderr, prefixed,
/// through [`shoal_core::output`] (a reader of ours that is slow or gone
/// costs lines, counted, never supervision), or to a log file (see
/// [`crate::logfile`]: bounded, and written whole lines at a time).
async fn relay<R: AsyncRead + Unpin>(r: R, prefix: String, to: Target) {
    let mut lines = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut lines)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if buf.last() != Some(&b'\n') {
                    buf.push(b'\n');
                }
                if let Target::File(f) = &to {
                    f.write(crate::logfile::stamp(&prefix, &buf)).await;
                    continue;
                }
                let mut line = Vec::with_capacity(prefix.len() + buf.len());
                line.extend_from_slice(prefix.as_bytes());
                line.extend_from_slice(&buf);
                if matches!(to, Target::Stdout) {
                    shoal_core::output::stdout(&line);
                } else {
                    shoal_core::output::stderr(&line);
                }
            }
        }
    }
}
