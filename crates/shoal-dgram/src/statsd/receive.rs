//! The receive side: several SO_REUSEPORT sockets per address, each read by
//! its own thread with `recvmmsg(2)` (up to [`BATCH`] datagrams per call) into
//! preallocated buffers, parsed straight into that thread's [`Shard`].
//!
//! Threads block in `recvmmsg` with a short `SO_RCVTIMEO`, so they notice the
//! stop flag within [`POLL`], drain what is already queued, and exit; the
//! flusher then takes the last interval.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::aggregate::{ingest, BadSample, KeyBuf, Shard};
use crate::error::{io_err, Error, Result};

/// Datagrams read per `recvmmsg` call.
pub const BATCH: usize = 64;
/// `recvmmsg` calls a stopping thread makes to drain its queue, at most.
pub const MAX_DRAIN_BATCHES: usize = 1024;
/// How often a blocked receive thread checks for shutdown.
pub const POLL: Duration = Duration::from_millis(100);

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
pub fn receive_loop(
    sock: UdpSocket,
    shard: Arc<Shard>,
    bad: Arc<BadSample>,
    stop: Arc<AtomicBool>,
    max_datagram: usize,
) {
    let mut bufs = vec![0u8; BATCH * max_datagram];
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
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
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
        // SAFETY: `msgs` holds BATCH headers whose iovecs point into `bufs`,
        // which outlives the call; the kernel writes at most iov_len bytes each.
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
                ingest(
                    &chunk[..len.min(max_datagram)],
                    &mut interval,
                    &mut key,
                    &shard.stats,
                    &bad,
                );
            }
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
    }
}
