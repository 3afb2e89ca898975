//! amqplib (node) drives the broker: topic routing, consume/ack, confirms with
//! ack and nack, nack/requeue and dead-lettering, prefetch round-robin,
//! headers exchange, and channel errors (404, 406, 403) that leave the
//! connection usable.

mod broker_support;
use broker_support::*;

#[test]
fn amqplib_feature_suite() {
    let out = client_on_fresh_broker("amqplib", &[], node, "amqplib_suite.js");
    let checks = [
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
        "direct-reply-to",
    ];
    assert_checks(&out, &checks);
    assert!(out.contains("ALL OK"), "{out}");
}
