//! The primary: one task that owns the workers and applies the policy —
//! start N, replace the ones that die (with exponential backoff and a limit),
//! rolling reload one worker at a time, scale, graceful stop — driven by the
//! workers' reports, timers, signals and commands from the [`Cluster`]
//! handle (which the control socket and library users share).

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use shoal_core::Shutdown;
use shoal_process::{ExitStatus, Killer};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};

use crate::error::{ClusterError, Result};
use crate::event::Event;
use crate::listen::Listeners;
use crate::procstat;
use crate::spec::{ClusterSpec, ListenAddr, Ready};
use crate::worker::{self, Report};

mod auto;
mod node_acts;

/// One worker as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerInfo {
    /// Worker id (1..N; reused by the worker that replaces it).
    pub id: u32,
    /// Process id.
    pub pid: u32,
    /// `starting`, `online` or `stopping`.
    pub state: &'static str,
    /// Seconds since it was started.
    pub uptime_secs: f64,
    /// How many times this worker id was restarted after an unexpected exit.
    pub restarts: u32,
    /// Resident memory in bytes (0 if unknown).
    pub rss_bytes: u64,
    /// CPU use since it started, in percent of one core.
    pub cpu_percent: f64,
    /// How the previous worker with this id ended (`exit code 1 after
    /// 0.3s`, `SIGKILL: over --max-memory`), if one did.
    pub last_exit: Option<String>,
}

/// The primary's own resource use.
#[derive(Clone, Debug, Serialize)]
pub struct PrimaryInfo {
    /// The primary's pid.
    pub pid: u32,
    /// Its resident memory in bytes.
    pub rss_bytes: u64,
    /// Its CPU time used so far, in seconds.
    pub cpu_seconds: f64,
    /// Seconds since it started.
    pub uptime_secs: f64,
}

/// The answer to `status`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The cluster's name.
    pub name: String,
    /// The number of workers aimed for.
    pub target: usize,
    /// Whether a rolling reload is under way.
    pub reloading: bool,
    /// The addresses bound.
    pub listen: Vec<String>,
    /// The primary itself.
    pub primary: PrimaryInfo,
    /// The workers, by id.
    pub workers: Vec<WorkerInfo>,
    /// The `--log-dir` files the workers' output goes to (none: relayed).
    pub logs: Vec<crate::logfile::LogInfo>,
}

type Reply<T> = oneshot::Sender<std::result::Result<T, String>>;

pub(crate) enum Cmd {
    Begin,
    Setup(OsString, Vec<OsString>, bool),
    SetEnv(Vec<(OsString, OsString)>),
    Status(oneshot::Sender<Status>),
    Reload(Option<Reply<usize>>),
    Scale(usize, Reply<usize>),
    ScaleBy(i64, Option<Reply<usize>>),
    Fork(Vec<(OsString, OsString)>, Reply<WorkerInfo>),
    SendAll(Value, oneshot::Sender<usize>),
    SendTo(u32, Value, Reply<()>),
    Kill(u32, i32, Reply<()>),
    Disconnect(u32, Reply<()>),
    Stop,
    Restart(u32),
    RestartAll(Reply<usize>),
    SignalAll(i32, Reply<usize>),
    ReadyCheck(u64),
    MemoryCheck,
    PeriodicReload,
    /// Timers, file changes and log files: see `auto`.
    Auto(auto::AutoCmd),
    DelayReady(u64),
    Terminate(u64),
    ForceKill(u64),
    ReloadTimeout(u64),
    StopDeadline,
}

/// A running cluster: ask it for status, reload, scale, send, stop; watch
/// its events. Cloning shares the same primary.
#[derive(Clone)]
pub struct Cluster {
    cmds: mpsc::Sender<Cmd>,
    events: broadcast::Sender<Event>,
    addrs: Vec<ListenAddr>,
    name: String,
}

/// The primary's task, to wait for its end.
pub struct Running {
    join: JoinHandle<Result<()>>,
}

impl Running {
    /// Wait until the primary has stopped (after a graceful stop, or when
    /// every worker gave up).
    pub async fn wait(self) -> Result<()> {
        self.join
            .await
            .map_err(|e| ClusterError::Io(std::io::Error::other(e)))?
    }
}

