//! The broker: opens every vhost (definitions + store recovery), accepts
//! AMQP connections up to the cap, runs the periodic tick (TTL, `x-expires`,
//! memory and disk alarms), the admin HTTP server and the control socket,
//! and on shutdown closes every connection with 320 and fsyncs the stores.

use crate::accounts::{self, Runtime};
use crate::config::{Accounts, Config};
use crate::error::BrokerError;
use crate::vhost::VHost;
use amq_protocol::types::{AMQPValue, FieldTable};
use parking_lot::Mutex;
use serde::Serialize;
use shoal_core::Shutdown;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Broker-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted.
    pub connections_total: AtomicU64,
    /// Connections refused at the cap.
    pub connections_refused: AtomicU64,
    /// Frame and protocol errors that closed a connection.
    pub protocol_errors: AtomicU64,
    /// Failed logins.
    pub auth_failures: AtomicU64,
    /// Messages published (all vhosts).
    pub published: AtomicU64,
    /// Connections closed because the handshake did not finish in time.
    pub handshake_timeouts: AtomicU64,
    /// Connections accepted that have not yet completed the handshake.
    pub handshaking: AtomicU64,
    /// Bytes of message bodies received but not yet complete.
    pub assembling: AtomicU64,
    /// Messages published on channels in confirm mode.
    pub received_confirm: AtomicU64,
    /// Publisher confirms (acks) queued for sending.
    pub confirmed: AtomicU64,
}

/// What the admin API shows about a connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnInfo {
    /// Connection id.
    pub id: u64,
    /// Peer address.
    pub peer: String,
    /// Logged-in user.
    pub user: String,
    /// Vhost.
    pub vhost: String,
    /// Seconds since accept.
    #[serde(skip)]
    pub since: Option<Instant>,
    /// The broker's address of the connection (host:port).
    pub local: String,
    /// When it was accepted, in ms since the Unix epoch.
    pub connected_at: u64,
    /// The client's properties from connection.start-ok (product,
    /// version, `connection_name`, capabilities); not in `shoal ctl`'s JSON.
    #[serde(skip)]
    pub client_properties: FieldTable,
    /// The login's SASL mechanism (empty before login).
    pub auth_mechanism: String,
    /// What connection.tune-ok settled (0 before it).
    pub tuned: Tuned,
}

/// A connection's negotiated limits, as the admin API shows them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tuned {
    /// Largest frame, in bytes.
    pub frame_max: u32,
    /// Highest channel number.
    pub channel_max: u16,
    /// Heartbeat interval in seconds (0: none).
    pub heartbeat: u16,
}

/// Bytes of client properties kept per connection for the admin API: the
/// usual ones (product, version, platform, capabilities, connection_name)
/// are far smaller, and a start-ok may be as large as a frame.
const CLIENT_PROPERTIES_KEPT: usize = 4096;

/// The client properties kept for the admin API: top-level entries, in key
/// order, while they fit in [`CLIENT_PROPERTIES_KEPT`] bytes (about their
/// wire size); an entry that does not fit is left out.
fn kept_client_properties(props: &FieldTable) -> FieldTable {
    fn size(v: &AMQPValue) -> usize {
        match v {
            AMQPValue::LongString(s) => s.as_bytes().len(),
            AMQPValue::ShortString(s) => s.as_str().len(),
            AMQPValue::ByteArray(b) => b.as_slice().len(),
            AMQPValue::FieldTable(t) => t
                .inner()
                .iter()
                .map(|(k, v)| k.as_str().len() + 1 + size(v))
                .sum(),
            AMQPValue::FieldArray(a) => a.as_slice().iter().map(size).sum(),
            _ => 8,
        }
    }
    let mut kept = FieldTable::default();
    let mut left = CLIENT_PROPERTIES_KEPT;
    for (k, v) in props.inner() {
        let n = k.as_str().len() + 1 + size(v);
        if n <= left {
            left -= n;
            kept.insert(k.clone(), v.clone());
        }
    }
    kept
}

