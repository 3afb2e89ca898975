//! One queue: its messages (one FIFO per priority level, in publish order;
//! a requeued message goes back to its original position), its arguments
//! (TTL, length limits, overflow, dead-lettering, priorities, single active
//! consumer), its consumers and counters. Routing, delivery and
//! acknowledgement across queues and channels live in [`crate::vhost`].

use crate::error::{AmqpError, AmqpResult};
use crate::message::{value_as_i64, value_as_str, MessageRef};
use crate::outbox::Outbox;
use crate::store::StoreRef;
use amq_protocol::types::{AMQPValue, FieldTable};
use std::collections::{BTreeMap, VecDeque};

/// A message waiting in a queue (or delivered and not yet acknowledged).
#[derive(Debug, Clone)]
pub struct QMsg {
    /// The shared message.
    pub msg: MessageRef,
    /// Delivered before.
    pub redelivered: bool,
    /// Absolute expiry in ms since epoch, 0 if none.
    pub expires_ms: u64,
    /// Its record in the store, for persistent messages in durable queues.
    pub sref: Option<StoreRef>,
    /// Body only on disk: `msg` is a shared stub with the right priority and
    /// the message is read back from `sref` when it is delivered.
    pub paged: bool,
    /// Its position in the queue, given when it is enqueued; a requeued
    /// message goes back in front of every message enqueued after it.
    pub seq: u64,
}

/// A shared, empty stand-in for a paged-out message of priority `p`.
pub fn paged_stub(p: u8) -> MessageRef {
    static STUBS: std::sync::OnceLock<Vec<MessageRef>> = std::sync::OnceLock::new();
    let stubs = STUBS.get_or_init(|| {
        (0..=255u8)
            .map(|p| {
                let props = amq_protocol::protocol::BasicProperties::default().with_priority(p);
                std::sync::Arc::new(crate::message::Message::new("", "", &props, &[]))
            })
            .collect()
    });
    stubs[usize::from(p)].clone()
}

/// What to do when a length limit is hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest message.
    DropHead,
    /// Refuse the new message (nack in confirm mode).
    RejectPublish,
    /// Refuse and dead-letter the new message.
    RejectPublishDlx,
}

impl Overflow {
    /// The `x-overflow` / policy `overflow` value RabbitMQ knows by `name`.
    pub fn from_name(name: &str) -> Option<Overflow> {
        match name {
            "drop-head" => Some(Overflow::DropHead),
            "reject-publish" => Some(Overflow::RejectPublish),
            "reject-publish-dlx" => Some(Overflow::RejectPublishDlx),
            _ => None,
        }
    }
}

