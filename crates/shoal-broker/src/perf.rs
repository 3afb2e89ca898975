//! `shoal bench amqp`: a load generator with the flags of RabbitMQ's PerfTest
//! and lavinmqperf (`-x` publishers, `-y` consumers, `-s` size, `-a` autoack,
//! `-c` confirm window, `-p` persistent, `-P` prefetch, `-z` seconds,
//! `-C` messages per publisher, `--json`). It speaks AMQP itself over the
//! `amq-protocol` codec with pre-encoded frames, so the generator costs
//! little CPU next to the broker under test. Latency is measured from a
//! timestamp in the first 8 body bytes to its delivery.

use crate::codec::{decode, put_frame, Inbound};
use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{
    basic, channel, confirm, connection, queue, AMQPClass, BasicProperties,
};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::BytesMut;
use serde::Serialize;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Load-generator options (PerfTest-compatible short flags).
#[derive(clap::Args, Debug, Clone)]
pub struct PerfArgs {
    /// The broker to load, HOST:PORT (e.g. 127.0.0.1:5672). Required: the
    /// run names the broker (address, product and version) before it starts,
    /// and never loads one you did not name.
    #[arg(long, short = 'H', value_name = "HOST:PORT")]
    pub host: String,
    /// User name.
    #[arg(long, default_value = "guest")]
    pub user: String,
    /// Password.
    #[arg(long, default_value = "guest")]
    pub password: String,
    /// Number of publishers.
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Number of consumers.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Number of queues (publisher i and consumer i use queue i mod N).
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Message body size in bytes (at least 8 carry the timestamp).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Consumers use auto-ack (no-ack).
    #[arg(short = 'a', long)]
    pub autoack: bool,
    /// Publisher confirms with this many unconfirmed messages in flight (0: off).
    #[arg(short = 'c', long, default_value_t = 0)]
    pub confirm: u64,
    /// Persistent messages (delivery mode 2) in durable queues.
    #[arg(short = 'p', long)]
    pub persistent: bool,
    /// Consumer prefetch (basic.qos) when acking manually.
    #[arg(short = 'P', long, default_value_t = 0)]
    pub prefetch: u16,
    /// Ack with `multiple` every N messages (0: ack each message).
    #[arg(long, default_value_t = 0)]
    pub multi_ack_every: u64,
    /// Publishing rate limit per publisher in msg/s (0: as fast as possible).
    /// Paced in 1 ms steps, so a fixed offered load shows the broker's own
    /// cost per message instead of the load generator's limits.
    #[arg(short = 'r', long, default_value_t = 0)]
    pub rate: u64,
    /// Run time in seconds.
    #[arg(short = 'z', long, default_value_t = 10)]
    pub time: u64,
    /// Messages per publisher, then stop publishing (0: unlimited).
    #[arg(short = 'C', long, default_value_t = 0)]
    pub pmessages: u64,
    /// Queue name prefix (queues are named PREFIX-0, PREFIX-1, ...).
    #[arg(long, default_value = "shoal-perf")]
    pub queue_prefix: String,
    /// Keep the queues at the end (default: delete them).
    #[arg(long)]
    pub keep_queues: bool,
    /// Print the summary as one JSON object (no per-second lines).
    #[arg(long)]
    pub json: bool,
}

/// Result of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PerfReport {
    /// Seconds measured.
    pub seconds: f64,
    /// Messages published.
    pub published: u64,
    /// Messages consumed.
    pub consumed: u64,
    /// Average publish rate (msg/s).
    pub publish_rate: f64,
    /// Average consume rate (msg/s).
    pub consume_rate: f64,
    /// Per-second (published, consumed).
    pub per_second: Vec<(u64, u64)>,
    /// Latency percentiles in microseconds: p50, p75, p95, p99, max.
    pub latency_us: LatencyReport,
}

/// Latency percentiles (µs).
#[derive(Debug, Clone, Serialize, Default)]
pub struct LatencyReport {
    /// Median.
    pub p50: u64,
    /// 75th.
    pub p75: u64,
    /// 95th.
    pub p95: u64,
    /// 99th.
    pub p99: u64,
    /// Max.
    pub max: u64,
    /// Samples taken.
    pub samples: usize,
}

struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    async fn next(&mut self) -> io::Result<Inbound> {
        loop {
            match decode(&mut self.buf, u32::MAX) {
                // Confirms come as basic.ack: in the general form here.
                Ok(Some(Inbound::Fast(ch, m))) => {
                    return Ok(Inbound::Frame(Box::new(AMQPFrame::Method(
                        ch,
                        m.into_class(),
                    ))))
                }
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(proto_err(e.to_string())),
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "broker closed the connection",
                ));
            }
        }
    }
}

struct Client {
    r: Reader,
    wr: OwnedWriteHalf,
    frame_max: u32,
    /// The broker's product and version, from its `connection.start`.
    server: String,
}

/// "PRODUCT VERSION" from a `connection.start`'s server properties.
fn server_name(t: &FieldTable) -> String {
    let get = |k: &str| {
        t.inner()
            .iter()
            .find(|(n, _)| n.as_str() == k)
            .and_then(|(_, v)| match v {
                AMQPValue::LongString(s) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                _ => None,
            })
    };
    match (get("product"), get("version")) {
        (Some(p), Some(v)) => format!("{p} {v}"),
        (Some(p), None) => p,
        _ => "a broker that does not name its product".to_string(),
    }
}

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl Client {
    async fn connect(host: &str, user: &str, password: &str) -> io::Result<Client> {
        let s = TcpStream::connect(host).await?;
        s.set_nodelay(true)?;
        let (rd, mut wr) = s.into_split();
        wr.write_all(b"AMQP\x00\x00\x09\x01").await?;
        let mut c = Client {
            r: Reader {
                rd,
                buf: BytesMut::with_capacity(256 * 1024),
            },
            wr,
            frame_max: 131072,
            server: String::new(),
        };
        let start = c
            .expect_method(|m| matches!(m, AMQPClass::Connection(connection::AMQPMethod::Start(_))))
            .await?;
        if let AMQPClass::Connection(connection::AMQPMethod::Start(s)) = &start {
            c.server = server_name(&s.server_properties);
        }
        c.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: format!("\0{user}\0{password}").into(),
                locale: "en_US".into(),
            })),
        )
        .await?;
        let tune = c
            .expect_method(|m| matches!(m, AMQPClass::Connection(connection::AMQPMethod::Tune(_))))
            .await?;
        if let AMQPClass::Connection(connection::AMQPMethod::Tune(t)) = tune {
            if t.frame_max != 0 {
                c.frame_max = t.frame_max;
            }
        }
        c.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 16,
                frame_max: c.frame_max,
                heartbeat: 0,
            })),
        )
        .await?;
        c.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        )
        .await?;
        c.expect_method(|m| matches!(m, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))))
            .await?;
        c.send_method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await?;
        c.expect_method(|m| matches!(m, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))))
            .await?;
        Ok(c)
    }

    async fn send_method(&mut self, ch: u16, m: AMQPClass) -> io::Result<()> {
        let mut out = Vec::new();
        put_frame(&mut out, &AMQPFrame::Method(ch, m));
        self.wr.write_all(&out).await
    }

    async fn expect_method(&mut self, want: impl Fn(&AMQPClass) -> bool) -> io::Result<AMQPClass> {
        loop {
            if let Inbound::Frame(f) = self.r.next().await? {
                match *f {
                    AMQPFrame::Method(_, m) if want(&m) => return Ok(m),
                    AMQPFrame::Method(
                        _,
                        AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                    ) => {
                        return Err(proto_err(format!(
                            "connection closed: {} {}",
                            c.reply_code, c.reply_text
                        )))
                    }
                    AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => {
                        return Err(proto_err(format!(
                            "channel closed: {} {}",
                            c.reply_code, c.reply_text
                        )))
                    }
                    _ => {}
                }
            }
        }
    }
}

