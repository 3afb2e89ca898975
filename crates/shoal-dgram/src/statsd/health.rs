//! The collector's own health figures: totals over the shards, and what the
//! kernel knows about our sockets (per-socket drops in `/proc/net/udp{,6}`,
//! and the host's `RcvbufErrors` in `/proc/net/snmp`).

use std::sync::atomic::Ordering;

use super::aggregate::Shard;

/// Totals since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// Datagrams (and TCP lines batches) received.
    pub packets: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Metric lines accepted.
    pub metrics: u64,
    /// Lines refused as malformed.
    pub bad_lines: u64,
    /// Datagrams longer than `max_datagram`, dropped.
    pub oversized: u64,
    /// DogStatsD events received (counted, then dropped).
    pub events: u64,
    /// DogStatsD service checks received (counted, then dropped).
    pub service_checks: u64,
    /// Datagrams passed on to the relay.
    pub relayed: u64,
    /// Datagrams the relay could not pass on.
    pub relay_dropped: u64,
    /// Lines of new series dropped: a shard already held `max_series` in
    /// its interval, or the collector already kept `max_series` in all.
    pub series_dropped: u64,
    /// Series forgotten after `series_ttl` without an update.
    pub series_expired: u64,
    /// Series kept now (a gauge: `since` keeps the current value).
    pub series: u64,
    /// Datagrams the kernel dropped on our sockets (full receive buffer).
    pub kernel_drops: u64,
    /// The host-wide UDP `RcvbufErrors` counter, since we started.
    pub rcvbuf_errors: u64,
}

impl Health {
    /// Sum the live counters of `shards` and read the kernel's figures for
    /// the sockets whose inodes are `inodes`; `rcvbuf_base` is the host's
    /// `RcvbufErrors` at start.
    pub fn collect(shards: &[std::sync::Arc<Shard>], inodes: &[u64], rcvbuf_base: u64) -> Health {
        let mut h = Health::default();
        for s in shards {
            h.packets += s.stats.packets.load(Ordering::Relaxed);
            h.bytes += s.stats.bytes.load(Ordering::Relaxed);
            h.metrics += s.stats.metrics.load(Ordering::Relaxed);
            h.bad_lines += s.stats.bad_lines.load(Ordering::Relaxed);
            h.oversized += s.stats.oversized.load(Ordering::Relaxed);
            h.events += s.stats.events.load(Ordering::Relaxed);
            h.service_checks += s.stats.service_checks.load(Ordering::Relaxed);
            h.relayed += s.stats.relayed.load(Ordering::Relaxed);
            h.relay_dropped += s.stats.relay_dropped.load(Ordering::Relaxed);
            h.series_dropped += s.stats.series_dropped.load(Ordering::Relaxed);
        }
        h.kernel_drops = socket_drops(inodes);
        h.rcvbuf_errors = host_rcvbuf_errors().saturating_sub(rcvbuf_base);
        h
    }

    /// `self - earlier`, field by field (for per-interval summaries).
    pub fn since(&self, earlier: &Health) -> Health {
        Health {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            metrics: self.metrics.saturating_sub(earlier.metrics),
            bad_lines: self.bad_lines.saturating_sub(earlier.bad_lines),
            oversized: self.oversized.saturating_sub(earlier.oversized),
            events: self.events.saturating_sub(earlier.events),
            service_checks: self.service_checks.saturating_sub(earlier.service_checks),
            relayed: self.relayed.saturating_sub(earlier.relayed),
            relay_dropped: self.relay_dropped.saturating_sub(earlier.relay_dropped),
            series_dropped: self.series_dropped.saturating_sub(earlier.series_dropped),
            series_expired: self.series_expired.saturating_sub(earlier.series_expired),
            series: self.series,
            kernel_drops: self.kernel_drops.saturating_sub(earlier.kernel_drops),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
        }
    }
}

/// The inode of a socket descriptor (the key of `/proc/net/udp`).
pub fn socket_inode(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    nix::sys::stat::fstat(fd).ok().map(|st| st.st_ino)
}

/// Sum the `drops` column of `/proc/net/udp` and `/proc/net/udp6` for `inodes`.
pub fn socket_drops(inodes: &[u64]) -> u64 {
    if inodes.is_empty() {
        return 0;
    }
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| drops_in(&text, inodes))
        .sum()
}

fn drops_in(text: &str, inodes: &[u64]) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let inode: u64 = cols.get(9)?.parse().ok()?;
            if !inodes.contains(&inode) {
                return None;
            }
            cols.last()?.parse::<u64>().ok()
        })
        .sum()
}

/// The host's UDP `RcvbufErrors` (0 if unreadable).
pub fn host_rcvbuf_errors() -> u64 {
    std::fs::read_to_string("/proc/net/snmp")
        .ok()
        .and_then(|t| rcvbuf_in(&t))
        .unwrap_or(0)
}

fn rcvbuf_in(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let names = udp.next()?;
    let values = udp.next()?;
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_formats() {
        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:1F99 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
  2: 0100007F:1F9A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 5\n";
        assert_eq!(drops_in(udp, &[4242]), 17);
        assert_eq!(drops_in(udp, &[4242, 4243]), 22);
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 0 3 9 3 0\n";
        assert_eq!(rcvbuf_in(snmp), Some(3));
    }

    #[test]
    fn live_socket_has_an_inode_in_proc() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsFd;
        let ino = socket_inode(s.as_fd()).unwrap();
        let text = std::fs::read_to_string("/proc/net/udp").unwrap();
        assert!(
            text.contains(&format!(" {ino} ")),
            "inode {ino} not in /proc/net/udp"
        );
    }
}