/// Shared broker state.
pub struct Broker {
    /// Configuration.
    pub config: Config,
    /// Vhosts by name (a snapshot replaced when one is added or deleted).
    vhosts: parking_lot::RwLock<Arc<HashMap<String, Arc<Mutex<VHost>>>>>,
    /// Counters.
    pub metrics: Metrics,
    /// Resource alarm (true: publishers are blocked).
    pub alarm: tokio::sync::watch::Sender<bool>,
    conns: Mutex<HashMap<u64, ConnInfo>>,
    /// How to close each open connection from outside (user or vhost deleted).
    closers: Mutex<HashMap<u64, Arc<Closer>>>,
    next_conn: AtomicU64,
    /// When the broker started.
    pub started: Instant,
    /// Users and permissions in force: the configuration file's (replaced
    /// on SIGHUP) with the runtime ones added.
    accounts: parking_lot::RwLock<Arc<Accounts>>,
    /// The configuration file's users and permissions alone.
    file_accounts: parking_lot::RwLock<Arc<Accounts>>,
    /// Users, vhosts and permissions created at runtime; its lock
    /// serializes changes to them.
    pub(crate) runtime: Mutex<Runtime>,
    /// Compiled runtime permission patterns (locked after `runtime`).
    compiled: Mutex<accounts::Compiled>,
    /// Bumped on every change of [`Broker::accounts`], so connections know
    /// to look their permissions up again.
    accounts_gen: AtomicU64,
}

/// A request to close a connection with 320 CONNECTION_FORCED.
#[derive(Default)]
pub(crate) struct Closer {
    pub(crate) notify: tokio::sync::Notify,
    pub(crate) reason: Mutex<Option<String>>,
}

