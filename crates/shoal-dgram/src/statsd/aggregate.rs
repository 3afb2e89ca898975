//! One shard's aggregation for the current interval.
//!
//! Each receive thread owns a [`Shard`]: it parses its datagrams and adds the
//! metrics into the shard's [`Interval`] under the shard's own lock (never
//! contended except at flush). The flusher takes every shard's interval at
//! once and merges them (see `flush`). Keys are built in a reusable buffer, so
//! a metric whose key is already known costs no allocation.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use super::keyed::KeyedMap;
use super::name;
use super::parse::{self, Line, MetricType, Value};

/// A gauge's operations during one interval, resolved: the last absolute
/// value set (if any) and the sum of the changes that came after it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GaugeOp {
    /// The last absolute value set in the interval.
    pub set: Option<f64>,
    /// Changes after that set (or since the interval began).
    pub delta: f64,
}

/// Changes kept per gauge per shard and interval before the oldest are
/// folded into one (see [`GaugeOps`]).
pub const MAX_GAUGE_CHANGES: usize = 256;

/// A gauge's operations in one shard, each with its arrival time (the
/// kernel's receive timestamp, nanoseconds since the epoch), so that shards
/// fed by different sockets merge in the order the datagrams arrived, not
/// in the order their threads happened to run. Only what can still matter
/// is kept: the newest set, and the changes that arrived at or after it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GaugeOps {
    /// The newest absolute value and when it arrived.
    pub set: Option<(f64, u64)>,
    /// Changes `(arrival, amount)` not older than `set`.
    pub changes: Vec<(u64, f64)>,
}

impl GaugeOps {
    /// An absolute value that arrived at `at`. Lines of one datagram share
    /// their arrival time and are applied in line order, so a change with
    /// the same time as this set came before it and is dropped.
    pub fn set(&mut self, v: f64, at: u64) {
        if self.set.is_some_and(|(_, t)| t > at) {
            return; // An older set, already overwritten.
        }
        self.set = Some((v, at));
        self.changes.retain(|(t, _)| *t > at);
    }

    /// A change (`+N`/`-N`) that arrived at `at`.
    pub fn change(&mut self, d: f64, at: u64) {
        if self.set.is_some_and(|(_, t)| t > at) {
            return; // Overwritten by a set that arrived after it.
        }
        if self.changes.len() >= MAX_GAUGE_CHANGES {
            // Bounded: fold the older half into one change at the newest of
            // their times (exact unless another socket set the gauge within
            // that span).
            let half = self.changes.len() / 2;
            let (t, sum) = self
                .changes
                .drain(..half)
                .fold((0u64, 0.0), |(t, s), (ct, c)| (t.max(ct), s + c));
            self.changes.insert(0, (t, sum));
        }
        self.changes.push((at, d));
    }

    /// Take in another shard's operations on the same gauge.
    pub fn absorb(&mut self, other: GaugeOps) {
        if let Some((v, t)) = other.set {
            // (`Option::is_none_or` is newer than the workspace's 1.80.)
            let newer = match self.set {
                Some((_, st)) => t >= st,
                None => true,
            };
            if newer {
                self.set = Some((v, t));
            }
        }
        self.changes.extend(other.changes);
        if let Some((_, st)) = self.set {
            self.changes.retain(|(t, _)| *t >= st);
        }
    }

    /// The newest set and the sum of the changes after it.
    pub fn resolve(&self) -> GaugeOp {
        GaugeOp {
            set: self.set.map(|(v, _)| v),
            delta: self.changes.iter().map(|(_, d)| d).sum(),
        }
    }
}

/// Now, in nanoseconds since the Unix epoch: the arrival time of input that
/// has no kernel timestamp (TCP lines, tests).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A timer's values in one interval, and its sample-rate-weighted count
/// and sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimerValues {
    /// Every value received.
    pub values: Vec<f64>,
    /// Sum of `1 / rate` over the values (statsd's `timer_counters`).
    pub count: f64,
    /// Sum of `value / rate`: the sum the sampled values stand for, which
    /// goes with `count` (Prometheus `_sum` beside `_count`).
    pub weighted_sum: f64,
}

/// What one shard collected since the last flush.
#[derive(Debug)]
pub struct Interval {
    /// New series beyond this many (all types together) are dropped and
    /// counted, so a flood of distinct names cannot exhaust memory.
    pub max_series: usize,
    /// Counter sums (already divided by their sample rates).
    pub counters: KeyedMap<f64>,
    /// Gauge operations, with their arrival times.
    pub gauges: KeyedMap<GaugeOps>,
    /// Timer values.
    pub timers: KeyedMap<TimerValues>,
    /// Set members, hashed (64-bit).
    pub sets: KeyedMap<HashSet<u64>>,
}

