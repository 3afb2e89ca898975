//! `shoal cluster --log-dir`: worker output in files, each line with its
//! time and worker, whole lines only under concurrent workers, rotation by
//! size, reopen on SIGUSR1 (logrotate), `ctl logs` (tail and follow), `ctl
//! flush`, and a directory that cannot be written costing lines, not the
//! cluster.

mod cluster_support;

use cluster_support::*;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

/// A Node worker that prints what `ctl send '{"print":N,"tag":T,"width":W}'` asks.
fn printer(dir: &Path) -> String {
    write_script(
        dir,
        "print.js",
        r#"
const id = process.env.SHOAL_WORKER_ID;
process.on('message', (m) => {
  if (!m || !m.print) return;
  const pad = 'x'.repeat(m.width || 0);
  for (let i = 0; i < m.print; i++) console.log(`${m.tag} w${id} n${i} ${pad}`);
  console.error(`${m.tag} w${id} to stderr`);
});
process.send('ready');
setInterval(() => {}, 1000);
"#,
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `2026-12-06T19:20:01.123Z [NAME ID] rest`: the time, the id and the rest.
fn parse_line<'a>(name: &str, line: &'a str) -> (&'a str, u64, &'a str) {
    let (time, rest) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "not an RFC 3339 time: {line:?}"
    );
    let rest = rest
        .strip_prefix(&format!("[{name} "))
        .unwrap_or_else(|| panic!("no [{name} id]: {line:?}"));
    let (id, text) = rest.split_once("] ").unwrap();
    (time, id.parse().unwrap(), text)
}

