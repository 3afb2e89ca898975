//! `child_process` for Rust programs: spawn, fork with a Node-compatible IPC
//! channel, exec, exec_file and handle passing.
//!
//! # Layout
//!
//! (Filled in as the modules land.)