/// Parsed `x-` arguments of a queue.
#[derive(Debug, Clone, Default)]
pub struct QueueArgs {
    /// `x-message-ttl` (ms).
    pub message_ttl: Option<u64>,
    /// `x-expires` (ms unused before the queue is deleted).
    pub expires: Option<u64>,
    /// `x-max-length`.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Option<Overflow>,
    /// `x-dead-letter-exchange`.
    pub dlx: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dlrk: Option<String>,
    /// `x-max-priority`.
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`.
    pub single_active: bool,
}

fn int_arg(args: &FieldTable, key: &str, min: i64) -> AmqpResult<Option<u64>> {
    match args.inner().get(key) {
        None => Ok(None),
        Some(v) => match value_as_i64(v) {
            Some(n) if n >= min => Ok(Some(n as u64)),
            _ => Err(AmqpError::precondition_failed(format!(
                "invalid arg '{key}' for queue: {v:?}"
            ))),
        },
    }
}

impl QueueArgs {
    /// Parse and check the arguments (RabbitMQ's 406 on bad values).
    pub fn parse(args: &FieldTable) -> AmqpResult<QueueArgs> {
        let overflow = match args.inner().get("x-overflow") {
            None => None,
            Some(v) => Some(match value_as_str(v).and_then(Overflow::from_name) {
                Some(o) => o,
                None => {
                    return Err(AmqpError::precondition_failed(format!(
                        "invalid arg 'x-overflow' for queue: {v:?}"
                    )))
                }
            }),
        };
        let max_priority = int_arg(args, "x-max-priority", 0)?.map(|p| p.min(255) as u8);
        let single_active = match args.inner().get("x-single-active-consumer") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                AmqpError::precondition_failed(
                    "invalid arg 'x-single-active-consumer' for queue: not a boolean",
                )
            })?,
        };
        let text = |k: &str| {
            args.inner()
                .get(k)
                .and_then(value_as_str)
                .map(str::to_string)
        };
        Ok(QueueArgs {
            message_ttl: int_arg(args, "x-message-ttl", 0)?,
            expires: int_arg(args, "x-expires", 1)?,
            max_length: int_arg(args, "x-max-length", 0)?,
            max_length_bytes: int_arg(args, "x-max-length-bytes", 0)?,
            overflow,
            dlx: text("x-dead-letter-exchange"),
            dlrk: text("x-dead-letter-routing-key"),
            max_priority,
            single_active,
        })
    }
}

/// The arguments RabbitMQ compares when a queue is declared again: left
/// out, given with another value, or given when the queue has none, each is
/// a 406 (other `x-` arguments are not compared).
pub const EQUIVALENCE_ARGS: [&str; 11] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
];

/// RabbitMQ's name for a field-table value's type.
pub(crate) fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) => "shortstr",
        AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// A value as RabbitMQ prints it in an error.
pub(crate) fn show(v: &AMQPValue) -> String {
    if let Some(n) = value_as_i64(v) {
        return n.to_string();
    }
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(f) => f.to_string(),
        _ => value_as_str(v).map_or_else(|| format!("{v:?}"), str::to_string),
    }
}

/// Whether two argument values are equivalent: integers of any width with
/// the same value, strings (short or long) with the same text, else equal.
fn same_value(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (value_as_i64(a), value_as_i64(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (value_as_str(a), value_as_str(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// RabbitMQ's equivalence check on a queue declared again (not passive):
/// `current` are the queue's arguments, `received` the new declare's.
/// The error text is RabbitMQ's, e.g. `inequivalent arg 'x-max-length' for
/// queue 'q' in vhost '/': received none but current is the value '10' of
/// type 'signedint'`.
pub fn check_equivalent(
    current: &FieldTable,
    received: &FieldTable,
    queue: &str,
    vhost: &str,
) -> AmqpResult<()> {
    check_args_equivalent(current, received, &EQUIVALENCE_ARGS, "queue", queue, vhost)
}

/// The same check on the arguments `keys` of a queue or exchange (`what`);
/// an exchange compares only `alternate-exchange`.
pub fn check_args_equivalent(
    current: &FieldTable,
    received: &FieldTable,
    keys: &[&str],
    what: &str,
    queue: &str,
    vhost: &str,
) -> AmqpResult<()> {
    for &key in keys {
        let (cur, got) = (current.inner().get(key), received.inner().get(key));
        let text = match (cur, got) {
            (None, None) => continue,
            (Some(c), Some(g)) if same_value(c, g) => continue,
            (Some(c), Some(g)) => format!("received '{}' but current is '{}'", show(g), show(c)),
            (c, g) => {
                // x-queue-type left out means the default, classic.
                let classic = |v: Option<&AMQPValue>| v.and_then(value_as_str) == Some("classic");
                if key == "x-queue-type" && (classic(c) || classic(g)) {
                    continue;
                }
                let side = |v: Option<&AMQPValue>| match v {
                    None => "none".to_string(),
                    Some(v) => format!("the value '{}' of type '{}'", show(v), type_name(v)),
                };
                format!("received {} but current is {}", side(g), side(c))
            }
        };
        return Err(AmqpError::precondition_failed(format!(
            "inequivalent arg '{key}' for {what} '{queue}' in vhost '{vhost}': {text}"
        )));
    }
    Ok(())
}

/// `x-queue-type`: `classic` (or left out) is what this broker has; RabbitMQ's
/// `quorum` and `stream` queues are refused, like any other type, with a
/// channel close 406 naming the argument (RabbitMQ's wording for a type it
/// does not support), rather than silently given a classic queue.
pub fn check_queue_type(args: &FieldTable, queue: &str, vhost: &str) -> AmqpResult<()> {
    let Some(v) = args.inner().get("x-queue-type") else {
        return Ok(());
    };
    let why = match value_as_str(v) {
        Some("classic") => return Ok(()),
        Some(t) => format!("\"unsupported queue type '{t}'\""),
        None => format!("{{unacceptable_type,{}}}", type_name(v)),
    };
    Err(AmqpError::precondition_failed(format!(
        "invalid arg 'x-queue-type' for queue '{queue}' in vhost '{vhost}': {why}"
    )))
}

/// The next message position. One counter for every queue, so a message
/// requeued into a queue that was deleted and declared again under the same
/// name never shares a position (the key of [`Level::returned`]) with
/// another; it goes in front of the new queue's messages.
fn next_seq() -> u64 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One priority level: messages in publish order, and those requeued, keyed
/// by their position. The next message is the one with the lowest position
/// of the two heads, so the hot path (nothing requeued) is a plain FIFO.
#[derive(Debug, Default)]
struct Level {
    ready: VecDeque<QMsg>,
    returned: BTreeMap<u64, QMsg>,
}

impl Level {
    /// Whether the next message is a requeued one.
    fn returned_first(&self) -> bool {
        match (self.returned.keys().next(), self.ready.front()) {
            (Some(r), Some(m)) => *r < m.seq,
            (r, _) => r.is_some(),
        }
    }

