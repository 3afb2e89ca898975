//! Service discovery over DNS: servers whose addresses come from A/AAAA
//! records (`resolve = true`, nginx's `resolve`), SRV records (`service`,
//! nginx's `service=`) or DNS-SD browsing over unicast DNS (`discover`,
//! RFC 6763: PTR to instances, each instance's SRV to a target and port).
//!
//! Each such entry of an upstream is a [`Source`]. One background task
//! ([`run`]) re-queries every source when its records' TTL (or the
//! `[resolver] valid` override) runs out. When what a source finds changes,
//! the running [`Generation`] is rebuilt with the new server set and swapped
//! in, exactly as a reload does: servers that stay keep their counters and
//! health state (matched by address), new ones start fresh, and requests in
//! flight to a server that went away finish on the generation they loaded.
//! A failed or empty lookup keeps the last addresses (as nginx does), is
//! logged and counted in `shoal_proxy_dns_lookups_total{result}`.
//!
//! The lookups themselves are in [`crate::discover::query`].

pub mod query;

use parking_lot::{Mutex, MutexGuard};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use shoal_core::Shutdown;

use crate::config::{Config, FileServer, ServerConfig};
use crate::metrics::Metrics;
use crate::state::Shared;
use query::{Hit, Outcome};

/// `[resolver]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileResolver {
    /// `IP` or `IP:PORT` (port 53 when absent); empty: /etc/resolv.conf.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Re-query at this interval instead of the records' TTL (nginx's
    /// `valid=`).
    #[serde(default, with = "humantime_serde")]
    pub valid: Option<Duration>,
    /// How long one query may take (per attempt).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// The validated `[resolver]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Empty: the system's (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    /// Overrides the records' TTL when set.
    pub valid: Option<Duration>,
    pub timeout: Duration,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            nameservers: Vec::new(),
            valid: None,
            timeout: Duration::from_secs(5),
        }
    }
}

impl ResolverSettings {
    /// Validate `[resolver]`; errors name the key under `resolver.`.
    pub fn from_file(f: Option<&FileResolver>) -> Result<Self, (&'static str, String)> {
        let mut s = ResolverSettings::default();
        let Some(f) = f else { return Ok(s) };
        for n in &f.nameservers {
            let a = match n.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => match n.parse::<IpAddr>() {
                    Ok(ip) => SocketAddr::new(ip, 53),
                    Err(_) => {
                        return Err((
                            "nameservers",
                            format!("{n:?}: expected an IP address, optionally with :PORT"),
                        ))
                    }
                },
            };
            s.nameservers.push(a);
        }
        if f.valid.is_some_and(|d| d.is_zero()) {
            return Err(("valid", "must be more than 0".into()));
        }
        s.valid = f.valid;
        if let Some(t) = f.timeout {
            if t.is_zero() {
                return Err(("timeout", "must be more than 0".into()));
            }
            s.timeout = t;
        }
        Ok(s)
    }
}

/// What a source looks up.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// A and AAAA records of `host`; every address with `port`.
    Name { host: String, port: u16 },
    /// SRV records of this name.
    Service(String),
    /// DNS-SD: PTR records of this service type, then each instance's SRV.
    Browse(String),
}

/// One upstream server entry whose addresses come from DNS.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub upstream: String,
    pub lookup: Lookup,
    /// The entry's settings, given to every server it finds.
    pub template: ServerConfig,
    /// Whether the entry set `weight` (else SRV weights are used).
    pub weight_set: bool,
    /// Hash strategies take no backups: SRV targets past the lowest
    /// priority are left out rather than made backups.
    pub primaries_only: bool,
}

type Key = (String, Lookup);

