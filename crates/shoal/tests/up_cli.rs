//! `shoal up` end to end, with real processes on loopback: a topology of one
//! Node cluster (two workers of examples/up/web.js), the proxy, the broker
//! and the collector, on free ports. GETs through the proxy reach both
//! workers, their statsd counter shows at the collector's /metrics, their
//! events reach a pika consumer, `shoal ctl status` shows every part, and
//! SIGTERM leaves no process behind; a port in use or a bad key stops the
//! start with one error line and nothing running.

mod cluster_support;
mod up_support;
use cluster_support::{alive, get, kill, repo, TempDir};
use up_support::{node_available, pid_of, topology, Ports, Up, T};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn serves_through_the_proxy_counts_in_statsd_and_stops_clean() {
    if !node_available() {
        eprintln!("skipped: node is not on PATH");
        return;
    }
    let data = TempDir::new();
    let p = Ports::new();
    let mut up = Up::spawn(&topology(&p, data.path()));
    up.wait_running();
    let log = up.log();
    for part in ["broker", "stats", "cluster.web", "proxy"] {
        assert!(
            log.contains(&format!("  {part} ")),
            "banner lacks {part}:\n{log}"
        );
    }
    assert!(
        log.contains(&format!("curl 127.0.0.1:{}", p.proxy)),
        "{log}"
    );

    // The workers, from the topology's one status.
    let out = up.ctl(&["--json", "status"]);
    assert!(out.status.success(), "{out:?}");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let parts = st["up"]["parts"].as_array().unwrap();
    let kinds: Vec<&str> = parts.iter().filter_map(|p| p["kind"].as_str()).collect();
    assert_eq!(kinds, ["broker", "stats", "cluster", "proxy"], "{st}");
    let workers: Vec<u32> = parts[2]["status"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(workers.len(), 2, "{st}");

    // Through the proxy, both workers answer.
    let proxy = format!("127.0.0.1:{}", p.proxy);
    let mut seen = std::collections::BTreeSet::new();
    let mut requests = 0u32;
    let deadline = Instant::now() + T;
    while seen.len() < 2 && Instant::now() < deadline {
        let (code, body) = get(&proxy, "/").expect("GET through the proxy failed");
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("Hello from web worker"), "{body}");
        seen.insert(pid_of(&body).unwrap());
        requests += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut want: Vec<u32> = workers.clone();
    want.sort();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), want);

    // The workers count every request at the collector.
    let metrics = format!("127.0.0.1:{}", p.metrics);
    let series = "up_requests_total{server=\"web\"}";
    let deadline = Instant::now() + T;
    let mut last = String::new();
    loop {
        if let Some((200, body)) = get(&metrics, "/metrics") {
            let n: f64 = body
                .lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or(0.0);
            if n >= f64::from(requests) {
                break;
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {requests}:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // `shoal ctl status` without --name finds the topology: one table.
    let out = up.ctl(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for part in ["[broker]", "[stats]", "[cluster.web]", "[proxy]", "online"] {
        assert!(table.contains(part), "no {part} in:\n{table}");
    }

    // SIGTERM: everything stops, in reverse order, nothing left behind.
    kill(up.child.id(), "TERM");
    let status = up.wait_exit();
    assert!(status.success(), "{status}:\n{}", up.log());
    for pid in &workers {
        assert!(!alive(*pid), "worker {pid} is still running");
    }
    let log = up.log();
    let at = |s: &str| log.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{log}"));
    assert!(at("stopped part=proxy") < at("stopped part=cluster.web"));
    assert!(at("stopped part=cluster.web") < at("stopped part=broker"));
    assert!(!up.rt.path().join("up.sock").exists());
    // The ports are free again.
    std::net::TcpListener::bind(("127.0.0.1", p.proxy)).unwrap();
    std::net::TcpListener::bind(("127.0.0.1", p.web)).unwrap();
    std::net::TcpListener::bind(("127.0.0.1", p.amqp)).unwrap();
}

#[test]
fn a_port_in_use_stops_the_start_and_nothing_keeps_running() {
    if !node_available() {
        eprintln!("skipped: node is not on PATH");
        return;
    }
    let data = TempDir::new();
    let p = Ports::new();
    // Someone else holds the proxy's port: the last part to start.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", p.proxy)).unwrap();
    let mut up = Up::spawn(&topology(&p, data.path()));
    let status = up.wait_exit();
    assert!(!status.success());
    let log = up.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("shoal: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    let e = errors[0];
    assert!(e.contains("proxy: listeners[0].address"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{}", p.proxy)), "{e}");
    assert!(e.to_lowercase().contains("in use"), "{e}");
    assert!(!log.contains("shoal up: running"), "{log}");
    // The cluster had started (its workers were forked) and was stopped.
    let pids = up.forked_pids();
    assert_eq!(pids.len(), 2, "{log}");
    for pid in pids {
        assert!(!alive(pid), "worker {pid} is still running:\n{log}");
    }
    std::net::TcpListener::bind(("127.0.0.1", p.amqp)).unwrap();
    std::net::TcpListener::bind(("127.0.0.1", p.web)).unwrap();
}

#[test]
fn a_bad_key_is_refused_with_file_line_and_key() {
    let data = TempDir::new();
    let p = Ports::new();
    let text =
        topology(&p, data.path()).replace("grace = \"5s\"\n", "grace = \"5s\"\nworkerz = 3\n");
    let line = text.lines().position(|l| l.starts_with("workerz")).unwrap() + 1;
    let mut up = Up::spawn(&text);
    let status = up.wait_exit();
    assert!(!status.success());
    let log = up.log();
    let want = format!("{}:{line}", up.file.display());
    assert!(log.contains(&want), "no {want} in:\n{log}");
    assert!(log.contains("cluster.web"), "{log}");
    assert!(log.contains("workerz"), "{log}");
    assert!(!log.contains("forked"), "{log}");

    // A validation error: the line of the key in its own table.
    let text = topology(&p, data.path()).replace("workers = 2", "workers = 0");
    let line = text.lines().position(|l| l == "workers = 0").unwrap() + 1;
    let mut up = Up::spawn(&text);
    assert!(!up.wait_exit().success());
    let want = format!("{}:{line}: cluster.web.workers:", up.file.display());
    assert!(up.log().contains(&want), "no {want} in:\n{}", up.log());
}

#[test]
fn a_pika_consumer_receives_the_workers_events() {
    let pika = Command::new("python3")
        .args(["-c", "import pika"])
        .output()
        .is_ok_and(|o| o.status.success());
    let amqplib = repo().join("tests/node/node_modules/amqplib").exists();
    if !node_available() || !pika || !amqplib {
        eprintln!("skipped: needs node, python3 with pika, and tests/node/node_modules/amqplib (cd tests/node && npm ci)");
        return;
    }
    let data = TempDir::new();
    let p = Ports::new();
    let mut up = Up::spawn(&topology(&p, data.path()));
    up.wait_running();
    let script = format!(
        r#"
import pika, sys
conn = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port={amqp}))
ch = conn.channel()
ch.exchange_declare(exchange="events", exchange_type="topic", durable=False)
q = ch.queue_declare(queue="", exclusive=True).method.queue
ch.queue_bind(queue=q, exchange="events", routing_key="web.#")
print("bound", flush=True)
for method, props, body in ch.consume(q, inactivity_timeout=30):
    if body is None:
        sys.exit("no event within 30s")
    print(method.routing_key, body.decode(), flush=True)
    break
conn.close()
"#,
        amqp = p.amqp
    );
    let mut py = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = py.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    assert_eq!(
        rx.recv_timeout(T).expect("pika did not bind"),
        "bound",
        "{}",
        up.log()
    );
    // A worker publishes once its amqplib channel is open: request until
    // an event arrives.
    let proxy = format!("127.0.0.1:{}", p.proxy);
    let deadline = Instant::now() + T;
    let event = loop {
        let _ = get(&proxy, "/hello");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            break line;
        }
        assert!(Instant::now() < deadline, "no event:\n{}", up.log());
    };
    let _ = py.wait();
    let (key, body) = event.split_once(' ').unwrap();
    assert_eq!(key, "web.web.request");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["server"], "web");
    assert_eq!(v["url"], "/hello");
}

#[test]
fn sighup_applies_a_changed_cluster_and_refuses_a_bad_file() {
    if !node_available() {
        eprintln!("skipped: node is not on PATH");
        return;
    }
    let data = TempDir::new();
    let p = Ports::new();
    let text = topology(&p, data.path());
    let mut up = Up::spawn(&text);
    up.wait_running();
    let online = |up: &Up| -> usize {
        let out = up.ctl(&["--json", "status"]);
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        st["up"]["parts"][2]["status"]["workers"]
            .as_array()
            .map_or(0, |w| w.iter().filter(|w| w["state"] == "online").count())
    };
    assert_eq!(online(&up), 2);

    // An invalid file is refused, with file:line: key, and all keeps running.
    let bad = text.replace("grace = \"5s\"\n", "grace = \"5s\"\nworkerz = 3\n");
    let line = bad.lines().position(|l| l.starts_with("workerz")).unwrap() + 1;
    std::fs::write(&up.file, &bad).unwrap();
    kill(up.child.id(), "HUP");
    let want = format!("{}:{line}", up.file.display());
    let deadline = Instant::now() + T;
    while !(up.log().contains("reload refused") && up.log().contains(&want)) {
        assert!(
            Instant::now() < deadline,
            "no refusal naming {want}:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _) = get(&format!("127.0.0.1:{}", p.proxy), "/").expect("proxy stopped serving");
    assert_eq!(code, 200);

    // A changed cluster: scaled and reloaded in place.
    std::fs::write(&up.file, text.replace("workers = 2", "workers = 3")).unwrap();
    kill(up.child.id(), "HUP");
    let deadline = Instant::now() + T;
    while online(&up) != 3 || !up.log().contains("reload: cluster.web: rolling reload") {
        assert!(Instant::now() < deadline, "not 3 workers:\n{}", up.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up.child.try_wait().unwrap().is_none(), "{}", up.log());
    kill(up.child.id(), "TERM");
    assert!(up.wait_exit().success(), "{}", up.log());
}
