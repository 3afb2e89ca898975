//! `shoal bench amqp` names the broker it is about to load (its address and
//! the product and version from `connection.start`) before any load, and
//! has no default target: without `-H` it refuses to run. A broker started
//! with `--sched-batch` runs every thread under SCHED_BATCH and carries the
//! same load.

mod broker_support;
use broker_support::{Broker, TempDir};

use std::process::Command;

#[test]
fn it_names_the_broker_before_loading_it() {
    let data = TempDir::new("bench-names");
    let b = Broker::start(data.path());
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["bench", "amqp", "-H", &b.addr(), "-x", "1", "-y", "1"])
        .args(["-s", "16", "-a", "-z", "1", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let want = format!("loading {} (Shoal {})", b.addr(), env!("CARGO_PKG_VERSION"));
    assert!(stderr.contains(&want), "no {want:?} in:\n{stderr}");
    // --json output stays one JSON document.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["published"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn without_a_host_it_refuses_to_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["bench", "amqp", "-x", "1", "-z", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--host <HOST:PORT>"), "{stderr}");
}

#[test]
fn a_broker_that_is_not_there_is_named_in_the_error() {
    let port = broker_support::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "bench",
            "amqp",
            "-H",
            &format!("127.0.0.1:{port}"),
            "-z",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot load 127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// The scheduling policy of each thread of `pid` (field 41 of its stat).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let stat = std::fs::read_to_string(t.join("stat")).unwrap();
        let (head, rest) = stat.rsplit_once(") ").unwrap();
        let comm = head.split_once(" (").unwrap().1.to_string();
        // Fields after the command name start at field 3.
        let policy = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        out.push((comm, policy));
    }
    out
}

#[test]
fn sched_batch_puts_every_broker_thread_under_sched_batch_and_it_carries_the_load() {
    const SCHED_BATCH: u32 = 3;
    let data = TempDir::new("bench-sched-batch");
    let b = Broker::start_with(data.path(), &["--sched-batch"]);
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["bench", "amqp", "-H", &b.addr(), "-x", "1", "-y", "1"])
        .args(["-s", "16", "-p", "-c", "10", "-z", "1", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (published, consumed) = (report["published"].as_u64(), report["consumed"].as_u64());
    assert!(published.unwrap() > 0 && published == consumed, "{report}");
    // After the load: the store's syncer and the blocking pool exist by now.
    let pid = b.child.as_ref().unwrap().id();
    let policies = thread_policies(pid);
    assert!(policies.len() >= 3, "{policies:?}");
    assert!(
        policies.iter().all(|(_, p)| *p == SCHED_BATCH),
        "threads not under SCHED_BATCH: {policies:?}"
    );
    assert!(b.log_text().contains("SCHED_BATCH"), "{}", b.log_text());
}
