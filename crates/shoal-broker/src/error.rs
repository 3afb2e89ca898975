//! Errors: [`BrokerError`] for the server's own failures (I/O, config, store)
//! and [`AmqpError`] for protocol exceptions sent to a client as
//! `channel.close` or `connection.close` with RabbitMQ's reply codes.

use std::fmt;

/// A failure of the broker itself.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A socket or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] shoal_core::config::ConfigError),
    /// The message store is damaged beyond what recovery skips.
    #[error("message store: {0}")]
    Store(String),
    /// The store of runtime users, vhosts and permissions is damaged.
    #[error("users, vhosts and permissions: {0}")]
    Accounts(String),
}

impl BrokerError {
    /// Wrap an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BrokerError::Io {
            what: what.into(),
            source,
        }
    }
}

/// AMQP reply codes used by the broker (RabbitMQ's values and texts).
pub mod code {
    /// Normal close.
    pub const REPLY_SUCCESS: u16 = 200;
    /// Server shut down (connection.close 320 CONNECTION_FORCED).
    pub const CONNECTION_FORCED: u16 = 320;
    /// Unroutable mandatory message (basic.return).
    pub const NO_ROUTE: u16 = 312;
    /// Access refused.
    pub const ACCESS_REFUSED: u16 = 403;
    /// Entity not found.
    pub const NOT_FOUND: u16 = 404;
    /// Exclusive entity held by another connection.
    pub const RESOURCE_LOCKED: u16 = 405;
    /// Arguments or state do not match.
    pub const PRECONDITION_FAILED: u16 = 406;
    /// Bad frame.
    pub const FRAME_ERROR: u16 = 501;
    /// Bad method or method in the wrong place.
    pub const COMMAND_INVALID: u16 = 503;
    /// Bad channel use.
    pub const CHANNEL_ERROR: u16 = 504;
    /// Frame not expected here.
    pub const UNEXPECTED_FRAME: u16 = 505;
    /// Not allowed (vhost access, etc.).
    pub const NOT_ALLOWED: u16 = 530;
    /// Method not implemented.
    pub const NOT_IMPLEMENTED: u16 = 540;
    /// Server-side failure.
    pub const INTERNAL_ERROR: u16 = 541;
}

/// A protocol exception: closes a channel (soft) or the connection (hard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    /// Reply code (see [`code`]).
    pub code: u16,
    /// Reply text, prefixed with RabbitMQ's symbolic name.
    pub text: String,
    /// Class of the method that failed (0 if none).
    pub class_id: u16,
    /// Method that failed (0 if none).
    pub method_id: u16,
    /// True for connection exceptions.
    pub hard: bool,
}

impl AmqpError {
    fn new(code: u16, name: &str, text: impl fmt::Display, hard: bool) -> Self {
        let mut text = format!("{name} - {text}");
        if text.len() > 255 {
            let mut cut = 255;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        AmqpError {
            code,
            text,
            class_id: 0,
            method_id: 0,
            hard,
        }
    }
    /// 320: the broker closes the connection (an operator's action or a
    /// shutdown); `t` is the reason, cut to what a short string holds.
    pub fn connection_forced(t: impl fmt::Display) -> Self {
        Self::new(code::CONNECTION_FORCED, "CONNECTION_FORCED", t, true)
    }
    /// 404 NOT_FOUND (channel).
    pub fn not_found(t: impl fmt::Display) -> Self {
        Self::new(code::NOT_FOUND, "NOT_FOUND", t, false)
    }
    /// 405 RESOURCE_LOCKED (channel).
    pub fn resource_locked(t: impl fmt::Display) -> Self {
        Self::new(code::RESOURCE_LOCKED, "RESOURCE_LOCKED", t, false)
    }
    /// 406 PRECONDITION_FAILED (channel).
    pub fn precondition_failed(t: impl fmt::Display) -> Self {
        Self::new(code::PRECONDITION_FAILED, "PRECONDITION_FAILED", t, false)
    }
    /// 403 ACCESS_REFUSED (channel).
    pub fn access_refused(t: impl fmt::Display) -> Self {
        Self::new(code::ACCESS_REFUSED, "ACCESS_REFUSED", t, false)
    }
    /// 403 ACCESS_REFUSED (connection, e.g. bad login).
    pub fn access_refused_hard(t: impl fmt::Display) -> Self {
        Self::new(code::ACCESS_REFUSED, "ACCESS_REFUSED", t, true)
    }
    /// 530 NOT_ALLOWED (connection).
    pub fn not_allowed(t: impl fmt::Display) -> Self {
        Self::new(code::NOT_ALLOWED, "NOT_ALLOWED", t, true)
    }
    /// 501 FRAME_ERROR (connection).
    pub fn frame_error(t: impl fmt::Display) -> Self {
        Self::new(code::FRAME_ERROR, "FRAME_ERROR", t, true)
    }
    /// 503 COMMAND_INVALID (connection).
    pub fn command_invalid(t: impl fmt::Display) -> Self {
        Self::new(code::COMMAND_INVALID, "COMMAND_INVALID", t, true)
    }
    /// 504 CHANNEL_ERROR (connection).
    pub fn channel_error(t: impl fmt::Display) -> Self {
        Self::new(code::CHANNEL_ERROR, "CHANNEL_ERROR", t, true)
    }
    /// 505 UNEXPECTED_FRAME (connection).
    pub fn unexpected_frame(t: impl fmt::Display) -> Self {
        Self::new(code::UNEXPECTED_FRAME, "UNEXPECTED_FRAME", t, true)
    }
    /// 540 NOT_IMPLEMENTED (connection).
    pub fn not_implemented(t: impl fmt::Display) -> Self {
        Self::new(code::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", t, true)
    }
    /// 541 INTERNAL_ERROR (connection).
    pub fn internal(t: impl fmt::Display) -> Self {
        Self::new(code::INTERNAL_ERROR, "INTERNAL_ERROR", t, true)
    }
    /// Attach the failing method's class and method ids.
    pub fn on(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

impl std::error::Error for AmqpError {}

/// Result of a protocol operation.
pub type AmqpResult<T> = Result<T, AmqpError>;
