//! `shoal stats` against real statsd clients: the Python `statsd` package and
//! Node's `hot-shots`, plus raw datagrams with malformed lines, the TCP input,
//! periodic flushes, the Graphite sink and the SIGTERM flush. Values at
//! `/metrics` and in the JSON sink are checked exactly after a flush.

mod stats_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use stats_support::{node_path, run_client, sample, Collector, WAIT};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn python_statsd_client_values_are_exact() {
    let c = Collector::start_json_http(&["--percentile", "50", "--percentile", "90"]);
    let script = r#"
import statsd, sys
c = statsd.StatsClient(sys.argv[1], int(sys.argv[2]))
c.incr('py.hits', 5)
c.incr('py.hits')
c.decr('py.hits', 2)
c.gauge('py.temp', 70)
c.gauge('py.temp', -3, delta=True)
c.gauge('py.neg', -5)
for v in (10, 20, 30, 40):
    c.timing('py.lat', v)
c.set('py.users', 'alice')
c.set('py.users', 'bob')
c.set('py.users', 'alice')
with c.pipeline() as p:
    p.incr('py.batch', 3)
    p.timing('py.lat', 50)
"#;
    run_client(Command::new("python3").args([
        "-c",
        script,
        &c.udp.ip().to_string(),
        &c.udp.port().to_string(),
    ]));
    // 3 counters, 2 + 2 gauge lines (a negative gauge is sent as 0 then -5),
    // 4 timings, 3 set members, 2 pipelined lines.
    c.wait_metrics(16);
    let j = c.flush_json();
    let secs = f(&j["interval"]);
    assert_eq!(f(&j["counters"]["py.hits"]["count"]), 4.0, "{j}");
    assert!(
        (f(&j["counters"]["py.hits"]["rate"]) - 4.0 / secs).abs() < 1e-9,
        "{j}"
    );
    assert_eq!(f(&j["counters"]["py.batch"]["count"]), 3.0);
    assert_eq!(f(&j["gauges"]["py.temp"]), 67.0);
    assert_eq!(f(&j["gauges"]["py.neg"]), -5.0);
    assert_eq!(j["sets"]["py.users"], 2);
    let t = &j["timers"]["py.lat"];
    for (k, want) in [
        ("count", 5.0),
        ("lower", 10.0),
        ("upper", 50.0),
        ("mean", 30.0),
        ("median", 30.0),
        ("sum", 150.0),
        ("sum_squares", 5500.0),
        // statsd: round(0.5 * 5) = 3 values inside the 50th percentile.
        ("count_50", 3.0),
        ("upper_50", 30.0),
        ("mean_50", 20.0),
        ("sum_50", 60.0),
        ("count_90", 5.0),
        ("upper_90", 50.0),
    ] {
        assert_eq!(f(&t[k]), want, "timer {k} in {t}");
    }
    assert!((f(&t["std"]) - 200f64.sqrt()).abs() < 1e-9, "{t}");
    assert_eq!(j["health"]["metrics"], 16);
    assert_eq!(j["health"]["bad_lines"], 0);

    let m = c.metrics();
    for (series, want) in [
        ("py_hits_total", 4.0),
        ("py_batch_total", 3.0),
        ("py_temp", 67.0),
        ("py_neg", -5.0),
        ("py_lat{quantile=\"0.5\"}", 30.0),
        ("py_lat{quantile=\"0.9\"}", 50.0),
        ("py_lat_sum", 150.0),
        ("py_lat_count", 5.0),
        ("py_lat_median", 30.0),
        ("py_users_unique", 2.0),
        ("shoal_stats_metrics_received_total", 16.0),
    ] {
        assert_eq!(sample(&m, series), Some(want), "{series} in\n{m}");
    }

