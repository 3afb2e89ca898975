//! Balancing: the [`Balance`] trait that chooses a server for a request, and
//! nginx's built-in strategies implementing it (smooth weighted round robin,
//! `least_conn`, `ip_hash`, consistent `hash`, `random two`).
//!
//! A balancer sees every server of one tier (primary or backup) with an
//! `available` flag already computed from `down`, health, `max_fails` and
//! `max_conns`, and must return the index of an available one. Library users
//! implement [`Balance`] to get node-http-proxy's
//! `createServer(function (req, res, proxy) { ... })`.

use parking_lot::Mutex;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::StrategyName;
use crate::workers::PerWorker;

/// What a balancer may look at about the request.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The client's address (the key of `ip_hash`).
    pub client_ip: IpAddr,
    /// Request method (`GET`); empty for TCP connections.
    pub method: &'a str,
    /// Host header without port, lower-case; empty for TCP connections.
    pub host: &'a str,
    /// Request target (path and query); empty for TCP connections.
    pub path: &'a str,
    /// The configured hash key's value (path or header), for `hash`.
    pub key: &'a [u8],
}

/// One server as the balancer sees it.
#[derive(Debug, Clone, Copy)]
pub struct PeerView {
    /// Position in the tier's server list (stable for the config's lifetime).
    pub index: usize,
    /// Configured weight (at least 1).
    pub weight: u32,
    /// Requests or connections in flight to this server (0 when the
    /// balancer's [`Balance::uses_active`] says it does not look).
    pub active: usize,
    /// Whether the server may be chosen now.
    pub available: bool,
}

/// Chooses a server. Implementations must return the `index` of a peer whose
/// `available` is true, or `None` when none is acceptable.
pub trait Balance: Send + Sync + 'static {
    /// Pick one of `peers` for the request described by `ctx`.
    fn select(&self, ctx: &Context<'_>, peers: &[PeerView]) -> Option<usize>;

    /// Whether [`PeerView::active`] matters to this balancer. When false,
    /// `active` is passed as 0 and the proxy skips adding up the workers'
    /// counters on every request.
    fn uses_active(&self) -> bool {
        true
    }
}

/// Build a fresh balancer for a tier of `weights.len()` servers, used by
/// `workers` worker threads.
pub fn builtin(
    name: StrategyName,
    weights: &[u32],
    peer_keys: &[String],
    workers: usize,
) -> Box<dyn Balance> {
    let n = weights.len();
    match name {
        StrategyName::RoundRobin => Box::new(SmoothWeighted::per_worker(n, workers)),
        StrategyName::LeastConn => Box::new(LeastConn {
            rr: SmoothWeighted::per_worker(n, workers),
        }),
        StrategyName::IpHash => Box::new(IpHash {
            fallback: SmoothWeighted::per_worker(n, workers),
        }),
        StrategyName::Hash => Box::new(ConsistentHash::new(weights, peer_keys)),
        StrategyName::Random => Box::new(RandomTwo),
    }
}

/// nginx's smooth weighted round robin: each pick adds every available
/// server's weight to its running score, takes the highest, and subtracts the
/// total from the winner. Weights 1:2 give a, b, b, a, b, b... interleaved.
///
/// Like nginx without a shared `zone`, each worker keeps its own scores: the
/// sequence is exact per worker, and over all workers every server's share
/// is off by at most one pick per worker.
pub struct SmoothWeighted {
    current: PerWorker<Mutex<Vec<i64>>>,
}

impl SmoothWeighted {
    /// A round robin over `n` servers with one sequence.
    pub fn new(n: usize) -> Self {
        SmoothWeighted::per_worker(n, 1)
    }

    /// A round robin over `n` servers, one sequence per worker thread.
    pub fn per_worker(n: usize, workers: usize) -> Self {
        let current = PerWorker::<Mutex<Vec<i64>>>::new(workers);
        for c in current.iter() {
            c.lock().resize(n, 0);
        }
        SmoothWeighted { current }
    }

    fn pick(&self, peers: &[PeerView], filter: impl Fn(&PeerView) -> bool) -> Option<usize> {
        let mut cur = self.current.local().lock();
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for p in peers.iter().filter(|p| p.available && filter(p)) {
            let Some(c) = cur.get_mut(p.index) else {
                continue;
            };
            *c += p.weight as i64;
            total += p.weight as i64;
            if best.is_none_or(|(_, bv)| *c > bv) {
                best = Some((p.index, *c));
            }
        }
        let (b, _) = best?;
        if let Some(c) = cur.get_mut(b) {
            *c -= total;
        }
        Some(b)
    }
}

impl Balance for SmoothWeighted {
    fn select(&self, _ctx: &Context<'_>, peers: &[PeerView]) -> Option<usize> {
        self.pick(peers, |_| true)
    }

    fn uses_active(&self) -> bool {
        false
    }
}

