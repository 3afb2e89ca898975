//! A virtual host: its exchanges, queues and bindings, the delivery state of
//! every open channel (unacknowledged deliveries, prefetch), and the
//! operations of the exchange, queue and basic classes on them. One mutex per
//! vhost guards all of it, so routing, delivery and acknowledgement are
//! consistent without lock ordering. Durable definitions are saved to
//! `definitions.json`; persistent messages in durable queues go to the
//! [`Store`].

use crate::error::{AmqpError, AmqpResult};
use crate::exchange::{Binding, Dest, Exchange, Kind};
use crate::message::{now_ms, Message, MessageRef};
use crate::outbox::{Backlog, Out, Outbox, OUTBOX_MAX};
use crate::queue::{paged_stub, Consumer, Overflow, QMsg, Queue, QueueArgs};
use crate::store::Store;
use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Key of a channel: connection id << 16 | channel number.
pub fn chan_key(conn: u64, ch: u16) -> u64 {
    (conn << 16) | u64::from(ch)
}

/// Connection id of a channel key.
pub fn chan_conn(key: u64) -> u64 {
    key >> 16
}

/// A delivered, unacknowledged message.
#[derive(Debug)]
pub struct Unacked {
    /// Queue it came from.
    pub queue: String,
    /// The message.
    pub qm: QMsg,
    /// Consumer tag (None for basic.get).
    pub consumer: Option<Arc<str>>,
}