fn queue_name(a: &PerfArgs, i: usize) -> String {
    format!("{}-{}", a.queue_prefix, i % a.queues.max(1))
}

/// One connection, one RPC per queue: `make` builds the method for a queue
/// name, `done` recognises its reply.
async fn per_queue(
    a: &PerfArgs,
    make: impl Fn(String) -> AMQPClass,
    done: impl Fn(&AMQPClass) -> bool,
) -> io::Result<()> {
    let mut c = Client::connect(&a.host, &a.user, &a.password).await?;
    for i in 0..a.queues.max(1) {
        c.send_method(1, make(queue_name(a, i))).await?;
        c.expect_method(&done).await?;
    }
    Ok(())
}

async fn declare_queues(a: &PerfArgs) -> io::Result<()> {
    per_queue(
        a,
        |name| {
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: name.into(),
                passive: false,
                durable: a.persistent,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            }))
        },
        |m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
    )
    .await
}

async fn delete_queues(a: &PerfArgs) -> io::Result<()> {
    per_queue(
        a,
        |name| {
            AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: name.into(),
                if_unused: false,
                if_empty: false,
                nowait: false,
            }))
        },
        |m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_))),
    )
    .await
}

struct Shared {
    published: AtomicU64,
    consumed: AtomicU64,
    stop_publishing: AtomicBool,
    stop: AtomicBool,
    base: Instant,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }
}

async fn publisher(a: PerfArgs, idx: usize, sh: Arc<Shared>) -> io::Result<()> {
    let mut c = Client::connect(&a.host, &a.user, &a.password).await?;
    if a.confirm > 0 {
        c.send_method(
            1,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )
        .await?;
        c.expect_method(|m| matches!(m, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))))
            .await?;
    }
    let size = a.size.max(8);
    // Pre-encode publish method + content header; only the body changes.
    let mut head = Vec::new();
    put_frame(
        &mut head,
        &AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: queue_name(&a, idx).into(),
                mandatory: false,
                immediate: false,
            })),
        ),
    );
    let props = if a.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default().with_delivery_mode(1)
    };
    put_frame(
        &mut head,
        &AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: size as u64,
                properties: props,
            },
        ),
    );
    let body_chunk = (c.frame_max as usize).saturating_sub(8).max(1);
    let Client {
        r: mut rc, mut wr, ..
    } = c;
    let acked = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let reader = if a.confirm > 0 {
        let acked = acked.clone();
        let notify = notify.clone();
        Some(tokio::spawn(async move {
            let mut upto = 0u64;
            while let Ok(f) = rc.next().await {
                if let Inbound::Frame(f) = f {
                    let settled = match *f {
                        AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Ack(x))) => {
                            Some((x.delivery_tag, x.multiple))
                        }
                        AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Nack(x))) => {
                            Some((x.delivery_tag, x.multiple))
                        }
                        _ => None,
                    };
                    if let Some((tag, multiple)) = settled {
                        upto = if multiple { tag } else { upto.max(tag) };
                        acked.store(upto, Ordering::Release);
                        notify.notify_one();
                    }
                }
            }
        }))
    } else {
        drop(rc);
        None
    };
    let mut sent = 0u64;
    let mut out = Vec::with_capacity(64 * 1024);
    let batch = 64u64;
    let mut pace = (a.rate > 0).then(|| Pacer::new(a.rate));
    while !sh.stop_publishing.load(Ordering::Relaxed) && (a.pmessages == 0 || sent < a.pmessages) {
        let mut n = batch;
        if a.pmessages > 0 {
            n = n.min(a.pmessages - sent);
        }
        if let Some(p) = pace.as_mut() {
            n = n.min(p.due(sent).await);
        }
        if a.confirm > 0 {
            loop {
                let inflight = sent - acked.load(Ordering::Acquire);
                if inflight < a.confirm {
                    n = n.min(a.confirm - inflight);
                    break;
                }
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                if sh.stop_publishing.load(Ordering::Relaxed) {
                    break;
                }
            }
            if sh.stop_publishing.load(Ordering::Relaxed) {
                break;
            }
        }
        out.clear();
        let ts = sh.now_us().to_le_bytes();
        for _ in 0..n {
            out.extend_from_slice(&head);
            let mut body = vec![0u8; size];
            body[..8].copy_from_slice(&ts);
            for part in body.chunks(body_chunk) {
                out.push(3);
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                out.extend_from_slice(part);
                out.push(0xCE);
            }
        }
        wr.write_all(&out).await?;
        sent += n;
        sh.published.fetch_add(n, Ordering::Relaxed);
    }
    // Wait for outstanding confirms (bounded) so -C runs end with everything stored.
    if a.confirm > 0 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.load(Ordering::Acquire) < sent
            && Instant::now() < deadline
            && !sh.stop.load(Ordering::Relaxed)
        {
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
    if let Some(r) = reader {
        r.abort();
    }
    Ok(())
}

