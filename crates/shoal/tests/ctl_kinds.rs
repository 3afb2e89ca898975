//! `shoal ctl` against each kind of server, as a user types it: `stop`
//! stops a proxy, a broker and a collector (as SIGTERM does), the collector
//! flushes on `flush`, and a command a server does not answer is refused
//! with the list of what that kind of server accepts, in a form that works.

mod cluster_support;
mod up_support;
use cluster_support::{kill, shoal, TempDir};
use up_support::{free_tcp, free_udp};

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A server started with `args`, its control socket in `rt`; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            kill(self.0.id(), "KILL");
            let _ = self.0.wait();
        }
    }
}

fn start(rt: &TempDir, args: &[&str]) -> Server {
    Server(
        Command::new(shoal())
            .args(args)
            .env("SHOAL_RUNTIME_DIR", rt.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn ctl(rt: &TempDir, args: &[&str]) -> Output {
    Command::new(shoal())
        .arg("ctl")
        .args(args)
        .env("SHOAL_RUNTIME_DIR", rt.path())
        .output()
        .unwrap()
}

/// Wait until `name` answers `status`.
fn wait_answers(rt: &TempDir, name: &str, s: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ctl(rt, &["--name", name, "status"]).status.success() {
        assert!(s.0.try_wait().unwrap().is_none(), "{name} exited");
        assert!(Instant::now() < deadline, "{name} never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(s: &mut Server) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = s.0.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn stop_stops_a_proxy_a_broker_and_a_collector() {
    let rt = TempDir::new();
    let data = TempDir::new();
    let (proxy_port, upstream) = (free_tcp(), free_tcp());
    let mut proxy = start(
        &rt,
        &[
            "proxy",
            "--listen",
            &format!("127.0.0.1:{proxy_port}"),
            "--upstream",
            &format!("127.0.0.1:{upstream}"),
            "--name",
            "px",
        ],
    );
    let amqp = format!("127.0.0.1:{}", free_tcp());
    let store = data.path().join("store");
    let mut broker = start(
        &rt,
        &[
            "broker",
            "--listen",
            &amqp,
            "--no-admin",
            "--data-dir",
            store.to_str().unwrap(),
            "--name",
            "bk",
        ],
    );
    let udp = format!("127.0.0.1:{}", free_udp());
    let http = format!("127.0.0.1:{}", free_tcp());
    let mut stats = start(
        &rt,
        &["stats", "--udp", &udp, "--http", &http, "--name", "st"],
    );
    for (name, s) in [("px", &mut proxy), ("bk", &mut broker), ("st", &mut stats)] {
        wait_answers(&rt, name, s);
    }

    // The collector flushes on request.
    let out = ctl(&rt, &["--name", "st", "flush"]);
    assert!(out.status.success(), "{}", text(&out));

    // A command the server does not answer: the kind's list, in working form.
    let out = ctl(&rt, &["--name", "px", "scale", "2"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("px is a proxy server: shoal ctl --name px accepts status, reload, stop"),
        "{t}"
    );
    let out = ctl(&rt, &["--name", "bk", "reload"]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(
        t.contains("shoal ctl --name NAME broker list-queues"),
        "{t}"
    );
    assert!(t.contains("bk is a broker server"), "{t}");
    let out = ctl(&rt, &["--name", "st", "restart"]);
    let t = text(&out);
    assert!(
        t.contains("st is a stats server: shoal ctl --name st accepts status, flush, reload, stop"),
        "{t}"
    );

    // `stop` stops each of them, cleanly.
    for (name, s) in [("px", &mut proxy), ("bk", &mut broker), ("st", &mut stats)] {
        let out = ctl(&rt, &["--name", name, "stop"]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        let st = wait_exit(s);
        assert!(st.success(), "{name} exited with {st}");
        assert!(
            !rt.path().join(format!("{name}.sock")).exists(),
            "{name}'s socket left"
        );
    }
}
