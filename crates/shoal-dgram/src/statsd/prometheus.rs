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

use std::collections::BTreeMap;

use shoal_core::metrics::{sanitize_label_name, sanitize_name, Kind, TextWriter};

use super::aggregate::split_key;
use super::flush::Snapshot;
use super::health::Health;

/// Label pairs of one sample.
type Labels = Vec<(String, String)>;

struct Family {
    kind: Kind,
    help: &'static str,
    samples: Vec<(String, Labels, f64)>,
}

#[derive(Default)]
struct Families(BTreeMap<String, Family>);

impl Families {
    fn add(
        &mut self,
        family: &str,
        kind: Kind,
        help: &'static str,
        sample: &str,
        labels: Vec<(String, String)>,
        v: f64,
    ) {
        let f = self.0.entry(family.to_string()).or_insert_with(|| Family {
            kind,
            help,
            samples: Vec::new(),
        });
        f.samples.push((sample.to_string(), labels, v));
    }
}

fn labels_of(key: &str) -> (String, Vec<(String, String)>) {
    let (name, tags) = split_key(key);
    let mut labels: Vec<(String, String)> = Vec::new();
    for (k, v) in tags {
        let k = sanitize_label_name(k);
        if k == "quantile" || k.starts_with("__") || labels.iter().any(|(have, _)| *have == k) {
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
    (sanitize_name(name), labels)
}

/// Render the document: user metrics from `snap`, then the collector's own
/// `shoal_stats_*` health figures.
pub fn render(snap: &Snapshot, health: &Health, last_bad: &str) -> String {
    let mut fams = Families::default();
    for (key, c) in &snap.counters {
        let (name, labels) = labels_of(key);
        let fam = if name.ends_with("_total") {
            name.clone()
        } else {
            format!("{name}_total")
        };
        fams.add(
            &fam,
            Kind::Counter,
            "statsd counter (sum of flushed counts)",
            &fam,
            labels,
            c.total,
        );
    }
    for (key, v) in &snap.gauges {
        let (name, labels) = labels_of(key);
        fams.add(&name, Kind::Gauge, "statsd gauge", &name, labels, *v);
    }
    for (key, t) in &snap.timers {
        let (name, labels) = labels_of(key);
        if let Some(s) = &t.stats {
            for p in s.percentiles.iter().filter(|p| p.pct > 0.0) {
                let mut l = labels.clone();
                l.push(("quantile".into(), format!("{}", p.pct / 100.0)));
                fams.add(&name, Kind::Summary, "statsd timer", &name, l, p.bound);
            }
            for (suffix, v) in [
                ("lower", s.lower),
                ("upper", s.upper),
                ("mean", s.mean),
                ("median", s.median),
                ("std", s.std),
            ] {
                let fam = format!("{name}_{suffix}");
                fams.add(
                    &fam,
                    Kind::Gauge,
                    "statsd timer, last interval",
                    &fam,
                    labels.clone(),
                    v,
                );
            }
        }
        fams.add(
            &name,
            Kind::Summary,
            "statsd timer",
            &format!("{name}_sum"),
            labels.clone(),
            t.total_sum,
        );
        fams.add(
            &name,
            Kind::Summary,
            "statsd timer",
            &format!("{name}_count"),
            labels,
            t.total_count,
        );
    }
    for (key, n) in &snap.sets {
        let (name, labels) = labels_of(key);
        let fam = format!("{name}_unique");
        fams.add(
            &fam,
            Kind::Gauge,
            "statsd set: unique values in the last interval",
            &fam,
            labels,
            *n as f64,
        );
    }
    let mut w = TextWriter::new();
    for (fam, f) in &fams.0 {
        w.family(fam, f.kind, f.help);
        for (sample, labels, v) in &f.samples {
            let l: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            w.sample(sample, &l, *v);
        }
    }
    let own: [(&str, Kind, &str, f64); 14] = [
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
    ];
    for (name, kind, help, v) in own {
        w.family(name, kind, help).sample(name, &[], v);
    }
    w.family(
        "shoal_stats_last_bad_line",
        Kind::Gauge,
        "The last malformed line (as a label), 1 if any",
    );
    w.sample(
        "shoal_stats_last_bad_line",
        &[("line", last_bad)],
        if last_bad.is_empty() { 0.0 } else { 1.0 },
    );
    w.finish()
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
    fn sampled_timers_scale_sum_and_count_alike() {
        // One 100 ms value sampled at 0.5 stands for two: _count 2, _sum 200,
        // as statsd scales counts; unsampled values add as they are.
        let mut st = State::new(FlushRules::default());
        let snap = st.flush(vec![interval_of("t:100|ms|@0.5")], 1.0, 1);
        let text = render(&snap, &Health::default(), "");
        assert!(text.contains("t_count 2\n"), "{text}");
        assert!(text.contains("t_sum 200\n"), "{text}");
        let snap = st.flush(vec![interval_of("t:10|ms\nt:20:30|ms|@0.1")], 1.0, 2);
        let text = render(&snap, &Health::default(), "");
        assert!(text.contains("t_count 23\n"), "{text}");
        assert!(text.contains("t_sum 710\n"), "{text}");
        // The statsd figures of the interval stay statsd's: the sum of the
        // values received.
        assert_eq!(snap.timers[0].1.stats.as_ref().map(|s| s.sum), Some(60.0));
    }
}
