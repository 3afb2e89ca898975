//! A virtual host: its exchanges, queues and bindings, the delivery state of
//! every open channel (unacknowledged deliveries, prefetch), and the
//! operations of the exchange, queue and basic classes on them. One mutex per
//! vhost guards all of it, so routing, delivery and acknowledgement are
//! consistent without lock ordering. Durable definitions are saved to
//! `definitions.json`; persistent messages in durable queues go to the
//! [`Store`].
//!
//! The operations are split by job: `declare` (exchanges, queues,
//! bindings), `routing` (route, publish, dead-letter), `delivery`
//! (consumers, dispatch, get, ack/nack/reject, recover), `reply`
//! (direct reply-to), `api_get` (the management API's get) and `policy`
//! (RabbitMQ's policies); this file
//! holds the
//! state, recovery at open, definitions, channels and the periodic tick.

mod api_get;
mod declare;
mod delivery;
mod policy;
mod reply;
mod routing;
mod unacked;

pub use api_get::{AckMode, Got};
pub use declare::reserved_queue_name;
pub use policy::Policy;
pub use reply::{REPLY_TO, REPLY_TO_PREFIX};

use delivery::load;
pub use unacked::UnackedMap;

use crate::error::{AmqpError, AmqpResult};
use crate::exchange::{Binding, Dest, Exchange, Kind};
use crate::message::{now_ms, Message, MessageRef};
use crate::outbox::{Backlog, Out, Outbox, OUTBOX_MAX};
use crate::queue::{paged_stub, Consumer, Overflow, QMsg, Queue, QueueArgs};
use crate::store::Store;
use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use rustc_hash::FxHashMap;
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
    pub queue: Arc<str>,
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
    pub unacked: UnackedMap,
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
    /// Its direct reply-to consumer: tag and token.
    pub reply: Option<(Arc<str>, String)>,
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

/// A publish checked and routed by [`VHost::route_publish`], to be
/// delivered by [`VHost::publish_routed`].
#[derive(Debug)]
pub struct Routed {
    to: Route,
    /// The message's own TTL (`expiration`), in milliseconds.
    exp: Option<u64>,
}

/// Where a routed message goes.
#[derive(Debug)]
enum Route {
    /// Direct reply-to: the consumer behind this token.
    Reply(String),
    /// These queues (none: unroutable).
    Queues(Vec<String>),
}

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
    #[serde(default)]
    policies: Vec<Policy>,
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

/// A map keyed by names clients choose (queues, exchanges), looked up on
/// every publish: foldhash, a fast hasher that is still keyed with a random
/// seed per process (so clients cannot pick names that collide), instead of
/// the standard library's SipHash, which cost 3% of a message's
/// instructions.
pub type NameMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// A virtual host.
pub struct VHost {
    /// Name.
    pub name: String,
    /// Exchanges by name (the default exchange is implicit).
    pub exchanges: NameMap<Exchange>,
    /// Queues by name.
    pub queues: NameMap<Queue>,
    /// Open channels.
    /// Channels by [`chan_key`], looked up per delivery: a fast (Fx) hash
    /// of the number.
    pub channels: FxHashMap<u64, ChanState>,
    /// Message store.
    pub store: Arc<Store>,
    /// Counters.
    pub stats: VStats,
    /// Ready bytes a queue keeps in memory before paging persistent messages.
    pub page_budget: u64,
    defs_path: PathBuf,
    /// Direct reply-to tokens → channel keys.
    replies: HashMap<String, u64>,
    /// Deleted through the management API: its files are gone and its
    /// definitions are no longer saved.
    pub deleted: bool,
    /// RabbitMQ's policies, by name.
    policies: BTreeMap<String, Policy>,
}

const PREDECLARED: [(&str, Kind); 6] = [
    ("amq.direct", Kind::Direct),
    ("amq.fanout", Kind::Fanout),
    ("amq.topic", Kind::Topic),
    ("amq.headers", Kind::Headers),
    ("amq.match", Kind::Headers),
    ("amq.rabbitmq.trace", Kind::Topic),
];

impl ChanState {
    /// Take consumer tag `tag` for `queue` on this channel (a generated
    /// `amq.ctag-...` when empty); a tag already in use is 530.
    fn claim_consumer_tag(&mut self, tag: &str, queue: &str) -> AmqpResult<String> {
        let tag = if tag.is_empty() {
            format!("amq.ctag-{}", random_suffix(22))
        } else {
            tag.to_string()
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        self.consumers.insert(tag.clone(), queue.to_string());
        Ok(tag)
    }
}

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
        let mut exchanges = NameMap::default();
        let mut queues: NameMap<Queue> = NameMap::default();
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
                    policy: None,
                },
            );
        }
        let mut policies = Vec::new();
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
                        policy: None,
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
            policies = defs.policies;
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
                    seq: 0,
                })
            }
            _ => gone.push(r.sref),
        })?;
        for r in gone {
            store.ack(r);
        }
        let mut v = VHost {
            name: name.to_string(),
            exchanges,
            queues,
            channels: FxHashMap::default(),
            store,
            stats: VStats::default(),
            page_budget,
            defs_path,
            replies: HashMap::new(),
            deleted: false,
            policies: BTreeMap::new(),
        };
        v.load_policies(policies);
        Ok(v)
    }

    fn save_definitions(&self) {
        if self.deleted {
            return;
        }
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
        d.policies = self.policies.values().cloned().collect();
        for q in self.queues.values().filter(|q| q.durable) {
            d.queues.push(DefQueue {
                name: q.name.to_string(),
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
                unacked: UnackedMap::default(),
                prefetch: 0,
                global_prefetch: 0,
                flow: true,
                cancel_notify,
                consumers: HashMap::new(),
                backlog,
                reply: None,
            },
        );
    }

    /// Close a channel: cancel its consumers, requeue its unacked messages.
    pub fn close_channel(&mut self, key: u64) {
        self.drop_reply(key);
        let Some(mut ch) = self.channels.remove(&key) else {
            return;
        };
        let mut touched = HashSet::new();
        for (tag, qname) in &ch.consumers {
            self.remove_consumer(qname, tag);
            touched.insert(qname.clone());
        }
        for u in ch.unacked.take_all() {
            if !touched.contains(&*u.queue) {
                touched.insert(u.queue.to_string());
            }
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
        let excl: Vec<Arc<str>> = self
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
        let Some(q) = self.queues.get_mut(&*u.queue) else {
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
        q.requeue(u.qm);
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
