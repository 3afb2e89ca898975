//! Message rates for the management API: a background task samples the
//! broker's counters once a second into a short window, and a rate is the
//! change across that window (at most [`WINDOW`] seconds) per second, as
//! RabbitMQ's `*_details.rate` fields are.

use crate::server::Broker;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Seconds of samples a rate spans.
pub const WINDOW: usize = 5;

/// Broker-wide counters sampled: indexes into [`Global`].
pub mod g {
    pub const PUBLISH: usize = 0;
    pub const DELIVER_GET: usize = 1;
    pub const ACK: usize = 2;
    pub const RETURN: usize = 3;
    pub const CONFIRM: usize = 4;
    pub const READY: usize = 5;
    pub const UNACKED: usize = 6;
    pub const MESSAGES: usize = 7;
}

/// Per-queue counters sampled: indexes into [`PerQueue`].
pub mod q {
    pub const PUBLISH: usize = 0;
    pub const DELIVER_GET: usize = 1;
    pub const ACK: usize = 2;
    pub const READY: usize = 3;
    pub const UNACKED: usize = 4;
    pub const MESSAGES: usize = 5;
}

type Global = [u64; 8];
type PerQueue = [u64; 6];

struct Sample {
    at: Instant,
    global: Global,
    queues: HashMap<(String, String), PerQueue>,
}

/// The sample window.
#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
}

fn per_s(new: u64, old: u64, dt: f64) -> f64 {
    if dt <= 0.0 {
        return 0.0;
    }
    let v = (new as f64 - old as f64) / dt;
    (v * 100.0).round() / 100.0
}

impl Rates {
    /// Take one sample of `b`'s counters.
    pub fn sample(&self, b: &Broker) {
        let mut global = [0u64; 8];
        let mut queues = HashMap::new();
        for (vname, v) in b.vhosts().iter() {
            let g = v.lock();
            global[g::PUBLISH] += g.stats.published;
            global[g::DELIVER_GET] += g.stats.delivered;
            global[g::ACK] += g.stats.acked;
            global[g::RETURN] += g.stats.returned;
            for qu in g.queues.values() {
                let (ready, unacked) = (qu.len as u64, qu.unacked as u64);
                global[g::READY] += ready;
                global[g::UNACKED] += unacked;
                queues.insert(
                    (vname.clone(), qu.name.to_string()),
                    [
                        qu.stat_published,
                        qu.stat_delivered,
                        qu.stat_acked,
                        ready,
                        unacked,
                        ready + unacked,
                    ],
                );
            }
        }
        global[g::MESSAGES] = global[g::READY] + global[g::UNACKED];
        global[g::CONFIRM] = b
            .metrics
            .confirmed
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut s = self.samples.lock();
        s.push_back(Sample {
            at: Instant::now(),
            global,
            queues,
        });
        while s.len() > WINDOW + 1 {
            s.pop_front();
        }
    }

    /// The broker-wide rate of counter `i` (see [`g`]).
    pub fn global(&self, i: usize) -> f64 {
        let s = self.samples.lock();
        match (s.front(), s.back()) {
            (Some(a), Some(b)) => per_s(b.global[i], a.global[i], (b.at - a.at).as_secs_f64()),
            _ => 0.0,
        }
    }

    /// The rate of counter `i` (see [`q`]) of one queue; 0 for a queue
    /// that is not in both ends of the window.
    pub fn queue(&self, vhost: &str, name: &str, i: usize) -> f64 {
        let s = self.samples.lock();
        let key = (vhost.to_string(), name.to_string());
        match (s.front(), s.back()) {
            (Some(a), Some(b)) => match (a.queues.get(&key), b.queues.get(&key)) {
                (Some(x), Some(y)) => per_s(y[i], x[i], (b.at - a.at).as_secs_f64()),
                _ => 0.0,
            },
            _ => 0.0,
        }
    }
}

/// Sample `b` every second until shutdown.
pub async fn run(
    rates: std::sync::Arc<Rates>,
    b: std::sync::Arc<Broker>,
    shutdown: shoal_core::Shutdown,
) {
    let mut iv = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = iv.tick() => rates.sample(&b),
            _ = shutdown.cancelled() => return,
        }
    }
}
