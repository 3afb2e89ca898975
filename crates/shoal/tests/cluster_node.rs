//! Unmodified Node programs under `shoal cluster`: Shoal is the primary that
//! Node's own `cluster` module expects (NODE_UNIQUE_ID, `queryServer`,
//! shared listening handles, `disconnect`). Real Node, real npm packages.

mod cluster_support;

use cluster_support::*;
use std::io::Read;
use std::time::Duration;

fn chapter_js() -> String {
    repo()
        .join("examples/cluster/chapter_cluster.js")
        .display()
        .to_string()
}

#[test]
fn the_chapters_cluster_program_runs_unchanged() {
    let port = free_port().to_string();
    let mut p = Primary::start_with_env(
        "chapter",
        &["-w", "2", "--bind-host", "127.0.0.1"],
        &["node", &chapter_js()],
        &[("PORT", &port)],
    );
    // Each worker's `listen(PORT)` reports, as under Node's primary.
    for _ in 0..2 {
        let l = p.event("listening");
        assert_eq!(l["addresses"][0], format!("127.0.0.1:{port}"), "{l}");
    }
    p.all_online(2);
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(distinct_answers(&addr, 2), ["Hello from 1", "Hello from 2"]);
    let st = p.ctl_json(&["status"]);
    assert_eq!(st["status"]["listen"][0], addr, "{st}");

    // A graceful stop is Node's `disconnect`: servers close, connections
    // finish, the workers exit 0 on their own.
    p.signal("TERM");
    for _ in 0..2 {
        let e = p.event("exit");
        assert_eq!(e["exited_after_disconnect"], true, "{e}");
        assert_eq!(e["code"], 0, "{e}\n{}", p.log());
    }
    assert!(p.wait_exit().success(), "{}", p.log());
}

/// `-l` with `--reuse-port` gives each worker its own socket at fd 3. A Node
/// worker's `listen({fd: 3})` asks the primary for it (cluster protocol), and
/// must get that same socket back: given another socket of the group, the
/// inherited one stays in the kernel's reuse-port group unserved, and every
/// connection hashed to it hangs.
#[test]
fn listen_fd_with_reuse_port_answers_every_new_connection() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut p = Primary::start(
        "reusefd",
        &["-w", "2", "-l", &addr, "--reuse-port"],
        &["node", &server_js()],
    );
    p.all_online(2);
    for i in 0..64 {
        let r = get_with_timeout(&addr, Duration::from_secs(5));
        assert!(r.is_some(), "connection {i} was not answered\n{}", p.log());
    }
    assert_eq!(distinct_answers(&addr, 2), ["Hello from 1", "Hello from 2"]);
}

/// One GET on a new connection that gives up after `t`.
fn get_with_timeout(addr: &str, t: Duration) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(t)).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.starts_with("HTTP/1.1 200").then_some(resp)
}

