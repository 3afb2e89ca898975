//! statsd_exporter mapping files: the examples of statsd_exporter's README
//! (fixtures in `stats_fixtures/`) sent by real statsd clients (the
//! `statsd` and `datadog` Python packages), with the `/metrics` output
//! checked sample by sample and by `promtool check metrics`; tag styles in
//! the name; a mapping reread on SIGHUP (a bad file refused with its line,
//! the old mapping kept); a mapping's `ttl`; and `--timer-histogram`.

mod stats_support;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use stats_support::{promtool, run_client, sample, Collector, TempDir};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/stats_fixtures")
        .join(name)
        .display()
        .to_string()
}

fn send(c: &Collector, datagrams: &[&str]) {
    let tx = UdpSocket::bind("127.0.0.1:0").expect("sender");
    for d in datagrams {
        tx.send_to(d.as_bytes(), c.udp).expect("send");
    }
}

/// Run a Python client script with the collector's UDP port as argv[1].
fn python(c: &Collector, script: &str) {
    run_client(Command::new("python3").args(["-c", script, &c.udp.port().to_string()]));
}

fn close(got: Option<f64>, want: f64, what: &str, doc: &str) {
    let got = got.unwrap_or_else(|| panic!("no {what} in\n{doc}"));
    assert!(
        (got - want).abs() < 1e-9,
        "{what}: {got} != {want} in\n{doc}"
    );
}

/// `/metrics` text `m` had no name collision and passes promtool.
fn no_collisions_and_valid(m: &str) {
    close(
        sample(m, "shoal_stats_name_collisions_total"),
        0.0,
        "collisions",
        m,
    );
    let (ok, out) = promtool(m);
    assert!(ok, "promtool: {out}\n{m}");
}

/// A collector (JSON and HTTP sinks) with mapping file `yaml`, written in
/// a temporary directory that lives as long as the returned one.
fn with_mapping(tag: &str, yaml: &str) -> (TempDir, Collector) {
    let dir = TempDir::new(tag);
    let file = dir.0.join("m.yml");
    std::fs::write(&file, yaml).expect("write");
    let c = Collector::start_json_http(&["--mapping-config", &file.display().to_string()]);
    (dir, c)
}

