//! The IPC channel, wire-compatible with Node's: one JSON value per line over a
//! Unix stream socket (`NODE_CHANNEL_FD`, serialization mode `json`).
//!
//! A [`Channel`] runs two tasks on the current tokio runtime: a reader that
//! splits lines, parses them and hands ordinary messages to the [`Receiver`],
//! and a writer that serialises sends. Messages whose `cmd` starts with
//! `NODE_` are Node's internal ones: the handle-passing protocol
//! (`NODE_HANDLE`, `NODE_HANDLE_ACK`, `NODE_HANDLE_NACK`) is answered here and
//! the rest arrive as [`Incoming::Internal`], never as ordinary messages. A
//! line that is not JSON is reported as [`Incoming::Error`] and skipped.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::framing::{Frame, Framer};
use crate::handle::Handle;

/// The environment variable naming the channel's descriptor in the child.
pub const CHANNEL_FD_ENV: &str = "NODE_CHANNEL_FD";
/// The environment variable naming the serialization mode (`json`).
pub const SERIALIZATION_ENV: &str = "NODE_CHANNEL_SERIALIZATION_MODE";
/// Default cap on one incoming message, in bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;
/// How many times a handle refused with `NODE_HANDLE_NACK` is sent again (as Node does).
const MAX_HANDLE_RETRANSMISSIONS: u32 = 3;

/// Something that arrived on the channel.
#[derive(Debug)]
pub enum Incoming {
    /// An ordinary message, with the handle sent along with it, if any.
    Message(Value, Option<Handle>),
    /// One of Node's internal messages (`cmd` starting with `NODE_`), other
    /// than the handle protocol, which the channel answers itself.
    Internal(Value),
    /// A line that could not be used (not JSON, too long, a bad handle). The
    /// channel stays open.
    Error(Error),
}

/// Both ends of one side of the channel: send with [`Channel::sender`],
/// receive with [`Channel::recv`] or split them with [`Channel::split`].
#[derive(Debug)]
pub struct Channel {
    tx: Sender,
    rx: Receiver,
}

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub struct Sender {
    out: mpsc::Sender<Outgoing>,
    state: Arc<State>,
}

/// The receiving side. [`Receiver::recv`] returns `None` once the channel is
/// closed (the peer disconnected or exited, or we disconnected).
#[derive(Debug)]
pub struct Receiver {
    inc: mpsc::Receiver<Incoming>,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    connected: AtomicBool,
}

#[derive(Debug)]
enum Outgoing {
    Msg {
        bytes: Vec<u8>,
        handle: Option<Handle>,
        done: oneshot::Sender<Result<()>>,
    },
    Disconnect,
}

enum Control {
    Ack,
    Nack,
    Internal(Vec<u8>),
}

/// A socketpair for a new child: our end as a [`Channel`], and the child's end
/// (close-on-exec; the spawner places it at the wanted descriptor number).
/// The child's end is blocking, as Node gives it: a child in any language
/// can use plain blocking reads and writes on it. (Each end of a socketpair
/// is its own open file, so [`Channel::from_fd`] making ours non-blocking
/// does not touch theirs.)
pub fn pair() -> io::Result<(Channel, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    Ok((Channel::from_fd(ours)?, theirs))
}

impl Channel {
    /// Wrap a connected Unix stream socket. Must be called inside a tokio runtime.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Channel> {
        Self::with_limit(fd, DEFAULT_MAX_MESSAGE)
    }

    /// Like [`Channel::from_fd`] with a cap on incoming message size.
    pub fn with_limit(fd: OwnedFd, max_message: usize) -> io::Result<Channel> {
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true)?;
        let stream = Arc::new(UnixStream::from_std(std)?);
        let state = Arc::new(State {
            connected: AtomicBool::new(true),
        });
        let (out_tx, out_rx) = mpsc::channel(1024);
        let (inc_tx, inc_rx) = mpsc::channel(1024);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(stream.clone(), out_rx, ctl_rx, state.clone()));
        tokio::spawn(reader(stream, inc_tx, ctl_tx, state.clone(), max_message));
        Ok(Channel {
            tx: Sender {
                out: out_tx,
                state: state.clone(),
            },
            rx: Receiver { inc: inc_rx, state },
        })
    }

    /// The channel to our parent, if we were started with one
    /// (`NODE_CHANNEL_FD` set, as Node's `fork` and Shoal do). Removes the
    /// variables from our environment, as Node does, so that our own children
    /// do not inherit them. Must be called inside a tokio runtime.
    pub fn from_env() -> Result<Option<Channel>> {
        let Some(v) = std::env::var_os(CHANNEL_FD_ENV) else {
            return Ok(None);
        };
        let fd: RawFd = v
            .to_str()
            .and_then(|s| s.trim().parse().ok())
            .filter(|fd| *fd >= 0)
            .ok_or_else(|| {
                Error::InvalidOptions(format!("{CHANNEL_FD_ENV}={v:?} is not a descriptor"))
            })?;
        if let Some(mode) = std::env::var_os(SERIALIZATION_ENV) {
            if mode != "json" {
                return Err(Error::InvalidOptions(format!(
                    "{SERIALIZATION_ENV}={mode:?}: only json is supported"
                )));
            }
        }
        std::env::remove_var(CHANNEL_FD_ENV);
        std::env::remove_var(SERIALIZATION_ENV);
        // The descriptor was inherited without close-on-exec; set it so that
        // our own children do not hold our channel open.
        nix::fcntl::fcntl(
            // SAFETY: checked non-negative above; if it is not open, fcntl fails.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(io::Error::from)?;
        // SAFETY: the descriptor was handed to us by our parent for this use and
        // nothing else in this process owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Some(Channel::from_fd(owned)?))
    }

    /// A sender for this channel.
    pub fn sender(&self) -> Sender {
        self.tx.clone()
    }

    /// Next incoming item; `None` once the channel is closed.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// Send a message (see [`Sender::send`]).
    pub async fn send<T: Serialize + ?Sized>(&self, msg: &T, handle: Option<Handle>) -> Result<()> {
        self.tx.send(msg, handle).await
    }

    /// Separate the two sides.
    pub fn split(self) -> (Sender, Receiver) {
        (self.tx, self.rx)
    }

    /// Whether the channel is still open.
    pub fn connected(&self) -> bool {
        self.tx.connected()
    }
}

