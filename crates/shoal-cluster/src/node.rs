//! Node's cluster protocol, spoken by a Rust primary, so that a Node program
//! that calls `server.listen(8080)` runs under `shoal cluster` unchanged.
//!
//! A Node worker is started with `NODE_UNIQUE_ID` (its id) beside its IPC
//! channel, so `cluster.isWorker` is true in it. Its `net` and `dgram`
//! servers then ask the primary for their socket instead of binding it:
//! `{cmd: "NODE_CLUSTER", act: "queryServer", seq, address, port,
//! addressType, fd, index}`. The primary binds each distinct request once
//! (Node's key `address:port:addressType:fd:index`) and answers
//! `{cmd: "NODE_CLUSTER", ack: seq, errno: 0, key, data: null}` with the
//! listening socket attached as a raw handle (`net.Native`,
//! `dgram.Native`): the kernel then spreads connections over the workers
//! (Node's `SharedHandle`). With [`Schedule::ReusePort`] each worker gets a socket of
//! its own with `SO_REUSEPORT` instead, for an even spread. A bind that
//! fails is answered with libuv's negative errno and no handle, so that the
//! worker's server emits Node's own error (`EADDRINUSE`, `EACCES`).
//!
//! `listen({fd: N})` (the form Shoal's own examples use) asks for descriptor
//! N: it is answered with the primary's listener N - 3, the socket the
//! worker would have inherited at fd N. The other acts: `online`,
//! `listening` (the worker's server is accepting: an event, and readiness),
//! `close` (a worker closed a server), `exitedAfterDisconnect` (acknowledged).
//! The primary asks a worker to go with `{act: "disconnect"}`: Node closes
//! its servers, lets their connections finish and disconnects.
//!
//! Unlike Node's primary, a shared socket stays bound while the cluster
//! runs, even when every worker using it has died: the replacement gets the
//! same socket, and connections that arrive meanwhile wait in its backlog.
//! It is closed when the last worker using it closes it (`close`).
//!
//! Every socket handed over is non-blocking (the flag is shared by every
//! copy of it), as libuv requires of a socket that several processes
//! accept on.
//!
//! With [`Schedule::RoundRobin`] a TCP server is instead accepted on by the
//! primary, which hands each connection to a worker in turn (Node's
//! round-robin mode, see [`crate::node_rr`]).
//!
//! Malformed messages are logged with the worker's id and answered, when
//! they carry a `seq`, with `EINVAL`; they never affect other workers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use shoal_process::Handle;
use socket2::{Domain, Protocol, Socket, Type};

use crate::node_rr;

/// How a Node worker's TCP servers get their connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// One listening socket shared by every worker; the kernel picks the
    /// worker that accepts (Node's `SCHED_NONE`).
    Shared,
    /// A `SO_REUSEPORT` socket per worker: the kernel spreads connections
    /// evenly over them.
    ReusePort,
    /// The primary accepts and hands each connection to the next worker
    /// (Node's `SCHED_RR`).
    RoundRobin,
}

impl std::str::FromStr for Schedule {
    type Err = crate::ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shared" | "none" => Ok(Schedule::Shared),
            "reuse-port" | "reuseport" => Ok(Schedule::ReusePort),
            "rr" | "round-robin" => Ok(Schedule::RoundRobin),
            _ => Err(crate::ClusterError::Spec(format!(
                "--schedule {s}: expected shared, reuse-port or rr"
            ))),
        }
    }
}

impl Schedule {
    /// Node's `NODE_CLUSTER_SCHED_POLICY` (`rr` or `none`), read as Node's
    /// primary reads it; anything else leaves the default, shared.
    pub fn from_env() -> Schedule {
        match std::env::var("NODE_CLUSTER_SCHED_POLICY").as_deref() {
            Ok("rr") => Schedule::RoundRobin,
            _ => Schedule::Shared,
        }
    }

    /// The name `--schedule` takes.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Shared => "shared",
            Schedule::ReusePort => "reuse-port",
            Schedule::RoundRobin => "rr",
        }
    }
}

/// libuv's error numbers are negated errno values on Unix.
fn uv_errno(e: &std::io::Error) -> i64 {
    -i64::from(e.raw_os_error().unwrap_or(libc::EINVAL))
}

