//! Servers and the signals and output readers users give them: `shoal …
//! 2>&1 | head`, a log shipper that dies, a terminal paused with ^S, a
//! `kill -HUP` out of habit. Losing the reader may cost output lines, never
//! the server: it goes on serving, answers its control socket and obeys
//! SIGTERM (exit 0, control socket removed). SIGHUP reloads what can be
//! reloaded and never ends a server. Control-socket clients that connect
//! and say nothing cannot use up a primary's descriptors.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn shoal() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("shoal-output-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server child, killed on drop if still running.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Start `shoal args…` with its control socket under `rt`, stderr (and
/// stdout) to pipes; read stderr until a line contains `ready`, then close
/// both read ends, as `| head` does.
fn start_then_lose_the_reader(rt: &Path, args: &[&str], ready: &str) -> Server {
    let mut child = Command::new(shoal())
        .args(args)
        .env("SHOAL_RUNTIME_DIR", rt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).unwrap_or(0);
        assert!(n > 0, "shoal {args:?} ended before {ready:?}:\n{seen}");
        seen.push_str(&line);
        if line.contains(ready) {
            break;
        }
        assert!(Instant::now() < deadline, "no {ready:?} in:\n{seen}");
    }
    drop(err);
    drop(child.stdout.take());
    Server { child }
}

/// After the reader is gone, the server still runs (a log line or two are
/// written meanwhile), then SIGTERM stops it cleanly.
fn survives_then_stops_on_sigterm(mut s: Server, rt: &Path, sock: &str, poke: impl Fn()) {
    poke();
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.running(), "the server died once its output reader left");
    assert!(rt.join(sock).exists(), "control socket {sock} is gone");
    s.signal("TERM");
    let st = s.wait_exit(Duration::from_secs(20));
    let st = st.expect("SIGTERM was ignored once the output reader left");
    assert!(st.success(), "exit after SIGTERM: {st:?}");
    assert!(
        !rt.join(sock).exists(),
        "control socket {sock} left behind after SIGTERM"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_proxy_obeys_sigterm_after_its_log_reader_is_gone() {
    let rt = Scratch::new("proxy");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let s = start_then_lose_the_reader(
        rt.path(),
        &["proxy", "-l", &listen, "-u", "127.0.0.1:9", "--name", "p"],
        "worker threads serving",
    );
    survives_then_stops_on_sigterm(s, rt.path(), "p.sock", || {
        // A request to a dead upstream: the proxy logs the failure.
        let _ = std::net::TcpStream::connect(&listen).and_then(|mut c| {
            use std::io::{Read, Write};
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut v = Vec::new();
            c.read_to_end(&mut v).map(|_| ())
        });
    });
}

#[test]
fn the_stats_collector_obeys_sigterm_after_its_log_reader_is_gone() {
    let rt = Scratch::new("stats");
    let udp = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let s = start_then_lose_the_reader(
        rt.path(),
        &[
            "stats", "--udp", &udp, "--http", &http, "--flush", "200ms", "--json", "-v",
        ],
        "stats collector listening",
    );
    survives_then_stops_on_sigterm(s, rt.path(), "stats.sock", || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(b"a.b:1|c\nnot a line", &udp).unwrap();
    });
}