impl Default for Interval {
    fn default() -> Self {
        Interval::with_limit(usize::MAX)
    }
}

impl Interval {
    /// An empty interval that accepts at most `max_series` series.
    pub fn with_limit(max_series: usize) -> Self {
        Interval {
            max_series,
            counters: KeyedMap::default(),
            gauges: KeyedMap::default(),
            timers: KeyedMap::default(),
            sets: KeyedMap::default(),
        }
    }

    /// Series collected so far.
    pub fn series(&self) -> usize {
        self.counters.len() + self.gauges.len() + self.timers.len() + self.sets.len()
    }

    /// An empty interval with room for about as many keys as `prev` had.
    pub fn sized_like(prev: &Interval) -> Self {
        Interval {
            max_series: prev.max_series,
            counters: KeyedMap::with_capacity(prev.counters.len()),
            gauges: KeyedMap::with_capacity(prev.gauges.len()),
            timers: KeyedMap::with_capacity(prev.timers.len()),
            sets: KeyedMap::with_capacity(prev.sets.len()),
        }
    }

    /// Whether a line for `k` would be a new series past `max_series`.
    #[inline]
    fn over_limit(&self, k: &str, kind: MetricType) -> bool {
        self.series() >= self.max_series
            && match kind {
                MetricType::Counter => self.counters.get(k).is_none(),
                MetricType::Gauge => self.gauges.get(k).is_none(),
                MetricType::Timer => self.timers.get(k).is_none(),
                MetricType::Set => self.sets.get(k).is_none(),
            }
    }

    /// Add one parsed line that arrived at `at` (nanoseconds since the
    /// epoch). `key` is scratch space for the metric's key. Returns `false`
    /// if the line was a new series over `max_series`.
    pub fn add(&mut self, line: &Line<'_>, key: &mut KeyBuf, at: u64) -> bool {
        let k = key.build(line);
        if self.over_limit(k, line.kind) {
            return false;
        }
        let rate = line.rate;
        match line.kind {
            MetricType::Counter => {
                let slot = self.counters.slot(k);
                line.for_each_value(|v| count(slot, v, rate));
            }
            MetricType::Gauge => {
                let slot = self.gauges.slot(k);
                line.for_each_value(|v| gauge(slot, v, at));
            }
            MetricType::Timer => {
                let slot = self.timers.slot(k);
                line.for_each_value(|v| time(slot, v, rate));
            }
            MetricType::Set => {
                let slot = self.sets.slot(k);
                line.for_each_value(|v| {
                    if let Some(Value::Member(m)) = v {
                        slot.insert(member_hash(m));
                    }
                });
            }
        }
        true
    }

    /// Add one value of a line that [`parse::quick`] read: `k` is its key
    /// already, its rate is 1. Returns `false` as [`Interval::add`] does.
    #[inline]
    pub fn add_one(&mut self, k: &str, kind: MetricType, v: Value<'_>, at: u64) -> bool {
        if self.over_limit(k, kind) {
            return false;
        }
        match kind {
            MetricType::Counter => count(self.counters.slot(k), Some(v), 1.0),
            MetricType::Gauge => gauge(self.gauges.slot(k), Some(v), at),
            MetricType::Timer => time(self.timers.slot(k), Some(v), 1.0),
            MetricType::Set => {
                if let Value::Member(m) = v {
                    self.sets.slot(k).insert(member_hash(m));
                }
            }
        }
        true
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
            && self.gauges.is_empty()
            && self.timers.is_empty()
            && self.sets.is_empty()
    }
}

/// A counter value, divided by its sample rate.
#[inline]
fn count(slot: &mut f64, v: Option<Value<'_>>, rate: f64) {
    if let Some(Value::Number(n)) = v {
        *slot += n / rate;
    }
}

/// A gauge value (absolute or a change) that arrived at `at`.
#[inline]
fn gauge(slot: &mut GaugeOps, v: Option<Value<'_>>, at: u64) {
    match v {
        Some(Value::Number(n)) => slot.set(n, at),
        Some(Value::Delta(d)) => slot.change(d, at),
        _ => {}
    }
}

/// A timer value, weighted by its sample rate.
#[inline]
fn time(slot: &mut TimerValues, v: Option<Value<'_>>, rate: f64) {
    if let Some(Value::Number(n)) = v {
        slot.values.push(n);
        slot.count += 1.0 / rate;
        slot.weighted_sum += n / rate;
    }
}