/// Whether a worker speaks Node's cluster protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeCluster {
    /// When the command is `node` (or `nodejs`, `node20`, a path to one).
    Auto,
    /// Always (`NODE_UNIQUE_ID` is set for every worker).
    On,
    /// Never: workers get only inherited fds and a plain IPC channel.
    Off,
}

impl std::str::FromStr for NodeCluster {
    type Err = crate::ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(NodeCluster::Auto),
            "on" | "true" => Ok(NodeCluster::On),
            "off" | "false" => Ok(NodeCluster::Off),
            _ => Err(crate::ClusterError::Spec(format!(
                "--node-cluster {s}: expected auto, on or off"
            ))),
        }
    }
}

impl NodeCluster {
    /// Whether workers running `exec` speak the protocol.
    pub fn applies_to(self, exec: &std::ffi::OsStr) -> bool {
        match self {
            NodeCluster::On => true,
            NodeCluster::Off => false,
            NodeCluster::Auto => {
                let name = std::path::Path::new(exec)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("");
                let rest = name
                    .strip_prefix("nodejs")
                    .or_else(|| name.strip_prefix("node"));
                rest.is_some_and(|r| r.chars().all(|c| c.is_ascii_digit()))
            }
        }
    }
}

/// What a worker's `NODE_CLUSTER` message asks.
#[derive(Debug, PartialEq)]
pub(crate) enum Act {
    Online,
    Query(Query),
    /// `address` as the worker said it; `key` finds the socket bound.
    Listening {
        address: String,
        key: String,
    },
    Close {
        key: String,
    },
    ExitedAfterDisconnect {
        seq: Value,
    },
    /// Malformed, with the reason and the `seq` to answer, if any.
    Bad {
        reason: String,
        seq: Option<Value>,
    },
    /// The answer to the primary's `newconn` number `seq`.
    Accepted {
        seq: u64,
        accepted: bool,
    },
    /// An act the primary has nothing to do for.
    Ignored(String),
}

/// A `queryServer` request.
#[derive(Debug, PartialEq)]
pub(crate) struct Query {
    pub seq: Value,
    pub key: String,
    pub address: Option<String>,
    pub port: u16,
    /// `None` for `listen({fd})`, whose `addressType` is null: the kind is
    /// the inherited socket's.
    pub kind: Option<Kind>,
    pub fd: Option<i32>,
}

/// What kind of socket a query wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp4,
    Tcp6,
    /// Node's `addressType` -1: a Unix socket path or Windows pipe.
    Pipe,
    Udp4,
    Udp6,
}

