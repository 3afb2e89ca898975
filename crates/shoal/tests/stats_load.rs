//! A bounded load run (about one second) from `shoal bench statsd` into
//! `shoal stats`: every metric sent is either counted or accounted for as a
//! datagram the kernel dropped, and the flushed counters add up to what was
//! counted. No rates or timings are asserted.

mod stats_support;

use std::process::Command;
use std::time::Instant;

use stats_support::{Collector, WAIT};

#[test]
fn every_metric_sent_is_counted_or_reported_dropped() {
    let c = Collector::start_json(&["--sockets", "2"]);
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["-q", "bench", "statsd", "--target", &c.udp.to_string()])
        .args([
            "--rate",
            "100000",
            "--duration",
            "1s",
            "--lines",
            "50",
            "--names",
            "20",
            "--senders",
            "2",
        ])
        .output()
        .expect("run shoal bench statsd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let sent = report["counter_metrics"].as_u64().expect("counter_metrics");
    assert!(sent > 0 && sent.is_multiple_of(50), "{report}");
    // Received lines plus 50 per dropped datagram must reach what was sent.
    let deadline = Instant::now() + WAIT;
    let (metrics, drops) = loop {
        let h = c.control(r#"{"cmd":"status"}"#)["health"].clone();
        let (m, d) = (
            h["metrics"].as_u64().unwrap_or(0),
            h["kernel_drops"].as_u64().unwrap_or(0),
        );
        if m + d * 50 >= sent {
            break (m, d);
        }
        assert!(
            Instant::now() < deadline,
            "only {m} metrics and {d} drops of {sent}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(metrics + drops * 50, sent);
    let j = c.flush_json();
    let counted: f64 = j["counters"]
        .as_object()
        .expect("counters")
        .iter()
        .filter(|(k, _)| k.starts_with("bench."))
        .map(|(_, v)| v["count"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(counted as u64, metrics, "{j}");
    assert_eq!(j["health"]["bad_lines"], 0);
}
