//! Routing through exchanges, publishing into queues (TTL, length limits,
//! the store) and dead-lettering with `x-death`.

use super::*;

impl VHost {
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

    /// basic.publish (content complete): checked and routed
    /// ([`VHost::route_publish`]), then delivered.
    pub fn publish(&mut self, msg: Message) -> AmqpResult<Published> {
        if msg.exchange.is_empty() && !msg.routing_key.starts_with(REPLY_TO_PREFIX) {
            // The default exchange (never internal): the routing key names
            // the queue; no list of names to build.
            let exp = msg
                .expiration_ms()
                .map_err(AmqpError::precondition_failed)?;
            self.stats.published += 1;
            let mut res = Published::default();
            let msg = Arc::new(msg);
            let key = msg.clone();
            res.routed = self.enqueue(&key.routing_key, msg, exp, &mut res, 0);
            return Ok(res);
        }
        let routed = self.route_publish(&msg)?;
        Ok(self.publish_routed(msg, routed))
    }

    /// What basic.publish checks (the exchange exists and is not internal,
    /// a valid `expiration`) and where the message goes, decided now. A
    /// transactional publish does this at once and keeps the result for
    /// tx.commit, as RabbitMQ does: a publish it refuses fails on the spot
    /// (nothing of the transaction is applied), and the commit delivers to
    /// the queues chosen here, those of them that still exist, even if the
    /// exchange has gone since.
    pub fn route_publish(&self, msg: &Message) -> AmqpResult<Routed> {
        if let Some(e) = self.exchanges.get(&*msg.exchange) {
            if e.internal {
                return Err(AmqpError::access_refused(format!(
                    "cannot publish to internal exchange '{}' in vhost '{}'",
                    msg.exchange, self.name
                )));
            }
        }
        if msg.exchange.is_empty() {
            if let Some(token) = msg.routing_key.strip_prefix(REPLY_TO_PREFIX) {
                return Ok(Routed {
                    to: Route::Reply(token.to_string()),
                    exp: None,
                });
            }
        }
        let exp = msg
            .expiration_ms()
            .map_err(AmqpError::precondition_failed)?;
        Ok(Routed {
            to: Route::Queues(self.route(&msg.exchange, msg)?),
            exp,
        })
    }

    /// Deliver `msg` where [`VHost::route_publish`] sent it. Queues deleted
    /// since are skipped; `routed` is whether any queue (or reply consumer)
    /// took it.
    pub fn publish_routed(&mut self, msg: Message, routed: Routed) -> Published {
        self.stats.published += 1;
        let mut res = Published::default();
        match routed.to {
            Route::Reply(token) => res.routed = self.publish_reply(&token, msg),
            Route::Queues(queues) => {
                let msg = Arc::new(msg);
                for q in queues {
                    res.routed |= self.enqueue(&q, msg.clone(), routed.exp, &mut res, 0);
                }
            }
        }
        res
    }

    /// Put `msg` into queue `qname` and deliver what can be; false if
    /// there is no such queue.
    pub(super) fn enqueue(
        &mut self,
        qname: &str,
        msg: MessageRef,
        exp: Option<u64>,
        res: &mut Published,
        depth: u8,
    ) -> bool {
        let Some(q) = self.queues.get_mut(qname) else {
            return false;
        };
        let size = msg.body().len();
        if q.would_overflow(size) {
            match q.args.overflow.unwrap_or(Overflow::DropHead) {
                Overflow::RejectPublish => {
                    res.rejected = true;
                    self.stats.rejected += 1;
                    return true;
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
                        seq: 0,
                    };
                    self.dead_letter(qname, vec![qm], "maxlen", depth);
                    return true;
                }
                Overflow::DropHead => {}
            }
        }
        let ttl = match (q.args.message_ttl, exp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A TTL of 0 on a message with nothing ahead of it: delivered if a
        // consumer takes it at once, else expired here, as RabbitMQ does
        // (with a deadline of now it would expire before any consumer).
        let at_once = ttl == Some(0) && q.len == 0;
        let expires_ms = match ttl {
            Some(_) if at_once => 0,
            t => t.map_or(0, |t| now_ms() + t),
        };
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
            seq: 0,
        });
        let mut dropped = Vec::new();
        while q.over_limit() {
            match q.pop() {
                Some(m) => dropped.push(m),
                None => break,
            }
        }
        let backlogged = if dropped.is_empty() {
            // The queue is at hand: deliver without looking it up again.
            let (backlogged, mut expired) =
                delivery::deliver_ready(q, &mut self.channels, &self.store, &mut self.stats);
            if at_once {
                expired.extend(q.pop());
            }
            if !expired.is_empty() {
                self.dead_letter(qname, expired, "expired", depth);
            }
            backlogged
        } else {
            self.dead_letter(qname, dropped, "maxlen", depth);
            self.dispatch_depth(qname, depth)
        };
        if backlogged && res.flow.is_none() {
            res.flow = Some(qname.to_string());
        }
        true
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
    pub(super) fn dead_letter(&mut self, qname: &str, msgs: Vec<QMsg>, reason: &str, depth: u8) {
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
