//! The Prometheus sink: renders the last flush and the live health counters
//! as the text exposition format for `GET /metrics`.
//!
//! Names are sanitised to Prometheus rules (`a.b-c` → `a_b_c`) and DogStatsD
//! tags become labels (`#env:prod,canary` → `{canary="true",env="prod"}`).
//! Counters: `<name>_total`, the sum of all flushed counts. Gauges: `<name>`.
//! Timers: a summary `<name>` with `quantile` = each positive percentile's
//! upper bound in the last interval, `_sum`/`_count` since start (both
//! scaled by the sample rate: `100|ms|@0.5` counts 2 and sums 200), plus
//! `<name>_lower|_upper|_mean|_median|_std` gauges for the last interval.
//! Sets: `<name>_unique`, the last interval's unique count.
//!
//! A mapping file ([`Mapper`]) renames a series and adds labels, as
//! statsd_exporter does: a mapped counter, gauge or set keeps exactly the
//! mapped name, a mapped timer becomes a histogram or summary in seconds,
//! and `action: drop` leaves the series out. Statsd names mapped to one
//! counter or histogram (same name, labels, buckets) add up into it, as
//! statsd_exporter's registry does. With `timer_histogram`, an
//! unmapped timer is a cumulative histogram `<name>` (ms) and its
//! last-interval quantiles stay as the summary `<name>_interval`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use shoal_core::metrics::{sanitize_label_name, sanitize_name, Kind, TextWriter};

use super::aggregate::split_key;
use super::flush::{Snapshot, TimerOut};
use super::health::Health;
use super::mapping::{Mapper, StatType};
use super::observe::Observed;

/// Label pairs of one sample.
type Labels = Vec<(String, String)>;

/// Distinct collisions remembered (so each is counted and logged once);
/// past it, new ones are still left out of `/metrics` but neither counted
/// nor logged.
pub const MAX_COLLISIONS_REMEMBERED: usize = 100_000;

/// Name collisions seen in `/metrics` since start: each distinct pair of
/// series is counted and logged once.
#[derive(Debug, Default)]
pub struct Collisions {
    seen: Mutex<HashSet<u64>>,
    total: AtomicU64,
}

impl Collisions {
    /// Distinct collisions so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Note that `dropped` was left out because `kept` already has
    /// `prom_name`; logs and counts it the first time only.
    fn note(&self, prom_name: &str, kept: &str, dropped: &str) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (kept, dropped).hash(&mut h);
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_COLLISIONS_REMEMBERED || !seen.insert(h.finish()) {
            return;
        }
        drop(seen);
        self.total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            prometheus_name = %prom_name,
            kept = %kept,
            dropped = %dropped,
            "two statsd series clean to one Prometheus name: the second is left out of /metrics"
        );
    }
}

/// A family's help text.
type Help = Cow<'static, str>;

struct Family {
    kind: Kind,
    help: Help,
    samples: Vec<(String, Labels, f64)>,
}

/// One family a series wants, with its samples.
struct Want {
    family: String,
    kind: Kind,
    help: Help,
    samples: Vec<(String, Labels, f64)>,
}

/// Who owns a Prometheus name: a statsd type and name (tags aside), or the
/// collector itself.
#[derive(Clone, PartialEq, Eq)]
struct Owner {
    kind: &'static str,
    name: String,
}

impl Owner {
    fn show(&self) -> String {
        format!("{} {:?}", self.kind, self.name)
    }
}

/// The document being planned: families, who owns each family and sample
/// name, and which sample (name and labels) came from which statsd key and
/// where it sits.
#[derive(Default)]
struct Plan {
    fams: BTreeMap<String, Family>,
    owners: HashMap<String, Owner>,
    samples: HashMap<(String, Labels), Placed>,
}

/// Where a planned sample is: the statsd key that gave it first, and its
/// family and index in that family's samples.
struct Placed {
    key: String,
    family: String,
    index: usize,
}

/// What [`Plan::add`] does with a series.
enum Fit {
    /// Its names and samples are new: add them.
    New,
    /// Every sample is already there from other statsd names mapped to the
    /// same counter or histogram: add the values up, as statsd_exporter
    /// does when several statsd names map to one series.
    Merge,
}

