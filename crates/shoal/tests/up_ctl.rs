//! The topology's control point on one part: `shoal ctl --name up scale
//! CLUSTER N` and `reload PART`, and SIGHUP restarting a changed broker or
//! collector (or only reloading the collector's mapping file). Two clusters
//! of the built-in worker (`shoal up-worker`, no Node needed) behind the
//! proxy, the broker and the collector; real clients: pika, curl, UDP
//! datagrams and the collector's `/metrics`.

mod cluster_support;
mod up_support;
use cluster_support::{kill, shoal, TempDir};
use up_support::{free_tcp, free_udp, pid_of, pids, status, wait_log, Up, T};

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Ports {
    amqp: u16,
    udp: u16,
    metrics: u16,
    web: u16,
    api: u16,
    proxy: u16,
    dashboard: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            amqp: free_tcp(),
            udp: free_udp(),
            metrics: free_tcp(),
            web: free_tcp(),
            api: free_tcp(),
            proxy: free_tcp(),
            dashboard: free_tcp(),
        }
    }
}

/// A cluster of the built-in worker.
fn cluster(table: &str, workers: usize, port: u16) -> String {
    format!(
        r#"
[cluster.{table}]
workers = {workers}
command = ["{shoal}", "up-worker"]
listen = ["127.0.0.1:{port}"]
ready = "notify"
grace = "5s"

[cluster.{table}.env]
SERVER_NAME = "{table}"
"#,
        shoal = shoal()
    )
}

/// Broker, collector (with a mapping file), clusters web (2) and api (1),
/// the proxy in front of web.
fn topology(p: &Ports, dir: &Path) -> String {
    format!(
        r#"{broker}
[stats]
udp = ["127.0.0.1:{udp}"]
http = "127.0.0.1:{metrics}"
flush = "200ms"
sockets = 1
mapping_config = "{mapping}"
{web}{api}
{proxy}"#,
        broker = up_support::broker_table(p.amqp, dir),
        udp = p.udp,
        metrics = p.metrics,
        proxy = up_support::proxy_table(p.proxy),
        mapping = dir.join("mapping.yml").display(),
        web = cluster("web", 2, p.web),
        api = cluster("api", 1, p.api),
    )
}

fn mapping(dir: &Path, name: &str) {
    let yml = format!("mappings:\n- match: \"app.hits\"\n  name: \"{name}\"\n");
    std::fs::write(dir.join("mapping.yml"), yml).unwrap();
}

fn start() -> (Up, Ports, TempDir) {
    start_with(topology)
}

/// `shoal up` on the file `text` makes, on free ports. A port another
/// test's client took in between (its source port) is tried again with
/// fresh ones, up to three times.
fn start_with(text: impl Fn(&Ports, &Path) -> String) -> (Up, Ports, TempDir) {
    for attempt in 1.. {
        let dir = TempDir::new();
        mapping(dir.path(), "hits_a");
        let p = Ports::new();
        let mut up = Up::spawn(&text(&p, dir.path()));
        match up.try_wait_running() {
            Ok(()) => return (up, p, dir),
            Err(e) if attempt < 3 && e.contains("Address already in use") => continue,
            Err(e) => panic!("{e}"),
        }
    }
    unreachable!()
}

