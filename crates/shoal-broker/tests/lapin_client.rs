//! Library-level tests: an in-process broker on 127.0.0.1:0 driven by lapin
//! (the Rust AMQP client) and by raw sockets that send garbage, truncated and
//! oversized frames or go silent past the heartbeat.

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{connection, AMQPClass};
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use shoal_broker::Config;
use shoal_core::Shutdown;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(30);

struct TestBroker {
    addr: SocketAddr,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    async fn start_with(f: impl FnOnce(&mut Config)) -> TestBroker {
        Self::start_in(tempfile::tempdir().expect("tempdir"), f).await
    }

    async fn start_in(dir: tempfile::TempDir, f: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = Config {
            data_dir: dir.path().join("data"),
            admin_listen: None,
            name: format!("lapin-test-{}-{}", std::process::id(), rand_suffix()),
            ..Config::default()
        };
        f(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = shoal_broker::serve(listener, config, s).await {
                panic!("broker failed: {e}");
            }
        });
        TestBroker {
            addr,
            shutdown,
            task: Some(task),
            _dir: dir,
        }
    }

    fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    async fn stop(self) {
        self.stop_keep().await;
    }

    /// Stop and hand back the data directory (for a restart).
    async fn stop_keep(mut self) -> tempfile::TempDir {
        self.shutdown.trigger();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(T, t).await;
        }
        let placeholder = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self._dir, placeholder)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn rand_suffix() -> u64 {
    use std::time::SystemTime;
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn lapin_conn(b: &TestBroker) -> Connection {
    tokio::time::timeout(
        T,
        Connection::connect(&b.uri(), ConnectionProperties::default()),
    )
    .await
    .expect("connect timeout")
    .expect("connect")
}

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

fn encode(f: &AMQPFrame) -> Vec<u8> {
    gen_frame(f)(WriteContext::from(Vec::new()))
        .expect("encode")
        .write
}

async fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<AMQPFrame> {
    loop {
        if let Ok((rest, f)) = parse_frame(&buf[..]) {
            let used = buf.len() - rest.len();
            buf.drain(..used);
            return Some(f);
        }
        let mut tmp = [0u8; 4096];
        let n = tokio::time::timeout(T, s.read(&mut tmp)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Connect, send the protocol header, read connection.start.
async fn raw_start(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    let mut buf = Vec::new();
    match read_frame(&mut s, &mut buf).await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(st)))) => {
            assert!(st.mechanisms.to_string().contains("PLAIN"));
        }
        other => panic!("expected connection.start, got {other:?}"),
    }
    (s, buf)
}

async fn expect_close(s: &mut TcpStream, buf: &mut Vec<u8>, code: u16) {
    loop {
        match read_frame(s, buf).await {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
                assert_eq!(c.reply_code, code, "{c:?}");
                return;
            }
            Some(_) => continue,
            None => panic!("connection ended without connection.close {code}"),
        }
    }
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

/// Handshake by hand (PLAIN guest/guest, the given heartbeat), up to open-ok.
async fn raw_open(addr: SocketAddr, heartbeat: u16) -> (TcpStream, Vec<u8>) {
    let (mut s, mut buf) = raw_start(addr).await;
    let start_ok = AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
    );
    s.write_all(&encode(&start_ok)).await.unwrap();
    match read_frame(&mut s, &mut buf).await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t)))) => {
            assert_eq!(t.frame_max, 131072);
        }
        other => panic!("expected tune, got {other:?}"),
    }
    let tune_ok = AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 16,
            frame_max: 65536,
            heartbeat,
        })),
    );
    let open = AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    );
    s.write_all(&encode(&tune_ok)).await.unwrap();
    s.write_all(&encode(&open)).await.unwrap();
    loop {
        match read_frame(&mut s, &mut buf).await {
            Some(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)),
            )) => break,
            Some(AMQPFrame::Heartbeat) => {}
            other => panic!("expected open-ok, got {other:?}"),
        }
    }
    (s, buf)
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