impl Cluster {
    /// Validate `spec`, check the command can run, bind the listeners and the
    /// control socket, and prepare the primary. No worker starts until
    /// [`Cluster::begin`], so that [`Cluster::subscribe`] sees every event.
    pub async fn new(spec: ClusterSpec, shutdown: Shutdown) -> Result<(Cluster, Running)> {
        spec.validate()?;
        resolve_command(&spec.exec)?;
        let listeners = Listeners::bind(&spec.listen, spec.reuse_port)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(4096);
        let cluster = Cluster {
            cmds: cmd_tx.clone(),
            events: events.clone(),
            addrs: listeners.addrs(),
            name: spec.name.clone(),
        };
        let mut control = None;
        if spec.control {
            let path = shoal_core::control::socket_path(&spec.name);
            let listener =
                shoal_core::control::bind(&path)
                    .await
                    .map_err(|source| ClusterError::Control {
                        path: path.display().to_string(),
                        source,
                    })?;
            let c = cluster.clone();
            // Its own token, so that the primary can close it when it ends
            // for any reason (ctl stop, all workers gave up).
            let control_sd = shutdown.child();
            control = Some((control_sd.clone(), path.clone()));
            tokio::spawn(shoal_core::control::serve(
                listener,
                path,
                control_sd,
                move |req| {
                    let c = c.clone();
                    async move { crate::control::handle(&c, req).await }
                },
            ));
        }
        if spec.signals {
            spawn_signal_task(cmd_tx.clone(), shutdown.clone(), spec.logs.is_some())?;
        }
        let logs = match &spec.logs {
            Some(l) => Some(crate::logfile::Logs::open(&spec.name, l)?),
            None => None,
        };
        let watch = auto::start_watch(&spec, cmd_tx.clone())?;
        let (rep_tx, rep_rx) = mpsc::channel(1024);
        let primary = Primary {
            target: spec.workers,
            spec,
            listeners,
            events,
            cmd_tx,
            rep_tx,
            slots: BTreeMap::new(),
            workers: BTreeMap::new(),
            next_key: 1,
            reload: None,
            stopping: false,
            started: Instant::now(),
            gave_up: Vec::new(),
            control,
            guard: crate::guard::Guard::start(),
            node: crate::node::Servers::default(),
            logs,
            watch,
            cron_due: None,
        };
        // Every log line of the primary says so: `primary{name=web}: worker 1 online`.
        let span = tracing::info_span!("primary", name = %primary.spec.name);
        let join = tokio::spawn(tracing::Instrument::instrument(
            primary.run(cmd_rx, rep_rx, shutdown),
            span,
        ));
        Ok((cluster, Running { join }))
    }

    /// Start the initial workers.
    pub async fn begin(&self) -> Result<()> {
        self.cmd(Cmd::Begin).await
    }

    /// Change the program, arguments and output relay of workers started
    /// from now on (the chapter's `cluster.setupMaster`); emits `setup`.
    pub async fn setup_primary(
        &self,
        exec: impl Into<OsString>,
        args: Vec<OsString>,
        silent: bool,
    ) -> Result<()> {
        self.cmd(Cmd::Setup(exec.into(), args, silent)).await
    }

    /// Replace the environment (the spec's `env`) of workers started from
    /// now on; running workers keep theirs until a reload replaces them.
    pub async fn set_env(&self, env: Vec<(OsString, OsString)>) -> Result<()> {
        self.cmd(Cmd::SetEnv(env)).await
    }

    /// Receive every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The addresses bound (with port 0 resolved).
    pub fn addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn cmd(&self, c: Cmd) -> Result<()> {
        self.cmds.send(c).await.map_err(|_| ClusterError::Stopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.cmd(make(tx)).await?;
        rx.await.map_err(|_| ClusterError::Stopped)
    }

    /// The workers and the primary, as `shoal ctl status` shows them.
    pub async fn status(&self) -> Result<Status> {
        self.ask(Cmd::Status).await
    }

    /// The current workers (the chapter's `cluster.workers`).
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        Ok(self.status().await?.workers)
    }

    /// Rolling reload: replace every worker, one at a time, each new one
    /// ready before the old one is asked to go. Resolves when done, with the
    /// number of workers replaced.
    pub async fn reload(&self) -> Result<std::result::Result<usize, String>> {
        self.ask(|tx| Cmd::Reload(Some(tx))).await
    }

    /// Set the number of workers.
    pub async fn scale(&self, n: usize) -> Result<std::result::Result<usize, String>> {
        self.ask(|tx| Cmd::Scale(n, tx)).await
    }

    /// Restart every worker at once (PM2's `restart`; not rolling): each is
    /// asked to go and started again as soon as it has exited. Resolves
    /// with how many were asked.
    pub async fn restart_all(&self) -> Result<std::result::Result<usize, String>> {
        self.ask(Cmd::RestartAll).await
    }

    /// Send `signal` to every worker (not their process groups); returns
    /// how many were signalled.
    pub async fn signal_all(&self, signal: i32) -> Result<std::result::Result<usize, String>> {
        self.ask(|tx| Cmd::SignalAll(signal, tx)).await
    }

    /// Change the number of workers by `by` (the control socket's `scale
    /// +N`/`-N`, applied by the primary so that concurrent changes add up).
    pub async fn scale_by(&self, by: i64) -> Result<std::result::Result<usize, String>> {
        self.ask(|tx| Cmd::ScaleBy(by, Some(tx))).await
    }

    /// Reopen the `--log-dir` files by name (what SIGUSR1 does, for logrotate).
    pub async fn reopen_logs(&self) -> Result<()> {
        self.cmd(Cmd::Auto(auto::AutoCmd::ReopenLogs)).await
    }

    /// Empty the `--log-dir` files and remove the rotated ones (`pm2
    /// flush`); resolves with how many files were emptied.
    pub async fn flush_logs(&self) -> Result<std::result::Result<usize, String>> {
        self.ask(|tx| Cmd::Auto(auto::AutoCmd::FlushLogs(tx))).await
    }

