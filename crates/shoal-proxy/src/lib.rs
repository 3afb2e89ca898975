//! HTTP and TCP reverse proxy with nginx's upstream semantics and
//! node-http-proxy's host/path routing.
//!
//! # Layout
//!
//! - [`config`]: the TOML file's shape and its validation into a [`Config`]
//!   (errors name file, line and key); the quick CLI form builds one too.
//! - [`error`]: [`ProxyError`] for startup and reload, and
//!   [`UpstreamFailure`](error::UpstreamFailure) saying how an attempt failed.
//! - [`balance`]: the [`Balance`] trait and the built-in strategies (smooth
//!   weighted round robin, least_conn, ip_hash, consistent hash, random two).
//! - [`upstream`]: servers with max_fails/fail_timeout, backup/down,
//!   max_conns, health state, keep-alive pools; selection over them.
//! - [`router`]: host and path-prefix routing to upstreams.
//! - [`codec`]: HTTP/1.x head parsing with the smuggling checks, head
//!   rewriting (hop-by-hop out, X-Forwarded-* and Via in).
//! - [`chunked`]: strict chunked framing, validated and written anew.
//! - [`http`]: one client connection in HTTP mode: forward, retry, tunnel.
//! - [`tcp`]: one client connection in TCP mode.
//! - [`listener`]: SO_REUSEPORT sockets, accept loops, the first-byte wait,
//!   and changing listeners on reload.
//! - [`health`]: active HTTP/TCP health checks.
//! - [`discover`]: servers found over DNS (A/AAAA, SRV, DNS-SD), re-queried
//!   at their TTL.
//! - [`tls`]: rustls termination with SNI.
//! - [`timer`]: time limits that read the clock and arm timers lazily.
//! - [`state`]: the swappable configuration generation shared by connections.
//! - [`metrics`]: counters and their Prometheus rendering.
//! - [`accesslog`]: nginx `combined` access log writer.
//! - [`admin`]: the `/metrics` and `/status` listener.
//! - [`workers`]: the worker threads, one runtime each, that serve
//!   connections (nginx's worker processes).
//! - [`server`]: listeners, accept loops, reload, control socket, shutdown;
//!   [`run`] is the entry point the CLI and tests share.
//!
//! # A custom balancer
//!
//! ```no_run
//! use shoal_proxy::{balance::{Balance, Context, PeerView}, config::Strategy, Config, ServerConfig};
//! use std::sync::Arc;
//!
//! /// Send `/admin` to the first server, everything else to the least busy.
//! struct MyBalance;
//! impl Balance for MyBalance {
//!     fn select(&self, ctx: &Context<'_>, peers: &[PeerView]) -> Option<usize> {
//!         let ok = peers.iter().filter(|p| p.available);
//!         if ctx.path.starts_with("/admin") {
//!             return ok.map(|p| p.index).next();
//!         }
//!         ok.min_by_key(|p| p.active).map(|p| p.index)
//!     }
//! }
//!
//! # async fn demo() -> Result<(), shoal_proxy::ProxyError> {
//! let servers = vec![ServerConfig::new("127.0.0.1:8001".parse().unwrap()),
//!                    ServerConfig::new("127.0.0.1:8002".parse().unwrap())];
//! let config = Config::quick("127.0.0.1:8080".parse().unwrap(), servers,
//!                            Strategy::Custom(Arc::new(MyBalance)), false)?;
//! shoal_proxy::run(config, shoal_core::Shutdown::new()).await
//! # }
//! ```

pub mod accesslog;
pub mod admin;
pub mod balance;
pub mod chunked;
pub mod codec;
pub mod config;
pub mod discover;
pub mod error;
pub mod health;
pub mod http;
pub mod idle;
pub mod listener;
pub mod metrics;
pub mod router;
pub mod server;
pub mod servers;
pub mod state;
pub mod tcp;
pub mod timer;
pub mod tls;
pub mod upstream;
pub mod workers;

pub use balance::Balance;
pub use config::{Config, ServerConfig, Strategy};
pub use error::ProxyError;
pub use server::{run, Handle, Server};