#[test]
fn listen_zero_two_servers_in_a_worker_and_eaddrinuse_reach_the_worker() {
    let dir = TempDir::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let script = write_script(
        dir.path(),
        "servers.js",
        r#"
const cluster = require('cluster');
const http = require('http');
const net = require('net');
const id = cluster.worker.id;
const web = http.createServer((q, r) => r.end('http ' + id)).listen(0, '127.0.0.1', () => {
  const raw = net.createServer(s => s.end('net ' + id + '\n')).listen(0, '127.0.0.1', () => {
    const taken = net.createServer().listen(Number(process.env.BUSY_PORT), '127.0.0.1');
    taken.on('error', e => process.send({
      id, isWorker: cluster.isWorker, http: web.address().port, net: raw.address().port, busy: e.code,
    }));
  });
});
"#,
    );
    let mut p = Primary::start_with_env(
        "servers",
        &["-w", "2", "--ready", "listening"],
        &["node", &script],
        &[("BUSY_PORT", &busy_port)],
    );
    let mut reports = Vec::new();
    while reports.len() < 2 {
        let m = p.event("message");
        reports.push(m["message"].clone());
    }
    reports.sort_by_key(|r| r["id"].as_u64());
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r["id"], i as u64 + 1, "{r}");
        assert_eq!(r["isWorker"], true, "{r}");
        assert_eq!(r["busy"], "EADDRINUSE", "{r}");
    }
    let (web, raw) = (&reports[0]["http"], &reports[0]["net"]);
    assert_eq!(
        web, &reports[1]["http"],
        "listen(0) in two workers shares one port"
    );
    assert_eq!(raw, &reports[1]["net"]);
    assert_ne!(
        web, raw,
        "a second server in a worker gets a port of its own"
    );
    let web = format!("127.0.0.1:{web}");
    let answers = distinct_answers(&web, 2);
    assert_eq!(answers, ["http 1", "http 2"]);
    // The second server answers too. (Which worker accepts a connection on
    // a shared socket is the kernel's choice, and on a loaded machine one
    // worker can win every time: both hold it, as their reports show.)
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{raw}")).unwrap();
    let mut line = String::new();
    s.read_to_string(&mut line).unwrap();
    assert!(line == "net 1\n" || line == "net 2\n", "{line:?}");
    assert!(p.log().contains("cannot listen"), "{}", p.log());
    drop(busy);
}

#[test]
fn an_express_app_runs_unchanged_and_reloads_under_load_without_a_failed_request() {
    let dir = TempDir::new();
    let port = free_port();
    let script = write_script(
        dir.path(),
        "app.js",
        &format!(
            r#"
const express = require('express');
const cluster = require('cluster');
const app = express();
app.get('/', (req, res) => res.send('express ' + cluster.worker.id + ' ' + process.pid));
app.listen({port});
"#
        ),
    );
    let node_path = repo().join("tests/node/node_modules").display().to_string();
    let mut p = Primary::start_with_env(
        "express",
        &[
            "-w",
            "2",
            "--bind-host",
            "127.0.0.1",
            "--grace",
            "5s",
            "--ready",
            "listening",
        ],
        &["node", &script],
        &[("NODE_PATH", &node_path)],
    );
    p.all_online(2);
    let addr = format!("127.0.0.1:{port}");
    let first = distinct_answers(&addr, 2);
    assert!(first.iter().all(|a| a.starts_with("express ")), "{first:?}");

    // 4 clients, a new connection per request, 2,000 requests in all, while
    // every worker is replaced one at a time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while ok + (failed.len() as u32) < 500 {
                    match get(&addr, "/") {
                        Some((200, _)) => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                    if stop.load(std::sync::atomic::Ordering::Relaxed) && ok >= 50 {
                        break;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = p.ctl_json(&["reload"]);
    assert_eq!(r["ok"], true, "{r}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, failed) = c.join().unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during reload: {failed:?}"
        );
        total += ok;
    }
    assert!(total >= 200, "{total}");
    let after = distinct_answers(&addr, 2);
    assert!(
        after.iter().all(|a| !first.contains(a)),
        "new processes answer: {first:?} then {after:?}"
    );
}

#[test]
fn a_malformed_cluster_message_is_named_and_the_worker_keeps_serving() {
    let dir = TempDir::new();
    let port = free_port();
    let script = write_script(
        dir.path(),
        "bad.js",
        &format!(
            r#"
const cluster = require('cluster');
const http = require('http');
process.send({{cmd: 'NODE_CLUSTER', act: 'queryServer', seq: 777, port: 'not a port', addressType: 4}});
http.createServer((q, r) => r.end('fine ' + cluster.worker.id)).listen({port}, '127.0.0.1');
"#
        ),
    );
    let mut p = Primary::start(
        "bad",
        &["-w", "1", "--ready", "listening"],
        &["node", &script],
    );
    p.all_online(1);
    p.wait_log(
        "worker 1 sent a malformed NODE_CLUSTER message: queryServer with a port outside 0..65535",
    );
    let (code, body) = get(&format!("127.0.0.1:{port}"), "/").unwrap();
    assert_eq!((code, body.as_str()), (200, "fine 1"));
}