impl Plan {
    /// Claim `names` for the collector's own series, before any user one.
    fn reserve(&mut self, names: &[&str]) {
        for n in names {
            self.owners.insert(
                (*n).to_string(),
                Owner {
                    kind: "collector",
                    name: (*n).to_string(),
                },
            );
        }
    }

    /// Whether `wants` of `owner` (from statsd `key`) can be added, merged
    /// into samples already there, or neither; `Err` carries the collision
    /// (the Prometheus name, who has it).
    fn fit(&self, owner: &Owner, key: &str, wants: &[Want]) -> Result<Fit, (String, String)> {
        let mergeable = owner.kind.starts_with("mapped ")
            && wants
                .iter()
                .all(|w| matches!(w.kind, Kind::Counter | Kind::Histogram));
        let (mut fresh, mut taken) = (0usize, 0usize);
        for w in wants {
            let names = std::iter::once(w.family.as_str())
                .chain(w.samples.iter().map(|(n, _, _)| n.as_str()));
            for n in names {
                if let Some(o) = self.owners.get(n) {
                    if o != owner {
                        return Err((n.to_string(), o.show()));
                    }
                }
            }
            for (n, labels, _) in &w.samples {
                match self.samples.get(&(n.clone(), labels.clone())) {
                    Some(p) if p.key != key => {
                        if !mergeable {
                            return Err((n.clone(), format!("{} {:?}", owner.kind, p.key)));
                        }
                        taken += 1;
                    }
                    Some(_) => taken += 1,
                    None => fresh += 1,
                }
            }
        }
        match (fresh, taken) {
            (_, 0) => Ok(Fit::New),
            (0, _) if mergeable => Ok(Fit::Merge),
            // Some samples there, some not (histograms with other
            // buckets): not one series.
            _ => {
                let (n, labels, _) = &wants[0].samples[0];
                let other = self
                    .samples
                    .get(&(n.clone(), labels.clone()))
                    .map_or_else(|| owner.show(), |p| format!("{} {:?}", owner.kind, p.key));
                Err((n.clone(), other))
            }
        }
    }

    /// Add every family of one series, or none of them: a series whose
    /// family or sample names belong to another series, or whose samples
    /// (name and labels) another key of the same series already gave, is
    /// left out, and the collision noted; except that statsd names a
    /// mapping sends to one counter or histogram (same name, labels and
    /// buckets) are added up into it.
    fn add(&mut self, owner: Owner, key: &str, wants: Vec<Want>, collisions: &Collisions) {
        match self.fit(&owner, key, &wants) {
            Err((name, kept)) => collisions.note(&name, &kept, &format!("{} {key:?}", owner.kind)),
            Ok(Fit::Merge) => {
                for w in wants {
                    for (n, labels, v) in w.samples {
                        if let Some(p) = self.samples.get(&(n, labels)) {
                            if let Some(f) = self.fams.get_mut(&p.family) {
                                f.samples[p.index].2 += v;
                            }
                        }
                    }
                }
            }
            Ok(Fit::New) => {
                for w in wants {
                    self.owners.insert(w.family.clone(), owner.clone());
                    let f = self.fams.entry(w.family.clone()).or_insert_with(|| Family {
                        kind: w.kind,
                        help: w.help,
                        samples: Vec::new(),
                    });
                    for (n, labels, v) in w.samples {
                        self.owners.insert(n.clone(), owner.clone());
                        self.samples.insert(
                            (n.clone(), labels.clone()),
                            Placed {
                                key: key.to_string(),
                                family: w.family.clone(),
                                index: f.samples.len(),
                            },
                        );
                        f.samples.push((n, labels, v));
                    }
                }
            }
        }
    }
}

fn labels_of(key: &str) -> (&str, String, Vec<(String, String)>) {
    let (name, tags) = split_key(key);
    let mut labels: Vec<(String, String)> = Vec::new();
    for (k, v) in tags {
        let k = sanitize_label_name(k);
        if k == "quantile"
            || k == "le"
            || k.starts_with("__")
            || labels.iter().any(|(have, _)| *have == k)
        {
            continue;
        }
        labels.push((
            k,
            if v.is_empty() {
                "true".to_string()
            } else {
                v.to_string()
            },
        ));
    }
    labels.sort();
    (name, sanitize_name(name), labels)
}

/// A family with one sample named as the family.
fn single(family: String, kind: Kind, help: impl Into<Help>, labels: Labels, v: f64) -> Want {
    Want {
        samples: vec![(family.clone(), labels, v)],
        family,
        kind,
        help: help.into(),
    }
}

