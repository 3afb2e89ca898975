//! What a connection's writer task is asked to send: method frames, content
//! deliveries (encoded by the writer, outside any lock), publisher confirms
//! (held until the store has synced the message), heartbeats.

use crate::message::MessageRef;
use amq_protocol::protocol::AMQPClass;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// One item for the writer.
#[derive(Debug)]
pub enum Out {
    /// A method frame.
    Method(u16, AMQPClass),
    /// basic.deliver + content.
    Deliver {
        /// Channel.
        ch: u16,
        /// Consumer tag.
        consumer_tag: Arc<str>,
        /// Delivery tag.
        tag: u64,
        /// Redelivered flag.
        redelivered: bool,
        /// The message.
        msg: MessageRef,
    },
    /// basic.get-ok + content.
    GetOk {
        /// Channel.
        ch: u16,
        /// Delivery tag.
        tag: u64,
        /// Redelivered flag.
        redelivered: bool,
        /// Messages left in the queue.
        count: u32,
        /// The message.
        msg: MessageRef,
    },
    /// basic.return + content.
    Return {
        /// Channel.
        ch: u16,
        /// Reply code (312 NO_ROUTE).
        code: u16,
        /// Reply text.
        text: &'static str,
        /// The message.
        msg: MessageRef,
    },
    /// Publisher confirm, sent once the store has synced `wait_seq`.
    Confirm {
        /// Channel.
        ch: u16,
        /// Publish sequence number.
        tag: u64,
        /// basic.nack instead of basic.ack.
        nack: bool,
        /// Store sequence to wait for (0: none).
        wait_seq: u64,
    },
    /// The vhost's store sync watermark, for confirms.
    UseStore(tokio::sync::watch::Receiver<u64>),
    /// Called by the writer when a starved connection's backlog drains, so
    /// the vhost resumes delivering to it.
    UseKick(Kick),
    /// Flush and close the socket.
    Close,
}

/// The sending side of a connection's writer queue.
pub type Outbox = UnboundedSender<Out>;

/// Re-run delivery for a connection's consumers.
#[derive(Clone)]
pub struct Kick(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Kick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kick")
    }
}

/// Deliveries queued for a connection's writer but not yet written: the
/// vhost stops delivering to a connection past [`OUTBOX_MAX`], so a slow
/// consumer leaves messages in its queue (where flow control and limits
/// apply) instead of in memory buffers.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Deliveries queued, not yet written.
    pub pending: std::sync::atomic::AtomicUsize,
    /// A delivery was held back because of the backlog.
    pub starved: std::sync::atomic::AtomicBool,
}

/// Most deliveries queued for one connection's writer.
pub const OUTBOX_MAX: usize = 4096;
