//! The DNS queries behind discovery, with hickory-resolver: A/AAAA for a
//! name, SRV for a service (targets resolved in turn), PTR then SRV for a
//! DNS-SD service type. Each answers an [`Outcome`]: the addresses found
//! with the shortest TTL among the records used, or why there are none.

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use super::{Lookup, ResolverSettings};

/// One address a source found.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hit {
    pub address: SocketAddr,
    /// The SRV weight, for SRV-found addresses.
    pub weight: Option<u16>,
    /// An SRV target of a priority past the lowest found.
    pub backup: bool,
}

/// What one lookup of a source gave.
#[derive(Debug)]
pub enum Outcome {
    /// Addresses, and how long the records are valid (their least TTL).
    Found { hits: Vec<Hit>, ttl: Duration },
    /// The names exist but give no address (NXDOMAIN, no records, or SRV
    /// targets that do not resolve).
    Empty(String),
    /// The query failed (time-out, refused, server failure).
    Failed(String),
}

/// [`Outcome::result_index`] of a failed lookup.
pub const FAILED: usize = 2;

impl Outcome {
    /// Index into [`super::RESULTS`].
    pub fn result_index(&self) -> usize {
        match self {
            Outcome::Found { .. } => 0,
            Outcome::Empty(_) => 1,
            Outcome::Failed(_) => FAILED,
        }
    }
}

enum Miss {
    Empty(String),
    Failed(String),
}

impl From<NetError> for Miss {
    fn from(e: NetError) -> Miss {
        if e.is_no_records_found() {
            Miss::Empty(e.to_string())
        } else {
            Miss::Failed(e.to_string())
        }
    }
}

/// A resolver asking `settings.nameservers` (or the system's), never the
/// hosts file (as nginx's and HAProxy's resolvers do not).
pub fn resolver(s: &ResolverSettings) -> Result<TokioResolver, String> {
    let (config, mut opts) = if s.nameservers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("reading the system's resolver configuration: {e}"))?
    } else {
        let servers = s
            .nameservers
            .iter()
            .map(|a| {
                let mut n = NameServerConfig::udp_and_tcp(a.ip());
                for c in &mut n.connections {
                    c.port = a.port();
                }
                n
            })
            .collect();
        (
            ResolverConfig::from_parts(None, vec![], servers),
            ResolverOpts::default(),
        )
    };
    opts.timeout = s.timeout;
    opts.attempts = 2;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| format!("building the DNS resolver: {e}"))
}

/// Look `what` up, within a bound of a few query timeouts.
pub async fn lookup(r: &TokioResolver, what: &Lookup, timeout: Duration) -> Outcome {
    // The re-query interval is ours (TTL or `valid`): always ask the server.
    r.clear_cache();
    let found = tokio::time::timeout(timeout * 4, async {
        match what {
            Lookup::Name { host, port } => {
                let (ips, ttl) = ips(r, fqdn(host)?).await?;
                let hits = ips
                    .into_iter()
                    .map(|ip| Hit {
                        address: SocketAddr::new(ip, *port),
                        weight: None,
                        backup: false,
                    })
                    .collect();
                Ok((hits, ttl))
            }
            Lookup::Service(name) => {
                let (srvs, ttl) = srv(r, fqdn(name)?).await?;
                let (hits, t2) = targets(r, srvs).await?;
                Ok((hits, ttl.min(t2)))
            }
            Lookup::Browse(name) => {
                let l = r.lookup(fqdn(name)?, RecordType::PTR).await?;
                let mut ttl = least_ttl(l.answers());
                let mut all = Vec::new();
                for rec in l.answers() {
                    let RData::PTR(p) = &rec.data else { continue };
                    match srv(r, p.0.clone()).await {
                        Ok((s, t)) => {
                            all.extend(s);
                            ttl = ttl.min(t);
                        }
                        // An instance without SRV (yet): skip it.
                        Err(Miss::Empty(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                let (hits, t2) = targets(r, all).await?;
                Ok((hits, ttl.min(t2)))
            }
        }
    })
    .await;
    match found {
        Err(_) => Outcome::Failed(format!("no answer within {:?}", timeout * 4)),
        Ok(Err(Miss::Empty(e))) => Outcome::Empty(e),
        Ok(Err(Miss::Failed(e))) => Outcome::Failed(e),
        Ok(Ok((hits, _))) if hits.is_empty() => Outcome::Empty("no addresses found".into()),
        Ok(Ok((hits, ttl))) => Outcome::Found {
            hits,
            ttl: Duration::from_secs(ttl.into()),
        },
    }
}

/// `name` as an absolute name: no search domains are tried.
fn fqdn(name: &str) -> Result<Name, Miss> {
    let abs = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    Name::from_str(&abs).map_err(|e| Miss::Failed(format!("{name:?}: {e}")))
}

fn least_ttl(records: &[hickory_resolver::proto::rr::Record]) -> u32 {
    records.iter().map(|r| r.ttl).min().unwrap_or(0)
}

async fn ips(r: &TokioResolver, name: Name) -> Result<(Vec<std::net::IpAddr>, u32), Miss> {
    let l = r.lookup_ip(name).await?;
    let ttl = least_ttl(l.as_lookup().answers());
    Ok((l.iter().collect(), ttl))
}

async fn srv(r: &TokioResolver, name: Name) -> Result<(Vec<SRV>, u32), Miss> {
    let l = r.lookup(name, RecordType::SRV).await?;
    let srvs = l
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SRV(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    Ok((srvs, least_ttl(l.answers())))
}

/// Resolve SRV targets. Targets of the lowest priority that resolves are
/// primaries, the rest backups (nginx's reading of SRV priority); a target
/// `.` (service not offered) or one that does not resolve is skipped.
async fn targets(r: &TokioResolver, srvs: Vec<SRV>) -> Result<(Vec<Hit>, u32), Miss> {
    let mut found: Vec<(u16, Hit)> = Vec::new();
    let mut ttl = u32::MAX;
    for s in srvs {
        if s.target.is_root() {
            continue;
        }
        match ips(r, s.target.clone()).await {
            Ok((ips, t)) => {
                ttl = ttl.min(t);
                found.extend(ips.into_iter().map(|ip| {
                    (
                        s.priority,
                        Hit {
                            address: SocketAddr::new(ip, s.port),
                            weight: Some(s.weight),
                            backup: false,
                        },
                    )
                }));
            }
            Err(Miss::Empty(e)) => {
                tracing::debug!(target_name = %s.target, error = %e, "SRV target has no address");
            }
            Err(e) => return Err(e),
        }
    }
    let best = found.iter().map(|(p, _)| *p).min();
    let hits = found
        .into_iter()
        .map(|(p, h)| Hit {
            backup: Some(p) != best,
            ..h
        })
        .collect();
    Ok((hits, if ttl == u32::MAX { 0 } else { ttl }))
}
