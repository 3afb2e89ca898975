//! Differential test: the real Etsy statsd 0.9 daemon (from
//! `tests/node/node_modules/statsd`) and `shoal stats` receive the same
//! datagrams; both flush to a Graphite listener of this test, in statsd's
//! legacy namespace, and the resulting names and values are compared.
//!
//! statsd resets its counters every flush (`statsd.metrics_received` too),
//! so its counts are summed over every flush it sends; gauges take the last
//! value; a timer's figures come from the one flush that had its values (each
//! timer is sent in one datagram).
//!
//! The deliberate differences are listed in [`DIFFERENCES`], each with what
//! either side does, and are checked as such (docs/dgram.md names them too).

mod stats_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stats_support::{node_path, Collector, TempDir, WAIT};

/// Datagrams both must treat the same.
const SAME: &[&str] = &[
    // Odd names: whitespace runs, '/', removed characters, ';' and '=' kept,
    // untrimmed names, JavaScript's Unicode whitespace.
    "odd name/with slash!:1|c",
    "  spaced\t\tname :2|c",
    "semi;colon=eq:3|c",
    "uni\u{e9}code\u{3000}x\u{feff}y:4|c",
    "path/a/b:5|c",
    // Tags (already in sorted order), with odd characters.
    "tagged:1|c|#env:prod,flag",
    "tagged2:1|c|#k/1:v 2,x;y:z=w",
    // Sampled counters, several segments on one line.
    "sampled:1|c|@0.5",
    "seg:1|c:2|c|@0.25",
    // Gauges: set, +, -, a new gauge given a sign.
    "gauge.a:10|g\ngauge.a:+5|g\ngauge.a:-3|g",
    "gauge.b:-4|g",
    "gauge.c:+7|g",
    "gauge.d:1.5|g\ngauge.d:+0.25|g",
    // Timers (each in one datagram) and a set.
    "timer.a:100|ms\ntimer.a:200|ms\ntimer.a:50|ms",
    "timer.s:100|ms|@0.5",
    "set.a:x|s\nset.a:y|s\nset.a:x|s",
    // Several lines, a bad one among them.
    "multi.a:1|c\nmulti.b:2|c\nmulti.c:x|c\nmulti.a:3|c",
    // Bad lines in both.
    "nocolon",
    "bad.value:abc|c",
    "bad.timer:-1|ms",
    "bad.rate:1|c|@x",
    "bad.notype:1",
];

/// One deliberate difference: the datagram, and the counter key each side
/// ends with (`None`: no series), and the bad lines each side counts.
struct Difference {
    datagram: &'static str,
    why: &'static str,
    statsd: (Option<(&'static str, f64)>, u64),
    shoal: (Option<(&'static str, f64)>, u64),
}

const DIFFERENCES: &[Difference] = &[
    Difference {
        datagram: "!!!:1|c",
        why: "a name empty once cleaned is a bad line (statsd keeps a series named ``)",
        statsd: (Some(("", 1.0)), 0),
        shoal: (None, 1),
    },
    Difference {
        datagram: "mv:1:2:3|c",
        why: "DogStatsD's several values per line (statsd: the first two are bad segments)",
        statsd: (Some(("mv", 3.0)), 2),
        shoal: (Some(("mv", 6.0)), 0),
    },
    Difference {
        datagram: "unknown.type:1|zz",
        why: "an unknown type is a bad line (statsd counts it as a counter)",
        statsd: (Some(("unknown.type", 1.0)), 0),
        shoal: (None, 1),
    },
    Difference {
        datagram: "zero.rate:1|c|@0",
        why: "a sample rate of 0 is a bad line (statsd divides by it: Infinity)",
        statsd: (Some(("zero.rate", f64::INFINITY)), 0),
        shoal: (None, 1),
    },
    Difference {
        datagram: "dd.cid:1|c|c:abc",
        why: "DogStatsD's fields after the type are ignored (statsd: two bad segments)",
        statsd: (None, 2),
        shoal: (Some(("dd.cid", 1.0)), 0),
    },
    Difference {
        datagram: "unknown.field:1|c|zz",
        why: "unknown fields after the type are ignored (statsd: `zz` is a bad sample rate)",
        statsd: (None, 1),
        shoal: (Some(("unknown.field", 1.0)), 0),
    },
    Difference {
        datagram: "_e{5,4}:title|text",
        why: "a DogStatsD event is counted and dropped (statsd: a bad line)",
        statsd: (None, 1),
        shoal: (None, 0),
    },
    Difference {
        datagram: "influx,env=prod:1|c",
        why: "InfluxDB-style tags in the name are tags (statsd strips the `,` into the name)",
        statsd: (Some(("influxenv=prod", 1.0)), 0),
        shoal: (Some(("influx;env=prod", 1.0)), 0),
    },
    Difference {
        datagram: "sfx[env=prod]:1|c",
        why: "SignalFX-style tags in the name are tags (statsd strips the brackets)",
        statsd: (Some(("sfxenv=prod", 1.0)), 0),
        shoal: (Some(("sfx;env=prod", 1.0)), 0),
    },
    Difference {
        datagram: "tag.order:1|c|#b:2,a:1",
        why: "tags are sorted, so any order is one series",
        statsd: (Some(("tag.order;b=2;a=1", 1.0)), 0),
        shoal: (Some(("tag.order;a=1;b=2", 1.0)), 0),
    },
];

/// Every line one Graphite listener received (each flush is a connection).
fn graphite_listener() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind graphite listener");
    let addr = l.local_addr().expect("addr").to_string();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = lines.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let out = out.clone();
            std::thread::spawn(move || {
                let got: Vec<String> = BufReader::new(conn).lines().map_while(Result::ok).collect();
                out.lock().unwrap().extend(got);
            });
        }
    });
    (addr, lines)
}