impl Sender {
    /// Send `msg` as one JSON line, with `handle`'s descriptor attached by
    /// SCM_RIGHTS under Node's `NODE_HANDLE` protocol (further handles wait
    /// for the peer's `NODE_HANDLE_ACK`). Resolves once the bytes are written.
    /// Our copy of the handle is closed once the peer acknowledged it.
    pub async fn send<T: Serialize + ?Sized>(&self, msg: &T, handle: Option<Handle>) -> Result<()> {
        let kind = handle.as_ref().map(Handle::node_type);
        self.send_typed(msg, handle, kind).await
    }

    /// Send `msg` with `handle` as a raw handle (`net.Native` or
    /// `dgram.Native`): a Node peer gets the bare libuv handle rather than a
    /// `net.Server` or `dgram.Socket` built around it, as Node's cluster
    /// primary hands listening sockets to its workers.
    pub async fn send_native<T: Serialize + ?Sized>(&self, msg: &T, handle: Handle) -> Result<()> {
        let kind = if handle.dgram_type().is_some() {
            "dgram.Native"
        } else {
            "net.Native"
        };
        self.send_typed(msg, Some(handle), Some(kind)).await
    }

    async fn send_typed<T: Serialize + ?Sized>(
        &self,
        msg: &T,
        handle: Option<Handle>,
        kind: Option<&str>,
    ) -> Result<()> {
        if !self.connected() {
            return Err(Error::ChannelClosed);
        }
        let bytes = match (&handle, kind) {
            (None, _) | (_, None) => encode(msg)?,
            (Some(h), Some(kind)) => {
                let mut m = json!({ "cmd": "NODE_HANDLE", "type": kind, "msg": msg });
                if let Some(t) = h.dgram_type() {
                    m["dgramType"] = Value::from(t);
                }
                encode(&m)?
            }
        };
        let (done, wait) = oneshot::channel();
        self.out
            .send(Outgoing::Msg {
                bytes,
                handle,
                done,
            })
            .await
            .map_err(|_| Error::ChannelClosed)?;
        wait.await.map_err(|_| Error::ChannelClosed)?
    }

    /// Close the channel after the messages already sent are written, like
    /// Node's `disconnect()`. The peer sees end-of-file (a Node child gets
    /// `'disconnect'`).
    pub async fn disconnect(&self) {
        self.state.connected.store(false, Ordering::SeqCst);
        let _ = self.out.send(Outgoing::Disconnect).await;
    }

    /// Whether the channel is still open.
    pub fn connected(&self) -> bool {
        self.state.connected.load(Ordering::SeqCst)
    }
}

impl Receiver {
    /// Next incoming item; `None` once the channel is closed.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.inc.recv().await
    }

    /// Whether the channel is still open.
    pub fn connected(&self) -> bool {
        self.state.connected.load(Ordering::SeqCst)
    }
}

fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>> {
    let mut v = serde_json::to_vec(msg)?;
    v.push(b'\n');
    Ok(v)
}

