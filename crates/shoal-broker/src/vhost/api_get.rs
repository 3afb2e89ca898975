//! Getting messages for the management API (`POST
//! /api/queues/{vhost}/{name}/get`): no channel is involved, so each
//! message is settled at once by RabbitMQ's `ackmode`, and requeued ones go
//! back to their original positions as a nack would put them.

use super::*;

/// What the management API's get does with the messages it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Put them back (marked redelivered).
    AckRequeueTrue,
    /// Remove them.
    AckRequeueFalse,
    /// Put them back (marked redelivered), as a reject with requeue.
    RejectRequeueTrue,
    /// Reject without requeue: dead-lettered if the queue has a DLX, else dropped.
    RejectRequeueFalse,
}

impl AckMode {
    /// RabbitMQ's name (`ack_requeue_true`, ...).
    pub fn parse(s: &str) -> Option<AckMode> {
        Some(match s {
            "ack_requeue_true" => AckMode::AckRequeueTrue,
            "ack_requeue_false" => AckMode::AckRequeueFalse,
            "reject_requeue_true" => AckMode::RejectRequeueTrue,
            "reject_requeue_false" => AckMode::RejectRequeueFalse,
            _ => return None,
        })
    }

    fn requeue(self) -> bool {
        matches!(self, AckMode::AckRequeueTrue | AckMode::RejectRequeueTrue)
    }
}

/// One message got by the management API.
#[derive(Debug)]
pub struct Got {
    /// The message (body loaded).
    pub msg: MessageRef,
    /// Delivered before this get.
    pub redelivered: bool,
    /// Ready messages left in the queue after it was taken.
    pub left: u32,
}

impl VHost {
    /// Take up to `count` messages from `queue` and settle them by `mode`.
    /// Expired ones met on the way are dead-lettered as a basic.get would.
    /// Another connection's exclusive queue is locked (405), a missing one 404.
    pub fn get_for_api(
        &mut self,
        queue: &str,
        count: usize,
        mode: AckMode,
    ) -> AmqpResult<Vec<Got>> {
        // Connection id 0 is never a client's: exclusive queues are refused.
        self.queue_for(0, queue)?;
        let (got, taken): (Vec<Got>, Vec<QMsg>) = self
            .take_ready(queue, count)
            .into_iter()
            .map(|t| {
                let got = Got {
                    msg: t.loaded.msg,
                    redelivered: t.queued.redelivered,
                    left: t.left,
                };
                (got, t.queued)
            })
            .unzip();
        if let Some(q) = self.queues.get_mut(queue) {
            q.stat_delivered += got.len() as u64;
        }
        self.stats.delivered += got.len() as u64;
        if mode.requeue() {
            if let Some(q) = self.queues.get_mut(queue) {
                for mut m in taken {
                    m.redelivered = true;
                    q.requeue(m);
                }
            }
            self.dispatch(queue);
        } else if mode == AckMode::RejectRequeueFalse {
            self.dead_letter(queue, taken, "rejected", 0);
        } else {
            self.stats.acked += taken.len() as u64;
            if let Some(q) = self.queues.get_mut(queue) {
                q.stat_acked += taken.len() as u64;
            }
            for m in taken {
                if let Some(r) = m.sref {
                    self.store.ack(r);
                }
            }
        }
        Ok(got)
    }
}
