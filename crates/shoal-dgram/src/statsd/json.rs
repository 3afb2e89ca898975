//! The JSON sink: one line per flush on stdout, in statsd's shapes
//! (`counters.<key>.count/rate`, `timers.<key>.mean_90`, ...), plus the
//! interval's health figures.

use serde_json::{json, Map, Value};

use super::flush::{Snapshot, TimerOut};
use super::health::Health;

/// One flush as a JSON object. `health` holds the interval's figures.
pub fn to_json(snap: &Snapshot, health: &Health) -> Value {
    let counters: Map<String, Value> = snap
        .counters
        .iter()
        .map(|(k, c)| (k.clone(), json!({ "count": c.count, "rate": c.rate })))
        .collect();
    let gauges: Map<String, Value> = snap
        .gauges
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let timers: Map<String, Value> = snap
        .timers
        .iter()
        .map(|(k, t)| (k.clone(), timer_json(t)))
        .collect();
    let sets: Map<String, Value> = snap
        .sets
        .iter()
        .map(|(k, n)| (k.clone(), json!(n)))
        .collect();
    json!({
        "timestamp": snap.timestamp,
        "interval": snap.interval_secs,
        "counters": counters,
        "gauges": gauges,
        "timers": timers,
        "sets": sets,
        "health": health,
    })
}

/// A timer's figures under statsd's names (`timer_data` in process_metrics.js).
pub fn timer_fields(t: &TimerOut) -> Vec<(String, f64)> {
    let mut out = vec![
        ("count".to_string(), t.count),
        ("count_ps".to_string(), t.count_ps),
    ];
    if let Some(s) = &t.stats {
        for p in &s.percentiles {
            out.push((format!("count_{}", p.label), p.count));
            out.push((format!("mean_{}", p.label), p.mean));
            let bound = if p.pct > 0.0 { "upper" } else { "lower" };
            out.push((format!("{bound}_{}", p.label), p.bound));
            out.push((format!("sum_{}", p.label), p.sum));
            out.push((format!("sum_squares_{}", p.label), p.sum_squares));
        }
        out.extend([
            ("std".to_string(), s.std),
            ("upper".to_string(), s.upper),
            ("lower".to_string(), s.lower),
            ("sum".to_string(), s.sum),
            ("sum_squares".to_string(), s.sum_squares),
            ("mean".to_string(), s.mean),
            ("median".to_string(), s.median),
        ]);
    }
    out
}

fn timer_json(t: &TimerOut) -> Value {
    Value::Object(
        timer_fields(t)
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect(),
    )
}
