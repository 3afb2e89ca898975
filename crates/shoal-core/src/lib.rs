//! Shared pieces of Shoal that every service crate uses.
//!
//! # Layout
//!
//! - [`shutdown`]: the root cancellation token and OS-signal wiring (TERM/INT
//!   graceful stop, HUP reload, TTIN/TTOU scale), so every accept loop stops the
//!   same way.
//! - [`config`]: loading a TOML file into a `serde` type with errors that name the
//!   file, line, column and key path.
//! - [`control`]: the Unix control socket (one JSON request line, one JSON reply
//!   line) behind `shoal ctl`, shared by the cluster, proxy and broker.
//! - [`metrics`]: a small writer for the Prometheus text exposition format.
//! - [`duration`]: the one parser for durations such as `10s` or `500ms`.
//! - [`output`]: stdout and stderr that a stuck or closed reader cannot
//!   block or crash.

pub mod config;
pub mod control;
pub mod duration;
pub mod metrics;
pub mod output;
pub mod shutdown;

pub use duration::parse_duration;
pub use shutdown::Shutdown;
