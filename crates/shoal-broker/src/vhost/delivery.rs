//! Consumers, delivery to them under prefetch credit, basic.get, and
//! acknowledgement: ack, nack/reject, recover, channel.flow.

use super::*;

/// A message taken by [`VHost::take_ready`].
pub(super) struct Taken {
    /// As it was queued (a paged-out message stays paged, for a requeue).
    pub queued: QMsg,
    /// With its body loaded.
    pub loaded: QMsg,
    /// Ready messages left in the queue after it was taken.
    pub left: u32,
}

impl VHost {
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
        arguments: &FieldTable,
    ) -> AmqpResult<String> {
        if queue == REPLY_TO {
            return self.consume_reply(key, tag, no_ack);
        }
        let conn = chan_conn(key);
        let q = self.queue_for(conn, queue)?;
        // Consumer arguments as RabbitMQ: `x-priority` (an integer) orders
        // consumers; `x-cancel-on-ha-failover` is accepted and has nothing
        // to do on a single node; others are ignored.
        let priority = match arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => crate::message::value_as_i64(v).ok_or_else(|| {
                AmqpError::precondition_failed(format!(
                    "invalid arg 'x-priority' for queue '{queue}' in vhost '{}': \"expected integer, got {}\"",
                    self.name,
                    crate::queue::type_name(v)
                ))
            })?,
        };
        if exclusive && !q.consumers.is_empty() || q.consumers.iter().any(|c| c.exclusive) {
            return Err(AmqpError::access_refused(format!(
                "queue '{queue}' in vhost '{}' in exclusive use",
                self.name
            )));
        }
        let ch = self.chan(key)?;
        let tag = ch.claim_consumer_tag(tag, queue)?;
        let prefetch = ch.prefetch;
        let out = ch.out.clone();
        let backlog = ch.backlog.clone();
        if let Some(q) = self.queues.get_mut(queue) {
            q.add_consumer(Consumer {
                tag: Arc::from(tag.as_str()),
                chan: key,
                no_ack,
                exclusive,
                prefetch,
                unacked: 0,
                priority,
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
        if q == REPLY_TO {
            self.drop_reply(key);
            return Ok(true);
        }
        self.remove_consumer(&q, tag);
        self.after_consumer_change(&q);
        Ok(true)
    }

    /// Deliver ready messages of `qname` to consumers with credit.
    pub fn dispatch(&mut self, qname: &str) {
        self.dispatch_depth(qname, 0);
    }

    /// [`VHost::dispatch`] for a message dead-lettered `depth` times; true
    /// when the queue is left backlogged past [`FLOW_HIGH`] with consumers
    /// (its publishers should pause).
    pub(super) fn dispatch_depth(&mut self, qname: &str, depth: u8) -> bool {
        let Some(q) = self.queues.get_mut(qname) else {
            return false;
        };
        let (backlogged, expired) =
            deliver_ready(q, &mut self.channels, &self.store, &mut self.stats);
        if !expired.is_empty() {
            self.dead_letter(qname, expired, "expired", depth);
        }
        backlogged
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
        let Some(Taken {
            loaded: m, left, ..
        }) = self.take_ready(queue, 1).pop()
        else {
            return Ok(None);
        };
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
                    queue: Arc::from(queue),
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

    /// Take up to `count` ready messages from the head of `queue`, each
    /// with its body loaded (basic.get and the management API's get).
    /// Expired messages met on the way are dead-lettered, unreadable paged
    /// ones dropped; the queue counts as used.
    pub(super) fn take_ready(&mut self, queue: &str, count: usize) -> Vec<Taken> {
        let now = now_ms();
        let (mut expired, mut taken) = (Vec::new(), Vec::new());
        if let Some(q) = self.queues.get_mut(queue) {
            q.last_used_ms = now;
            while taken.len() < count {
                let Some(m) = q.pop() else { break };
                if m.expires_ms != 0 && m.expires_ms <= now {
                    expired.push(m);
                    continue;
                }
                let mut loaded = m.clone();
                if !load(&self.store, &mut loaded) {
                    if let Some(r) = m.sref {
                        self.store.ack(r);
                    }
                    self.stats.dropped += 1;
                    continue;
                }
                taken.push(Taken {
                    queued: m,
                    loaded,
                    left: q.len as u32,
                });
            }
        }
        if !expired.is_empty() {
            self.dead_letter(queue, expired, "expired", 0);
        }
        taken
    }

    pub(super) fn take_unacked(
        &mut self,
        key: u64,
        tag: u64,
        multiple: bool,
    ) -> AmqpResult<Vec<Unacked>> {
        let ch = self.chan(key)?;
        ch.unacked
            .settle(tag, multiple)
            .ok_or_else(|| unknown_tag(tag))
    }

    fn take_one(ch: &mut ChanState, tag: u64) -> AmqpResult<Unacked> {
        ch.unacked.remove(tag).ok_or_else(|| unknown_tag(tag))
    }

    /// An acknowledged delivery leaves its queue and the store.
    fn settle_acked(&mut self, u: &Unacked) {
        if let Some(q) = self.queues.get_mut(&*u.queue) {
            settle_in(q, u);
            q.stat_acked += 1;
        }
        if let Some(r) = u.qm.sref {
            self.store.ack(r);
        }
    }

    pub(super) fn settle(&mut self, u: &Unacked) {
        if let Some(q) = self.queues.get_mut(&*u.queue) {
            settle_in(q, u);
        }
    }

    /// Check that the acknowledgements a transaction holds (`(tag,
    /// multiple)`, in order) each name a delivery still outstanding when its
    /// turn comes, so that a commit settles all of them or none (RabbitMQ
    /// checks each when it arrives; a bad one closes the channel and the
    /// transaction with it).
    pub fn check_settles(
        &mut self,
        key: u64,
        settles: impl Iterator<Item = (u64, bool)>,
    ) -> AmqpResult<()> {
        let mut left = self.chan(key)?.unacked.tags_only();
        for (tag, multiple) in settles {
            left.settle(tag, multiple).ok_or_else(|| unknown_tag(tag))?;
        }
        Ok(())
    }

    /// basic.ack.
    pub fn ack(&mut self, key: u64, tag: u64, multiple: bool) -> AmqpResult<()> {
        if !multiple {
            // One delivery (the usual ack): no lists.
            let u = Self::take_one(self.chan(key)?, tag)?;
            self.settle_acked(&u);
            self.stats.acked += 1;
            self.dispatch(&u.queue);
            return Ok(());
        }
        let done = self.take_unacked(key, tag, multiple)?;
        let mut touched: Vec<Arc<str>> = Vec::new();
        for u in &done {
            self.settle_acked(u);
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
        let mut touched: Vec<Arc<str>> = Vec::new();
        for u in done {
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
        let mut touched: Vec<Arc<str>> = Vec::new();
        for u in all {
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
}

/// Deliver the ready messages of `q` to its consumers with credit (the
/// body of [`VHost::dispatch`], for a queue already looked up). Returns
/// whether the queue is left backlogged past [`FLOW_HIGH`] with consumers,
/// and the expired messages met at its head, for the caller to dead-letter.
pub(super) fn deliver_ready(
    q: &mut Queue,
    channels: &mut FxHashMap<u64, ChanState>,
    store: &Store,
    stats: &mut VStats,
) -> (bool, Vec<QMsg>) {
    // The clock is read only once a message with a deadline is met.
    let mut clock = None;
    let mut expired = Vec::new();
    while let Some(head) = q.peek() {
        if head.expires_ms != 0 && head.expires_ms <= *clock.get_or_insert_with(now_ms) {
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
        // Consumers are kept by priority, highest first, and a consumer
        // that gets a message moves behind the others of its priority:
        // the first one with credit is the one to deliver to.
        let mut chosen = None;
        for idx in 0..n {
            let c = &q.consumers[idx];
            let Some(ch) = channels.get(&c.chan) else {
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
                if ch.global_prefetch != 0 && ch.unacked.len() >= usize::from(ch.global_prefetch) {
                    continue;
                }
            }
            chosen = Some(idx);
            break;
        }
        let Some(idx) = chosen else { break };
        let Some(mut m) = q.pop() else { break };
        if !load(store, &mut m) {
            if let Some(r) = m.sref {
                store.ack(r);
            }
            stats.dropped += 1;
            continue;
        }
        let c = &mut q.consumers[idx];
        let Some(ch) = channels.get_mut(&c.chan) else {
            break;
        };
        let tag = ch.next_tag;
        ch.next_tag += 1;
        // A no-ack delivery hands the message itself to the writer (and
        // gets it back if the connection is gone); one to be acknowledged
        // shares it with the channel's unacked record.
        if c.no_ack {
            if let Err(msg) = ch
                .out
                .deliver(ch.id, c.tag.clone(), tag, m.redelivered, m.msg)
            {
                m.msg = msg;
                q.requeue(m);
                break;
            }
            if let Some(r) = m.sref {
                store.ack(r);
            }
        } else {
            let sent = ch
                .out
                .deliver(ch.id, c.tag.clone(), tag, m.redelivered, m.msg.clone());
            if sent.is_err() {
                q.requeue(m);
                break;
            }
            c.unacked += 1;
            q.unacked += 1;
            ch.unacked.insert(
                tag,
                Unacked {
                    queue: q.name.clone(),
                    qm: m,
                    consumer: Some(c.tag.clone()),
                },
            );
        }
        q.stat_delivered += 1;
        stats.delivered += 1;
        if !q.args.single_active {
            q.served(idx);
        }
    }
    (q.len > FLOW_HIGH && !q.consumers.is_empty(), expired)
}

/// `u`, taken from `q`, is settled: no longer counted as unacknowledged.
fn settle_in(q: &mut Queue, u: &Unacked) {
    q.unacked = q.unacked.saturating_sub(1);
    if let Some(tag) = &u.consumer {
        if let Some(c) = q.consumers.iter_mut().find(|c| c.tag == *tag) {
            c.unacked = c.unacked.saturating_sub(1);
        }
    }
}

/// Read a paged-out message back from the store; false if it cannot be read
/// (the caller then drops it and acknowledges its record).
pub(super) fn load(store: &Store, m: &mut QMsg) -> bool {
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

/// The error for an acknowledgement of a delivery tag that is not
/// outstanding on the channel (RabbitMQ's wording).
fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::precondition_failed(format!("unknown delivery tag {tag}"))
}
