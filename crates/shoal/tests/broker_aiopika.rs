//! aio-pika (PyPI) against the `shoal broker` binary: its RPC pattern
//! (`aio_pika.patterns.RPC`: concurrent calls, remote exceptions, expired
//! calls dead-lettered back through the RPC's headers exchange, a named RPC
//! exchange, close with unbind) and `QueueIterator` (order, idle timeout,
//! reject-requeue redelivery, consumer cancelled on exit).

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
