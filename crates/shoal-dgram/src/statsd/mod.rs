//! A statsd-compatible collector: UDP (and TCP) input, per-interval
//! aggregation with the statsd daemon's semantics, and three sinks.
//!
//! Data flow: [`receive`] threads (recvmmsg, one per SO_REUSEPORT socket) →
//! [`parse`] → [`name`] (keys cleaned as statsd 0.9 does) → [`aggregate`]
//! (one shard per thread) → [`flush`] every interval → [`prometheus`] (`/metrics`), [`graphite`] (TCP plaintext), [`json`]
//! (stdout). [`server`] wires them together; [`config`] validates the TOML
//! file; [`health`] gathers the collector's own figures; [`mapping`] reads
//! statsd_exporter mapping files and [`observe`] keeps the histograms and
//! summaries that mapped timers become.

pub mod aggregate;
pub mod config;
pub mod flush;
pub mod graphite;
pub mod health;
pub mod json;
pub mod keyed;
pub mod mapped;
pub mod mapping;
pub mod name;
pub mod observe;
pub mod parse;
pub mod prometheus;
pub mod receive;
pub mod server;

pub use config::{parse_duration, Config, FileConfig, HttpSetting};
pub use server::{run, start, MappingReload, Running};