    fn front(&self) -> Option<&QMsg> {
        if self.returned_first() {
            self.returned.values().next()
        } else {
            self.ready.front()
        }
    }

    fn pop_front(&mut self) -> Option<QMsg> {
        if self.returned_first() {
            self.returned.pop_first().map(|(_, m)| m)
        } else {
            self.ready.pop_front()
        }
    }
}

/// A consumer attached to a queue.
#[derive(Debug)]
pub struct Consumer {
    /// Consumer tag.
    pub tag: std::sync::Arc<str>,
    /// Channel key (connection id << 16 | channel id).
    pub chan: u64,
    /// Auto-ack.
    pub no_ack: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// Per-consumer prefetch (0 = unlimited).
    pub prefetch: u16,
    /// Delivered and not yet acknowledged.
    pub unacked: u32,
    /// `x-priority` (default 0): higher-priority consumers get messages
    /// while they have credit; equal priorities take turns.
    pub priority: i64,
    /// Where its deliveries go.
    pub out: Outbox,
    /// Its connection's writer backlog.
    pub backlog: std::sync::Arc<crate::outbox::Backlog>,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Name (shared with the unacknowledged deliveries taken from it).
    pub name: std::sync::Arc<str>,
    /// Survives restart.
    pub durable: bool,
    /// Owning connection of an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments as given.
    pub arguments: FieldTable,
    /// Its settings: the arguments, resolved against its policy.
    pub args: QueueArgs,
    /// The name of the policy that applies to it, if one does.
    pub policy: Option<String>,
    levels: Vec<Level>,
    /// Ready messages.
    pub len: usize,
    /// Ready body bytes.
    pub bytes: u64,
    /// Consumers, highest priority first; within a priority, the next to be
    /// served first (see [`Queue::served`]).
    pub consumers: Vec<Consumer>,
    /// Delivered, unacknowledged.
    pub unacked: usize,
    /// Ever had a consumer (auto-delete only after the first one leaves).
    pub had_consumer: bool,
    /// Last declare/consume/get (ms since epoch), for `x-expires`.
    pub last_used_ms: u64,
    /// Messages published into this queue.
    pub stat_published: u64,
    /// Messages delivered from this queue.
    pub stat_delivered: u64,
    /// Messages acknowledged.
    pub stat_acked: u64,
}

impl Queue {
    /// A new empty queue.
    pub fn new(
        name: impl Into<std::sync::Arc<str>>,
        durable: bool,
        exclusive_owner: Option<u64>,
        auto_delete: bool,
        arguments: FieldTable,
        args: QueueArgs,
    ) -> Queue {
        let levels = usize::from(args.max_priority.unwrap_or(0)) + 1;
        Queue {
            name: name.into(),
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            args,
            policy: None,
            levels: (0..levels).map(|_| Level::default()).collect(),
            len: 0,
            bytes: 0,
            consumers: Vec::new(),
            unacked: 0,
            had_consumer: false,
            last_used_ms: crate::message::now_ms(),
            stat_published: 0,
            stat_delivered: 0,
            stat_acked: 0,
        }
    }