    /// Start one more worker, with `env` added to its environment (the
    /// chapter's `cluster.fork([env])`).
    pub async fn fork(
        &self,
        env: Vec<(OsString, OsString)>,
    ) -> Result<std::result::Result<WorkerInfo, String>> {
        self.ask(|tx| Cmd::Fork(env, tx)).await
    }

    /// Send `msg` to every worker's IPC channel; returns how many got it.
    pub async fn send_all(&self, msg: Value) -> Result<usize> {
        self.ask(|tx| Cmd::SendAll(msg, tx)).await
    }

    /// Send `msg` to worker `id` (`worker.send`).
    pub async fn send(&self, id: u32, msg: Value) -> Result<std::result::Result<(), String>> {
        self.ask(|tx| Cmd::SendTo(id, msg, tx)).await
    }

    /// Signal worker `id` (`worker.kill`); it is not replaced.
    pub async fn kill(&self, id: u32, signal: i32) -> Result<std::result::Result<(), String>> {
        self.ask(|tx| Cmd::Kill(id, signal, tx)).await
    }

    /// Ask worker `id` to go: IPC disconnect, SIGTERM, SIGKILL after the
    /// grace period (`worker.disconnect`); it is not replaced.
    pub async fn disconnect_worker(&self, id: u32) -> Result<std::result::Result<(), String>> {
        self.ask(|tx| Cmd::Disconnect(id, tx)).await
    }

    /// Stop every worker gracefully and end the primary (`cluster.disconnect`).
    pub async fn disconnect(&self) -> Result<()> {
        self.cmd(Cmd::Stop).await
    }

    /// A handle on worker `id` as it is now (the chapter's `cluster.workers[id]`),
    /// or `None` if there is no such worker.
    pub async fn worker(&self, id: u32) -> Result<Option<Worker>> {
        let found = self
            .workers()
            .await?
            .into_iter()
            .rfind(|w| w.id == id && w.state != "stopping");
        Ok(found.map(|info| Worker {
            info,
            cluster: self.clone(),
        }))
    }
}

/// One worker, seen from the primary: the chapter's `worker` object.
#[derive(Clone)]
pub struct Worker {
    info: WorkerInfo,
    cluster: Cluster,
}

impl Worker {
    /// Its id (`worker.id`).
    pub fn id(&self) -> u32 {
        self.info.id
    }

    /// Its process id (`worker.process.pid`).
    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    /// What `status` said about it when this handle was made.
    pub fn info(&self) -> &WorkerInfo {
        &self.info
    }

    /// Send a message on its IPC channel (`worker.send`).
    pub async fn send(&self, msg: Value) -> Result<std::result::Result<(), String>> {
        self.cluster.send(self.info.id, msg).await
    }

    /// Signal it (`worker.kill`); it is not replaced and its exit says it was asked to go.
    pub async fn kill(&self, signal: i32) -> Result<std::result::Result<(), String>> {
        self.cluster.kill(self.info.id, signal).await
    }

    /// Ask it to go gracefully (`worker.disconnect`); it is not replaced.
    pub async fn disconnect(&self) -> Result<std::result::Result<(), String>> {
        self.cluster.disconnect_worker(self.info.id).await
    }
}

fn spawn_signal_task(
    cmds: mpsc::Sender<Cmd>,
    shutdown: Shutdown,
    log_files: bool,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    // SIGUSR1 only with log files to reopen (its default action ends us).
    let mut usr1 = log_files
        .then(|| signal(SignalKind::user_defined1()))
        .transpose()?;
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN))?;
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU))?;
    tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = hup.recv() => { tracing::info!("SIGHUP: rolling reload"); Cmd::Reload(None) }
                _ = ttin.recv() => { tracing::info!("SIGTTIN: one more worker"); Cmd::ScaleBy(1, None) }
                _ = ttou.recv() => { tracing::info!("SIGTTOU: one worker less"); Cmd::ScaleBy(-1, None) }
                Some(()) = async { match usr1.as_mut() { Some(s) => s.recv().await, None => None } } => {
                    tracing::info!("SIGUSR1: reopening the log files");
                    Cmd::Auto(auto::AutoCmd::ReopenLogs)
                }
            };
            if cmds.send(c).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Fail early, with a clear message, when the worker command cannot run.
fn resolve_command(exec: &OsString) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let shown = exec.to_string_lossy().into_owned();
    let err = |reason: &str| ClusterError::Command {
        command: shown.clone(),
        reason: reason.into(),
    };
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if exec.is_empty() {
        return Err(err("empty command"));
    }
    let p = std::path::Path::new(exec);
    if shown.contains('/') {
        return if runnable(p) {
            Ok(())
        } else if p.exists() {
            Err(err("not an executable file"))
        } else {
            Err(err("no such file"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| runnable(&d.join(p))) {
        Ok(())
    } else {
        Err(err("not found in PATH"))
    }
}

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