impl Broker {
    /// Open the data directory and every vhost: the configured ones and
    /// those created at runtime (`DATA/accounts.json`).
    pub fn open(config: Config) -> Result<Arc<Broker>, BrokerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            BrokerError::io(format!("create data dir {}", config.data_dir.display()), e)
        })?;
        let runtime = Runtime::load(&accounts::store_path(&config.data_dir))?;
        let file_accounts = config.accounts();
        for n in runtime
            .users
            .keys()
            .filter(|n| file_accounts.users.contains_key(*n))
        {
            tracing::warn!(user = %n, "user created through the API is also in the configuration file: the file's entry is used");
        }
        let mut vhosts = HashMap::new();
        let names = config
            .vhosts
            .iter()
            .chain(runtime.vhosts.iter().filter(|v| !config.vhosts.contains(v)));
        for name in names {
            let v = open_vhost(&config, name)?;
            vhosts.insert(name.clone(), Arc::new(Mutex::new(v)));
        }
        let (alarm, _) = tokio::sync::watch::channel(false);
        let mut compiled = accounts::Compiled::new();
        let merged = runtime.merge(&file_accounts, &mut compiled);
        Ok(Arc::new(Broker {
            accounts: parking_lot::RwLock::new(Arc::new(merged)),
            compiled: Mutex::new(compiled),
            file_accounts: parking_lot::RwLock::new(Arc::new(file_accounts)),
            runtime: Mutex::new(runtime),
            accounts_gen: AtomicU64::new(0),
            config,
            vhosts: parking_lot::RwLock::new(Arc::new(vhosts)),
            metrics: Metrics::default(),
            alarm,
            conns: Mutex::new(HashMap::new()),
            closers: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            started: Instant::now(),
        }))
    }

    /// The vhosts (a snapshot).
    pub fn vhosts(&self) -> Arc<HashMap<String, Arc<Mutex<VHost>>>> {
        self.vhosts.read().clone()
    }

    /// One vhost.
    pub fn vhost(&self, name: &str) -> Option<Arc<Mutex<VHost>>> {
        self.vhosts.read().get(name).cloned()
    }

    /// Replace the vhost map with `f` applied to a copy of it.
    pub(crate) fn update_vhosts(&self, f: impl FnOnce(&mut HashMap<String, Arc<Mutex<VHost>>>)) {
        let mut g = self.vhosts.write();
        let mut m = (**g).clone();
        f(&mut m);
        *g = Arc::new(m);
    }

    /// The configuration file's users and permissions alone.
    pub fn file_accounts(&self) -> Arc<Accounts> {
        self.file_accounts.read().clone()
    }

    /// Recompute [`Broker::accounts`] from the file's and `runtime`.
    pub(crate) fn rebuild_accounts(&self, runtime: &Runtime) {
        let merged = runtime.merge(&self.file_accounts(), &mut self.compiled.lock());
        *self.accounts.write() = Arc::new(merged);
        self.accounts_gen.fetch_add(1, Ordering::Release);
    }

    /// Changes with every change of the users or permissions in force.
    pub fn accounts_generation(&self) -> u64 {
        self.accounts_gen.load(Ordering::Acquire)
    }

    /// Close every connection `pick` selects (by user, vhost) with 320
    /// CONNECTION_FORCED and `reason`; returns how many.
    pub(crate) fn force_close(&self, pick: impl Fn(&ConnInfo) -> bool, reason: &str) -> usize {
        let ids: Vec<u64> = self
            .conns
            .lock()
            .values()
            .filter(|c| pick(c))
            .map(|c| c.id)
            .collect();
        let closers = self.closers.lock();
        for id in &ids {
            if let Some(c) = closers.get(id) {
                *c.reason.lock() = Some(reason.to_string());
                c.notify.notify_one();
            }
        }
        ids.len()
    }

    pub(crate) fn conn_opened(
        &self,
        id: u64,
        peer: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Arc<Closer> {
        let closer = Arc::new(Closer::default());
        self.closers.lock().insert(id, closer.clone());
        self.conns.lock().insert(
            id,
            ConnInfo {
                id,
                peer: peer.to_string(),
                user: String::new(),
                vhost: String::new(),
                since: Some(Instant::now()),
                local: local.map(|a| a.to_string()).unwrap_or_default(),
                connected_at: crate::message::now_ms(),
                client_properties: Default::default(),
                auth_mechanism: String::new(),
                tuned: Tuned::default(),
            },
        );
        closer
    }

    /// The users and permissions in force (a snapshot: a reload replaces it
    /// for later logins and vhost opens, as RabbitMQ applies permission
    /// changes to new connections).
    pub fn accounts(&self) -> Arc<Accounts> {
        self.accounts.read().clone()
    }

    /// Reread users and permissions from the configuration file (SIGHUP).
    /// A file that does not load leaves everything as it was; other
    /// settings (listeners, vhosts, limits) need a restart and are only
    /// reported when they changed.
    pub fn reload_accounts(&self) {
        let Some(path) = &self.config.source else {
            tracing::info!("SIGHUP: started without --config, nothing to reload");
            return;
        };
        match Config::load(path) {
            Ok(c) => {
                if c.vhosts != self.config.vhosts {
                    tracing::warn!(file = %path.display(), "SIGHUP: vhosts changed in the file; adding or removing vhosts needs a restart");
                }
                let a = c.accounts();
                tracing::info!(
                    file = %path.display(),
                    users = a.users.len(),
                    permissions = a.permissions.len(),
                    "SIGHUP: users and permissions reloaded (other settings need a restart; those created through the API are kept)"
                );
                *self.file_accounts.write() = Arc::new(a);
                let runtime = self.runtime.lock();
                self.rebuild_accounts(&runtime);
            }
            Err(e) => {
                tracing::error!("SIGHUP: reload failed, users and permissions unchanged: {e}");
            }
        }
    }

    /// A login: who the client says it is (start-ok).
    pub(crate) fn conn_login(&self, id: u64, mechanism: &str, client_properties: &FieldTable) {
        let kept = kept_client_properties(client_properties);
        if let Some(c) = self.conns.lock().get_mut(&id) {
            c.auth_mechanism = mechanism.to_string();
            c.client_properties = kept;
        }
    }

    /// The connection is open: its user, vhost and negotiated limits.
    pub(crate) fn conn_update(&self, id: u64, user: &str, vhost: &str, tuned: Tuned) {
        if let Some(c) = self.conns.lock().get_mut(&id) {
            c.user = user.to_string();
            c.vhost = vhost.to_string();
            c.tuned = tuned;
        }
    }

    pub(crate) fn conn_closed(&self, id: u64) {
        self.conns.lock().remove(&id);
        self.closers.lock().remove(&id);
    }

    /// Open connections.
    pub fn connections(&self) -> Vec<ConnInfo> {
        let mut v: Vec<ConnInfo> = self.conns.lock().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }

    fn tick(&self) {
        let mut bytes = 0;
        let mut store_failing = false;
        for v in self.vhosts().values() {
            let mut g = v.lock();
            bytes += g.tick();
            store_failing |= g.store.stats().failing;
        }
        bytes += self.metrics.assembling.load(Ordering::Relaxed);
        let free = disk_free(&self.config.data_dir);
        let mem_alarm = bytes > self.config.memory_high_watermark;
        // A store whose writes fail (disk full, I/O error) holds its
        // confirms; publishers are blocked until its retries succeed.
        let disk_alarm = store_failing || free.is_some_and(|f| f < self.config.disk_free_limit);
        let on = mem_alarm || disk_alarm;
        if *self.alarm.borrow() != on {
            if on {
                tracing::warn!(queued_bytes = bytes, disk_free = ?free, store_failing, "resource alarm set: blocking publishers");
            } else {
                tracing::info!("resource alarm cleared");
            }
            self.alarm.send_replace(on);
        }
    }
}

