//! The Graphite sink: plaintext lines `path value timestamp` over TCP, in
//! statsd's legacy namespace, so dashboards built for statsd keep working:
//! `stats.<key>` (counter rate), `stats_counts.<key>` (count),
//! `stats.timers.<key>.<stat>`, `stats.gauges.<key>`, `stats.sets.<key>.count`,
//! `statsd.numStats`, and the collector's health under `stats.shoal.*`.
//! Tags stay in Graphite's tagged form: `path;k=v`.

use std::fmt::Write;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use super::flush::Snapshot;
use super::health::Health;
use super::json::timer_fields;

/// How long a flush may wait on the Graphite connection.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// `prefix.name.suffix;tags` for a key `name;tags`.
fn path(out: &mut String, prefix: &str, key: &str, suffix: &str) {
    let (name, tags) = key.split_once(';').map_or((key, ""), |(n, t)| (n, t));
    out.push_str(prefix);
    out.push('.');
    out.push_str(name);
    if !suffix.is_empty() {
        out.push('.');
        out.push_str(suffix);
    }
    if !tags.is_empty() {
        out.push(';');
        out.push_str(tags);
    }
}

fn line(out: &mut String, prefix: &str, key: &str, suffix: &str, v: f64, ts: u64) {
    path(out, prefix, key, suffix);
    let _ = writeln!(out, " {v} {ts}");
}

/// The plaintext payload of one flush.
pub fn render(snap: &Snapshot, health: &Health) -> String {
    let ts = snap.timestamp;
    let mut out = String::new();
    for (k, c) in &snap.counters {
        line(&mut out, "stats", k, "", c.rate, ts);
        line(&mut out, "stats_counts", k, "", c.count, ts);
    }
    for (k, t) in &snap.timers {
        for (stat, v) in timer_fields(t) {
            line(&mut out, "stats.timers", k, &stat, v, ts);
        }
    }
    for (k, v) in &snap.gauges {
        line(&mut out, "stats.gauges", k, "", *v, ts);
    }
    for (k, n) in &snap.sets {
        line(&mut out, "stats.sets", k, "count", *n as f64, ts);
    }
    let series = snap.counters.len() + snap.timers.len() + snap.gauges.len() + snap.sets.len();
    let _ = writeln!(out, "statsd.numStats {series} {ts}");
    for (name, v) in [
        ("packets_received", health.packets),
        ("metrics_received", health.metrics),
        ("bad_lines_seen", health.bad_lines),
        ("oversized_datagrams", health.oversized),
        ("events", health.events),
        ("service_checks", health.service_checks),
        ("series_dropped", health.series_dropped),
        ("series_expired", health.series_expired),
        ("series", health.series),
        ("kernel_drops", health.kernel_drops),
    ] {
        let _ = writeln!(out, "stats.shoal.{name} {v} {ts}");
    }
    out
}

/// Send `payload` to `addr` on a fresh connection (as statsd does per flush).
pub async fn send(addr: &str, payload: &str) -> std::io::Result<()> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(payload.as_bytes()).await?;
        s.shutdown().await
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "graphite send timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::aggregate::interval_of;
    use crate::statsd::flush::{FlushRules, State};

    #[test]
    fn legacy_namespace_lines() {
        let d = "hits:4|c|#env:prod\nt:3|ms\ng:2|g\ns:x|s";
        let snap = State::new(FlushRules::default()).flush(vec![interval_of(d)], 2.0, 100);
        let text = render(&snap, &Health::default());
        for want in [
            "stats.hits;env=prod 2 100\n",
            "stats_counts.hits;env=prod 4 100\n",
            "stats.timers.t.upper_90 3 100\n",
            "stats.timers.t.count_ps 0.5 100\n",
            "stats.gauges.g 2 100\n",
            "stats.sets.s.count 1 100\n",
            "statsd.numStats 4 100\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