/// Two `printer` workers (ready over IPC) writing to `logs`, with `extra` flags.
fn start_printers(name: &str, dir: &Path, logs: &Path, extra: &[&str]) -> Primary {
    let script = printer(dir);
    let mut flags = vec![
        "-w",
        "2",
        "--ready",
        "ipc",
        "--log-dir",
        logs.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    let mut p = Primary::start(name, &flags, &["node", &script]);
    p.all_online(2);
    p
}

#[test]
fn lines_carry_time_and_worker_never_interleave_and_rotate_by_size() {
    let dir = TempDir::new();
    let logs = dir.path().join("logs");
    let p = start_printers(
        "lg",
        dir.path(),
        &logs,
        &["--log-max-size", "64K", "--log-keep", "2"],
    );
    // Both workers print 1500 lines of ~100 bytes at once: ~300 KB in
    // 64 KiB files, so several rotations, of which two are kept.
    p.ctl_json(&["send", r#"{"print":1500,"tag":"burst","width":80}"#]);
    let out = logs.join("lg-out.log");
    let files = [
        out.clone(),
        logs.join("lg-out.log.1"),
        logs.join("lg-out.log.2"),
    ];
    wait_until("both workers' last lines", || {
        let all: String = files.iter().map(|f| read(f)).collect();
        all.contains("burst w1 n1499 ") && all.contains("burst w2 n1499 ")
    });
    assert!(!logs.join("lg-out.log.3").exists());
    let mut lines = 0;
    for f in &files {
        let text = read(f);
        assert!(
            text.len() <= 64 << 10,
            "{} is {} bytes",
            f.display(),
            text.len()
        );
        for line in text.lines() {
            let (_, id, text) = parse_line("lg", line);
            // The line is whole: the worker named in the prefix wrote all of it.
            let want = format!("burst w{id} n");
            assert!(text.starts_with(&want), "{line:?}");
            assert!(text.ends_with(&format!(" {}", "x".repeat(80))), "{line:?}");
            lines += 1;
        }
    }
    assert!(lines > 1000, "{lines}");
    // stderr has its own file.
    wait_until("stderr lines", || {
        let e = read(&logs.join("lg-error.log"));
        e.contains("burst w1 to stderr") && e.contains("burst w2 to stderr")
    });
    assert!(!read(&out).contains("to stderr"));

    // status names the files; the table shows them.
    let st = p.ctl_json(&["status"]);
    let paths: Vec<&str> = st["status"]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2, "{st}");
    assert!(paths[0].ends_with("lg-out.log") && paths[1].ends_with("lg-error.log"));
    let table = String::from_utf8_lossy(&p.ctl(&["status"]).stdout).into_owned();
    assert!(
        table.contains("log out") && table.contains("lg-error.log"),
        "{table}"
    );

    // ctl logs: the last N lines of each file, under a header naming it.
    let o = p.ctl(&["logs", "--lines", "4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let shown: Vec<&str> = text.lines().filter(|l| !l.starts_with("==> ")).collect();
    assert_eq!(shown.len(), 4 + 2, "{text}");
    assert!(text.contains("lg-out.log (last 4 lines)"), "{text}");
    let current = read(&out);
    let last_out: Vec<&str> = current.lines().rev().take(4).collect();
    for l in last_out {
        assert!(shown.contains(&l), "{l:?} not in\n{text}");
    }

    // ctl flush empties the files and drops the rotated ones.
    assert_eq!(p.ctl_json(&["flush"])["flushed"], 2);
    assert_eq!(read(&out), "");
    assert!(!logs.join("lg-out.log.1").exists());
}

#[test]
fn sigusr1_reopens_a_renamed_file_and_ctl_logs_follows_it() {
    let dir = TempDir::new();
    let logs = dir.path().join("logs");
    let p = start_printers("ro", dir.path(), &logs, &["--merge-logs"]);
    let file = logs.join("ro.log");
    p.ctl_json(&["send", r#"{"print":1,"tag":"before"}"#]);
    wait_until("before lines, stdout and stderr in one file", || {
        let t = read(&file);
        (1..=2).all(|w| {
            t.contains(&format!("before w{w} n0")) && t.contains(&format!("before w{w} to stderr"))
        })
    });

    // Follow from now on, as a user would in another terminal.
    let mut follower = std::process::Command::new(shoal())
        .args(["ctl", "--name", "ro", "logs", "--follow", "--lines", "0"])
        .env("SHOAL_RUNTIME_DIR", p.rt.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let fout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(fout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // Give it time to open the file before it moves.
    std::thread::sleep(Duration::from_millis(500));

    // logrotate's way: move the file, then SIGUSR1.
    let moved = logs.join("ro.log.moved");
    std::fs::rename(&file, &moved).unwrap();
    p.signal("USR1");
    p.wait_log("log file reopened");
    p.ctl_json(&["send", r#"{"print":1,"tag":"after"}"#]);
    wait_until("after lines in the new file", || {
        let t = read(&file);
        t.contains("after w1 n0") && t.contains("after w2 n0")
    });
    assert!(!read(&moved).contains("after"), "{}", read(&moved));
    assert!(read(&moved).contains("before w1 n0"));

    // The follower crossed to the new file by name.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + T;
    while !(seen.iter().any(|l: &String| l.contains("after w1 n0"))
        && seen.iter().any(|l: &String| l.contains("after w2 n0")))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("ctl logs --follow never showed the new lines: {seen:?}"),
        }
    }
    assert!(!seen.iter().any(|l| l.contains("before")), "{seen:?}");
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn an_unwritable_log_dir_drops_and_counts_lines_and_the_cluster_goes_on() {
    let dir = TempDir::new();
    // A regular file where a directory is needed: not writable, even for root.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let logs = blocker.join("logs");
    let p = start_printers("nd", dir.path(), &logs, &[]);
    p.ctl_json(&["send", r#"{"print":3,"tag":"lost"}"#]);
    // 2 workers × (3 stdout + 1 stderr) lines.
    wait_until("8 lines dropped", || {
        let st = p.ctl_json(&["status"]);
        st["status"]["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["dropped_lines"].as_u64().unwrap())
            .sum::<u64>()
            == 8
    });
    let log = p.log();
    assert!(log.contains("cannot create the log directory"), "{log}");
    // Logged once per file, not per line.
    assert_eq!(
        log.matches("worker output is dropped (and counted)")
            .count(),
        2,
        "{log}"
    );
    assert_eq!(pids(&p).len(), 2);
    let table = String::from_utf8_lossy(&p.ctl(&["status"]).stdout).into_owned();
    assert!(table.contains("lines dropped"), "{table}");
}

#[test]
fn a_worker_flooding_stdout_does_not_grow_the_primary() {
    let dir = TempDir::new();
    let logs = dir.path().join("logs");
    // ~48 MB of 1 KB lines as fast as the pipe takes them, into 1 MiB files.
    let line = "y".repeat(1000);
    let flood = format!("yes {line} | head -c 48000000; echo flood-done; sleep 60");
    let mut p = Primary::start(
        "fl",
        &[
            "-w",
            "1",
            "--node-cluster",
            "off",
            "--log-dir",
            logs.to_str().unwrap(),
            "--log-max-size",
            "1M",
            "--log-keep",
            "1",
        ],
        &["sh", "-c", &flood],
    );
    p.all_online(1);
    wait_until("the flood to end", || {
        read(&logs.join("fl-out.log")).contains("flood-done")
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(peak_kib < 64 << 10, "primary peak RSS {peak_kib} KiB");
    assert!(std::fs::metadata(logs.join("fl-out.log")).unwrap().len() <= 1 << 20);
}