/// Write `bytes`, attaching `fd` (if any) to the first byte written.
async fn write_with_fd(stream: &UnixStream, bytes: &[u8], mut fd: Option<RawFd>) -> io::Result<()> {
    let raw = stream.as_raw_fd();
    let mut off = 0;
    while off < bytes.len() {
        let n = stream
            .async_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(&bytes[off..])];
                let fds;
                let cmsgs: &[ControlMessage] = match fd {
                    Some(f) => {
                        fds = [f];
                        &[ControlMessage::ScmRights(&fds)]
                    }
                    None => &[],
                };
                sendmsg::<()>(raw, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                    .map_err(io::Error::from)
            })
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        fd = None;
        off += n;
    }
    Ok(())
}

/// Write a message (with its handle's fd, if any) and tell the sender how
/// that went; false when the write failed and the writer must stop.
async fn write_reporting(
    stream: &UnixStream,
    bytes: &[u8],
    fd: Option<RawFd>,
    done: oneshot::Sender<Result<()>>,
) -> bool {
    let r = write_with_fd(stream, bytes, fd).await;
    let ok = r.is_ok();
    let _ = done.send(r.map_err(Error::from));
    ok
}

async fn writer(
    stream: Arc<UnixStream>,
    mut out: mpsc::Receiver<Outgoing>,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    state: Arc<State>,
) {
    // A handle message waiting for its ACK, and the ones queued behind it.
    let mut in_flight: Option<(Vec<u8>, Handle, u32)> = None;
    let mut queue: VecDeque<(Vec<u8>, Handle, oneshot::Sender<Result<()>>)> = VecDeque::new();
    let mut ctl_open = true;
    loop {
        tokio::select! {
            c = ctl.recv(), if ctl_open => match c {
                None => ctl_open = false,
                Some(Control::Internal(bytes)) => {
                    if write_with_fd(&stream, &bytes, None).await.is_err() {
                        break;
                    }
                }
                Some(Control::Ack) => {
                    in_flight = None;
                    if let Some((bytes, h, done)) = queue.pop_front() {
                        if !write_reporting(&stream, &bytes, Some(h.as_raw_fd()), done).await {
                            break;
                        }
                        in_flight = Some((bytes, h, 0));
                    }
                }
                Some(Control::Nack) => {
                    if let Some((bytes, h, tries)) = in_flight.take() {
                        if tries < MAX_HANDLE_RETRANSMISSIONS {
                            if write_with_fd(&stream, &bytes, Some(h.as_raw_fd())).await.is_err() {
                                break;
                            }
                            in_flight = Some((bytes, h, tries + 1));
                        } else {
                            tracing::warn!("IPC: peer refused a handle {tries} times; dropping it");
                        }
                    }
                }
            },
            m = out.recv() => match m {
                None => break,
                Some(Outgoing::Disconnect) => {
                    let _ = nix::sys::socket::shutdown(stream.as_raw_fd(), nix::sys::socket::Shutdown::Both);
                    break;
                }
                Some(Outgoing::Msg { bytes, handle: None, done }) => {
                    if !write_reporting(&stream, &bytes, None, done).await {
                        break;
                    }
                }
                Some(Outgoing::Msg { bytes, handle: Some(h), done }) => {
                    if in_flight.is_some() {
                        queue.push_back((bytes, h, done));
                    } else {
                        if !write_reporting(&stream, &bytes, Some(h.as_raw_fd()), done).await {
                            break;
                        }
                        in_flight = Some((bytes, h, 0));
                    }
                }
            },
        }
    }
    state.connected.store(false, Ordering::SeqCst);
    for (_, _, done) in queue {
        let _ = done.send(Err(Error::ChannelClosed));
    }
    // Fail the sends still waiting in the queue rather than leaving them hanging.
    out.close();
    while let Ok(m) = out.try_recv() {
        if let Outgoing::Msg { done, .. } = m {
            let _ = done.send(Err(Error::ChannelClosed));
        }
    }
}

/// Read one chunk, collecting any descriptors that came with it.
fn read_chunk(raw: RawFd, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> io::Result<usize> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 16]);
    let msg = recvmsg::<()>(raw, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let n = msg.bytes;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(received) = c {
                for fd in received {
                    // SAFETY: the kernel just installed this descriptor for us.
                    fds.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
    }
    Ok(n)
}

async fn reader(
    stream: Arc<UnixStream>,
    inc: mpsc::Sender<Incoming>,
    ctl: mpsc::UnboundedSender<Control>,
    state: Arc<State>,
    max_message: usize,
) {
    let raw = stream.as_raw_fd();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut fds: VecDeque<OwnedFd> = VecDeque::new();
    let mut framer = Framer::new(max_message);
    let mut frames = Vec::new();
    loop {
        let n = match stream
            .async_io(Interest::READABLE, || read_chunk(raw, &mut chunk, &mut fds))
            .await
        {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "IPC read failed; closing the channel");
                break;
            }
        };
        framer.push(&chunk[..n], &mut frames);
        for frame in frames.drain(..) {
            let item = match frame {
                Frame::Line(no, line) => handle_line(&line, no, &mut fds, &ctl),
                Frame::TooLarge(_) => Some(Incoming::Error(Error::MessageTooLarge {
                    limit: max_message,
                })),
            };
            if let Some(item) = item {
                // If nobody listens any more, keep answering the handle
                // protocol but drop user messages.
                let _ = inc.send(item).await;
            }
        }
    }
    state.connected.store(false, Ordering::SeqCst);
}

