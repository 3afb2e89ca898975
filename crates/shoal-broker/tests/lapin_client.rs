//! Library-level tests: an in-process broker on 127.0.0.1:0 driven by lapin
//! (the Rust AMQP client) and by raw sockets that send garbage, truncated and
//! oversized frames or go silent past the heartbeat.

mod common;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{connection, AMQPClass};
use common::*;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_confirms_prefetch_and_acks() {
    let b = TestBroker::start().await;
    let conn = lapin_conn(&b).await;
    let pubch = conn.create_channel().await.unwrap();
    pubch
        .queue_declare(
            "lapin.q".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    pubch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for i in 0..1000u32 {
        let c = pubch
            .basic_publish(
                "".into(),
                "lapin.q".into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        confirms.push(c);
    }
    for c in confirms {
        let conf = tokio::time::timeout(T, c)
            .await
            .expect("confirm timeout")
            .unwrap();
        assert!(conf.is_ack(), "{conf:?}");
    }
    let conch = conn.create_channel().await.unwrap();
    conch
        .basic_qos(50, BasicQosOptions::default())
        .await
        .unwrap();
    consume_range(&conch, "lapin.q", 0..1000, |seen, d| {
        assert_eq!(d.data, seen.to_be_bytes(), "FIFO order");
    })
    .await;
    let q = pubch
        .queue_declare(
            "lapin.q".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    conn.close(200, "bye".into()).await.unwrap();
    b.stop().await;
}

/// basic.get until a message arrives (bounded).
async fn get_one(ch: &lapin::Channel, queue: &str) -> Vec<u8> {
    for _ in 0..500 {
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if let Some(m) = got {
            return m.delivery.data;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no message on {queue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_the_offending_connection() {
    let b = TestBroker::start_with(|c| c.frame_max = 8192).await;
    let conn = lapin_conn(&b).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "survivor".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    // 1. Not AMQP at all: the broker answers with its protocol header and closes.
    let mut s = TcpStream::connect(b.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"AMQP\x00\x00\x09\x01");

    // 2. Garbage frame type after the header: 501 FRAME_ERROR.
    let (mut s, mut buf) = raw_start(b.addr).await;
    s.write_all(&[9, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4, 0xCE])
        .await
        .unwrap();
    expect_close(&mut s, &mut buf, 501).await;

    // 3. Oversized frame (declares 10 MB, frame_max is 8 KiB): 501 without reading it.
    let (mut s, mut buf) = raw_start(b.addr).await;
    s.write_all(&[1, 0, 0, 0, 0xA0, 0, 0]).await.unwrap();
    expect_close(&mut s, &mut buf, 501).await;

    // 4. Missing frame-end octet: 501.
    let (mut s, mut buf) = raw_start(b.addr).await;
    s.write_all(&[8, 0, 0, 0, 0, 0, 0, 0x00]).await.unwrap();
    expect_close(&mut s, &mut buf, 501).await;

    // 5. Truncated frame, then the client vanishes.
    let (mut s, _) = raw_start(b.addr).await;
    s.write_all(&[1, 0, 0, 0, 0, 0, 50, 0, 10]).await.unwrap();
    drop(s);

    // 6. A method on channel 1 before the handshake finished: 503.
    let (mut s, mut buf) = raw_start(b.addr).await;
    let open = AMQPFrame::Method(
        1,
        AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Open(
            amq_protocol::protocol::channel::Open {},
        )),
    );
    s.write_all(&encode(&open)).await.unwrap();
    expect_close(&mut s, &mut buf, 503).await;

    // The well-behaved connection is untouched.
    ch.basic_publish(
        "".into(),
        "survivor".into(),
        BasicPublishOptions::default(),
        b"still here",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(get_one(&ch, "survivor").await, b"still here");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_closed_after_missed_heartbeats() {
    let b = TestBroker::start().await;
    let (mut s, mut buf) = raw_open(b.addr, 1).await;
    let mut heartbeats = 0;
    // Stay silent: the broker sends heartbeats, then closes us.
    loop {
        match read_frame(&mut s, &mut buf).await {
            Some(AMQPFrame::Heartbeat) => heartbeats += 1,
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert!(heartbeats >= 1, "the broker sent no heartbeat");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_talking_outlives_the_heartbeat_timeout() {
    // Heartbeat 1 s: a silent peer is closed 2 s after it last spoke. One
    // that sends a heartbeat every 300 ms stays open well past that (the
    // broker's one read timer moves on as it hears from the peer), and the
    // broker's own heartbeats keep coming.
    let b = TestBroker::start().await;
    let (mut s, mut buf) = raw_open(b.addr, 1).await;
    let end = tokio::time::Instant::now() + Duration::from_millis(4500);
    let mut heartbeats = 0;
    while tokio::time::Instant::now() < end {
        s.write_all(&encode(&AMQPFrame::Heartbeat)).await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(300), read_frame(&mut s, &mut buf));
        match read.await {
            Err(_) => {}
            Ok(Some(AMQPFrame::Heartbeat)) => heartbeats += 1,
            Ok(other) => panic!("closed or unexpected while talking: {other:?}"),
        }
    }
    assert!(
        heartbeats >= 3,
        "only {heartbeats} heartbeats from the broker in 4.5 s"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_with_320() {
    let b = TestBroker::start().await;
    let (mut s, mut buf) = raw_open(b.addr, 0).await;
    b.shutdown.trigger();
    expect_close(&mut s, &mut buf, 320).await;
    let ok = AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    );
    s.write_all(&encode(&ok)).await.unwrap();
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_access_refused() {
    let b = TestBroker::start().await;
    let uri = format!("amqp://guest:nope@{}/%2f", b.addr);
    let r = tokio::time::timeout(
        T,
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await
    .expect("timeout");
    assert!(r.is_err(), "login with a wrong password succeeded");
    // The broker still serves others.
    let conn = lapin_conn(&b).await;
    conn.create_channel().await.unwrap();
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_exchanges_queues_and_bindings_survive_restart() {
    let b = TestBroker::start().await;
    let conn = lapin_conn(&b).await;
    let ch = conn.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (name, kind, options) in [
        ("d.src", lapin::ExchangeKind::Topic, durable),
        ("d.dst", lapin::ExchangeKind::Fanout, durable),
        (
            "d.temp",
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
        ),
    ] {
        ch.exchange_declare(name.into(), kind, options, FieldTable::default())
            .await
            .unwrap();
    }
    ch.exchange_bind(
        "d.dst".into(),
        "d.src".into(),
        "logs.#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        "d.q".into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "d.q".into(),
        "d.dst".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    let dir = b.stop_keep().await;

    let b = TestBroker::start_in(dir, |_| {}).await;
    let conn = lapin_conn(&b).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        "d.src".into(),
        "logs.error".into(),
        BasicPublishOptions::default(),
        b"routed after restart",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(get_one(&ch, "d.q").await, b"routed after restart");
    // The non-durable exchange is gone: passive declare fails with 404.
    let ch2 = conn.create_channel().await.unwrap();
    let r = ch2
        .exchange_declare(
            "d.temp".into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(r.is_err(), "non-durable exchange survived a restart");
    b.stop().await;
}

async fn publish_persistent(ch: &lapin::Channel, queue: &str, n: u32, size: usize) {
    publish_n(ch, queue, n, size, 2).await
}

async fn publish_n(ch: &lapin::Channel, queue: &str, n: u32, size: usize, mode: u8) {
    let mut confirms = Vec::new();
    for i in 0..n {
        let mut body = vec![(i % 251) as u8; size];
        body[..4].copy_from_slice(&i.to_be_bytes());
        confirms.push(
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(mode),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(tokio::time::timeout(T, c)
            .await
            .expect("confirm")
            .unwrap()
            .is_ack());
    }
}

/// Confirm mode on `ch`, and `queue` declared with `options`.
async fn confirm_and_declare(ch: &lapin::Channel, queue: &str, options: QueueDeclareOptions) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(queue.into(), options, FieldTable::default())
        .await
        .unwrap();
}

/// Consume the messages numbered `range` (publish order) from `queue` on
/// one consumer, acking each after `check(number, delivery)`.
async fn consume_range(
    ch: &lapin::Channel,
    queue: &str,
    range: std::ops::Range<u32>,
    check: impl Fn(u32, &lapin::message::Delivery),
) {
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in range {
        let d = tokio::time::timeout(T, consumer.next())
            .await
            .expect("delivery timeout")
            .expect("stream ended")
            .expect("delivery");
        check(i, &d);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
}

async fn consume_in_order(ch: &lapin::Channel, queue: &str, n: u32, size: usize) {
    consume_range(ch, queue, 0..n, |i, d| {
        assert_eq!(d.data.len(), size);
        assert_eq!(&d.data[..4], &i.to_be_bytes(), "order");
        assert!(
            d.data[4..].iter().all(|b| *b == (i % 251) as u8),
            "body of {i}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_beyond_the_queue_memory_budget_are_paged_and_read_back() {
    // 20 KB budget: with 2000 messages of 1 KB, almost all live on disk only.
    let b = TestBroker::start_with(|c| c.queue_memory_budget = 20_000).await;
    let conn = lapin_conn(&b).await;
    let ch = conn.create_channel().await.unwrap();
    confirm_and_declare(&ch, "paged", QueueDeclareOptions::durable()).await;
    publish_persistent(&ch, "paged", 2000, 1000).await;
    consume_in_order(&ch, "paged", 1000, 1000).await;
    conn.close(200, "bye".into()).await.unwrap();
    // The other half survives a restart, is recovered past the budget
    // (paged again) and is delivered intact, in order.
    let dir = b.stop_keep().await;
    let b = TestBroker::start_in(dir, |c| c.queue_memory_budget = 20_000).await;
    let conn = lapin_conn(&b).await;
    let ch = conn.create_channel().await.unwrap();
    consume_range(&ch, "paged", 1000..2000, |i, d| {
        assert_eq!(&d.data[..4], &i.to_be_bytes(), "order after restart");
        assert!(d.redelivered);
    })
    .await;
    // Transient messages past the budget are paged too (to records that a
    // restart ignores) and come back intact.
    confirm_and_declare(&ch, "tpaged", QueueDeclareOptions::default()).await;
    publish_n(&ch, "tpaged", 1000, 1000, 1).await;
    consume_in_order(&ch, "tpaged", 1000, 1000).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_admin_port_stops_the_broker_from_starting_and_names_the_address() {
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = busy.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = shoal_broker::Config {
        data_dir: dir.path().join("data"),
        admin_listen: Some(admin),
        name: format!("busy-admin-{}-{}", std::process::id(), rand_suffix()),
        ..shoal_broker::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = tokio::time::timeout(
        T,
        shoal_broker::serve(listener, config, shoal_core::Shutdown::new()),
    )
    .await
    .expect("serve returned");
    let err = result.expect_err("the broker started without its admin API");
    assert!(err.to_string().contains(&admin.to_string()), "{err}");
}

/// Bodies of every size around the places where the broker's handling
/// changes (empty, the 4 KiB reserved when a header comes, one frame's
/// payload at an 8 KiB frame_max, many frames) reach a consumer byte for
/// byte, with their properties as sent, and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_across_frame_and_reservation_boundaries_arrive_whole() {
    let b = TestBroker::start_with(|c| c.frame_max = 8192).await;
    let conn = lapin_conn(&b).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "sizes".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let frame_body = 8192 - 8;
    let sizes = [
        0,
        1,
        7,
        4095,
        4096,
        4097,
        frame_body - 1,
        frame_body,
        frame_body + 1,
        2 * frame_body,
        20_000,
        100_003,
    ];
    let body = |i: usize, n: usize| -> Vec<u8> {
        (0..n).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
    };
    for (i, &n) in sizes.iter().enumerate() {
        let props = BasicProperties::default()
            .with_message_id(format!("m{i}").into())
            .with_content_type("application/octet-stream".into());
        let c = ch
            .basic_publish(
                "".into(),
                "sizes".into(),
                BasicPublishOptions::default(),
                &body(i, n),
                props,
            )
            .await
            .unwrap();
        assert!(tokio::time::timeout(T, c).await.unwrap().unwrap().is_ack());
    }
    let mut consumer = ch
        .basic_consume(
            "sizes".into(),
            "sizes-c".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for (i, &n) in sizes.iter().enumerate() {
        let d = tokio::time::timeout(T, consumer.next())
            .await
            .expect("delivery timeout")
            .unwrap()
            .unwrap();
        let id = d.properties.message_id().as_ref().map(|s| s.to_string());
        assert_eq!(id.as_deref(), Some(format!("m{i}").as_str()), "order");
        assert_eq!(
            d.properties
                .content_type()
                .as_ref()
                .map(|s| s.to_string())
                .as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(d.data.len(), n, "size of message {i}");
        assert!(d.data == body(i, n), "bytes of message {i} ({n} B)");
    }
    b.stop().await;
}