/// `shoal ctl ARGS` against the topology: (success, stdout + stderr).
fn ctl(up: &Up, args: &[&str]) -> (bool, String) {
    let out = up.ctl(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Wait until `part` has `n` online workers (and no other); their pids.
fn wait_workers(up: &Up, part: &str, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + T;
    loop {
        let st = status(up);
        let online = pids(&st, part);
        let all = st["up"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["part"] == part)
            .map(|p| p["status"]["workers"].as_array().map_or(0, Vec::len))
            .sum::<usize>();
        if online.len() == n && all == n {
            return online;
        }
        assert!(
            Instant::now() < deadline,
            "{part} never had {n} workers: {st}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run a pika script with the AMQP URL as argv[1] (bounded); its stdout.
fn pika(url: &str, script: &str) -> String {
    let mut child = Command::new("timeout")
        .args(["30", "python3", "-c", script, url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout).to_string();
    assert!(
        child.status.success(),
        "pika failed: {}\n{out}\n{}",
        child.status,
        String::from_utf8_lossy(&std::mem::take(&mut child.stderr))
    );
    out
}

const PUBLISH: &str = r#"
import sys, pika
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
ch = c.channel()
ch.confirm_delivery()
ch.queue_declare('keep', durable=True)
for i in range(5):
    ch.basic_publish('', 'keep', f'message {i}'.encode(),
                     pika.BasicProperties(delivery_mode=2))
c.close()
print('published')
"#;

const COUNT_AND_GET: &str = r#"
import sys, time, pika
deadline = time.time() + 20
while True:
    try:
        c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
        break
    except Exception:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
ch = c.channel()
q = ch.queue_declare('keep', durable=True, passive=True)
print('count', q.method.message_count)
while True:
    m, props, body = ch.basic_get('keep', auto_ack=True)
    if m is None:
        break
    print(body.decode(), props.delivery_mode)
c.close()
"#;

fn url(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/")
}

#[test]
fn ctl_scale_changes_one_cluster_and_a_later_sighup_keeps_the_count() {
    let (up, p, _dir) = start();
    let web = wait_workers(&up, "cluster.web", 2);
    let api = wait_workers(&up, "cluster.api", 1);

    let (ok, out) = ctl(&up, &["--name", "up", "scale", "web", "4"]);
    assert!(ok, "{out}");
    assert_eq!(wait_workers(&up, "cluster.web", 4).len(), 4);
    assert_eq!(pids(&status(&up), "cluster.api"), api);
    let (ok, out) = ctl(&up, &["--name", "up", "scale", "cluster.web", "-3"]);
    assert!(ok, "{out}");
    let one = wait_workers(&up, "cluster.web", 1);
    assert_eq!(pids(&status(&up), "cluster.api"), api);
    assert!(
        web.contains(&one[0]),
        "the first worker stays: {web:?} {one:?}"
    );
    let (ok, out) = ctl(&up, &["--name", "up", "scale", "api", "+1"]);
    assert!(ok, "{out}");
    wait_workers(&up, "cluster.api", 2);
    assert_eq!(pids(&status(&up), "cluster.web"), one);

    // Clear errors: an unknown cluster names the known ones; no cluster
    // with two of them says how.
    let (ok, out) = ctl(&up, &["--name", "up", "scale", "nope", "2"]);
    assert!(!ok && out.contains("unknown cluster \"nope\""), "{out}");
    assert!(out.contains("api, web"), "{out}");
    let (ok, out) = ctl(&up, &["--name", "up", "scale", "2"]);
    assert!(!ok && out.contains("scale needs a cluster"), "{out}");
    // A cluster's own socket is only that cluster: naming another is refused
    // rather than applied to it.
    let (ok, out) = ctl(&up, &["--name", "web", "scale", "api", "3"]);
    assert!(!ok && out.contains("this is cluster \"web\""), "{out}");
    assert_eq!(pids(&status(&up), "cluster.web"), one);

    // SIGHUP with web's command changed but not its `workers`: a rolling
    // reload at the scaled count (1), not the file's (2).
    let text = std::fs::read_to_string(&up.file).unwrap();
    let exe = shoal();
    let moved = Path::new(exe).parent().unwrap().join(".").join("shoal");
    let web_table = cluster("web", 2, p.web);
    let changed = web_table.replace(exe, &moved.display().to_string());
    std::fs::write(&up.file, text.replace(&web_table, &changed)).unwrap();
    kill(up.child.id(), "HUP");
    wait_log(&up, "reload: cluster.web: rolling reload of 1 workers");
    let after = wait_workers(&up, "cluster.web", 1);
    assert_ne!(after, one, "web was reloaded");
    assert_eq!(
        pids(&status(&up), "cluster.api").len(),
        2,
        "api keeps its scaled count"
    );

    // The file's `workers` changed: the file wins.
    let three = changed.replace("workers = 2", "workers = 3");
    let text = std::fs::read_to_string(&up.file).unwrap();
    std::fs::write(&up.file, text.replace(&changed, &three)).unwrap();
    kill(up.child.id(), "HUP");
    wait_log(&up, "reload: cluster.web: rolling reload of 3 workers");
    wait_workers(&up, "cluster.web", 3);
    assert_eq!(pids(&status(&up), "cluster.api").len(), 2);
    up.stop();
}

/// `curl` through the proxy until `stop`: (answers, failures).
fn curl_until(addr: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u32, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !stop.load(Ordering::Relaxed) && ok < 100_000 {
            let out = Command::new("curl")
                .args(["-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}"])
                .arg(format!("http://{addr}/"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() && text.ends_with("\n200") {
                ok += 1;
            } else {
                failed.push(format!("{}: {text}", out.status));
            }
        }
        (ok, failed)
    })
}

#[test]
fn ctl_reload_web_replaces_only_webs_workers_while_curl_keeps_answering() {
    let (up, p, _dir) = start();
    let web = wait_workers(&up, "cluster.web", 2);
    let api = wait_workers(&up, "cluster.api", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..3)
        .map(|_| curl_until(format!("127.0.0.1:{}", p.proxy), stop.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Three rolling reloads while three curl loops run.
    for _ in 0..3 {
        let (ok, out) = ctl(&up, &["--name", "up", "reload", "web"]);
        assert!(ok, "{out}\n{}", up.log());
        assert!(
            out.contains("cluster.web: rolling reload of 2 workers"),
            "{out}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for load in loads {
        let (answered, failed) = load.join().unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        assert!(answered > 0);
    }
    let after = wait_workers(&up, "cluster.web", 2);
    assert!(after.iter().all(|p| !web.contains(p)), "{web:?} {after:?}");
    assert_eq!(pids(&status(&up), "cluster.api"), api);

    // An unknown part names the parts there are.
    let (ok, out) = ctl(&up, &["--name", "up", "reload", "nope"]);
    assert!(!ok && out.contains("unknown part \"nope\""), "{out}");
    assert!(
        out.contains("broker, stats, cluster.api, cluster.web, proxy"),
        "{out}"
    );
    // An unknown command: the list the topology knows.
    let (ok, out) = ctl(&up, &["--name", "up", "restart"]);
    assert!(
        !ok && out.contains("shoal up knows status, reload [PART], scale"),
        "{out}"
    );

    let (ok, out) = ctl(&up, &["--name", "up", "logs"]);
    assert!(!ok && out.contains("logs is a cluster's"), "{out}");
    assert!(out.contains("its clusters: api, web"), "{out}");

    // The proxy alone re-reads its table: now in front of api.
    let text = std::fs::read_to_string(&up.file).unwrap();
    std::fs::write(&up.file, text.replace("\"cluster:web\"", "\"cluster:api\"")).unwrap();
    let (ok, out) = ctl(&up, &["--name", "up", "reload", "proxy"]);
    assert!(ok && out.contains("proxy: generation 2"), "{out}");
    let (code, body) = cluster_support::get(&format!("127.0.0.1:{}", p.proxy), "/").unwrap();
    assert_eq!(code, 200);
    assert!(body.starts_with("Hello from api"), "{body}");
    assert_eq!(pid_of(&body).map(u64::from), Some(api[0]));

    // Servers added and drained at runtime through the topology's socket.
    let proxy = format!("127.0.0.1:{}", p.proxy);
    let from = |n: usize| -> Vec<String> {
        let mut seen: Vec<String> = (0..n)
            .map(|_| {
                let (code, body) = cluster_support::get(&proxy, "/").unwrap();
                assert_eq!(code, 200, "{body}");
                body.split_whitespace()
                    .nth(2)
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    let web_addr = format!("127.0.0.1:{}", p.web);
    let api_addr = format!("127.0.0.1:{}", p.api);
    let (ok, out) = ctl(&up, &["--name", "up", "add-server", "app", &web_addr]);
    assert!(ok, "{out}");
    assert_eq!(from(10), ["api", "web"]);
    let (ok, out) = ctl(&up, &["--name", "up", "drain-server", "app", &api_addr]);
    assert!(ok, "{out}");
    assert_eq!(from(10), ["web"]);
    let (ok, out) = ctl(&up, &["--name", "up", "remove-server", "app", &api_addr]);
    assert!(ok, "{out}");
    assert_eq!(from(5), ["web"]);
    up.stop();
}

#[test]
fn sighup_restarts_a_changed_broker_and_its_persistent_messages_survive() {
    let (up, p, _dir) = start();
    let web = wait_workers(&up, "cluster.web", 2);
    assert!(pika(&url(p.amqp), PUBLISH).contains("published"));

    // A changed limit: the broker restarts on the same data dir.
    let text = std::fs::read_to_string(&up.file).unwrap();
    std::fs::write(
        &up.file,
        text.replace(
            "admin_listen = \"\"\n",
            "admin_listen = \"\"\nmax_connections = 500\n",
        ),
    )
    .unwrap();
    kill(up.child.id(), "HUP");
    wait_log(&up, "reload: broker: restarted with its new configuration");
    assert!(up.log().contains("stopped part=broker"), "{}", up.log());
    let out = pika(&url(p.amqp), COUNT_AND_GET);
    assert!(out.contains("count 5"), "{out}");
    for i in 0..5 {
        assert!(out.contains(&format!("message {i} 2")), "{out}");
    }
    // The workers had their broker connection closed: a rolling reload
    // connects them again.
    wait_log(&up, "reload: cluster.web: rolling reload of 2 workers");
    let after = wait_workers(&up, "cluster.web", 2);
    assert!(after.iter().all(|p| !web.contains(p)), "{web:?} {after:?}");

    // `ctl reload broker` does the same on demand.
    assert!(pika(&url(p.amqp), PUBLISH).contains("published"));
    let (ok, out) = ctl(&up, &["--name", "up", "reload", "broker"]);
    assert!(ok && out.contains("broker: restarted"), "{out}");
    assert!(
        out.contains("cluster.web: rolling reload of 2 workers"),
        "{out}"
    );
    assert!(
        out.contains("cluster.api: rolling reload of 1 workers"),
        "{out}"
    );
    let out = pika(&url(p.amqp), COUNT_AND_GET);
    assert!(out.contains("count 5"), "{out}");
    up.stop();
}

#[test]
fn sighup_with_a_changed_mapping_file_reloads_it_and_keeps_the_counters() {
    let (up, p, dir) = start();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", p.metrics).parse().unwrap();
    let wait_sample = |series: &str, want: f64| {
        let deadline = Instant::now() + T;
        loop {
            let (_, doc) = cluster_support::get(&metrics.to_string(), "/metrics").unwrap();
            let got = doc.lines().find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            });
            if got == Some(want) {
                return doc;
            }
            assert!(
                Instant::now() < deadline,
                "{series} never {want}:\n{doc}\n{}",
                up.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    tx.send_to(b"app.hits:5|c", ("127.0.0.1", p.udp)).unwrap();
    wait_sample("hits_a", 5.0);

    mapping(dir.path(), "hits_b");
    kill(up.child.id(), "HUP");
    wait_log(&up, "reload: stats: mapping file");
    assert!(!up.log().contains("stopped part=stats"), "{}", up.log());
    tx.send_to(b"app.hits:2|c", ("127.0.0.1", p.udp)).unwrap();
    let doc = wait_sample("hits_b", 7.0);
    assert!(!doc.lines().any(|l| l.starts_with("hits_a ")), "{doc}");

    // `ctl reload stats` with nothing changed rereads the file too.
    mapping(dir.path(), "hits_c");
    let (ok, out) = ctl(&up, &["--name", "up", "reload", "stats"]);
    assert!(ok && out.contains("counters kept"), "{out}");
    wait_sample("hits_c", 7.0);
    up.stop();
}

#[test]
fn a_broker_change_that_cannot_start_is_reported_and_the_old_broker_runs_again() {
    let (up, p, _dir) = start();
    assert!(pika(&url(p.amqp), PUBLISH).contains("published"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(&up.file).unwrap();
    std::fs::write(
        &up.file,
        text.replace(
            &format!("listen = \"127.0.0.1:{}\"", p.amqp),
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    kill(up.child.id(), "HUP");
    wait_log(&up, "the old one runs again");
    let log = up.log();
    assert!(
        log.contains(&format!("broker: listen: cannot bind 127.0.0.1:{port}")),
        "{log}"
    );
    assert!(log.contains("Address already in use"), "{log}");
    // The old broker answers on its old address, with its messages.
    let out = pika(&url(p.amqp), COUNT_AND_GET);
    assert!(out.contains("count 5"), "{out}");
    let st = status(&up);
    let broker = st["up"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == "broker")
        .cloned()
        .unwrap_or_default();
    assert_eq!(broker["listen"], format!("127.0.0.1:{}", p.amqp), "{st}");
    drop(taken);
    up.stop();
}

#[test]
fn a_moved_collector_and_dashboard_restart_and_the_workers_follow() {
    let with_dashboard = |p: &Ports, dir: &Path| {
        let dash = p.dashboard;
        format!(
            "{}\n[dashboard]\nlisten = \"127.0.0.1:{dash}\"\n",
            topology(p, dir)
        )
    };
    let (up, p, _dir) = start_with(with_dashboard);
    let dash = p.dashboard;
    let text = std::fs::read_to_string(&up.file).unwrap();
    let web = wait_workers(&up, "cluster.web", 2);
    let api = wait_workers(&up, "cluster.api", 1);

    // The collector and the dashboard move.
    let (udp, dash2) = (free_udp(), free_tcp());
    let moved = text
        .replace(
            &format!("udp = [\"127.0.0.1:{}\"]", p.udp),
            &format!("udp = [\"127.0.0.1:{udp}\"]"),
        )
        .replace(
            &format!("listen = \"127.0.0.1:{dash}\""),
            &format!("listen = \"127.0.0.1:{dash2}\""),
        );
    std::fs::write(&up.file, moved).unwrap();
    kill(up.child.id(), "HUP");
    wait_log(&up, "reload: stats: restarted with its new configuration");
    wait_log(
        &up,
        &format!("reload: dashboard: now on http://127.0.0.1:{dash2}/"),
    );
    // Both clusters had STATSD_* from the topology: a rolling reload with
    // the new address.
    wait_log(&up, "reload: cluster.web: rolling reload of 2 workers (with the broker's or collector's new address)");
    let after = wait_workers(&up, "cluster.web", 2);
    assert!(after.iter().all(|p| !web.contains(p)), "{web:?} {after:?}");
    assert_ne!(pids(&status(&up), "cluster.api"), api);
    let (code, body) = cluster_support::get(&format!("127.0.0.1:{dash2}"), "/api/status").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", dash)).is_err());

    // A request through the proxy is counted at the moved collector.
    let metrics = format!("127.0.0.1:{}", p.metrics);
    let (code, _) = cluster_support::get(&format!("127.0.0.1:{}", p.proxy), "/").unwrap();
    assert_eq!(code, 200);
    let deadline = Instant::now() + T;
    loop {
        let (_, doc) = cluster_support::get(&metrics, "/metrics").unwrap();
        if doc.lines().any(|l| {
            l.starts_with("up_requests") && l.contains("server=\"web\"") && l.ends_with(" 1")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the request was never counted:\n{doc}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    up.stop();
}
