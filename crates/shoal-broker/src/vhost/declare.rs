//! Exchange and queue declaration, deletion, binding and unbinding.

use super::*;

impl VHost {
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
        // RabbitMQ's order: the type (a connection error), the default
        // exchange, then an existing exchange's equivalence or a new one's
        // name.
        if passive {
            if name.is_empty() {
                return Err(AmqpError::access_refused(
                    "operation not permitted on the default exchange",
                ));
            }
            return match self.exchanges.contains_key(name) {
                true => Ok(()),
                false => Err(AmqpError::not_found(format!(
                    "no exchange '{name}' in vhost '{}'",
                    self.name
                ))),
            };
        }
        let parsed = Kind::parse(kind)
            .ok_or_else(|| AmqpError::command_invalid(format!("unknown exchange type '{kind}'")))?;
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if let Some(e) = self.exchanges.get(name) {
            let vhost = &self.name;
            if e.kind.as_str() != kind {
                return Err(inequivalent(
                    "exchange",
                    "type",
                    name,
                    vhost,
                    kind,
                    e.kind.as_str(),
                ));
            }
            if e.durable != durable {
                return Err(inequivalent(
                    "exchange", "durable", name, vhost, durable, e.durable,
                ));
            }
            if e.auto_delete != auto_delete {
                return Err(inequivalent(
                    "exchange",
                    "auto_delete",
                    name,
                    vhost,
                    auto_delete,
                    e.auto_delete,
                ));
            }
            if e.internal != internal {
                return Err(inequivalent(
                    "exchange", "internal", name, vhost, internal, e.internal,
                ));
            }
            return crate::queue::check_args_equivalent(
                &e.arguments,
                &arguments,
                &["alternate-exchange"],
                "exchange",
                name,
                vhost,
            );
        }
        let kind = parsed;
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        if let Some(v) = arguments.inner().get("alternate-exchange") {
            if !matches!(v, amq_protocol::types::AMQPValue::LongString(_)) {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid type '{}' for arg 'alternate-exchange' in exchange '{name}' in vhost '{}'",
                    crate::queue::type_name(v),
                    self.name
                )));
            }
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
                policy: None,
            },
        );
        self.apply_exchange_policy(name);
        if durable {
            self.save_definitions();
        }
        Ok(())
    }

    /// exchange.delete.
    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
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

    pub(super) fn exchange_for_bind(&self, name: &str) -> AmqpResult<&Exchange> {
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
        if src.kind == Kind::Headers {
            crate::exchange::check_x_match(&args).map_err(AmqpError::precondition_failed)?;
        }
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
        // As RabbitMQ: unbinding what is not there (a missing source
        // exchange, destination or binding) answers unbind-ok; only the
        // default exchange is refused, and another connection's exclusive
        // queue is locked.
        let default = |n: &str| {
            n.is_empty().then(|| {
                AmqpError::access_refused("operation not permitted on the default exchange")
            })
        };
        if let Some(e) = default(source) {
            return Err(e);
        }
        if let Dest::Exchange(x) = &dest {
            if let Some(e) = default(x) {
                return Err(e);
            }
        }
        let dest_exists = match &dest {
            Dest::Queue(q) => self.queues.contains_key(q),
            Dest::Exchange(x) => self.exchanges.contains_key(x),
        };
        if !dest_exists {
            return Ok(());
        }
        let Some(src) = self.exchanges.get(source) else {
            return Ok(());
        };
        let Some(at) = src
            .bindings
            .iter()
            .position(|b| b.dest == dest && b.key == key && &b.args == args)
        else {
            return Ok(());
        };
        self.check_dest(conn, &dest)?;
        let Some(src) = self.exchanges.get_mut(source) else {
            return Ok(());
        };
        src.bindings.remove(at);
        let auto_delete = src.auto_delete && src.bindings.is_empty();
        let durable = src.durable;
        if auto_delete {
            self.exchanges.remove(source);
        }
        if durable {
            self.save_definitions();
        }
        Ok(())
    }

    pub(super) fn check_dest(&self, conn: u64, dest: &Dest) -> AmqpResult<()> {
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

    pub(super) fn queue_for(&self, conn: u64, name: &str) -> AmqpResult<&Queue> {
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
            let found = (q.name.to_string(), q.len as u32, q.consumers.len() as u32);
            // As RabbitMQ: a declare, passive or not, renews an x-expires lease.
            if let Some(q) = self.queues.get_mut(name) {
                q.last_used_ms = now_ms();
            }
            return Ok(found);
        }
        // RabbitMQ: an exclusive queue is never durable.
        let durable = durable && !exclusive;
        let name = if name.is_empty() {
            format!("amq.gen-{}", random_suffix(22))
        } else {
            name.to_string()
        };
        if let Some(q) = self.queues.get(&name) {
            // Exclusivity first, and strictly: declaring it exclusive from
            // another connection, or with another exclusive flag, is locked.
            if q.exclusive_owner != exclusive.then_some(conn) {
                return Err(AmqpError::resource_locked(format!(
                    "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                    self.name
                )));
            }
            if q.durable != durable {
                return Err(inequivalent(
                    "queue", "durable", &name, &self.name, durable, q.durable,
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
            crate::queue::check_equivalent(&q.arguments, &arguments, &name, &self.name)?;
            let (l, c) = (q.len as u32, q.consumers.len() as u32);
            if let Some(q) = self.queues.get_mut(&name) {
                q.last_used_ms = now_ms();
            }
            return Ok((name, l, c));
        }
        if name.starts_with("amq.") && !name.starts_with("amq.gen-") {
            return Err(reserved_queue_name(&name));
        }
        crate::declare_args::check(&arguments, &name, &self.name)?;
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
        self.apply_policy_to(&name);
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
                "queue '{name}' in vhost '{}' not empty",
                self.name
            )));
        }
        Ok(self.remove_queue(name))
    }

    pub(super) fn remove_queue(&mut self, name: &str) -> u32 {
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
}

/// RabbitMQ's refusal of a queue name starting with `amq.`: over AMQP a
/// non-passive queue.declare may not name one, even a server-named queue
/// that exists; definitions may hold server-named (`amq.gen-`) queues.
pub fn reserved_queue_name(name: &str) -> AmqpError {
    AmqpError::access_refused(format!(
        "queue name '{name}' contains reserved prefix 'amq.*'"
    ))
}
