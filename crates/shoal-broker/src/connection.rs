//! One client connection: protocol header, the connection handshake (SASL
//! PLAIN/AMQPLAIN, tune, open), then channels. Frames are read and handled
//! in order; replies and deliveries go through the writer task's queue.
//! Protocol errors become `channel.close` (soft) or `connection.close`
//! (hard) with RabbitMQ's codes; only this connection is affected.
//! `handshake` holds the connection class, `classes` the exchange, queue,
//! basic and tx methods, `content` the assembly of published messages from
//! their frames.

mod classes;
mod content;
mod handshake;
mod permissions;

use crate::codec::{decode_frame, Decoded, Frame};
use crate::config::Access;
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::Dest;
use crate::fastpath::{Fast, Head};
use crate::message::Message;
use crate::outbox::{Backlog, Out, Outbox};
use crate::server::Broker;
use crate::store::{Store, StoreHold};
use crate::vhost::{chan_key, Routed, VHost};
use crate::writer::{self, WireParams};
use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{
    access, basic, channel, confirm, connection, exchange, queue, AMQPClass,
};
use amq_protocol::types::FieldTable;
use bytes::{Buf, BytesMut};
use content::Pending;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use shoal_core::Shutdown;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

#[derive(Debug, PartialEq, Eq)]
enum State {
    StartOk,
    TuneOk,
    Open,
    Running,
    Closing,
}

enum TxOp {
    /// A message, its `mandatory` flag, and where it was routed when it
    /// was published.
    Publish(Box<Message>, bool, Routed),
    Ack(u64, bool),
    Reject(u64, bool, bool),
}

/// Which way a bind method changes the bindings.
#[derive(Clone, Copy)]
enum Bind {
    Add,
    Remove,
}

/// A bind method's fields, whichever class it came in.
struct BindParts {
    source: String,
    dest: Dest,
    key: String,
    arguments: FieldTable,
    nowait: bool,
}

/// exchange.bind/unbind and queue.bind/unbind, read one way (see `Conn::binding`).
trait BindMethod {
    const OP: Bind;
    fn parts(self) -> BindParts;
    /// The method that answers it.
    fn ok() -> AMQPClass;
}

/// One row a method: its direction, the field naming the source exchange,
/// the destination's kind and field, whether it has nowait, and its answer.
/// (queue.unbind has no nowait: it is always answered.)
macro_rules! bind_methods {
    ($($m:ty: $op:ident, $src:ident -> $kind:ident($dest:ident), $nw:ident, $ok:expr;)*) => {$(
        impl BindMethod for $m {
            const OP: Bind = Bind::$op;
            fn parts(self) -> BindParts {
                BindParts {
                    nowait: bind_methods!(@nowait self, $nw),
                    source: self.$src.as_str().to_string(),
                    dest: Dest::$kind(self.$dest.as_str().to_string()),
                    key: self.routing_key.as_str().to_string(),
                    arguments: self.arguments,
                }
            }
            fn ok() -> AMQPClass {
                $ok
            }
        }
    )*};
    (@nowait $b:ident, nowait) => { $b.nowait };
    (@nowait $b:ident, always) => { false };
}

bind_methods! {
    exchange::Bind: Add, source -> Exchange(destination), nowait,
        AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {}));
    exchange::Unbind: Remove, source -> Exchange(destination), nowait,
        AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {}));
    queue::Bind: Add, exchange -> Queue(queue), nowait,
        AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {}));
    queue::Unbind: Remove, exchange -> Queue(queue), always,
        AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {}));
}

#[derive(Default)]
struct Chan {
    closing: bool,
    confirm: bool,
    publish_seq: u64,
    tx: Option<Vec<TxOp>>,
    pending: Option<Pending>,
    write_ok: Option<(String, bool)>,
    /// Permission checks that passed on this channel.
    perm_cache: permissions::PermCache,
}