impl Source {
    /// The source an entry describes, or `None` for an ordinary server
    /// (resolved once, at load). Errors name the key within the entry.
    pub fn from_entry(
        upstream: &str,
        s: &FileServer,
        template: ServerConfig,
        hashed: bool,
    ) -> Result<Option<Source>, (&'static str, String)> {
        let lookup = match (&s.service, &s.discover) {
            (Some(_), Some(_)) => {
                return Err(("discover", "give `service` or `discover`, not both".into()))
            }
            (Some(n), None) | (None, Some(n)) => {
                let key = if s.service.is_some() {
                    "service"
                } else {
                    "discover"
                };
                if n.trim_end_matches('.').is_empty() || n.contains(char::is_whitespace) {
                    return Err((key, format!("{n:?} is not a DNS name")));
                }
                match (s.service.is_some(), s.address.is_empty()) {
                    (true, true) => Lookup::Service(n.clone()),
                    // nginx's form: `server backend.example.com service=http`
                    // looks up _http._tcp.backend.example.com, and
                    // `service=_http._tcp` (with a dot) is joined as is.
                    (true, false) => {
                        if s.address.contains(':') {
                            return Err((
                                "address",
                                format!(
                                    "{:?}: with `service`, a host name without a port (SRV records give ports)",
                                    s.address
                                ),
                            ));
                        }
                        Lookup::Service(if n.contains('.') {
                            format!("{n}.{}", s.address)
                        } else {
                            format!("_{n}._tcp.{}", s.address)
                        })
                    }
                    (false, false) => {
                        return Err((
                            "address",
                            "not with `discover`: the records give addresses and ports".into(),
                        ))
                    }
                    (false, true) => Lookup::Browse(n.clone()),
                }
            }
            (None, None) => {
                if s.address.is_empty() {
                    return Err((
                        "address",
                        "missing: give `address`, `service` or `discover`".into(),
                    ));
                }
                // An IP address needs no resolving (nginx ignores `resolve` too).
                if !s.resolve || s.address.parse::<SocketAddr>().is_ok() {
                    return Ok(None);
                }
                let bad = || ("address", format!("{:?}: expected HOST:PORT", s.address));
                let (host, port) = s.address.rsplit_once(':').ok_or_else(bad)?;
                let port = port.parse::<u16>().map_err(|_| bad())?;
                if host.is_empty() || host.contains(char::is_whitespace) {
                    return Err(bad());
                }
                Lookup::Name {
                    host: host.to_string(),
                    port,
                }
            }
        };
        Ok(Some(Source {
            upstream: upstream.to_string(),
            lookup,
            template,
            weight_set: s.weight.is_some(),
            primaries_only: hashed,
        }))
    }

    /// Where its servers came from, as shown in `/status`.
    pub fn label(&self) -> String {
        match &self.lookup {
            Lookup::Name { host, port } => format!("{host}:{port}"),
            Lookup::Service(n) => format!("service {n}"),
            Lookup::Browse(n) => format!("discover {n}"),
        }
    }

    fn key(&self) -> Key {
        (self.upstream.clone(), self.lookup.clone())
    }

    /// The servers `hits` make, with this entry's settings.
    fn servers(&self, hits: &[Hit]) -> Vec<ServerConfig> {
        let from = self.label();
        // With `backup` on the entry, nginx makes the lowest priority
        // backups and ignores the rest; so do hash strategies, which take
        // no backups at all.
        let primaries_only = self.primaries_only || self.template.backup;
        hits.iter()
            .filter(|h| !(h.backup && primaries_only))
            .map(|h| ServerConfig {
                name: h.address.to_string(),
                address: h.address,
                weight: match h.weight {
                    Some(w) if !self.weight_set => u32::from(w).max(1),
                    _ => self.template.weight,
                },
                backup: self.template.backup || h.backup,
                from: Some(from.clone()),
                ..self.template.clone()
            })
            .collect()
    }
}

/// The text that finds an entry's line in the file for an error: its
/// address, service or DNS-SD type.
pub fn hint(s: &FileServer) -> String {
    [Some(&s.address), s.service.as_ref(), s.discover.as_ref()]
        .into_iter()
        .flatten()
        .find(|h| !h.is_empty())
        .cloned()
        .unwrap_or_default()
}

