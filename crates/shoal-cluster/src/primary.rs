//! The primary: one task that owns the workers and applies the policy —
//! start N, replace the ones that die (with exponential backoff and a limit),
//! rolling reload one worker at a time, scale, graceful stop — driven by the
//! workers' reports, timers, signals and commands from the [`Cluster`]
//! handle (which the control socket and library users share; see [`handle`]).

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::time::{Duration, Instant};

use shoal_core::Shutdown;
use shoal_process::{ExitStatus, Killer};
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;

use crate::error::{ClusterError, Result};
use crate::event::Event;
use crate::listen::Listeners;
use crate::procstat;
use crate::spec::{ClusterSpec, Ready};
use crate::worker::{self, Report};

mod auto;
mod handle;
mod node_acts;

pub(crate) use handle::Cmd;
use handle::Reply;
pub use handle::{Cluster, PrimaryInfo, Running, Status, Worker, WorkerInfo};

#[derive(Default)]
struct Slot {
    env: Vec<(OsString, OsString)>,
    restarts: u32,
    failures: u32,
    restart_pending: bool,
    /// How the last worker in this slot ended.
    last_exit: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WState {
    Starting,
    Online,
    Stopping,
}

/// How long a worker asked to go gets, after the IPC disconnect, to exit on
/// its own (as a Node worker with a 'disconnect' handler does) before it is
/// sent SIGTERM; at most half the grace period, which bounds the whole stop.
const DISCONNECT_BEFORE_TERM: Duration = Duration::from_millis(250);

struct Live {
    id: u32,
    pid: u32,
    killer: Killer,
    sender: Option<shoal_process::ipc::Sender>,
    notify_task: Option<AbortHandle>,
    /// Copies of the listeners at its fds 3.. (see `worker::Launched`).
    listen_fds: Vec<socket2::Socket>,
    state: WState,
    started: Instant,
    asked_to_go: bool,
    disconnected: bool,
    /// It has spoken Node's cluster protocol (a Node worker sends `online`
    /// as it starts; one run as `node -e` never does).
    node: bool,
    /// It said it was leaving (Node's `exitedAfterDisconnect`); it is
    /// replaced all the same, and its exit says so.
    leaving: bool,
    /// Asked to go by `restart`: started again at once when it exits.
    restart_after: bool,
    /// Why the primary replaced it, for its slot's `last_exit`.
    replaced_for: Option<&'static str>,
}

struct Reload {
    queue: VecDeque<u64>,
    pending: Option<(u64, u64)>,
    waiters: Vec<Reply<usize>>,
    replaced: usize,
}

struct Primary {
    spec: ClusterSpec,
    listeners: Listeners,
    events: broadcast::Sender<Event>,
    cmd_tx: mpsc::Sender<Cmd>,
    rep_tx: mpsc::Sender<Report>,
    slots: BTreeMap<u32, Slot>,
    workers: BTreeMap<u64, Live>,
    next_key: u64,
    target: usize,
    reload: Option<Reload>,
    stopping: bool,
    started: Instant,
    gave_up: Vec<String>,
    control: Option<(Shutdown, std::path::PathBuf)>,
    guard: Option<crate::guard::Guard>,
    /// Sockets bound for Node workers (see [`crate::node`]).
    node: crate::node::Servers,
    /// The `--log-dir` files.
    logs: Option<crate::logfile::Logs>,
    /// The `--watch` task, ended with the primary.
    watch: Option<AbortHandle>,
    /// The `--restart-cron` match the next reload is for.
    cron_due: Option<chrono::DateTime<chrono::Local>>,
    /// Workers found over `--max-memory` and replaced, since start.
    memory_replacements: u64,
}

impl Primary {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut reports: mpsc::Receiver<Report>,
        shutdown: Shutdown,
    ) -> Result<()> {
        let mut begun = false;
        let r = loop {
            tokio::select! {
                _ = shutdown.cancelled(), if !self.stopping => self.begin_stop(),
                Some(c) = cmds.recv() => {
                    if matches!(c, Cmd::Begin) {
                        if !begun {
                            begun = true;
                            self.setup();
                        }
                    } else {
                        self.on_cmd(c);
                    }
                }
                Some(r) = reports.recv() => self.on_report(r),
            }
            if self.stopping && self.workers.is_empty() {
                break Ok(());
            }
            if begun
                && !self.stopping
                && self.slots.is_empty()
                && self.workers.is_empty()
                && !self.gave_up.is_empty()
            {
                break Err(ClusterError::AllGaveUp(self.gave_up.join("; ")));
            }
            if begun && !self.spec.restart && !self.stopping && self.workers.is_empty() {
                tracing::info!("every worker has exited and --no-restart is set: stopping");
                break Ok(());
            }
        };
        if let Some(w) = self.watch.take() {
            w.abort();
        }
        if let Some((sd, path)) = self.control.take() {
            sd.trigger();
            let _ = std::fs::remove_file(path);
        }
        r
    }

