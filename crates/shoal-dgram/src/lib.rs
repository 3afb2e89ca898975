//! UDP sockets, multicast groups and a statsd-compatible collector.
//!
//! # Layout
//!
//! (Filled in as the modules land.)