/// nginx's `least_conn`: the fewest active requests relative to weight;
/// ties are broken by smooth weighted round robin.
pub struct LeastConn {
    rr: SmoothWeighted,
}

impl LeastConn {
    /// A least-connections balancer over `n` servers.
    pub fn new(n: usize) -> Self {
        LeastConn {
            rr: SmoothWeighted::new(n),
        }
    }
}

/// Whether `a` carries fewer active requests per weight than `b`.
fn less_loaded(a: &PeerView, b: &PeerView) -> std::cmp::Ordering {
    let l = a.active as u128 * b.weight as u128;
    let r = b.active as u128 * a.weight as u128;
    l.cmp(&r)
}

impl Balance for LeastConn {
    fn select(&self, _ctx: &Context<'_>, peers: &[PeerView]) -> Option<usize> {
        let best = peers
            .iter()
            .filter(|p| p.available)
            .min_by(|a, b| less_loaded(a, b))?;
        let best = *best;
        self.rr.pick(peers, |p| {
            less_loaded(p, &best) == std::cmp::Ordering::Equal
        })
    }
}

/// nginx's `ip_hash`: the first three octets of an IPv4 address (the whole
/// IPv6 address) pick a server by weight; if it is unavailable the hash is
/// stirred again (20 times), then round robin takes over.
pub struct IpHash {
    fallback: SmoothWeighted,
}

impl IpHash {
    /// An ip_hash balancer over `n` servers.
    pub fn new(n: usize) -> Self {
        IpHash {
            fallback: SmoothWeighted::new(n),
        }
    }
}

impl Balance for IpHash {
    fn select(&self, ctx: &Context<'_>, peers: &[PeerView]) -> Option<usize> {
        let octets: Vec<u8> = match ctx.client_ip {
            IpAddr::V4(v4) => v4.octets()[..3].to_vec(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.octets()[..3].to_vec(),
                None => v6.octets().to_vec(),
            },
        };
        let total: u64 = peers.iter().map(|p| p.weight as u64).sum();
        if total == 0 {
            return None;
        }
        let mut hash: u64 = 89;
        for _ in 0..20 {
            for &o in &octets {
                hash = (hash * 113 + o as u64) % 6271;
            }
            let mut w = hash % total;
            let mut chosen = None;
            for p in peers {
                if w < p.weight as u64 {
                    chosen = Some(p);
                    break;
                }
                w -= p.weight as u64;
            }
            if let Some(p) = chosen {
                if p.available {
                    return Some(p.index);
                }
            }
        }
        self.fallback.select(ctx, peers)
    }

    fn uses_active(&self) -> bool {
        false
    }
}

/// FNV-1a, 64 bit, followed by murmur3's finaliser so that similar keys
/// spread over the ring: small, stable across runs and builds.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// nginx's `hash ... consistent` (ketama): 160 points per unit of weight on a
/// ring; a key goes to the first point at or after its hash, skipping
/// unavailable servers. Adding or removing one server moves only its share.
pub struct ConsistentHash {
    ring: Vec<(u64, usize)>,
}

impl ConsistentHash {
    /// A ring over servers with `weights`, named by `keys` (their addresses).
    pub fn new(weights: &[u32], keys: &[String]) -> Self {
        let mut ring = Vec::new();
        for (i, (w, k)) in weights.iter().zip(keys).enumerate() {
            for j in 0..(*w as usize * 160) {
                ring.push((fnv1a(format!("{k}-{j}").as_bytes()), i));
            }
        }
        ring.sort_unstable();
        ConsistentHash { ring }
    }
}

impl Balance for ConsistentHash {
    fn select(&self, _ctx: &Context<'_>, peers: &[PeerView]) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let h = fnv1a(_ctx.key);
        let start = self.ring.partition_point(|(p, _)| *p < h);
        let n = self.ring.len();
        for k in 0..n {
            let (_, i) = self.ring[(start + k) % n];
            if peers.get(i).is_some_and(|p| p.available) {
                return Some(i);
            }
        }
        None
    }

    fn uses_active(&self) -> bool {
        false
    }
}

/// nginx's `random two least_conn`: two servers drawn by weight, the less
/// loaded one wins.
pub struct RandomTwo;

fn weighted_draw(peers: &[PeerView]) -> Option<usize> {
    use rand::Rng;
    let total: u64 = peers
        .iter()
        .filter(|p| p.available)
        .map(|p| p.weight as u64)
        .sum();
    if total == 0 {
        return None;
    }
    let mut w = rand::rng().random_range(0..total);
    for p in peers.iter().filter(|p| p.available) {
        if w < p.weight as u64 {
            return Some(p.index);
        }
        w -= p.weight as u64;
    }
    None
}