    fn emit(&self, e: Event) {
        match &e {
            Event::Exit {
                exited_after_disconnect: false,
                ..
            }
            | Event::GiveUp { .. }
            | Event::Error { .. } => {
                tracing::warn!("{}", e.describe())
            }
            Event::Message { .. } => tracing::debug!("{}", e.describe()),
            _ => tracing::info!("{}", e.describe()),
        }
        let _ = self.events.send(e);
    }

    fn after(&self, d: Duration, c: Cmd) {
        let tx = self.cmd_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            let _ = tx.send(c).await;
        });
    }

    /// The listening addresses as text, for events and status: the
    /// `--listen` ones, then those Node workers asked for.
    fn listen_strings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .listeners
            .addrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        out.extend(self.node.addresses());
        out
    }

    fn setup(&mut self) {
        self.setup_event();
        self.fill_slots();
        if self.spec.max_memory.is_some() {
            self.after(MEMORY_CHECK_EVERY, Cmd::MemoryCheck);
        }
        if let Some(every) = self.spec.restart_every {
            self.after(every, Cmd::PeriodicReload);
        }
        self.schedule_cron();
    }

    fn setup_event(&self) {
        let mut exec = vec![self.spec.exec.to_string_lossy().into_owned()];
        exec.extend(
            self.spec
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        self.emit(Event::Setup {
            exec,
            workers: self.target,
            listen: self.listen_strings(),
        });
    }

    /// Add slots (and start workers) up to the target; remove the highest
    /// ones above it.
    fn fill_slots(&mut self) {
        while self.slots.len() < self.target {
            let id = (1..).find(|i| !self.slots.contains_key(i)).unwrap_or(1);
            self.slots.insert(id, Slot::default());
            self.start_in_slot(id);
        }
        while self.slots.len() > self.target {
            let Some((&id, _)) = self.slots.iter().next_back() else {
                break;
            };
            self.slots.remove(&id);
            let keys: Vec<u64> = self
                .workers
                .iter()
                .filter(|(_, w)| w.id == id)
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                self.stop_worker(k);
            }
        }
    }

    /// Start a worker for slot `id`; returns its key.
    fn start_in_slot(&mut self, id: u32) -> Option<u64> {
        let key = self.next_key;
        self.next_key += 1;
        let env = self
            .slots
            .get(&id)
            .map(|s| s.env.clone())
            .unwrap_or_default();
        match worker::launch(
            &self.spec,
            &self.listeners,
            id,
            key,
            &env,
            self.logs.as_ref(),
            self.rep_tx.clone(),
        ) {
            Ok(l) => {
                self.workers.insert(
                    key,
                    Live {
                        id,
                        pid: l.pid,
                        killer: l.killer,
                        sender: l.sender,
                        notify_task: l.notify_task,
                        listen_fds: l.listen_fds,
                        state: WState::Starting,
                        started: Instant::now(),
                        asked_to_go: false,
                        disconnected: false,
                        node: false,
                        leaving: false,
                        restart_after: false,
                        replaced_for: None,
                    },
                );
                if let Some(g) = self.guard.as_mut() {
                    g.add(l.pid);
                }
                self.emit(Event::Fork { id, pid: l.pid });
                if let Ready::Delay(d) = self.spec.ready {
                    self.after(d, Cmd::DelayReady(key));
                }
                self.after(self.spec.listen_timeout, Cmd::ReadyCheck(key));
                Some(key)
            }
            Err(e) => {
                self.emit(Event::Error {
                    id,
                    message: format!("cannot start: {e}"),
                });
                self.schedule_restart(id, &format!("cannot start: {e}"));
                None
            }
        }
    }

    fn on_cmd(&mut self, c: Cmd) {
        match c {
            Cmd::Begin => {}
            Cmd::Setup(exec, args, silent) => {
                self.spec.exec = exec;
                self.spec.args = args;
                self.spec.silent = silent;
                self.setup_event();
            }
            Cmd::SetEnv(env) => self.spec.env = env,
            Cmd::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Cmd::Reload(tx) => self.start_reload(tx),
            Cmd::Scale(n, tx) => {
                if self.stopping {
                    let _ = tx.send(Err("the cluster is stopping".into()));
                } else if n == 0 || n > 1024 {
                    let _ = tx.send(Err(format!("cannot scale to {n}: use 1..1024")));
                } else {
                    self.scale_to(n);
                    let _ = tx.send(Ok(n));
                }
            }
            Cmd::ScaleBy(d, tx) => {
                let r = if self.stopping {
                    Err("the cluster is stopping".into())
                } else {
                    let n = self.target as i64 + d;
                    match (tx.is_some(), n) {
                        // Asked for: out of range is refused, as scale N is.
                        (true, n) if !(1..=1024).contains(&n) => Err(format!(
                            "cannot scale to {n}: use 1..1024 (at least 1 worker)"
                        )),
                        // A signal: clamped.
                        (_, n) => {
                            let n = n.clamp(1, 1024) as usize;
                            self.scale_to(n);
                            Ok(n)
                        }
                    }
                };
                if let Some(tx) = tx {
                    let _ = tx.send(r);
                }
            }
            Cmd::Fork(env, tx) => {
                if self.stopping {
                    let _ = tx.send(Err("the cluster is stopping".into()));
                    return;
                }
                let id = (1..).find(|i| !self.slots.contains_key(i)).unwrap_or(1);
                self.slots.insert(
                    id,
                    Slot {
                        env,
                        ..Slot::default()
                    },
                );
                self.target = self.slots.len();
                let r = match self.start_in_slot(id) {
                    Some(k) => Ok(self.info(k)),
                    None => Err(format!("worker {id} could not be started")),
                };
                let _ = tx.send(r.and_then(|i| i.ok_or_else(|| "worker vanished".into())));
            }
            Cmd::SendAll(msg, tx) => {
                let mut n = 0;
                for w in self.workers.values() {
                    if let Some(s) = w.sender.as_ref().filter(|s| s.connected()) {
                        let s = s.clone();
                        let m = msg.clone();
                        tokio::spawn(async move { s.send(&m, None).await });
                        n += 1;
                    }
                }
                let _ = tx.send(n);
            }
            Cmd::SendTo(id, msg, tx) => {
                let r = match self
                    .live_worker(id)
                    .and_then(|k| self.workers[&k].sender.clone())
                {
                    Some(s) => {
                        tokio::spawn(async move { s.send(&msg, None).await });
                        Ok(())
                    }
                    None => Err(format!("no worker {id} with an open channel")),
                };
                let _ = tx.send(r);
            }
            Cmd::Kill(id, sig, tx) => {
                let r = match self.live_worker(id) {
                    Some(k) => {
                        self.detach_slot(k);
                        let w = &self.workers[&k];
                        w.killer.kill(sig).map(|_| ()).map_err(|e| e.to_string())
                    }
                    None => Err(format!("no worker {id}")),
                };
                let _ = tx.send(r);
            }
            Cmd::Disconnect(id, tx) => {
                let r = match self.live_worker(id) {
                    Some(k) => {
                        self.detach_slot(k);
                        self.stop_worker(k);
                        Ok(())
                    }
                    None => Err(format!("no worker {id}")),
                };
                let _ = tx.send(r);
            }
            Cmd::Stop => self.begin_stop(),
            Cmd::Restart(id) => {
                if let Some(s) = self.slots.get_mut(&id) {
                    s.restart_pending = false;
                    if !self.stopping && !self.workers.values().any(|w| w.id == id) {
                        self.slots.entry(id).and_modify(|s| s.restarts += 1);
                        self.start_in_slot(id);
                    }
                }
            }
            Cmd::DelayReady(key) => self.on_ready(key),
            Cmd::ReadyCheck(key) => {
                // A reload has its own handling (ReloadTimeout); at start or
                // after a restart a worker that is not ready in time is
                // named and killed, and restarted with backoff.
                let in_reload = self
                    .reload
                    .as_ref()
                    .and_then(|r| r.pending)
                    .is_some_and(|(_, new)| new == key);
                if let Some(w) = self
                    .workers
                    .get_mut(&key)
                    .filter(|w| w.state == WState::Starting && !in_reload)
                {
                    w.replaced_for = Some("not ready within --listen-timeout");
                    let (id, pid) = (w.id, w.pid);
                    self.emit(Event::Error {
                        id,
                        message: format!(
                            "worker {id} (pid {pid}) is not ready after {:?} (--ready {}, --listen-timeout): killing it",
                            self.spec.listen_timeout,
                            ready_name(self.spec.ready)
                        ),
                    });
                    if let Some(w) = self.workers.get(&key) {
                        kill_group(w, libc::SIGKILL);
                    }
                }
            }
            Cmd::RestartAll(tx) => {
                if self.stopping {
                    let _ = tx.send(Err("the cluster is stopping".into()));
                    return;
                }
                let keys: Vec<u64> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.state != WState::Stopping)
                    .map(|(k, _)| *k)
                    .collect();
                for k in &keys {
                    if let Some(w) = self.workers.get_mut(k) {
                        w.restart_after = true;
                        w.replaced_for = Some("restarted by ctl restart");
                    }
                    self.stop_worker(*k);
                }
                let _ = tx.send(Ok(keys.len()));
            }
            Cmd::SignalAll(sig, tx) => {
                let n = self
                    .workers
                    .values()
                    .filter(|w| w.state != WState::Stopping)
                    .filter(|w| w.killer.kill(sig).is_ok())
                    .count();
                let _ = tx.send(Ok(n));
            }
            Cmd::MemoryCheck => self.check_memory(),
            Cmd::Auto(c) => self.on_auto(c),
            Cmd::PeriodicReload => {
                if let Some(every) = self.spec.restart_every {
                    if !self.stopping {
                        self.after(every, Cmd::PeriodicReload);
                        tracing::info!(every = ?every, "--restart-every: rolling reload");
                        self.start_reload(None);
                    }
                }
            }
            Cmd::Terminate(key) => {
                if let Some(w) = self.workers.get(&key) {
                    let _ = w.killer.kill(libc::SIGTERM);
                }
            }
            Cmd::ForceKill(key) => {
                if let Some(w) = self.workers.get(&key) {
                    tracing::warn!(
                        id = w.id,
                        pid = w.pid,
                        "worker still running after the grace period: SIGKILL"
                    );
                    kill_group(w, libc::SIGKILL);
                }
            }
            Cmd::ReloadTimeout(key) => {
                if self
                    .reload
                    .as_ref()
                    .and_then(|r| r.pending)
                    .is_some_and(|(_, new)| new == key)
                {
                    self.stop_worker(key);
                    self.fail_reload(format!(
                        "the new worker was not ready within {:?} (--listen-timeout)",
                        self.spec.listen_timeout
                    ));
                }
            }
            Cmd::StopDeadline => {
                if self.stopping && !self.workers.is_empty() {
                    tracing::error!(
                        left = self.workers.len(),
                        "workers did not exit after SIGKILL; leaving"
                    );
                    self.workers.clear();
                }
            }
        }
    }

    /// A worker the user took over (kill/disconnect by id): its slot is
    /// removed so that it is not replaced, and the target shrinks.
    fn detach_slot(&mut self, key: u64) {
        if let Some(w) = self.workers.get_mut(&key) {
            w.asked_to_go = true;
            let id = w.id;
            if self.slots.remove(&id).is_some() {
                self.target = self.slots.len();
            }
        }
    }

    fn live_worker(&self, id: u32) -> Option<u64> {
        self.workers
            .iter()
            .filter(|(_, w)| w.id == id && w.state != WState::Stopping)
            .map(|(k, _)| *k)
            .next_back()
    }

    fn scale_to(&mut self, n: usize) {
        self.target = n;
        self.emit(Event::Scale { workers: n });
        self.fill_slots();
    }

    fn on_report(&mut self, r: Report) {
        match r {
            Report::Ready(key) => self.on_ready(key),
            Report::Message(key, message) => {
                if let Some(w) = self.workers.get(&key) {
                    self.emit(Event::Message {
                        id: w.id,
                        pid: w.pid,
                        message,
                    });
                }
            }
            Report::IpcError(key, message) => {
                if let Some(w) = self.workers.get(&key) {
                    self.emit(Event::Error { id: w.id, message });
                }
            }
            Report::Disconnected(key) => {
                // Everything the worker sent has been read: round-robin
                // connections it never answered for go to others.
                self.node.channel_closed(key);
                if let Some(w) = self.workers.get_mut(&key) {
                    if !w.disconnected {
                        w.disconnected = true;
                        let (id, pid) = (w.id, w.pid);
                        self.emit(Event::Disconnect { id, pid });
                    }
                }
            }
            Report::Node(key, message) => self.on_node(key, message),
            Report::Exited(key, status) => self.on_exit(key, status),
        }
    }

    fn on_ready(&mut self, key: u64) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        if w.state != WState::Starting {
            return;
        }
        w.state = WState::Online;
        let (id, pid) = (w.id, w.pid);
        self.emit(Event::Online { id, pid });
        if !self.listeners.is_empty() {
            self.emit(Event::Listening {
                id,
                pid,
                addresses: self
                    .listeners
                    .addrs()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            });
        }
        // A rolling reload waits for exactly this.
        if let Some(r) = self.reload.as_mut() {
            if let Some((old, new)) = r.pending {
                if new == key {
                    r.pending = None;
                    r.replaced += 1;
                    self.stop_worker(old);
                    self.reload_step();
                }
            }
        }
    }

    fn on_exit(&mut self, key: u64, status: ExitStatus) {
        let Some(w) = self.workers.remove(&key) else {
            return;
        };
        if let Some(t) = &w.notify_task {
            t.abort();
        }
        // Whatever the worker left in its process group goes with it.
        // SAFETY: kill(2) on the worker's own group id; ESRCH if it is empty.
        unsafe { libc::kill(-(w.pid as libc::pid_t), libc::SIGKILL) };
        if let Some(g) = self.guard.as_mut() {
            g.remove(w.pid);
        }
        self.node.forget(key);
        if !w.disconnected {
            self.emit(Event::Disconnect {
                id: w.id,
                pid: w.pid,
            });
        }
        self.emit(Event::Exit {
            id: w.id,
            pid: w.pid,
            code: status.code,
            signal: status.signal_name().map(String::from),
            exited_after_disconnect: w.asked_to_go || w.leaving,
        });
        let uptime = w.started.elapsed();
        let ended = match w.replaced_for {
            Some(why) => format!("{status}: {why}"),
            None => format!("{status} after {:.1}s", uptime.as_secs_f64()),
        };
        if let Some(slot) = self.slots.get_mut(&w.id) {
            slot.last_exit = Some(ended);
        }
        if w.restart_after && !self.stopping && self.slots.contains_key(&w.id) {
            if !self.workers.values().any(|o| o.id == w.id) {
                self.slots.entry(w.id).and_modify(|s| s.restarts += 1);
                self.start_in_slot(w.id);
            }
            return;
        }
        // A reload whose new worker died before being ready fails.
        if let Some((_, new)) = self.reload.as_ref().and_then(|r| r.pending) {
            if new == key {
                self.fail_reload(format!(
                    "the new worker exited before it was ready ({status})"
                ));
                return;
            }
        }
        if w.asked_to_go || self.stopping || !self.spec.restart {
            return;
        }
        // Another worker already serves this slot (a reload replaced it).
        if self.workers.values().any(|o| o.id == w.id) {
            return;
        }
        if let Some(slot) = self.slots.get_mut(&w.id) {
            if w.state == WState::Online && uptime >= self.spec.min_uptime {
                slot.failures = 0;
            }
            let reason = format!("{status} after {:.1}s", uptime.as_secs_f64());
            self.schedule_restart(w.id, &reason);
        }
    }

    fn schedule_restart(&mut self, id: u32, reason: &str) {
        if self.stopping {
            return;
        }
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.restart_pending {
            return;
        }
        slot.failures += 1;
        let failures = slot.failures;
        if failures > self.spec.max_restarts {
            self.slots.remove(&id);
            let why = format!(
                "failed {} times in a row without staying up {:?} (last: {reason})",
                failures, self.spec.min_uptime
            );
            self.gave_up.push(format!("worker {id} {why}"));
            self.emit(Event::GiveUp { id, reason: why });
            return;
        }
        slot.restart_pending = true;
        let delay = if failures <= 1 {
            Duration::ZERO
        } else {
            self.spec.backoff(failures - 1)
        };
        self.emit(Event::Restart {
            id,
            delay_ms: delay.as_millis() as u64,
            failures,
        });
        self.after(delay, Cmd::Restart(id));
    }

    /// IPC disconnect; SIGTERM a moment later (at once without a connected
    /// channel) if the worker has not exited on its own; SIGKILL after the
    /// grace period, counted from the disconnect.
    fn stop_worker(&mut self, key: u64) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        if w.state == WState::Stopping {
            return;
        }
        w.state = WState::Stopping;
        w.asked_to_go = true;
        let disconnecting = match (&w.sender, w.disconnected) {
            (Some(s), false) if w.node => {
                // Node's way: the worker closes its servers, lets their
                // connections finish, then disconnects and exits. SIGTERM
                // only at half the grace period.
                let s = s.clone();
                let msg = self
                    .node
                    .message(serde_json::json!({ "act": "disconnect" }));
                let id = w.id;
                tokio::spawn(async move {
                    let r = s.send(&msg, None).await;
                    tracing::debug!(id, result = ?r, "sent Node's disconnect");
                });
                self.after(self.spec.grace / 2, Cmd::Terminate(key));
                self.after(self.spec.grace, Cmd::ForceKill(key));
                return;
            }
            (Some(s), false) => {
                let s = s.clone();
                tokio::spawn(async move { s.disconnect().await });
                true
            }
            _ => false,
        };
        if disconnecting {
            self.after(
                DISCONNECT_BEFORE_TERM.min(self.spec.grace / 2),
                Cmd::Terminate(key),
            );
        } else {
            let _ = w.killer.kill(libc::SIGTERM);
        }
        self.after(self.spec.grace, Cmd::ForceKill(key));
    }

    fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        tracing::info!(workers = self.workers.len(), grace = ?self.spec.grace, "stopping all workers");
        if self.reload.is_some() {
            self.fail_reload("the cluster is stopping".into());
        }
        let keys: Vec<u64> = self.workers.keys().copied().collect();
        for k in keys {
            self.stop_worker(k);
        }
        self.after(self.spec.grace + Duration::from_secs(5), Cmd::StopDeadline);
    }

    /// Replace workers over `--max-memory`, one at a time, as a rolling
    /// reload replaces them (the new one ready before the old one goes).
    fn check_memory(&mut self) {
        let Some(limit) = self.spec.max_memory else {
            return;
        };
        if !self.stopping {
            self.after(MEMORY_CHECK_EVERY, Cmd::MemoryCheck);
        }
        if self.reload.is_some() || self.stopping {
            return;
        }
        let over = self.workers.iter().find_map(|(k, w)| {
            let rss = procstat::usage(w.pid).unwrap_or_default().rss_bytes;
            (w.state == WState::Online && rss > limit).then_some((*k, w.id, w.pid, rss))
        });
        if let Some((key, id, pid, rss)) = over {
            self.emit(Event::Error {
                id,
                message: format!(
                    "worker {id} (pid {pid}) uses {} MiB, over --max-memory {} MiB: replacing it",
                    rss >> 20,
                    limit >> 20
                ),
            });
            if let Some(w) = self.workers.get_mut(&key) {
                w.replaced_for = Some("over --max-memory");
            }
            self.memory_replacements += 1;
            self.emit(Event::Reload {
                phase: "started".into(),
                detail: format!("replacing worker {id}: over --max-memory"),
            });
            self.reload = Some(Reload {
                queue: VecDeque::from([key]),
                pending: None,
                waiters: Vec::new(),
                replaced: 0,
            });
            self.reload_step();
        }
    }

    fn start_reload(&mut self, tx: Option<Reply<usize>>) {
        if self.stopping {
            if let Some(tx) = tx {
                let _ = tx.send(Err("the cluster is stopping".into()));
            }
            return;
        }
        if let Some(r) = self.reload.as_mut() {
            // One reload at a time; a second request waits for the same one.
            r.waiters.extend(tx);
            return;
        }
        let mut old: Vec<(u32, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state != WState::Stopping)
            .map(|(k, w)| (w.id, *k))
            .collect();
        old.sort();
        self.emit(Event::Reload {
            phase: "started".into(),
            detail: format!("replacing {} worker(s) one at a time", old.len()),
        });
        self.reload = Some(Reload {
            queue: old.into_iter().map(|(_, k)| k).collect(),
            pending: None,
            waiters: tx.into_iter().collect(),
            replaced: 0,
        });
        self.reload_step();
    }

    fn reload_step(&mut self) {
        loop {
            let Some(r) = self.reload.as_mut() else {
                return;
            };
            let Some(old) = r.queue.pop_front() else {
                let r = self.reload.take().map_or(0, |r| {
                    for w in r.waiters {
                        let _ = w.send(Ok(r.replaced));
                    }
                    r.replaced
                });
                self.emit(Event::Reload {
                    phase: "done".into(),
                    detail: format!("{r} worker(s) replaced"),
                });
                return;
            };
            let Some(id) = self
                .workers
                .get(&old)
                .filter(|w| w.state != WState::Stopping)
                .map(|w| w.id)
            else {
                continue;
            };
            if !self.slots.contains_key(&id) {
                continue;
            }
            match self.start_in_slot(id) {
                Some(new) => {
                    if let Some(r) = self.reload.as_mut() {
                        r.pending = Some((old, new));
                    }
                    self.after(self.spec.listen_timeout, Cmd::ReloadTimeout(new));
                    return;
                }
                None => {
                    self.fail_reload(format!("worker {id}: the new process could not be started"));
                    return;
                }
            }
        }
    }

    fn fail_reload(&mut self, why: String) {
        if let Some(r) = self.reload.take() {
            for w in r.waiters {
                let _ = w.send(Err(why.clone()));
            }
            self.emit(Event::Reload {
                phase: "failed".into(),
                detail: format!("{why}; the remaining old workers keep serving"),
            });
        }
    }

    fn info(&self, key: u64) -> Option<WorkerInfo> {
        let w = self.workers.get(&key)?;
        let up = w.started.elapsed().as_secs_f64();
        let u = procstat::usage(w.pid).unwrap_or_default();
        Some(WorkerInfo {
            id: w.id,
            pid: w.pid,
            state: match w.state {
                WState::Starting => "starting",
                WState::Online => "online",
                WState::Stopping => "stopping",
            },
            uptime_secs: (up * 10.0).round() / 10.0,
            restarts: self.slots.get(&w.id).map_or(0, |s| s.restarts),
            last_exit: self.slots.get(&w.id).and_then(|s| s.last_exit.clone()),
            rss_bytes: u.rss_bytes,
            cpu_percent: if up > 0.0 {
                (u.cpu_seconds / up * 1000.0).round() / 10.0
            } else {
                0.0
            },
        })
    }

    fn status(&self) -> Status {
        let me = procstat::usage(std::process::id()).unwrap_or_default();
        let mut workers: Vec<WorkerInfo> =
            self.workers.keys().filter_map(|k| self.info(*k)).collect();
        workers.sort_by_key(|w| (w.id, w.pid));
        Status {
            name: self.spec.name.clone(),
            target: self.target,
            reloading: self.reload.is_some(),
            listen: self.listen_strings(),
            primary: PrimaryInfo {
                pid: std::process::id(),
                rss_bytes: me.rss_bytes,
                cpu_seconds: me.cpu_seconds,
                uptime_secs: self.started.elapsed().as_secs_f64(),
            },
            workers,
            logs: self.logs.as_ref().map(|l| l.info()).unwrap_or_default(),
            max_memory_bytes: self.spec.max_memory,
            memory_replacements: self.memory_replacements,
        }
    }
}

/// How often worker memory is compared with `--max-memory`.
const MEMORY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// `--ready`'s value as a user writes it.
fn ready_name(r: Ready) -> String {
    match r {
        Ready::Ipc => "ipc".into(),
        Ready::Notify => "notify".into(),
        Ready::Listening => "listening".into(),
        Ready::Delay(d) => format!("delay:{}", d.as_millis()),
    }
}

/// Signal the worker's process group while the worker is not yet reaped
/// (so the group id cannot belong to anyone else), else nothing.
fn kill_group(w: &Live, sig: i32) {
    if let Ok(true) = w.killer.kill(sig) {
        // SAFETY: kill(2) on the group our live child leads.
        unsafe { libc::kill(-(w.pid as libc::pid_t), sig) };
    }
}