#[test]
fn readme_mappings_from_real_clients() {
    let c = Collector::start_json_http(&["--mapping-config", &fixture("readme.yml")]);
    python(
        &c,
        r#"
import sys, statsd
from datadog.dogstatsd import DogStatsd
c = statsd.StatsClient('127.0.0.1', int(sys.argv[1]))
c.incr('test.dispatcher.FooProcessor.send.success', 3)
c.incr('foo_product.signup.facebook.failure')
c.incr('test.web-server.foo.bar')
c.incr('test.x.y.counter', 2)
c.incr('test.a.b.regexcounter')
c.incr('http.request.200', 4)
c.incr('host1.exec1--http.status.500.count')
c.incr('test.foo.bar')
c.gauge('test.foo.g', 5)
for ms in (5, 20, 200):
    c.timing('test.timing.foo.bar.baz', ms)
for ms in (10, 20, 30, 40):
    c.timing('other.timing.a.b.c', ms)
d = DogStatsd(host='127.0.0.1', port=int(sys.argv[1]))
d.increment('test.dispatcher.BarProcessor.send.failure', tags=['region:eu'])
d.flush()
"#,
    );
    // Tags in the name, as statsd_exporter reads them; a mapping label
    // wins over a tag of the same name.
    send(
        &c,
        &[
            "http.request.404,env=prod:1|c",
            "http.request.500#env=prod:1|c",
            "http.request.503[env=prod]:1|c",
            "http.request.201,code=x:1|c",
        ],
    );
    c.wait_metrics(21);
    c.flush_json();
    let m = c.metrics();
    for (series, want) in [
        (
            r#"dispatcher_events_total{action="send",job="test_dispatcher",outcome="success",processor="FooProcessor"}"#,
            3.0,
        ),
        (
            r#"dispatcher_events_total{action="send",job="test_dispatcher",outcome="failure",processor="BarProcessor",region="eu"}"#,
            1.0,
        ),
        (
            r#"signup_events_total{job="foo_product_server",outcome="failure",provider="facebook"}"#,
            1.0,
        ),
        // Unmapped: the default translation.
        ("test_web_server_foo_bar_total", 1.0),
        (r#"y_total{provider="x"}"#, 2.0),
        (r#"b_regex_total{provider="a"}"#, 1.0),
        (r#"http_requests_total{code="200"}"#, 4.0),
        (r#"http_requests_total{code="404",env="prod"}"#, 1.0),
        (r#"http_requests_total{code="500",env="prod"}"#, 1.0),
        (r#"http_requests_total{code="503",env="prod"}"#, 1.0),
        (r#"http_requests_total{code="201"}"#, 1.0),
        (
            r#"request_total{code="500",exec="exec1",hostname="host1",protocol="http"}"#,
            1.0,
        ),
        // match_metric_type: counter takes the counter, not the gauge.
        (r#"test_foo{provider="bar"}"#, 1.0),
        ("test_foo_g", 5.0),
        // A histogram in seconds: 5 ms, 20 ms, 200 ms.
        (
            r#"my_timer_bucket{job="foo_server",outcome="baz",provider="bar",le="0.01"}"#,
            1.0,
        ),
        (
            r#"my_timer_bucket{job="foo_server",outcome="baz",provider="bar",le="0.025"}"#,
            2.0,
        ),
        (
            r#"my_timer_bucket{job="foo_server",outcome="baz",provider="bar",le="0.1"}"#,
            2.0,
        ),
        (
            r#"my_timer_bucket{job="foo_server",outcome="baz",provider="bar",le="+Inf"}"#,
            3.0,
        ),
        (
            r#"my_timer_count{job="foo_server",outcome="baz",provider="bar"}"#,
            3.0,
        ),
        (
            r#"my_timer_sum{job="foo_server",outcome="baz",provider="bar"}"#,
            0.225,
        ),
        // A summary in seconds over 10, 20, 30, 40 ms.
        (
            r#"other_timer{job="a_server_other",outcome="c",provider="b",quantile="0.5"}"#,
            0.02,
        ),
        (
            r#"other_timer{job="a_server_other",outcome="c",provider="b",quantile="0.99"}"#,
            0.04,
        ),
        (
            r#"other_timer_count{job="a_server_other",outcome="c",provider="b"}"#,
            4.0,
        ),
    ] {
        close(sample(&m, series), want, series, &m);
    }
    assert!(
        m.contains("# HELP http_requests_total Total number of http requests\n"),
        "{m}"
    );
    assert!(m.contains("# TYPE my_timer histogram\n"), "{m}");
    assert!(m.contains("# TYPE other_timer summary\n"), "{m}");
    assert!(
        m.contains("# TYPE dispatcher_events_total counter\n"),
        "{m}"
    );
    assert_eq!(sample(&m, "shoal_stats_bad_lines_total"), Some(0.0), "{m}");
    let (ok, why) = promtool(&m);
    assert!(ok, "promtool: {why}\n{m}");
}

#[test]
fn drop_action_and_defaults_leave_graphite_and_json_alone() {
    let c = Collector::start_json_http(&["--mapping-config", &fixture("drop.yml")]);
    python(
        &c,
        r#"
import sys, statsd
c = statsd.StatsClient('127.0.0.1', int(sys.argv[1]))
c.timing('test.timing.web.foo.ok', 20)
c.incr('other.counter')
c.gauge('other.gauge', 3)
"#,
    );
    c.wait_metrics(3);
    let j = c.flush_json();
    // The statsd side (JSON, Graphite) keeps every series.
    assert_eq!(j["counters"]["other.counter"]["count"], 1.0, "{j}");
    assert_eq!(j["gauges"]["other.gauge"], 3.0, "{j}");
    let m = c.metrics();
    // defaults: a histogram with the defaults' buckets.
    let l = r#"job="web_server",outcome="ok",provider="foo""#;
    close(
        sample(&m, &format!("my_timer_bucket{{{l},le=\"0.01\"}}")),
        0.0,
        "le 0.01",
        &m,
    );
    close(
        sample(&m, &format!("my_timer_bucket{{{l},le=\"0.025\"}}")),
        1.0,
        "le 0.025",
        &m,
    );
    close(
        sample(&m, &format!("my_timer_bucket{{{l},le=\"2.5\"}}")),
        1.0,
        "le 2.5",
        &m,
    );
    assert!(!m.contains("le=\"5\""), "{m}");
    assert!(!m.contains("other_"), "dropped series in /metrics:\n{m}");
    let (ok, why) = promtool(&m);
    assert!(ok, "promtool: {why}\n{m}");
}

#[test]
fn sighup_rereads_the_mapping_and_refuses_a_bad_file() {
    let dir = TempDir::new("mapping");
    let file = dir.0.join("m.yml");
    let path = file.display().to_string();
    std::fs::write(
        &file,
        "mappings:\n- match: a.*\n  name: first\n  labels:\n    x: \"$1\"\n",
    )
    .expect("write");
    let c = Collector::start_json_http(&["--mapping-config", &path]);
    send(&c, &["a.b:1|c"]);
    c.wait_metrics(1);
    c.flush_json();
    assert_eq!(c.value(r#"first{x="b"}"#), Some(1.0), "{}", c.metrics());

    // A misspelt key on line 4: refused, with file and line; `first` stays.
    std::fs::write(
        &file,
        "mappings:\n- match: a.*\n  name: second\n  labelz:\n    x: \"$1\"\n",
    )
    .expect("write");
    c.signal(1);
    let why = c.wait_log(&["refused", &format!("{path}:4"), "labelz"]);
    assert!(why.contains("previous mapping stays"), "{why}");
    send(&c, &["a.b:1|c"]);
    c.wait_metrics(2);
    c.flush_json();
    let m = c.metrics();
    assert_eq!(sample(&m, r#"first{x="b"}"#), Some(2.0), "{m}");

    // A good file: the next flush and scrape use it.
    std::fs::write(
        &file,
        "mappings:\n- match: a.*\n  name: second\n  labels:\n    y: \"$1\"\n",
    )
    .expect("write");
    c.signal(1);
    c.wait_log(&["mapping file reloaded", "mappings=1"]);
    send(&c, &["a.b:1|c"]);
    c.wait_metrics(3);
    c.flush_json();
    let m = c.metrics();
    assert_eq!(sample(&m, r#"second{y="b"}"#), Some(3.0), "{m}");
    assert!(!m.contains("first"), "{m}");
    // The same through the control socket, with the error in the reply.
    std::fs::write(
        &file,
        "mappings:\n- match: \"(\"\n  match_type: regex\n  name: x\n",
    )
    .expect("write");
    let r = c.control(r#"{"cmd":"reload"}"#);
    assert_eq!(r["ok"], false, "{r}");
    let e = r["error"].as_str().unwrap_or_default();
    assert!(e.starts_with(&format!("{path}:2: mapping 1")), "{r}");
}

#[test]
fn a_mapping_ttl_expires_its_series_only() {
    let dir = TempDir::new("mapping");
    let file = dir.0.join("m.yml");
    std::fs::write(
        &file,
        "mappings:\n- match: short.*\n  name: short\n  ttl: 1s\n  labels:\n    k: \"$1\"\n\
         - match: long.*\n  name: long\n  labels:\n    k: \"$1\"\n",
    )
    .expect("write");
    let c = Collector::start_json_http(&["--mapping-config", &file.display().to_string()]);
    send(&c, &["short.a:1|c\nlong.a:1|c\nshort.b:4|c"]);
    c.wait_metrics(3);
    c.flush_json();
    let m = c.metrics();
    assert_eq!(sample(&m, r#"short{k="a"}"#), Some(1.0), "{m}");
    assert_eq!(sample(&m, r#"short{k="b"}"#), Some(4.0), "{m}");
    std::thread::sleep(Duration::from_millis(2200));
    let j = c.flush_json();
    let m = c.metrics();
    assert_eq!(sample(&m, r#"short{k="a"}"#), None, "{m}");
    assert_eq!(sample(&m, r#"short{k="b"}"#), None, "{m}");
    assert_eq!(sample(&m, r#"long{k="a"}"#), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "shoal_stats_series_expired_total"),
        Some(2.0),
        "{m}"
    );
    assert!(j["counters"].get("short.a").is_none(), "{j}");
}

#[test]
fn timer_histogram_is_cumulative_and_keeps_the_interval_summary() {
    let c = Collector::start_json_http(&[
        "--timer-histogram",
        "--histogram-bucket",
        "10",
        "--histogram-bucket",
        "100",
        "--percentile",
        "90",
    ]);
    send(&c, &["lat:5|ms\nlat:50|ms\nlat:500|ms"]);
    c.wait_metrics(3);
    c.flush_json();
    let m = c.metrics();
    for (series, want) in [
        (r#"lat_bucket{le="10"}"#, 1.0),
        (r#"lat_bucket{le="100"}"#, 2.0),
        (r#"lat_bucket{le="+Inf"}"#, 3.0),
        ("lat_sum", 555.0),
        ("lat_count", 3.0),
        (r#"lat_interval{quantile="0.9"}"#, 500.0),
        ("lat_interval_count", 3.0),
        ("lat_median", 50.0),
    ] {
        close(sample(&m, series), want, series, &m);
    }
    assert!(m.contains("# TYPE lat histogram\n") && m.contains("# TYPE lat_interval summary\n"));
    let (ok, why) = promtool(&m);
    assert!(ok, "promtool: {why}\n{m}");
    // Cumulative across flushes (not reset per interval).
    send(&c, &["lat:7|ms"]);
    c.wait_metrics(4);
    c.flush_json();
    c.flush_json();
    let m = c.metrics();
    close(sample(&m, r#"lat_bucket{le="10"}"#), 2.0, "le 10", &m);
    close(sample(&m, r#"lat_bucket{le="+Inf"}"#), 4.0, "+Inf", &m);
}

/// statsd_exporter's behaviour for a mapping that sends several statsd
/// names to one series: a counter adds them up and a histogram (same
/// buckets) observes them all, and the exposition stays valid. Before,
/// only the first name's value was shown and the rest were counted as
/// collisions.
#[test]
fn names_mapped_to_one_counter_or_histogram_add_up() {
    let (_dir, c) = with_mapping(
        "mapping-merge",
        "mappings:\n- match: shop.*.orders\n  name: orders_total\n\
         - match: shop.*.checkout\n  name: checkout_seconds\n  observer_type: histogram\n  \
           histogram_options:\n    buckets: [0.05, 0.5]\n",
    );
    python(
        &c,
        r#"
import sys, statsd
c = statsd.StatsClient('127.0.0.1', int(sys.argv[1]))
c.incr('shop.eu.orders', 3)
c.incr('shop.us.orders', 4)
c.incr('shop.asia.orders')
c.timing('shop.eu.checkout', 20)
c.timing('shop.us.checkout', 200)
c.timing('shop.us.checkout', 2000)
"#,
    );
    c.wait_metrics(6);
    c.flush_json();
    let m = c.metrics();
    close(sample(&m, "orders_total"), 8.0, "orders_total", &m);
    close(
        sample(&m, r#"checkout_seconds_bucket{le="0.05"}"#),
        1.0,
        "le 0.05",
        &m,
    );
    close(
        sample(&m, r#"checkout_seconds_bucket{le="0.5"}"#),
        2.0,
        "le 0.5",
        &m,
    );
    close(sample(&m, "checkout_seconds_count"), 3.0, "count", &m);
    close(sample(&m, "checkout_seconds_sum"), 2.22, "sum", &m);
    no_collisions_and_valid(&m);
}

#[test]
fn names_mapped_to_one_gauge_set_or_summary_are_one_series() {
    // statsd_exporter keeps one metric per mapped name and labels and
    // applies each event to it: the last gauge value set under any name
    // wins and a `+N`/`-N` changes the series' current value; a summary
    // takes every name's values. (statsd_exporter refuses sets; here the
    // names' members count together.)
    let (_dir, c) = with_mapping(
        "mapping-shared",
        "mappings:\n- match: pool.*.size\n  name: pool_size\n\
         - match: users.*\n  name: users\n\
         - match: api.*.latency\n  name: api_latency_seconds\n  observer_type: summary\n  \
           summary_options:\n    quantiles:\n    - quantile: 0.5\n    - quantile: 0.99\n",
    );
    // One datagram per call (no pipeline), in this order.
    let step = |script: &str, lines: u64| {
        python(
            &c,
            &format!("import sys, statsd\nc = statsd.StatsClient('127.0.0.1', int(sys.argv[1]))\n{script}"),
        );
        c.wait_metrics(lines);
        c.flush_json();
        c.metrics()
    };
    let m = step(
        "c.gauge('pool.a.size', 10)\nc.gauge('pool.b.size', 3, delta=True)\n\
         c.set('users.eu', 'ann')\nc.set('users.us', 'ann')\nc.set('users.us', 'bob')\n\
         for ms in (10, 20):\n    c.timing('api.eu.latency', ms)\n\
         for ms in (30, 40):\n    c.timing('api.us.latency', ms)\n",
        9,
    );
    close(sample(&m, "pool_size"), 13.0, "a set 10, then b +3", &m);
    close(sample(&m, "users"), 2.0, "members of both names", &m);
    close(sample(&m, "api_latency_seconds_count"), 4.0, "count", &m);
    close(sample(&m, "api_latency_seconds_sum"), 0.1, "sum", &m);
    close(
        sample(&m, r#"api_latency_seconds{quantile="0.99"}"#),
        0.04,
        "p99 over both names",
        &m,
    );
    assert_eq!(m.matches("\npool_size ").count(), 1, "{m}");
    let m = step(
        "c.gauge('pool.b.size', 7)\nc.gauge('pool.a.size', -2, delta=True)\n",
        11,
    );
    close(sample(&m, "pool_size"), 5.0, "b set 7, then a -2", &m);
    let m = step("c.gauge('pool.a.size', 1, delta=True)\n", 12);
    close(sample(&m, "pool_size"), 6.0, "a +1 on the series' 5", &m);
    no_collisions_and_valid(&m);
}
