//! An AMQP 0-9-1 message broker that RabbitMQ's clients use unchanged.
//!
//! # Layout
//!
//! - [`accounts`]: users, vhosts and permissions created at runtime (the
//!   management API, definitions imports), stored in `DATA/accounts.json`.
//! - [`manage`]: creating and deleting users, vhosts and permissions at
//!   runtime (closing the connections of what is deleted).
//! - [`config`]: the TOML file → validated [`Config`] (listen, data dir, users,
//!   vhosts, permissions, limits).
//! - [`error`]: [`BrokerError`] for the server's failures, [`AmqpError`] for
//!   protocol exceptions with RabbitMQ's reply codes.
//! - [`codec`]: frame decoding with size checks before parsing, and frame
//!   encoding, on top of `amq-protocol`.
//! - [`fastpath`]: hand-written decoding of `basic.publish`, `basic.ack` and
//!   plain content headers, the frames every message costs.
//! - [`nesting`]: the bound on field-table nesting, checked on raw frames.
//! - [`server`]: the accept loop, the broker-wide state, the periodic tick
//!   (TTL, `x-expires`, alarms) and graceful shutdown.
//! - [`connection`]: one client connection: handshake, channels, methods.
//! - [`writer`]: a connection's writer task (batching, confirms, heartbeats).
//! - [`outbox`]: what connections and queues ask a writer to send.
//! - [`vhost`]: exchanges, queues, bindings, channel delivery state, split
//!   by job: `declare` (exchanges, queues, bindings), `routing` (publish,
//!   dead-lettering), `delivery` (consumers, dispatch, get, acknowledgement),
//!   `api_get` (the management API's get).
//! - [`exchange`]: exchange types and routing (direct, fanout, topic, headers).
//! - [`queue`]: one queue's messages, arguments and consumers.
//! - [`declare_args`]: RabbitMQ's checks of a new queue's arguments.
//! - [`message`]: the message type and argument helpers.
//! - [`store`]: the append-only segment store for persistent messages.
//! - [`perf`]: the AMQP load generator behind `shoal bench amqp`.
//! - [`admin`]: the admin listener (`/metrics` with Shoal's and RabbitMQ's
//!   Prometheus names, RabbitMQ's management HTTP API under `/api/`) and
//!   the control-socket commands.

pub mod accounts;
pub mod admin;
pub mod codec;
pub mod config;
pub mod connection;
pub mod declare_args;
pub mod error;
pub mod exchange;
pub mod fastpath;
pub mod manage;
pub mod message;
pub mod nesting;
pub mod outbox;
pub mod perf;
pub mod queue;
pub mod server;
pub mod store;
pub mod vhost;
pub mod writer;

pub use config::Config;
pub use error::{AmqpError, BrokerError};
pub use server::{run, serve};