/// One statsd series as `/metrics` shows it.
struct Series {
    /// Who owns the names: the statsd name, or the mapped Prometheus name.
    owner: Owner,
    /// The Prometheus name (before any suffix).
    name: String,
    labels: Labels,
    /// The mapping's help, if it gives one.
    help: Option<String>,
    /// Whether a mapping renamed it (no suffix is added then).
    mapped: bool,
}

/// `key` of statsd type `kind` (`t` for the mapping) as a series, or
/// `None` when its mapping drops it.
fn series(mapper: &Mapper, t: StatType, kind: &'static str, key: &str) -> Option<Series> {
    let (raw, name, mut labels) = labels_of(key);
    let Some(m) = mapper.map(t, raw) else {
        return Some(Series {
            owner: Owner {
                kind,
                name: raw.to_string(),
            },
            name,
            labels,
            help: None,
            mapped: false,
        });
    };
    if m.drop {
        return None;
    }
    for (k, v) in &m.labels {
        match labels.iter_mut().find(|(have, _)| have == k) {
            Some(_) if m.honor_labels => {}
            Some(slot) => slot.1 = v.clone(),
            None => labels.push((k.clone(), v.clone())),
        }
    }
    labels.sort();
    Some(Series {
        // One owner per mapped name and type: statsd names mapped to one
        // name share its family; another type under that name collides.
        owner: Owner {
            kind: match t {
                StatType::Counter => "mapped counter",
                StatType::Gauge if kind == "set" => "mapped set",
                StatType::Gauge => "mapped gauge",
                StatType::Observer => "mapped timer",
            },
            name: m.name.clone(),
        },
        name: m.name.clone(),
        labels,
        help: m.help.clone(),
        mapped: true,
    })
}

/// The Prometheus series (mapped name and labels, as one string) that a
/// mapping makes of statsd `key` of type `t` (`kind`: `"gauge"`, `"set"`,
/// `"timer"`), or `None` when no mapping takes it or it is dropped.
pub(crate) fn mapped_series(
    mapper: &Mapper,
    t: StatType,
    kind: &'static str,
    key: &str,
) -> Option<String> {
    let s = series(mapper, t, kind, key)?;
    if !s.mapped {
        return None;
    }
    let mut id = s.name;
    for (k, v) in &s.labels {
        id.push('\0');
        id.push_str(k);
        id.push('=');
        id.push_str(v);
    }
    Some(id)
}

/// The families of a timer observed as a histogram or summary.
fn observed_wants(s: &Series, o: &Observed, help: Help) -> Vec<Want> {
    let (kind, mut samples, sum, count) = match o {
        Observed::Histogram {
            buckets,
            sum,
            count,
        } => {
            let samples = buckets
                .iter()
                .map(|(le, n)| {
                    let mut l = s.labels.clone();
                    let le = if le.is_infinite() {
                        "+Inf".to_string()
                    } else {
                        format!("{le}")
                    };
                    l.push(("le".into(), le));
                    (format!("{}_bucket", s.name), l, *n)
                })
                .collect::<Vec<_>>();
            (Kind::Histogram, samples, sum, count)
        }
        Observed::Summary {
            quantiles,
            sum,
            count,
        } => {
            let samples = quantiles
                .iter()
                .map(|(q, v)| {
                    let mut l = s.labels.clone();
                    l.push(("quantile".into(), format!("{q}")));
                    (s.name.clone(), l, *v)
                })
                .collect::<Vec<_>>();
            (Kind::Summary, samples, sum, count)
        }
    };
    samples.push((format!("{}_sum", s.name), s.labels.clone(), *sum));
    samples.push((format!("{}_count", s.name), s.labels.clone(), *count));
    vec![Want {
        family: s.name.clone(),
        kind,
        help,
        samples,
    }]
}

