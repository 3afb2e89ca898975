//! Turning the shards' intervals into one flushed [`Snapshot`], as the statsd
//! daemon does (`lib/process_metrics.js` and the reset rules of `stats.js`).
//!
//! Counters: the interval's count and its per-second rate; idle counters are
//! reported as 0 unless `delete_counters`. Timers: count (sample-weighted),
//! count_ps, lower, upper, mean, median, sum, sum_squares, std, and for each
//! percentile P: count_P, mean_P, upper_P (lower_topP for negative P), sum_P,
//! sum_squares_P. Gauges keep their value across intervals (deleted after
//! `gauges_max_ttl` idle flushes when `delete_gauges`). Sets: unique count.
//!
//! Bounded, where statsd is not: the collector keeps at most
//! `max_series` series in all (a new series past it is dropped and counted
//! in [`State::series_dropped`]), and a series with no update for
//! `series_ttl` is forgotten ([`State::series_expired`]), so a stream of
//! ever-new names cannot grow memory or `/metrics` without bound.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::aggregate::{split_key, GaugeOp, GaugeOps, Interval, TimerValues};
use super::mapped;
use super::mapping::{Mapper, Observer, StatType};
use super::observe::{Observed, ObserverState};

/// What to keep between flushes.
#[derive(Clone, Debug, PartialEq)]
pub struct FlushRules {
    /// Percentile thresholds (statsd's `percentThreshold`), e.g. 90, 95, 99.
    pub percentiles: Vec<f64>,
    /// Drop a counter that had no update in an interval (else report 0).
    pub delete_counters: bool,
    /// Drop an idle timer (else report count 0).
    pub delete_timers: bool,
    /// Drop an idle set (else report 0).
    pub delete_sets: bool,
    /// Drop a gauge idle for `gauges_max_ttl` flushes (else keep it forever).
    pub delete_gauges: bool,
    /// Flushes a gauge may stay idle before `delete_gauges` drops it (≥ 1).
    pub gauges_max_ttl: u32,
    /// Series kept in all (counters, gauges, timers and sets together).
    pub max_series: usize,
    /// Seconds a series may go without an update before it is forgotten
    /// (`None`: kept forever, as statsd does).
    pub series_ttl: Option<u64>,
    /// Bucket bounds (ms) that make every timer no mapping takes a
    /// cumulative histogram too (`timer_histogram`); `None`: summary only.
    pub timer_buckets: Option<Vec<f64>>,
}

/// Default of [`FlushRules::max_series`].
pub const MAX_SERIES_DEFAULT: usize = 1_000_000;

/// Default of [`FlushRules::series_ttl`]: an hour.
pub const SERIES_TTL_DEFAULT: u64 = 3600;

impl Default for FlushRules {
    fn default() -> Self {
        FlushRules {
            percentiles: vec![90.0, 95.0, 99.0],
            delete_counters: false,
            delete_timers: false,
            delete_sets: false,
            delete_gauges: false,
            gauges_max_ttl: 1,
            max_series: MAX_SERIES_DEFAULT,
            series_ttl: Some(SERIES_TTL_DEFAULT),
            timer_buckets: None,
        }
    }
}

/// A counter after a flush.
#[derive(Clone, Debug, PartialEq)]
pub struct CounterOut {
    /// The interval's count (sample-rate corrected).
    pub count: f64,
    /// `count` per second of the interval.
    pub rate: f64,
    /// The sum of every interval's count since start (for Prometheus).
    pub total: f64,
}

/// One percentile's figures for a timer.
#[derive(Clone, Debug, PartialEq)]
pub struct PercentileOut {
    /// The threshold as configured (e.g. 90, 99.9, -10).
    pub pct: f64,
    /// Its statsd suffix: `90`, `99_9`, `top10`.
    pub label: String,
    /// Values inside the threshold.
    pub count: f64,
    /// Their mean.
    pub mean: f64,
    /// The threshold value (upper for P > 0, lower for P < 0).
    pub bound: f64,
    /// Their sum.
    pub sum: f64,
    /// Their sum of squares.
    pub sum_squares: f64,
}

