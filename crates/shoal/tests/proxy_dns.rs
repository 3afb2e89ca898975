//! `shoal proxy` with a server found over DNS, driven as a user would: a
//! dnsmasq on a loopback port answers the name, the chapter's Node server
//! answers behind it, and `shoal proxy --check`, `shoal ctl status` and curl
//! on the admin listener show where the server came from.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A child killed by pid on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
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
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local=/internal/",
        ])
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
    let dir = std::env::temp_dir().join(format!("shoal-proxy-dns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 web.internal\n").unwrap();
    let dns_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _dns = dnsmasq(dns_port, &hosts);

    let mut node = Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/proxy/server.js"))
        .args(["0", "one"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut line = String::new();
    BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _node = Proc(node);
    let web: u16 = line
        .trim()
        .strip_prefix("listening ")
        .unwrap()
        .parse()
        .unwrap();

    let (listen, admin) = (free_port(), free_port());
    let file = dir.join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:{listen}\"\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\n[resolver]\nnameservers = [\"127.0.0.1:{dns_port}\"]\nvalid = \"1s\"\n\n[upstreams.web]\nservers = [ {{ address = \"web.internal:{web}\", resolve = true }} ]\n\n[[routes]]\nupstream = \"web\"\n"
        ),
    )
    .unwrap();
    let shoal = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shoal"));
        c.env("SHOAL_RUNTIME_DIR", &dir);
        c
    };

    let out = shoal()
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
        shoal()
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

    let out = shoal()
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
    let _ = std::fs::remove_dir_all(&dir);
}