/// The hash of a set member (the same in every shard).
pub fn member_hash(m: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.hash(&mut h);
    h.finish()
}

/// Reusable buffers that build a metric's key as statsd 0.9 builds it:
/// `name` or, with tags, `name;tag;tag` (each tag `k=v` or `flag`), cleaned
/// by [`name`](super::name). Unlike statsd, the tags are sorted (and
/// repeated ones dropped), so the same tags in any order aggregate together.
#[derive(Default)]
pub struct KeyBuf {
    key: String,
    tags: Vec<(usize, usize)>,
}

impl KeyBuf {
    /// Build the key for `line`; the returned slice lives until the next call.
    pub fn build(&mut self, line: &Line<'_>) -> &str {
        self.key.clear();
        name::push_clean(&mut self.key, line.name);
        if !line.name_tail.is_empty() {
            name::push_clean(&mut self.key, line.name_tail);
        }
        if line.tags.is_empty() && line.name_tags.is_empty() {
            return &self.key;
        }
        self.tags.clear();
        // Ranges index `line.tags`, then (from `base` on) `line.name_tags`.
        let (tags, named) = (line.tags, line.name_tags);
        let base = tags.len() + 1;
        for (list, offset) in [(tags, 0), (named, base)] {
            let mut start = offset;
            for t in list.split(',') {
                // Empty tags are skipped.
                if !t.is_empty() {
                    self.tags.push((start, start + t.len()));
                }
                start += t.len() + 1;
            }
        }
        let get = |(s, e): (usize, usize)| {
            if s >= base {
                &named[s - base..e - base]
            } else {
                &tags[s..e]
            }
        };
        self.tags.sort_unstable_by(|a, b| get(*a).cmp(get(*b)));
        self.tags.dedup_by(|a, b| get(*a) == get(*b));
        for &r in &self.tags {
            self.key.push(';');
            name::push_clean_tag(&mut self.key, get(r));
        }
        &self.key
    }
}

/// Split a key built by [`KeyBuf`] into its name and `(key, value)` tags.
pub fn split_key(key: &str) -> (&str, impl Iterator<Item = (&str, &str)>) {
    let mut parts = key.split(';');
    let name = parts.next().unwrap_or("");
    (name, parts.map(|t| t.split_once('=').unwrap_or((t, ""))))
}

/// Live counters of one shard (read at any time by `/metrics`).
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Datagrams received.
    pub packets: AtomicU64,
    /// Bytes received.
    pub bytes: AtomicU64,
    /// Metric lines accepted.
    pub metrics: AtomicU64,
    /// Lines refused.
    pub bad_lines: AtomicU64,
    /// Datagrams longer than the receive buffer (truncated, then dropped).
    pub oversized: AtomicU64,
    /// Lines dropped because their series would pass `max_series`.
    pub series_dropped: AtomicU64,
    /// DogStatsD events received (counted, then dropped).
    pub events: AtomicU64,
    /// DogStatsD service checks received (counted, then dropped).
    pub service_checks: AtomicU64,
    /// Datagrams passed on to the `--relay` address.
    pub relayed: AtomicU64,
    /// Datagrams the relay could not pass on (send refused or would block,
    /// or truncated on receipt).
    pub relay_dropped: AtomicU64,
}

/// One receive thread's share of the work.
#[derive(Debug, Default)]
pub struct Shard {
    /// The interval being collected.
    pub interval: Mutex<Interval>,
    /// Live counters.
    pub stats: ShardStats,
}

/// The last bad line seen (a sample for operators), shared by all shards.
#[derive(Debug, Default)]
pub struct BadSample(Mutex<String>);

impl BadSample {
    /// Record `line` (truncated to 200 bytes) and why it was refused.
    pub fn record(&self, line: &[u8], why: parse::BadLine) {
        let shown = &line[..line.len().min(200)];
        let mut s = self.0.lock();
        s.clear();
        s.push_str(&String::from_utf8_lossy(shown));
        s.push_str(" (");
        s.push_str(&why.to_string());
        s.push(')');
    }

    /// The recorded sample, or an empty string.
    pub fn get(&self) -> String {
        self.0.lock().clone()
    }
}

