//! The handles on a running primary: [`Cluster`] (status, reload, scale,
//! send, stop, events), [`Worker`] (one worker), [`Running`] (wait for the
//! end), the commands they send to the primary's task, and what `status`
//! answers; plus the checks and signal task set up before it starts.

use std::collections::BTreeMap;
use std::ffi::OsString;

use serde::Serialize;
use serde_json::Value;
use shoal_core::Shutdown;
use std::time::Instant;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{auto, Primary};
use crate::error::{ClusterError, Result};
use crate::event::Event;
use crate::listen::Listeners;
use crate::spec::{ClusterSpec, ListenAddr};

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
    /// `--max-memory`, if set.
    pub max_memory_bytes: Option<u64>,
    /// Workers replaced for being over `--max-memory`, since start.
    pub memory_replacements: u64,
}

pub(super) type Reply<T> = oneshot::Sender<std::result::Result<T, String>>;

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
            memory_replacements: 0,
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
