//! The primary's side of Node's cluster protocol: what it does with each
//! `NODE_CLUSTER` message a worker sends (the messages themselves, and the
//! sockets, are in [`crate::node`]).

use serde_json::{json, Value};

use super::Primary;
use crate::node::{Act, Answer};
use crate::spec::Ready;
use crate::Event;

impl Primary {
    /// A `NODE_CLUSTER` message from a Node worker (see [`crate::node`]).
    pub(super) fn on_node(&mut self, key: u64, message: Value) {
        let act = crate::node::parse(&message);
        if let Act::Accepted { seq, accepted } = act {
            // Counted even when the worker has just exited: the answer
            // says whether it took the connection.
            self.node.accepted(key, seq, accepted);
            return;
        }
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        w.node = true;
        let (id, pid, sender) = (w.id, w.pid, w.sender.clone());
        let answer = match act {
            Act::Online => {
                tracing::debug!(id, "Node worker online");
                None
            }
            Act::Query(q) => {
                let a = self.node.query(
                    key,
                    &q,
                    &w.listen_fds,
                    self.spec.node_schedule(),
                    self.spec.bind_host,
                );
                if let Some(errno) = a.msg["errno"].as_i64().filter(|e| *e != 0) {
                    let err = std::io::Error::from_raw_os_error(-errno as i32);
                    tracing::warn!(id, key = %q.key, "worker {id} cannot listen: {err}");
                }
                Some(a)
            }
            Act::Listening {
                address,
                key: server,
            } => {
                let address = self.node.address_of(&server).unwrap_or(address);
                self.emit(Event::Listening {
                    id,
                    pid,
                    addresses: vec![address],
                });
                if matches!(self.spec.ready, Ready::Delay(_) | Ready::Listening) {
                    self.on_ready(key);
                }
                None
            }
            Act::Close { key: server } => {
                self.node.close(key, &server);
                None
            }
            Act::ExitedAfterDisconnect { seq } => {
                w.leaving = true;
                Some(self.node.answer(json!({ "ack": seq })))
            }
            Act::Bad { reason, seq } => {
                tracing::warn!(id, message = %message, "worker {id} sent a malformed NODE_CLUSTER message: {reason}");
                seq.map(|seq| {
                    self.node
                        .answer(json!({ "ack": seq, "errno": -i64::from(libc::EINVAL) }))
                })
            }
            Act::Accepted { .. } => None,
            Act::Ignored(act) => {
                tracing::debug!(id, act, "NODE_CLUSTER message ignored");
                None
            }
        };
        if let (Some(a), Some(s)) = (answer, sender) {
            tokio::spawn(send_answer(id, key, a, s));
        }
    }
}

/// Send `a` to worker `id` (internal `key`); a round-robin server learns of
/// the worker only once its answer is written, so that no `newconn` can
/// reach the worker before it.
async fn send_answer(id: u32, key: u64, a: Answer, s: shoal_process::ipc::Sender) {
    let r = match a.handle {
        Some(h) => s.send_native(&a.msg, h).await,
        None => s.send(&a.msg, None).await,
    };
    match (r, a.then_add) {
        (Err(e), _) => tracing::debug!(id, error = %e, "could not answer a Node worker"),
        (Ok(()), Some(rr)) => {
            let _ = rr.send(crate::node_rr::Msg::Add {
                worker: key,
                id,
                sender: s,
            });
        }
        (Ok(()), None) => {}
    }
}