async fn reload_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    broker: Arc<Broker>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            got = hup.recv() => {
                if got.is_none() {
                    break;
                }
                broker.reload_accounts();
            }
            _ = shutdown.cancelled() => break,
        }
    }
}

/// Logs refusals at the connection cap at most once a second, with the
/// number refused since the last line, so a flood cannot flood the log.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn note(&mut self, peer: SocketAddr, cap: usize) {
        self.unlogged += 1;
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        tracing::warn!(
            %peer,
            max_connections = cap,
            refused = self.unlogged,
            "connection cap reached: refusing connections (shoal_broker_connections_refused_total counts them)"
        );
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}

/// Open (or create) vhost `name`'s directory under the data dir.
pub(crate) fn open_vhost(config: &Config, name: &str) -> Result<VHost, BrokerError> {
    let dir = vhost_dir(config, name);
    let v = VHost::open(name, dir, config.queue_memory_budget)?;
    let (q, m): (usize, usize) = (v.queues.len(), v.queues.values().map(|q| q.len).sum());
    tracing::info!(vhost = %name, queues = q, messages = m, "vhost recovered");
    Ok(v)
}

/// Vhost `name`'s directory.
pub(crate) fn vhost_dir(config: &Config, name: &str) -> std::path::PathBuf {
    config.data_dir.join("vhosts").join(vhost_dir_name(name))
}

