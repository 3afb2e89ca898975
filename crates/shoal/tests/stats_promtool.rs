//! `/metrics` is a valid Prometheus exposition whatever names arrive: names
//! that clean to one Prometheus name, or that take another family's
//! `_total` / `_sum` / `_count` / `_unique` or the collector's own names,
//! never give a repeated sample or a second HELP/TYPE. Checked with
//! `promtool check metrics` (Debian's `prometheus` package; `.ci/run`
//! installs it).

mod stats_support;

use std::net::UdpSocket;
use std::time::Duration;

use stats_support::{promtool, sample, Collector};

#[test]
fn colliding_names_keep_metrics_valid_and_are_counted_once() {
    let c = Collector::start_json_http(&["--percentile", "90"]);
    let lines = [
        "api.req:1|c",
        "api-req:2|c",
        "api_req_total:3|c",
        "lat:5|ms",
        "lat_sum:1|g",
        "lat_count:1|g",
        "lat_bucket:1|g",
        "mem:1|g",
        "mem:2|ms",
        "tagged:1|c|#k.a:1",
        "tagged:1|c|#k_a:1",
        "u:x|s",
        "u_unique:3|g",
        "shoal_stats_series:9|g",
        "shoal_stats_bad_lines:9|c",
    ];
    let tx = UdpSocket::bind("127.0.0.1:0").expect("sender");
    tx.send_to(lines.join("\n").as_bytes(), c.udp)
        .expect("send");
    c.wait_metrics(lines.len() as u64);
    c.flush_json();
    let m = c.metrics();
    let (ok, why) = promtool(&m);
    assert!(ok, "promtool: {why}\n{m}");
    // One HELP per family, one line per sample.
    let mut seen = std::collections::HashSet::new();
    for l in m.lines() {
        assert!(seen.insert(l), "{l:?} twice in\n{m}");
    }
    // Left out: api.req (api-req sorts first), api_req_total, mem the
    // timer (the gauge came first), tagged k_a, u the set, and the two
    // named like the collector's own series.
    assert_eq!(sample(&m, "api_req_total"), Some(2.0), "{m}");
    assert_eq!(sample(&m, "lat_sum"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "lat_count"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "lat_bucket"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "shoal_stats_series"), Some(15.0), "{m}");
    assert_eq!(
        sample(&m, "shoal_stats_name_collisions_total"),
        Some(8.0),
        "{m}"
    );
    // Scraped again: still valid, nothing new counted, each logged once.
    let again = c.metrics();
    assert!(promtool(&again).0);
    assert_eq!(
        sample(&again, "shoal_stats_name_collisions_total"),
        Some(8.0)
    );
    std::thread::sleep(Duration::from_millis(200));
    let logged: Vec<String> = c
        .stderr
        .try_iter()
        .filter(|l| l.contains("clean to one Prometheus name"))
        .collect();
    assert_eq!(logged.len(), 8, "{logged:#?}");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("api-req") && l.contains("api.req")),
        "{logged:#?}"
    );
}