#[test]
fn the_broker_obeys_sigterm_after_its_log_reader_is_gone() {
    let rt = Scratch::new("broker");
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let data = rt.path().join("data");
    let s = start_then_lose_the_reader(
        rt.path(),
        &[
            "broker",
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "broker listening",
    );
    survives_then_stops_on_sigterm(s, rt.path(), "broker.sock", || {
        // A client that is not AMQP: the broker logs it.
        use std::io::Write;
        if let Ok(mut c) = std::net::TcpStream::connect(&listen) {
            let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
        }
    });
}

#[test]
fn the_cluster_primary_obeys_sigterm_after_its_output_reader_is_gone() {
    let rt = Scratch::new("cluster");
    let s = start_then_lose_the_reader(
        rt.path(),
        &[
            "cluster",
            "--name",
            "c",
            "-w",
            "1",
            "--",
            "node",
            "-e",
            "setInterval(() => console.log('tick'), 20)",
        ],
        "online",
    );
    survives_then_stops_on_sigterm(s, rt.path(), "c.sock", || {});
}

fn ctl(rt: &Path, name: &str, args: &[&str]) -> Option<serde_json::Value> {
    let mut cmd = Command::new(shoal());
    cmd.arg("ctl")
        .args(["--name", name])
        .args(args)
        .arg("--json")
        .env("SHOAL_RUNTIME_DIR", rt)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            if !st.success() {
                return None;
            }
            let mut out = String::new();
            use std::io::Read;
            child.stdout.take()?.read_to_string(&mut out).ok()?;
            return serde_json::from_str(&out).ok();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn worker_pid(status: &serde_json::Value, id: u64) -> Option<u64> {
    status["status"]["workers"]
        .as_array()?
        .iter()
        .find(|w| w["id"] == id)?["pid"]
        .as_u64()
}

#[test]
fn a_primary_whose_stdout_nobody_reads_still_supervises() {
    let rt = Scratch::new("stuck");
    // Workers that print as fast as they can; the primary's stdout and
    // stderr are pipes that nobody reads, so they fill at once.
    let mut child = Command::new(shoal())
        .args(["cluster", "--name", "s", "-w", "2", "--"])
        .args([
            "node",
            "-e",
            "const l = 'x'.repeat(2000); setInterval(() => { for (let i = 0; i < 50; i++) console.log(l); }, 1)",
        ])
        .env("SHOAL_RUNTIME_DIR", rt.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _unread = (child.stdout.take(), child.stderr.take());
    let mut s = Server { child };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match ctl(rt.path(), "s", &["status"]) {
            Some(st) if worker_pid(&st, 1).is_some() && worker_pid(&st, 2).is_some() => break st,
            _ => {
                assert!(s.running(), "the primary ended");
                assert!(
                    Instant::now() < deadline,
                    "ctl status never answered with two workers"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    // Long enough for both pipes to be full many times over.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        ctl(rt.path(), "s", &["status"]).is_some(),
        "ctl status times out once stdout is full"
    );
    // A killed worker is replaced.
    let victim = worker_pid(&status, 1).unwrap();
    Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = ctl(rt.path(), "s", &["status"]);
        if now
            .as_ref()
            .and_then(|st| worker_pid(st, 1))
            .is_some_and(|p| p != victim)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker 1 was not replaced: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And SIGTERM is obeyed.
    s.signal("TERM");
    let st = s.wait_exit(Duration::from_secs(30));
    assert!(
        st.is_some_and(|st| st.success()),
        "SIGTERM with a full stdout: {st:?}"
    );
}

/// Start `shoal args…` with stderr to `log` (a file), and wait for `ready`
/// in it.
fn start_logging_to(rt: &Path, log: &Path, args: &[&str], ready: &str) -> Server {
    let child = Command::new(shoal())
        .args(args)
        .env("SHOAL_RUNTIME_DIR", rt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn shoal");
    let s = Server { child };
    wait_for_log(log, ready);
    s
}

fn wait_for_log(log: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_leaves_the_stats_collector_running() {
    let rt = Scratch::new("stats-hup");
    let log = rt.path().join("stats.log");
    let udp = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut s = start_logging_to(
        rt.path(),
        &log,
        &["stats", "--udp", &udp, "--http", &http, "--flush", "200ms"],
        "stats collector listening",
    );
    s.signal("HUP");
    // Without a mapping file there is nothing to reread: the hangup is
    // logged and the collector keeps its state.
    wait_for_log(&log, "SIGHUP: no mapping file to reread");
    // Still collecting and flushing after the hangup.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"after.hup:1|c", &udp).unwrap();
    wait_for_log(&log, "counters=1");
    assert!(s.running(), "SIGHUP ended the collector");
    s.signal("TERM");
    let st = s
        .wait_exit(Duration::from_secs(20))
        .expect("exit after SIGTERM");
    assert!(st.success(), "{st:?}");
}

fn login(port: u16, user: &str, pass: &str) -> String {
    let out = Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broker_fixtures/login.js"))
        .args([&port.to_string(), user, pass])
        .env(
            "NODE_PATH",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node/node_modules"),
        )
        .output()
        .expect("run node");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sighup_reloads_the_brokers_users_and_permissions() {
    let rt = Scratch::new("broker-hup");
    let log = rt.path().join("broker.log");
    let cfg = rt.path().join("broker.toml");
    let users = |who: &str| {
        format!(
            "[[users]]\nname = \"{who}\"\npassword = \"pw-{who}\"\n\n\
             [[permissions]]\nuser = \"{who}\"\nvhost = \"/\"\n\
             configure = \".*\"\nwrite = \".*\"\nread = \".*\"\n"
        )
    };
    std::fs::write(&cfg, users("alice")).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{}", free_port());
    let data = rt.path().join("data");
    let mut s = start_logging_to(
        rt.path(),
        &log,
        &[
            "broker",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "broker listening",
    );
    assert_eq!(login(port, "alice", "pw-alice"), "ok");
    assert!(login(port, "bob", "pw-bob").starts_with("refused"));

    std::fs::write(&cfg, users("bob")).unwrap();
    s.signal("HUP");
    wait_for_log(&log, "users and permissions reloaded");
    assert!(s.running(), "SIGHUP ended the broker");
    assert_eq!(login(port, "bob", "pw-bob"), "ok");
    assert!(login(port, "alice", "pw-alice").starts_with("refused"));

    // A file that no longer loads changes nothing.
    std::fs::write(&cfg, "[[users]]\nname = 3\n").unwrap();
    s.signal("HUP");
    wait_for_log(&log, "reload failed");
    assert_eq!(login(port, "bob", "pw-bob"), "ok");

    s.signal("TERM");
    let st = s
        .wait_exit(Duration::from_secs(20))
        .expect("exit after SIGTERM");
    assert!(st.success(), "{st:?}");
    assert!(!rt.path().join("broker.sock").exists());
}

#[test]
fn idle_control_clients_cannot_starve_a_primary_of_descriptors() {
    let rt = Scratch::new("ctl-fds");
    // A primary with few descriptors, so that idle control connections
    // would use them all up.
    let shoal = shoal();
    let script = format!(
        "ulimit -Sn 128 && ulimit -Hn 128 && exec {shoal} cluster --name f -w 1 -- node -e 'setInterval(() => {{}}, 1000)'"
    );
    let child = Command::new("bash")
        .args(["-c", &script])
        .env("SHOAL_RUNTIME_DIR", rt.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut s = Server { child };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match ctl(rt.path(), "f", &["status"]) {
            Some(st) if worker_pid(&st, 1).is_some() => break st,
            _ => {
                assert!(s.running(), "the primary ended");
                assert!(Instant::now() < deadline, "ctl status never answered");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let sock = rt.path().join("f.sock");
    let idle: Vec<_> = (0..300)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&sock).ok())
        .collect();
    assert!(idle.len() > 128, "could not open the idle clients");
    std::thread::sleep(Duration::from_millis(300));
    let victim = worker_pid(&status, 1).unwrap();
    Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = ctl(rt.path(), "f", &["status"]);
        if now
            .as_ref()
            .and_then(|st| worker_pid(st, 1))
            .is_some_and(|p| p != victim)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker 1 was not replaced while idle control clients were open: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);
    s.signal("TERM");
    assert!(s
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|st| st.success()));
}

#[test]
fn a_stats_collector_whose_json_stdout_nobody_reads_still_flushes_and_stops() {
    let rt = Scratch::new("stats-stuck");
    let udp = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let log = rt.path().join("stats.log");
    // stdout is a pipe nobody reads: the JSON sink fills it within a few
    // flushes (each line carries every series).
    let mut child = Command::new(shoal())
        .args([
            "stats", "--udp", &udp, "--http", &http, "--flush", "100ms", "--json",
        ])
        .env("SHOAL_RUNTIME_DIR", rt.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _unread = child.stdout.take();
    let mut s = Server { child };
    wait_for_log(&log, "stats collector listening");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let names: String = (0..500)
        .map(|i| format!("stuck.series.with.a.long.name.{i:04}:1|c\n"))
        .collect();
    for chunk in names.as_bytes().chunks(1400) {
        sock.send_to(chunk, &udp).unwrap();
    }
    // Well past the point where a blocking write would have stopped the
    // flush task: the pipe holds 64 KiB, each line is over 20 KiB.
    std::thread::sleep(Duration::from_secs(2));
    sock.send_to(b"after.the.pipe.filled:7|c", &udp).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let flushed = loop {
        let body = http_get(&http, "/metrics");
        if body.contains("after_the_pipe_filled") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(flushed, "flushes stopped once stdout was full");
    s.signal("TERM");
    let st = s.wait_exit(Duration::from_secs(20));
    assert!(
        st.is_some_and(|st| st.success()),
        "SIGTERM with a full stdout: {st:?}"
    );
}

/// GET `path` from `addr` over HTTP/1.0; the whole answer, or "" on error.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

#[test]
fn ctl_list_names_every_running_server_and_ctl_flush_reaches_a_collector() {
    let rt = Scratch::new("list");
    let udp = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let log = rt.path().join("stats.log");
    let mut s = start_logging_to(
        rt.path(),
        &log,
        &["stats", "--udp", &udp, "--http", &http, "--flush", "1h"],
        "stats collector listening",
    );
    let blog = rt.path().join("broker.log");
    let port = free_port().to_string();
    let data = rt.path().join("data");
    let mut b = start_logging_to(
        rt.path(),
        &blog,
        &[
            "broker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "broker listening",
    );
    let list = Command::new(shoal())
        .args(["ctl", "list"])
        .env("SHOAL_RUNTIME_DIR", rt.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{text}");
    let row = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap_or("");
    assert!(
        row("broker").contains("broker") && row("broker").contains(&port),
        "{text}"
    );
    assert!(
        row("stats").contains("stats") && row("stats").contains("running"),
        "{text}"
    );
    // A counter, then a flush on request: it is at /metrics at once (the
    // interval is an hour).
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"listed.flush:5|c", &udp).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let flush = Command::new(shoal())
        .args(["ctl", "--name", "stats", "flush"])
        .env("SHOAL_RUNTIME_DIR", rt.path())
        .output()
        .unwrap();
    assert!(flush.status.success(), "{flush:?}");
    assert!(http_get(&http, "/metrics").contains("listed_flush"));
    s.signal("TERM");
    b.signal("TERM");
    assert!(s
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|st| st.success()));
    assert!(b
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|st| st.success()));
}
