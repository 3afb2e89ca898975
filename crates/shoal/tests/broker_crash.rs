//! Durability: amqplib publishes persistent messages with confirms to a
//! durable queue; the broker is killed with SIGKILL mid-stream, restarted on
//! the same data directory, and every confirmed message must be delivered
//! exactly once (none twice). Also: a graceful SIGTERM keeps durable
//! definitions and unconfirmed-but-stored messages.

mod broker_support;
use broker_support::*;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn consume_all(b: &Broker) -> (Vec<u64>, String) {
    let out = check(
        &node("crash_consume.js", b.port, &[]),
        "crash_consume.js",
        b,
    );
    let ids = out
        .lines()
        .filter_map(|l| l.strip_prefix("m "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    (ids, out)
}

#[test]
fn kill_9_mid_stream_loses_no_confirmed_message() {
    let dir = TempDir::new("crash");
    let mut b = Broker::start(dir.path());
    let mut publisher = Command::new("node")
        .arg(fixture("crash_publish.js"))
        .arg(b.port.to_string())
        .arg("200000")
        .env("NODE_PATH", workspace().join("tests/node/node_modules"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn publisher");
    let stdout = publisher.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut confirmed = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    // Kill the broker once a few thousand messages are confirmed.
    while confirmed.len() < 3000 && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => {
                if let Some(id) = l.strip_prefix("c ").and_then(|x| x.parse::<u64>().ok()) {
                    confirmed.insert(id);
                }
            }
            Err(_) => break,
        }
    }
    assert!(
        confirmed.len() >= 3000,
        "only {} confirmed\n{}",
        confirmed.len(),
        b.log_text()
    );
    b.kill();
    // Whatever the publisher printed before the kill was confirmed too.
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
        if let Some(id) = l.strip_prefix("c ").and_then(|x| x.parse::<u64>().ok()) {
            confirmed.insert(id);
        }
    }
    let _ = publisher.kill();
    let _ = publisher.wait();

    let b2 = Broker::start(dir.path());
    let (ids, out) = consume_all(&b2);
    let got: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(got.len(), ids.len(), "a message was delivered twice");
    let missing: Vec<_> = confirmed.difference(&got).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} confirmed messages lost, e.g. {missing:?}; got {} (tail: {})",
        confirmed.difference(&got).count(),
        ids.len(),
        out.lines().last().unwrap_or("")
    );
}

#[test]
fn sigterm_keeps_durable_definitions_and_messages() {
    let dir = TempDir::new("term");
    let mut b = Broker::start(dir.path());
    let out = check(
        &node("crash_publish.js", b.port, &["500"]),
        "crash_publish.js",
        &b,
    );
    assert!(out.contains("done"));
    assert!(
        b.terminate(),
        "broker did not exit cleanly on SIGTERM\n{}",
        b.log_text()
    );
    let b2 = Broker::start(dir.path());
    let (ids, _) = consume_all(&b2);
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..500).collect::<Vec<u64>>());
    // Acked messages are gone after another restart.
    drop(b2);
    let b3 = Broker::start(dir.path());
    let (ids, _) = consume_all(&b3);
    assert!(ids.is_empty(), "acked messages came back: {}", ids.len());
}
