//! An AMQP 0-9-1 message broker that RabbitMQ's clients use unchanged.
//!
//! # Layout
//!
//! (Filled in as the modules land.)