    fn level(&self, m: &QMsg) -> usize {
        usize::from(m.msg.priority()).min(self.levels.len() - 1)
    }

    /// Append at the tail of its priority level, giving it the next position.
    pub fn push_back(&mut self, mut m: QMsg) {
        self.len += 1;
        self.bytes += m.msg.body().len() as u64;
        m.seq = next_seq();
        let l = self.level(&m);
        self.levels[l].ready.push_back(m);
    }

    /// Put a message taken from this queue back at its original position
    /// (requeue by nack/reject, recover, channel close, a failed delivery),
    /// as RabbitMQ does: m1..m4 requeued in any order come out m1..m4 again,
    /// ahead of messages published after them. O(log n) in the number of
    /// requeued messages waiting.
    pub fn requeue(&mut self, m: QMsg) {
        self.len += 1;
        self.bytes += m.msg.body().len() as u64;
        let l = self.level(&m);
        self.levels[l].returned.insert(m.seq, m);
    }

    /// The next message to deliver (highest priority first).
    pub fn peek(&self) -> Option<&QMsg> {
        self.levels.iter().rev().find_map(Level::front)
    }

    /// Take the next message.
    pub fn pop(&mut self) -> Option<QMsg> {
        let m = self.levels.iter_mut().rev().find_map(Level::pop_front)?;
        self.len -= 1;
        self.bytes -= m.msg.body().len() as u64;
        Some(m)
    }

    /// Take every ready message.
    pub fn drain(&mut self) -> Vec<QMsg> {
        let mut out = Vec::with_capacity(self.len);
        while let Some(m) = self.pop() {
            out.push(m);
        }
        out
    }

    /// Attach a consumer behind those of its priority or higher (a single
    /// active consumer queue keeps arrival order: the first is the active one).
    pub fn add_consumer(&mut self, c: Consumer) {
        let at = if self.args.single_active {
            self.consumers.len()
        } else {
            self.consumers
                .iter()
                .position(|x| x.priority < c.priority)
                .unwrap_or(self.consumers.len())
        };
        self.consumers.insert(at, c);
    }

    /// Consumer `idx` was given a message: move it behind the others of its
    /// priority, so equal priorities take turns (round-robin).
    pub fn served(&mut self, idx: usize) {
        let Some(p) = self.consumers.get(idx).map(|c| c.priority) else {
            return;
        };
        let end = idx
            + self.consumers[idx..]
                .iter()
                .take_while(|c| c.priority == p)
                .count();
        self.consumers[idx..end].rotate_left(1);
    }

    /// Whether a length limit is exceeded.
    pub fn over_limit(&self) -> bool {
        self.args.max_length.is_some_and(|n| self.len as u64 > n)
            || self.args.max_length_bytes.is_some_and(|n| self.bytes > n)
    }

