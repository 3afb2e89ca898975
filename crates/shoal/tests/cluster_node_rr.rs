//! `shoal cluster --schedule rr`: Node's round-robin mode, the primary
//! accepting every connection and handing it to the next worker with
//! Node's `newconn`. Unmodified Node programs (`listen(PORT)`), real
//! connections over loopback.

mod cluster_support;

use cluster_support::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// An unmodified `listen(PORT)` server answering with its worker id;
/// `/hang` blocks the worker's event loop for good, and `/slow` answers
/// after 20 ms.
const APP: &str = r#"
const cluster = require('cluster');
const http = require('http');
const id = cluster.worker.id;
const server = http.createServer((q, r) => {
  if (q.url === '/hang') { r.write('hanging'); for (;;) {} }
  if (q.url === '/slow') return setTimeout(() => r.end(String(id)), 20);
  r.end(String(id));
});
server.listen(Number(process.env.PORT), () => {
  const a = server.address();
  process.send({ id, port: a.port, address: a.address, policy: cluster.schedulingPolicy === undefined ? null : cluster.schedulingPolicy });
});
"#;

fn start(name: &str, flags: &[&str], port: u16, dir: &TempDir) -> Primary {
    let script = write_script(dir.path(), "app.js", APP);
    let mut all = vec!["--schedule", "rr", "--bind-host", "127.0.0.1"];
    all.extend_from_slice(flags);
    Primary::start_with_env(
        name,
        &all,
        &["node", &script],
        &[("PORT", &port.to_string())],
    )
}

/// New connections are handed out in turn: both workers serve, close to
/// half each, and the worker's `server.address()` is the primary's socket.
#[test]
fn round_robin_spreads_new_connections_evenly_over_the_workers() {
    let dir = TempDir::new();
    let port = free_port();
    let mut p = start(
        "rr-spread",
        &["-w", "2", "--ready", "listening"],
        port,
        &dir,
    );
    for _ in 0..2 {
        let l = p.event("listening");
        assert_eq!(l["addresses"][0], format!("127.0.0.1:{port}"), "{l}");
    }
    p.all_online(2);
    while p.seen.iter().filter(|v| v["event"] == "message").count() < 2 {
        p.event("message");
    }
    for m in p.seen.iter().filter(|v| v["event"] == "message") {
        let m = &m["message"];
        assert_eq!(m["port"], port, "{m}");
        assert_eq!(m["address"], "127.0.0.1", "{m}");
        // Node's workers have no `cluster.schedulingPolicy` (only its
        // primary does); nothing for Shoal to set.
        assert_eq!(m["policy"], serde_json::Value::Null, "{m}");
    }
    let addr = format!("127.0.0.1:{port}");
    let mut by_worker: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..200 {
        let (code, body) = get(&addr, "/").expect("request failed");
        assert_eq!(code, 200);
        *by_worker.entry(body).or_default() += 1;
    }
    assert_eq!(by_worker.len(), 2, "{by_worker:?}");
    assert!(
        by_worker.values().all(|n| *n >= 70),
        "round robin is near even: {by_worker:?}"
    );
    let st = p.ctl_json(&["status"]);
    assert_eq!(st["status"]["listen"][0], addr, "{st}");
}

/// A worker whose event loop is stuck keeps the one connection it was
/// handed and never answered for; every other connection goes to the
/// other worker. When the stuck worker is killed, that connection goes to
/// another worker instead of being lost: only the connection the worker
/// had accepted (`/hang`) fails.
#[test]
fn a_stuck_worker_stalls_no_one_and_when_killed_loses_only_what_it_held() {
    let dir = TempDir::new();
    let port = free_port();
    let mut p = start("rr-stuck", &["-w", "2", "--ready", "listening"], port, &dir);
    p.all_online(2);
    let addr = format!("127.0.0.1:{port}");
    let hang = {
        let addr = addr.clone();
        std::thread::spawn(move || get(&addr, "/hang"))
    };
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || (get(&addr, "/"), t0.elapsed()))
        })
        .collect();
    // Nine answer at once, all from the worker that is not stuck.
    std::thread::sleep(Duration::from_secs(3));
    let done: Vec<_> = clients.iter().filter(|c| c.is_finished()).collect();
    assert_eq!(
        done.len(),
        9,
        "one connection waits on the stuck worker, the rest are served"
    );
    let (mut results, mut waiting) = (Vec::new(), Vec::new());
    for c in clients {
        if c.is_finished() {
            results.push(c.join().unwrap().0);
        } else {
            waiting.push(c);
        }
    }
    let healthy = results[0].clone().expect("served").1;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().map(|r| &r.1) == Some(&healthy)),
        "{results:?}"
    );
    let stuck_id: u64 = if healthy == "1" { 2 } else { 1 };
    let fork = p
        .seen
        .iter()
        .find(|v| v["event"] == "fork" && v["id"] == stuck_id)
        .cloned()
        .expect("fork event");
    kill(fork["pid"].as_u64().unwrap() as u32, "KILL");
    // The connection it never answered for is served elsewhere.
    let (r, _) = waiting.pop().unwrap().join().unwrap();
    assert_eq!(r.map(|r| r.0), Some(200), "{}", p.log());
    // The one it had taken is gone with it.
    assert_ne!(hang.join().unwrap().map(|r| r.0), Some(200));
}

/// A rolling reload under round-robin: 2,000 new connections from 4
/// clients while each worker is replaced, none failing.
#[test]
fn a_rolling_reload_under_round_robin_loses_no_connection() {
    let dir = TempDir::new();
    let port = free_port();
    let mut p = start(
        "rr-reload",
        &["-w", "2", "--ready", "listening", "--grace", "5s"],
        port,
        &dir,
    );
    p.all_online(2);
    let addr = format!("127.0.0.1:{port}");
    let before = distinct_answers(&addr, 2);
    assert_eq!(before, ["1", "2"]);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                for _ in 0..500 {
                    match get(&addr, "/slow") {
                        Some((200, _)) => {}
                        other => failed.push(format!("{other:?}")),
                    }
                }
                failed
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = p.ctl_json(&["reload"]);
    assert_eq!(r["ok"], true, "{r}");
    for c in clients {
        let failed = c.join().unwrap();
        assert!(failed.is_empty(), "failed during reload: {failed:?}");
    }
    // Both workers were replaced: four processes in all.
    while p.seen.iter().filter(|v| v["event"] == "fork").count() < 4 {
        p.event("fork");
    }
}

/// `--schedule` takes shared, reuse-port or rr; anything else, or rr with
/// --reuse-port, is refused before anything starts.
#[test]
fn a_bad_schedule_is_a_clear_error() {
    let out = std::process::Command::new(shoal())
        .args(["cluster", "--schedule", "random", "--", "node", "x.js"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--schedule random: expected shared, reuse-port or rr"),
        "{err}"
    );
    let out = std::process::Command::new(shoal())
        .args([
            "cluster",
            "--schedule",
            "rr",
            "--reuse-port",
            "--",
            "node",
            "x.js",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be combined"), "{err}");
}
