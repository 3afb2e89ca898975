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

    // 4 clients, a new connection per request, 2,000 requests in all, and
    // rolling reloads one after another for as long as they run: every
    // request meets a reload in progress or between two.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                for _ in 0..500 {
                    match get(&addr, "/") {
                        Some((200, _)) => {}
                        other => failed.push(format!("{other:?}")),
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                failed
            })
        })
        .collect();
    let mut reloads = 0;
    loop {
        let r = p.ctl_json(&["reload"]);
        assert_eq!(r["ok"], true, "{r}");
        reloads += 1;
        if done.load(std::sync::atomic::Ordering::SeqCst) == 4 {
            break;
        }
    }
    eprintln!("{reloads} rolling reloads during 2,000 requests");
    for c in clients {
        let failed = c.join().unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during {reloads} reloads: {failed:?}"
        );
    }
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

/// `dgram` sockets in cluster workers: a socket bound with
/// `exclusive: false` (and one bound without the option, Node's default for
/// dgram in a worker) is asked of the primary, which binds the address once
/// and hands every worker the same socket, so datagrams sent to that one
/// port are answered by the workers.
#[test]
fn dgram_sockets_bound_in_workers_share_one_port_and_answer() {
    let dir = TempDir::new();
    let (shared, default) = (free_port(), free_port());
    let script = write_script(
        dir.path(),
        "udp.js",
        &format!(
            r#"
const cluster = require('cluster');
const dgram = require('dgram');
const id = cluster.worker.id;
function echo(port, opts, label, done) {{
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => s.send(label + ' ' + id + ' ' + m, r.port, r.address));
  s.bind(Object.assign({{port, address: '127.0.0.1'}}, opts), () => done(s.address().port));
}}
echo({shared}, {{exclusive: false}}, 'shared', a =>
  echo({default}, {{}}, 'default', b => process.send({{id, a, b}})));
"#
        ),
    );
    let mut p = Primary::start("udp", &["-w", "2"], &["node", &script]);
    let mut reports = Vec::new();
    while reports.len() < 2 {
        reports.push(p.event("message")["message"].clone());
    }
    for r in &reports {
        assert_eq!(r["a"], shared, "{r}");
        assert_eq!(r["b"], default, "{r}");
    }
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for (port, label) in [(shared, "shared"), (default, "default")] {
        for i in 0..20 {
            let msg = format!("ping{i}");
            client.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
            let mut buf = [0u8; 256];
            let (n, _) = client
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{label} datagram {i} not answered: {e}\n{}", p.log()));
            let reply = String::from_utf8_lossy(&buf[..n]).to_string();
            let words: Vec<&str> = reply.split(' ').collect();
            assert_eq!(words.len(), 3, "{reply}");
            assert_eq!((words[0], words[2]), (label, msg.as_str()), "{reply}");
            assert!(words[1] == "1" || words[1] == "2", "{reply}");
        }
    }
    // One bound socket per address in the whole cluster: the primary's.
    let out = std::process::Command::new("ss")
        .args(["-uanp"])
        .output()
        .unwrap();
    let ss = String::from_utf8_lossy(&out.stdout);
    let lines = ss
        .lines()
        .filter(|l| l.contains(&format!("127.0.0.1:{shared} ")));
    assert_eq!(lines.count(), 1, "{ss}");
}

/// A Node worker whose `disconnect` never finishes (a response in flight
/// never ends, so `server.close()` never completes) and
/// that ignores SIGTERM is killed when the grace period ends, the log names
/// it, its replacement comes up, and the other worker serves throughout.
#[test]
fn a_node_worker_stuck_in_disconnect_is_killed_after_grace_and_the_other_keeps_serving() {
    let dir = TempDir::new();
    let port = free_port();
    let script = write_script(
        dir.path(),
        "stuck.js",
        &format!(
            r#"
const cluster = require('cluster');
const http = require('http');
process.on('SIGTERM', () => console.log('worker ' + cluster.worker.id + ' ignores SIGTERM'));
http.createServer((q, r) => {{
  if (q.url !== '/hold') return r.end(String(cluster.worker.id));
  r.writeHead(200, {{'content-type': 'text/plain'}});
  r.write('holder ' + cluster.worker.id + '\n'); // and never ends
}}).listen({port}, '127.0.0.1');
"#
        ),
    );
    let mut p = Primary::start(
        "stuck",
        &["-w", "2", "--grace", "2s", "--ready", "listening"],
        &["node", &script],
    );
    p.all_online(2);
    let addr = format!("127.0.0.1:{port}");
    // Requests that never finish, until each worker holds one.
    use std::io::Write;
    let mut held = Vec::new();
    let mut holders = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        let mut buf = [0u8; 512];
        while !resp.contains("holder") || !resp.ends_with("\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "{resp}");
            resp.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let id = resp.split("holder ").nth(1).unwrap().trim().to_string();
        if holders.insert(id) {
            held.push(s);
        }
        if holders.len() == 2 {
            break;
        }
    }
    assert_eq!(holders.len(), 2, "{holders:?}");
    let old = pids(&p);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = get_until(addr.clone(), stop.clone());
    let started = std::time::Instant::now();
    let r = p.ctl_json(&["reload"]);
    assert_eq!(r["ok"], true, "{r}");
    // Each old worker ended by SIGKILL at the end of its grace period, named.
    for _ in 0..2 {
        let e = p.event("exit");
        assert_eq!(e["signal"], "SIGKILL", "{e}\n{}", p.log());
        assert_eq!(e["exited_after_disconnect"], true, "{e}");
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    p.wait_log("ignores SIGTERM");
    p.wait_log("worker still running after the grace period: SIGKILL");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(
        failed.is_empty(),
        "failed during the stuck reload: {failed:?}"
    );
    assert!(ok > 0);
    // New processes answer, the held connections are gone with the old ones.
    let new = pids(&p);
    assert!(
        new.iter().all(|(_, pid)| old.iter().all(|(_, o)| o != pid)),
        "{old:?} {new:?}"
    );
    assert_eq!(distinct_answers(&addr, 2), ["1", "2"]);
    drop(held);
}