/// A timer after a flush. `stats` is `None` for an idle timer (count 0).
#[derive(Clone, Debug, PartialEq)]
pub struct TimerOut {
    /// Sample-rate-weighted count in the interval.
    pub count: f64,
    /// `count` per second.
    pub count_ps: f64,
    /// The statistics over the interval's values.
    pub stats: Option<TimerStats>,
    /// Sum of counts since start (Prometheus summary `_count`).
    pub total_count: f64,
    /// Sum of `value / rate` since start (Prometheus summary `_sum`),
    /// scaled by the sample rate as `total_count` is.
    pub total_sum: f64,
    /// The timer as a histogram or summary, when a mapping (or
    /// `timer_histogram`) makes it one.
    pub observed: Option<Observed>,
}

/// Statistics of a timer's values in one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct TimerStats {
    pub lower: f64,
    pub upper: f64,
    pub mean: f64,
    pub median: f64,
    pub sum: f64,
    pub sum_squares: f64,
    pub std: f64,
    /// One entry per configured percentile that had values.
    pub percentiles: Vec<PercentileOut>,
}

/// Everything one flush reports, sorted by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Unix time of the flush, in seconds.
    pub timestamp: u64,
    /// The interval length used for rates, in seconds.
    pub interval_secs: f64,
    pub counters: Vec<(String, CounterOut)>,
    pub gauges: Vec<(String, f64)>,
    pub timers: Vec<(String, TimerOut)>,
    pub sets: Vec<(String, u64)>,
    /// Gauges that a mapping sends, with other statsd names, to one
    /// Prometheus series (see `mapped`), by statsd key: the series' value
    /// on the key that shows it, `None` on the keys shown through it.
    /// Keys no mapping takes are not here.
    pub mapped_gauges: HashMap<String, Option<f64>>,
    /// The same for sets: the unique count over all the names' members.
    pub mapped_sets: HashMap<String, Option<u64>>,
    /// The same for timers a mapping makes summaries: one window for all.
    pub mapped_summaries: HashMap<String, Option<Observed>>,
}

#[derive(Default)]
struct GaugeState {
    value: f64,
    ttl: u32,
    last: u64,
}

#[derive(Default)]
struct TimerTotals {
    count: f64,
    sum: f64,
    last: u64,
    observer: Option<ObserverState>,
}

#[derive(Default)]
struct CounterTotal {
    total: f64,
    last: u64,
}

/// What persists between flushes: known keys, gauge values, running totals,
/// and when each series was last updated.
#[derive(Default)]
pub struct State {
    rules: FlushRules,
    mapper: Arc<Mapper>,
    counters: HashMap<String, CounterTotal>,
    gauges: HashMap<String, GaugeState>,
    timers: HashMap<String, TimerTotals>,
    sets: HashMap<String, u64>,
    /// Mapped gauges' values, by mapped series (see `mapped`).
    mapped_gauges: HashMap<String, f64>,
    /// Mapped summaries' windows, by mapped series.
    mapped_summaries: HashMap<String, ObserverState>,
    /// New series dropped since start because `max_series` were kept.
    pub series_dropped: u64,
    /// Series forgotten since start after `series_ttl` without an update.
    pub series_expired: u64,
}

impl State {
    /// A fresh state with `rules`.
    pub fn new(rules: FlushRules) -> Self {
        State {
            rules,
            ..Default::default()
        }
    }

    /// Series kept now.
    pub fn series(&self) -> usize {
        self.counters.len() + self.gauges.len() + self.timers.len() + self.sets.len()
    }

    /// Whether one more series may be kept; counts the drop if not.
    fn admit(&mut self) -> bool {
        if self.series() < self.rules.max_series {
            true
        } else {
            self.series_dropped += 1;
            false
        }
    }

    /// Use `mapper` from the next flush on (per-mapping `ttl`, timers
    /// mapped to histograms or summaries).
    pub fn set_mapper(&mut self, mapper: Arc<Mapper>) {
        self.mapper = mapper;
    }

