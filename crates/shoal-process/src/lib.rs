//! `child_process` for Rust programs: spawn, fork with a Node-compatible IPC
//! channel, exec, exec_file and handle passing.
//!
//! # Layout
//!
//! - [`child`]: `spawn` and `fork`, the [`Child`] handle (pid, stdio, `kill`
//!   through a pidfd, `send`, `disconnect`) and its [`ChildEvent`]s.
//! - [`stdio`]: what each child descriptor is (`pipe`, `ipc`, `ignore`,
//!   `inherit`, a given fd) and Node's shortcuts.
//! - [`fdmap`]: placing descriptors at fixed numbers between fork and exec.
//! - [`ipc`]: the Node-compatible channel (JSON lines over a socketpair,
//!   `NODE_` internal messages, handle passing with `NODE_HANDLE`/`ACK`), used
//!   by both the parent and a Rust child ([`ipc::Channel::from_env`]).
//! - [`framing`]: splitting the channel's byte stream into lines, with a size cap.
//! - [`handle`]: the descriptors that can travel with a message, with Node's
//!   type names.
//! - [`mod@exec`]: `exec` through `/bin/sh -c` and `exec_file`, fully buffered, with
//!   timeout, kill signal, max buffer and encoding.
//! - [`error`]: the crate's error enum.

pub mod child;
pub mod error;
pub mod exec;
pub mod fdmap;
pub mod framing;
pub mod handle;
pub mod ipc;
pub mod stdio;

pub use child::{
    fork, signal_name, spawn, Child, ChildEvent, ExitStatus, ForkOptions, Killer, SpawnOptions,
};
pub use error::{Error, Result};
pub use exec::{
    exec, exec_file, Encoding, ExecError, ExecFailure, ExecOptions, ExecOutput, Output,
};
pub use handle::Handle;
pub use ipc::{Channel, Incoming};
pub use stdio::Stdio;
