//! The receive side: several SO_REUSEPORT sockets per address, each read by
//! its own thread with `recvmmsg(2)` (up to [`BATCH`] datagrams per call) into
//! preallocated buffers, parsed straight into that thread's [`Shard`].
//!
//! Each datagram carries the kernel's receive timestamp (`SO_TIMESTAMPNS`):
//! gauge operations keep it, so shards fed by different sockets merge in
//! arrival order, not in the order their threads happened to run.
//!
//! Threads block in `recvmmsg` with a short `SO_RCVTIMEO`, so they notice the
//! stop flag within [`POLL`], drain what is already queued, and exit; the
//! flusher then takes the last interval.
//!
//! Under load a thread would otherwise be woken for every few datagrams
//! (each burst a sender's `sendmmsg` makes), and the wake-ups cost more CPU
//! than the parsing. So a call that emptied the queue after at least
//! [`COALESCE_MIN`] datagrams (traffic is flowing) is followed by a
//! [`COALESCE`] nap, during which the kernel queues the next datagrams for
//! one call. At a trickle nothing changes: a call that got fewer goes
//! straight back to waiting. The nap delays a metric by at most
//! [`COALESCE`], nothing next to a flush interval, and the receive buffer
//! holds far more than a nap's worth.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::aggregate::{ingest, now_ns, BadSample, KeyBuf, Shard};
use crate::error::{io_err, Error, Result};

/// Datagrams read per `recvmmsg` call.
pub const BATCH: usize = 64;
/// `recvmmsg` calls a stopping thread makes to drain its queue, at most.
pub const MAX_DRAIN_BATCHES: usize = 1024;
/// Control buffer per datagram, in 8-byte words (room for one
/// `SCM_TIMESTAMPNS` message and more).
const CONTROL_WORDS: usize = 8;
/// How often a blocked receive thread checks for shutdown.
pub const POLL: Duration = Duration::from_millis(100);
/// A call that emptied the queue after this many datagrams or more naps
/// for [`COALESCE`] before the next.
pub const COALESCE_MIN: usize = 4;
/// The nap after such a call.
pub const COALESCE: Duration = Duration::from_micros(500);

/// Open `count` sockets bound to `addr` with SO_REUSEPORT (the first one
/// picks the port when `addr` has port 0), each with a receive buffer of
/// `rcvbuf` bytes (forced past `rmem_max` when the process may).
pub fn bind_sockets(addr: SocketAddr, count: usize, rcvbuf: usize) -> Result<Vec<UdpSocket>> {
    // SO_REUSEPORT would let us share a port that another collector (with
    // the option too) already holds, silently splitting its traffic: probe
    // with a plain bind first.
    if addr.port() != 0 {
        UdpSocket::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    }
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(io_err("create UDP socket"))?;
        s.set_reuse_port(true).map_err(io_err("set SO_REUSEPORT"))?;
        if addr.is_ipv6() {
            s.set_only_v6(false).map_err(io_err("clear IPV6_V6ONLY"))?;
        }
        set_rcvbuf(&s, rcvbuf);
        enable_timestamps(&s)?;
        s.set_read_timeout(Some(POLL))
            .map_err(io_err("set SO_RCVTIMEO"))?;
        s.bind(&addr.into())
            .map_err(|source| Error::Bind { addr, source })?;
        let sock: UdpSocket = s.into();
        addr = sock
            .local_addr()
            .map_err(io_err("read the bound address"))?;
        out.push(sock);
    }
    Ok(out)
}

