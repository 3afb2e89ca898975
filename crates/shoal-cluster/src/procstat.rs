//! Resource use of a process from `/proc`: resident memory and the CPU time
//! it has used, for `shoal ctl status` and the benchmark.

/// A process's memory and CPU use.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Usage {
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
    /// User + system CPU time used so far, in seconds.
    pub cpu_seconds: f64,
}

/// Read `/proc/<pid>/stat` and `/proc/<pid>/statm`; `None` if the process is gone.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 counting from field 3.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    Some(Usage {
        rss_bytes: pages * page.max(1) as u64,
        cpu_seconds: ticks / hz.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_our_own_usage() {
        let u = super::usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
        assert!(u.cpu_seconds >= 0.0);
        assert!(super::usage(u32::MAX - 1).is_none());
    }
}