    /// Merge the shards' `intervals` and compute the flushed figures.
    /// `interval_secs` is the length used for per-second rates.
    pub fn flush(
        &mut self,
        intervals: Vec<Interval>,
        interval_secs: f64,
        timestamp: u64,
    ) -> Snapshot {
        let merged = merge(intervals);
        let secs = if interval_secs > 0.0 {
            interval_secs
        } else {
            1.0
        };
        let mut snap = Snapshot {
            timestamp,
            interval_secs: secs,
            ..Default::default()
        };
        self.expire(&merged, timestamp);
        self.flush_counters(merged.counters, secs, timestamp, &mut snap);
        self.flush_gauges(merged.gauges, timestamp, &mut snap);
        self.flush_timers(merged.timers, secs, timestamp, &mut snap);
        self.flush_sets(merged.sets, timestamp, &mut snap);
        snap.counters.sort_by(|a, b| a.0.cmp(&b.0));
        snap.gauges.sort_by(|a, b| a.0.cmp(&b.0));
        snap.timers.sort_by(|a, b| a.0.cmp(&b.0));
        snap.sets.sort_by(|a, b| a.0.cmp(&b.0));
        snap
    }

    /// Forget the series idle for `series_ttl` (those updated in this
    /// interval are not idle).
    fn expire(&mut self, merged: &Merged, now: u64) {
        let mapper = self.mapper.clone();
        if self.rules.series_ttl.is_none() && !mapper.has_ttl() {
            return;
        }
        let before = self.series();
        let global = self.rules.series_ttl;
        // A mapping's `ttl` (0: never) wins over `series_ttl`.
        let gone = |t: StatType, key: &str, last: u64| {
            let ttl = match mapper.ttl(t, split_key(key).0) {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d.as_secs().max(1)),
                None => global,
            };
            ttl.is_some_and(|t| now.saturating_sub(last) >= t)
        };
        self.counters
            .retain(|k, c| merged.counters.contains_key(k) || !gone(StatType::Counter, k, c.last));
        self.gauges
            .retain(|k, g| merged.gauges.contains_key(k) || !gone(StatType::Gauge, k, g.last));
        self.timers
            .retain(|k, t| merged.timers.contains_key(k) || !gone(StatType::Observer, k, t.last));
        self.sets
            .retain(|k, last| merged.sets.contains_key(k) || !gone(StatType::Gauge, k, *last));
        self.series_expired += (before - self.series()) as u64;
    }

    fn flush_counters(
        &mut self,
        mut now: HashMap<String, f64>,
        secs: f64,
        at: u64,
        snap: &mut Snapshot,
    ) {
        let delete = self.rules.delete_counters;
        self.counters.retain(|k, c| {
            let count = match now.remove(k) {
                Some(n) => {
                    c.last = at;
                    n
                }
                None if delete => return false,
                None => 0.0,
            };
            c.total += count;
            snap.counters.push((
                k.clone(),
                CounterOut {
                    count,
                    rate: count / secs,
                    total: c.total,
                },
            ));
            true
        });
        for (k, count) in now {
            if !self.admit() {
                continue;
            }
            snap.counters.push((
                k.clone(),
                CounterOut {
                    count,
                    rate: count / secs,
                    total: count,
                },
            ));
            self.counters.insert(
                k,
                CounterTotal {
                    total: count,
                    last: at,
                },
            );
        }
    }

    fn flush_gauges(&mut self, now: HashMap<String, GaugeOps>, at: u64, snap: &mut Snapshot) {
        let ttl = self.rules.gauges_max_ttl.max(1);
        // Operations of the names mapped to one series, merged by arrival.
        let mut ops_of: HashMap<String, GaugeOps> = HashMap::new();
        for (id, keys) in mapped::groups(&self.mapper, StatType::Gauge, "gauge", now.keys()) {
            let ops = ops_of.entry(id).or_default();
            for k in keys {
                ops.absorb(now[k].clone());
            }
        }
        for (k, ops) in now {
            let op: GaugeOp = ops.resolve();
            if !self.gauges.contains_key(&k) && !self.admit() {
                continue;
            }
            let g = self.gauges.entry(k).or_default();
            g.value = match op.set {
                Some(v) => v + op.delta,
                // statsd: a signed value changes an existing gauge; with none
                // (or 0) it sets it, which is the same as adding to 0.
                None => g.value + op.delta,
            };
            g.ttl = ttl + 1;
            g.last = at;
        }
        let delete = self.rules.delete_gauges;
        self.gauges.retain(|k, g| {
            if delete {
                g.ttl = g.ttl.saturating_sub(1);
                if g.ttl == 0 {
                    return false;
                }
            }
            snap.gauges.push((k.clone(), g.value));
            true
        });
        let live = mapped::groups(&self.mapper, StatType::Gauge, "gauge", self.gauges.keys());
        let mut values = HashMap::with_capacity(live.len());
        for (id, keys) in live {
            let before = self.mapped_gauges.get(&id).copied();
            let v = match ops_of.get(&id).map(GaugeOps::resolve) {
                Some(GaugeOp {
                    set: Some(v),
                    delta,
                }) => v + delta,
                // statsd_exporter: a change applies to the series' value
                // (0 for a new one).
                Some(GaugeOp { set: None, delta }) => before.unwrap_or(0.0) + delta,
                // Nothing new (or just mapped by a reloaded file).
                None => before
                    .unwrap_or_else(|| keys.iter().min().map_or(0.0, |k| self.gauges[*k].value)),
            };
            mapped::show(&mut snap.mapped_gauges, &keys, v);
            values.insert(id, v);
        }
        self.mapped_gauges = values;
    }

    fn flush_timers(
        &mut self,
        mut now: HashMap<String, TimerValues>,
        secs: f64,
        at: u64,
        snap: &mut Snapshot,
    ) {
        let delete = self.rules.delete_timers;
        // Owned, so that new series can go through `admit` below.
        let (rules, mapper) = (self.rules.clone(), self.mapper.clone());
        let (rules, mapper) = (&rules, &mapper);
        let when = Flushed { secs, at };
        // The windows of summaries shared by several names, taken out and
        // put back for the series that still have a name.
        let mut old = std::mem::take(&mut self.mapped_summaries);
        let mut shared: HashMap<String, (ObserverState, Vec<String>)> = HashMap::new();
        let mut observe_shared = |k: &String, t: &TimerValues, obs: Option<(Observer, f64)>| {
            let (config, scale) = match obs {
                Some((c @ Observer::Summary { .. }, s)) => (c, s),
                other => return other,
            };
            let Some(id) = mapped::series_of(mapper, StatType::Observer, "timer", k) else {
                return Some((config, scale));
            };
            let (st, keys) = shared.entry(id.clone()).or_insert_with(|| {
                let st = old
                    .remove(&id)
                    .filter(|st| st.is_for(&config, scale))
                    .unwrap_or_else(|| ObserverState::new(&config, scale));
                (st, Vec::new())
            });
            st.observe(&t.values, t.count, t.weighted_sum, at);
            keys.push(k.clone());
            None
        };
        self.timers.retain(|k, totals| {
            let t = match now.remove(k) {
                Some(t) => {
                    totals.last = at;
                    t
                }
                None if delete => return false,
                None => TimerValues::default(),
            };
            let obs = observe_shared(k, &t, observer_for(mapper, rules, k));
            snap.timers.push((
                k.clone(),
                timer_out(t, when, &rules.percentiles, totals, obs),
            ));
            true
        });
        for (k, t) in now {
            if !self.admit() {
                continue;
            }
            let mut totals = TimerTotals {
                last: at,
                ..TimerTotals::default()
            };
            let obs = observe_shared(&k, &t, observer_for(mapper, rules, &k));
            snap.timers.push((
                k.clone(),
                timer_out(t, when, &rules.percentiles, &mut totals, obs),
            ));
            self.timers.insert(k, totals);
        }
        // A window is shown once all its names are in.
        for (id, (st, keys)) in shared {
            let keys: Vec<&String> = keys.iter().collect();
            mapped::show(&mut snap.mapped_summaries, &keys, st.output());
            self.mapped_summaries.insert(id, st);
        }
    }

    fn flush_sets(&mut self, mut now: HashMap<String, HashSet<u64>>, at: u64, snap: &mut Snapshot) {
        // Members of the names mapped to one series, together.
        let mut members: HashMap<String, HashSet<u64>> = HashMap::new();
        for (id, keys) in mapped::groups(&self.mapper, StatType::Gauge, "set", now.keys()) {
            let all = members.entry(id).or_default();
            for k in keys {
                all.extend(&now[k]);
            }
        }
        let delete = self.rules.delete_sets;
        self.sets.retain(|k, last| match now.remove(k) {
            Some(s) => {
                *last = at;
                snap.sets.push((k.clone(), s.len() as u64));
                true
            }
            None if delete => false,
            None => {
                snap.sets.push((k.clone(), 0));
                true
            }
        });
        for (k, s) in now {
            if !self.admit() {
                continue;
            }
            snap.sets.push((k.clone(), s.len() as u64));
            self.sets.insert(k, at);
        }
        for (id, keys) in mapped::groups(&self.mapper, StatType::Gauge, "set", self.sets.keys()) {
            let n = members.get(&id).map_or(0, |m| m.len() as u64);
            mapped::show(&mut snap.mapped_sets, &keys, n);
        }
    }
}

