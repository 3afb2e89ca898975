//! aio-pika (PyPI) against the `shoal broker` binary: its RPC pattern
//! (`aio_pika.patterns.RPC`: concurrent calls, remote exceptions, expired
//! calls dead-lettered back through the RPC's headers exchange, a named RPC
//! exchange, close with unbind) and `QueueIterator` (order, idle timeout,
//! reject-requeue redelivery, consumer cancelled on exit); and the broker
//! behaviours aio-pika's own test suite meets, as RabbitMQ 3.x has them
//! (errors, their reply codes and RabbitMQ's words, TTL 0, x-expires
//! leases, channel_max).

mod broker_support;
use broker_support::*;

#[test]
fn aiopika_rpc_and_queue_iterator_patterns() {
    let out = client_on_fresh_broker("aiopika", &[], python, "aiopika_patterns.py");
    assert_checks(
        &out,
        &[
            "rpc-call",
            "rpc-error",
            "rpc-expired",
            "rpc-close",
            "rpc-named-exchange",
            "queue-iterator",
            "iterator-timeout",
            "iterator-requeue",
            "iterator-cancels",
        ],
    );
    assert!(out.contains("ALL OK"), "{out}");
}

#[test]
fn aiopika_broker_semantics_as_rabbitmq() {
    let out = client_on_fresh_broker("aiopika-sem", &[], python, "aiopika_semantics.py");
    assert_checks(
        &out,
        &[
            "server-copyright",
            "user-id-own",
            "user-id-spoofed",
            "amq-gen-redeclare",
            "exclusive-flag-locked",
            "bad-arg x-max-priority",
            "bad-arg x-dead-letter-routing-key",
            "bad-arg x-queue-mode",
            "bad-arg x-overflow",
            "bad-arg x-max-length",
            "bad-arg x-expires",
            "quorum-arg-on-classic",
            "delete-if-empty",
            "ttl-zero",
            "expiration-invalid",
            "passive-default-exchange",
            "delete-system-exchange",
            "exchange-internal-equivalence",
            "exchange-args-equivalence",
            "alternate-exchange-type",
            "consumer-priority-type",
            "expires-renewed-by-passive-declare",
            "expires-after-lease",
            "channel-max-counts-open-channels",
        ],
    );
    assert!(out.contains("ALL OK"), "{out}");
}