/// The statsd summary of a timer (last-interval quantiles, `_sum` and
/// `_count` since start) under family `name`, and its last-interval gauges.
fn statsd_summary_wants(s: &Series, name: &str, t: &TimerOut) -> Vec<Want> {
    let labels = &s.labels;
    let mut summary = Vec::new();
    let mut wants = Vec::new();
    if let Some(st) = &t.stats {
        for p in st.percentiles.iter().filter(|p| p.pct > 0.0) {
            let mut l = labels.clone();
            l.push(("quantile".into(), format!("{}", p.pct / 100.0)));
            summary.push((name.to_string(), l, p.bound));
        }
        for (suffix, v) in [
            ("lower", st.lower),
            ("upper", st.upper),
            ("mean", st.mean),
            ("median", st.median),
            ("std", st.std),
        ] {
            wants.push(single(
                format!("{}_{suffix}", s.name),
                Kind::Gauge,
                "statsd timer, last interval",
                labels.clone(),
                v,
            ));
        }
    }
    summary.push((format!("{name}_sum"), labels.clone(), t.total_sum));
    summary.push((format!("{name}_count"), labels.clone(), t.total_count));
    wants.insert(
        0,
        Want {
            family: name.to_string(),
            kind: Kind::Summary,
            help: "statsd timer".into(),
            samples: summary,
        },
    );
    wants
}

/// Render the document with no mapping file: see [`render_mapped`].
pub fn render(snap: &Snapshot, health: &Health, last_bad: &str, collisions: &Collisions) -> String {
    render_mapped(snap, &Mapper::default(), health, last_bad, collisions)
}

/// Render the document: user metrics from `snap` (named by `mapper`), then
/// the collector's own `shoal_stats_*` health figures. Two series that
/// would give one Prometheus name (or one sample twice) never both appear:
/// the first in (counters, gauges, timers, sets; each by key) order keeps
/// it, the other is left out and noted in `collisions` (counted and logged
/// once).
pub fn render_mapped(
    snap: &Snapshot,
    mapper: &Mapper,
    health: &Health,
    last_bad: &str,
    collisions: &Collisions,
) -> String {
    let own = own_series(snap, health, 0);
    let mut plan = Plan::default();
    let mut reserved: Vec<&str> = own.iter().map(|o| o.0).collect();
    reserved.push(LAST_BAD_LINE);
    plan.reserve(&reserved);
    let help = |s: &Series, default: &'static str| -> Help {
        s.help.clone().map_or(Cow::Borrowed(default), Cow::Owned)
    };
    for (key, c) in &snap.counters {
        let Some(s) = series(mapper, StatType::Counter, "counter", key) else {
            continue;
        };
        let fam = if s.mapped || s.name.ends_with("_total") {
            s.name.clone()
        } else {
            format!("{}_total", s.name)
        };
        let h = help(&s, "statsd counter (sum of flushed counts)");
        let want = single(fam, Kind::Counter, h, s.labels.clone(), c.total);
        plan.add(s.owner, key, vec![want], collisions);
    }
    for (key, v) in &snap.gauges {
        // Names mapped to one series: shown once, with the series' value.
        let v = match snap.mapped_gauges.get(key) {
            Some(None) => continue,
            Some(Some(shared)) => shared,
            None => v,
        };
        let Some(s) = series(mapper, StatType::Gauge, "gauge", key) else {
            continue;
        };
        let h = help(&s, "statsd gauge");
        let want = single(s.name.clone(), Kind::Gauge, h, s.labels.clone(), *v);
        plan.add(s.owner, key, vec![want], collisions);
    }
    for (key, t) in &snap.timers {
        let Some(s) = series(mapper, StatType::Observer, "timer", key) else {
            continue;
        };
        let observed = match snap.mapped_summaries.get(key) {
            Some(None) => continue,
            Some(Some(shared)) => Some(shared),
            None => t.observed.as_ref(),
        };
        let wants = match (observed, s.mapped) {
            (Some(o), true) => observed_wants(&s, o, help(&s, "statsd timer (seconds)")),
            (Some(o), false) => {
                let mut w = observed_wants(&s, o, "statsd timer (ms), cumulative".into());
                w.extend(statsd_summary_wants(&s, &format!("{}_interval", s.name), t));
                w
            }
            (None, _) => statsd_summary_wants(&s, &s.name, t),
        };
        plan.add(s.owner.clone(), key, wants, collisions);
    }
    for (key, n) in &snap.sets {
        let n = match snap.mapped_sets.get(key) {
            Some(None) => continue,
            Some(Some(shared)) => shared,
            None => n,
        };
        let Some(s) = series(mapper, StatType::Gauge, "set", key) else {
            continue;
        };
        let fam = if s.mapped {
            s.name.clone()
        } else {
            format!("{}_unique", s.name)
        };
        let h = help(&s, "statsd set: unique values in the last interval");
        let want = single(fam, Kind::Gauge, h, s.labels.clone(), *n as f64);
        plan.add(s.owner, key, vec![want], collisions);
    }
    let mut w = TextWriter::new();
    for (fam, f) in &plan.fams {
        w.family(fam, f.kind, &f.help);
        for (sample, labels, v) in &f.samples {
            let l: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            w.sample(sample, &l, *v);
        }
    }
    for (name, kind, help, v) in own_series(snap, health, collisions.total()) {
        w.family(name, kind, help).sample(name, &[], v);
    }
    w.family(
        LAST_BAD_LINE,
        Kind::Gauge,
        "The last malformed line (as a label), 1 if any",
    );
    w.sample(
        LAST_BAD_LINE,
        &[("line", last_bad)],
        if last_bad.is_empty() { 0.0 } else { 1.0 },
    );
    w.finish()
}

