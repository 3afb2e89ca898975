//! `shoal up`: a whole topology from one file, in one process: the broker,
//! the statsd collector, any number of clusters and a proxy in front, started
//! in order and stopped in reverse, with one control socket over all of them.
//!
//! # Layout
//!
//! - [`config`]: the topology file (the parts' own file types, `cluster:NAME`
//!   upstreams, the clusters' `AMQP_URL`/`STATSD_*` environment) → a
//!   validated [`Plan`]; the built-in default topology.
//! - [`start`]: the ordered start with readiness checks, the ordered stop,
//!   and the wait in between (signals, a part that ends on its own).
//! - [`control`]: the `up` control socket: one status over every part,
//!   reload, scale, stop.
//! - [`reload`]: SIGHUP: re-read the file, apply what changed (parts added
//!   and removed in dependency order, rolling reload of a changed cluster,
//!   the proxy's next generation).
//! - [`restart`]: a changed broker, collector or dashboard restarted (the
//!   old configuration again if the new one cannot start); a changed
//!   mapping file reloaded in the running collector.
//! - [`targeted`]: `ctl scale CLUSTER N` and `ctl reload PART`.
//! - [`running`]: the running parts in start order, each part's stop, and
//!   the watch for a part that ends on its own.
//! - [`dashboard`]: the live HTML page over every part and its JSON.
//! - [`banner`]: the short text printed on start: parts, addresses, what to try.
//! - [`worker`]: the built-in HTTP worker (`shoal up-worker`) the default
//!   topology runs when `node` is not on the PATH.
//! - [`error`]: the crate's error enum.
//!
//! Every part runs the same library code as its own subcommand (`shoal
//! cluster`, `shoal proxy`, `shoal broker`, `shoal stats`); each cluster's
//! primary runs on a dedicated thread with a current-thread runtime, because
//! its workers are tied to that thread by `PR_SET_PDEATHSIG`.

pub mod banner;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod error;
pub mod reload;
pub mod restart;
pub mod running;
pub mod start;
pub mod targeted;
pub mod worker;

pub use config::{
    default_plan, default_worker_loads_amqplib, load, parse, use_builtin_worker, Plan,
    DEFAULT_TOPOLOGY, DEFAULT_WORKER_JS,
};
pub use error::UpError;
pub use start::run;