pub(crate) fn vhost_dir_name(name: &str) -> String {
    if name == "/" {
        return "default".to_string();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        + "-v"
}

pub(crate) fn disk_free(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Bind, serve and stop on `shutdown`. The listener's address is logged.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), BrokerError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| BrokerError::io(format!("bind {}", config.listen), e))?;
    serve(listener, config, shutdown).await
}

/// Serve on an already-bound listener (tests bind 127.0.0.1:0 first).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), BrokerError> {
    let addr = listener
        .local_addr()
        .map_err(|e| BrokerError::io("local_addr", e))?;
    // SIGHUP rereads users and permissions, as nginx users expect of a
    // hangup; never the default action (which would end the broker). The
    // handler is in place before the broker says it is listening, so a
    // hangup sent as soon as it does is kept and handled once it is open.
    let hup = if config.hangup {
        Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| BrokerError::io("install the SIGHUP handler", e))?,
        )
    } else {
        None
    };
    // Every listener is opened before anything is served: a broker that
    // cannot open one of them refuses to start, naming the address.
    let admin = match config.admin_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| BrokerError::io(format!("bind admin_listen {a}"), e))?,
        ),
        None => None,
    };
    // The addresses actually bound (a port 0 in the file becomes the
    // port the OS chose), as the management API and health checks report.
    let mut config = config;
    config.listen = addr;
    if let Some(l) = &admin {
        config.admin_listen = l.local_addr().ok();
    }
    let sock = shoal_core::control::socket_path(&config.name);
    let control = shoal_core::control::bind(&sock)
        .await
        .map_err(|e| BrokerError::io(format!("bind control socket {}", sock.display()), e))?;
    let broker = Broker::open(config).inspect_err(|_| {
        let _ = std::fs::remove_file(&sock);
    })?;
    tracing::info!(%addr, data_dir = %broker.config.data_dir.display(), "broker listening (AMQP 0-9-1)");

    if let Some(hup) = hup {
        tokio::spawn(reload_on_hangup(hup, broker.clone(), shutdown.clone()));
    }

    let tick_b = broker.clone();
    let tick_s = shutdown.clone();
    let ticker = tokio::spawn(async move {
        let mut iv = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = iv.tick() => tick_b.tick(),
                _ = tick_s.cancelled() => break,
            }
        }
    });

    if let Some(l) = admin {
        tracing::info!(addr = %l.local_addr().map(|x| x.to_string()).unwrap_or_default(), "admin HTTP API listening");
        tokio::spawn(crate::admin::serve(l, broker.clone(), shutdown.clone()));
    }

    // Awaited before returning: it removes the socket file as it ends, and a
    // runtime shut down first would leave the file behind.
    let control_task = {
        let b = broker.clone();
        let stop = shutdown.clone();
        tokio::spawn(shoal_core::control::serve(
            control,
            sock,
            shutdown.clone(),
            move |req| {
                let b = b.clone();
                let stop = stop.clone();
                async move { crate::admin::control(&b, req, &stop) }
            },
        ))
    };

    let mut tasks = tokio::task::JoinSet::new();
    let mut refusals = RefusalLog::default();
    let mut backoff = Duration::from_millis(5);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(5); x }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        if tasks.len() >= broker.config.max_connections {
            broker
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            refusals.note(peer, broker.config.max_connections);
            drop(stream);
            continue;
        }
        broker
            .metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        let id = broker.next_conn.fetch_add(1, Ordering::Relaxed);
        let b = broker.clone();
        let s = shutdown.clone();
        tasks.spawn(async move {
            let span = tracing::info_span!("conn", %peer, id);
            let _e = span.enter();
            drop(_e);
            crate::connection::serve(b, stream, peer, id, s).await
        });
    }
    drop(listener);
    tracing::info!(
        connections = tasks.len(),
        "shutting down: closing connections"
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    ticker.abort();
    for v in broker.vhosts().values() {
        let store = v.lock().store.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .ok();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), control_task).await;
    tracing::info!("broker stopped; stores synced");
    Ok(())
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::{AMQPValue, FieldTable};

    #[test]
    fn client_properties_are_kept_up_to_a_bound() {
        let mut t = FieldTable::default();
        t.insert("product".into(), AMQPValue::LongString("pika".into()));
        t.insert(
            "big".into(),
            AMQPValue::LongString("x".repeat(100_000).into()),
        );
        t.insert(
            "connection_name".into(),
            AMQPValue::LongString("orders".into()),
        );
        let kept = super::kept_client_properties(&t);
        let keys: Vec<&str> = kept.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["connection_name", "product"]);
        let mut many = FieldTable::default();
        for i in 0..1000 {
            many.insert(
                format!("k{i:04}").into(),
                AMQPValue::LongString("v".repeat(20).into()),
            );
        }
        let n = super::kept_client_properties(&many).inner().len();
        assert!(
            n > 0 && n < 1000 && n * 26 <= super::CLIENT_PROPERTIES_KEPT,
            "{n}"
        );
    }
}