/// What one side reported, in statsd's terms.
#[derive(Debug, Default)]
struct Model {
    counters: BTreeMap<String, f64>,
    gauges: BTreeMap<String, f64>,
    timers: BTreeMap<String, BTreeMap<String, f64>>,
    sets: BTreeMap<String, f64>,
    packets: f64,
    bad_lines: f64,
}

fn model(lines: &[String], statsd: bool) -> Model {
    let mut m = Model::default();
    let health = |name: &str| {
        if statsd {
            format!("stats_counts.statsd.{name}")
        } else {
            format!("stats.shoal.{name}")
        }
    };
    for l in lines {
        let mut parts = l.rsplitn(3, ' ');
        let (_ts, v, path) = (parts.next(), parts.next(), parts.next());
        let (Some(v), Some(path)) = (v, path) else {
            continue;
        };
        let v: f64 = if v == "Infinity" {
            f64::INFINITY
        } else {
            v.parse().unwrap_or(f64::NAN)
        };
        // `namespace.NAME[.stat][;tags]` → key `NAME[;tags]`.
        let (p, tags) = path.split_once(';').unwrap_or((path, ""));
        let key = |name: &str| {
            if tags.is_empty() {
                name.to_string()
            } else {
                format!("{name};{tags}")
            }
        };
        if path == health("packets_received") {
            m.packets += v;
        } else if path == health("bad_lines_seen") {
            m.bad_lines += v;
        } else if let Some(name) = p.strip_prefix("stats_counts.") {
            if !name.starts_with("statsd.") {
                *m.counters.entry(key(name)).or_default() += v;
            }
        } else if let Some(name) = p.strip_prefix("stats.gauges.") {
            // statsd's own `statsd.timestamp_lag` is not a user gauge.
            if !name.starts_with("statsd.") {
                m.gauges.insert(key(name), v);
            }
        } else if let Some(rest) = p.strip_prefix("stats.timers.") {
            let Some((name, stat)) = rest.rsplit_once('.') else {
                continue;
            };
            // Idle timers report count 0 on later flushes: keep the busy one.
            if stat.starts_with("count") && v == 0.0 {
                continue;
            }
            m.timers
                .entry(key(name))
                .or_default()
                .insert(stat.to_string(), v);
        } else if let Some(name) = p
            .strip_prefix("stats.sets.")
            .and_then(|r| r.strip_suffix(".count"))
        {
            if v > 0.0 {
                m.sets.insert(key(name), v);
            }
        }
    }
    m
}

struct Statsd {
    child: Child,
    udp: std::net::SocketAddr,
    _dir: TempDir,
}

impl Drop for Statsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free udp port")
        .port()
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free tcp port")
        .port()
}

