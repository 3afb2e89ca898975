//! Upstream groups: servers with nginx's `max_fails` / `fail_timeout`,
//! `backup`, `down`, `drain` and `max_conns`, their health state, their idle
//! keep-alive connection pools, and the selection that puts these together
//! with a [`Balance`].

use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

use crate::balance::{self, Balance, Context, PeerView};
use crate::config::{HashKey, HealthCheckConfig, ServerConfig, Strategy, UpstreamConfig};
use crate::workers::PerWorker;

/// Milliseconds on a cheap monotonic clock that fits in an atomic, never 0.
/// It reads `CLOCK_MONOTONIC_COARSE` (the kernel's last tick, a few
/// milliseconds coarse, no hardware clock read), which is plenty for
/// `fail_timeout` and idle limits and is called several times per request.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        return EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000 + 1
}

/// Counters for one server, kept across reloads while the server stays.
#[derive(Debug)]
pub struct PeerStats {
    /// Responses by status class (index 0 = 1xx ... 4 = 5xx), per worker.
    responses: PerWorker<[AtomicU64; 5]>,
    /// Failed attempts (connect errors, resets, timeouts, bad responses).
    pub failures: AtomicU64,
    /// Connections opened to this server.
    pub connects: AtomicU64,
    /// Idle pooled connections closed because the server closed them,
    /// sent bytes nobody asked for, or sat past the idle limit.
    pub pool_discards: AtomicU64,
    /// Requests or connections in flight, counted by the worker that
    /// started them, over every configuration generation: a request that
    /// began before a reload or a runtime change still counts, so draining
    /// a server shows what it still serves.
    active: PerWorker<AtomicUsize>,
}

impl PeerStats {
    /// Zeroed counters for `workers` worker threads.
    pub fn new(workers: usize) -> PeerStats {
        PeerStats {
            responses: PerWorker::new(workers),
            failures: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            pool_discards: AtomicU64::new(0),
            active: PerWorker::new(workers),
        }
    }

