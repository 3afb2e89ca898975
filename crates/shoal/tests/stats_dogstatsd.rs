//! DogStatsD's extensions never make a bad line: the extended fields after
//! the type (`|c:` container id, `|T` timestamp, `|e:` external data,
//! `|card:` cardinality, and unknown ones), distributions, several values
//! per line, and events and service checks (counted, then dropped). Sent by
//! the `hot-shots` npm client where it can, and as raw datagrams shaped as
//! Datadog's datagram documentation shows for the fields it does not send.

mod stats_support;

use std::net::UdpSocket;
use std::process::Command;

use serde_json::Value;
use stats_support::{node_path, run_client, sample, Collector};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn dogstatsd_fields_events_and_service_checks_are_no_bad_lines() {
    let c = Collector::start_json_http(&[]);
    let script = r#"
const StatsD = require('hot-shots');
const c = new StatsD({ host: '127.0.0.1', port: Number(process.argv[1]),
  errorHandler: (e) => { console.error(e); process.exit(2); } });
c.distribution('dd.dist', 40, 1, ['env:prod']);
c.distribution('dd.dist', 60, 1, ['env:prod']);
c.event('Deploy done', 'version 1.2\nrolled out', { aggregation_key: 'deploy',
  priority: 'low', alert_type: 'success', hostname: 'web1' }, ['env:prod']);
c.check('dd.db', c.CHECKS.CRITICAL, { hostname: 'web1', message: 'db: down | retrying' },
  ['env:prod']);
c.increment('dd.after', 1);
c.close((err) => { if (err) { console.error(err); process.exit(3); } });
"#;
    run_client(
        Command::new("node")
            .args(["-e", script, &c.udp.port().to_string()])
            .env("NODE_PATH", node_path()),
    );
    let tx = UdpSocket::bind("127.0.0.1:0").expect("sender");
    for d in [
        "dd.cid:1|c|c:83c0a99c0a54c0c187f461c7980e9b57f3f6a8b0c918c8d93df19a9de6f3fe1d",
        "dd.ts:2|c|T1656581400",
        "dd.ext:3|c|e:it-false,cn-nginx,pu-e1d9d2a1",
        "dd.card:4|c|card:low",
        "dd.all:5|c|@0.5|#k:v|c:abc|e:x|card:high|T1656581400|zz:unknown|9",
        "dd.unknown:6|c|x|@0.5",
        "dd.multi:1:2:3|c",
        "dd.mt:10:20|ms|@0.5|#k:v",
        "dd.hist:7|h|#a:b",
        "_e{5,4}:title|text|#env:dev",
        "_sc|Redis connection|2|#env:dev|m:Redis connection timed out after 10s",
    ] {
        tx.send_to(d.as_bytes(), c.udp).expect("send");
    }
    // 2 distributions + 1 counter from hot-shots, 9 metric lines raw.
    c.wait_metrics(12);
    c.wait_health("service_checks", 2);
    let j = c.flush_json();
    let h = &j["health"];
    assert_eq!(h["bad_lines"], 0, "{j}");
    assert_eq!(h["events"], 2, "{j}");
    assert_eq!(h["service_checks"], 2, "{j}");
    assert_eq!(h["metrics"], 12, "{j}");
    for (k, want) in [
        ("dd.cid", 1.0),
        ("dd.ts", 2.0),
        ("dd.ext", 3.0),
        ("dd.card", 4.0),
        ("dd.all;k=v", 10.0),
        ("dd.unknown", 12.0),
        ("dd.multi", 6.0),
        ("dd.after", 1.0),
    ] {
        assert_eq!(f(&j["counters"][k]["count"]), want, "{k} in {j}");
    }
    let d = &j["timers"]["dd.dist;env=prod"];
    assert_eq!((f(&d["count"]), f(&d["sum"])), (2.0, 100.0), "{j}");
    let mt = &j["timers"]["dd.mt;k=v"];
    assert_eq!((f(&mt["count"]), f(&mt["upper"])), (4.0, 20.0), "{j}");
    assert_eq!(f(&j["timers"]["dd.hist;a=b"]["sum"]), 7.0, "{j}");
    // Nothing of the events or checks became a series.
    let all = j.to_string();
    for gone in ["title", "Redis", "Deploy", "dd.db"] {
        assert!(!all.contains(gone), "{gone} in {all}");
    }
    let m = c.metrics();
    assert_eq!(sample(&m, "shoal_stats_events_total"), Some(2.0), "{m}");
    assert_eq!(sample(&m, "shoal_stats_service_checks_total"), Some(2.0));
    assert_eq!(sample(&m, "shoal_stats_bad_lines_total"), Some(0.0));
}