/// Parse every line of `datagram`, which arrived at `at` (nanoseconds since
/// the epoch), into `interval`, counting good and bad lines into `stats` and
/// sampling the last bad line into `bad`.
pub fn ingest(
    datagram: &[u8],
    at: u64,
    interval: &mut Interval,
    key: &mut KeyBuf,
    stats: &ShardStats,
    bad: &BadSample,
) {
    let mut good = 0u64;
    let mut wrong = 0u64;
    let mut dropped = 0u64;
    let (mut events, mut checks) = (0u64, 0u64);
    for l in parse::lines(datagram) {
        // Most lines are `name:value|type` with a clean name: one pass, and
        // the name is the key.
        if let Some((k, kind, v)) = parse::quick(l) {
            if interval.add_one(k, kind, v, at) {
                good += 1;
            } else {
                dropped += 1;
            }
            continue;
        }
        match parse::special(l) {
            Some(parse::Special::Event) => {
                events += 1;
                continue;
            }
            Some(parse::Special::ServiceCheck) => {
                checks += 1;
                continue;
            }
            None => {}
        }
        // A line of several segments (statsd's `name:1|c:2|ms`) is still one
        // line: a bad segment makes it a bad line, while its good segments
        // are aggregated as statsd does.
        let (mut taken, mut why_bad) = (false, None);
        parse::parse_segments(l, |segment| match segment {
            Ok(line) => {
                if interval.add(&line, key, at) {
                    taken = true;
                } else {
                    dropped += 1;
                }
            }
            Err(why) => {
                why_bad.get_or_insert(why);
            }
        });
        if let Some(why) = why_bad {
            wrong += 1;
            bad.record(l, why);
            tracing::debug!(line = %String::from_utf8_lossy(l), %why, "bad statsd line");
        } else if taken {
            good += 1;
        }
    }
    stats.metrics.fetch_add(good, Ordering::Relaxed);
    if dropped > 0 {
        stats.series_dropped.fetch_add(dropped, Ordering::Relaxed);
    }
    if wrong > 0 {
        stats.bad_lines.fetch_add(wrong, Ordering::Relaxed);
    }
    if events > 0 {
        stats.events.fetch_add(events, Ordering::Relaxed);
    }
    if checks > 0 {
        stats.service_checks.fetch_add(checks, Ordering::Relaxed);
    }
}