/// Node's key for a server (`address:port:addressType:fd:index`), which
/// the worker also sends back in `close`.
fn node_key(msg: &Value) -> String {
    let text = |k: &str| match msg.get(k) {
        None | Some(Value::Null) => "null".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    format!(
        "{}:{}:{}:{}:{}",
        text("address"),
        text("port"),
        text("addressType"),
        text("fd"),
        text("index")
    )
}

/// Read a `NODE_CLUSTER` message.
pub(crate) fn parse(msg: &Value) -> Act {
    let seq = msg.get("seq").cloned();
    let bad = |reason: &str| Act::Bad {
        reason: reason.into(),
        seq: seq.clone(),
    };
    let Some(act) = msg.get("act").and_then(Value::as_str) else {
        // A worker's answer to `newconn` (round-robin): `{ack, accepted}`.
        if let (Some(seq), Some(accepted)) = (
            msg.get("ack").and_then(Value::as_u64),
            msg.get("accepted").and_then(Value::as_bool),
        ) {
            return Act::Accepted { seq, accepted };
        }
        return bad("no act");
    };
    match act {
        "online" => Act::Online,
        "queryServer" => {
            let Some(seq) = seq.clone() else {
                return bad("queryServer without seq");
            };
            let fd = msg
                .get("fd")
                .and_then(Value::as_i64)
                .filter(|f| *f >= 0)
                .and_then(|f| i32::try_from(f).ok());
            let kind = match msg.get("addressType") {
                Some(Value::Number(n)) if n.as_i64() == Some(4) => Some(Kind::Tcp4),
                Some(Value::Number(n)) if n.as_i64() == Some(6) => Some(Kind::Tcp6),
                Some(Value::Number(n)) if n.as_i64() == Some(-1) => Some(Kind::Pipe),
                Some(Value::String(s)) if s == "udp4" => Some(Kind::Udp4),
                Some(Value::String(s)) if s == "udp6" => Some(Kind::Udp6),
                None | Some(Value::Null) if fd.is_some() => None,
                _ => return bad("queryServer with an unknown addressType"),
            };
            let port = match msg.get("port") {
                None | Some(Value::Null) => 0,
                Some(p) => match p.as_u64().and_then(|p| u16::try_from(p).ok()) {
                    Some(p) => p,
                    None => return bad("queryServer with a port outside 0..65535"),
                },
            };
            let address = match msg.get("address") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return bad("queryServer with an address that is not a string"),
            };
            let key = node_key(msg);
            Act::Query(Query {
                seq,
                key,
                address,
                port,
                kind,
                fd,
            })
        }
        "listening" => {
            let host = msg.get("address").and_then(Value::as_str);
            let port = msg.get("port").and_then(Value::as_u64);
            let address = match (host, port) {
                (Some(h), Some(p)) if h.contains(':') => format!("[{h}]:{p}"),
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (None, Some(p)) => format!("*:{p}"),
                (Some(h), None) => h.to_string(),
                (None, None) => "?".into(),
            };
            Act::Listening {
                address,
                key: node_key(msg),
            }
        }
        "close" => match msg.get("key").and_then(Value::as_str) {
            Some(k) => Act::Close { key: k.into() },
            None => bad("close without key"),
        },
        "exitedAfterDisconnect" => match seq {
            Some(seq) => Act::ExitedAfterDisconnect { seq },
            None => bad("exitedAfterDisconnect without seq"),
        },
        other => Act::Ignored(other.into()),
    }
}

/// One socket handed to workers, and which workers hold it.
struct Shared {
    socket: Socket,
    users: BTreeSet<u64>,
}

/// A server the primary accepts on (round-robin), and which workers serve it.
struct RoundRobin {
    tx: tokio::sync::mpsc::UnboundedSender<node_rr::Msg>,
    address: Option<String>,
    users: BTreeSet<u64>,
}

/// The sockets Node workers asked for.
#[derive(Default)]
pub(crate) struct Servers {
    shared: BTreeMap<String, Shared>,
    rr: BTreeMap<String, RoundRobin>,
    /// The primary's message numbers (shared with the round-robin tasks).
    seq: Arc<AtomicU64>,
}

/// An answer to send a worker: the message, and the handle to attach.
pub(crate) struct Answer {
    pub msg: Value,
    pub handle: Option<Handle>,
    /// Round-robin: once the answer is written, the worker is added here.
    pub then_add: Option<tokio::sync::mpsc::UnboundedSender<node_rr::Msg>>,
}