/// Turn one complete line into what the user sees (or nothing, for the
/// handle protocol's acknowledgements).
fn handle_line(
    line: &[u8],
    line_no: u64,
    fds: &mut VecDeque<OwnedFd>,
    ctl: &mpsc::UnboundedSender<Control>,
) -> Option<Incoming> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            let preview: String = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
            return Some(Incoming::Error(Error::NotJson {
                line_no,
                reason: e.to_string(),
                preview,
            }));
        }
    };
    let cmd = value.get("cmd").and_then(Value::as_str).unwrap_or("");
    if !cmd.starts_with("NODE_") {
        return Some(Incoming::Message(value, None));
    }
    match cmd {
        "NODE_HANDLE_ACK" => {
            let _ = ctl.send(Control::Ack);
            None
        }
        "NODE_HANDLE_NACK" => {
            let _ = ctl.send(Control::Nack);
            None
        }
        "NODE_HANDLE" => {
            let Some(fd) = fds.pop_front() else {
                let _ = ctl.send(Control::Internal(
                    b"{\"cmd\":\"NODE_HANDLE_NACK\"}\n".to_vec(),
                ));
                return None;
            };
            let _ = ctl.send(Control::Internal(
                b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n".to_vec(),
            ));
            let ty = value.get("type").and_then(Value::as_str).unwrap_or("");
            let msg = value.get("msg").cloned().unwrap_or(Value::Null);
            match Handle::from_received(fd, ty) {
                Ok(h) => Some(Incoming::Message(msg, Some(h))),
                Err(e) => Some(Incoming::Error(e)),
            }
        }
        _ => Some(Incoming::Internal(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn next(ch: &mut Channel) -> Incoming {
        tokio::time::timeout(Duration::from_secs(10), ch.recv())
            .await
            .expect("timed out")
            .expect("closed")
    }

    #[tokio::test]
    async fn messages_internal_and_garbage() {
        let (a, fd) = pair().unwrap();
        let mut b = Channel::from_fd(fd).unwrap();
        a.send(&json!({"text": "hi \u{2028} ü"}), None)
            .await
            .unwrap();
        a.send(&42, None).await.unwrap();
        a.send(&json!({"cmd": "NODE_CLUSTER", "act": "online"}), None)
            .await
            .unwrap();
        match next(&mut b).await {
            Incoming::Message(v, None) => assert_eq!(v["text"], "hi \u{2028} ü"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(next(&mut b).await, Incoming::Message(v, None) if v == 42));
        assert!(matches!(next(&mut b).await, Incoming::Internal(v) if v["act"] == "online"));
        // Raw garbage on the wire is reported, and the channel goes on.
        let (mut c, fd) = pair().unwrap();
        let raw = std::os::unix::net::UnixStream::from(fd);
        use std::io::Write;
        (&raw).write_all(b"{oops\n\"ok\"\n").unwrap();
        assert!(matches!(
            next(&mut c).await,
            Incoming::Error(Error::NotJson { line_no: 1, .. })
        ));
        assert!(matches!(next(&mut c).await, Incoming::Message(v, None) if v == "ok"));
        drop(raw);
        assert!(tokio::time::timeout(Duration::from_secs(10), c.recv())
            .await
            .unwrap()
            .is_none());
        assert!(!c.connected());
    }

    #[tokio::test]
    async fn handles_pass_and_are_acknowledged() {
        let (a, fd) = pair().unwrap();
        let mut b = Channel::from_fd(fd).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for i in 0..3 {
            let s = std::net::TcpStream::connect(addr).unwrap();
            a.send(&json!({ "n": i }), Some(Handle::from(s)))
                .await
                .unwrap();
        }
        for i in 0..3 {
            match next(&mut b).await {
                Incoming::Message(v, Some(Handle::TcpStream(s))) => {
                    assert_eq!(v["n"], i);
                    assert_eq!(s.peer_addr().unwrap(), addr);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn oversized_lines_are_dropped() {
        let (a, fd) = pair().unwrap();
        let mut b = Channel::with_limit(fd, 1000).unwrap();
        a.send(&"x".repeat(5000), None).await.unwrap();
        a.send(&"small", None).await.unwrap();
        assert!(matches!(
            next(&mut b).await,
            Incoming::Error(Error::MessageTooLarge { .. })
        ));
        assert!(matches!(next(&mut b).await, Incoming::Message(v, None) if v == "small"));
    }
}
