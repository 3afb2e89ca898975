//! The events a primary reports, as the chapter lists them (fork, online,
//! listening, disconnect, exit, setup) plus the supervisor's own (restart,
//! give-up, reload, scale). They serialise to one JSON object each for
//! `--json`.

use serde::Serialize;
use serde_json::Value;

/// One thing that happened in the cluster.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The primary is set up: what it runs and how many workers.
    Setup {
        /// The worker command and its arguments.
        exec: Vec<String>,
        /// The number of workers it aims for.
        workers: usize,
        /// The addresses bound.
        listen: Vec<String>,
    },
    /// A worker process was started.
    Fork {
        /// Worker id (1..N).
        id: u32,
        /// Its pid.
        pid: u32,
    },
    /// A worker is ready (per `--ready`).
    Online {
        /// Worker id.
        id: u32,
        /// Its pid.
        pid: u32,
    },
    /// A ready worker serves the cluster's addresses.
    Listening {
        /// Worker id.
        id: u32,
        /// Its pid.
        pid: u32,
        /// The addresses it was given.
        addresses: Vec<String>,
    },
    /// A message from a worker on its IPC channel.
    Message {
        /// Worker id.
        id: u32,
        /// Its pid.
        pid: u32,
        /// The message.
        message: Value,
    },
    /// A worker's IPC channel closed.
    Disconnect {
        /// Worker id.
        id: u32,
        /// Its pid.
        pid: u32,
    },
    /// A worker exited.
    Exit {
        /// Worker id.
        id: u32,
        /// Its pid.
        pid: u32,
        /// Its exit code, if it exited.
        code: Option<i32>,
        /// The signal that killed it, if one did (`SIGKILL`).
        signal: Option<String>,
        /// Whether the primary had asked it to go (Node's
        /// `exitedAfterDisconnect`, the chapter's `suicide`).
        exited_after_disconnect: bool,
    },
    /// A worker that died unexpectedly will be replaced after `delay_ms`.
    Restart {
        /// Worker id.
        id: u32,
        /// Delay before the new worker starts.
        delay_ms: u64,
        /// Consecutive quick failures so far.
        failures: u32,
    },
    /// A worker slot stopped restarting after repeated quick failures.
    GiveUp {
        /// Worker id.
        id: u32,
        /// Why.
        reason: String,
    },
    /// A problem with one worker that does not stop the cluster (a line on its
    /// IPC channel that is not JSON, a failed start).
    Error {
        /// Worker id.
        id: u32,
        /// What happened.
        message: String,
    },
    /// A rolling reload started, finished or failed.
    Reload {
        /// `started`, `done` or `failed`.
        phase: String,
        /// Details (why it failed, how many workers were replaced).
        detail: String,
    },
    /// The target number of workers changed.
    Scale {
        /// The new target.
        workers: usize,
    },
}

impl Event {
    /// A one-line human description, for logs.
    pub fn describe(&self) -> String {
        match self {
            Event::Setup {
                exec,
                workers,
                listen,
            } => format!(
                "setup: {workers} worker(s) running `{}`{}",
                exec.join(" "),
                if listen.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", listen.join(", "))
                }
            ),
            Event::Fork { id, pid } => format!("worker {id} forked (pid {pid})"),
            Event::Online { id, pid } => format!("worker {id} online (pid {pid})"),
            Event::Listening { id, pid, addresses } => {
                format!(
                    "worker {id} listening (pid {pid}) on {}",
                    addresses.join(", ")
                )
            }
            Event::Message { id, message, .. } => format!("worker {id} says {message}"),
            Event::Disconnect { id, pid } => format!("worker {id} disconnected (pid {pid})"),
            Event::Exit {
                id,
                pid,
                code,
                signal,
                exited_after_disconnect,
            } => {
                let how = match (code, signal) {
                    (Some(c), _) => format!("exit code {c}"),
                    (None, Some(s)) => format!("signal {s}"),
                    _ => "unknown status".into(),
                };
                let why = if *exited_after_disconnect {
                    "as asked"
                } else {
                    "unexpectedly"
                };
                format!("worker {id} exited {why} (pid {pid}, {how})")
            }
            Event::Restart {
                id,
                delay_ms,
                failures,
            } => {
                format!(
                    "worker {id} will be replaced in {delay_ms} ms (quick failures: {failures})"
                )
            }
            Event::GiveUp { id, reason } => format!("worker {id} gives up: {reason}"),
            Event::Error { id, message } => format!("worker {id}: {message}"),
            Event::Reload { phase, detail } => format!("reload {phase}: {detail}"),
            Event::Scale { workers } => format!("scale to {workers} worker(s)"),
        }
    }
}