/// What one source last found.
#[derive(Debug)]
struct Entry {
    /// `None` until a lookup first succeeds.
    hits: Option<Vec<Hit>>,
    /// When to query again.
    due: Instant,
    /// The last lookup's failure, cleared by a success.
    error: Option<String>,
}

impl Entry {
    /// Not yet looked up; due at `due`.
    fn new(due: Instant) -> Entry {
        Entry {
            hits: None,
            due,
            error: None,
        }
    }
}

/// The discovery state a running proxy shares (in [`Shared`]).
pub struct Discovery {
    entries: Mutex<HashMap<Key, Entry>>,
    /// Held while a generation is built and swapped in, by a reload, a
    /// runtime server edit or a DNS change, so that none loses another's
    /// work.
    swap: Mutex<()>,
    resolver: Mutex<Option<(ResolverSettings, hickory_resolver::TokioResolver)>>,
    wake: Notify,
    /// Where lookups and DNS-made generations are counted.
    metrics: Arc<Metrics>,
}

/// `result` label values of `shoal_proxy_dns_lookups_total`, in the order
/// of [`Metrics::dns_lookups`].
pub const RESULTS: [&str; 3] = ["ok", "empty", "failed"];

impl Discovery {
    /// No sources yet; counts into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Discovery {
            entries: Mutex::new(HashMap::new()),
            swap: Mutex::new(()),
            resolver: Mutex::new(None),
            wake: Notify::new(),
            metrics,
        }
    }

    /// Held by whoever swaps in a generation (see [`Discovery::adopt`]).
    pub fn hold(&self) -> MutexGuard<'_, ()> {
        self.swap.lock()
    }

    /// Before the first generation: look every source up once (for at most
    /// the resolver's `timeout`), so that the proxy starts with what DNS
    /// says; a source that does not resolve leaves its servers out.
    pub async fn start(&self, config: &mut Config) {
        if config.discovery.is_empty() {
            return;
        }
        let sources = config.discovery.clone();
        // Bounded by one query's timeout: a name server that does not
        // answer must not hold the start up (the background task goes on).
        let limit = config.resolver.timeout;
        if tokio::time::timeout(limit, self.refresh(&sources, &config.resolver))
            .await
            .is_err()
        {
            tracing::warn!(
                ?limit,
                "DNS did not answer at start; servers from it join when it does"
            );
        }
        *config = self.adopt(config.clone());
    }

    /// Fill `config` (a reload's, or a DNS change's copy of the running
    /// one) with the servers its sources found so far; sources it adds are
    /// queried at once by the background task. Call with [`Discovery::hold`].
    pub fn adopt(&self, mut config: Config) -> Config {
        let mut entries = self.entries.lock();
        let mut new = false;
        for s in &config.discovery {
            entries.entry(s.key()).or_insert_with(|| {
                new = true;
                Entry::new(Instant::now())
            });
        }
        for (name, u) in config.upstreams.iter_mut() {
            u.servers.retain(|s| s.from.is_none());
            for src in config.discovery.iter().filter(|s| &s.upstream == name) {
                if let Some(hits) = entries.get(&src.key()).and_then(|e| e.hits.as_ref()) {
                    u.servers.extend(src.servers(hits));
                }
            }
        }
        drop(entries);
        if new {
            self.wake.notify_one();
        }
        config
    }

    /// Query `sources` now and record what they found; returns whether any
    /// source's addresses changed.
    async fn refresh(&self, sources: &[Source], settings: &ResolverSettings) -> bool {
        let resolver = match self.resolver(settings) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the DNS resolver");
                let mut entries = self.entries.lock();
                for s in sources {
                    self.metrics.dns_lookups[query::FAILED].fetch_add(1, Ordering::Relaxed);
                    let due = Instant::now() + retry_after(settings);
                    let en = entries.entry(s.key()).or_insert_with(|| Entry::new(due));
                    en.error = Some(e.clone());
                    en.due = due;
                }
                return false;
            }
        };
        let outcomes = futures::future::join_all(
            sources
                .iter()
                .map(|s| query::lookup(&resolver, &s.lookup, settings.timeout)),
        )
        .await;
        let mut entries = self.entries.lock();
        let mut changed = false;
        for (s, outcome) in sources.iter().zip(outcomes) {
            let now = Instant::now();
            let i = outcome.result_index();
            let e = entries.entry(s.key()).or_insert_with(|| Entry::new(now));
            let (i, wait) = match outcome {
                Outcome::Found { mut hits, ttl } => {
                    hits.sort();
                    hits.dedup();
                    if e.hits.as_ref() != Some(&hits) {
                        tracing::info!(upstream = %s.upstream, source = %s.label(),
                            addresses = ?hits.iter().map(|h| h.address).collect::<Vec<_>>(),
                            "DNS: servers changed");
                        e.hits = Some(hits);
                        changed = true;
                    }
                    e.error = None;
                    (i, settings.valid.unwrap_or(ttl))
                }
                Outcome::Empty(why) | Outcome::Failed(why) => {
                    let keeping = if e.hits.is_some() {
                        "keeping the last known servers"
                    } else {
                        "no servers from it yet"
                    };
                    tracing::warn!(upstream = %s.upstream, source = %s.label(), error = %why,
                        "DNS lookup failed or found nothing; {keeping}");
                    e.error = Some(why);
                    (i, retry_after(settings))
                }
            };
            self.metrics.dns_lookups[i].fetch_add(1, Ordering::Relaxed);
            e.due = now + wait.clamp(MIN_INTERVAL, MAX_INTERVAL);
        }
        changed
    }

    /// The resolver for `settings`, built on first use or when they change.
    fn resolver(
        &self,
        settings: &ResolverSettings,
    ) -> Result<hickory_resolver::TokioResolver, String> {
        let mut r = self.resolver.lock();
        if let Some((s, res)) = r.as_ref() {
            if s == settings {
                return Ok(res.clone());
            }
        }
        let res = query::resolver(settings)?;
        *r = Some((settings.clone(), res.clone()));
        Ok(res)
    }

    /// When the next of `sources` is due (one never looked up: now).
    fn next_due(&self, sources: &[Source]) -> Option<Instant> {
        let entries = self.entries.lock();
        let now = Instant::now();
        sources
            .iter()
            .map(|s| entries.get(&s.key()).map_or(now, |e| e.due))
            .min()
    }

    /// Forget what sources no longer configured found. Call with
    /// [`Discovery::hold`], so that `sources` are the running generation's
    /// and not the one a reload is about to replace.
    fn forget_others(&self, sources: &[Source]) {
        let keys: Vec<Key> = sources.iter().map(Source::key).collect();
        self.entries.lock().retain(|k, _| keys.contains(k));
    }

    /// The `discovery` part of `/status`: each source, what it found, and
    /// its last error.
    pub fn status_json(&self, config: &Config) -> serde_json::Value {
        let entries = self.entries.lock();
        let now = Instant::now();
        let rows: Vec<serde_json::Value> = config
            .discovery
            .iter()
            .map(|s| {
                let e = entries.get(&s.key());
                let servers: Vec<String> = e
                    .and_then(|e| e.hits.as_ref())
                    .map(|h| s.servers(h).iter().map(|c| c.name.clone()).collect())
                    .unwrap_or_default();
                serde_json::json!({
                    "upstream": s.upstream,
                    "source": s.label(),
                    "servers": servers,
                    "error": e.and_then(|e| e.error.clone()),
                    "next_lookup_in_ms": e.map(|e| e.due.saturating_duration_since(now).as_millis() as u64),
                })
            })
            .collect();
        serde_json::Value::Array(rows)
    }
}

