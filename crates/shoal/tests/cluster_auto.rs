//! Reloads nobody types, under `shoal cluster`: `--watch` (a file change
//! reloads the workers one at a time, no request fails; ignored paths do
//! not), `--restart-cron` (a reload at each match; bad expressions refused
//! at start), and `--listen-timeout` (a worker never ready is killed and
//! named).

mod cluster_support;

use cluster_support::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An unmodified Node HTTP server (`listen(port)`), answering its worker id.
fn http_app(dir: &std::path::Path, port: u16) -> String {
    write_script(
        dir,
        "app.js",
        &format!(
            "require('http').createServer((q, r) => r.end('w' + process.env.SHOAL_WORKER_ID)).listen({port}, '127.0.0.1');\n"
        ),
    )
}

#[test]
fn a_watched_file_change_reloads_one_at_a_time_without_a_failed_request() {
    let dir = TempDir::new();
    let port = free_port();
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("node_modules/dep")).unwrap();
    let script = http_app(&app, port);
    let mut p = Primary::start(
        "wt",
        &[
            "-w",
            "2",
            "--watch",
            app.to_str().unwrap(),
            "--watch-delay",
            "300ms",
            "--grace",
            "3s",
        ],
        &["node", &script],
    );
    p.all_online(2);
    let before = pids(&p);
    assert_eq!(before.len(), 2);

    // A change under an ignored path (node_modules) does nothing.
    std::fs::write(app.join("node_modules/dep/index.js"), "// updated\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let since: Vec<_> = p.events.try_iter().collect();
    p.seen.extend(since);
    assert!(
        !p.seen.iter().any(|v| v["event"] == "reload"),
        "node_modules change reloaded"
    );
    assert_eq!(pids(&p), before);

    let addr = format!("127.0.0.1:{port}");
    wait_until("the app serves", || get(&addr, "/").is_some());
    let stop = Arc::new(AtomicBool::new(false));
    let client = get_until(addr, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    // Several writes in a burst: one reload.
    for i in 0..3 {
        std::fs::write(app.join("config.json"), format!("{{\"v\":{i}}}")).unwrap();
    }
    p.wait_for("reload started", |v| {
        v["event"] == "reload" && v["phase"] == "started"
    });
    p.wait_for("reload done", |v| {
        v["event"] == "reload" && v["phase"] == "done"
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 10, "{ok}");
    let after = pids(&p);
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|w| !before.contains(w)),
        "{before:?} -> {after:?}"
    );
    // The burst was one reload, not three.
    std::thread::sleep(Duration::from_millis(800));
    let more: Vec<_> = p.events.try_iter().collect();
    assert!(!more.iter().any(|v| v["event"] == "reload"), "{more:?}");
    p.seen.extend(more);
    assert!(p.log().contains("--watch: "), "{}", p.log());
}

#[test]
fn restart_cron_reloads_at_each_match() {
    let dir = TempDir::new();
    let script = write_script(
        dir.path(),
        "idle.js",
        "process.send('ready'); setInterval(() => {}, 1000);",
    );
    // Six fields: every 2 seconds.
    let mut p = Primary::start(
        "cr",
        &[
            "-w",
            "1",
            "--ready",
            "ipc",
            "--restart-cron",
            "*/2 * * * * *",
        ],
        &["node", &script],
    );
    p.all_online(1);
    let first = pids(&p);
    p.wait_for("a cron reload", |v| {
        v["event"] == "reload" && v["phase"] == "done"
    });
    p.wait_for("another cron reload", |v| {
        v["event"] == "reload" && v["phase"] == "done"
    });
    wait_until("a new worker", || {
        let now = pids(&p);
        now.len() == 1 && now != first
    });
    assert!(p
        .log()
        .contains("--restart-cron */2 * * * * *: rolling reload"));
}

#[test]
fn a_bad_cron_expression_is_refused_at_start() {
    for (expr, says) in [
        ("61 * * * *", "--restart-cron \"61 * * * *\""),
        ("* * *", "3 field(s)"),
        ("0 0 30 2 *", "never matches"),
    ] {
        let out = std::process::Command::new(shoal())
            .args(["cluster", "--restart-cron", expr, "--", "node", "-e", "0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{expr}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(says) && err.contains("minute hour"),
            "{expr}: {err}"
        );
    }
    let out = std::process::Command::new(shoal())
        .args([
            "cluster",
            "--watch",
            "/no/such/path",
            "--",
            "node",
            "-e",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--watch /no/such/path"), "{err}");
}

#[test]
fn a_worker_not_ready_within_listen_timeout_is_killed_and_named() {
    let dir = TempDir::new();
    // Never says "ready".
    let script = write_script(dir.path(), "mute.js", "setInterval(() => {}, 1000);");
    let mut p = Primary::start(
        "lt",
        &[
            "-w",
            "1",
            "--ready",
            "ipc",
            "--listen-timeout",
            "1s",
            "--max-restarts",
            "1",
        ],
        &["node", &script],
    );
    let fork = p.event("fork");
    let e = p.wait_for("listen-timeout error", |v| v["event"] == "error");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("worker 1 (pid {})", fork["pid"]))
            && msg.contains("--listen-timeout")
            && msg.contains("killing it"),
        "{msg}"
    );
    let exit = p.wait_for("its exit", |v| v["event"] == "exit");
    assert_eq!(exit["pid"], fork["pid"]);
    assert_eq!(exit["signal"], "SIGKILL");
    // Restarted with backoff like any failure, then given up on.
    p.wait_for("a restart", |v| v["event"] == "restart");
    p.wait_for("give up", |v| v["event"] == "give_up");
    assert!(!p.wait_exit().success());
}