/// The interval that `datagram` alone makes, for the tests of the flush and
/// the sinks.
#[cfg(test)]
pub(crate) fn interval_of(datagram: &str) -> Interval {
    let mut i = Interval::default();
    ingest(
        datagram.as_bytes(),
        now_ns(),
        &mut i,
        &mut KeyBuf::default(),
        &ShardStats::default(),
        &BadSample::default(),
    );
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(i: &mut Interval, d: &str) -> (u64, u64) {
        let stats = ShardStats::default();
        let bad = BadSample::default();
        ingest(
            d.as_bytes(),
            now_ns(),
            i,
            &mut KeyBuf::default(),
            &stats,
            &bad,
        );
        (
            stats.metrics.load(Ordering::Relaxed),
            stats.bad_lines.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn aggregates_each_type() {
        let mut i = Interval::default();
        let d = "c:1|c\nc:2|c|@0.5\ng:333|g\ng:-10|g\ng:+4|g\nt:5|ms\nt:7:9|ms|@0.5\ns:a|s\ns:b|s\ns:a|s";
        assert_eq!(feed(&mut i, d), (10, 0));
        assert_eq!(i.counters["c"], 5.0);
        assert_eq!(
            i.gauges["g"].resolve(),
            GaugeOp {
                set: Some(333.0),
                delta: -6.0
            }
        );
        assert_eq!(i.timers["t"].values, vec![5.0, 7.0, 9.0]);
        assert_eq!(i.timers["t"].count, 5.0);
        assert_eq!(i.sets["s"].len(), 2);
    }

    #[test]
    fn several_types_on_one_line_as_statsd_takes_them() {
        // statsd's stats.js splits `name:` off, then each `:`-separated
        // `value|type[|@rate]` is a metric of its own; `|#tags` go to all.
        // A line with a bad segment counts as one bad line; its good
        // segments are still taken.
        let mut i = Interval::default();
        assert_eq!(
            feed(&mut i, "m:2|c:5|ms|@0.5:7|g|#env:prod\nn:1|c:x|c:3|c"),
            (1, 1)
        );
        assert_eq!(i.counters["m;env=prod"], 2.0);
        assert_eq!(i.timers["m;env=prod"].values, vec![5.0]);
        assert_eq!(i.timers["m;env=prod"].count, 2.0);
        assert_eq!(i.gauges["m;env=prod"].resolve().set, Some(7.0));
        assert_eq!(i.counters["n"], 4.0);
    }

    #[test]
    fn a_sample_rate_above_one_scales_down() {
        let mut i = Interval::default();
        assert_eq!(feed(&mut i, "c:4|c|@2\nt:1|ms|@4"), (2, 0));
        assert_eq!(i.counters["c"], 2.0);
        assert_eq!(i.timers["t"].count, 0.25);
    }

    #[test]
    fn bad_lines_are_counted_and_the_rest_used() {
        let mut i = Interval::default();
        assert_eq!(feed(&mut i, "a:1|c\ngarbage\nb:x|c\na:2|c"), (2, 2));
        assert_eq!(i.counters["a"], 3.0);
    }

    #[test]
    fn new_series_over_the_limit_are_dropped() {
        let mut i = Interval::with_limit(2);
        let stats = ShardStats::default();
        let d = "a:1|c\nb:1|g\nc:1|c\na:1|c";
        ingest(
            d.as_bytes(),
            1,
            &mut i,
            &mut KeyBuf::default(),
            &stats,
            &BadSample::default(),
        );
        assert_eq!(i.series(), 2);
        assert_eq!(i.counters["a"], 2.0);
        assert_eq!(stats.series_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(stats.metrics.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn keys_are_sanitised_like_statsd() {
        let mut i = Interval::default();
        feed(
            &mut i,
            "my  metric/x!:1|c\nnaïve:1|c|#path:/a b,k=x:v\n a;b=c :1|c\n!!:1|c",
        );
        let mut keys: Vec<_> = i.counters.keys().map(str::to_string).collect();
        keys.sort();
        // statsd 0.9 keeps `;` and `=`, does not trim, and would keep `!!`
        // as a series named ``: that one is a bad line here.
        assert_eq!(keys, vec!["_a;b=c_", "my_metric-x", "nave;k=x=v;path=-a_b"]);
    }

    #[test]
    fn tags_in_the_name_in_every_style_statsd_exporter_reads() {
        let mut i = Interval::default();
        let d = "inf,env=prod,region=eu:1|c\nlib#env=prod:2|c\nsfx[env=prod,k=v]:3|c\n\
                 mid.[env=prod]tail:4|c\nmix,b=2:5|c|#a:1\n,a=b:1|c\n[a=b]:1|c\n#x=y:1|c";
        assert_eq!(feed(&mut i, d), (5, 3));
        let mut keys: Vec<_> = i.counters.keys().map(str::to_string).collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![
                "inf;env=prod;region=eu",
                "lib;env=prod",
                "mid.tail;env=prod",
                "mix;a=1;b=2",
                "sfx;env=prod;k=v"
            ]
        );
    }

    #[test]
    fn tags_make_a_canonical_key() {
        let mut i = Interval::default();
        feed(
            &mut i,
            "r:1|c|#b:2,a:1\nr:1|c|#a:1,b:2\nr:1|c|#flag,x;y:z=w",
        );
        let mut keys: Vec<_> = i.counters.keys().map(str::to_string).collect();
        keys.sort();
        assert_eq!(keys, vec!["r;a=1;b=2", "r;flag;x_y=z=w"]);
        assert_eq!(i.counters["r;a=1;b=2"], 2.0);
        let (name, tags) = split_key("r;flag;x_y=z=w");
        assert_eq!(name, "r");
        assert_eq!(tags.collect::<Vec<_>>(), vec![("flag", ""), ("x_y", "z=w")]);
    }

    #[test]
    fn gauge_operations_merge_by_arrival_not_by_shard() {
        // Shard 0 got a change at t=20, shard 1 the set at t=10: the change
        // came after the set, whichever shard is merged first.
        let mut a = GaugeOps::default();
        a.change(1.0, 20);
        let mut b = GaugeOps::default();
        b.change(1000.0, 5);
        b.set(50.0, 10);
        b.change(2.0, 30);
        for (x, y) in [(a.clone(), b.clone()), (b, a)] {
            let mut m = GaugeOps::default();
            m.absorb(x);
            m.absorb(y);
            assert_eq!(
                m.resolve(),
                GaugeOp {
                    set: Some(50.0),
                    delta: 3.0
                }
            );
        }
        // In one datagram (one arrival time) line order decides.
        let mut g = GaugeOps::default();
        g.change(1.0, 7);
        g.set(5.0, 7);
        g.change(2.0, 7);
        assert_eq!(g.resolve().set.map(|v| v + g.resolve().delta), Some(7.0));
        // A flood of changes stays bounded and adds up.
        let mut g = GaugeOps::default();
        for t in 0..10_000 {
            g.change(1.0, t);
        }
        assert!(g.changes.len() <= MAX_GAUGE_CHANGES);
        assert_eq!(g.resolve().delta, 10_000.0);
    }
}
