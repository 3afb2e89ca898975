//! pika (RabbitMQ's Python client) drives every broker feature against the
//! `shoal broker` binary: exchange types, e2e bindings, alternate exchanges,
//! mandatory/return, confirms (ack and nack), TTL, dead-lettering with
//! x-death, length limits, priorities, prefetch, recover, tx (checked and routed at publish, all or nothing at commit), purge/delete,
//! auto-delete, x-expires, single active consumer, cancel notification,
//! big messages, and the AMQP error codes (403, 404, 405, 406, 530).

mod broker_support;
use broker_support::*;

const CHECKS: &[&str] = &[
    "default-exchange-get",
    "get-empty",
    "exchange-types",
    "headers-x-match",
    "topic-many-hashes",
    "predeclared-exchanges",
    "exchange-to-exchange",
    "alternate-exchange",
    "mandatory-return",
    "publisher-confirm",
    "persistent-confirm-trickle",
    "reject-publish-nack",
    "max-length-drop-head",
    "max-length-bytes",
    "ttl-dead-letter-x-death",
    "per-message-expiration",
    "nack-requeue-redelivered",
    "reject-dead-letter",
    "ack-multiple",
    "unknown-delivery-tag-406",
    "unknown-delivery-tag-multiple-406",
    "qos-prefetch",
    "recover",
    "recover-no-requeue-540",
    "close-requeues",
    "priority",
    "tx",
    "tx-commit-all-or-nothing",
    "tx-publish-refused-at-publish",
    "tx-publish-routed-at-publish",
    "delete-if-empty-406",
    "purge-and-delete",
    "delete-if-unused-406",
    "passive-queue-404",
    "passive-exchange-404",
    "publish-missing-exchange-404",
    "inequivalent-exchange-406",
    "inequivalent-queue-args-406",
    "reserved-amq-403",
    "exclusive-queue-405",
    "exclusive-consumer-403",
    "consume-missing-404",
    "consumer-cancel-notify",
    "single-active-consumer",
    "x-expires",
    "auto-delete-queue",
    "large-message",
    "requeue-keeps-original-order",
    "unbind-missing-ok",
    "redeclare-equivalence-406",
    "topic-edges",
    "queue-type-classic-only",
    "consumer-priorities",
    "properties-as-sent",
    "direct-reply-to",
    "bad-login-refused",
    "unknown-vhost-530",
];

#[test]
fn pika_feature_suite() {
    let out = client_on_fresh_broker("pika", &[], python, "pika_suite.py");
    assert_checks(&out, CHECKS);
    assert!(out.contains("ALL OK"), "{out}");
}

#[test]
fn memory_alarm_blocks_and_unblocks_publishers() {
    let cfg = fixture("alarm.toml");
    let config = ["--config", cfg.to_str().expect("utf-8 path")];
    let out = client_on_fresh_broker("alarm", &config, python, "pika_blocked.py");
    for l in ["ok blocked", "ok unblocked", "ok resumed"] {
        assert!(out.lines().any(|x| x == l), "{l} missing:\n{out}");
    }
}

#[test]
fn users_vhosts_and_permissions_from_the_example_config() {
    let cfg = workspace().join("examples/broker.toml");
    let config = ["--config", cfg.to_str().expect("utf-8 path")];
    let out = client_on_fresh_broker("perms", &config, python, "pika_perms.py");
    let checks = [
        "app-configures-app-prefix",
        "app-refused-outside-prefix",
        "app-publishes-and-reads",
        "app-no-access-to-default-vhost",
        "guest-no-access-to-staging",
        "guest-default-vhost",
    ];
    assert_checks(&out, &checks);
}

#[test]
fn the_readmes_work_queue_example_runs_as_written() {
    let dir = TempDir::new("work-queue");
    let b = Broker::start(dir.path());
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(workspace().join("examples/broker/work_queue.py"))
        .arg(b.addr());
    let out = check(
        &run_with_timeout(cmd, std::time::Duration::from_secs(60)),
        "examples/broker/work_queue.py",
        &b,
    );
    assert!(out.contains("5 tasks stored"), "{out}");
    assert!(out.contains("working on task 4"), "{out}");
}