/// Spaces publishing at a fixed rate: the messages due by now, checked every
/// millisecond.
struct Pacer {
    rate: u64,
    start: tokio::time::Instant,
    tick: tokio::time::Interval,
}

impl Pacer {
    fn new(rate: u64) -> Pacer {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Pacer {
            rate,
            start: tokio::time::Instant::now(),
            tick,
        }
    }

    /// How many messages may go now, `sent` having gone already (waits for
    /// the next millisecond tick while none are due).
    async fn due(&mut self, sent: u64) -> u64 {
        loop {
            let us = self.start.elapsed().as_micros() as u64;
            let target = (u128::from(self.rate) * u128::from(us) / 1_000_000) as u64;
            if target > sent {
                return target - sent;
            }
            self.tick.tick().await;
        }
    }
}

async fn consumer(a: PerfArgs, idx: usize, sh: Arc<Shared>) -> io::Result<Vec<u32>> {
    let mut c = Client::connect(&a.host, &a.user, &a.password).await?;
    if !a.autoack && a.prefetch > 0 {
        c.send_method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: a.prefetch,
                global: false,
            })),
        )
        .await?;
        c.expect_method(|m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))))
            .await?;
    }
    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: queue_name(&a, idx).into(),
            consumer_tag: "".into(),
            no_local: false,
            no_ack: a.autoack,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await?;
    let mut lat = Vec::new();
    let mut last_tag = 0u64;
    let mut unacked = 0u64;
    let mut acks = Vec::with_capacity(4096);
    let mut count = 0u64;
    let mut first_body = false;
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        // Drain what is buffered, then flush acks, then read more.
        loop {
            let f = match decode(&mut c.r.buf, u32::MAX) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(proto_err(e.to_string())),
            };
            match f {
                Inbound::Frame(f) => {
                    if let AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) =
                        *f
                    {
                        last_tag = d.delivery_tag;
                        first_body = true;
                    }
                }
                Inbound::Header(..) | Inbound::Fast(..) => {}
                Inbound::Body(_, b) => {
                    if first_body {
                        first_body = false;
                        count += 1;
                        if count.is_multiple_of(4) && b.len() >= 8 {
                            let mut ts = [0u8; 8];
                            ts.copy_from_slice(&b[..8]);
                            let sent = u64::from_le_bytes(ts);
                            lat.push(
                                sh.now_us().saturating_sub(sent).min(u64::from(u32::MAX)) as u32
                            );
                        }
                        sh.consumed.fetch_add(1, Ordering::Relaxed);
                        if !a.autoack {
                            unacked += 1;
                            let multiple = a.multi_ack_every > 0;
                            if !multiple || unacked >= a.multi_ack_every {
                                put_frame(
                                    &mut acks,
                                    &AMQPFrame::Method(
                                        1,
                                        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                                            delivery_tag: last_tag,
                                            multiple,
                                        })),
                                    ),
                                );
                                unacked = 0;
                            }
                        }
                    }
                }
            }
        }
        if !acks.is_empty() {
            c.wr.write_all(&acks).await?;
            acks.clear();
        }
        let r =
            tokio::time::timeout(Duration::from_millis(200), c.r.rd.read_buf(&mut c.r.buf)).await;
        match r {
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(lat)
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    u64::from(sorted[i.min(sorted.len() - 1)])
}

