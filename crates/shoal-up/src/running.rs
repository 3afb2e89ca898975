//! The running parts of a topology: each part's handle and its stop, and the
//! registry they live in while `shoal up` runs.
//!
//! The registry keeps the parts in dependency order (broker, stats, the
//! clusters, the proxy) whether they were there at the start or added by a
//! reload, so the stop is always the reverse of that order. A watcher per
//! part reports a part that ends on its own (not stopped by us), which stops
//! the whole topology.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_core::Shutdown;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::start::View;

/// The outcome of a part's task, observable by several waiters.
#[derive(Clone)]
pub struct Done(watch::Receiver<Option<Result<(), String>>>);

impl Done {
    /// Watch `task` end.
    pub fn new(task: JoinHandle<Result<(), String>>) -> Done {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let r = task.await.unwrap_or_else(|e| Err(e.to_string()));
            let _ = tx.send(Some(r));
        });
        Done(rx)
    }

    /// Whether it has ended.
    pub fn is_finished(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Wait until it has ended.
    pub async fn wait(&mut self) -> Result<(), String> {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Ok(())),
            Err(_) => Err("its task was dropped".to_string()),
        }
    }
}

/// A started part.
pub struct Part {
    /// `broker`, `stats`, `cluster.NAME`, `proxy`.
    pub label: String,
    /// What is known of it.
    pub view: View,
    pub(crate) shutdown: Shutdown,
    pub(crate) done: Done,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
    pub(crate) grace: Duration,
}

impl Part {
    /// Stop it and wait (at most its grace) until it has.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        match tokio::time::timeout(self.grace, self.done.wait()).await {
            Ok(Err(e)) => tracing::warn!(part = %self.label, "stopped with an error: {e}"),
            Ok(Ok(())) => tracing::info!(part = %self.label, "stopped"),
            Err(_) => tracing::warn!(part = %self.label, "did not stop within {:?}", self.grace),
        }
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Stop `parts` in reverse order of their start.
pub async fn stop_all(parts: Vec<Part>) {
    for p in parts.into_iter().rev() {
        p.stop().await;
    }
}

/// Where a part goes in the start order.
fn rank(label: &str) -> u8 {
    match label {
        "broker" => 0,
        "stats" => 1,
        "proxy" => 3,
        _ => 2,
    }
}

/// The parts running now, in start order.
pub struct Parts {
    list: Mutex<Vec<Part>>,
    ended: mpsc::UnboundedSender<(String, String)>,
}

/// A part that ended on its own: its label and the cause.
pub type Ended = mpsc::UnboundedReceiver<(String, String)>;

impl Parts {
    /// An empty registry, and where parts that end on their own are told.
    pub fn new() -> (Arc<Parts>, Ended) {
        let (tx, rx) = mpsc::unbounded_channel();
        let parts = Parts {
            list: Mutex::new(Vec::new()),
            ended: tx,
        };
        (Arc::new(parts), rx)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Part>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a started part in its place in the order, and watch it.
    pub fn add(&self, part: Part) {
        let mut done = part.done.clone();
        let sd = part.shutdown.clone();
        let label = part.label.clone();
        let tx = self.ended.clone();
        tokio::spawn(async move {
            let r = done.wait().await;
            if !sd.is_triggered() {
                let cause = r.err().unwrap_or_else(|| "it ended".to_string());
                let _ = tx.send((label, cause));
            }
        });
        let mut list = self.lock();
        let r = rank(&part.label);
        let at = list.iter().take_while(|p| rank(&p.label) <= r).count();
        list.insert(at, part);
    }

    /// Take a part out (to stop it).
    pub fn take(&self, label: &str) -> Option<Part> {
        let mut list = self.lock();
        let i = list.iter().position(|p| p.label == label)?;
        Some(list.remove(i))
    }

    /// Take every part out, in start order.
    pub fn take_all(&self) -> Vec<Part> {
        std::mem::take(&mut *self.lock())
    }

    /// The running parts' labels and views, in start order.
    pub fn views(&self) -> Vec<(String, View)> {
        self.lock()
            .iter()
            .map(|p| (p.label.clone(), p.view.clone()))
            .collect()
    }
}