    /// Whether one more message of `size` bytes would exceed a limit.
    pub fn would_overflow(&self, size: usize) -> bool {
        self.args.max_length.is_some_and(|n| self.len as u64 >= n)
            || self
                .args
                .max_length_bytes
                .is_some_and(|n| self.bytes + size as u64 > n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::AMQPValue;
    use std::sync::Arc;

    fn qm(body: &str, prio: u8) -> QMsg {
        QMsg {
            msg: Arc::new(Message::new(
                "",
                "",
                &BasicProperties::default().with_priority(prio),
                body.as_bytes(),
            )),
            redelivered: false,
            expires_ms: 0,
            sref: None,
            paged: false,
            seq: 0,
        }
    }

    #[test]
    fn priorities_and_limits() {
        let mut t = FieldTable::default();
        t.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
        t.insert("x-max-length".into(), AMQPValue::LongInt(2));
        let args = QueueArgs::parse(&t).unwrap();
        let mut q = Queue::new("q", false, None, false, t, args);
        q.push_back(qm("low", 0));
        q.push_back(qm("high", 9));
        assert!(q.would_overflow(1));
        assert_eq!(q.pop().unwrap().msg.body(), b"high");
        assert_eq!(q.pop().unwrap().msg.body(), b"low");
        assert!(q.pop().is_none());
        assert_eq!(q.bytes, 0);
    }

    #[test]
    fn requeued_messages_go_back_to_their_positions() {
        let mut t = FieldTable::default();
        t.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(2));
        let args = QueueArgs::parse(&t).unwrap();
        let mut q = Queue::new("q", false, None, false, t, args);
        for b in ["m1", "m2", "m3", "m4"] {
            q.push_back(qm(b, 0));
        }
        let taken: Vec<QMsg> = (0..4).map(|_| q.pop().unwrap()).collect();
        q.push_back(qm("m5", 0));
        // Requeued one by one, in reverse and out of order.
        for i in [3, 1, 0, 2] {
            q.requeue(taken[i].clone());
        }
        q.push_back(qm("m6", 0));
        q.push_back(qm("hi", 1));
        let order: Vec<String> = std::iter::from_fn(|| q.pop())
            .map(|m| String::from_utf8_lossy(m.msg.body()).into_owned())
            .collect();
        assert_eq!(order, ["hi", "m1", "m2", "m3", "m4", "m5", "m6"]);
        assert_eq!((q.len, q.bytes), (0, 0));
    }

    #[test]
    fn redeclare_equivalence_follows_rabbitmq() {
        let table = |pairs: &[(&str, AMQPValue)]| {
            let mut t = FieldTable::default();
            for (k, v) in pairs {
                t.insert((*k).into(), v.clone());
            }
            t
        };
        let cur = table(&[("x-max-length", AMQPValue::LongInt(10))]);
        let err = |got: &FieldTable| check_equivalent(&cur, got, "q", "/").unwrap_err().text;
        assert!(err(&table(&[])).ends_with(
            "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received none but current is the value '10' of type 'signedint'"
        ));
        assert!(err(&table(&[("x-max-length", AMQPValue::LongInt(3))]))
            .ends_with("received '3' but current is '10'"));
        // Same value in another integer width, and unknown x- arguments, are fine.
        let wider = table(&[
            ("x-max-length", AMQPValue::LongLongInt(10)),
            ("x-custom", AMQPValue::Boolean(true)),
        ]);
        assert!(check_equivalent(&cur, &wider, "q", "/").is_ok());
        let got = table(&[
            ("x-max-length", AMQPValue::LongInt(10)),
            ("x-message-ttl", AMQPValue::LongLongInt(5)),
        ]);
        assert!(err(&got).ends_with("received the value '5' of type 'long' but current is none"));
        let classic = table(&[("x-queue-type", AMQPValue::LongString("classic".into()))]);
        assert!(check_equivalent(&FieldTable::default(), &classic, "q", "/").is_ok());
    }

    #[test]
    fn only_classic_queues() {
        let typed = |t: &str| {
            let mut a = FieldTable::default();
            a.insert("x-queue-type".into(), AMQPValue::LongString(t.into()));
            check_queue_type(&a, "q", "/")
        };
        assert!(typed("classic").is_ok());
        assert!(check_queue_type(&FieldTable::default(), "q", "/").is_ok());
        let e = typed("quorum").unwrap_err();
        assert_eq!(e.code, 406);
        assert!(e.text.ends_with(
            "invalid arg 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'quorum'\""
        ));
        assert_eq!(typed("stream").unwrap_err().code, 406);
    }

    #[test]
    fn requeue_into_a_redeclared_queue_loses_nothing() {
        let new_q = || {
            let t = FieldTable::default();
            let args = QueueArgs::parse(&t).unwrap();
            Queue::new("q", false, None, false, t, args)
        };
        let mut old = new_q();
        old.push_back(qm("old", 0));
        let taken = old.pop().unwrap();
        let mut q = new_q();
        q.push_back(qm("new", 0));
        let held = q.pop().unwrap();
        q.requeue(held);
        q.requeue(taken);
        assert_eq!(q.len, 2);
        assert_eq!(q.pop().unwrap().msg.body(), b"old");
        assert_eq!(q.pop().unwrap().msg.body(), b"new");
    }

    #[test]
    fn bad_arguments_are_precondition_failed() {
        let mut t = FieldTable::default();
        t.insert("x-message-ttl".into(), AMQPValue::LongString("soon".into()));
        assert_eq!(QueueArgs::parse(&t).unwrap_err().code, 406);
        let mut t = FieldTable::default();
        t.insert("x-overflow".into(), AMQPValue::LongString("explode".into()));
        assert_eq!(QueueArgs::parse(&t).unwrap_err().code, 406);
    }
}
