//! The dashboard of `shoal up`, with real clients on loopback: its JSON at
//! /api/status is the topology's status (the same as `shoal ctl --json
//! status`), its page and files are served from the binary, bad requests get
//! clear answers, and in a real browser (Debian's Chromium driven by
//! playwright-core) the page shows every part and its numbers change without
//! a reload when requests go through the proxy and a worker is killed.

mod cluster_support;
mod up_support;
use cluster_support::{get, kill, repo};
use up_support::{needs_node, node_available, start_topology};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One request on a fresh connection: the status code, the headers and body.
fn request(addr: &str, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[test]
fn the_json_endpoint_is_the_topology_status_and_the_page_is_served() {
    if !needs_node() {
        return;
    }
    let (up, p, _data) = start_topology();
    let dash = format!("127.0.0.1:{}", p.dashboard);
    let log = up.log();
    assert!(
        log.contains(&format!("dashboard      http://{dash}/")),
        "the banner does not name the dashboard:\n{log}"
    );

    let (code, body) = get(&dash, "/api/status").expect("no answer from the dashboard");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kinds: Vec<&str> = v["up"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["broker", "stats", "cluster", "proxy"], "{v}");
    assert_eq!(v["up"]["pid"], up.child.id(), "{v}");
    let workers = v["up"]["parts"][2]["status"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{v}");
    assert!(workers.iter().all(|w| w["pid"].as_u64().unwrap() > 0));
    // The same document as the control socket's (up to the live numbers).
    let out = up.ctl(&["--json", "status"]);
    let ctl: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        ctl["up"]["parts"][2]["status"]["workers"][0]["pid"],
        workers[0]["pid"]
    );
    // The broker's queues are listed with their counts.
    assert!(v["up"]["parts"][0]["queues"].is_array(), "{v}");

    // Requests through the proxy show in the next status.
    let proxy = format!("127.0.0.1:{}", p.proxy);
    for _ in 0..5 {
        assert_eq!(get(&proxy, "/").unwrap().0, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(&dash, "/api/status").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["up"]["parts"][3]["status"]["requests_total"].as_u64() >= Some(5) {
            break;
        }
        assert!(Instant::now() < deadline, "requests never counted: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The page and its files come from the binary; nothing from elsewhere.
    let (code, page) = get(&dash, "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<script src=\"/dashboard.js\">"), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    let (code, js) = get(&dash, "/dashboard.js").unwrap();
    assert_eq!(code, 200);
    assert!(js.contains("/api/status"));
    assert_eq!(get(&dash, "/dashboard.css").unwrap().0, 200);

    // Bad requests: clear answers, and it keeps serving.
    let (code, body) = get(&dash, "/nope").unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no such page"), "{body}");
    let (code, body) = request(
        &dash,
        "POST /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 405, "{body}");
    let (code, _) = request(&dash, "GARBAGE\r\n\r\n");
    assert_eq!(code, 400);
    assert_eq!(get(&dash, "/api/status").unwrap().0, 200);

    up.stop();
    // Its port is free again.
    std::net::TcpListener::bind(("127.0.0.1", p.dashboard)).unwrap();
}

#[test]
fn connections_past_the_limit_are_closed_and_idle_ones_dropped() {
    if !needs_node() {
        return;
    }
    let (up, p, _data) = start_topology();
    let dash = format!("127.0.0.1:{}", p.dashboard);
    // 32 connections that send nothing hold every slot...
    let idle: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(&dash).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // ...so one more is closed without an answer,
    let mut extra = TcpStream::connect(&dash).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    assert!(
        matches!(extra.read(&mut buf), Ok(0) | Err(_)),
        "a connection past the limit was served"
    );
    // ...until the idle ones are dropped (no request head within 10 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((200, _)) = get(&dash, "/api/status") {
            break;
        }
        assert!(Instant::now() < deadline, "the idle connections were kept");
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(idle);
    up.stop();
}

#[test]
fn the_page_in_chromium_shows_every_part_and_changes_without_a_reload() {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    let playwright = repo().join("tests/node/node_modules/playwright-core");
    if !node_available() || !chromium.exists() || !playwright.exists() {
        eprintln!("skipped: needs node, /usr/bin/chromium and tests/node/node_modules/playwright-core (cd tests/node && npm ci)");
        return;
    }
    let (up, p, _data) = start_topology();
    let script = repo().join("crates/shoal/tests/up_support/dashboard_check.js");
    let mut check = Command::new("node")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}/", p.dashboard))
        .arg(format!("127.0.0.1:{}", p.proxy))
        .env("NODE_PATH", repo().join("tests/node/node_modules"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    while check.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            kill(check.id(), "KILL");
            let _ = check.wait();
            panic!("the browser check took over 150 s:\n{}", up.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = check.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n--- shoal up:\n{}",
        String::from_utf8_lossy(&out.stderr),
        up.log()
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("the browser saw: {seen}");
    assert!(
        seen["requests1"].as_u64() >= seen["requests0"].as_u64().map(|n| n + 20),
        "{seen}"
    );
    assert_ne!(seen["pid0"], seen["pid1"], "{seen}");
    assert_eq!(seen["navigations"], 1, "{seen}");
    assert_eq!(seen["problem"], "", "{seen}");
    // The proxy's server row counted the answers.
    let answered: u64 = seen["responses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_u64())
        .sum();
    assert!(answered >= 20, "{seen}");
    up.stop();
}
