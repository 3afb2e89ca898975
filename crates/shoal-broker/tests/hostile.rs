//! Hostile clients against an in-process broker: frames built by hand that
//! nest field tables thousands deep, clients that stall the handshake, and
//! clients that pipeline without reading. Each must cost the broker one
//! connection at most; everyone else keeps being served.

mod common;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, channel, AMQPClass};
use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A field table that nests `depth` tables: `{k: {k: ... {}}}`.
fn nested_tables(depth: usize) -> Vec<u8> {
    let mut t = vec![0, 0, 0, 0];
    for _ in 1..depth {
        let mut body = vec![1, b'k', b'F'];
        body.extend_from_slice(&t);
        t = (body.len() as u32).to_be_bytes().to_vec();
        t.extend_from_slice(&body);
    }
    t
}

/// A field table holding one array that nests `depth` arrays.
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut v = vec![b'A', 0, 0, 0, 0];
    for _ in 1..depth {
        let mut next = vec![b'A'];
        next.extend_from_slice(&(v.len() as u32).to_be_bytes());
        next.extend_from_slice(&v);
        v = next;
    }
    let mut body = vec![1, b'k'];
    body.extend_from_slice(&v);
    let mut t = (body.len() as u32).to_be_bytes().to_vec();
    t.extend_from_slice(&body);
    t
}

/// One frame: type, channel, payload, frame-end.
fn frame(kind: u8, ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&ch.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

/// connection.start-ok with the given client-properties table, PLAIN guest.
fn start_ok(client_properties: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 10, 0, 11];
    p.extend_from_slice(client_properties);
    p.extend_from_slice(b"\x05PLAIN");
    let resp = b"\0guest\0guest";
    p.extend_from_slice(&(resp.len() as u32).to_be_bytes());
    p.extend_from_slice(resp);
    p.extend_from_slice(b"\x05en_US");
    frame(1, 0, &p)
}

