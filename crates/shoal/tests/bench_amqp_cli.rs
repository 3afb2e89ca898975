//! `shoal bench amqp` names the broker it is about to load (its address and
//! the product and version from `connection.start`) before any load, and
//! has no default target: without `-H` it refuses to run.

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