/// Re-query no sooner than this (a TTL of 0 is common for local records)...
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// ... and no later than this.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// After a failed or empty lookup: `valid` if set, else 5 s.
fn retry_after(settings: &ResolverSettings) -> Duration {
    settings.valid.unwrap_or(Duration::from_secs(5))
}

/// Re-query sources as they fall due and swap in a new generation when
/// their answers change, until `stop` fires.
pub async fn run(shared: Arc<Shared>, stop: Shutdown) {
    let d = &shared.discovery;
    loop {
        let gen = shared.current.load_full();
        let next = d.next_due(&gen.config.discovery);
        let sleep = match next {
            Some(t) => tokio::time::sleep_until(t),
            None => tokio::time::sleep(MAX_INTERVAL),
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = d.wake.notified() => continue,
            _ = sleep => {}
        }
        let gen = shared.current.load_full();
        let now = Instant::now();
        let due: Vec<Source> = {
            let entries = d.entries.lock();
            gen.config
                .discovery
                .iter()
                .filter(|s| entries.get(&s.key()).is_none_or(|e| e.due <= now))
                .cloned()
                .collect()
        };
        if due.is_empty() {
            continue;
        }
        if d.refresh(&due, &gen.config.resolver).await {
            swap(&shared);
        }
        {
            let _hold = d.hold();
            d.forget_others(&shared.current.load().config.discovery);
        }
    }
}

