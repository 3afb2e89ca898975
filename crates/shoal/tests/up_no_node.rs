//! `shoal up` on a machine without Node, or whose Node cannot load the
//! `amqplib` module (the default run outside a checkout): the default
//! topology (printed by `--print-default`, on free ports) runs Shoal's
//! built-in HTTP worker, the banner says why, and the chapter still works
//! end to end: both clusters
//! answer through the proxy, every request counts exactly once at the
//! collector and publishes one event to the broker, and SIGTERM stops all.

mod cluster_support;
mod up_support;
use cluster_support::{alive, get, kill, shoal, TempDir};
use up_support::{free_tcp, free_udp, pid_of, Up, T};

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn without_node_the_default_runs_the_built_in_worker() {
    // A PATH with nothing on it: no node.
    let empty = TempDir::new();
    run_default_expecting_built_in(
        &[("PATH", empty.path().as_os_str())],
        |t| t,
        "node is not on PATH",
    );
}

/// Before, Node workers that could not load amqplib answered and counted
/// but published nothing, so the chapter's message queue stayed empty.
#[test]
fn without_amqplib_the_default_runs_the_built_in_worker() {
    if Command::new("node").arg("-v").output().is_err() {
        eprintln!("skipped: node is not installed");
        return;
    }
    let nowhere = TempDir::new();
    let nowhere = nowhere.path().join("node_modules").display().to_string();
    run_default_expecting_built_in(
        &[],
        move |t| {
            t.replace(
                "NODE_PATH = \"tests/node/node_modules\"",
                &format!("NODE_PATH = {nowhere:?}"),
            )
        },
        "node cannot load the amqplib module",
    );
}

/// Run the printed default on free ports (changed by `tweak`, with `env`),
/// expect the built-in worker and `why` in the banner, and check the
/// chapter end to end.
fn run_default_expecting_built_in(
    env: &[(&str, &std::ffi::OsStr)],
    tweak: impl FnOnce(String) -> String,
    why: &str,
) {
    let out = Command::new(shoal())
        .args(["up", "--print-default"])
        .output()
        .unwrap();
    let data = TempDir::new();
    let (amqp, udp, metrics) = (free_tcp(), free_udp(), free_tcp());
    let (web1, web2, proxy, dash) = (free_tcp(), free_tcp(), free_tcp(), free_tcp());
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace("127.0.0.1:15672", "")
        .replace("127.0.0.1:5672", &format!("127.0.0.1:{amqp}"))
        .replace("127.0.0.1:8125", &format!("127.0.0.1:{udp}"))
        .replace("127.0.0.1:9102", &format!("127.0.0.1:{metrics}"))
        .replace("127.0.0.1:8090", &format!("127.0.0.1:{dash}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{proxy}"))
        .replace("PORT = \"8001\"", &format!("PORT = \"{web1}\""))
        .replace("PORT = \"8002\"", &format!("PORT = \"{web2}\""))
        .replace(
            "shoal-up-data/broker",
            &data.path().join("broker").display().to_string(),
        );
    let text = tweak(text);
    let mut up = Up::spawn_with_env(&text, env);
    up.wait_running();
    let log = up.log();
    assert!(log.contains(why), "{log}");
    assert!(log.contains("built-in HTTP worker"), "{log}");

    // Both clusters answer through the proxy, like web.js does.
    let addr = format!("127.0.0.1:{proxy}");
    let mut servers = BTreeSet::new();
    let mut pids = BTreeSet::new();
    let n = 40u64;
    for _ in 0..n {
        let (code, body) = get(&addr, "/").expect("GET through the proxy");
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("Hello from web"), "{body}");
        servers.insert(body.split_whitespace().nth(2).unwrap().to_string());
        pids.insert(pid_of(&body).unwrap());
    }
    assert_eq!(
        servers.into_iter().collect::<Vec<_>>(),
        ["web1", "web2"],
        "{}",
        up.log()
    );
    // (The proxy keeps its upstream connections alive, so not every worker
    // need answer; one per cluster at least.)
    assert!(pids.len() >= 2, "{pids:?}");

    // Each request counted once at the collector, and published once.
    let deadline = Instant::now() + T;
    let (mut counted, mut published) = (0.0, 0);
    while Instant::now() < deadline {
        if let Some((200, body)) = get(&format!("127.0.0.1:{metrics}"), "/metrics") {
            counted = body
                .lines()
                .filter(|l| l.starts_with("up_requests_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
        }
        let st: serde_json::Value =
            serde_json::from_slice(&up.ctl(&["--json", "status"]).stdout).unwrap_or_default();
        published = st["up"]["parts"][0]["overview"]["message_stats"]["publish"]
            .as_u64()
            .unwrap_or(0);
        if counted >= n as f64 && published >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(counted, n as f64, "{}", up.log());
    assert_eq!(published, n, "{}", up.log());

    kill(up.child.id(), "TERM");
    assert!(up.wait_exit().success(), "{}", up.log());
    for pid in pids {
        assert!(!alive(pid), "worker {pid} still runs");
    }
    std::net::TcpListener::bind(("127.0.0.1", web1)).unwrap();
}