/// The broker still serves a real client end to end.
async fn still_serves(b: &TestBroker, queue: &str) {
    let conn = lapin_conn(b).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        b"still here",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(
        T,
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .unwrap()
    .expect("a message");
    assert_eq!(got.delivery.data, b"still here");
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_client_properties_close_that_connection_with_501_before_login() {
    let b = TestBroker::start().await;
    // 2,000 nested tables (14 KB) and 5,000 nested arrays (25 KB): both were
    // enough to overflow a runtime worker's stack and abort the broker.
    for props in [nested_tables(2_000), nested_arrays(5_000)] {
        let (mut s, mut buf) = raw_start(b.addr).await;
        s.write_all(&start_ok(&props)).await.unwrap();
        expect_close(&mut s, &mut buf, 501).await;
    }
    // Sixty-four levels are allowed: the login goes on to connection.tune.
    let (mut s, mut buf) = raw_start(b.addr).await;
    s.write_all(&start_ok(&nested_tables(64))).await.unwrap();
    match read_frame(&mut s, &mut buf).await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(c))) => {
            assert!(format!("{c:?}").starts_with("Tune"), "{c:?}")
        }
        other => panic!("expected connection.tune, got {other:?}"),
    }
    still_serves(&b, "after-nested-login").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_message_headers_close_that_connection_with_501() {
    let b = TestBroker::start().await;
    let (mut s, mut buf) = raw_channel(&b).await;
    let nested = nested_tables(3_000);
    s.write_all(&publish_start("nowhere", false, 0, Some(&nested)))
        .await
        .unwrap();
    expect_close(&mut s, &mut buf, 501).await;
    still_serves(&b, "after-nested-headers").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_nested_within_the_limit_reach_the_consumer_unchanged() {
    let b = TestBroker::start().await;
    let conn = lapin_conn(&b).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "nested".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // An x-death-like shape, ten levels deep.
    let mut inner = FieldTable::default();
    inner.insert("count".into(), AMQPValue::LongLongInt(3));
    for level in 0..9 {
        let mut outer = FieldTable::default();
        outer.insert(format!("level{level}").into(), AMQPValue::FieldTable(inner));
        inner = outer;
    }
    let props = BasicProperties::default().with_headers(inner.clone());
    ch.basic_publish(
        "".into(),
        "nested".into(),
        BasicPublishOptions::default(),
        b"deep",
        props,
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(
        T,
        ch.basic_get("nested".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .unwrap()
    .expect("a message");
    assert_eq!(got.delivery.properties.headers().as_ref(), Some(&inner));
    b.stop().await;
}

/// Trickle `bytes` one at a time, `gap` apart, until the broker closes the
/// socket; returns how long that took, or None if it was still open at `limit`.
async fn trickle_until_closed(
    s: &mut tokio::net::TcpStream,
    bytes: &[u8],
    gap: Duration,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = tokio::time::Instant::now();
    let mut i = 0;
    let mut sink = [0u8; 4096];
    while started.elapsed() < limit {
        if i < bytes.len() && s.write_all(&bytes[i..=i]).await.is_err() {
            return Some(started.elapsed());
        }
        i += 1;
        match tokio::time::timeout(gap, s.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_the_handshake_is_closed_at_handshake_timeout() {
    let b = TestBroker::start_with(|c| c.handshake_timeout = Duration::from_secs(1)).await;
    // After the protocol header: start-ok one byte at a time. Each byte used
    // to restart a 60 s read timer, so such a client was never closed.
    let (mut s, _) = raw_start(b.addr).await;
    let login = start_ok(&[0, 0, 0, 0]);
    let took = trickle_until_closed(&mut s, &login, Duration::from_millis(200), T).await;
    assert!(took.is_some(), "still open after {T:?}");
    // Before the protocol header is complete, the same deadline applies.
    let mut s = tokio::net::TcpStream::connect(b.addr).await.unwrap();
    let took = trickle_until_closed(&mut s, b"AMQP", Duration::from_millis(200), T).await;
    assert!(took.is_some(), "still open after {T:?}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stuck_in_the_handshake_do_not_lock_out_real_clients() {
    let b = TestBroker::start_with(|c| {
        c.handshake_timeout = Duration::from_secs(1);
        c.max_connections = 4;
    })
    .await;
    // Fill every slot with a client that sent the header and went quiet.
    let mut stuck = Vec::new();
    for _ in 0..4 {
        stuck.push(raw_start(b.addr).await);
    }
    // A real client gets in once the stuck ones have been closed.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            lapin::Connection::connect(&b.uri(), lapin::ConnectionProperties::default()),
        )
        .await;
        if let Ok(Ok(conn)) = attempt {
            let _ = conn.close(200, "bye".into()).await;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a real client was locked out by four stuck handshakes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stuck);
    b.stop().await;
}

/// basic.publish on channel 1, then a content header announcing `size`,
/// with only the `headers` property when `headers` (a table) is given.
fn publish_start(routing_key: &str, mandatory: bool, size: u64, headers: Option<&[u8]>) -> Vec<u8> {
    let publish = AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: routing_key.into(),
            mandatory,
            immediate: false,
        })),
    );
    let mut out = encode(&publish);
    let mut h = vec![0, 60, 0, 0];
    h.extend_from_slice(&size.to_be_bytes());
    let flags: u16 = if headers.is_some() { 0x2000 } else { 0 };
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(headers.unwrap_or_default());
    out.extend_from_slice(&frame(2, 1, &h));
    out
}

/// Body frames for `size` bytes, each at most 64 KiB (under the frame_max
/// that `raw_open` negotiates).
fn body_frames(size: usize) -> impl Iterator<Item = Vec<u8>> {
    const CHUNK: usize = 64 * 1024 - 8;
    let zeros = vec![0u8; CHUNK];
    (0..size.div_ceil(CHUNK)).map(move |i| {
        let n = CHUNK.min(size - i * CHUNK);
        frame(3, 1, &zeros[..n])
    })
}

/// A connection past open-ok with channel 1 open.
async fn raw_channel(b: &TestBroker) -> (tokio::net::TcpStream, Vec<u8>) {
    let (mut s, mut buf) = raw_open(b.addr, 0).await;
    let open = AMQPFrame::Method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    s.write_all(&encode(&open)).await.unwrap();
    match read_frame(&mut s, &mut buf).await {
        Some(AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))) => {}
        other => panic!("expected channel.open-ok, got {other:?}"),
    }
    (s, buf)
}

/// Write `chunks` without reading; returns how many bytes went out before a
/// write made no progress for `stall`, or None if every chunk was written.
async fn write_until_stall(
    s: &mut tokio::net::TcpStream,
    chunks: impl Iterator<Item = Vec<u8>>,
    stall: Duration,
) -> Option<usize> {
    let mut sent = 0;
    for c in chunks {
        match tokio::time::timeout(stall, s.write_all(&c)).await {
            Ok(Ok(())) => sent += c.len(),
            Ok(Err(e)) => panic!("write failed after {sent} bytes: {e}"),
            Err(_) => return Some(sent),
        }
    }
    None
}

/// Mandatory publishes of 1 MiB to a routing key no queue has: each comes
/// back as a basic.return carrying the whole body.
fn unroutable_publishes(n: usize) -> impl Iterator<Item = Vec<u8>> {
    (0..n).flat_map(|_| {
        std::iter::once(publish_start("no-such-queue", true, 1 << 20, None))
            .chain(body_frames(1 << 20))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pipelines_and_never_reads_is_no_longer_read() {
    let b = TestBroker::start().await;
    let (mut s, _) = raw_channel(&b).await;
    // 400 MiB of returns would have been queued in the broker's memory.
    let sent = write_until_stall(&mut s, unroutable_publishes(400), Duration::from_secs(3)).await;
    let sent = sent.expect("the broker read 400 MiB of publishes whose returns nobody read");
    assert!(sent < 100 << 20, "stalled only after {sent} bytes");
    drop(s);
    still_serves(&b, "after-pipelining").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_send_timeout() {
    let b = TestBroker::start_with(|c| c.send_timeout = Duration::from_secs(1)).await;
    let (mut s, _) = raw_channel(&b).await;
    // Publish without ever reading: once the broker's writes to this client
    // have stalled for send_timeout, it closes the connection and our
    // writes fail.
    let r = tokio::time::timeout(T, async {
        for c in unroutable_publishes(usize::MAX) {
            s.write_all(&c).await?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    assert!(matches!(r, Ok(Err(_))), "connection still open: {r:?}");
    still_serves(&b, "after-send-timeout").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_being_received_count_toward_the_memory_alarm() {
    let b = TestBroker::start_with(|c| c.memory_high_watermark = 16 << 20).await;
    let (mut s, _) = raw_channel(&b).await;
    let size = 100 << 20;
    let frames =
        std::iter::once(publish_start("big", false, size as u64, None)).chain(body_frames(size));
    let sent = write_until_stall(&mut s, frames, Duration::from_secs(3))
        .await
        .expect("the broker took a 100 MiB body past a 16 MiB memory alarm");
    assert!(sent < 64 << 20, "stalled only after {sent} bytes");
    // The client crashes (its connection is reset): the half-received body
    // is released with the connection, the alarm clears and publishers go
    // on.
    #[allow(deprecated)] // linger 0 resets at once; it does not block
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    still_serves(&b, "after-alarm").await;
    b.stop().await;
}
