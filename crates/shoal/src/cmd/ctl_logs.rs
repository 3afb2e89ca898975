//! `shoal ctl logs`: the last lines of a cluster's `--log-dir` files (like
//! `pm2 logs`), and with `--follow` the new ones as they are written, across
//! rotation (a renamed or recreated file is followed by name) and flushes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

/// How often `--follow` looks for new lines.
const POLL: Duration = Duration::from_millis(200);

/// Most bytes read back from a file's end to find the last lines.
const TAIL_BYTES: u64 = 16 << 20;

/// One log file as the cluster's status names it.
struct LogFile {
    stream: String,
    path: PathBuf,
}

/// Print the last `lines` of each of `name`'s log files, then follow them if asked.
pub fn run(
    name: &str,
    lines: usize,
    follow: bool,
    as_json: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let reply = super::ctl::request(name, &json!({"cmd": "status"}), timeout)?;
    if reply["ok"] != true {
        anyhow::bail!("{name}: {}", reply["error"].as_str().unwrap_or("no status"));
    }
    if let Some(up) = reply.get("up") {
        let clusters: Vec<&str> = up["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["part"].as_str()?.strip_prefix("cluster."))
            .collect();
        anyhow::bail!(
            "{name}: unknown command \"logs\" (shoal up knows {}); logs is a cluster's: shoal ctl --name CLUSTER logs (its clusters: {})",
            super::ctl::UP_ACCEPTS,
            clusters.join(", ")
        );
    }
    let files: Vec<LogFile> = reply["status"]["logs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| {
                    Some(LogFile {
                        stream: f["stream"].as_str()?.to_string(),
                        path: f["path"].as_str()?.into(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        anyhow::bail!(
            "{name}: writes no log files; start the cluster with --log-dir DIR (without it, worker output goes to the primary's own stdout/stderr)"
        );
    }
    let mut out = Printer {
        as_json,
        last: None,
        several: files.len() > 1,
    };
    let mut followed = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let (text, end) =
            tail(&f.path, lines).with_context(|| format!("reading {}", f.path.display()))?;
        if !as_json {
            out.header(i, f, &format!("last {lines} lines"));
        }
        for l in text.lines() {
            if !out.line(i, f, l) {
                return Ok(());
            }
        }
        followed.push(Follow::at(f, end));
    }
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(POLL);
        for (i, (f, fl)) in files.iter().zip(followed.iter_mut()).enumerate() {
            for l in fl.poll() {
                if !out.line(i, f, &l) {
                    return Ok(());
                }
            }
        }
    }
}

/// Lines to stdout; false once stdout is gone (`| head`).
struct Printer {
    as_json: bool,
    /// The file the last line came from, for `tail -f`-style headers.
    last: Option<usize>,
    several: bool,
}

impl Printer {
    fn header(&mut self, i: usize, f: &LogFile, what: &str) {
        self.last = Some(i);
        let _ = writeln!(std::io::stdout(), "==> {} ({what}) <==", f.path.display());
    }

    fn line(&mut self, i: usize, f: &LogFile, l: &str) -> bool {
        let mut o = std::io::stdout().lock();
        let r = if self.as_json {
            let v: Value =
                json!({"stream": f.stream, "path": f.path.display().to_string(), "line": l});
            writeln!(o, "{v}")
        } else {
            if self.several && self.last != Some(i) {
                drop(o);
                self.header(i, f, "new lines");
                o = std::io::stdout().lock();
            }
            writeln!(o, "{l}")
        };
        r.and_then(|_| o.flush()).is_ok()
    }
}

/// The last `n` lines of `path` (at most [`TAIL_BYTES`] read), and the
/// file's length when read. A missing file has none.
fn tail(path: &std::path::Path, n: usize) -> std::io::Result<(String, u64)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    // Read backwards in blocks until n+1 newlines (the last line's own one too).
    while start > 0 && len - start < TAIL_BYTES && bytecount(&buf) <= n {
        let step = start.min(64 << 10);
        start -= step;
        let mut block = vec![0u8; step as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    // The first piece may be a partial line when we did not read from 0.
    let skip_partial = usize::from(start > 0 && !all.is_empty());
    let keep = all.len().saturating_sub(skip_partial).min(n);
    Ok((all[all.len() - keep..].join("\n"), len))
}

fn bytecount(b: &[u8]) -> usize {
    b.iter().filter(|c| **c == b'\n').count()
}

/// A file followed by name: its open handle, where we are, and a line not
/// yet ended.
struct Follow {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pos: u64,
    partial: Vec<u8>,
}

impl Follow {
    fn at(f: &LogFile, end: u64) -> Follow {
        let file = File::open(&f.path).ok();
        let ino = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.ino());
        Follow {
            path: f.path.clone(),
            file,
            ino,
            pos: end,
            partial: Vec::new(),
        }
    }

    /// New complete lines: the rest of the open file, then, if the name
    /// now points to another file (rotated) or a shorter one (flushed),
    /// that one from its start.
    fn poll(&mut self) -> Vec<String> {
        let mut out = self.drain();
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return out;
        };
        if self.file.is_none() || meta.ino() != self.ino || meta.len() < self.pos {
            self.file = File::open(&self.path).ok();
            self.ino = meta.ino();
            self.pos = 0;
            self.partial.clear();
            out.extend(self.drain());
        }
        out
    }

    fn drain(&mut self) -> Vec<String> {
        let Some(f) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.pos)).is_err()
            || f.take(TAIL_BYTES).read_to_end(&mut buf).is_err()
        {
            return Vec::new();
        }
        self.pos += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|c| *c == b'\n') else {
            return Vec::new();
        };
        let done: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&done)
            .lines()
            .map(String::from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_finds_the_last_lines_and_follow_crosses_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        let (t, end) = tail(&p, 3).unwrap();
        assert_eq!(t, "line 99997\nline 99998\nline 99999");
        assert_eq!(end, text.len() as u64);
        assert_eq!(tail(&dir.path().join("none"), 3).unwrap().0, "");
        let lf = LogFile {
            stream: "out".into(),
            path: p.clone(),
        };
        let mut f = Follow::at(&lf, end);
        assert!(f.poll().is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"new 1\nhalf")
            .unwrap();
        assert_eq!(f.poll(), ["new 1"]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b" done\n")
            .unwrap();
        std::fs::rename(&p, dir.path().join("a.log.1")).unwrap();
        std::fs::write(&p, "fresh\n").unwrap();
        assert_eq!(f.poll(), ["half done", "fresh"]);
    }
}