    // Next interval, nothing sent: counters report 0 (totals stay), gauges
    // keep their value, sets restart, timers report count 0.
    let j = c.flush_json();
    assert_eq!(f(&j["counters"]["py.hits"]["count"]), 0.0);
    assert_eq!(f(&j["gauges"]["py.temp"]), 67.0);
    assert_eq!(j["sets"]["py.users"], 0);
    assert_eq!(f(&j["timers"]["py.lat"]["count"]), 0.0);
    assert!(j["timers"]["py.lat"].get("upper").is_none());
    let m = c.metrics();
    assert_eq!(sample(&m, "py_hits_total"), Some(4.0));
    assert_eq!(sample(&m, "py_users_unique"), Some(0.0));
}

#[test]
fn node_hot_shots_client_with_tags() {
    let c = Collector::start_json_http(&[]);
    let script = r#"
const StatsD = require('hot-shots');
const c = new StatsD({ host: '127.0.0.1', port: Number(process.argv[1]),
  errorHandler: (e) => { console.error(e); process.exit(2); } });
c.increment('hs.req', 1, 1, { route: 'home' });
c.increment('hs.req', 2, 1, ['route:home']);
c.increment('hs.req', 1, 1, { route: 'about', canary: 'yes' });
c.gauge('hs.mem', 512);
c.gaugeDelta('hs.mem', -12);
c.timing('hs.t', 5);
c.histogram('hs.h', 7);
c.distribution('hs.d', 9);
c.set('hs.u', 'x');
c.unique('hs.u', 'y');
c.close((err) => { if (err) { console.error(err); process.exit(3); } });
"#;
    run_client(
        Command::new("node")
            .args(["-e", script, &c.udp.port().to_string()])
            .env("NODE_PATH", node_path()),
    );
    c.wait_metrics(10);
    let j = c.flush_json();
    assert_eq!(f(&j["counters"]["hs.req;route=home"]["count"]), 3.0, "{j}");
    assert_eq!(
        f(&j["counters"]["hs.req;canary=yes;route=about"]["count"]),
        1.0,
        "{j}"
    );
    assert_eq!(f(&j["gauges"]["hs.mem"]), 500.0);
    assert_eq!(f(&j["timers"]["hs.h"]["sum"]), 7.0);
    assert_eq!(f(&j["timers"]["hs.d"]["upper"]), 9.0);
    assert_eq!(j["sets"]["hs.u"], 2);
    let m = c.metrics();
    for (series, want) in [
        ("hs_req_total{route=\"home\"}", 3.0),
        ("hs_req_total{canary=\"yes\",route=\"about\"}", 1.0),
        ("hs_mem", 500.0),
        ("hs_t_count", 1.0),
        ("hs_t_sum", 5.0),
        ("hs_h_sum", 7.0),
        ("hs_d_count", 1.0),
        ("hs_u_unique", 2.0),
    ] {
        assert_eq!(sample(&m, series), Some(want), "{series} in\n{m}");
    }
}