    /// Count a response with `status`.
    pub fn count_status(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.responses.local()[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Responses of status class `i` (0 = 1xx ... 4 = 5xx) so far.
    pub fn responses(&self, i: usize) -> u64 {
        self.responses
            .iter()
            .map(|r| r[i].load(Ordering::Relaxed))
            .sum()
    }
}

/// Whether an idle connection is quiet: a non-blocking peek finds nothing
/// to read. EOF, an error or stray bytes all mean it must not be reused.
fn quiet(s: &TcpStream) -> bool {
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(s).peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// One worker's idle connections to a server, with when each went idle
/// ([`now_ms`]), newest last.
type IdlePool = Vec<(TcpStream, u64)>;

/// One upstream server and its live state.
#[derive(Debug)]
pub struct Peer {
    pub config: ServerConfig,
    /// Failures in the current window.
    fails: AtomicU32,
    /// When the last failure happened (ms, [`now_ms`]); 0 = never.
    last_fail: AtomicU64,
    /// When the current failure window started.
    window_start: AtomicU64,
    /// In flight over all workers, kept exactly (one shared counter) only
    /// for a server with `max_conns`, which must not be exceeded.
    reserved: AtomicUsize,
    /// Active health check verdict (true when no check is configured).
    healthy: AtomicBool,
    /// Idle keep-alive connections, newest last: one pool per worker thread
    /// (a connection is registered with its worker's reactor), each holding
    /// at most `pool_max`, as nginx's `keepalive` counts per worker process.
    pools: Box<[Mutex<IdlePool>]>,
    pool_max: usize,
    pub stats: Arc<PeerStats>,
}

impl Peer {
    fn new(config: ServerConfig, pool_max: usize, stats: Arc<PeerStats>, workers: usize) -> Self {
        Peer {
            config,
            fails: AtomicU32::new(0),
            last_fail: AtomicU64::new(0),
            window_start: AtomicU64::new(0),
            reserved: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            pools: (0..workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            pool_max,
            stats,
        }
    }

    /// The server's address.
    pub fn address(&self) -> SocketAddr {
        self.config.address
    }

    /// Requests in flight.
    pub fn active(&self) -> usize {
        self.stats
            .active
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Count a request in flight; with `max_conns`, only if that leaves
    /// room. Returns whether it was counted.
    fn reserve(&self) -> bool {
        let max = self.config.max_conns;
        if max > 0 {
            let ok = self
                .reserved
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |a| {
                    (a < max).then_some(a + 1)
                })
                .is_ok();
            if !ok {
                return false;
            }
        }
        self.stats.active.local().fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Undo [`Peer::reserve`].
    fn release(&self) {
        if self.config.max_conns > 0 {
            self.reserved.fetch_sub(1, Ordering::AcqRel);
        }
        self.stats.active.local().fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether passive failure accounting has taken the server out now.
    pub fn failed_out(&self, now: u64) -> bool {
        let max = self.config.max_fails;
        if max == 0 || self.fails.load(Ordering::Relaxed) < max {
            return false;
        }
        let last = self.last_fail.load(Ordering::Relaxed);
        now.saturating_sub(last) < self.config.fail_timeout.as_millis() as u64
    }

    /// Whether the active health check says the server is up.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Set by the health checker.
    pub fn set_healthy(&self, up: bool) {
        let was = self.healthy.swap(up, Ordering::Relaxed);
        if was != up {
            tracing::warn!(server = %self.config.name, healthy = up, "health check changed state");
            if !up {
                self.clear_pools();
            }
        }
    }

    /// In one word, for `/status`: `down` or `draining` (set by the
    /// operator), `unhealthy` (active check), `failed` (passive
    /// `max_fails`), else `up`.
    pub fn state(&self, now: u64) -> &'static str {
        if self.config.down {
            "down"
        } else if self.config.drain {
            "draining"
        } else if !self.healthy() {
            "unhealthy"
        } else if self.failed_out(now) {
            "failed"
        } else {
            "up"
        }
    }

    /// Whether the server may get traffic now, ignoring `max_conns`.
    pub fn usable(&self, now: u64) -> bool {
        !self.config.down && !self.config.drain && self.healthy() && !self.failed_out(now)
    }

    /// Count a failed attempt (nginx: failures within `fail_timeout` add up;
    /// reaching `max_fails` takes the server out for `fail_timeout`).
    pub fn fail(&self) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        if self.config.max_fails == 0 {
            return;
        }
        let now = now_ms();
        let window = self.config.fail_timeout.as_millis() as u64;
        let start = self.window_start.load(Ordering::Relaxed);
        if start == 0
            || now.saturating_sub(start) >= window
            || self.fails.load(Ordering::Relaxed) >= self.config.max_fails
        {
            // A new window (also after a server that was out fails its probe:
            // it goes out again for a full fail_timeout).
            self.window_start.store(now, Ordering::Relaxed);
            let was_out = self.fails.load(Ordering::Relaxed) >= self.config.max_fails;
            self.fails.store(
                if was_out { self.config.max_fails } else { 1 },
                Ordering::Relaxed,
            );
        } else {
            self.fails.fetch_add(1, Ordering::Relaxed);
        }
        self.last_fail.store(now, Ordering::Relaxed);
        if self.fails.load(Ordering::Relaxed) >= self.config.max_fails {
            tracing::warn!(server = %self.config.name, fail_timeout = ?self.config.fail_timeout, "server marked unavailable (max_fails reached)");
            self.clear_pools();
        }
    }

    /// Take `prev`'s failure window and count (the same server in the
    /// previous generation).
    fn carry_failures(&self, prev: &Peer) {
        for (to, from) in [
            (&self.last_fail, &prev.last_fail),
            (&self.window_start, &prev.window_start),
        ] {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.fails
            .store(prev.fails.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// A response arrived: the failure count starts over.
    pub fn succeed(&self) {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
            self.window_start.store(0, Ordering::Relaxed);
        }
    }

    /// Close every idle connection.
    fn clear_pools(&self) {
        for p in self.pools.iter() {
            p.lock().clear();
        }
    }

    /// The calling worker's idle pool.
    fn pool(&self) -> &Mutex<IdlePool> {
        &self.pools[crate::workers::index() % self.pools.len()]
    }

    /// Take an idle connection younger than `max_idle` from the calling
    /// worker's pool, if any, and only one that is still quiet: a pooled
    /// connection the origin closed or wrote to (stray bytes after its last
    /// response, which the next request would read as its answer) is closed.
    pub fn take_idle(&self, max_idle: Duration) -> Option<TcpStream> {
        let now = now_ms();
        let mut pool = self.pool().lock();
        while let Some((s, since)) = pool.pop() {
            if now.saturating_sub(since) < max_idle.as_millis() as u64 && quiet(&s) {
                return Some(s);
            }
            self.stats.pool_discards.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    /// Return a connection that finished a response cleanly, unless the
    /// origin has already sent more (it is then closed).
    pub fn put_idle(&self, s: TcpStream) {
        if !quiet(&s) {
            self.stats.pool_discards.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut pool = self.pool().lock();
        if pool.len() < self.pool_max {
            pool.push((s, now_ms()));
        }
    }

    /// Close the calling worker's idle connections that are past
    /// `max_idle`, closed by the origin or written to by it: run by each
    /// worker's sweeper, so that such a connection leaves the pool within a
    /// tick rather than when a request next finds it.
    pub fn sweep_idle(&self, now: u64, max_idle: Duration) {
        let mut pool = self.pool().lock();
        let before = pool.len();
        pool.retain(|(s, since)| {
            now.saturating_sub(*since) < max_idle.as_millis() as u64 && quiet(s)
        });
        let gone = before - pool.len();
        if gone > 0 {
            self.stats
                .pool_discards
                .fetch_add(gone as u64, Ordering::Relaxed);
        }
    }

    /// Idle pooled connections now, over all workers.
    pub fn idle_count(&self) -> usize {
        self.pools.iter().map(|p| p.lock().len()).sum()
    }

    /// Open a new connection with `timeout`.
    pub async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<TcpStream, crate::error::UpstreamFailure> {
        use crate::error::UpstreamFailure;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(timeout, TcpStream::connect(self.config.address)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => {
                tracing::debug!(server = %self.config.name, error = %e, "connect failed");
                Err(UpstreamFailure::Connect)
            }
            Err(_) => Err(UpstreamFailure::ConnectTimeout),
        }
    }
}

/// A peer reserved for one request: counts as active until dropped. It
/// borrows the peer from its [`Upstream`] (no reference count to touch on the
/// request path).
pub struct Lease<'a> {
    pub peer: &'a Peer,
    /// Tier (0 primary, 1 backup) and index, for "already tried" bookkeeping.
    pub id: PeerId,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // A connection's task stays on its worker, so this is the slot
        // `reserve` counted in.
        self.peer.release();
    }
}

/// Identifies a peer within its upstream: (tier, index).
pub type PeerId = (u8, u16);

/// Why no server could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPeer {
    /// Every server is down, failed out, unhealthy or already tried: 502.
    NoLive,
    /// Some server would do but is at `max_conns`: 503.
    Busy,
}

struct Tier {
    peers: Vec<Arc<Peer>>,
    balancer: Arc<dyn Balance>,
}

/// A named upstream group at one configuration generation.
pub struct Upstream {
    pub name: String,
    tiers: Vec<Tier>,
    pub hash_key: HashKey,
    pub health_check: Option<HealthCheckConfig>,
}

impl Upstream {
    /// Build from configuration; `old` supplies counters of servers that
    /// stay. `workers`: how many worker threads keep idle pools.
    pub fn new(name: &str, cfg: &UpstreamConfig, old: Option<&Upstream>, workers: usize) -> Self {
        let mut tiers = Vec::new();
        for backup in [false, true] {
            let servers: Vec<&ServerConfig> =
                cfg.servers.iter().filter(|s| s.backup == backup).collect();
            if servers.is_empty() {
                continue;
            }
            let peers: Vec<Arc<Peer>> = servers
                .iter()
                .map(|s| {
                    // A server that stays keeps its counters and, when it is
                    // still health-checked, its health verdict.
                    let prev = old.and_then(|o| {
                        o.peers()
                            .find(|p| p.config.address == s.address && p.config.backup == s.backup)
                    });
                    let stats = prev
                        .map(|p| p.stats.clone())
                        .unwrap_or_else(|| Arc::new(PeerStats::new(workers)));
                    let peer = Peer::new((*s).clone(), cfg.keepalive, stats, workers);
                    if let Some(p) = prev.filter(|_| cfg.health_check.is_some()) {
                        peer.healthy.store(p.healthy(), Ordering::Relaxed);
                    }
                    if let Some(p) = prev {
                        // And its passive failure state: a server out after
                        // max_fails stays out for its fail_timeout.
                        peer.carry_failures(p);
                    }
                    Arc::new(peer)
                })
                .collect();
            let balancer: Arc<dyn Balance> = match &cfg.strategy {
                Strategy::Custom(b) => b.clone(),
                Strategy::Builtin(n) => {
                    let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
                    let keys: Vec<String> = servers.iter().map(|s| s.address.to_string()).collect();
                    Arc::from(balance::builtin(*n, &weights, &keys, workers))
                }
            };
            tiers.push(Tier { peers, balancer });
        }
        Upstream {
            name: name.to_string(),
            tiers,
            hash_key: cfg.hash_key.clone(),
            health_check: cfg.health_check.clone(),
        }
    }

    /// Every server, primaries first.
    pub fn peers(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.tiers.iter().flat_map(|t| t.peers.iter())
    }

    /// Choose a server not in `tried`, reserving it against `max_conns`.
    /// Backups are considered only when no primary is available.
    pub fn select(
        &self,
        ctx: &Context<'_>,
        tried: &[PeerId],
        views: &mut Vec<PeerView>,
    ) -> Result<Lease<'_>, NoPeer> {
        let now = now_ms();
        let mut busy = false;
        for (t, tier) in self.tiers.iter().enumerate() {
            let t = t as u8;
            let mut full: Vec<usize> = Vec::new();
            // A few rounds: a server can fill up between the view and the reservation.
            for _ in 0..4 {
                views.clear();
                let mut any = false;
                let wants_active = tier.balancer.uses_active();
                for (i, p) in tier.peers.iter().enumerate() {
                    let id = (t, i as u16);
                    let mut available = p.usable(now) && !tried.contains(&id) && !full.contains(&i);
                    let max = p.config.max_conns;
                    if available && max > 0 && p.reserved.load(Ordering::Relaxed) >= max {
                        available = false;
                        busy = true;
                    }
                    // Summing the workers' counters reads lines other cores
                    // write: only for balancers that look at it.
                    let active = if wants_active { p.active() } else { 0 };
                    any |= available;
                    views.push(PeerView {
                        index: i,
                        weight: p.config.weight,
                        active,
                        available,
                    });
                }
                if !any {
                    break;
                }
                let Some(i) = tier.balancer.select(ctx, views) else {
                    break;
                };
                let Some(p) = tier
                    .peers
                    .get(i)
                    .filter(|_| views.get(i).is_some_and(|v| v.available))
                else {
                    tracing::error!(upstream = %self.name, index = i, "balancer chose an unavailable server; ignoring");
                    break;
                };
                if p.reserve() {
                    return Ok(Lease {
                        peer: p,
                        id: (t, i as u16),
                    });
                }
                busy = true;
                full.push(i);
            }
        }
        Err(if busy { NoPeer::Busy } else { NoPeer::NoLive })
    }

    /// A JSON summary for `/status` and `shoal ctl status`.
    pub fn status_json(&self) -> serde_json::Value {
        let now = now_ms();
        let servers: Vec<serde_json::Value> = self
            .peers()
            .map(|p| {
                let s = &p.stats;
                serde_json::json!({
                    "address": p.config.name,
                    "from": p.config.from,
                    "weight": p.config.weight,
                    "backup": p.config.backup,
                    "down": p.config.down,
                    "drain": p.config.drain,
                    "state": p.state(now),
                    "healthy": p.healthy(),
                    "failed_out": p.failed_out(now),
                    "fails": p.fails.load(Ordering::Relaxed),
                    "active": p.active(),
                    "idle": p.idle_count(),
                    "failures": s.failures.load(Ordering::Relaxed),
                    "pool_discards": s.pool_discards.load(Ordering::Relaxed),
                    "responses": {
                        "1xx": s.responses(0),
                        "2xx": s.responses(1),
                        "3xx": s.responses(2),
                        "4xx": s.responses(3),
                        "5xx": s.responses(4),
                    },
                })
            })
            .collect();
        serde_json::json!({ "name": self.name, "servers": servers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StrategyName, DEFAULT_KEEPALIVE};

    fn up(servers: Vec<ServerConfig>) -> Upstream {
        let cfg = UpstreamConfig {
            strategy: Strategy::Builtin(StrategyName::RoundRobin),
            hash_key: HashKey::Path,
            keepalive: DEFAULT_KEEPALIVE,
            servers,
            health_check: None,
        };
        Upstream::new("t", &cfg, None, 1)
    }

    fn srv(port: u16) -> ServerConfig {
        ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn ctx() -> Context<'static> {
        Context {
            client_ip: "127.0.0.1".parse().unwrap(),
            method: "GET",
            host: "",
            path: "/",
            key: b"",
        }
    }

    #[test]
    fn backup_only_when_primaries_are_out() {
        let u = up(vec![
            srv(1),
            ServerConfig {
                backup: true,
                ..srv(2)
            },
        ]);
        let mut v = Vec::new();
        let l = u.select(&ctx(), &[], &mut v).unwrap();
        assert_eq!(l.peer.address().port(), 1);
        drop(l);
        u.peers().next().unwrap().fail();
        let l = u.select(&ctx(), &[], &mut v).unwrap();
        assert_eq!(l.peer.address().port(), 2);
        assert_eq!(l.id, (1, 0));
    }

    #[test]
    fn max_conns_gives_busy() {
        let u = up(vec![ServerConfig {
            max_conns: 1,
            ..srv(1)
        }]);
        let mut v = Vec::new();
        let l = u.select(&ctx(), &[], &mut v).unwrap();
        assert_eq!(u.select(&ctx(), &[], &mut v).err(), Some(NoPeer::Busy));
        drop(l);
        assert!(u.select(&ctx(), &[], &mut v).is_ok());
    }

    #[test]
    fn max_fails_window_and_recovery() {
        let p = Peer::new(
            ServerConfig {
                max_fails: 2,
                fail_timeout: Duration::from_millis(200),
                ..srv(1)
            },
            4,
            Arc::new(PeerStats::new(1)),
            1,
        );
        p.fail();
        assert!(p.usable(now_ms()));
        p.fail();
        assert!(!p.usable(now_ms()));
        std::thread::sleep(Duration::from_millis(250));
        assert!(p.usable(now_ms()), "back after fail_timeout");
        // A failed probe takes it out again at once.
        p.fail();
        assert!(!p.usable(now_ms()));
        p.succeed();
        assert!(p.usable(now_ms()));
    }

    #[test]
    fn down_and_tried_are_skipped() {
        let u = up(vec![
            ServerConfig {
                down: true,
                ..srv(1)
            },
            srv(2),
            srv(3),
        ]);
        let mut v = Vec::new();
        let l = u.select(&ctx(), &[(0, 1)], &mut v).unwrap();
        assert_eq!(l.peer.address().port(), 3);
        assert_eq!(
            u.select(&ctx(), &[(0, 1), (0, 2)], &mut v).err(),
            Some(NoPeer::NoLive)
        );
    }
}