/// The family of the last bad line sample.
const LAST_BAD_LINE: &str = "shoal_stats_last_bad_line";

/// The collector's own series: name, kind, help, value.
fn own_series(
    snap: &Snapshot,
    health: &Health,
    collisions: u64,
) -> [(&'static str, Kind, &'static str, f64); 17] {
    [
        (
            "shoal_stats_name_collisions_total",
            Kind::Counter,
            "Distinct pairs of statsd series that cleaned to one Prometheus name (the second left out)",
            collisions as f64,
        ),
        (
            "shoal_stats_packets_received_total",
            Kind::Counter,
            "Datagrams received",
            health.packets as f64,
        ),
        (
            "shoal_stats_bytes_received_total",
            Kind::Counter,
            "Bytes received",
            health.bytes as f64,
        ),
        (
            "shoal_stats_metrics_received_total",
            Kind::Counter,
            "Metric lines accepted",
            health.metrics as f64,
        ),
        (
            "shoal_stats_bad_lines_total",
            Kind::Counter,
            "Malformed lines skipped",
            health.bad_lines as f64,
        ),
        (
            "shoal_stats_oversized_datagrams_total",
            Kind::Counter,
            "Datagrams longer than max_datagram, dropped",
            health.oversized as f64,
        ),
        (
            "shoal_stats_events_total",
            Kind::Counter,
            "DogStatsD events received (counted, then dropped)",
            health.events as f64,
        ),
        (
            "shoal_stats_service_checks_total",
            Kind::Counter,
            "DogStatsD service checks received (counted, then dropped)",
            health.service_checks as f64,
        ),
        (
            "shoal_stats_relayed_total",
            Kind::Counter,
            "Datagrams passed on to the --relay address",
            health.relayed as f64,
        ),
        (
            "shoal_stats_relay_dropped_total",
            Kind::Counter,
            "Datagrams the relay could not pass on",
            health.relay_dropped as f64,
        ),
        (
            "shoal_stats_series_dropped_total",
            Kind::Counter,
            "Lines dropped: their new series would pass max_series",
            health.series_dropped as f64,
        ),
        (
            "shoal_stats_series_expired_total",
            Kind::Counter,
            "Series forgotten after series_ttl without an update",
            health.series_expired as f64,
        ),
        (
            "shoal_stats_series",
            Kind::Gauge,
            "Series the collector keeps (at most max_series)",
            health.series as f64,
        ),
        (
            "shoal_stats_kernel_drops_total",
            Kind::Counter,
            "Datagrams the kernel dropped on our sockets (receive buffer full)",
            health.kernel_drops as f64,
        ),
        (
            "shoal_stats_host_rcvbuf_errors_total",
            Kind::Counter,
            "Host-wide UDP RcvbufErrors since start (all processes)",
            health.rcvbuf_errors as f64,
        ),
        (
            "shoal_stats_last_flush_timestamp_seconds",
            Kind::Gauge,
            "Unix time of the last flush (0: none yet)",
            snap.timestamp as f64,
        ),
        (
            "shoal_stats_flushed_series",
            Kind::Gauge,
            "Series in the last flush",
            (snap.counters.len() + snap.gauges.len() + snap.timers.len() + snap.sets.len()) as f64,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::aggregate::interval_of;
    use crate::statsd::flush::{FlushRules, State};

    #[test]
    fn renders_types_labels_and_health() {
        let d =
            "api.req-ok:2|c|#env:prod,canary\napi.req-ok:1|c\nmem:5|g\nlat:10|ms\nlat:20|ms\nu:a|s";
        let snap = State::new(FlushRules::default()).flush(vec![interval_of(d)], 1.0, 7);
        let text = render(
            &snap,
            &Health {
                packets: 1,
                ..Default::default()
            },
            "x (bad)",
            &Collisions::default(),
        );
        for want in [
            "# TYPE api_req_ok_total counter\n",
            "api_req_ok_total 1\n",
            "api_req_ok_total{canary=\"true\",env=\"prod\"} 2\n",
            "# TYPE mem gauge\nmem 5\n",
            "# TYPE lat summary\n",
            "lat{quantile=\"0.9\"} 20\n",
            "lat_sum 30\n",
            "lat_count 2\n",
            "lat_median 15\n",
            "u_unique 1\n",
            "shoal_stats_packets_received_total 1\n",
            "shoal_stats_last_bad_line{line=\"x (bad)\"} 1\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE lat summary").count(), 1);
    }

    #[test]
    fn mapped_names_share_a_family_by_type_only() {
        let m = Mapper::parse(
            std::path::Path::new("m.yml"),
            "mappings:\n- match: req.*\n  name: req_total\n  labels:\n    host: \"$1\"\n",
        )
        .unwrap();
        let d = "req.a:1|c\nreq.b:2|c\nreq.c:5|g";
        let snap = State::new(FlushRules::default()).flush(vec![interval_of(d)], 1.0, 1);
        let col = Collisions::default();
        let text = render_mapped(&snap, &m, &Health::default(), "", &col);
        assert!(
            text.contains("req_total{host=\"a\"} 1\nreq_total{host=\"b\"} 2\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE req_total").count(), 1, "{text}");
        // The gauge mapped to the counter's name is left out, and counted.
        assert!(!text.contains("host=\"c\""), "{text}");
        assert_eq!(col.total(), 1);
    }

    #[test]
    fn statsd_names_mapped_to_one_series_make_one() {
        // As statsd_exporter: several statsd names mapped to one name and
        // labels are one Prometheus series; counters and histograms (same
        // buckets) add up, a summary takes every name's values, a gauge is
        // the last value set under any name plus the changes after it, a
        // set counts the union of the members.
        let m = Mapper::parse(
            std::path::Path::new("m.yml"),
            "mappings:\n\
             - match: api.*.hits\n  name: hits_total\n\
             - match: api.*.lat\n  name: lat_seconds\n  observer_type: histogram\n  \
               histogram_options: {buckets: [0.01, 0.1]}\n\
             - match: db.*.lat\n  name: db_seconds\n\
             - match: pool.*.size\n  name: pool_size\n\
             - match: users.*\n  name: users\n",
        )
        .unwrap();
        let d = "api.a.hits:1|c\napi.b.hits:2|c\napi.c.hits:4|c|#env:x\n\
                 api.a.lat:5|ms\napi.b.lat:50|ms\napi.b.lat:500|ms\n\
                 db.a.lat:5|ms\ndb.b.lat:7|ms";
        let m = std::sync::Arc::new(m);
        let mut st = State::new(FlushRules::default());
        st.set_mapper(m.clone());
        // Each interval_of is a datagram of its own, arrived after the one
        // before.
        let later = "pool.b.size:+3|g\nusers.b:x|s\nusers.b:y|s";
        let first = "pool.a.size:10|g\nusers.a:x|s";
        let snap = st.flush(
            vec![interval_of(d), interval_of(first), interval_of(later)],
            1.0,
            1,
        );
        let col = Collisions::default();
        let text = render_mapped(&snap, &m, &Health::default(), "", &col);
        for want in [
            "pool_size 13\n",
            "users 2\n",
            "db_seconds_count 2\n",
            "hits_total 3\n",
            "hits_total{env=\"x\"} 4\n",
            "lat_seconds_bucket{le=\"0.01\"} 1\n",
            "lat_seconds_bucket{le=\"0.1\"} 2\n",
            "lat_seconds_bucket{le=\"+Inf\"} 3\n",
            "lat_seconds_count 3\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(text.matches("hits_total 3").count(), 1, "{text}");
        assert!(text.contains("lat_seconds_sum 0.55"), "{text}");
        assert!(text.contains("db_seconds_sum 0.012"), "{text}");
        assert_eq!(text.matches("db_seconds_count").count(), 1, "{text}");
        assert_eq!(text.matches("\npool_size ").count(), 1, "{text}");
        assert_eq!(col.total(), 0, "{text}");
        // Next interval: b sets 7, then a takes 2 off: 5; then only a
        // change, applied to the series' value.
        let snap = st.flush(
            vec![
                interval_of("pool.b.size:7|g"),
                interval_of("pool.a.size:-2|g"),
            ],
            1.0,
            2,
        );
        let text = render_mapped(&snap, &m, &Health::default(), "", &col);
        assert!(text.contains("pool_size 5\n"), "{text}");
        assert!(text.contains("users 0\n"), "{text}");
        let snap = st.flush(vec![interval_of("pool.b.size:+1|g")], 1.0, 3);
        let text = render_mapped(&snap, &m, &Health::default(), "", &col);
        assert!(text.contains("pool_size 6\n"), "{text}");
        // Graphite and JSON keep each statsd name's own gauge.
        assert_eq!(snap.gauges.len(), 2);
    }

    #[test]
    fn sampled_timers_scale_sum_and_count_alike() {
        // One 100 ms value sampled at 0.5 stands for two: _count 2, _sum 200,
        // as statsd scales counts; unsampled values add as they are.
        let mut st = State::new(FlushRules::default());
        let snap = st.flush(vec![interval_of("t:100|ms|@0.5")], 1.0, 1);
        let text = render(&snap, &Health::default(), "", &Collisions::default());
        assert!(text.contains("t_count 2\n"), "{text}");
        assert!(text.contains("t_sum 200\n"), "{text}");
        let snap = st.flush(vec![interval_of("t:10|ms\nt:20:30|ms|@0.1")], 1.0, 2);
        let text = render(&snap, &Health::default(), "", &Collisions::default());
        assert!(text.contains("t_count 23\n"), "{text}");
        assert!(text.contains("t_sum 710\n"), "{text}");
        // The statsd figures of the interval stay statsd's: the sum of the
        // values received.
        assert_eq!(snap.timers[0].1.stats.as_ref().map(|s| s.sum), Some(60.0));
    }

    #[test]
    fn colliding_names_are_left_out_counted_and_noted_once() {
        let d = "a.b:1|c\na-b:2|c\nx:1|c\nx_total:5|c\nlat:1|g\nlat:5|ms\nlat_sum:3|g\n\
                 lat_count:1|c\nt.q:1|c|#k.a:1\nt.q:1|c|#k_a:1\nt.q:1|c|#quantile:1\n\
                 shoal_stats_series:1|g\nok:1|g\nu:a|s\nu_unique:1|g";
        let snap = State::new(FlushRules::default()).flush(vec![interval_of(d)], 1.0, 1);
        let col = Collisions::default();
        let text = render(&snap, &Health::default(), "", &col);
        // Each name and each sample once; one HELP/TYPE per family.
        let mut seen = HashSet::new();
        for l in text.lines() {
            assert!(seen.insert(l.to_string()), "repeated line {l:?} in\n{text}");
            if !l.starts_with('#') {
                let series = l.rsplit_once(' ').unwrap().0;
                assert!(
                    text.lines()
                        .filter(|o| o.rsplit_once(' ').unwrap().0 == series)
                        .count()
                        == 1,
                    "{series} twice in\n{text}"
                );
            }
        }
        for want in [
            "a_b_total 2\n",
            "x_total 1\n",
            "lat 1\n",
            "lat_sum 3\n",
            "lat_count_total 1\n",
            "t_q_total{k_a=\"1\"} 1\n",
            "t_q_total 1\n",
            "ok 1\n",
            "u_unique 1\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // Left out: a.b (a-b sorts first), x_total (the counter x has that
        // name), the timer lat (the gauge lat, and its lat_sum, came first),
        // t.q with k_a (k.a gave the same labels), the set u (the gauge
        // u_unique), and the gauge shoal_stats_series (the collector's own).
        assert_eq!(col.total(), 6, "{text}");
        assert!(
            text.contains("shoal_stats_name_collisions_total 6\n"),
            "{text}"
        );
        // Rendered again: nothing new is counted.
        let again = render(&snap, &Health::default(), "", &col);
        assert_eq!(col.total(), 6);
        assert_eq!(again, text);
    }
}