impl Balance for RandomTwo {
    fn select(&self, _ctx: &Context<'_>, peers: &[PeerView]) -> Option<usize> {
        let a = weighted_draw(peers)?;
        let b = weighted_draw(peers).unwrap_or(a);
        let (pa, pb) = (
            peers.iter().find(|p| p.index == a)?,
            peers.iter().find(|p| p.index == b)?,
        );
        Some(if less_loaded(pb, pa) == std::cmp::Ordering::Less {
            b
        } else {
            a
        })
    }
}

/// A round-robin counter usable by simple custom balancers.
#[derive(Default)]
pub struct Counter(AtomicUsize);

impl Counter {
    /// The next value (wrapping).
    pub fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(weights: &[u32]) -> Vec<PeerView> {
        weights
            .iter()
            .enumerate()
            .map(|(index, &weight)| PeerView {
                index,
                weight,
                active: 0,
                available: true,
            })
            .collect()
    }

    fn ctx(ip: &str, key: &'static [u8]) -> Context<'static> {
        Context {
            client_ip: ip.parse().unwrap(),
            method: "GET",
            host: "",
            path: "/",
            key,
        }
    }

    #[test]
    fn smooth_weighted_interleaves_like_nginx() {
        // nginx's documented sequence for weights 5,1,1: a a b a c a a.
        let b = SmoothWeighted::new(3);
        let v = views(&[5, 1, 1]);
        let seq: Vec<usize> = (0..7)
            .map(|_| b.select(&ctx("1.2.3.4", b""), &v).unwrap())
            .collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weights_ten_twenty_split_one_to_two() {
        let b = SmoothWeighted::new(2);
        let v = views(&[10, 20]);
        let mut n = [0; 2];
        for _ in 0..300 {
            n[b.select(&ctx("1.2.3.4", b""), &v).unwrap()] += 1;
        }
        assert_eq!(n, [100, 200]);
    }

    #[test]
    fn unavailable_peers_are_skipped() {
        let b = SmoothWeighted::new(2);
        let mut v = views(&[1, 1]);
        v[0].available = false;
        for _ in 0..5 {
            assert_eq!(b.select(&ctx("1.2.3.4", b""), &v), Some(1));
        }
        v[1].available = false;
        assert_eq!(b.select(&ctx("1.2.3.4", b""), &v), None);
    }

    #[test]
    fn least_conn_prefers_idle_and_respects_weight() {
        let b = LeastConn::new(2);
        let mut v = views(&[1, 1]);
        v[0].active = 3;
        assert_eq!(b.select(&ctx("1.2.3.4", b""), &v), Some(1));
        // weight 4 with 3 active is lighter than weight 1 with 1 active.
        let mut v = views(&[4, 1]);
        v[0].active = 3;
        v[1].active = 1;
        assert_eq!(b.select(&ctx("1.2.3.4", b""), &v), Some(0));
    }

    #[test]
    fn ip_hash_uses_three_octets() {
        let b = IpHash::new(3);
        let v = views(&[1, 1, 1]);
        let a = b.select(&ctx("10.1.2.3", b""), &v).unwrap();
        for last in [4, 99, 250] {
            assert_eq!(
                b.select(&ctx(&format!("10.1.2.{last}"), b""), &v).unwrap(),
                a
            );
        }
        // Different /24s spread over the servers.
        let spread: std::collections::HashSet<usize> = (0..50)
            .map(|i| b.select(&ctx(&format!("10.1.{i}.1"), b""), &v).unwrap())
            .collect();
        assert_eq!(spread.len(), 3);
    }

    #[test]
    fn consistent_hash_is_stable_and_moves_little() {
        let keys: Vec<String> = (0..4).map(|i| format!("127.0.0.1:80{i}")).collect();
        let b = ConsistentHash::new(&[1, 1, 1, 1], &keys);
        let mut v = views(&[1, 1, 1, 1]);
        let paths: Vec<String> = (0..400).map(|i| format!("/item/{i}")).collect();
        let pick = |v: &[PeerView], p: &str| {
            let c = Context {
                client_ip: "1.1.1.1".parse().unwrap(),
                method: "GET",
                host: "",
                path: p,
                key: p.as_bytes(),
            };
            b.select(&c, v).unwrap()
        };
        let before: Vec<usize> = paths.iter().map(|p| pick(&v, p)).collect();
        v[2].available = false;
        let after: Vec<usize> = paths.iter().map(|p| pick(&v, p)).collect();
        for (x, y) in before.iter().zip(&after) {
            if *x != 2 {
                assert_eq!(x, y, "only keys of the removed server move");
            } else {
                assert_ne!(*y, 2);
            }
        }
    }

    #[test]
    fn random_two_picks_available() {
        let b = RandomTwo;
        let mut v = views(&[1, 1, 1]);
        v[1].available = false;
        for _ in 0..50 {
            assert_ne!(b.select(&ctx("1.1.1.1", b""), &v), Some(1));
        }
    }
}
