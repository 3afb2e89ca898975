//! `shoal proxy` driven as a binary: `--check`, the quick form in front of
//! the chapter's Node servers, reload by SIGHUP and through the control
//! socket (`shoal_core::control::request`), graceful stop on SIGTERM, and a
//! server found over DNS (a dnsmasq on a loopback port) as `--check`,
//! `shoal ctl status` and curl on the admin listener show it.

mod proxy_support;

use proxy_support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn node_host(name: &str) -> (Proc, u16) {
    let mut cmd = Command::new("node");
    cmd.arg(workspace().join("examples/proxy/server.js"))
        .args(["0", name]);
    listening(cmd)
}

/// Send `sig` (e.g. `-TERM`) to the proxy child by its pid.
fn signal(p: &Proc, sig: &str) {
    let pid = p.0.id().to_string();
    // The shell's built-in `kill`: no procps needed.
    let cmd = format!("kill {sig} {pid}");
    assert!(Command::new("sh")
        .args(["-c", &cmd])
        .status()
        .unwrap()
        .success());
}

#[test]
fn check_accepts_the_example_and_names_file_line_key_on_errors() {
    let out = shoal(Path::new("/tmp"))
        .args(["proxy", "--check"])
        .arg(workspace().join("examples/proxy.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("upstream lb_servers"));

    let dir = TempDir::new("check");
    let bad = dir.0.join("bad.toml");
    std::fs::write(
        &bad,
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.web]\nservers = [ { address = \"127.0.0.1:1\", weight = 0 } ]\n[[routes]]\nupstream = \"web\"\n",
    )
    .unwrap();
    let out = shoal(&dir.0)
        .args(["proxy", "--check"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("bad.toml:4") && err.contains("upstreams.web.servers[0].weight"),
        "{err}"
    );
}

#[test]
fn quick_form_balances_node_servers_and_stops_on_sigterm() {
    let (_one, p1) = node_host("one");
    let (_two, p2) = node_host("two");
    let dir = TempDir::new("quick");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut proxy = Proc(
        shoal(&dir.0)
            .args(["-q", "proxy", "--listen", &addr.to_string()])
            .args(["--upstream", &format!("127.0.0.1:{p1}")])
            .args(["--upstream", &format!("127.0.0.1:{p2},weight=1")])
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(30, || get(addr).is_some()),
        "proxy never answered"
    );
    let mut one = 0;
    for _ in 0..20 {
        match get(addr).as_deref() {
            Some("HOST one") => one += 1,
            Some("HOST two") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((9..=11).contains(&one), "round robin split {one}/20");
    signal(&proxy, "-TERM");
    assert!(
        wait_until(30, || matches!(proxy.0.try_wait(), Ok(Some(_)))),
        "did not stop on SIGTERM"
    );
}

#[test]
fn reload_by_sighup_and_by_control_socket() {
    let (_one, p1) = node_host("one");
    let (_two, p2) = node_host("two");
    let dir = TempDir::new("reload");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let file = dir.0.join("proxy.toml");
    let write = |up: u16| {
        std::fs::write(
            &file,
            format!("[[listeners]]\naddress = \"{addr}\"\n[upstreams.web]\nservers = [ {{ address = \"127.0.0.1:{up}\" }} ]\n[[routes]]\nupstream = \"web\"\n"),
        )
        .unwrap()
    };
    write(p1);
    let proxy = Proc(
        shoal(&dir.0)
            .args(["-q", "proxy", "--name", "rl", "--config"])
            .arg(&file)
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(30, || get(addr).as_deref() == Some("HOST one")));

    // SIGHUP: the new file takes effect for new requests.
    write(p2);
    signal(&proxy, "-HUP");
    assert!(
        wait_until(30, || get(addr).as_deref() == Some("HOST two")),
        "SIGHUP reload did not apply"
    );

    // The control socket ($SHOAL_RUNTIME_DIR/NAME.sock, as
    // shoal_core::control::socket_path computes): `shoal ctl --name rl reload`
    // sends this request.
    let sock = dir.0.join("rl.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ask = |cmd: &str| {
        rt.block_on(shoal_core::control::request(
            &sock,
            &serde_json::json!({ "cmd": cmd }),
            Duration::from_secs(20),
        ))
        .unwrap()
    };
    write(p1);
    let r = ask("reload");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["generation"], 3, "{r}");
    assert_eq!(get(addr).as_deref(), Some("HOST one"));
    // A bad file is refused with file:line: key, and the old config stays.
    std::fs::write(
        &file,
        format!("[[listeners]]\naddress = \"{addr}\"\nwhat = 1\n"),
    )
    .unwrap();
    let r = ask("reload");
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("proxy.toml:3"), "{r}");
    assert_eq!(get(addr).as_deref(), Some("HOST one"));
    let st = ask("status");
    assert_eq!(st["ok"], true);
    assert_eq!(st["generation"], 3, "{st}");
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    // A Node backend that answers after 2 s.
    let mut child = Command::new("node")
        .arg("-e")
        .arg(
            "const s = require('http').createServer((q, r) => { console.log('got'); setTimeout(() => r.end('late'), 2000); })\
             .listen(0, '127.0.0.1', () => console.log('listening ' + s.address().port));",
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .unwrap()
        .parse()
        .unwrap();
    let _backend = Proc(child);
    let dir = TempDir::new("term");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut proxy = Proc(
        shoal(&dir.0)
            .args(["-q", "proxy", "--no-control", "--listen", &addr.to_string()])
            .args(["--upstream", &format!("127.0.0.1:{port}")])
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(30, || TcpStream::connect(addr).is_ok()));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Wait until the request reached the backend, then stop the proxy.
    line.clear();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "got");
    signal(&proxy, "-TERM");
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("late"), "{out}");
    assert!(wait_until(30, || matches!(proxy.0.try_wait(), Ok(Some(_)))));
}

fn curl(url: &str) -> Output {
    Command::new("curl")
        .args(["-s", "--max-time", "10", url])
        .output()
        .expect("curl")
}

fn dnsmasq(port: u16, hosts: &Path) -> Proc {
    let bin = ["/usr/sbin/dnsmasq", "/usr/local/sbin/dnsmasq"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("dnsmasq");
    let child = Command::new(bin)
        .arg("--no-daemon")
        .arg(format!(
            "--conf-file={}/../shoal-proxy/tests/fixtures/dnsmasq.conf",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(format!("--port={port}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (apt-get install dnsmasq-base)");
    let p = Proc(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        wait_until(10, || TcpStream::connect(addr).is_ok()),
        "dnsmasq"
    );
    p
}

#[test]
fn a_server_found_over_dns_shows_its_source_in_check_ctl_status_and_metrics() {
    let tmp = TempDir::new("dns");
    let dir = tmp.0.clone();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 web.internal\n").unwrap();
    // Free for TCP and UDP, below the ephemeral range: dnsmasq binds both.
    let dns_port = free_port();
    let _dns = dnsmasq(dns_port, &hosts);
    let (_node, web) = node_host("one");

    let (listen, admin) = (free_port(), free_port());
    let file = dir.join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:{listen}\"\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\n[resolver]\nnameservers = [\"127.0.0.1:{dns_port}\"]\nvalid = \"1s\"\n\n[upstreams.web]\nservers = [ {{ address = \"web.internal:{web}\", resolve = true }} ]\n\n[[routes]]\nupstream = \"web\"\n"
        ),
    )
    .unwrap();

    let out = shoal(&dir)
        .args(["proxy", "--check"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "upstream web (RoundRobin): 0 servers, and from DNS: web.internal:{web}"
        )),
        "{text}"
    );

    let _proxy = Proc(
        shoal(&dir)
            .args(["-q", "proxy", "--name", "dnsp", "--config"])
            .arg(&file)
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{listen}/");
    assert!(
        wait_until(30, || String::from_utf8_lossy(&curl(&url).stdout)
            .contains("HOST one")),
        "no answer through the proxy"
    );

    let out = shoal(&dir)
        .args(["ctl", "--name", "dnsp", "status"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let header = table.lines().find(|l| l.starts_with("UPSTREAM")).unwrap();
    assert!(header.ends_with("FROM"), "{table}");
    let row = table.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(
        row.contains(&format!("127.0.0.1:{web}")) && row.ends_with(&format!("web.internal:{web}")),
        "{table}"
    );

    let status = String::from_utf8_lossy(&curl(&format!("http://127.0.0.1:{admin}/status")).stdout)
        .into_owned();
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        v["discovery"][0]["source"],
        format!("web.internal:{web}"),
        "{v}"
    );
    assert_eq!(
        v["upstreams"][0]["servers"][0]["from"],
        format!("web.internal:{web}"),
        "{v}"
    );
    let metrics =
        String::from_utf8_lossy(&curl(&format!("http://127.0.0.1:{admin}/metrics")).stdout)
            .into_owned();
    let ok = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shoal_proxy_dns_lookups_total{result=\"ok\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(ok >= 1.0, "{metrics}");
}
