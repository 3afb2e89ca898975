//! A primary that runs N workers sharing listening sockets: the chapter's
//! `cluster` module, for workers written in any language.
//!
//! # Layout
//!
//! - [`spec`]: what to run ([`ClusterSpec`]), and parsing of addresses,
//!   readiness modes and worker counts.
//! - `guard` (private): the helper that kills the workers' process groups
//!   when the primary dies, even by SIGKILL.
//! - [`mod@file`]: the TOML file form of a spec (`--config`), with errors that
//!   name the file, line and key.
//! - [`listen`]: binding the addresses once (shared fds) or per worker
//!   (`SO_REUSEPORT`).
//! - `worker` (private): starting one worker process with socket-activation
//!   fds, ids, IPC channel, notify socket and output relay.
//! - [`primary`]: the supervisor task and the [`Cluster`] handle (status,
//!   reload, scale, fork, send, kill, disconnect, events).
//! - [`logfile`]: worker output to files (`--log-dir`), reopened on SIGUSR1
//!   and rotated by size.
//! - [`cron`]: `--restart-cron` expressions.
//! - [`watch`]: `--watch`, a rolling reload when files change.
//! - [`node`]: Node's cluster protocol (`NODE_UNIQUE_ID`, `queryServer`,
//!   shared and per-worker listening handles), so `listen(8080)` runs
//!   unchanged; `node_rr` (private): Node's round-robin mode, the primary
//!   accepting and handing each connection to a worker in turn.
//! - [`event`]: the events (fork, online, listening, disconnect, exit, setup, ...).
//! - [`control`]: answers on the `shoal ctl` control socket.
//! - [`role`]: the worker's side: `is_primary`, `worker_id`, inherited
//!   listeners, `notify_ready`.
//! - [`procstat`]: RSS and CPU time from `/proc`.
//! - [`error`]: the crate's error enum.

pub mod control;
pub mod cron;
pub mod error;
pub mod event;
pub mod file;
mod guard;
pub mod listen;
pub mod logfile;
pub mod node;
mod node_rr;
pub mod primary;
pub mod procstat;
pub mod role;
pub mod spec;
pub mod watch;
mod worker;

pub use error::{ClusterError, Result};
pub use event::Event;
pub use primary::{Cluster, PrimaryInfo, Running, Status, Worker, WorkerInfo};
pub use role::{is_primary, is_worker, worker_id};
pub use spec::{ClusterSpec, ListenAddr, ListenSpec, Ready, WorkerCount};

use shoal_core::Shutdown;

/// Run a cluster until `shutdown` fires (or every worker gives up): bind,
/// start the workers, supervise, then stop them gracefully.
pub async fn run(spec: ClusterSpec, shutdown: Shutdown) -> Result<()> {
    let (cluster, running) = Cluster::new(spec, shutdown).await?;
    cluster.begin().await?;
    running.wait().await
}
