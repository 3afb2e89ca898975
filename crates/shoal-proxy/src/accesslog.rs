//! The access log in nginx's `combined` format, written by one background
//! task to a file or stdout. Requests hand lines over a bounded channel; when
//! the writer falls behind, lines are dropped and counted rather than slowing
//! the proxy.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// A handle that queues log lines.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
    metrics: Arc<Metrics>,
}

/// One request's fields for the combined format.
pub struct Entry<'a> {
    pub client: IpAddr,
    pub method: &'a str,
    pub target: &'a str,
    pub minor: u8,
    pub status: u16,
    pub bytes: u64,
    pub referer: &'a str,
    pub user_agent: &'a str,
}

impl AccessLog {
    /// Open `path` (`-` = stdout) for appending and start the writer task.
    pub async fn open(path: &str, metrics: Arc<Metrics>) -> std::io::Result<AccessLog> {
        let (tx, mut rx) = mpsc::channel::<String>(8192);
        let mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = if path == "-" {
            Box::new(tokio::io::stdout())
        } else {
            Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?,
            )
        };
        tokio::spawn(async move {
            let mut batch = String::new();
            while let Some(line) = rx.recv().await {
                batch.push_str(&line);
                while let Ok(more) = rx.try_recv() {
                    batch.push_str(&more);
                    if batch.len() > 64 * 1024 {
                        break;
                    }
                }
                if let Err(e) = out.write_all(batch.as_bytes()).await {
                    tracing::error!(error = %e, "access log write failed");
                }
                let _ = out.flush().await;
                batch.clear();
            }
        });
        Ok(AccessLog { tx, metrics })
    }

    /// Queue one line.
    pub fn log(&self, e: &Entry<'_>) {
        let mut line = String::with_capacity(160);
        let _ = write!(line, "{} - - [{}] ", e.client, clf_time(SystemTime::now()));
        if e.method.is_empty() {
            // A request line too broken to repeat (rejected with 400/431/408).
            line.push_str("\"-\"");
        } else {
            let _ = write!(line, "\"{} {} HTTP/1.{}\"", e.method, e.target, e.minor);
        }
        let _ = writeln!(
            line,
            " {} {} \"{}\" \"{}\"",
            e.status,
            e.bytes,
            if e.referer.is_empty() { "-" } else { e.referer },
            if e.user_agent.is_empty() {
                "-"
            } else {
                e.user_agent
            },
        );
        if self.tx.try_send(line).is_err() {
            self.metrics.log_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `10/Oct/2000:13:55:36 +0000` (UTC).
pub fn clf_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_nginx() {
        let t = UNIX_EPOCH + Duration::from_secs(971_186_136); // 2000-10-10 13:55:36 UTC
        assert_eq!(clf_time(t), "10/Oct/2000:13:55:36 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(clf_time(t).starts_with("29/Feb/2000:00:00:00"));
    }
}
