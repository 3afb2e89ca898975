//! The class methods of an open channel: `exchange.*`, `queue.*`,
//! `basic.*` (but publish content, see `content`) and `tx.*`, each checked
//! against the user's permissions and applied to the vhost.

use super::{Conn, TxOp};
use crate::config::Access;
use crate::error::{AmqpError, AmqpResult};
use crate::outbox::Out;
use crate::vhost::{chan_key, VHost};
use amq_protocol::protocol::{basic, exchange, queue, tx, AMQPClass};
use parking_lot::Mutex;
use std::sync::Arc;

impl Conn {
    pub(super) fn on_exchange(
        &mut self,
        ch: u16,
        v: &Arc<Mutex<VHost>>,
        em: exchange::AMQPMethod,
    ) -> AmqpResult<()> {
        match em {
            exchange::AMQPMethod::Declare(d) => {
                if !d.passive {
                    self.allowed(ch, Access::Configure, "exchange", d.exchange.as_str())?;
                }
                v.lock().declare_exchange(
                    d.exchange.as_str(),
                    d.kind.as_str(),
                    d.passive,
                    d.durable,
                    d.auto_delete,
                    d.internal,
                    d.arguments,
                )?;
                if !d.nowait {
                    self.reply(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(
                            exchange::DeclareOk {},
                        )),
                    );
                }
            }
            exchange::AMQPMethod::Delete(d) => {
                self.allowed(ch, Access::Configure, "exchange", d.exchange.as_str())?;
                v.lock().delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.reply(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
            }
            exchange::AMQPMethod::Bind(b) => self.binding(ch, b)?,
            exchange::AMQPMethod::Unbind(b) => self.binding(ch, b)?,
            other => {
                return Err(AmqpError::command_invalid(format!(
                    "{other:?} is not a client method"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn on_queue(
        &mut self,
        ch: u16,
        v: &Arc<Mutex<VHost>>,
        qm: queue::AMQPMethod,
    ) -> AmqpResult<()> {
        match qm {
            queue::AMQPMethod::Declare(d) => {
                if !d.passive && d.queue.as_str().starts_with("amq.") {
                    return Err(crate::vhost::reserved_queue_name(d.queue.as_str()));
                }
                if !d.passive && !d.queue.as_str().is_empty() {
                    self.allowed(ch, Access::Configure, "queue", d.queue.as_str())?;
                }
                let (name, count, consumers) = v.lock().declare_queue(
                    self.id,
                    d.queue.as_str(),
                    d.passive,
                    d.durable,
                    d.exclusive,
                    d.auto_delete,
                    d.arguments,
                )?;
                if !d.nowait {
                    self.reply(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                            queue: name.into(),
                            message_count: count,
                            consumer_count: consumers,
                        })),
                    );
                }
            }
            queue::AMQPMethod::Bind(b) => self.binding(ch, b)?,
            queue::AMQPMethod::Unbind(b) => self.binding(ch, b)?,
            queue::AMQPMethod::Purge(p) => {
                self.allowed(ch, Access::Read, "queue", p.queue.as_str())?;
                let n = v.lock().purge_queue(self.id, p.queue.as_str())?;
                if !p.nowait {
                    self.reply(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                            message_count: n,
                        })),
                    );
                }
            }
            queue::AMQPMethod::Delete(d) => {
                self.allowed(ch, Access::Configure, "queue", d.queue.as_str())?;
                let n =
                    v.lock()
                        .delete_queue(self.id, d.queue.as_str(), d.if_unused, d.if_empty)?;
                if !d.nowait {
                    self.reply(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                            message_count: n,
                        })),
                    );
                }
            }
            other => {
                return Err(AmqpError::command_invalid(format!(
                    "{other:?} is not a client method"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn on_basic(
        &mut self,
        ch: u16,
        v: &Arc<Mutex<VHost>>,
        bm: basic::AMQPMethod,
    ) -> AmqpResult<()> {
        let key = chan_key(self.id, ch);
        match bm {
            basic::AMQPMethod::Publish(p) => self.on_publish(ch, p)?,
            basic::AMQPMethod::Qos(q) => {
                v.lock().qos(key, q.prefetch_count, q.global)?;
                self.reply(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
            }
            basic::AMQPMethod::Consume(c) => {
                self.allowed(ch, Access::Read, "queue", c.queue.as_str())?;
                let mut g = v.lock();
                let tag = g.consume(
                    key,
                    c.queue.as_str(),
                    c.consumer_tag.as_str(),
                    c.no_ack,
                    c.exclusive,
                    &c.arguments,
                )?;
                if !c.nowait {
                    self.reply(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                            consumer_tag: tag.into(),
                        })),
                    );
                }
                g.kick(c.queue.as_str());
            }
            basic::AMQPMethod::Cancel(c) => {
                v.lock().cancel(key, c.consumer_tag.as_str())?;
                if !c.nowait {
                    self.reply(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
            }
            basic::AMQPMethod::Get(g) => {
                self.allowed(ch, Access::Read, "queue", g.queue.as_str())?;
                let got = v.lock().get(key, g.queue.as_str(), g.no_ack)?;
                match got {
                    Some((tag, qm, count)) => {
                        let _ = self.out.send(Out::GetOk {
                            ch,
                            tag,
                            redelivered: qm.redelivered,
                            count,
                            msg: qm.msg,
                        });
                    }
                    None => self.reply(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                    ),
                }
            }
            basic::AMQPMethod::Ack(a) => self.on_ack(ch, v, a)?,
            basic::AMQPMethod::Nack(n) => {
                if let Some(txb) = self.chan_mut(ch)?.tx.as_mut() {
                    txb.push(TxOp::Reject(n.delivery_tag, n.multiple, n.requeue));
                } else {
                    v.lock()
                        .reject(key, n.delivery_tag, n.multiple, n.requeue)?;
                }
            }
            basic::AMQPMethod::Reject(r) => {
                if let Some(txb) = self.chan_mut(ch)?.tx.as_mut() {
                    txb.push(TxOp::Reject(r.delivery_tag, false, r.requeue));
                } else {
                    v.lock().reject(key, r.delivery_tag, false, r.requeue)?;
                }
            }
            basic::AMQPMethod::Recover(r) => {
                recover_requeues(r.requeue)?;
                v.lock().recover(key)?;
                self.reply(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
            }
            basic::AMQPMethod::RecoverAsync(r) => {
                recover_requeues(r.requeue)?;
                v.lock().recover(key)?;
            }
            other => {
                return Err(AmqpError::command_invalid(format!(
                    "{other:?} is not a client method"
                )));
            }
        }
        Ok(())
    }

    /// basic.ack.
    pub(super) fn on_ack(
        &mut self,
        ch: u16,
        v: &Arc<Mutex<VHost>>,
        a: basic::Ack,
    ) -> AmqpResult<()> {
        if let Some(txb) = self.chan_mut(ch)?.tx.as_mut() {
            txb.push(TxOp::Ack(a.delivery_tag, a.multiple));
        } else {
            v.lock()
                .ack(chan_key(self.id, ch), a.delivery_tag, a.multiple)?;
        }
        Ok(())
    }

    pub(super) fn on_tx(
        &mut self,
        ch: u16,
        v: &Arc<Mutex<VHost>>,
        t: tx::AMQPMethod,
    ) -> AmqpResult<()> {
        let key = chan_key(self.id, ch);
        match t {
            tx::AMQPMethod::Select(_) => {
                let c = self.chan_mut(ch)?;
                if c.confirm {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if c.tx.is_none() {
                    c.tx = Some(Vec::new());
                }
                self.reply(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            tx::AMQPMethod::Commit(_) => {
                let ops = match self.chan_mut(ch)?.tx.as_mut() {
                    Some(ops) => std::mem::take(ops),
                    None => {
                        return Err(AmqpError::precondition_failed(
                            "channel is not transactional",
                        ))
                    }
                };
                // Every acknowledgement is checked before anything is
                // applied: a bad tag fails the commit as a whole.
                v.lock().check_settles(
                    key,
                    ops.iter().filter_map(|op| match *op {
                        TxOp::Ack(tag, multiple) | TxOp::Reject(tag, multiple, _) => {
                            Some((tag, multiple))
                        }
                        TxOp::Publish(..) => None,
                    }),
                )?;
                for op in ops {
                    match op {
                        TxOp::Publish(msg, mandatory, routed) => {
                            self.deliver_publish(ch, v, *msg, mandatory, Some(routed))?
                        }
                        TxOp::Ack(tag, multiple) => v.lock().ack(key, tag, multiple)?,
                        TxOp::Reject(tag, multiple, requeue) => {
                            v.lock().reject(key, tag, multiple, requeue)?
                        }
                    }
                }
                self.reply(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
            tx::AMQPMethod::Rollback(_) => {
                match self.chan_mut(ch)?.tx.as_mut() {
                    Some(ops) => ops.clear(),
                    None => {
                        return Err(AmqpError::precondition_failed(
                            "channel is not transactional",
                        ))
                    }
                }
                self.reply(
                    ch,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            other => {
                return Err(AmqpError::command_invalid(format!(
                    "{other:?} is not a client method"
                )))
            }
        }
        Ok(())
    }
}

/// basic.recover redelivers by requeueing, as RabbitMQ does; redelivery to
/// the original consumer (`requeue=false`) is not implemented there either,
/// and is refused with its words rather than done as a requeue.
fn recover_requeues(requeue: bool) -> AmqpResult<()> {
    if requeue {
        Ok(())
    } else {
        Err(AmqpError::not_implemented("requeue=false"))
    }
}