fn start_statsd(graphite: &str, lines: &Arc<Mutex<Vec<String>>>) -> Statsd {
    let dir = TempDir::new("statsd09");
    let (ghost, gport) = graphite.rsplit_once(':').expect("host:port");
    let port = free_udp_port();
    let config = format!(
        "{{ port: {port}, address: \"127.0.0.1\", mgmt_address: \"127.0.0.1\", \
         mgmt_port: {mgmt}, graphiteHost: \"{ghost}\", graphitePort: {gport}, \
         flushInterval: 200, backends: [\"./backends/graphite\"] }}",
        mgmt = free_tcp_port(),
    );
    let cfg = dir.0.join("config.js");
    std::fs::write(&cfg, config).expect("write statsd config");
    let stats_js = node_path().join("statsd/stats.js");
    assert!(
        Path::new(&stats_js).exists(),
        "statsd 0.9 missing: run `cd tests/node && npm ci`"
    );
    let child = Command::new("node")
        .arg(&stats_js)
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node statsd");
    let s = Statsd {
        child,
        udp: format!("127.0.0.1:{port}").parse().expect("addr"),
        _dir: dir,
    };
    // Up once its first flush reaches the listener.
    let deadline = Instant::now() + WAIT;
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("statsd.numStats"))
    {
        assert!(Instant::now() < deadline, "statsd 0.9 never flushed");
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

/// Sum of `stats_counts.statsd.packets_received` so far.
fn statsd_packets(lines: &Arc<Mutex<Vec<String>>>) -> f64 {
    model(&lines.lock().unwrap(), true).packets
}

#[test]
fn shoal_and_statsd_09_agree_on_names_and_values() {
    let (g_statsd, l_statsd) = graphite_listener();
    let (g_shoal, l_shoal) = graphite_listener();
    let statsd = start_statsd(&g_statsd, &l_statsd);
    let shoal = Collector::start(&[
        "--udp",
        "127.0.0.1:0",
        "--no-http",
        "--flush",
        "1h",
        "--graphite",
        &g_shoal,
    ]);
    let tx = UdpSocket::bind("127.0.0.1:0").expect("sender");
    let all: Vec<&str> = SAME
        .iter()
        .copied()
        .chain(DIFFERENCES.iter().map(|d| d.datagram))
        .collect();
    let base = statsd_packets(&l_statsd);
    for d in &all {
        tx.send_to(d.as_bytes(), statsd.udp).expect("send statsd");
        tx.send_to(d.as_bytes(), shoal.udp).expect("send shoal");
        // Loopback UDP drops nothing at this pace.
        std::thread::sleep(Duration::from_millis(2));
    }
    let n = all.len() as f64;
    shoal.wait_health("packets", all.len() as u64);
    assert_eq!(shoal.control(r#"{"cmd":"flush"}"#)["ok"], true);
    let deadline = Instant::now() + WAIT;
    while statsd_packets(&l_statsd) - base < n || model(&l_shoal.lock().unwrap(), false).packets < n
    {
        assert!(Instant::now() < deadline, "not every datagram arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    // One more statsd flush, so a counter's last interval is in.
    std::thread::sleep(Duration::from_millis(500));
    let mut s = model(&l_statsd.lock().unwrap(), true);
    let mut h = model(&l_shoal.lock().unwrap(), false);

    // The deliberate differences, each side as described.
    for d in DIFFERENCES {
        for (side, m, (series, _)) in [("statsd", &mut s, &d.statsd), ("shoal", &mut h, &d.shoal)] {
            if let Some((key, v)) = series {
                assert_eq!(
                    m.counters.remove(*key),
                    Some(*v),
                    "{side} on {:?} ({})",
                    d.datagram,
                    d.why
                );
            }
            let prefix = d.datagram.split(':').next().unwrap_or("");
            assert!(
                !m.counters
                    .keys()
                    .any(|k| !prefix.is_empty() && k.starts_with(prefix)),
                "{side} has another series for {:?}: {:?}",
                d.datagram,
                m.counters
            );
        }
    }
    let extra = |side: fn(&Difference) -> u64| DIFFERENCES.iter().map(side).sum::<u64>() as f64;
    assert_eq!(
        s.bad_lines - extra(|d| d.statsd.1),
        h.bad_lines - extra(|d| d.shoal.1),
        "bad lines: statsd {} shoal {}",
        s.bad_lines,
        h.bad_lines
    );
    assert_eq!(h.bad_lines - extra(|d| d.shoal.1), 6.0);

    // Everything else is the same, name for name and value for value.
    assert_eq!(s.counters, h.counters, "counters");
    assert_eq!(s.gauges, h.gauges, "gauges");
    assert_eq!(s.sets, h.sets, "sets");
    assert_eq!(
        s.timers.keys().collect::<Vec<_>>(),
        h.timers.keys().collect::<Vec<_>>(),
        "timer names"
    );
    for (k, st) in &s.timers {
        let ht = &h.timers[k];
        for stat in [
            "count", "lower", "upper", "mean", "median", "sum", "upper_90",
        ] {
            assert_eq!(st.get(stat), ht.get(stat), "timer {k} {stat}");
        }
    }
    // Spot checks of the cleaning itself.
    for k in [
        "odd_name-with_slash",
        "_spaced_name_",
        "semi;colon=eq",
        "unicode_x_y",
        "tagged;env=prod;flag",
        "tagged2;k-1=v_2;x_y=z=w",
    ] {
        assert!(
            h.counters.contains_key(k),
            "{k} missing in {:?}",
            h.counters
        );
    }
    assert_eq!(h.gauges.get("gauge.a"), Some(&12.0));
    assert_eq!(h.gauges.get("gauge.b"), Some(&-4.0));
}