/// Run the load; `on_second` gets (second, published, consumed) each second.
pub async fn run(a: PerfArgs, mut on_second: impl FnMut(u64, u64, u64)) -> io::Result<PerfReport> {
    declare_queues(&a).await?;
    let sh = Arc::new(Shared {
        published: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        stop_publishing: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        base: Instant::now(),
    });
    let mut cons = Vec::new();
    for i in 0..a.consumers {
        cons.push(tokio::spawn(consumer(a.clone(), i, sh.clone())));
    }
    // Let consumers attach before publishing starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut pubs = Vec::new();
    for i in 0..a.producers {
        pubs.push(tokio::spawn(publisher(a.clone(), i, sh.clone())));
    }
    let start = Instant::now();
    let mut per_second = Vec::new();
    let (mut last_p, mut last_c) = (0, 0);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    for s in 1..=a.time {
        tick.tick().await;
        let p = sh.published.load(Ordering::Relaxed);
        let c = sh.consumed.load(Ordering::Relaxed);
        per_second.push((p - last_p, c - last_c));
        on_second(s, p - last_p, c - last_c);
        last_p = p;
        last_c = c;
        if pubs.iter().all(|h| h.is_finished()) && a.pmessages > 0 && (a.consumers == 0 || c >= p) {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    sh.stop_publishing.store(true, Ordering::Relaxed);
    for p in pubs {
        match tokio::time::timeout(Duration::from_secs(35), p).await {
            Ok(Ok(Err(e))) => return Err(e),
            Ok(_) => {}
            Err(_) => return Err(proto_err("a publisher did not stop")),
        }
    }
    sh.stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for c in cons {
        if let Ok(Ok(Ok(l))) = tokio::time::timeout(Duration::from_secs(5), c).await {
            lat.extend(l);
        }
    }
    lat.sort_unstable();
    let published = sh.published.load(Ordering::Relaxed);
    let consumed = sh.consumed.load(Ordering::Relaxed);
    if !a.keep_queues {
        delete_queues(&a).await?;
    }
    Ok(PerfReport {
        seconds,
        published,
        consumed,
        publish_rate: published as f64 / seconds,
        consume_rate: consumed as f64 / seconds,
        per_second,
        latency_us: LatencyReport {
            p50: percentile(&lat, 0.50),
            p75: percentile(&lat, 0.75),
            p95: percentile(&lat, 0.95),
            p99: percentile(&lat, 0.99),
            max: lat.last().map_or(0, |x| u64::from(*x)),
            samples: lat.len(),
        },
    })
}

/// Run and print like PerfTest: one line per second, then a summary (or one
/// JSON object with `--json`).
/// Connect to the broker `a` names and say what it is: `HOST:PORT (PRODUCT
/// VERSION)`.
pub async fn identify(a: &PerfArgs) -> io::Result<String> {
    let c = Client::connect(&a.host, &a.user, &a.password)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot load {}: {e}", a.host)))?;
    Ok(format!("{} ({})", a.host, c.server))
}

pub async fn run_and_print(a: PerfArgs) -> io::Result<PerfReport> {
    let json = a.json;
    // Before any load: which broker this is (on stderr, so --json stays clean).
    eprintln!("loading {}", identify(&a).await?);
    let report = run(a, |s, p, c| {
        if !json {
            println!("time: {s}s, sent: {p} msg/s, received: {c} msg/s");
        }
    })
    .await?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(io::Error::other)?
        );
    } else {
        let l = &report.latency_us;
        println!(
            "summary: {:.1}s, sent {} ({:.0} msg/s), received {} ({:.0} msg/s), latency µs p50 {} p75 {} p95 {} p99 {} max {}",
            report.seconds,
            report.published,
            report.publish_rate,
            report.consumed,
            report.consume_rate,
            l.p50,
            l.p75,
            l.p95,
            l.p99,
            l.max
        );
    }
    Ok(report)
}
