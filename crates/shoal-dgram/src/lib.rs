//! UDP sockets, multicast groups and a statsd-compatible collector.
//!
//! # Layout
//!
//! - [`error`]: the crate's one error enum.
//! - [`socket`]: Node's `dgram.Socket` (bind, send with the size rule,
//!   receive with sender info, events, close) on socket2 + tokio.
//! - [`multicast`]: group membership (any-source and source-specific), TTL,
//!   loopback, interface, broadcast options of a socket.
//! - [`loadgen`]: the statsd load generator behind `shoal bench statsd`
//!   (paced `sendmmsg` from several sockets).
//! - [`statsd`]: the collector behind `shoal stats`:
//!   - [`statsd::parse`]: the statsd/DogStatsD line protocol, without allocation;
//!   - [`statsd::aggregate`]: per-thread shards collecting one interval;
//!   - [`statsd::name`]: names and tags cleaned as statsd 0.9 cleans keys;
//!   - [`statsd::keyed`]: the string-keyed map (one lookup, fast seeded hash)
//!     those shards use;
//!   - [`statsd::flush`]: merging shards and computing statsd's figures;
//!   - [`statsd::prometheus`], [`statsd::graphite`], [`statsd::json`]: the sinks;
//!   - [`statsd::receive`]: SO_REUSEPORT sockets read with `recvmmsg`;
//!   - [`statsd::health`]: the collector's own counters and the kernel's drops;
//!   - [`statsd::config`]: the TOML file and its validation;
//!   - [`statsd::server`]: wiring, the flush loop, HTTP, TCP and control socket.

pub mod error;
pub mod loadgen;
pub mod multicast;
pub mod socket;
pub mod statsd;

pub use error::{Error, Result};
pub use socket::{
    DgramSocket, Event, Events, Family, Message, RemoteInfo, SocketOptions, MAX_DATAGRAM_V4,
    MAX_DATAGRAM_V6,
};
pub use statsd::{run, Config};
