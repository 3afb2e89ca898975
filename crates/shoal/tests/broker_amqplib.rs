//! amqplib (node) drives the broker: topic routing, consume/ack, confirms with
//! ack and nack, nack/requeue and dead-lettering, prefetch round-robin,
//! headers exchange, and channel errors (404, 406, 403) that leave the
//! connection usable.

mod broker_support;
use broker_support::*;

#[test]
fn amqplib_feature_suite() {
    let dir = TempDir::new("amqplib");
    let b = Broker::start(dir.path());
    let out = check(
        &node("amqplib_suite.js", b.port, &[]),
        "amqplib_suite.js",
        &b,
    );
    for c in [
        "topic-consume-ack",
        "confirm-ack-and-nack",
        "nack-requeue",
        "nack-dead-letter",
        "prefetch-round-robin",
        "headers-any",
        "check-queue-404",
        "inequivalent-406",
        "amq-prefix-403",
        "unknown-tag-406",
        "connection-survives",
    ] {
        assert!(
            out.lines().any(|l| l == format!("ok {c}")),
            "check {c} missing:\n{out}"
        );
    }
    assert!(out.contains("ALL OK"), "{out}");
}