impl Servers {
    /// Sockets bound for workers now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shared.len() + self.rr.len()
    }

    /// A message from the primary, numbered as Node's primary numbers its own.
    pub fn message(&mut self, mut body: Value) -> Value {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        body["cmd"] = Value::from("NODE_CLUSTER");
        body["seq"] = Value::from(seq);
        body
    }

    /// An answer without a handle.
    pub fn answer(&mut self, body: Value) -> Answer {
        Answer {
            msg: self.message(body),
            handle: None,
            then_add: None,
        }
    }

    /// Round-robin: answer `q` with the address only (Node's faux handle),
    /// binding the server and starting its accepting task on first use.
    fn query_rr(&mut self, worker: u64, q: &Query, bind_host: Option<IpAddr>) -> Answer {
        if !self.rr.contains_key(&q.key) {
            let started = bind(q, false, bind_host).and_then(|s| {
                let address = shown(&s);
                let tx = node_rr::start(q.key.clone(), s.into(), self.seq.clone())?;
                Ok(RoundRobin {
                    tx,
                    address,
                    users: BTreeSet::new(),
                })
            });
            match started {
                Ok(r) => {
                    self.rr.insert(q.key.clone(), r);
                }
                Err(e) => {
                    return self.answer(json!({
                        "ack": q.seq, "errno": uv_errno(&e), "key": q.key, "data": null,
                    }))
                }
            }
        }
        let Some(r) = self.rr.get_mut(&q.key) else {
            unreachable!("inserted above")
        };
        r.users.insert(worker);
        let tx = r.tx.clone();
        let sockname = r
            .address
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map(|a| {
                json!({
                    "address": a.ip().to_string(),
                    "family": if a.is_ipv6() { "IPv6" } else { "IPv4" },
                    "port": a.port(),
                })
            });
        let mut a = self.answer(json!({
            "ack": q.seq, "errno": 0, "key": q.key, "data": null, "sockname": sockname,
        }));
        a.then_add = Some(tx);
        a
    }

    /// Worker `worker` answered round-robin connection `seq`; the server
    /// that sent it knows it by its number.
    pub fn accepted(&self, worker: u64, seq: u64, accepted: bool) {
        for r in self.rr.values() {
            let _ = r.tx.send(node_rr::Msg::Ack {
                worker,
                seq,
                accepted,
            });
        }
    }

    /// Worker `worker`'s channel has ended: round-robin connections it
    /// never answered for go to other workers.
    pub fn channel_closed(&self, worker: u64) {
        for r in self.rr.values() {
            let _ = r.tx.send(node_rr::Msg::Gone { worker });
        }
    }

    /// Answer `q` from worker `worker`: a socket (shared, or one of its own
    /// with `ReusePort`; `bind_host` stands in for an address the worker
    /// left out), the address of a server the primary accepts on
    /// (`RoundRobin`, TCP only), the listener the worker inherited at that
    /// fd for `listen({fd})` (`inherited[0]` is fd 3; with `ReusePort` it
    /// is the worker's own socket, so answering with another socket of the
    /// group would leave the inherited one listening unserved), or an errno.
    pub fn query(
        &mut self,
        worker: u64,
        q: &Query,
        inherited: &[Socket],
        schedule: Schedule,
        bind_host: Option<IpAddr>,
    ) -> Answer {
        if schedule == Schedule::RoundRobin
            && q.fd.is_none()
            && matches!(q.kind, Some(Kind::Tcp4 | Kind::Tcp6))
        {
            return self.query_rr(worker, q, bind_host);
        }
        let reuse_port = schedule == Schedule::ReusePort;
        let reply = |servers: &mut Servers, errno: i64, handle: Option<Handle>| {
            let mut a = servers.answer(json!({
                "ack": q.seq, "errno": errno, "key": q.key, "data": null,
            }));
            a.handle = handle;
            a
        };
        let socket = if let Some(fd) = q.fd {
            match usize::try_from(fd - crate::role::LISTEN_FDS_START)
                .ok()
                .and_then(|i| inherited.get(i))
            {
                Some(s) => s.try_clone(),
                None => Err(std::io::Error::from_raw_os_error(libc::EBADF)),
            }
        } else if let Some(s) = self.shared.get_mut(&q.key).filter(|_| !reuse_port) {
            s.users.insert(worker);
            s.socket.try_clone()
        } else {
            match bind(q, reuse_port, bind_host) {
                Ok(sock) if reuse_port => Ok(sock),
                Ok(sock) => {
                    let copy = sock.try_clone();
                    self.shared.insert(
                        q.key.clone(),
                        Shared {
                            socket: sock,
                            users: BTreeSet::from([worker]),
                        },
                    );
                    copy
                }
                Err(e) => Err(e),
            }
        };
        // Non-blocking, as a socket Node made itself would be: libuv
        // accepts when epoll says a connection is waiting, and with the
        // socket shared another worker may take it first; a blocking
        // accept would then hang that worker's whole event loop (its IPC
        // channel, `disconnect`, everything) until the next connection.
        match socket.and_then(|s| {
            s.set_nonblocking(true)?;
            to_handle(s)
        }) {
            Ok(h) => reply(self, 0, Some(h)),
            Err(e) => reply(self, uv_errno(&e), None),
        }
    }

    /// Worker `worker` closed the server `key`; the socket closes with its
    /// last user.
    pub fn close(&mut self, worker: u64, key: &str) {
        if let Some(r) = self.rr.get_mut(key) {
            let _ = r.tx.send(node_rr::Msg::Close { worker });
            r.users.remove(&worker);
            if r.users.is_empty() {
                self.rr.remove(key);
            }
        }
        if let Some(s) = self.shared.get_mut(key) {
            s.users.remove(&worker);
            if s.users.is_empty() {
                self.shared.remove(key);
            }
        }
    }

    /// Worker `worker` is gone. Its sockets stay bound for its
    /// replacement (see the module docs).
    pub fn forget(&mut self, worker: u64) {
        for s in self.shared.values_mut() {
            s.users.remove(&worker);
        }
        for r in self.rr.values_mut() {
            r.users.remove(&worker);
        }
    }

    /// The address bound for the server `key`, if it is shared.
    pub fn address_of(&self, key: &str) -> Option<String> {
        match self.rr.get(key) {
            Some(r) => r.address.clone(),
            None => self.shared.get(key).and_then(|s| shown(&s.socket)),
        }
    }

    /// The addresses bound for workers, for status.
    pub fn addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .shared
            .values()
            .filter_map(|s| shown(&s.socket))
            .chain(self.rr.values().filter_map(|r| r.address.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// A socket's address as status shows it.
fn shown(s: &Socket) -> Option<String> {
    let a = s.local_addr().ok()?;
    match a.as_socket() {
        Some(a) => Some(a.to_string()),
        None => a.as_pathname().map(|p| format!("unix:{}", p.display())),
    }
}

/// The address a query binds: the worker's, else `bind_host`, else every
/// interface (`::` with IPv4 mapped, as Node binds, falling back to
/// `0.0.0.0` where IPv6 is off).
fn bind(q: &Query, reuse_port: bool, bind_host: Option<IpAddr>) -> std::io::Result<Socket> {
    let kind = q
        .kind
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    if kind == Kind::Pipe {
        let path = q
            .address
            .as_deref()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        s.bind(&socket2::SockAddr::unix(path)?)?;
        s.listen(511)?;
        return Ok(s);
    }
    let ip = match (&q.address, bind_host) {
        (Some(a), _) => a
            .parse::<IpAddr>()
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?,
        (None, Some(h)) => h,
        (None, None) if matches!(kind, Kind::Tcp4 | Kind::Udp4) => {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
        (None, None) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let open = |ip: IpAddr| -> std::io::Result<Socket> {
        let addr = SocketAddr::new(ip, q.port);
        let udp = matches!(kind, Kind::Udp4 | Kind::Udp6);
        let (ty, proto) = if udp {
            (Type::DGRAM, Protocol::UDP)
        } else {
            (Type::STREAM, Protocol::TCP)
        };
        let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
        s.set_reuse_address(true)?;
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        if ip.is_ipv6() && ip.is_unspecified() {
            s.set_only_v6(false)?;
        }
        s.bind(&addr.into())?;
        if !udp {
            s.listen(511)?;
        }
        Ok(s)
    };
    match open(ip) {
        Err(e)
            if q.address.is_none()
                && bind_host.is_none()
                && ip.is_ipv6()
                && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            open(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        }
        r => r,
    }
}

/// The socket as the handle its kind is sent as.
fn to_handle(s: Socket) -> std::io::Result<Handle> {
    let (domain, ty) = (s.domain()?, s.r#type()?);
    let fd = OwnedFd::from(s);
    Ok(if ty == Type::DGRAM {
        Handle::UdpSocket(fd.into())
    } else if domain == Domain::UNIX {
        Handle::UnixListener(fd.into())
    } else {
        Handle::TcpListener(fd.into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_with_nodes_key() {
        let m = json!({"cmd":"NODE_CLUSTER","act":"queryServer","seq":3,"address":null,
            "port":8080,"addressType":4,"fd":-1,"index":0,"backlog":511});
        let Act::Query(q) = parse(&m) else {
            panic!("{:?}", parse(&m))
        };
        assert_eq!(q.key, "null:8080:4:-1:0");
        assert_eq!(
            (q.port, q.kind, q.fd, q.address),
            (8080, Some(Kind::Tcp4), None, None)
        );
        let m = json!({"act":"queryServer","seq":4,"address":"::1","port":0,"addressType":"udp6","fd":3,"index":1});
        let Act::Query(q) = parse(&m) else { panic!() };
        assert_eq!(
            (q.kind, q.fd, q.address.as_deref()),
            (Some(Kind::Udp6), Some(3), Some("::1"))
        );
        // listen({fd: 3}): no addressType, no port.
        let m = json!({"act":"queryServer","seq":1,"address":null,"port":null,"addressType":null,"fd":3,"index":0});
        let Act::Query(q) = parse(&m) else { panic!() };
        assert_eq!((q.kind, q.fd, q.port), (None, Some(3), 0));
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        for (m, why) in [
            (json!({"seq": 1}), "no act"),
            (
                json!({"act":"queryServer","port":80,"addressType":4}),
                "without seq",
            ),
            (
                json!({"act":"queryServer","seq":1,"port":70000,"addressType":4}),
                "port outside",
            ),
            (
                json!({"act":"queryServer","seq":1,"port":1,"addressType":"tcp9"}),
                "addressType",
            ),
            (
                json!({"act":"queryServer","seq":1,"port":1,"addressType":4,"address":5}),
                "not a string",
            ),
            (json!({"act":"close"}), "without key"),
        ] {
            match parse(&m) {
                Act::Bad { reason, .. } => assert!(reason.contains(why), "{reason} / {why}"),
                other => panic!("{m}: {other:?}"),
            }
        }
    }

    #[test]
    fn newconn_answers_and_schedules_parse() {
        let m = json!({"cmd":"NODE_CLUSTER","ack":12,"accepted":false,"seq":4});
        assert_eq!(
            parse(&m),
            Act::Accepted {
                seq: 12,
                accepted: false
            }
        );
        for (s, want) in [
            ("shared", Schedule::Shared),
            ("none", Schedule::Shared),
            ("reuse-port", Schedule::ReusePort),
            ("rr", Schedule::RoundRobin),
        ] {
            assert_eq!(s.parse::<Schedule>().unwrap(), want);
        }
        let e = "random".parse::<Schedule>().unwrap_err().to_string();
        assert!(e.contains("expected shared, reuse-port or rr"), "{e}");
    }

    #[test]
    fn auto_means_a_node_executable() {
        for (exec, yes) in [
            ("node", true),
            ("/usr/bin/nodejs", true),
            ("node20", true),
            ("python3", false),
            ("nodemon", false),
            ("npm", false),
        ] {
            assert_eq!(NodeCluster::Auto.applies_to(exec.as_ref()), yes, "{exec}");
        }
    }

    #[test]
    fn a_shared_socket_is_bound_once_and_refusals_carry_the_errno() {
        let inherited: Vec<Socket> = Vec::new();
        let mut s = Servers::default();
        let q = |seq: u64, port: u16, index: u64| {
            let Act::Query(q) = parse(&json!({"act":"queryServer","seq":seq,"address":"127.0.0.1",
                "port":port,"addressType":4,"fd":-1,"index":index}))
            else {
                panic!()
            };
            q
        };
        let a = s.query(1, &q(1, 0, 0), &inherited, Schedule::Shared, None);
        let b = s.query(2, &q(1, 0, 0), &inherited, Schedule::Shared, None);
        let port = |a: &Answer| match &a.handle {
            Some(Handle::TcpListener(l)) => l.local_addr().unwrap().port(),
            other => panic!("{other:?}"),
        };
        assert_eq!(port(&a), port(&b), "one socket for one key");
        assert_eq!(s.len(), 1);
        let c = s.query(1, &q(2, 0, 1), &inherited, Schedule::Shared, None);
        assert_ne!(port(&a), port(&c), "another index, another socket");
        // The port is now in use by someone else: EADDRINUSE, no handle.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = q(3, taken.local_addr().unwrap().port(), 0);
        let r = s.query(1, &busy, &inherited, Schedule::Shared, None);
        assert!(r.handle.is_none());
        assert_eq!(r.msg["errno"], -i64::from(libc::EADDRINUSE));
        assert_eq!(r.msg["ack"], 3);
        assert_eq!(r.msg["cmd"], "NODE_CLUSTER");
        // Closing by both users closes the socket.
        let key = q(1, 0, 0).key;
        s.close(1, &key);
        assert_eq!(s.len(), 2);
        s.close(2, &key);
        assert_eq!(s.len(), 1);
    }
}
