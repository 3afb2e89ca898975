//! Node's round-robin scheduling (`--schedule rr`, Node's `SCHED_RR`, its
//! default on Linux): the primary accepts every connection itself and hands
//! it to the next free worker in turn, as Node's `RoundRobinHandle` does.
//!
//! The worker's `queryServer` is answered without a handle but with the
//! address (`sockname`), so its server is a faux one that only waits. Each
//! accepted connection goes to a worker as `{cmd: "NODE_CLUSTER", act:
//! "newconn", key, seq}` with the socket attached (`net.Native`); the
//! worker answers `{ack: seq, accepted}`: `false` when its server has
//! closed meanwhile, and the connection then goes to another worker.
//!
//! As in Node, a worker holds at most one connection not yet answered for:
//! it is free again once it answered, so a worker that never answers keeps
//! one connection and stalls no one else. Connections accepted while no
//! worker is free wait in a queue of at most [`MAX_QUEUED`]; when it is
//! full the primary stops accepting and the kernel's backlog holds the
//! rest.
//!
//! Better than Node: a connection is only let go when the worker said it
//! accepted it. When a worker's channel ends (it exited, or disconnected)
//! the connections it never answered for were never touched by it, and go
//! to the other workers instead of being lost. Unix sockets, UDP (as in
//! Node) and `listen({fd})` stay shared handles.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shoal_process::{ipc::Sender, Handle};
use tokio::sync::mpsc;

/// Most connections accepted and waiting for a free worker, per server.
pub const MAX_QUEUED: usize = 1024;

/// What the primary tells a round-robin server.
pub(crate) enum Msg {
    /// The worker's `queryServer` answer is written: hand it connections.
    Add {
        worker: u64,
        id: u32,
        sender: Sender,
    },
    /// The worker answered `newconn` number `seq`.
    Ack {
        worker: u64,
        seq: u64,
        accepted: bool,
    },
    /// The worker closed its server: nothing new for it; its answers for
    /// connections in flight still count.
    Close { worker: u64 },
    /// The worker's channel has ended (everything it sent was read): the
    /// connections it never answered for go to others.
    Gone { worker: u64 },
    /// Sending `newconn` `seq` failed.
    SendFailed { worker: u64, seq: u64 },
}

/// A round-robin server's accepting task, started on `listener`; it ends
/// when every sender of the returned channel is dropped, closing the
/// socket and the connections still queued.
pub(crate) fn start(
    key: String,
    listener: std::net::TcpListener,
    seq: Arc<AtomicU64>,
) -> std::io::Result<mpsc::UnboundedSender<Msg>> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let rr = RoundRobin {
        key,
        seq,
        queue: VecDeque::new(),
        workers: BTreeMap::new(),
        free: VecDeque::new(),
        in_flight: HashMap::new(),
        me: tx.downgrade(),
    };
    tokio::spawn(rr.run(listener, rx));
    Ok(tx)
}

struct RoundRobin {
    key: String,
    seq: Arc<AtomicU64>,
    /// Accepted, waiting for a free worker.
    queue: VecDeque<TcpStream>,
    /// The workers serving this server: internal key → (id, channel).
    workers: BTreeMap<u64, (u32, Sender)>,
    /// Workers with no connection in flight, in the order they became free.
    free: VecDeque<u64>,
    /// `newconn` seq → (worker, our copy of the connection).
    in_flight: HashMap<u64, (u64, TcpStream)>,
    me: mpsc::WeakUnboundedSender<Msg>,
}

impl RoundRobin {
    async fn run(
        mut self,
        listener: tokio::net::TcpListener,
        mut rx: mpsc::UnboundedReceiver<Msg>,
    ) {
        loop {
            tokio::select! {
                r = listener.accept(), if self.queue.len() < MAX_QUEUED => match r {
                    Ok((s, _)) => match s.into_std() {
                        Ok(s) => self.queue.push_back(s),
                        Err(e) => tracing::debug!(error = %e, "accepted connection unusable"),
                    },
                    Err(e) => {
                        // Out of descriptors or memory: wait, do not spin.
                        tracing::warn!(key = %self.key, error = %e, "round-robin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                m = rx.recv() => match m {
                    Some(m) => self.on_msg(m),
                    None => break,
                },
            }
            self.dispatch();
        }
    }

    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Add { worker, id, sender } => {
                if sender.connected() && self.workers.insert(worker, (id, sender)).is_none() {
                    self.free.push_back(worker);
                }
            }
            Msg::Ack {
                worker,
                seq,
                accepted,
            } => {
                match self.in_flight.remove(&seq) {
                    Some((w, conn)) if w == worker => {
                        if !accepted {
                            // Its server is closing: another worker takes it.
                            self.queue.push_front(conn);
                        }
                    }
                    Some(other) => {
                        tracing::warn!(
                            worker,
                            seq,
                            "a worker answered for another worker's connection; ignored"
                        );
                        self.in_flight.insert(seq, other);
                        return;
                    }
                    None => return,
                }
                if self.workers.contains_key(&worker) && !self.free.contains(&worker) {
                    self.free.push_back(worker);
                }
            }
            Msg::Close { worker } => self.drop_worker(worker),
            Msg::Gone { worker } => {
                self.drop_worker(worker);
                let mut seqs: Vec<u64> = self
                    .in_flight
                    .iter()
                    .filter(|(_, (w, _))| *w == worker)
                    .map(|(s, _)| *s)
                    .collect();
                seqs.sort_unstable_by(|a, b| b.cmp(a));
                for s in seqs {
                    if let Some((_, conn)) = self.in_flight.remove(&s) {
                        self.queue.push_front(conn);
                    }
                }
            }
            Msg::SendFailed { worker, seq } => {
                self.drop_worker(worker);
                if let Some((_, conn)) = self.in_flight.remove(&seq) {
                    self.queue.push_front(conn);
                }
            }
        }
    }

    fn drop_worker(&mut self, worker: u64) {
        self.workers.remove(&worker);
        self.free.retain(|w| *w != worker);
    }

    /// Hand queued connections to free workers, one each.
    fn dispatch(&mut self) {
        while !self.queue.is_empty() {
            let Some(worker) = self.free.pop_front() else {
                return;
            };
            let Some((id, sender)) = self.workers.get(&worker) else {
                continue;
            };
            let (id, sender) = (*id, sender.clone());
            let Some(conn) = self.queue.pop_front() else {
                return;
            };
            // The worker gets a copy; ours is kept until it says it took it.
            let copy = match conn.try_clone() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand a connection over; closing it");
                    self.free.push_front(worker);
                    continue;
                }
            };
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            self.in_flight.insert(seq, (worker, conn));
            let msg = json!({"cmd": "NODE_CLUSTER", "act": "newconn", "key": self.key, "seq": seq});
            let me = self.me.clone();
            tokio::spawn(async move {
                if let Err(e) = sender.send_native(&msg, Handle::TcpStream(copy)).await {
                    tracing::debug!(id, error = %e, "newconn not sent");
                    if let Some(me) = me.upgrade() {
                        let _ = me.send(Msg::SendFailed { worker, seq });
                    }
                }
            });
        }
    }
}
