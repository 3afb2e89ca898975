//! A statsd load generator (`shoal bench statsd`): prebuilt datagrams of
//! `lines_per_datagram` metric lines over `names` distinct names, sent with
//! `sendmmsg(2)` from several sockets (so SO_REUSEPORT spreads them) at a
//! paced total rate of metric lines per second, for a fixed duration.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::error::{io_err, Error, Result};

/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 32;

/// The metric types a run sends, cycled line by line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `name:1|c`
    Counter,
    /// `name:<0..1000>|ms`
    Timer,
    /// `name:<0..1000>|g`
    Gauge,
    /// `name:<member>|s`
    Set,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "c" => Ok(Kind::Counter),
            "ms" => Ok(Kind::Timer),
            "g" => Ok(Kind::Gauge),
            "s" => Ok(Kind::Set),
            _ => Err(format!("unknown metric type {s:?} (use c, ms, g, s)")),
        }
    }
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Where to send.
    pub target: SocketAddr,
    /// Metric lines per second, all senders together.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// Distinct metric names.
    pub names: usize,
    /// Metric lines per datagram.
    pub lines_per_datagram: usize,
    /// The mix of types, cycled.
    pub mix: Vec<Kind>,
    /// Sending sockets (one thread each).
    pub senders: usize,
    /// Name prefix (`bench` → `bench.17`).
    pub prefix: String,
}

/// What a run sent.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Metric lines sent.
    pub metrics: u64,
    /// Counter lines sent (each `:1|c`, so a collector's counter sum should equal it).
    pub counter_metrics: u64,
    /// Datagrams sent.
    pub datagrams: u64,
    /// `sendmmsg` calls the kernel refused (ENOBUFS, ECONNREFUSED, ...); their datagrams are not counted above.
    pub send_errors: u64,
    /// Seconds spent sending.
    pub seconds: f64,
    /// `metrics / seconds`.
    pub rate: f64,
}

fn build_datagrams(spec: &LoadSpec, sender: usize) -> Vec<(Vec<u8>, u64, u64)> {
    // 64 different datagrams per sender, cycling names and values.
    let mut out = Vec::new();
    let mut line_no = sender * 7919;
    for _ in 0..64 {
        let mut d = Vec::with_capacity(spec.lines_per_datagram * 24);
        let mut counters = 0u64;
        for i in 0..spec.lines_per_datagram {
            if i > 0 {
                d.push(b'\n');
            }
            let name = line_no % spec.names.max(1);
            let kind = spec.mix[line_no % spec.mix.len()];
            let v = (line_no * 37) % 1000;
            let line = match kind {
                Kind::Counter => {
                    counters += 1;
                    format!("{}.{name}:1|c", spec.prefix)
                }
                Kind::Timer => format!("{}.t{name}:{v}|ms", spec.prefix),
                Kind::Gauge => format!("{}.g{name}:{v}|g", spec.prefix),
                Kind::Set => format!("{}.s{name}:{v}|s", spec.prefix),
            };
            d.extend_from_slice(line.as_bytes());
            line_no += 1;
        }
        out.push((d, spec.lines_per_datagram as u64, counters));
    }
    out
}

/// Send for `spec.duration` at `spec.rate`; returns what was sent.
pub fn run(spec: &LoadSpec) -> Result<LoadReport> {
    if spec.mix.is_empty() || spec.lines_per_datagram == 0 || spec.senders == 0 || spec.rate == 0 {
        return Err(Error::Invalid(
            "rate, senders, lines per datagram and mix must be non-empty".into(),
        ));
    }
    let bind: SocketAddr = if spec.target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| Error::Invalid("bind address".into()))?;
    let mut handles = Vec::new();
    for sender in 0..spec.senders {
        let sock = UdpSocket::bind(bind).map_err(io_err("bind a sender socket"))?;
        sock.connect(spec.target)
            .map_err(io_err(format!("connect to {}", spec.target)))?;
        let datagrams = build_datagrams(spec, sender);
        let per_sender = spec.rate as f64 / spec.senders as f64;
        let duration = spec.duration;
        handles.push(std::thread::spawn(move || {
            send_loop(&sock, &datagrams, per_sender, duration)
        }));
    }
    let mut total = LoadReport::default();
    for h in handles {
        let r = h
            .join()
            .map_err(|_| Error::Invalid("a sender thread panicked".into()))?;
        total.metrics += r.metrics;
        total.counter_metrics += r.counter_metrics;
        total.datagrams += r.datagrams;
        total.send_errors += r.send_errors;
        total.seconds = total.seconds.max(r.seconds);
    }
    total.rate = if total.seconds > 0.0 {
        total.metrics as f64 / total.seconds
    } else {
        0.0
    };
    Ok(total)
}

fn send_loop(
    sock: &UdpSocket,
    datagrams: &[(Vec<u8>, u64, u64)],
    rate: f64,
    duration: Duration,
) -> LoadReport {
    let mut r = LoadReport::default();
    let fd = sock.as_raw_fd();
    let start = Instant::now();
    let mut next = 0usize;
    let mut iovs: Vec<libc::iovec> = Vec::with_capacity(SEND_BATCH);
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(SEND_BATCH);
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (rate * elapsed.as_secs_f64()) as u64;
        if r.metrics >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // Enough datagrams to catch up, at most one batch.
        let lines = datagrams[0].1.max(1);
        let want = (((due - r.metrics) / lines) as usize + 1).min(SEND_BATCH);
        iovs.clear();
        msgs.clear();
        for i in 0..want {
            let d = &datagrams[(next + i) % datagrams.len()].0;
            iovs.push(libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            });
        }
        for iov in iovs.iter_mut() {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            msgs.push(m);
        }
        // SAFETY: `msgs` has `want` headers pointing at iovecs over buffers
        // in `datagrams`, all alive for the call; the socket is connected.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), want as libc::c_uint, 0) };
        if n < 0 {
            r.send_errors += 1;
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        for i in 0..n as usize {
            let (_, lines, counters) = &datagrams[(next + i) % datagrams.len()];
            r.metrics += lines;
            r.counter_metrics += counters;
            r.datagrams += 1;
        }
        next = (next + n as usize) % datagrams.len();
    }
    r.seconds = start.elapsed().as_secs_f64();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_paced_counters_that_add_up() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let spec = LoadSpec {
            target: rx.local_addr().unwrap(),
            rate: 2000,
            duration: Duration::from_millis(200),
            names: 5,
            lines_per_datagram: 10,
            mix: vec![Kind::Counter],
            senders: 1,
            prefix: "t".into(),
        };
        let r = run(&spec).unwrap();
        assert!(r.metrics > 0 && r.metrics == r.counter_metrics);
        assert_eq!(r.metrics, r.datagrams * 10);
        let mut got = 0u64;
        let mut buf = [0u8; 2048];
        while got < r.datagrams {
            let n = rx.recv(&mut buf).unwrap();
            let text = std::str::from_utf8(&buf[..n]).unwrap();
            assert_eq!(text.lines().count(), 10);
            assert!(
                text.lines()
                    .all(|l| l.starts_with("t.") && l.ends_with(":1|c")),
                "{text}"
            );
            got += 1;
        }
    }
}
