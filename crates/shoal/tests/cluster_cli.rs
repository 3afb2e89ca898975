//! `shoal cluster` and `shoal ctl` driven as a user would: real Node and
//! Python workers, real sockets, `--json` events read from stdout.

mod cluster_support;

use cluster_support::*;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn chapter_server_both_workers_answer_and_ctl_works() {
    let mut p = Primary::start(
        "both",
        &["-w", "2", "-l", "127.0.0.1:0", "--ready", "delay:200"],
        &["node", &server_js()],
    );
    let addr = p.addr();
    p.all_online(2);
    assert_eq!(distinct_answers(&addr, 2), ["Hello from 1", "Hello from 2"]);

    let st = p.ctl_json(&["status"]);
    assert_eq!(st["ok"], true, "{st}");
    let ws = st["status"]["workers"].as_array().unwrap();
    assert_eq!(ws.len(), 2, "{st}");
    let forked: Vec<u64> = p
        .seen
        .iter()
        .filter(|v| v["event"] == "fork")
        .map(|v| v["pid"].as_u64().unwrap())
        .collect();
    for (i, w) in ws.iter().enumerate() {
        assert_eq!(w["id"], i as u64 + 1);
        assert_eq!(w["state"], "online");
        assert!(forked.contains(&w["pid"].as_u64().unwrap()), "{st}");
        assert!(w["rss_bytes"].as_u64().unwrap() > 1_000_000, "{st}");
        assert_eq!(w["restarts"], 0);
    }
    assert_eq!(st["status"]["primary"]["pid"], p.child.id());
    assert_eq!(st["status"]["listen"][0], addr);
    // The table for people.
    let table = p.ctl(&["status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success());
    assert!(
        text.contains("STATE") && text.matches("online").count() == 2,
        "{text}"
    );
    // send reaches every worker; a malformed request is refused and the primary goes on.
    assert_eq!(p.ctl_json(&["send", r#"{"hello":1}"#])["sent"], 2);
    let bad = p.ctl(&["send", "{not json"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not JSON"));
    let sock = p.rt.path().join("both.sock");
    let mut raw = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    raw.write_all(b"{\"cmd\":\"frobnicate\"}\n").unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("unknown command"), "{reply}");
    assert_eq!(get(&addr, "/").unwrap().0, 200);
    assert_eq!(p.ctl_json(&["status"])["ok"], true);

    // Graceful stop: every worker exits as asked, then the primary.
    p.signal("TERM");
    for _ in 0..2 {
        let e = p.event("exit");
        assert_eq!(e["exited_after_disconnect"], true, "{e}");
    }
    assert!(p.wait_exit().success(), "{}", p.log());
    assert!(!sock.exists(), "control socket left behind");
}

#[test]
fn a_killed_worker_is_replaced_with_the_same_id() {
    let mut p = Primary::start(
        "kill9",
        &["-w", "2", "-l", "127.0.0.1:0", "--ready", "delay:100"],
        &["node", &server_js()],
    );
    let addr = p.addr();
    p.all_online(2);
    let victim = p
        .seen
        .iter()
        .find(|v| v["event"] == "fork" && v["id"] == 1)
        .unwrap()["pid"]
        .as_u64()
        .unwrap();
    kill(victim as u32, "KILL");
    let exit = p.wait_for("exit of 1", |v| v["event"] == "exit" && v["id"] == 1);
    assert_eq!(exit["signal"], "SIGKILL");
    assert_eq!(exit["exited_after_disconnect"], false);
    p.event("restart");
    let fork = p.wait_for("refork of 1", |v| v["event"] == "fork" && v["id"] == 1);
    assert_ne!(fork["pid"].as_u64().unwrap(), victim);
    p.wait_for("online again", |v| v["event"] == "online" && v["id"] == 1);
    assert!(!alive(victim as u32));
    // The dead worker was reaped: the primary has no zombie child.
    let deadline = Instant::now() + T;
    while !zombies_of(p.child.id()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "zombies: {:?}",
            zombies_of(p.child.id())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = p.ctl_json(&["status"]);
    let w1 = st["status"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == 1)
        .cloned()
        .unwrap();
    assert_eq!(w1["restarts"], 1, "{st}");
    assert_eq!(get(&addr, "/").unwrap().0, 200);
}

#[test]
fn rolling_reload_under_load_loses_no_request() {
    let dir = TempDir::new();
    let js = write_script(
        dir.path(),
        "graceful.js",
        r#"
        const http = require('http');
        const srv = http.createServer((req, res) => res.end(process.env.SHOAL_WORKER_ID + ' ' + process.pid));
        srv.listen({ fd: 3 }, () => process.send('ready'));
        process.on('SIGTERM', () => srv.close(() => process.exit(0)));
        "#,
    );
    let mut p = Primary::start(
        "reload",
        &[
            "-w",
            "2",
            "-l",
            "127.0.0.1:0",
            "--ready",
            "ipc",
            "--grace",
            "20s",
        ],
        &["node", &js],
    );
    let addr = p.addr();
    p.all_online(2);
    let old: Vec<u64> = p
        .seen
        .iter()
        .filter(|v| v["event"] == "fork")
        .map(|v| v["pid"].as_u64().unwrap())
        .collect();

    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let load_addr = addr.clone();
    let load = std::thread::spawn(move || {
        let mut ok = 0usize;
        let mut failed = Vec::new();
        let mut pids = std::collections::BTreeSet::new();
        let mut reload_done = false;
        // At least 2,000 requests, each on a new connection, and keep going
        // until the reload has finished.
        while ok + failed.len() < 2000 || !reload_done {
            match get(&load_addr, "/") {
                Some((200, body)) => {
                    ok += 1;
                    pids.insert(body.split_whitespace().nth(1).unwrap_or("").to_string());
                }
                other => failed.push(format!("{other:?}")),
            }
            reload_done = reload_done || done_rx.try_recv().is_ok();
            if ok + failed.len() > 200_000 {
                break;
            }
        }
        (ok, failed, pids)
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = p.ctl_json(&["reload"]);
    assert_eq!(r["ok"], true, "{r}\n{}", p.log());
    assert_eq!(r["replaced"], 2, "{r}");
    done_tx.send(()).unwrap();
    let (ok, failed, pids) = load.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok >= 2000);
    // Old workers left as asked; the new ones served too.
    for pid in &old {
        let e = p.wait_for("old exit", |v| v["event"] == "exit" && v["pid"] == *pid);
        assert_eq!(e["exited_after_disconnect"], true);
        assert_eq!(e["code"], 0, "graceful exit expected: {e}");
    }
    let st = p.ctl_json(&["status"]);
    let now: Vec<u64> = st["status"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(now.len(), 2, "{st}");
    assert!(now.iter().all(|p| !old.contains(p)), "{st}");
    // With the old workers gone, the new ones answer.
    let (_, body) = get(&addr, "/").unwrap();
    let served_by: u64 = body.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(now.contains(&served_by), "{body} not from {now:?}");
    assert!(!pids.is_empty());
}

#[test]
fn primary_killed_with_sigkill_leaves_no_worker() {
    let mut p = Primary::start(
        "orphans",
        &["-w", "2", "-l", "127.0.0.1:0", "--ready", "delay:100"],
        &["node", &server_js()],
    );
    p.all_online(2);
    let pids: Vec<u32> = p.worker_pids.clone();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&pid| alive(pid)));
    p.signal("KILL");
    p.wait_exit();
    let deadline = Instant::now() + T;
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "workers outlived the primary: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn primary_killed_with_sigkill_leaves_no_grandchild_either() {
    let dir = TempDir::new();
    let pidfile = dir.path().join("grandchild.pid");
    let script = format!(
        "sleep 1000 & echo $! > {}; exec node {}",
        pidfile.display(),
        server_js()
    );
    let mut p = Primary::start(
        "grand",
        &["-w", "1", "-l", "127.0.0.1:0", "--ready", "delay:100"],
        &["sh", "-c", &script],
    );
    p.all_online(1);
    let deadline = Instant::now() + T;
    let grandchild: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "no grandchild pid");
        std::thread::sleep(Duration::from_millis(20));
    };
    let worker = p.worker_pids[0];
    assert!(alive(grandchild) && alive(worker));
    p.signal("KILL");
    p.wait_exit();
    while alive(grandchild) || alive(worker) {
        if Instant::now() > deadline {
            kill(grandchild, "KILL");
            panic!(
                "left behind: worker {worker} alive {}, grandchild {grandchild} alive {}",
                alive(worker),
                alive(grandchild)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn scale_up_and_down_at_runtime_and_reload_on_sighup() {
    let mut p = Primary::start(
        "scale",
        &["-w", "1", "-l", "127.0.0.1:0", "--ready", "delay:100"],
        &["node", &server_js()],
    );
    p.all_online(1);
    assert_eq!(p.ctl_json(&["scale", "3"])["workers"], 3);
    p.wait_for("online 3", |v| v["event"] == "online" && v["id"] == 3);
    p.signal("TTIN");
    p.wait_for("online 4", |v| v["event"] == "online" && v["id"] == 4);
    p.signal("TTOU");
    let e = p.wait_for("exit 4", |v| v["event"] == "exit" && v["id"] == 4);
    assert_eq!(e["exited_after_disconnect"], true);
    p.signal("TTOU");
    let e = p.wait_for("exit 3", |v| v["event"] == "exit" && v["id"] == 3);
    assert_eq!(e["exited_after_disconnect"], true);
    p.signal("HUP");
    let done = p.wait_for("reload done", |v| {
        v["event"] == "reload" && v["phase"] != "started"
    });
    assert_eq!(done["phase"], "done", "{done}");
    // The replaced workers leave shortly after the reload is done.
    let deadline = Instant::now() + T;
    loop {
        let st = p.ctl_json(&["status"]);
        let ids: Vec<u64> = st["status"]["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_u64().unwrap())
            .collect();
        if ids == [1, 2] {
            break;
        }
        assert!(Instant::now() < deadline, "{st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let bad = p.ctl(&["scale", "0"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot scale to 0"));
    assert_eq!(p.ctl_json(&["stop"])["stopping"], true);
    assert!(p.wait_exit().success());
    assert!(
        !p.rt.path().join("scale.sock").exists(),
        "control socket left behind"
    );
}

#[test]
fn crash_loop_backs_off_then_gives_up_with_a_reason() {
    let mut p = Primary::start(
        "crash",
        &["-w", "1", "--max-restarts", "3", "--ready", "delay:5000"],
        &["sh", "-c", "echo starting; exit 3"],
    );
    let delays: Vec<u64> = (0..3)
        .map(|_| p.event("restart")["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays, [0, 100, 200]);
    let g = p.event("give_up");
    assert!(g["reason"].as_str().unwrap().contains("exit code 3"), "{g}");
    let s = p.wait_exit();
    assert!(!s.success());
    p.wait_log("all workers gave up: worker 1");
    p.wait_log("[crash 1] starting");
    assert!(
        !p.rt.path().join("crash.sock").exists(),
        "control socket left behind"
    );
}

#[test]
fn python_worker_with_notify_readiness_and_reuse_port() {
    let dir = TempDir::new();
    let py = write_script(
        dir.path(),
        "w.py",
        r#"
import os, socket, sys
from http.server import HTTPServer, BaseHTTPRequestHandler
assert os.environ["LISTEN_PID"] == str(os.getpid()), "LISTEN_PID must be our own pid"
assert os.environ["LISTEN_FDS"] == "1" and os.environ["LISTEN_FDNAMES"] == "web"
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("py %s" % os.environ["SHOAL_WORKER_ID"]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
srv = HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket = socket.socket(fileno=3)
n = os.environ["NOTIFY_SOCKET"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", "\0" + n[1:] if n.startswith("@") else n)
srv.serve_forever()
"#,
    );
    let mut p = Primary::start(
        "py",
        &[
            "-w",
            "2",
            "-l",
            "web=127.0.0.1:0",
            "--reuse-port",
            "--ready",
            "notify",
        ],
        &["python3", &py],
    );
    let addr = p.addr();
    p.wait_for("online 1", |v| v["event"] == "online" && v["id"] == 1);
    p.all_online(2);
    assert_eq!(distinct_answers(&addr, 2), ["py 1", "py 2"]);
}

#[test]
fn non_json_on_a_worker_channel_is_reported_and_serving_goes_on() {
    let dir = TempDir::new();
    let js = write_script(
        dir.path(),
        "noisy.js",
        r#"
        const http = require('http');
        const fd = Number(process.argv[2]);
        http.createServer((q, s) => s.end('ok')).listen({ fd: 3 }, () => {
            require('fs').writeSync(fd, 'definitely not json\n');
            process.send({ cmd: 'online' });
        });
        "#,
    );
    // One listener at fd 3, so the IPC channel is fd 4.
    let mut p = Primary::start(
        "noisy",
        &["-w", "1", "-l", "127.0.0.1:0", "--ready", "ipc"],
        &["node", &js, "4"],
    );
    let addr = p.addr();
    let e = p.event("error");
    assert!(e["message"].as_str().unwrap().contains("not JSON"), "{e}");
    p.event("online");
    assert_eq!(get(&addr, "/").unwrap(), (200, "ok".to_string()));
}

#[test]
fn bad_input_gets_one_line_errors() {
    let run = |args: &[&str]| {
        let out = Command::new(shoal())
            .args(args)
            .env(
                "SHOAL_RUNTIME_DIR",
                std::env::temp_dir().join("shoal-bad-input"),
            )
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["cluster", "-w", "1", "--", "no-such-program-xyz"]);
    assert!(
        e.contains("cannot run `no-such-program-xyz`: not found in PATH"),
        "{e}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = taken.local_addr().unwrap().to_string();
    let e = run(&["cluster", "-w", "1", "-l", &a, "--", "true"]);
    assert!(e.contains(&format!("cannot listen on {a}")), "{e}");
    let e = run(&["cluster", "--ready", "soon", "--", "true"]);
    assert!(e.contains("--ready soon"), "{e}");
    let e = run(&["cluster", "--frobnicate", "--", "true"]);
    assert!(e.contains("--frobnicate"), "{e}");
    let e = run(&["cluster", "-l", "localhost", "--", "true"]);
    assert!(e.contains("expected host:port"), "{e}");
    let e = run(&["ctl", "--name", "nobody-here", "status"]);
    assert!(e.contains("is the server running?"), "{e}");
}

#[test]
fn several_listeners_tcp_ipv6_and_unix_at_fds_3_4_5() {
    let dir = TempDir::new();
    let sock = dir.path().join("app.sock");
    let js = write_script(
        dir.path(),
        "multi.js",
        r#"
        const http = require('http');
        const names = process.env.LISTEN_FDNAMES.split(':');
        for (let i = 0; i < Number(process.env.LISTEN_FDS); i++) {
            http.createServer((q, s) => s.end(names[i] + ' ' + process.env.SHOAL_WORKER_ID)).listen({ fd: 3 + i });
        }
        process.send('ready');
        "#,
    );
    let unix = format!("api=unix:{}", sock.display());
    let mut p = Primary::start(
        "multi",
        &[
            "-w",
            "2",
            "-l",
            "web=127.0.0.1:0",
            "-l",
            "v6=[::1]:0",
            "-l",
            &unix,
            "--ready",
            "ipc",
        ],
        &["node", &js],
    );
    let setup = p.event("setup");
    let listen: Vec<String> = setup["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listen.len(), 3, "{setup}");
    assert!(listen[1].starts_with("[::1]:"), "{setup}");
    assert_eq!(listen[2], format!("unix:{}", sock.display()));
    p.all_online(2);
    let (code, body) = get(&listen[0], "/").unwrap();
    assert_eq!(code, 200);
    assert!(body.starts_with("web "), "{body}");
    let (_, body) = get(&listen[1], "/").unwrap();
    assert!(body.starts_with("v6 "), "{body}");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("api "), "{resp}");
    p.signal("TERM");
    assert!(p.wait_exit().success());
    assert!(!sock.exists(), "the Unix socket file is removed on exit");
}

#[test]
fn no_restart_ends_the_primary_when_the_workers_are_done() {
    let mut p = Primary::start(
        "once",
        &["-w", "2", "--no-restart", "--ready", "delay:0"],
        &["sh", "-c", "echo done $SHOAL_WORKER_ID"],
    );
    let s = p.wait_exit();
    assert!(s.success(), "{}", p.log());
    p.wait_log("[once 1] done 1");
    p.wait_log("[once 2] done 2");
    let exits = (0..2).map(|_| p.event("exit")).collect::<Vec<_>>();
    assert!(
        exits
            .iter()
            .all(|e| e["code"] == 0 && e["exited_after_disconnect"] == false),
        "{exits:?}"
    );
}

#[test]
fn config_file_runs_and_its_errors_name_file_line_and_key() {
    let dir = TempDir::new();
    let good = dir.path().join("c.toml");
    std::fs::write(
        &good,
        format!(
            "name = \"ignored-by-flag\"\nworkers = 2\ncommand = [\"node\", {:?}]\nlisten = [\"127.0.0.1:0\"]\nready = \"delay:100\"\n[env]\nGREETING = \"hi\"\n",
            server_js()
        ),
    )
    .unwrap();
    let cfg = good.display().to_string();
    let mut p = Primary::start("fromfile", &["--config", &cfg], &[]);
    let addr = p.addr();
    p.all_online(2);
    assert_eq!(get(&addr, "/").unwrap().0, 200);
    assert_eq!(p.ctl_json(&["status"])["status"]["name"], "fromfile");
    drop(p);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "workers = 2\ncomand = [\"node\"]\n").unwrap();
    let out = Command::new(shoal())
        .args(["cluster", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(&format!("{}:2", bad.display())) && e.contains("comand"),
        "{e}"
    );
    let out = Command::new(shoal())
        .args(["cluster", "-w", "1"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no worker command"),
        "{out:?}"
    );
}

#[test]
fn a_worker_ignoring_sigterm_is_killed_after_the_grace_period() {
    let mut p = Primary::start(
        "stubborn",
        &["-w", "1", "--grace", "300ms", "--ready", "ipc"],
        &[
            "node",
            "-e",
            "process.on('SIGTERM', () => console.log('ignoring SIGTERM')); process.on('disconnect', () => {}); process.send('ready'); setInterval(() => {}, 1000)",
        ],
    );
    p.all_online(1);
    p.signal("TERM");
    let e = p.event("exit");
    assert_eq!(e["signal"], "SIGKILL", "{e}");
    assert_eq!(e["exited_after_disconnect"], true);
    assert!(p.wait_exit().success(), "{}", p.log());
    p.wait_log("[stubborn 1] ignoring SIGTERM");
    p.wait_log("SIGKILL");
}

#[test]
fn a_worker_that_exits_on_disconnect_does_so_before_sigterm() {
    // Like a Node worker that closes its server on 'disconnect' and then
    // exits: it needs a moment, and gets it before SIGTERM.
    let mut p = Primary::start(
        "polite",
        &["-w", "1", "--ready", "ipc"],
        &[
            "node",
            "-e",
            "process.on('SIGTERM', () => { console.log('got SIGTERM'); process.exit(3) }); process.on('disconnect', () => setTimeout(() => process.exit(0), 50)); process.send('ready'); setInterval(() => {}, 1000)",
        ],
    );
    p.all_online(1);
    p.signal("TERM");
    let e = p.event("exit");
    assert_eq!(e["code"], 0, "{e}");
    assert_eq!(e["exited_after_disconnect"], true, "{e}");
    assert!(p.wait_exit().success(), "{}", p.log());
    assert!(!p.log().contains("[polite 1] got SIGTERM"), "{}", p.log());
}