/// Delivery state of one channel.
#[derive(Debug)]
pub struct ChanState {
    /// Writer queue of its connection.
    pub out: Outbox,
    /// Channel number.
    pub id: u16,
    /// Next delivery tag.
    pub next_tag: u64,
    /// Unacknowledged deliveries by tag.
    pub unacked: BTreeMap<u64, Unacked>,
    /// Prefetch applied to new consumers.
    pub prefetch: u16,
    /// Channel-wide prefetch (0: none).
    pub global_prefetch: u16,
    /// channel.flow active.
    pub flow: bool,
    /// Client accepts basic.cancel from the server.
    pub cancel_notify: bool,
    /// Consumer tag → queue.
    pub consumers: HashMap<String, String>,
    /// Its connection's writer backlog.
    pub backlog: Arc<Backlog>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct VStats {
    /// Messages published.
    pub published: u64,
    /// Messages delivered (consume + get).
    pub delivered: u64,
    /// Acknowledgements.
    pub acked: u64,
    /// Returned unroutable.
    pub returned: u64,
    /// Dead-lettered.
    pub dead_lettered: u64,
    /// Dropped (expired/overflow without DLX, rejected without requeue).
    pub dropped: u64,
    /// Refused by reject-publish.
    pub rejected: u64,
}

/// Estimated bytes a queued message costs beyond its body (for the memory alarm).
pub const MESSAGE_OVERHEAD: u64 = 200;

/// Ready messages in a consumed queue above which its publishers pause.
pub const FLOW_HIGH: usize = 10_000;
/// Ready messages below which paused publishers resume.
pub const FLOW_LOW: usize = 5_000;

/// Outcome of a publish.
#[derive(Debug, Default, Clone)]
pub struct Published {
    /// Reached at least one queue.
    pub routed: bool,
    /// A queue refused it (reject-publish): nack.
    pub rejected: bool,
    /// Store sequence a confirm must wait for (0: none).
    pub wait_seq: u64,
    /// A consumed queue this message landed in is backlogged past
    /// [`FLOW_HIGH`]: the publisher should pause (credit-based flow control).
    pub flow: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Defs {
    exchanges: Vec<DefExchange>,
    queues: Vec<DefQueue>,
    bindings: Vec<DefBinding>,
}
#[derive(Serialize, Deserialize)]
struct DefExchange {
    name: String,
    kind: Kind,
    auto_delete: bool,
    internal: bool,
    arguments: FieldTable,
}
#[derive(Serialize, Deserialize)]
struct DefQueue {
    name: String,
    auto_delete: bool,
    arguments: FieldTable,
}
#[derive(Serialize, Deserialize)]
struct DefBinding {
    source: String,
    dest: Dest,
    key: String,
    arguments: FieldTable,
}

/// A virtual host.
pub struct VHost {
    /// Name.
    pub name: String,
    /// Exchanges by name (the default exchange is implicit).
    pub exchanges: HashMap<String, Exchange>,
    /// Queues by name.
    pub queues: HashMap<String, Queue>,
    /// Open channels.
    pub channels: HashMap<u64, ChanState>,
    /// Message store.
    pub store: Arc<Store>,
    /// Counters.
    pub stats: VStats,
    /// Ready bytes a queue keeps in memory before paging persistent messages.
    pub page_budget: u64,
    defs_path: PathBuf,
}

const PREDECLARED: [(&str, Kind); 6] = [
    ("amq.direct", Kind::Direct),
    ("amq.fanout", Kind::Fanout),
    ("amq.topic", Kind::Topic),
    ("amq.headers", Kind::Headers),
    ("amq.match", Kind::Headers),
    ("amq.rabbitmq.trace", Kind::Topic),
];

fn random_suffix(n: usize) -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut r = rand::rng();
    (0..n)
        .map(|_| ALPHA[r.random_range(0..ALPHA.len())] as char)
        .collect()
}

fn inequivalent(
    what: &str,
    arg: &str,
    name: &str,
    vhost: &str,
    got: impl std::fmt::Display,
    cur: impl std::fmt::Display,
) -> AmqpError {
    AmqpError::precondition_failed(format!(
        "inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received '{got}' but current is '{cur}'"
    ))
}

impl VHost {
    /// A vhost with the predeclared exchanges, its durable definitions from
    /// `dir/definitions.json` and the store's recovered messages.
    pub fn open(
        name: &str,
        dir: PathBuf,
        page_budget: u64,
    ) -> Result<VHost, crate::error::BrokerError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| crate::error::BrokerError::io(format!("create {}", dir.display()), e))?;
        let defs_path = dir.join("definitions.json");
        let mut exchanges = HashMap::new();
        let mut queues: HashMap<String, Queue> = HashMap::new();
        for (n, k) in PREDECLARED {
            exchanges.insert(
                n.to_string(),
                Exchange {
                    name: n.to_string(),
                    kind: k,
                    durable: true,
                    auto_delete: false,
                    internal: n == "amq.rabbitmq.trace",
                    arguments: FieldTable::default(),
                    bindings: Vec::new(),
                },
            );
        }
        if let Ok(text) = std::fs::read_to_string(&defs_path) {
            let defs: Defs = serde_json::from_str(&text).map_err(|e| {
                crate::error::BrokerError::Store(format!("{}: {e}", defs_path.display()))
            })?;
            for e in defs.exchanges {
                exchanges.insert(
                    e.name.clone(),
                    Exchange {
                        name: e.name,
                        kind: e.kind,
                        durable: true,
                        auto_delete: e.auto_delete,
                        internal: e.internal,
                        arguments: e.arguments,
                        bindings: Vec::new(),
                    },
                );
            }
            for q in defs.queues {
                let args = QueueArgs::parse(&q.arguments).unwrap_or_default();
                queues.insert(
                    q.name.clone(),
                    Queue::new(q.name, true, None, q.auto_delete, q.arguments, args),
                );
            }
            for b in defs.bindings {
                if let Some(ex) = exchanges.get_mut(&b.source) {
                    ex.bindings.push(Binding::new(b.dest, b.key, b.arguments));
                }
            }
        }
        // Records are handed over one at a time as segments are read, so
        // recovery keeps in memory what running would: bodies up to the
        // page budget per queue, an index entry for the rest.
        let now = now_ms();
        let mut gone = Vec::new();
        let store = Store::open_with(&dir.join("msgs"), |r| match queues.get_mut(&r.queue) {
            Some(q) if r.expires_ms == 0 || r.expires_ms > now => {
                let paged = q.bytes > page_budget;
                q.push_back(QMsg {
                    msg: if paged {
                        paged_stub(r.msg.priority())
                    } else {
                        Arc::new(r.msg)
                    },
                    redelivered: true,
                    expires_ms: r.expires_ms,
                    sref: Some(r.sref),
                    paged,
                })
            }
            _ => gone.push(r.sref),
        })?;
        for r in gone {
            store.ack(r);
        }
        Ok(VHost {
            name: name.to_string(),
            exchanges,
            queues,
            channels: HashMap::new(),
            store,
            stats: VStats::default(),
            page_budget,
            defs_path,
        })
    }

    fn save_definitions(&self) {
        let mut d = Defs::default();
        for e in self.exchanges.values() {
            if e.durable && !PREDECLARED.iter().any(|(n, _)| *n == e.name) {
                d.exchanges.push(DefExchange {
                    name: e.name.clone(),
                    kind: e.kind,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    arguments: e.arguments.clone(),
                });
            }
            if !e.durable {
                continue;
            }
            for b in &e.bindings {
                let dest_durable = match &b.dest {
                    Dest::Queue(q) => self.queues.get(q).is_some_and(|q| q.durable),
                    Dest::Exchange(x) => self.exchanges.get(x).is_some_and(|x| x.durable),
                };
                if dest_durable {
                    d.bindings.push(DefBinding {
                        source: e.name.clone(),
                        dest: b.dest.clone(),
                        key: b.key.clone(),
                        arguments: b.args.clone(),
                    });
                }
            }
        }
        for q in self.queues.values().filter(|q| q.durable) {
            d.queues.push(DefQueue {
                name: q.name.clone(),
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
            });
        }
        let tmp = self.defs_path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let text = serde_json::to_vec_pretty(&d).map_err(std::io::Error::other)?;
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.defs_path)?;
            if let Some(dir) = self.defs_path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            tracing::error!(error = %e, path = %self.defs_path.display(), "cannot save definitions");
        }
    }

    // ----- channels -----

    /// Register an open channel.
    pub fn open_channel(
        &mut self,
        key: u64,
        id: u16,
        out: Outbox,
        backlog: Arc<Backlog>,
        cancel_notify: bool,
    ) {
        self.channels.insert(
            key,
            ChanState {
                out,
                id,
                next_tag: 1,
                unacked: BTreeMap::new(),
                prefetch: 0,
                global_prefetch: 0,
                flow: true,
                cancel_notify,
                consumers: HashMap::new(),
                backlog,
            },
        );
    }

    /// Close a channel: cancel its consumers, requeue its unacked messages.
    pub fn close_channel(&mut self, key: u64) {
        let Some(ch) = self.channels.remove(&key) else {
            return;
        };
        let mut touched = HashSet::new();
        for (tag, qname) in &ch.consumers {
            self.remove_consumer(qname, tag);
            touched.insert(qname.clone());
        }
        for (_, u) in ch.unacked.into_iter().rev() {
            touched.insert(u.queue.clone());
            self.requeue(u);
        }
        for q in touched {
            self.after_consumer_change(&q);
        }
    }

    /// A connection went away: close its channels, delete its exclusive queues.
    pub fn connection_closed(&mut self, conn: u64) {
        let keys: Vec<u64> = self
            .channels
            .keys()
            .copied()
            .filter(|k| chan_conn(*k) == conn)
            .collect();
        for k in keys {
            self.close_channel(k);
        }
        let excl: Vec<String> = self
            .queues
            .values()
            .filter(|q| q.exclusive_owner == Some(conn))
            .map(|q| q.name.clone())
            .collect();
        for q in excl {
            self.remove_queue(&q);
        }
    }

    fn requeue(&mut self, mut u: Unacked) {
        let Some(q) = self.queues.get_mut(&u.queue) else {
            if let Some(r) = u.qm.sref {
                self.store.ack(r);
            }
            return;
        };
        if let Some(tag) = &u.consumer {
            if let Some(c) = q.consumers.iter_mut().find(|c| c.tag == *tag) {
                c.unacked = c.unacked.saturating_sub(1);
            }
        }
        q.unacked = q.unacked.saturating_sub(1);
        u.qm.redelivered = true;
        q.push_front(u.qm);
    }

    fn remove_consumer(&mut self, qname: &str, tag: &str) {
        if let Some(q) = self.queues.get_mut(qname) {
            q.consumers.retain(|c| &*c.tag != tag);
            q.last_used_ms = now_ms();
        }
    }

    fn after_consumer_change(&mut self, qname: &str) {
        let delete = self
            .queues
            .get(qname)
            .is_some_and(|q| q.auto_delete && q.had_consumer && q.consumers.is_empty());
        if delete {
            self.remove_queue(qname);
        } else {
            self.dispatch(qname);
        }
    }

    fn chan(&mut self, key: u64) -> AmqpResult<&mut ChanState> {
        self.channels
            .get_mut(&key)
            .ok_or_else(|| AmqpError::channel_error("channel not open"))
    }

    // ----- exchanges -----

    /// exchange.declare.
    #[allow(clippy::too_many_arguments)]
    pub fn declare_exchange(
        &mut self,
        name: &str,
        kind: &str,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> AmqpResult<()> {
        if name.is_empty() {
            if passive {
                return Ok(());
            }
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if let Some(e) = self.exchanges.get(name) {
            if passive {
                return Ok(());
            }
            if e.kind.as_str() != kind {
                return Err(inequivalent(
                    "exchange",
                    "type",
                    name,
                    &self.name,
                    kind,
                    e.kind.as_str(),
                ));
            }
            if e.durable != durable {
                return Err(inequivalent(
                    "exchange", "durable", name, &self.name, durable, e.durable,
                ));
            }
            if e.auto_delete != auto_delete {
                return Err(inequivalent(
                    "exchange",
                    "auto_delete",
                    name,
                    &self.name,
                    auto_delete,
                    e.auto_delete,
                ));
            }
            return Ok(());
        }
        if passive {
            return Err(AmqpError::not_found(format!(
                "no exchange '{name}' in vhost '{}'",
                self.name
            )));
        }
        let kind = Kind::parse(kind)
            .ok_or_else(|| AmqpError::command_invalid(format!("invalid exchange type '{kind}'")))?;
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        self.exchanges.insert(
            name.to_string(),
            Exchange {
                name: name.to_string(),
                kind,
                durable,
                auto_delete,
                internal,
                arguments,
                bindings: Vec::new(),
            },
        );
        if durable {
            self.save_definitions();
        }
        Ok(())
    }

    /// exchange.delete.
    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "operation not permitted on exchange '{name}'"
            )));
        }
        let Some(e) = self.exchanges.get(name) else {
            // RabbitMQ: deleting a missing exchange is ok.
            return Ok(());
        };
        let bound_as_dest = self.exchanges.values().any(|x| {
            x.bindings
                .iter()
                .any(|b| b.dest == Dest::Exchange(name.to_string()))
        });
        if if_unused && (!e.bindings.is_empty() || bound_as_dest) {
            return Err(AmqpError::precondition_failed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        let durable = e.durable;
        self.exchanges.remove(name);
        let gone = Dest::Exchange(name.to_string());
        for x in self.exchanges.values_mut() {
            x.bindings.retain(|b| b.dest != gone);
        }
        if durable {
            self.save_definitions();
        }
        Ok(())
    }

    fn exchange_for_bind(&self, name: &str) -> AmqpResult<&Exchange> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        self.exchanges.get(name).ok_or_else(|| {
            AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
        })
    }

    /// queue.bind / exchange.bind.
    pub fn bind(
        &mut self,
        conn: u64,
        source: &str,
        dest: Dest,
        key: &str,
        args: FieldTable,
    ) -> AmqpResult<()> {
        self.check_dest(conn, &dest)?;
        let src = self.exchange_for_bind(source)?;
        if src
            .bindings
            .iter()
            .any(|b| b.dest == dest && b.key == key && b.args == args)
        {
            return Ok(());
        }
        let durable = src.durable;
        if let Some(src) = self.exchanges.get_mut(source) {
            src.bindings.push(Binding::new(dest, key.to_string(), args));
        }
        if durable {
            self.save_definitions();
        }
        Ok(())
    }

    /// queue.unbind / exchange.unbind.
    pub fn unbind(
        &mut self,
        conn: u64,
        source: &str,
        dest: Dest,
        key: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        self.check_dest(conn, &dest)?;
        self.exchange_for_bind(source)?;
        let mut auto_delete = false;
        let mut durable = false;
        if let Some(src) = self.exchanges.get_mut(source) {
            let before = src.bindings.len();
            src.bindings
                .retain(|b| !(b.dest == dest && b.key == key && &b.args == args));
            auto_delete = src.auto_delete && src.bindings.is_empty() && before > 0;
            durable = src.durable;
        }
        if auto_delete {
            self.exchanges.remove(source);
        }
        if durable {
            self.save_definitions();
        }
        Ok(())
    }

    fn check_dest(&self, conn: u64, dest: &Dest) -> AmqpResult<()> {
        match dest {
            Dest::Queue(q) => {
                self.queue_for(conn, q)?;
            }
            Dest::Exchange(x) => {
                self.exchange_for_bind(x)?;
            }
        }
        Ok(())
    }

    // ----- queues -----

    fn queue_for(&self, conn: u64, name: &str) -> AmqpResult<&Queue> {
        let q = self.queues.get(name).ok_or_else(|| {
            AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
        })?;
        if let Some(owner) = q.exclusive_owner {
            if owner != conn {
                return Err(AmqpError::resource_locked(format!(
                    "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                    self.name
                )));
            }
        }
        Ok(q)
    }

    /// queue.declare; returns (name, ready messages, consumers).
    #[allow(clippy::too_many_arguments)]
    pub fn declare_queue(
        &mut self,
        conn: u64,
        name: &str,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: FieldTable,
    ) -> AmqpResult<(String, u32, u32)> {
        if passive {
            let q = self.queue_for(conn, name)?;
            return Ok((q.name.clone(), q.len as u32, q.consumers.len() as u32));
        }
        let name = if name.is_empty() {
            format!("amq.gen-{}", random_suffix(22))
        } else {
            name.to_string()
        };
        if let Some(q) = self.queues.get(&name) {
            self.queue_for(conn, &name)?;
            if q.durable != durable {
                return Err(inequivalent(
                    "queue", "durable", &name, &self.name, durable, q.durable,
                ));
            }
            if q.exclusive_owner.is_some() != exclusive {
                return Err(inequivalent(
                    "queue",
                    "exclusive",
                    &name,
                    &self.name,
                    exclusive,
                    q.exclusive_owner.is_some(),
                ));
            }
            if q.auto_delete != auto_delete {
                return Err(inequivalent(
                    "queue",
                    "auto_delete",
                    &name,
                    &self.name,
                    auto_delete,
                    q.auto_delete,
                ));
            }
            for (k, v) in arguments.inner() {
                if k.as_str().starts_with("x-") && q.arguments.inner().get(k) != Some(v) {
                    return Err(AmqpError::precondition_failed(format!(
                        "inequivalent arg '{k}' for queue '{name}' in vhost '{}'",
                        self.name
                    )));
                }
            }
            let (l, c) = (q.len as u32, q.consumers.len() as u32);
            if let Some(q) = self.queues.get_mut(&name) {
                q.last_used_ms = now_ms();
            }
            return Ok((name, l, c));
        }
        if name.starts_with("amq.") && !name.starts_with("amq.gen-") {
            return Err(AmqpError::access_refused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let args = QueueArgs::parse(&arguments)?;
        if let Some(dlx) = &args.dlx {
            if !dlx.is_empty() && !self.exchanges.contains_key(dlx) {
                tracing::debug!(queue = %name, dlx = %dlx, "dead-letter exchange does not exist yet");
            }
        }
        let owner = exclusive.then_some(conn);
        self.queues.insert(
            name.clone(),
            Queue::new(name.clone(), durable, owner, auto_delete, arguments, args),
        );
        // Every queue is bound to the default exchange implicitly (routing looks it up by name).
        if durable {
            self.save_definitions();
        }
        Ok((name, 0, 0))
    }

    /// queue.purge; returns messages removed.
    pub fn purge_queue(&mut self, conn: u64, name: &str) -> AmqpResult<u32> {
        self.queue_for(conn, name)?;
        let Some(q) = self.queues.get_mut(name) else {
            return Ok(0);
        };
        let msgs = q.drain();
        let n = msgs.len() as u32;
        for m in msgs {
            if let Some(r) = m.sref {
                self.store.ack(r);
            }
        }
        Ok(n)
    }

    /// queue.delete; returns messages removed.
    pub fn delete_queue(
        &mut self,
        conn: u64,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> AmqpResult<u32> {
        let q = match self.queue_for(conn, name) {
            Ok(q) => q,
            // RabbitMQ: deleting a missing queue is ok.
            Err(e) if e.code == crate::error::code::NOT_FOUND => return Ok(0),
            Err(e) => return Err(e),
        };
        if if_unused && !q.consumers.is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && q.len > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{}' is not empty",
                self.name
            )));
        }
        Ok(self.remove_queue(name))
    }

    fn remove_queue(&mut self, name: &str) -> u32 {
        let Some(mut q) = self.queues.remove(name) else {
            return 0;
        };
        let msgs = q.drain();
        let n = msgs.len() as u32;
        for m in msgs {
            if let Some(r) = m.sref {
                self.store.ack(r);
            }
        }
        for c in q.consumers.drain(..) {
            if let Some(ch) = self.channels.get_mut(&c.chan) {
                ch.consumers.remove(&*c.tag);
                if ch.cancel_notify {
                    let _ = ch.out.send(Out::Method(
                        ch.id,
                        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                            consumer_tag: (*c.tag).into(),
                            nowait: true,
                        })),
                    ));
                }
            }
        }
        let gone = Dest::Queue(name.to_string());
        let mut auto_deleted = Vec::new();
        for x in self.exchanges.values_mut() {
            let before = x.bindings.len();
            x.bindings.retain(|b| b.dest != gone);
            if x.auto_delete && before > 0 && x.bindings.is_empty() {
                auto_deleted.push(x.name.clone());
            }
        }
        for x in auto_deleted {
            self.exchanges.remove(&x);
        }
        if q.durable {
            self.save_definitions();
        }
        n
    }

    // ----- basic -----

    /// basic.qos.
    pub fn qos(&mut self, key: u64, count: u16, global: bool) -> AmqpResult<()> {
        let ch = self.chan(key)?;
        if global {
            ch.global_prefetch = count;
        } else {
            ch.prefetch = count;
        }
        let queues: HashSet<String> = ch.consumers.values().cloned().collect();
        for q in queues {
            self.dispatch(&q);
        }
        Ok(())
    }

    /// basic.consume; returns the consumer tag.
    #[allow(clippy::too_many_arguments)]
    pub fn consume(
        &mut self,
        key: u64,
        queue: &str,
        tag: &str,
        no_ack: bool,
        exclusive: bool,
    ) -> AmqpResult<String> {
        let conn = chan_conn(key);
        let q = self.queue_for(conn, queue)?;
        if exclusive && !q.consumers.is_empty() || q.consumers.iter().any(|c| c.exclusive) {
            return Err(AmqpError::access_refused(format!(
                "queue '{queue}' in vhost '{}' in exclusive use",
                self.name
            )));
        }
        let vname = self.name.clone();
        let ch = self.chan(key)?;
        let tag = if tag.is_empty() {
            format!("amq.ctag-{}", random_suffix(22))
        } else {
            tag.to_string()
        };
        if ch.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let _ = vname;
        ch.consumers.insert(tag.clone(), queue.to_string());
        let prefetch = ch.prefetch;
        let out = ch.out.clone();
        let backlog = ch.backlog.clone();
        if let Some(q) = self.queues.get_mut(queue) {
            q.consumers.push(Consumer {
                tag: Arc::from(tag.as_str()),
                chan: key,
                no_ack,
                exclusive,
                prefetch,
                unacked: 0,
                out,
                backlog,
            });
            q.had_consumer = true;
            q.last_used_ms = now_ms();
        }
        Ok(tag)
    }

    /// Run delivery for a queue after the consume-ok has been queued.
    pub fn kick(&mut self, queue: &str) {
        self.dispatch(queue);
    }

    /// basic.cancel; false if the tag was unknown.
    pub fn cancel(&mut self, key: u64, tag: &str) -> AmqpResult<bool> {
        let ch = self.chan(key)?;
        let Some(q) = ch.consumers.remove(tag) else {
            return Ok(false);
        };
        self.remove_consumer(&q, tag);
        self.after_consumer_change(&q);
        Ok(true)
    }

    /// Route `msg` from `exchange`; returns queue names.
    pub fn route(&self, exchange: &str, msg: &Message) -> AmqpResult<Vec<String>> {
        if exchange.is_empty() {
            return Ok(if self.queues.contains_key(&*msg.routing_key) {
                vec![msg.routing_key.to_string()]
            } else {
                Vec::new()
            });
        }
        if !self.exchanges.contains_key(exchange) {
            return Err(AmqpError::not_found(format!(
                "no exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        let mut queues = Vec::new();
        let mut seen_q = HashSet::new();
        let mut visited = HashSet::new();
        let mut next = Some(exchange.to_string());
        while let Some(start) = next.take() {
            let mut stack = vec![start.clone()];
            let mut dests = Vec::new();
            while let Some(x) = stack.pop() {
                if !visited.insert(x.clone()) {
                    continue;
                }
                let Some(ex) = self.exchanges.get(&x) else {
                    continue;
                };
                dests.clear();
                ex.route(msg, &mut dests);
                for d in dests.drain(..) {
                    match d {
                        Dest::Queue(q) => {
                            if self.queues.contains_key(&q) && seen_q.insert(q.clone()) {
                                queues.push(q);
                            }
                        }
                        Dest::Exchange(e) => stack.push(e),
                    }
                }
            }
            if queues.is_empty() {
                if let Some(ae) = self.exchanges.get(&start).and_then(|e| e.alternate()) {
                    if !visited.contains(ae) {
                        next = Some(ae.to_string());
                    }
                }
            }
        }
        Ok(queues)
    }

    /// basic.publish (content complete). Checks `internal`.
    pub fn publish(&mut self, msg: Message) -> AmqpResult<Published> {
        if let Some(e) = self.exchanges.get(&*msg.exchange) {
            if e.internal {
                return Err(AmqpError::access_refused(format!(
                    "cannot publish to internal exchange '{}' in vhost '{}'",
                    msg.exchange, self.name
                )));
            }
        }
        let exp = msg
            .expiration_ms()
            .map_err(AmqpError::precondition_failed)?;
        let queues = self.route(&msg.exchange.clone(), &msg)?;
        self.stats.published += 1;
        let mut res = Published {
            routed: !queues.is_empty(),
            ..Default::default()
        };
        let msg = Arc::new(msg);
        for q in queues {
            self.enqueue(&q, msg.clone(), exp, &mut res, 0);
        }
        Ok(res)
    }

    fn enqueue(
        &mut self,
        qname: &str,
        msg: MessageRef,
        exp: Option<u64>,
        res: &mut Published,
        depth: u8,
    ) {
        let now = now_ms();
        let Some(q) = self.queues.get_mut(qname) else {
            return;
        };
        let size = msg.body().len();
        if q.would_overflow(size) {
            match q.args.overflow.unwrap_or(Overflow::DropHead) {
                Overflow::RejectPublish => {
                    res.rejected = true;
                    self.stats.rejected += 1;
                    return;
                }
                Overflow::RejectPublishDlx => {
                    res.rejected = true;
                    self.stats.rejected += 1;
                    let qm = QMsg {
                        msg,
                        redelivered: false,
                        expires_ms: 0,
                        sref: None,
                        paged: false,
                    };
                    self.dead_letter(qname, vec![qm], "maxlen", depth);
                    return;
                }
                Overflow::DropHead => {}
            }
        }
        let ttl = match (q.args.message_ttl, exp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expires_ms = ttl.map_or(0, |t| now + t);
        let sref = if q.durable && msg.persistent() {
            let (r, seq) = self.store.append(qname, &msg, expires_ms);
            res.wait_seq = res.wait_seq.max(seq);
            Some(r)
        } else {
            None
        };
        q.stat_published += 1;
        let paged = q.bytes > self.page_budget;
        // Past the budget a message lives on disk only; transient ones get a
        // record that recovery ignores.
        let sref = match sref {
            None if paged => Some(self.store.append_transient(qname, &msg)),
            s => s,
        };
        q.push_back(QMsg {
            msg: if paged {
                paged_stub(msg.priority())
            } else {
                msg
            },
            redelivered: false,
            expires_ms,
            sref,
            paged,
        });
        let mut dropped = Vec::new();
        while q.over_limit() {
            match q.pop() {
                Some(m) => dropped.push(m),
                None => break,
            }
        }
        if !dropped.is_empty() {
            self.dead_letter(qname, dropped, "maxlen", depth);
        }
        self.dispatch_depth(qname, depth);
        if res.flow.is_none() {
            if let Some(q) = self.queues.get(qname) {
                if q.len > FLOW_HIGH && !q.consumers.is_empty() {
                    res.flow = Some(qname.to_string());
                }
            }
        }
    }

    /// Whether publishers to `qname` may go on (backlog drained or no consumers).
    pub fn flow_ok(&self, qname: &str) -> bool {
        self.queues
            .get(qname)
            .is_none_or(|q| q.len < FLOW_LOW || q.consumers.is_empty())
    }

    /// Dead-letter `msgs` that left `qname` for `reason` (`expired`,
    /// `rejected`, `maxlen`): republish to its DLX with an `x-death` header,
    /// or drop them.
    fn dead_letter(&mut self, qname: &str, msgs: Vec<QMsg>, reason: &str, depth: u8) {
        let (dlx, dlrk) = match self.queues.get(qname) {
            Some(q) => (q.args.dlx.clone(), q.args.dlrk.clone()),
            None => (None, None),
        };
        for mut m in msgs {
            let Some(dlx) = dlx.as_ref().filter(|_| depth < 16) else {
                if let Some(r) = m.sref {
                    self.store.ack(r);
                }
                self.stats.dropped += 1;
                continue;
            };
            let loaded = load(&self.store, &mut m);
            if let Some(r) = m.sref {
                self.store.ack(r);
            }
            if !loaded || (!dlx.is_empty() && !self.exchanges.contains_key(dlx)) {
                self.stats.dropped += 1;
                continue;
            }
            self.stats.dead_lettered += 1;
            let new = with_x_death(&m.msg, qname, reason, dlx, dlrk.as_deref());
            let Ok(queues) = self.route(dlx, &new) else {
                continue;
            };
            let exp = new.expiration_ms().ok().flatten();
            let new = Arc::new(new);
            let mut res = Published::default();
            for q in queues {
                if q == qname && reason != "rejected" {
                    // A cycle without a rejection: RabbitMQ drops it.
                    continue;
                }
                self.enqueue(&q, new.clone(), exp, &mut res, depth + 1);
            }
        }
    }

    /// Deliver ready messages of `qname` to consumers with credit.
    pub fn dispatch(&mut self, qname: &str) {
        self.dispatch_depth(qname, 0)
    }

    fn dispatch_depth(&mut self, qname: &str, depth: u8) {
        let now = now_ms();
        let mut expired = Vec::new();
        let Some(q) = self.queues.get_mut(qname) else {
            return;
        };
        while let Some(head) = q.peek() {
            if head.expires_ms != 0 && head.expires_ms <= now {
                if let Some(m) = q.pop() {
                    expired.push(m);
                }
                continue;
            }
            if q.consumers.is_empty() {
                break;
            }
            let n = if q.args.single_active {
                1
            } else {
                q.consumers.len()
            };
            let mut chosen = None;
            for i in 0..n {
                let idx = (q.rr + i) % n;
                let c = &q.consumers[idx];
                let Some(ch) = self.channels.get(&c.chan) else {
                    continue;
                };
                if !ch.flow {
                    continue;
                }
                if c.backlog.pending.load(std::sync::atomic::Ordering::Relaxed) >= OUTBOX_MAX {
                    c.backlog
                        .starved
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                if !c.no_ack {
                    if c.prefetch != 0 && c.unacked >= u32::from(c.prefetch) {
                        continue;
                    }
                    if ch.global_prefetch != 0
                        && ch.unacked.len() >= usize::from(ch.global_prefetch)
                    {
                        continue;
                    }
                }
                chosen = Some(idx);
                break;
            }
            let Some(idx) = chosen else { break };
            q.rr = (idx + 1) % n.max(1);
            let Some(mut m) = q.pop() else { break };
            if !load(&self.store, &mut m) {
                if let Some(r) = m.sref {
                    self.store.ack(r);
                }
                self.stats.dropped += 1;
                continue;
            }
            let c = &mut q.consumers[idx];
            let Some(ch) = self.channels.get_mut(&c.chan) else {
                break;
            };
            let tag = ch.next_tag;
            ch.next_tag += 1;
            let consumer_tag: Arc<str> = c.tag.clone();
            let sent = ch.out.send(Out::Deliver {
                ch: ch.id,
                consumer_tag: consumer_tag.clone(),
                tag,
                redelivered: m.redelivered,
                msg: m.msg.clone(),
            });
            if sent.is_err() {
                q.push_front(m);
                break;
            }
            q.stat_delivered += 1;
            self.stats.delivered += 1;
            if c.no_ack {
                if let Some(r) = m.sref {
                    self.store.ack(r);
                }
            } else {
                c.unacked += 1;
                q.unacked += 1;
                ch.unacked.insert(
                    tag,
                    Unacked {
                        queue: qname.to_string(),
                        qm: m,
                        consumer: Some(consumer_tag),
                    },
                );
            }
        }
        if !expired.is_empty() {
            self.dead_letter(qname, expired, "expired", depth);
        }
    }

    /// Re-run delivery for every queue consumed by connection `conn`.
    pub fn kick_connection(&mut self, conn: u64) {
        let queues: Vec<String> = self
            .channels
            .iter()
            .filter(|(k, _)| chan_conn(**k) == conn)
            .flat_map(|(_, c)| c.consumers.values().cloned())
            .collect();
        for q in queues {
            self.dispatch(&q);
        }
    }

    /// basic.get: (delivery tag, message, messages left) or None if empty.
    pub fn get(
        &mut self,
        key: u64,
        queue: &str,
        no_ack: bool,
    ) -> AmqpResult<Option<(u64, QMsg, u32)>> {
        self.queue_for(chan_conn(key), queue)?;
        self.chan(key)?;
        let now = now_ms();
        let mut expired = Vec::new();
        let mut got = None;
        if let Some(q) = self.queues.get_mut(queue) {
            q.last_used_ms = now;
            while let Some(m) = q.pop() {
                if m.expires_ms != 0 && m.expires_ms <= now {
                    expired.push(m);
                    continue;
                }
                let mut m = m;
                if !load(&self.store, &mut m) {
                    if let Some(r) = m.sref {
                        self.store.ack(r);
                    }
                    self.stats.dropped += 1;
                    continue;
                }
                got = Some(m);
                break;
            }
        }
        if !expired.is_empty() {
            self.dead_letter(queue, expired, "expired", 0);
        }
        let Some(m) = got else { return Ok(None) };
        let left = self.queues.get(queue).map_or(0, |q| q.len as u32);
        self.stats.delivered += 1;
        let ch = self.chan(key)?;
        let tag = ch.next_tag;
        ch.next_tag += 1;
        if no_ack {
            if let Some(r) = m.sref {
                self.store.ack(r);
            }
        } else {
            ch.unacked.insert(
                tag,
                Unacked {
                    queue: queue.to_string(),
                    qm: m.clone(),
                    consumer: None,
                },
            );
            if let Some(q) = self.queues.get_mut(queue) {
                q.unacked += 1;
                q.stat_delivered += 1;
            }
        }
        Ok(Some((tag, m, left)))
    }

    fn take_unacked(&mut self, key: u64, tag: u64, multiple: bool) -> AmqpResult<Vec<Unacked>> {
        let ch = self.chan(key)?;
        if multiple {
            let keep = if tag == 0 {
                BTreeMap::new()
            } else {
                ch.unacked.split_off(&(tag + 1))
            };
            let taken = std::mem::replace(&mut ch.unacked, keep);
            return Ok(taken.into_values().collect());
        }
        match ch.unacked.remove(&tag) {
            Some(u) => Ok(vec![u]),
            None => Err(AmqpError::precondition_failed(format!(
                "unknown delivery tag {tag}"
            ))),
        }
    }

    fn settle(&mut self, u: &Unacked) {
        if let Some(q) = self.queues.get_mut(&u.queue) {
            q.unacked = q.unacked.saturating_sub(1);
            if let Some(tag) = &u.consumer {
                if let Some(c) = q.consumers.iter_mut().find(|c| c.tag == *tag) {
                    c.unacked = c.unacked.saturating_sub(1);
                }
            }
        }
    }

    /// basic.ack.
    pub fn ack(&mut self, key: u64, tag: u64, multiple: bool) -> AmqpResult<()> {
        let done = self.take_unacked(key, tag, multiple)?;
        let mut touched: Vec<String> = Vec::new();
        for u in &done {
            self.settle(u);
            if let Some(r) = u.qm.sref {
                self.store.ack(r);
            }
            if let Some(q) = self.queues.get_mut(&u.queue) {
                q.stat_acked += 1;
            }
            if !touched.contains(&u.queue) {
                touched.push(u.queue.clone());
            }
        }
        self.stats.acked += done.len() as u64;
        for q in touched {
            self.dispatch(&q);
        }
        Ok(())
    }

    /// basic.nack / basic.reject.
    pub fn reject(&mut self, key: u64, tag: u64, multiple: bool, requeue: bool) -> AmqpResult<()> {
        let done = self.take_unacked(key, tag, multiple)?;
        let mut touched: Vec<String> = Vec::new();
        for u in done.into_iter().rev() {
            if !touched.contains(&u.queue) {
                touched.push(u.queue.clone());
            }
            if requeue {
                self.requeue(u);
            } else {
                self.settle(&u);
                let qn = u.queue.clone();
                self.dead_letter(&qn, vec![u.qm], "rejected", 0);
            }
        }
        for q in touched {
            self.dispatch(&q);
        }
        Ok(())
    }

    /// basic.recover: requeue every unacknowledged delivery of the channel.
    pub fn recover(&mut self, key: u64) -> AmqpResult<()> {
        let all = self.take_unacked(key, 0, true)?;
        let mut touched: Vec<String> = Vec::new();
        for u in all.into_iter().rev() {
            if !touched.contains(&u.queue) {
                touched.push(u.queue.clone());
            }
            self.requeue(u);
        }
        for q in touched {
            self.dispatch(&q);
        }
        Ok(())
    }

    /// channel.flow.
    pub fn flow(&mut self, key: u64, active: bool) -> AmqpResult<()> {
        self.chan(key)?.flow = active;
        if active {
            let qs: Vec<String> = self.queues.keys().cloned().collect();
            for q in qs {
                self.dispatch(&q);
            }
        }
        Ok(())
    }

    /// Periodic work: expire messages at queue heads, delete queues unused
    /// past `x-expires`. Returns the estimated memory of ready messages.
    pub fn tick(&mut self) -> u64 {
        let now = now_ms();
        let mut expire_q = Vec::new();
        let mut heads = Vec::new();
        let mut bytes = 0;
        for q in self.queues.values() {
            bytes += q.bytes + q.len as u64 * MESSAGE_OVERHEAD;
            if let Some(ms) = q.args.expires {
                if q.consumers.is_empty() && now.saturating_sub(q.last_used_ms) >= ms {
                    expire_q.push(q.name.clone());
                    continue;
                }
            }
            // Expired heads, and (as a safety net for writer-backlog races)
            // ready messages with consumers attached.
            if q.peek()
                .is_some_and(|m| m.expires_ms != 0 && m.expires_ms <= now)
                || (q.len > 0 && !q.consumers.is_empty())
            {
                heads.push(q.name.clone());
            }
        }
        for q in expire_q {
            self.remove_queue(&q);
        }
        for q in heads {
            self.dispatch(&q);
        }
        bytes
    }
}

/// Read a paged-out message back from the store; false if it cannot be read
/// (the caller then drops it and acknowledges its record).
fn load(store: &Store, m: &mut QMsg) -> bool {
    if !m.paged {
        return true;
    }
    let Some(r) = m.sref else { return false };
    match store.read(r) {
        Some(msg) => {
            m.msg = Arc::new(msg);
            m.paged = false;
            true
        }
        None => {
            tracing::error!(
                seg = r.seg,
                pos = r.pos,
                "paged message unreadable in the store; dropped"
            );
            false
        }
    }
}

fn with_x_death(m: &Message, queue: &str, reason: &str, dlx: &str, dlrk: Option<&str>) -> Message {
    let props = m.properties();
    let mut headers = props.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = headers
        .inner()
        .get("x-death")
        .and_then(|v| v.as_array())
        .map(|a| a.as_slice().to_vec())
        .unwrap_or_default();
    let same = |t: &FieldTable| {
        t.inner()
            .get("queue")
            .and_then(crate::message::value_as_str)
            == Some(queue)
            && t.inner()
                .get("reason")
                .and_then(crate::message::value_as_str)
                == Some(reason)
    };
    let mut count = 1i64;
    if let Some(i) = deaths
        .iter()
        .position(|d| d.as_field_table().is_some_and(same))
    {
        if let Some(t) = deaths[i].as_field_table() {
            count += t
                .inner()
                .get("count")
                .and_then(crate::message::value_as_i64)
                .unwrap_or(0);
        }
        deaths.remove(i);
    }
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    let mut d = FieldTable::default();
    d.insert("count".into(), AMQPValue::LongLongInt(count));
    d.insert("reason".into(), text(reason));
    d.insert("queue".into(), text(queue));
    d.insert("time".into(), AMQPValue::Timestamp(now_ms() / 1000));
    d.insert("exchange".into(), text(&m.exchange));
    d.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![text(&m.routing_key)])),
    );
    if let Some(exp) = props.expiration() {
        d.insert("original-expiration".into(), text(exp.as_str()));
    }
    deaths.insert(0, AMQPValue::FieldTable(d));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    if !headers.contains_key("x-first-death-reason") {
        headers.insert("x-first-death-reason".into(), text(reason));
        headers.insert("x-first-death-queue".into(), text(queue));
        headers.insert("x-first-death-exchange".into(), text(&m.exchange));
    }
    // The per-message TTL is removed when dead-lettered (kept as original-expiration).
    let mut p = amq_protocol::protocol::BasicProperties::default().with_headers(headers);
    // These properties are kept as they were (expiration and cluster-id are not).
    macro_rules! keep {
        ($($get:ident => $set:ident),*) => {$(
            if let Some(v) = props.$get().clone() {
                p = p.$set(v);
            }
        )*};
    }
    keep!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id
    );
    let rk = dlrk.unwrap_or(&m.routing_key);
    Message::new(dlx, rk, &p, m.body())
}