struct Conn {
    broker: Arc<Broker>,
    id: u64,
    peer: SocketAddr,
    /// The socket, for [`peer_hung_up`] while the connection is not read.
    fd: std::os::fd::RawFd,
    out: Outbox,
    backlog: Arc<Backlog>,
    params: Arc<WireParams>,
    /// Counts this connection as handshaking until it reaches `Running`.
    pre_login: PreLogin,
    /// When a connection that is not yet `Running` is closed.
    handshake_deadline: tokio::time::Instant,
    state: State,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    user: String,
    vhost: Option<Arc<Mutex<VHost>>>,
    vhost_name: String,
    /// The user's permissions on the open vhost, looked up again when the
    /// broker's accounts generation moves past `perm_gen`.
    permission: Option<crate::config::Permission>,
    perm_gen: u64,
    /// Set when the broker closes this connection (its user or vhost deleted).
    closer: Arc<crate::server::Closer>,
    /// Looked up several times per frame: a fast (Fx) hash of the number.
    channels: FxHashMap<u16, Chan>,
    cancel_notify: bool,
    blocked_cap: bool,
    auth_failure_close: bool,
    flow_wait: Option<String>,
    /// The open vhost's message store.
    store: Option<Arc<Store>>,
    /// Held on the store from the first persistent publish of what was
    /// read until it is all handled (or the connection waits): group commit.
    store_hold: Option<StoreHold>,
}

enum Step {
    Continue,
    Stop,
}

fn m(class: AMQPClass) -> Out {
    Out::Method(0, class)
}

/// Counts a connection in [`crate::server::Metrics::handshaking`] from
/// accept until it completes the handshake or ends, whichever is first.
struct PreLogin {
    broker: Arc<Broker>,
    counted: bool,
}

impl PreLogin {
    fn new(broker: Arc<Broker>) -> PreLogin {
        broker.metrics.handshaking.fetch_add(1, Ordering::Relaxed);
        PreLogin {
            broker,
            counted: true,
        }
    }

    /// The handshake completed (or the connection is closing): stop counting.
    fn done(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.broker
                .metrics
                .handshaking
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The handshake deadline passed: count and log it.
    fn timed_out(&self, peer: SocketAddr) {
        self.broker
            .metrics
            .handshake_timeouts
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            %peer,
            timeout = ?self.broker.config.handshake_timeout,
            "closing connection: handshake not completed in time (handshake_timeout)"
        );
    }
}

impl Drop for PreLogin {
    fn drop(&mut self) {
        self.done();
    }
}

/// Whether the peer of TCP socket `fd` has closed its side (the socket is
/// in CLOSE_WAIT or closed), seen without reading the data buffered before
/// the FIN.
fn peer_hung_up(fd: std::os::fd::RawFd) -> bool {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is this connection's open socket (owned by the read half
    // that outlives every caller), `info` and `len` are valid out-pointers.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    const TCP_CLOSE: u8 = 7;
    const TCP_CLOSE_WAIT: u8 = 8;
    rc != 0 || matches!(info.tcpi_state, TCP_CLOSE | TCP_CLOSE_WAIT)
}

/// Frames that carry or start a message: basic.publish, content headers
/// and bodies.
fn is_content(frame: &Frame) -> bool {
    match frame {
        Frame::Body(..) | Frame::Header(..) | Frame::Fast(_, Fast::Publish(_)) => true,
        Frame::Fast(_, Fast::Ack(_)) => false,
        Frame::Frame(f) => matches!(
            **f,
            AMQPFrame::Header(..)
                | AMQPFrame::Body(..)
                | AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Publish(_)))
        ),
    }
}

