//! What PM2's users rely on, under `shoal cluster`: memory limits that
//! replace a worker without a failed request, `ctl restart`, `scale +N/-N`,
//! `signal`, the last exit reason in `status`, and flag mistakes caught.

mod cluster_support;

use cluster_support::*;
use serde_json::Value;

#[test]
fn a_worker_over_max_memory_is_replaced_without_a_failed_request() {
    let dir = TempDir::new();
    let port = free_port();
    // Worker 1 leaks 8 MiB every 100 ms once it serves; worker 2 does not.
    let script = write_script(
        dir.path(),
        "leak.js",
        &format!(
            r#"
const cluster = require('cluster');
const hoard = [];
require('http').createServer((q, r) => r.end('w' + cluster.worker.id)).listen({port}, '127.0.0.1');
if (cluster.worker.id === 1 && !process.env.CALM) {{
  setInterval(() => hoard.push(Buffer.alloc(8 << 20, 1)), 100);
}}
"#
        ),
    );
    let mut p = Primary::start(
        "leaky",
        &["-w", "2", "--max-memory", "150M", "--grace", "3s"],
        &["node", &script],
    );
    p.all_online(2);
    let addr = format!("127.0.0.1:{port}");
    // `online` comes from --ready's delay, which a loaded machine's Node can
    // outrun before it listens: start the load once it serves.
    wait_until("the app serves", || get(&addr, "/").is_some());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = get_until(addr.clone(), stop.clone());
    let e = p.wait_for("max-memory error", |v| {
        v["event"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("--max-memory"))
    });
    assert_eq!(e["id"], 1, "{e}");
    p.wait_for("reload done", |v| {
        v["event"] == "reload" && v["phase"] == "done"
    });
    let old = e["message"].as_str().unwrap().to_string();
    p.wait_for("the old worker's exit", |v| {
        v["event"] == "exit" && v["id"] == 1 && old.contains(&format!("pid {}", v["pid"]))
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 10, "{ok}");
    let st = p.ctl_json(&["status"]);
    let w1 = st["status"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == 1 && w["state"] != "stopping")
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        w1["last_exit"]
            .as_str()
            .is_some_and(|s| s.contains("over --max-memory")),
        "{st}"
    );
    // The replacement leaks too, so the count only grows from here.
    assert!(
        st["status"]["memory_replacements"].as_u64() >= Some(1),
        "{st}"
    );
    assert_eq!(st["status"]["max_memory_bytes"], 150 << 20, "{st}");
    let table = String::from_utf8_lossy(&p.ctl(&["status"]).stdout).to_string();
    assert!(
        table.contains("max-memory 150.0 MiB per worker: ")
            && table.contains(" replaced for going over it"),
        "{table}"
    );
}

#[test]
fn ctl_restart_scale_by_and_signal() {
    let dir = TempDir::new();
    let script = write_script(
        dir.path(),
        "sig.js",
        r#"
process.on('SIGUSR2', () => console.log('worker ' + process.env.SHOAL_WORKER_ID + ' got USR2'));
process.send('ready');
setInterval(() => {}, 1000);
"#,
    );
    let mut p = Primary::start("pm", &["-w", "2", "--ready", "ipc"], &["node", &script]);
    p.all_online(2);
    let before = pids(&p);
    assert_eq!(before.len(), 2);

    assert_eq!(p.ctl_json(&["scale", "+1"])["workers"], 3);
    wait_until("3 workers", || pids(&p).len() == 3);
    assert_eq!(p.ctl_json(&["scale", "-2"])["workers"], 1);
    wait_until("1 worker", || {
        p.ctl_json(&["status"])["status"]["workers"]
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    let bad = p.ctl(&["scale", "-5"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least 1"));
    assert_eq!(p.ctl_json(&["scale", "2"])["workers"], 2);
    wait_until("2 workers", || pids(&p).len() == 2);

    assert_eq!(p.ctl_json(&["signal", "USR2"])["signalled"], 2);
    p.wait_log("worker 1 got USR2");
    p.wait_log("worker 2 got USR2");

    let now = pids(&p);
    assert_eq!(p.ctl_json(&["restart"])["restarting"], 2);
    wait_until("every worker restarted", || {
        let after = pids(&p);
        after.len() == 2 && after.iter().all(|(id, pid)| !now.contains(&(*id, *pid)))
    });
    let st = p.ctl_json(&["status"]);
    for w in st["status"]["workers"].as_array().unwrap() {
        assert!(
            w["last_exit"]
                .as_str()
                .is_some_and(|s| s.contains("ctl restart")),
            "{st}"
        );
    }
    let table = String::from_utf8_lossy(&p.ctl(&["status"]).stdout).into_owned();
    assert!(
        table.contains("LAST EXIT") && table.contains("ctl restart"),
        "{table}"
    );
}

#[test]
fn a_mistyped_flag_is_a_flag_error_not_a_command() {
    let out = std::process::Command::new(shoal())
        .args(["cluster", "--worker", "2", "--", "node", "app.js"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown option --worker"), "{err}");
    assert!(!err.contains("not found in PATH"), "{err}");
}

#[test]
fn restart_every_replaces_the_workers_on_a_period() {
    let dir = TempDir::new();
    let script = write_script(
        dir.path(),
        "idle.js",
        "process.send('ready'); setInterval(() => {}, 1000);",
    );
    let mut p = Primary::start(
        "periodic",
        &["-w", "2", "--ready", "ipc", "--restart-every", "1s"],
        &["node", &script],
    );
    p.all_online(2);
    let first = pids(&p);
    for _ in 0..2 {
        p.wait_for("a periodic reload", |v| {
            v["event"] == "reload" && v["phase"] == "done"
        });
    }
    wait_until("every worker replaced", || {
        let now = pids(&p);
        now.len() == 2 && now.iter().all(|w| !first.contains(w))
    });
}

#[test]
fn print_systemd_unit_runs_the_same_command_line() {
    let out = std::process::Command::new(shoal())
        .args([
            "cluster",
            "-w",
            "2",
            "--name",
            "web",
            "--print-systemd-unit",
            "--",
            "node",
            "my app.js",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let unit = String::from_utf8_lossy(&out.stdout);
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart: {unit}"));
    assert!(exec.starts_with(shoal()), "{exec}");
    assert!(
        exec.ends_with("cluster -w 2 --name web -- node \"my app.js\""),
        "{exec}"
    );
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "{unit}"
    );
    assert!(unit.contains("[Install]"), "{unit}");
}
