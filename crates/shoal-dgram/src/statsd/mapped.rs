//! Several statsd names that a mapping sends to one Prometheus series
//! (same mapped name and labels) make one series, as in statsd_exporter,
//! whose registry keeps one metric per name and labels and applies every
//! event to it as it comes:
//!
//! - gauges: the last value set under any of the names wins, and a `+N` /
//!   `-N` change under any name applies to the series' current value (the
//!   operations of all the names are merged by arrival time, as the shards'
//!   are);
//! - summaries (timers with `observer_type: summary`): one window that
//!   every name's values go into, so the quantiles are over all of them;
//! - sets, which statsd_exporter refuses ("no support for StatsD sets"):
//!   the unique count of the union of the names' members.
//!
//! Counters and histograms add up by themselves and are merged when
//! rendered (see `prometheus`). The flush keeps one state per mapped
//! series and shows it under one of its statsd keys, the smallest; the
//! other keys are left out of `/metrics` (Graphite and JSON keep every
//! statsd name). A mapped series' state lives as long as one of its
//! statsd keys does, so memory stays bounded by `max_series`.

use std::collections::HashMap;

use super::mapping::{Mapper, StatType};
use super::prometheus::mapped_series;

/// For each mapped series: its statsd keys among `keys`; keys no mapping
/// takes are left out. Empty without a mapping file.
pub fn groups<'k>(
    mapper: &Mapper,
    t: StatType,
    kind: &'static str,
    keys: impl Iterator<Item = &'k String>,
) -> HashMap<String, Vec<&'k String>> {
    let mut out: HashMap<String, Vec<&String>> = HashMap::new();
    if mapper.is_empty() {
        return out;
    }
    for k in keys {
        if let Some(id) = mapped_series(mapper, t, kind, k) {
            out.entry(id).or_default().push(k);
        }
    }
    out
}

/// The mapped series of statsd key `k`, if a mapping takes it.
pub fn series_of(mapper: &Mapper, t: StatType, kind: &'static str, k: &str) -> Option<String> {
    if mapper.is_empty() {
        return None;
    }
    mapped_series(mapper, t, kind, k)
}

/// Show `value` under the smallest of `keys` and leave the others out:
/// `Some` for the key shown, `None` for the keys shown through it.
pub fn show<V: Clone>(into: &mut HashMap<String, Option<V>>, keys: &[&String], value: V) {
    let Some(first) = keys.iter().min() else {
        return;
    };
    for k in keys {
        into.insert((*k).clone(), None);
    }
    into.insert((*first).clone(), Some(value));
}