/// Serve one accepted TCP connection until it closes or `shutdown` fires.
pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let pre_login = PreLogin::new(broker.clone());
    let handshake_deadline = tokio::time::Instant::now() + broker.config.handshake_timeout;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (mut rd, mut wr) = stream.into_split();
    let mut hdr = [0u8; 8];
    match tokio::time::timeout_at(handshake_deadline, rd.read_exact(&mut hdr)).await {
        Ok(Ok(_)) if &hdr == PROTOCOL_HEADER || (&hdr[..4] == b"AMQP" && hdr[5..] == [0, 9, 1]) => {
        }
        Ok(Ok(_)) => {
            tracing::info!(%peer, "bad protocol header, replying with ours and closing");
            broker
                .metrics
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
            let _ = wr.write_all(PROTOCOL_HEADER).await;
            let _ = wr.shutdown().await;
            return;
        }
        Ok(Err(_)) => return,
        Err(_) => {
            pre_login.timed_out(peer);
            return;
        }
    }
    let params = Arc::new(WireParams {
        frame_max: AtomicU32::new(broker.config.frame_max),
        heartbeat: AtomicU32::new(0),
        send_timeout: broker.config.send_timeout,
    });
    let backlog = Arc::new(Backlog::default());
    let (tx, rx) = Outbox::channel(backlog.clone());
    let writer = tokio::spawn(writer::run(wr, rx, params.clone(), backlog.clone()));
    let closer = broker.conn_opened(id, peer, local);
    let mut c = Conn {
        closer,
        perm_gen: 0,
        broker: broker.clone(),
        id,
        peer,
        fd,
        out: tx,
        backlog,
        params,
        pre_login,
        handshake_deadline,
        state: State::StartOk,
        frame_max: broker.config.frame_max,
        channel_max: broker.config.channel_max,
        heartbeat: broker.config.heartbeat,
        user: String::new(),
        vhost: None,
        vhost_name: String::new(),
        permission: None,
        channels: FxHashMap::default(),
        cancel_notify: false,
        blocked_cap: false,
        auth_failure_close: false,
        flow_wait: None,
        store: None,
        store_hold: None,
    };
    c.send_start();
    c.read_loop(&mut rd, &shutdown).await;
    c.store_hold = None;
    if let Some(v) = &c.vhost {
        v.lock().connection_closed(id);
    }
    broker.conn_closed(id);
    let _ = c.out.send(Out::Close);
    drop(c);
    let clean = matches!(
        tokio::time::timeout(Duration::from_secs(5), writer).await,
        Ok(Ok(true))
    );
    if !clean {
        // The socket failed or the client stopped reading: nothing to be
        // polite about.
        return;
    }
    // Read and discard until the peer closes (bounded), so that frames it sent
    // after its close (e.g. acks queued behind connection.close) do not turn
    // our close into a reset.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut sink = [0u8; 4096];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