/// Every shard's interval, merged.
#[derive(Default)]
struct Merged {
    counters: HashMap<String, f64>,
    gauges: HashMap<String, GaugeOps>,
    timers: HashMap<String, TimerValues>,
    sets: HashMap<String, HashSet<u64>>,
}

/// Merge the shards' intervals into one.
fn merge(intervals: Vec<Interval>) -> Merged {
    let mut out = Merged::default();
    for i in intervals {
        for (k, v) in i.counters.into_pairs() {
            *out.counters.entry(k).or_default() += v;
        }
        for (k, ops) in i.gauges.into_pairs() {
            // By arrival time: the newest set anywhere, plus every change
            // that arrived after it, whichever shard took them.
            out.gauges.entry(k).or_default().absorb(ops);
        }
        for (k, t) in i.timers.into_pairs() {
            let e = out.timers.entry(k).or_default();
            e.values.extend(t.values);
            e.count += t.count;
            e.weighted_sum += t.weighted_sum;
        }
        for (k, s) in i.sets.into_pairs() {
            out.sets.entry(k).or_default().extend(s);
        }
    }
    out
}

/// JavaScript's `Math.round` (halves round up).
fn js_round(x: f64) -> f64 {
    (x + 0.5).floor()
}

/// statsd's suffix for a percentile: `99.9` → `99_9`, `-10` → `top10`.
pub fn pct_label(p: f64) -> String {
    let s = if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    };
    s.replacen('.', "_", 1).replacen('-', "top", 1)
}