/// Swap in a generation with the servers DNS gave, if they differ.
fn swap(shared: &Shared) {
    let d = &shared.discovery;
    let _hold = d.hold();
    let old = shared.current.load_full();
    let config = d.adopt(old.config.clone());
    let same = config.upstreams.iter().map(|(n, u)| (n, &u.servers)).eq(old
        .config
        .upstreams
        .iter()
        .map(|(n, u)| (n, &u.servers)));
    if same {
        return;
    }
    let n = shared.install(config, &old);
    old.tasks.trigger();
    d.metrics.dns_updates.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        generation = n,
        "servers changed in DNS; new generation swapped in"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(servers: &str, extra: &str) -> crate::error::Result<Config> {
        Config::parse(
            Path::new("t.toml"),
            &format!("{extra}\n[[listeners]]\naddress = \"127.0.0.1:8080\"\n\n[upstreams.web]\nservers = [ {servers} ]\n\n[[routes]]\nupstream = \"web\"\n"),
        )
    }

    #[test]
    fn entries_become_sources_or_static_servers() {
        let c = parse(
            r#"{ address = "web.internal:8080", resolve = true, weight = 3 }, { service = "_http._tcp.web.internal" }, { discover = "_http._tcp.example.internal", backup = true }, { address = "127.0.0.1:81", resolve = true }"#,
            "",
        )
        .unwrap();
        let labels: Vec<String> = c.discovery.iter().map(Source::label).collect();
        assert_eq!(
            labels,
            [
                "web.internal:8080",
                "service _http._tcp.web.internal",
                "discover _http._tcp.example.internal"
            ]
        );
        assert_eq!(c.discovery[0].template.weight, 3);
        assert!(c.discovery[0].weight_set && !c.discovery[1].weight_set);
        assert!(c.discovery[2].template.backup);
        // nginx's way of naming a service: on the host, short or dotted.
        let c2 = parse(
            r#"{ address = "backend.example.com", service = "http" }, { address = "example.com", service = "server1.backend" }"#,
            "",
        )
        .unwrap();
        let labels: Vec<String> = c2.discovery.iter().map(Source::label).collect();
        assert_eq!(
            labels,
            [
                "service _http._tcp.backend.example.com",
                "service server1.backend.example.com"
            ]
        );
        // An IP address with `resolve` is a static server.
        assert_eq!(c.upstreams["web"].servers.len(), 1);
        assert_eq!(c.resolver, ResolverSettings::default());
    }

    #[test]
    fn an_upstream_fed_only_by_dns_is_valid_and_starts_empty() {
        let c = parse(r#"{ service = "_http._tcp.web.internal" }"#, "").unwrap();
        assert!(c.upstreams["web"].servers.is_empty());
        c.check().unwrap();
    }

    #[test]
    fn mistakes_name_the_key() {
        for (servers, key, says) in [
            (
                r#"{ address = "a.internal:80", service = "http" }"#,
                "servers[0].address",
                "without a port",
            ),
            (
                r#"{ address = "a.internal", discover = "_x._tcp.a" }"#,
                "servers[0].address",
                "not with `discover`",
            ),
            (
                r#"{ service = "_x._tcp.a", discover = "_x._tcp.b" }"#,
                "servers[0].discover",
                "not both",
            ),
            (
                r#"{ address = "a.internal", resolve = true }"#,
                "servers[0].address",
                "HOST:PORT",
            ),
            (r#"{ weight = 2 }"#, "servers[0].address", "missing"),
        ] {
            let e = parse(servers, "").unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{servers}: {e}");
        }
        let e = parse(
            r#"{ service = "_x._tcp.a" }"#,
            "[resolver]\nnameservers = [\"localhost\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("resolver.nameservers"), "{e}");
    }

    #[test]
    fn runtime_edits_refuse_servers_found_over_dns() {
        use crate::servers::{apply, ServerEdit};
        let mut c = parse(
            r#"{ address = "127.0.0.1:81" }, { service = "_x._tcp.a" }"#,
            "",
        )
        .unwrap();
        let src = c.discovery[0].clone();
        let hit = Hit {
            address: SocketAddr::from(([127, 0, 0, 2], 80)),
            weight: None,
            backup: false,
        };
        c.upstreams
            .get_mut("web")
            .unwrap()
            .servers
            .extend(src.servers(&[hit]));
        let edit = ServerEdit::Remove {
            address: "127.0.0.2:80".into(),
        };
        let e = apply(&mut c, "web", &edit).unwrap_err().to_string();
        assert!(e.contains("found over DNS (service _x._tcp.a)"), "{e}");
        let edit = ServerEdit::Remove {
            address: "127.0.0.1:81".into(),
        };
        apply(&mut c, "web", &edit).expect("a static server can go");
    }

    #[test]
    fn resolver_settings_parse() {
        let c = parse(
            r#"{ service = "_x._tcp.a" }"#,
            "[resolver]\nnameservers = [\"127.0.0.1:5353\", \"::1\"]\nvalid = \"30s\"\ntimeout = \"2s\"",
        )
        .unwrap();
        assert_eq!(
            c.resolver.nameservers,
            [
                "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(c.resolver.valid, Some(Duration::from_secs(30)));
        assert_eq!(c.resolver.timeout, Duration::from_secs(2));
    }

    #[test]
    fn srv_hits_take_entry_settings_and_priorities() {
        let c = parse(r#"{ service = "_x._tcp.a", max_fails = 4 }"#, "").unwrap();
        let src = &c.discovery[0];
        let hit = |port, weight, backup| Hit {
            address: SocketAddr::from(([127, 0, 0, 2], port)),
            weight: Some(weight),
            backup,
        };
        let s = src.servers(&[hit(1, 0, false), hit(2, 30, true)]);
        assert_eq!((s[0].weight, s[0].backup, s[0].max_fails), (1, false, 4));
        assert_eq!((s[1].weight, s[1].backup), (30, true));
        assert_eq!(s[1].from.as_deref(), Some("service _x._tcp.a"));
        // Hash strategies take no backups: higher priorities are left out.
        let c = parse(r#"{ service = "_x._tcp.a", weight = 7 }"#, "").unwrap();
        let mut src = c.discovery[0].clone();
        src.primaries_only = true;
        let s = src.servers(&[hit(1, 0, false), hit(2, 30, true)]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].weight, 7);
        // `backup` on the entry: the lowest priority are backups, the rest
        // left out (nginx).
        let c = parse(
            r#"{ address = "127.0.0.1:80" }, { service = "_x._tcp.a", backup = true }"#,
            "",
        )
        .unwrap();
        let s = c.discovery[0].servers(&[hit(1, 0, false), hit(2, 30, true)]);
        assert_eq!(s.len(), 1);
        assert!(s[0].backup);
        assert_eq!(s[0].address.port(), 1);
    }
}