impl Conn {
    async fn read_loop(&mut self, rd: &mut tokio::net::tcp::OwnedReadHalf, shutdown: &Shutdown) {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut alarm = self.broker.alarm.subscribe();
        // The alarm as last seen: read again only when it has changed (an
        // atomic load per content frame, where `borrow` takes a lock).
        let mut alarm_on = *alarm.borrow_and_update();
        let mut closing_deadline: Option<tokio::time::Instant> = None;
        let closer = self.closer.clone();
        // One timer and one shutdown wait for the whole connection, not one
        // of each armed and disarmed per read: the timer is set to the
        // earliest deadline that applies and, when it fires early (reads
        // came since it was set), moved on to the deadline that applies now.
        let mut idle_since;
        let timer = tokio::time::sleep_until(self.handshake_deadline);
        tokio::pin!(timer);
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            // Handle every complete frame already buffered.
            loop {
                if self.backlog.replies_over_high() {
                    // The client is not reading its replies: stop reading
                    // its requests until the writer catches up.
                    self.store_hold = None;
                    tokio::select! {
                        _ = self.backlog.wait_drained() => {}
                        _ = &mut cancelled => return,
                    }
                    if self.backlog.writer_gone.load(Ordering::Relaxed) {
                        return;
                    }
                }
                // The frame is handled where it lies in `buf`, which gives
                // it up once it is handled.
                let (frame, used) = match decode_frame(&buf, self.frame_max.max(4096) + 8) {
                    Ok(Decoded::Whole(f, used)) => (f, used),
                    Ok(Decoded::Partial(total)) => {
                        buf.reserve(total.saturating_sub(buf.len()));
                        break;
                    }
                    Err(e) => {
                        self.broker
                            .metrics
                            .protocol_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(peer = %self.peer, error = %e, "closing connection on frame error");
                        self.hard_close(e);
                        return;
                    }
                };
                if let Some(q) = self.flow_wait.take() {
                    self.store_hold = None;
                    self.wait_flow(&q, shutdown).await;
                }
                // Under a resource alarm, a publisher stops being read at its
                // next publish, content header or body frame (RabbitMQ blocks
                // the same way), so message bodies cannot grow memory past
                // the alarm.
                let content = is_content(&frame);
                if content && alarm.has_changed().unwrap_or(false) {
                    alarm_on = *alarm.borrow_and_update();
                }
                if content && alarm_on && self.state == State::Running {
                    self.store_hold = None;
                    let hung_up = self.wait_alarm(&mut alarm, shutdown).await;
                    alarm_on = *alarm.borrow_and_update();
                    if hung_up {
                        return;
                    }
                }
                // Handling a frame never waits: no future per frame.
                let step = self.handle(frame);
                buf.advance(used);
                match step {
                    Ok(Step::Continue) => {}
                    Ok(Step::Stop) => return,
                    Err(e) if e.hard => {
                        tracing::info!(peer = %self.peer, error = %e, "connection exception");
                        self.broker
                            .metrics
                            .protocol_errors
                            .fetch_add(1, Ordering::Relaxed);
                        self.hard_close(e);
                        closing_deadline =
                            Some(tokio::time::Instant::now() + Duration::from_secs(2));
                        break;
                    }
                    Err(e) => {
                        // Soft errors are turned into channel.close inside handle().
                        tracing::debug!(peer = %self.peer, error = %e, "channel exception");
                    }
                }
            }
            // What was read is handled: the store may sync it (group commit).
            self.store_hold = None;
            if self.state == State::Closing && closing_deadline.is_none() {
                closing_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            }
            let handshaking = matches!(self.state, State::StartOk | State::TuneOk | State::Open);
            // The client's silence counts from here, once what it sent is handled.
            idle_since = tokio::time::Instant::now();
            let deadline = self.read_deadline(closing_deadline, handshaking, idle_since);
            if deadline < timer.deadline() {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = &mut timer => {
                    let deadline = self.read_deadline(closing_deadline, handshaking, idle_since);
                    if deadline > tokio::time::Instant::now() {
                        timer.as_mut().reset(deadline);
                        continue;
                    }
                    match (closing_deadline, handshaking) {
                        (Some(_), _) => {}
                        (None, true) => self.pre_login.timed_out(self.peer),
                        (None, false) => {
                            tracing::info!(peer = %self.peer, "missed heartbeats, closing")
                        }
                    }
                    return;
                }
                _ = closer.notify.notified(), if self.state != State::Closing => {
                    let reason = closer.reason.lock().take().unwrap_or_default();
                    tracing::info!(peer = %self.peer, user = %self.user, vhost = %self.vhost_name, %reason, "closing connection");
                    self.hard_close(AmqpError::connection_forced(reason));
                    closing_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
                _ = &mut cancelled, if self.state != State::Closing => {
                    self.hard_close(AmqpError::connection_forced(
                        "broker forced connection closure with reason 'shutdown'",
                    ));
                    closing_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }

    /// When reading gives up: at the closing deadline, the handshake
    /// deadline, or two heartbeat intervals (60 s without heartbeats) after
    /// `idle_since` (when the last bytes read were handled).
    fn read_deadline(
        &self,
        closing: Option<tokio::time::Instant>,
        handshaking: bool,
        idle_since: tokio::time::Instant,
    ) -> tokio::time::Instant {
        match closing {
            Some(d) => d,
            None if handshaking => self.handshake_deadline,
            None if self.heartbeat > 0 && self.state == State::Running => {
                idle_since + Duration::from_secs(u64::from(self.heartbeat) * 2)
            }
            None => idle_since + Duration::from_secs(60),
        }
    }

    /// Queue a connection-level method (channel 0) for the writer.
    fn send_conn(&self, method: connection::AMQPMethod) {
        let _ = self.out.send(m(AMQPClass::Connection(method)));
    }

    fn hard_close(&mut self, e: AmqpError) {
        self.state = State::Closing;
        self.send_conn(connection::AMQPMethod::Close(connection::Close {
            reply_code: e.code,
            reply_text: e.text.into(),
            class_id: e.class_id,
            method_id: e.method_id,
        }));
    }

    fn soft_close(&mut self, ch: u16, e: AmqpError) {
        if let Some(c) = self.channels.get_mut(&ch) {
            c.closing = true;
            c.pending = None;
        }
        if let Some(v) = &self.vhost {
            v.lock().close_channel(chan_key(self.id, ch));
        }
        let _ = self.out.send(Out::Method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: e.text.into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        ));
    }

    fn handle(&mut self, frame: Frame) -> AmqpResult<Step> {
        let frame = match frame {
            Frame::Body(ch, b) => return self.on_body(ch, b).map(|_| Step::Continue),
            Frame::Header(ch, h, raw) => return self.on_header(ch, h, raw).map(|_| Step::Continue),
            Frame::Fast(0, m) => return self.on_connection_method(m.into_class()),
            Frame::Fast(ch, m) => {
                let (cid, mid) = match m {
                    Fast::Publish(_) => (60, 40),
                    Fast::Ack(_) => (60, 80),
                };
                let r = match self.channel_methods_allowed()? {
                    false => Ok(()),
                    true => self.on_fast(ch, m),
                };
                return self.channel_method_done(ch, cid, mid, r);
            }
            Frame::Frame(f) => *f,
        };
        match frame {
            AMQPFrame::Heartbeat => Ok(Step::Continue),
            AMQPFrame::InvalidHeartbeat(_) => {
                Err(AmqpError::frame_error("heartbeat on a non-zero channel"))
            }
            AMQPFrame::ProtocolHeader(_) => {
                Err(AmqpError::frame_error("protocol header after start"))
            }
            AMQPFrame::Header(ch, h) => {
                let mut raw = Vec::new();
                crate::message::encode_properties_into(&h.properties, &mut raw);
                self.on_header(ch, Head::of(&h), &raw)
                    .map(|_| Step::Continue)
            }
            AMQPFrame::Body(ch, b) => self.on_body(ch, &b).map(|_| Step::Continue),
            AMQPFrame::Method(0, method) => self.on_connection_method(method),
            AMQPFrame::Method(ch, method) => {
                if !self.channel_methods_allowed()? {
                    return Ok(Step::Continue);
                }
                let (cid, mid) = (method.get_amqp_class_id(), method.get_amqp_method_id());
                let r = self.on_channel_method(ch, method);
                self.channel_method_done(ch, cid, mid, r)
            }
        }
    }

    /// Whether a method on a channel is handled now: not while the
    /// connection is closing (false: ignored), an error before it is open.
    fn channel_methods_allowed(&self) -> AmqpResult<bool> {
        match self.state {
            State::Closing => Ok(false),
            State::Running => Ok(true),
            _ => Err(AmqpError::command_invalid(
                "channel method before connection.open",
            )),
        }
    }

    /// The outcome of channel method `cid`.`mid` on `ch`: a soft error
    /// closes the channel, a hard one is the connection's.
    fn channel_method_done(
        &mut self,
        ch: u16,
        cid: u16,
        mid: u16,
        r: AmqpResult<()>,
    ) -> AmqpResult<Step> {
        match r {
            Ok(()) => Ok(Step::Continue),
            Err(e) if e.hard => Err(e.on(cid, mid)),
            Err(e) => {
                let e = e.on(cid, mid);
                self.soft_close(ch, e.clone());
                Err(e)
            }
        }
    }

    /// Credit-style flow control: pause reading from this publisher while a
    /// consumed queue it feeds is backlogged.
    async fn wait_flow(&self, queue: &str, shutdown: &Shutdown) {
        let Some(v) = self.vhost.clone() else { return };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !v.lock().flow_ok(queue) && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn wait_alarm(
        &mut self,
        alarm: &mut tokio::sync::watch::Receiver<bool>,
        shutdown: &Shutdown,
    ) -> bool {
        if self.blocked_cap {
            self.send_conn(connection::AMQPMethod::Blocked(connection::Blocked {
                reason: "low on memory or disk".into(),
            }));
        }
        tracing::info!(peer = %self.peer, "publisher blocked by resource alarm");
        // A blocked connection is not read, so a peer that hangs up is seen
        // in the socket's TCP state, checked once a second: its half-received
        // message is released rather than held for the alarm's lifetime.
        let mut check = tokio::time::interval(Duration::from_secs(1));
        while *alarm.borrow_and_update() {
            tokio::select! {
                r = alarm.changed() => if r.is_err() { break },
                _ = shutdown.cancelled() => break,
                _ = check.tick() => if peer_hung_up(self.fd) {
                    tracing::info!(peer = %self.peer, "blocked publisher hung up");
                    return true;
                },
            }
        }
        if self.blocked_cap {
            self.send_conn(connection::AMQPMethod::Unblocked(connection::Unblocked {}));
        }
        false
    }

    fn vhost(&self) -> AmqpResult<Arc<Mutex<VHost>>> {
        self.vhost
            .clone()
            .ok_or_else(|| AmqpError::command_invalid("no vhost open"))
    }

    fn reply(&self, ch: u16, class: AMQPClass) {
        let _ = self.out.send(Out::Method(ch, class));
    }

    /// exchange.bind/unbind and queue.bind/unbind: write access to the
    /// destination, read access to the source exchange, the change in the
    /// vhost, then the *-ok method unless nowait.
    fn binding<M: BindMethod>(&mut self, ch: u16, m: M) -> AmqpResult<()> {
        let b = m.parts();
        let (kind, name) = match &b.dest {
            Dest::Exchange(x) => ("exchange", x.as_str()),
            Dest::Queue(q) => ("queue", q.as_str()),
        };
        self.allowed(ch, Access::Write, kind, name)?;
        self.allowed(ch, Access::Read, "exchange", &b.source)?;
        let v = self.vhost()?;
        match M::OP {
            Bind::Add => v
                .lock()
                .bind(self.id, &b.source, b.dest, &b.key, b.arguments)?,
            Bind::Remove => v
                .lock()
                .unbind(self.id, &b.source, b.dest, &b.key, &b.arguments)?,
        }
        if !b.nowait {
            self.reply(ch, M::ok());
        }
        Ok(())
    }

    fn on_channel_method(&mut self, ch: u16, method: AMQPClass) -> AmqpResult<()> {
        let key = chan_key(self.id, ch);
        match method {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                // As RabbitMQ: channel_max bounds how many channels are
                // open at once, whatever their numbers.
                if self.channels.contains_key(&ch) {
                    return Err(AmqpError::channel_error("second 'channel.open' seen"));
                }
                let open = self.channels.len();
                if self.channel_max != 0 && open >= usize::from(self.channel_max) {
                    return Err(AmqpError::not_allowed(format!(
                        "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                        self.channel_max
                    )));
                }
                self.channels.insert(ch, Chan::default());
                self.vhost()?.lock().open_channel(
                    key,
                    ch,
                    self.out.clone(),
                    self.backlog.clone(),
                    self.cancel_notify,
                );
                self.reply(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                return Ok(());
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                self.channels.remove(&ch);
                return Ok(());
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                if let Some(v) = &self.vhost {
                    v.lock().close_channel(key);
                }
                self.channels.remove(&ch);
                self.reply(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                return Ok(());
            }
            _ => {}
        }
        if !self.method_on_open_channel(ch)? {
            return Ok(());
        }
        let v = self.vhost()?;
        match method {
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                v.lock().flow(key, f.active)?;
                self.reply(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: f.active,
                    })),
                );
            }
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(_)) => {}
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.reply(
                    ch,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
            }
            AMQPClass::Exchange(em) => self.on_exchange(ch, &v, em)?,
            AMQPClass::Queue(qm) => self.on_queue(ch, &v, qm)?,
            AMQPClass::Basic(bm) => self.on_basic(ch, &v, bm)?,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                let c = self.chan_mut(ch)?;
                if c.tx.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                c.confirm = true;
                if !s.nowait {
                    self.reply(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            AMQPClass::Tx(t) => self.on_tx(ch, &v, t)?,
            other => {
                return Err(AmqpError::command_invalid(format!(
                    "method {}.{} not valid from a client",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id()
                )))
            }
        }
        Ok(())
    }

    /// Whether a method (other than channel.open/close/close-ok) on `ch`
    /// is handled: an error if the channel is not open or awaits content,
    /// false (ignored) while it is closing.
    fn method_on_open_channel(&self, ch: u16) -> AmqpResult<bool> {
        let Some(c) = self.channels.get(&ch) else {
            return Err(AmqpError::channel_error(format!(
                "expected 'channel.open' on channel {ch}"
            )));
        };
        if c.closing {
            return Ok(false);
        }
        if c.pending.is_some() {
            return Err(AmqpError::unexpected_frame(format!(
                "expected content header on channel {ch}, got a method"
            )));
        }
        Ok(true)
    }

    /// basic.publish or basic.ack read by [`crate::fastpath`]: handled as
    /// [`Conn::on_channel_method`] would, without the general method type.
    fn on_fast(&mut self, ch: u16, m: Fast) -> AmqpResult<()> {
        if !self.method_on_open_channel(ch)? {
            return Ok(());
        }
        match m {
            Fast::Publish(p) => self.on_publish(ch, p),
            Fast::Ack(a) => {
                let v = self.vhost()?;
                self.on_ack(ch, &v, a)
            }
        }
    }

    fn chan_mut(&mut self, ch: u16) -> AmqpResult<&mut Chan> {
        self.channels
            .get_mut(&ch)
            .ok_or_else(|| AmqpError::channel_error(format!("channel {ch} not open")))
    }
}