/// How timer `key` is observed for Prometheus: as its mapping says (values
/// in seconds), else as `timer_histogram` says (values in ms), else not.
fn observer_for(mapper: &Mapper, rules: &FlushRules, key: &str) -> Option<(Observer, f64)> {
    match mapper.map(StatType::Observer, split_key(key).0) {
        Some(m) if m.drop => None,
        Some(m) => Some((m.observer.clone(), 0.001)),
        None => rules
            .timer_buckets
            .as_ref()
            .map(|b| (Observer::Histogram { buckets: b.clone() }, 1.0)),
    }
}

/// The flush's interval length (for rates) and time.
#[derive(Clone, Copy)]
struct Flushed {
    secs: f64,
    at: u64,
}

fn timer_out(
    mut t: TimerValues,
    when: Flushed,
    pcts: &[f64],
    totals: &mut TimerTotals,
    obs: Option<(Observer, f64)>,
) -> TimerOut {
    let secs = when.secs;
    // Both totals are scaled by the sample rate, so `_sum / _count` is the
    // mean (statsd's own `sum` below stays the sum of the values received).
    totals.count += t.count;
    totals.sum += t.weighted_sum;
    let observed = match obs {
        Some((config, scale)) => {
            let st = match &mut totals.observer {
                Some(st) if st.is_for(&config, scale) => st,
                slot => slot.insert(ObserverState::new(&config, scale)),
            };
            st.observe(&t.values, t.count, t.weighted_sum, when.at);
            Some(st.output())
        }
        None => {
            totals.observer = None;
            None
        }
    };
    let stats = if t.values.is_empty() {
        None
    } else {
        let v = &mut t.values;
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let mut cum = Vec::with_capacity(n);
        let mut cum_sq = Vec::with_capacity(n);
        let (mut s, mut sq) = (0.0, 0.0);
        for x in v.iter() {
            s += x;
            sq += x * x;
            cum.push(s);
            cum_sq.push(sq);
        }
        let (min, max) = (v[0], v[n - 1]);
        let mut percentiles = Vec::new();
        for &pct in pcts {
            let (mut count, mut sum, mut sum_sq, mut mean, mut bound) =
                (n, min, min * min, min, max);
            if n > 1 {
                count = js_round(pct.abs() / 100.0 * n as f64) as usize;
                if count == 0 {
                    continue;
                }
                if pct > 0.0 {
                    bound = v[count - 1];
                    sum = cum[count - 1];
                    sum_sq = cum_sq[count - 1];
                } else {
                    bound = v[n - count];
                    let (c0, q0) = match (n - count).checked_sub(1) {
                        Some(before) => (cum[before], cum_sq[before]),
                        None => (0.0, 0.0),
                    };
                    sum = cum[n - 1] - c0;
                    sum_sq = cum_sq[n - 1] - q0;
                }
                mean = sum / count as f64;
            }
            percentiles.push(PercentileOut {
                pct,
                label: pct_label(pct),
                count: count as f64,
                mean,
                bound,
                sum,
                sum_squares: sum_sq,
            });
        }
        let sum = cum[n - 1];
        let mean = sum / n as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let mid = n / 2;
        let median = if n % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(TimerStats {
            lower: min,
            upper: max,
            mean,
            median,
            sum,
            sum_squares: cum_sq[n - 1],
            std: var.sqrt(),
            percentiles,
        })
    };
    TimerOut {
        count: t.count,
        count_ps: t.count / secs,
        stats,
        total_count: totals.count,
        total_sum: totals.sum,
        observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::aggregate::interval_of as interval;

    #[test]
    fn timer_figures_match_statsd() {
        // statsd's own test (test/process_metrics_tests.js, "timers_multiple_times"
        // style): values 100, 200, 300 with thresholds 90 and -10 (top10).
        let mut st = State::new(FlushRules {
            percentiles: vec![90.0, -10.0],
            ..Default::default()
        });
        let snap = st.flush(vec![interval("a:100|ms\na:200|ms\na:300|ms")], 100.0, 1);
        let t = &snap.timers[0].1;
        assert_eq!(t.count, 3.0);
        assert_eq!(t.count_ps, 0.03);
        let s = t.stats.as_ref().unwrap();
        assert_eq!(
            (s.lower, s.upper, s.mean, s.median, s.sum),
            (100.0, 300.0, 200.0, 200.0, 600.0)
        );
        assert_eq!(s.sum_squares, 140000.0);
        assert!((s.std - 81.64965809277261).abs() < 1e-9);
        let p90 = &s.percentiles[0];
        assert_eq!(
            (p90.label.as_str(), p90.count, p90.bound, p90.sum, p90.mean),
            ("90", 3.0, 300.0, 600.0, 200.0)
        );
        // round(0.1 * 3) = 0: the -10 threshold is skipped, as statsd does.
        assert_eq!(s.percentiles.len(), 1);
        assert_eq!(pct_label(99.9), "99_9");
        assert_eq!(pct_label(-10.0), "top10");
    }

    #[test]
    fn top_percentile_and_sampled_count() {
        let mut st = State::new(FlushRules {
            percentiles: vec![-50.0, 50.0],
            ..Default::default()
        });
        let snap = st.flush(
            vec![interval("a:1|ms|@0.5\na:2|ms\na:3|ms\na:4|ms")],
            1.0,
            1,
        );
        let t = &snap.timers[0].1;
        assert_eq!(t.count, 5.0);
        let s = t.stats.as_ref().unwrap();
        let top = &s.percentiles[0];
        assert_eq!(
            (top.label.as_str(), top.count, top.bound, top.sum),
            ("top50", 2.0, 3.0, 7.0)
        );
        let low = &s.percentiles[1];
        assert_eq!(
            (low.count, low.bound, low.sum, low.mean),
            (2.0, 2.0, 3.0, 1.5)
        );
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn counters_gauges_sets_across_flushes_and_shards() {
        let mut st = State::new(FlushRules::default());
        let snap = st.flush(
            vec![
                interval("c:3|c\ng:10|g\ng:+5|g\ns:x|s"),
                interval("c:1|c|@0.25\ng:+1|g\ns:x|s\ns:y|s"),
            ],
            2.0,
            1,
        );
        assert_eq!(
            snap.counters,
            vec![(
                "c".into(),
                CounterOut {
                    count: 7.0,
                    rate: 3.5,
                    total: 7.0
                }
            )]
        );
        assert_eq!(snap.gauges, vec![("g".into(), 16.0)]);
        assert_eq!(snap.sets, vec![("s".into(), 2)]);
        // Next interval: idle counter reported as 0, gauge kept, delta applies.
        let snap = st.flush(vec![interval("g:-20|g")], 2.0, 2);
        assert_eq!(
            snap.counters,
            vec![(
                "c".into(),
                CounterOut {
                    count: 0.0,
                    rate: 0.0,
                    total: 7.0
                }
            )]
        );
        assert_eq!(snap.gauges, vec![("g".into(), -4.0)]);
        assert_eq!(snap.sets, vec![("s".into(), 0)]);
        // A negative value on a new gauge sets it (statsd: nothing to add to).
        let snap = st.flush(vec![interval("h:-3|g")], 2.0, 3);
        assert_eq!(snap.gauges, vec![("g".into(), -4.0), ("h".into(), -3.0)]);
    }

    #[test]
    fn delete_idle_rules() {
        let mut st = State::new(FlushRules {
            delete_counters: true,
            delete_timers: true,
            delete_sets: true,
            delete_gauges: true,
            gauges_max_ttl: 2,
            ..Default::default()
        });
        st.flush(vec![interval("c:1|c\ng:1|g\nt:1|ms\ns:a|s")], 1.0, 1);
        let snap = st.flush(vec![], 1.0, 2);
        assert!(snap.counters.is_empty() && snap.timers.is_empty() && snap.sets.is_empty());
        assert_eq!(snap.gauges.len(), 1, "kept for gauges_max_ttl flushes");
        let snap = st.flush(vec![], 1.0, 3);
        assert!(snap.gauges.is_empty());
    }

    #[test]
    fn every_kind_counts_toward_max_series_and_expires_after_the_ttl() {
        let mut st = State::new(FlushRules {
            max_series: 3,
            series_ttl: Some(60),
            ..Default::default()
        });
        let snap = st.flush(
            vec![interval("c:1|c\ng:5|g\nt:1|ms\ns:x|s\nc2:1|c")],
            1.0,
            100,
        );
        // Counters are admitted first, then gauges, timers, sets.
        assert_eq!(st.series(), 3);
        assert_eq!(st.series_dropped, 2);
        assert_eq!(snap.counters.len(), 2);
        assert_eq!(snap.gauges.len(), 1);
        assert!(snap.timers.is_empty() && snap.sets.is_empty());
        // Updating a kept series is never refused; idle ones stay until the ttl.
        st.flush(vec![interval("g:7|g")], 1.0, 130);
        assert_eq!((st.series(), st.series_expired), (3, 0));
        // At 160 the counters (last seen at 100) go; the gauge (130) stays.
        let snap = st.flush(vec![], 1.0, 160);
        assert_eq!(st.series_expired, 2);
        assert!(snap.counters.is_empty());
        assert_eq!(snap.gauges, vec![("g".to_string(), 7.0)]);
        // Room again for new series.
        st.flush(vec![interval("t:1|ms\ns:x|s")], 1.0, 161);
        assert_eq!(st.series(), 3);
    }
}