#[test]
fn malformed_lines_are_counted_and_the_rest_is_used() {
    let c = Collector::start_json_http(&["--tcp", "127.0.0.1:0", "--max-datagram", "512"]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let d1 =
        "raw.c:1|c|@0.1\ngarbage line\nraw.g:10|g\nraw.t:abc|ms\n\nraw.c:2|c\nraw.multi:1:2:3|ms";
    s.send_to(d1.as_bytes(), c.udp).unwrap();
    s.send_to("x:1|c\n".repeat(200).as_bytes(), c.udp).unwrap(); // 1200 bytes > 512
    s.send_to(b"\xff\xfe:1|c\nraw.c:1|c", c.udp).unwrap();
    let mut t = TcpStream::connect(c.tcp.unwrap()).unwrap();
    t.write_all(b"tcp.c:4|c\ntcp.c:1|c\nbad\n").unwrap();
    c.wait_metrics(7);
    c.wait_health("bad_lines", 4);
    c.wait_health("oversized", 1);
    let j = c.flush_json();
    assert_eq!(f(&j["counters"]["raw.c"]["count"]), 13.0, "{j}");
    assert_eq!(f(&j["counters"]["tcp.c"]["count"]), 5.0, "{j}");
    assert_eq!(f(&j["gauges"]["raw.g"]), 10.0);
    assert_eq!(f(&j["timers"]["raw.multi"]["count"]), 3.0);
    assert!(
        j["counters"].get("x").is_none(),
        "oversized datagram must be dropped: {j}"
    );
    assert_eq!(j["health"]["bad_lines"], 4);
    assert_eq!(j["health"]["oversized"], 1);
    let m = c.metrics();
    assert_eq!(sample(&m, "shoal_stats_bad_lines_total"), Some(4.0));
    assert_eq!(
        sample(&m, "shoal_stats_oversized_datagrams_total"),
        Some(1.0)
    );
    // The sample is whichever bad line came last (UDP and TCP race).
    let last = m
        .lines()
        .find(|l| l.starts_with("shoal_stats_last_bad_line{"))
        .expect("last bad line sample");
    assert!(last.ends_with("} 1"), "{last}");
    assert!(
        [
            "bad (missing name",
            "garbage line (missing name",
            "raw.t:abc|ms (value",
            "\u{fffd}\u{fffd}:1|c (not UTF-8"
        ]
        .iter()
        .any(|w| last.contains(w)),
        "{last}"
    );
    // Still serving everyone.
    s.send_to(b"after:1|c", c.udp).unwrap();
    c.wait_metrics(8);
    let j = c.flush_json();
    assert_eq!(f(&j["counters"]["after"]["count"]), 1.0);
    let (status, _) = stats_support::http_get(c.http.unwrap(), "/nope");
    assert_eq!(status, 404);
}

#[test]
fn periodic_flushes_add_up_and_rates_use_the_interval() {
    let c = Collector::start(&[
        "--udp",
        "127.0.0.1:0",
        "--no-http",
        "--json",
        "--flush",
        "200ms",
    ]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..10 {
        s.send_to(b"tick:1|c", c.udp).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    let mut total = 0.0;
    while total < 10.0 {
        assert!(
            Instant::now() < deadline,
            "only {total} of 10 ticks flushed"
        );
        let j = c.next_json();
        assert_eq!(f(&j["interval"]), 0.2);
        if let Some(n) = j["counters"]["tick"]["count"].as_f64() {
            assert!((f(&j["counters"]["tick"]["rate"]) - n / 0.2).abs() < 1e-9);
            total += n;
        }
    }
    assert_eq!(total, 10.0);
}

#[test]
fn sigterm_flushes_the_last_interval_to_json_and_graphite() {
    let graphite = TcpListener::bind("127.0.0.1:0").unwrap();
    let gaddr = graphite.local_addr().unwrap().to_string();
    let mut c = Collector::start_json(&["--graphite", &gaddr]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"term.c:3|c\nterm.t:4|ms\nterm.g:9|g|#k:v", c.udp)
        .unwrap();
    c.wait_metrics(3);
    let got = std::thread::spawn(move || {
        let (mut conn, _) = graphite.accept().unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        text
    });
    let status = c.terminate();
    assert!(status.success(), "exit status {status}");
    let j = c.next_json();
    assert_eq!(f(&j["counters"]["term.c"]["count"]), 3.0, "{j}");
    assert_eq!(f(&j["timers"]["term.t"]["upper"]), 4.0);
    let text = got.join().unwrap();
    assert!(
        text.contains("\nstats_counts.term.c 3 ") || text.starts_with("stats_counts.term.c 3 "),
        "{text}"
    );
    assert!(text.contains("stats.timers.term.t.upper 4 "), "{text}");
    assert!(text.contains("stats.gauges.term.g;k=v 9 "), "{text}");
}

#[test]
fn new_series_past_max_series_are_counted_and_dropped() {
    let c = Collector::start_json(&["--sockets", "1", "--max-series", "2"]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"one:1|c\ntwo:1|c\nthree:1|c\none:1|c", c.udp)
        .unwrap();
    c.wait_health("series_dropped", 1);
    c.wait_metrics(3);
    let j = c.flush_json();
    assert_eq!(f(&j["counters"]["one"]["count"]), 2.0, "{j}");
    assert!(j["counters"].get("three").is_none(), "{j}");
    assert_eq!(j["health"]["series_dropped"], 1);
    // The cap is the collector's, not the interval's: a new interval does
    // not make room while the two series are kept.
    s.send_to(b"three:1|c\ntwo:1|c", c.udp).unwrap();
    c.wait_metrics(5);
    let j = c.flush_json();
    assert!(j["counters"].get("three").is_none(), "{j}");
    assert_eq!(f(&j["counters"]["two"]["count"]), 1.0, "{j}");
    assert_eq!(j["health"]["series_dropped"], 1, "{j}");
}

#[test]
fn control_socket_status_stop_and_bad_commands() {
    let mut c = Collector::start_json(&[]);
    let r = c.control(r#"{"cmd":"dance"}"#);
    assert_eq!(r["ok"], false, "{r}");
    let r = c.control("not json");
    assert_eq!(r["ok"], false, "{r}");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"bye:2|c", c.udp).unwrap();
    c.wait_metrics(1);
    let r = c.control(r#"{"cmd":"status"}"#);
    assert_eq!(r["health"]["packets"], 1, "{r}");
    let r = c.control(r#"{"cmd":"stop"}"#);
    assert_eq!(r["ok"], true, "{r}");
    let status = c.wait_exit();
    assert!(status.success(), "{status}");
    assert_eq!(f(&c.next_json()["counters"]["bye"]["count"]), 2.0);
}

#[test]
fn sigterm_right_after_sending_loses_nothing_queued() {
    let mut c = Collector::start_json(&[]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    // On loopback a datagram is in the collector's queue when send_to
    // returns; 100 small datagrams fit even the default 208 KiB buffer.
    for _ in 0..100 {
        s.send_to(b"drain.c:1|c\ndrain.c:1|c", c.udp).unwrap();
    }
    let status = c.terminate();
    assert!(status.success(), "{status}");
    let j = c.next_json();
    assert_eq!(f(&j["counters"]["drain.c"]["count"]), 200.0, "{j}");
}

/// `--max-series` bounds what the whole collector keeps, across flushes and
/// sockets, not one socket's interval: a stream of ever-new names from a
/// real client stops at the cap, and the rest are counted.
#[test]
fn the_series_cap_holds_for_the_whole_collector_across_flushes() {
    let c = Collector::start_json_http(&["--max-series", "100"]);
    for wave in 0..3 {
        let script = format!(
            "import statsd, sys\nc = statsd.StatsClient(sys.argv[1], int(sys.argv[2]))\n\
             for i in range(80):\n    c.incr('wave{wave}.n%d' % i)\n"
        );
        run_client(Command::new("python3").args([
            "-c",
            &script,
            &c.udp.ip().to_string(),
            &c.udp.port().to_string(),
        ]));
        c.wait_metrics(80 * (wave + 1));
        let j = c.flush_json();
        let kept = j["counters"].as_object().map_or(0, |o| o.len());
        assert!(kept <= 100, "{kept} series after wave {wave}");
    }
    let m = c.metrics();
    assert_eq!(sample(&m, "shoal_stats_series"), Some(100.0), "{m}");
    assert_eq!(
        sample(&m, "shoal_stats_series_dropped_total"),
        Some(140.0),
        "{m}"
    );
    // The first 100 names are the ones kept; wave 2 got none in.
    assert!(sample(&m, "wave0_n79_total").is_some() || m.contains("wave0_n79"));
    assert!(
        !m.contains("wave2_n0"),
        "a series past the cap reached /metrics"
    );
}

/// A series with no update for `--series-ttl` is forgotten (reported as 0
/// until then, as statsd does), and comes back when it is sent again.
#[test]
fn idle_series_expire_after_the_series_ttl() {
    let c = Collector::start_json_http(&["--series-ttl", "1s"]);
    let send = |name: &str| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(format!("{name}:1|c").as_bytes(), c.udp).unwrap();
    };
    send("ttl.idle");
    c.wait_metrics(1);
    let j = c.flush_json();
    assert_eq!(f(&j["counters"]["ttl.idle"]["count"]), 1.0, "{j}");
    let j = c.flush_json();
    assert_eq!(
        f(&j["counters"]["ttl.idle"]["count"]),
        0.0,
        "idle, not yet expired: {j}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let j = c.flush_json();
    assert!(j["counters"].get("ttl.idle").is_none(), "not expired: {j}");
    assert_eq!(
        sample(&c.metrics(), "shoal_stats_series_expired_total"),
        Some(1.0)
    );
    send("ttl.idle");
    c.wait_metrics(2);
    let j = c.flush_json();
    assert_eq!(f(&j["counters"]["ttl.idle"]["count"]), 1.0, "{j}");
}

#[test]
fn statsd_health_names_report_the_collectors_counts_as_statsd_does() {
    let c = Collector::start_json_http(&["--statsd-health"]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(b"a:1|c\nnot a metric\nb:2|g", c.udp).unwrap();
    tx.send_to(b"_e{1,1}:t|x", c.udp).unwrap();
    c.wait_health("events", 1);
    let j = c.flush_json();
    for (k, want) in [
        ("statsd.packets_received", 2.0),
        ("statsd.metrics_received", 4.0),
        ("statsd.bad_lines_seen", 1.0),
    ] {
        assert_eq!(f(&j["counters"][k]["count"]), want, "{k} in {j}");
    }
    // Next interval: counted afresh, as statsd resets them every flush.
    tx.send_to(b"a:1|c", c.udp).unwrap();
    c.wait_metrics(3);
    let j = c.flush_json();
    assert_eq!(f(&j["counters"]["statsd.packets_received"]["count"]), 1.0);
    assert_eq!(f(&j["counters"]["statsd.bad_lines_seen"]["count"]), 0.0);
    let m = c.metrics();
    assert_eq!(
        sample(&m, "statsd_packets_received_total"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "statsd_metrics_received_total"),
        Some(5.0),
        "{m}"
    );

    // Off by default.
    let plain = Collector::start_json(&[]);
    tx.send_to(b"a:1|c", plain.udp).unwrap();
    plain.wait_metrics(1);
    let j = plain.flush_json();
    assert!(
        j["counters"].get("statsd.packets_received").is_none(),
        "{j}"
    );
}

#[test]
fn relay_passes_every_datagram_on_as_received_and_counts_what_it_cannot() {
    // The downstream statsd: a UDP socket that records what it gets.
    let down = UdpSocket::bind("127.0.0.1:0").unwrap();
    down.set_read_timeout(Some(WAIT)).unwrap();
    let relay = down.local_addr().unwrap().to_string();
    let c = Collector::start_json_http(&["--sockets", "2", "--relay", &relay]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent: [&[u8]; 3] = [
        b"relayed.a:1|c",
        b"relayed.b:2|g\nnot a line",
        b"relayed.c:3|ms|@0.5",
    ];
    for d in sent {
        s.send_to(d, c.udp).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < sent.len() {
        let (n, _) = down.recv_from(&mut buf).expect("the relay passed it on");
        got.push(buf[..n].to_vec());
    }
    got.sort();
    let mut want: Vec<Vec<u8>> = sent.iter().map(|d| d.to_vec()).collect();
    want.sort();
    assert_eq!(got, want, "relayed byte for byte, bad lines too");
    // And the collector itself used them.
    c.wait_metrics(3);
    let j = c.flush_json();
    assert_eq!(f(&j["counters"]["relayed.a"]["count"]), 1.0, "{j}");
    c.wait_health("relayed", 3);
    // With nothing listening downstream, sends are refused: counted, and
    // the collector goes on.
    drop(down);
    for _ in 0..20 {
        s.send_to(b"relayed.d:1|c", c.udp).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    c.wait_health("relay_dropped", 1);
    c.wait_metrics(23);
    assert!(c.metrics().contains("shoal_stats_relay_dropped_total"));
}