/// Ask the kernel to stamp each datagram with its arrival time.
fn enable_timestamps(s: &Socket) -> Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid fd, a c_int value and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io_err("set SO_TIMESTAMPNS")(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The `SCM_TIMESTAMPNS` time of a received message, in nanoseconds since
/// the epoch.
fn arrival(hdr: &libc::msghdr) -> Option<u64> {
    // SAFETY: `hdr` was filled by recvmmsg; its control pointer and length
    // describe our buffer, and the CMSG macros stay inside them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// Ask for `bytes` of receive buffer: SO_RCVBUFFORCE first (needs
/// CAP_NET_ADMIN), then SO_RCVBUF (capped by `net.core.rmem_max`).
fn set_rcvbuf(s: &Socket, bytes: usize) {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt with a valid fd, a c_int value and its size.
    let forced = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    if !forced {
        if let Err(e) = s.set_recv_buffer_size(bytes) {
            tracing::warn!(error = %e, "cannot set SO_RCVBUF");
        }
    }
    if let Ok(got) = s.recv_buffer_size() {
        // Linux reports double the asked size (bookkeeping overhead).
        if got < bytes {
            tracing::warn!(
                asked = bytes,
                got,
                "receive buffer smaller than asked (raise net.core.rmem_max)"
            );
        }
    }
}

/// Read `sock` until `stop` is set, parsing into `shard`.
/// A socket that passes datagrams on to `addr` (`--relay`): connected,
/// non-blocking, so a relay that is slow or down costs datagrams (counted),
/// never the receive loop.
pub fn relay_socket(addr: std::net::SocketAddr) -> std::io::Result<UdpSocket> {
    let local: std::net::SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(local)?;
    s.connect(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Pass a received batch on to the relay, datagram by datagram, as
/// received: a truncated one, a full send buffer or a refusal (nothing
/// listens there) is counted in `relay_dropped`.
fn relay_batch(
    relay: &UdpSocket,
    msgs: &[libc::mmsghdr],
    bufs: &[u8],
    max_datagram: usize,
    shard: &Shard,
) {
    let (mut sent, mut dropped) = (0u64, 0u64);
    for (m, chunk) in msgs.iter().zip(bufs.chunks(max_datagram)) {
        let len = (m.msg_len as usize).min(max_datagram);
        if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            dropped += 1;
            continue;
        }
        match relay.send(&chunk[..len]) {
            Ok(_) => sent += 1,
            Err(_) => dropped += 1,
        }
    }
    shard.stats.relayed.fetch_add(sent, Ordering::Relaxed);
    if dropped > 0 {
        shard
            .stats
            .relay_dropped
            .fetch_add(dropped, Ordering::Relaxed);
    }
}

pub fn receive_loop(
    sock: UdpSocket,
    shard: Arc<Shard>,
    bad: Arc<BadSample>,
    stop: Arc<AtomicBool>,
    max_datagram: usize,
    relay: Option<UdpSocket>,
) {
    let mut bufs = vec![0u8; BATCH * max_datagram];
    let mut control = vec![0u64; BATCH * CONTROL_WORDS];
    let mut key = KeyBuf::default();
    let fd = sock.as_raw_fd();
    let mut iovs: Vec<libc::iovec> = bufs
        .chunks_mut(max_datagram)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr() as *mut libc::c_void,
            iov_len: c.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(control.chunks_mut(CONTROL_WORDS))
        .map(|(iov, ctl)| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = ctl.as_mut_ptr() as *mut libc::c_void;
            m
        })
        .collect();
    let control_len = CONTROL_WORDS * std::mem::size_of::<u64>();
    // Batches read after the stop flag: bounded, so a sender that never
    // pauses cannot keep a stopping collector alive.
    let mut drained = 0usize;
    loop {
        // Once stopping, drain what the kernel already queued (without
        // waiting), so the last flush has it, then end.
        let draining = stop.load(Ordering::Relaxed);
        if draining {
            drained += 1;
            if drained > MAX_DRAIN_BATCHES {
                break;
            }
        }
        let flags = if draining {
            libc::MSG_DONTWAIT
        } else {
            libc::MSG_WAITFORONE
        };
        // The kernel shortens msg_controllen to what it wrote: reset it.
        for m in msgs.iter_mut() {
            m.msg_hdr.msg_controllen = control_len as _;
        }
        // SAFETY: `msgs` holds BATCH headers whose iovecs point into `bufs`
        // and whose control buffers point into `control`, both outliving the
        // call; the kernel writes at most iov_len / msg_controllen bytes each.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            if draining {
                break;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => continue,
                _ => {
                    tracing::warn!(error = %e, "recvmmsg failed");
                    std::thread::sleep(POLL);
                    continue;
                }
            }
        }
        let n = n as usize;
        let mut bytes = 0u64;
        let mut oversized = 0u64;
        {
            let mut interval = shard.interval.lock();
            for (m, chunk) in msgs.iter().take(n).zip(bufs.chunks(max_datagram)) {
                let len = m.msg_len as usize;
                bytes += len as u64;
                if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    oversized += 1;
                    continue;
                }
                let at = arrival(&m.msg_hdr).unwrap_or_else(now_ns);
                ingest(
                    &chunk[..len.min(max_datagram)],
                    at,
                    &mut interval,
                    &mut key,
                    &shard.stats,
                    &bad,
                );
            }
        }
        if let Some(r) = &relay {
            relay_batch(r, &msgs[..n], &bufs, max_datagram, &shard);
        }
        shard.stats.packets.fetch_add(n as u64, Ordering::Relaxed);
        shard.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        if oversized > 0 {
            shard
                .stats
                .oversized
                .fetch_add(oversized, Ordering::Relaxed);
            tracing::debug!(
                oversized,
                max_datagram,
                "dropped datagrams longer than max_datagram"
            );
        }
        if !draining && (COALESCE_MIN..BATCH).contains(&n) {
            std::thread::sleep(COALESCE);
        }
    }
}
