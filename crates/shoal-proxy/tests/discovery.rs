//! Service discovery against a real DNS server: Debian's dnsmasq on a free
//! loopback port, answering A records from a hosts file (rewritten and
//! re-read on SIGHUP), SRV and PTR records from its command line (restarted
//! on the same port to change them). Backends are small HTTP servers on
//! 127.0.0.x answering `HOST <name>`. The proxy's resolver always points at
//! this dnsmasq; nothing leaves 127.0.0.0/8.

mod common;
#[path = "../../shoal/tests/cluster_support/ports.rs"]
mod ports;

use common::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A dnsmasq serving `hosts` (an addn-hosts file) and `records` (extra
/// command-line options such as `--srv-host=...`); killed by pid on drop.
struct Dns {
    port: u16,
    hosts: PathBuf,
    records: Vec<String>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Dns {
    async fn start(hosts: &str, records: &[String]) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, hosts).unwrap();
        let mut d = Dns {
            port: 0,
            hosts: path,
            records: records.to_vec(),
            child: None,
            _dir: dir,
        };
        // A port free for TCP and UDP below the ephemeral range (a client
        // socket of a test running alongside could hold one in it);
        // another one if dnsmasq still cannot bind it.
        for _ in 0..5 {
            d.port = ports::free_port();
            if d.spawn().await {
                return d;
            }
            d.stop();
        }
        panic!(
            "dnsmasq did not start on 127.0.0.1 (last port tried {})",
            d.port
        );
    }

    /// Start dnsmasq on `self.port`; whether it came up.
    async fn spawn(&mut self) -> bool {
        // Debian installs it in /usr/sbin, which a user's PATH may lack.
        let bin = ["/usr/sbin/dnsmasq", "/usr/local/sbin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("dnsmasq");
        let child = Command::new(bin)
            .args(["--no-daemon", "--local-ttl=1"])
            .arg(format!(
                "--conf-file={}/tests/fixtures/dnsmasq.conf",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(format!("--port={}", self.port))
            .arg(format!("--addn-hosts={}", self.hosts.display()))
            .args(&self.records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq must be installed (apt-get install dnsmasq-base)");
        self.child = Some(child);
        // Ready when its TCP socket accepts.
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        eventually(10, || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await
    }

    /// Rewrite the hosts file and make dnsmasq re-read it.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: signals the dnsmasq this test started, by its pid.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restart on the same port with other SRV/PTR records.
    async fn restart(&mut self, records: &[String]) {
        self.stop();
        self.records = records.to_vec();
        let up = self.spawn().await;
        assert!(up, "dnsmasq did not restart on 127.0.0.1:{}", self.port);
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Backends named `names` on 127.0.0.2, .3, ... all on one port.
async fn backends_on_one_port(names: &[&str], b: Behaviour) -> (Vec<Backend>, u16) {
    'again: for _ in 0..20 {
        let first = Backend::start_on("127.0.0.2:0".parse().unwrap(), names[0], b).await;
        let port = first.addr.port();
        let mut all = vec![first];
        for (i, n) in names.iter().enumerate().skip(1) {
            let addr: SocketAddr = ([127, 0, 0, 2 + i as u8], port).into();
            if std::net::TcpListener::bind(addr).is_err() {
                continue 'again;
            }
            all.push(Backend::start_on(addr, n, b).await);
        }
        return (all, port);
    }
    panic!("no port free on every loopback address");
}

fn proxy_toml(dns: u16, servers: &str, extra: &str) -> String {
    format!(
        "workers = 1\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[resolver]\nnameservers = [\"127.0.0.1:{dns}\"]\nvalid = \"1s\"\ntimeout = \"1s\"\n\n[upstreams.web]\n{extra}servers = [ {servers} ]\n\n[[routes]]\nupstream = \"web\"\n"
    )
}

/// The discovered servers of upstream `web`: (address, from, backup).
fn servers(p: &Proxy) -> Vec<(String, String, bool)> {
    let st = p.handle.status();
    let ups = st["upstreams"].as_array().unwrap();
    let web = ups.iter().find(|u| u["name"] == "web").unwrap();
    web["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["address"].as_str().unwrap().to_string(),
                s["from"].as_str().unwrap_or("").to_string(),
                s["backup"] == true,
            )
        })
        .collect()
}

/// `shoal_proxy_dns_lookups_total{result="..."}` now.
fn lookups(p: &Proxy, result: &str) -> f64 {
    let text = p.handle.metrics_text();
    let key = format!("shoal_proxy_dns_lookups_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
}

async fn wait_servers(p: &Proxy, want: &[&str]) {
    let ok = eventually(10, || async {
        let mut have: Vec<String> = servers(p).into_iter().map(|s| s.0).collect();
        have.sort();
        have == want
    })
    .await;
    assert!(ok, "servers never became {want:?}: {:?}", servers(p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_are_followed_added_removed_and_kept_when_dns_is_gone() {
    let (bs, port) =
        backends_on_one_port(&["a", "b", "c"], Behaviour::Slow(Duration::from_secs(4))).await;
    let mut dns = Dns::start("127.0.0.2 web.internal\n127.0.0.3 web.internal\n", &[]).await;
    let toml = proxy_toml(
        dns.port,
        &format!("{{ address = \"web.internal:{port}\", resolve = true, max_fails = 0 }}"),
        "",
    );
    let p = start_proxy(config(&toml)).await;
    let c = client();
    // Two A records: both get requests, shown as coming from the name.
    let m = tally(&c, &p, 20).await;
    assert_eq!(m.get("HOST a"), Some(&10), "{m:?}");
    assert_eq!(m.get("HOST b"), Some(&10), "{m:?}");
    let from = format!("web.internal:{port}");
    assert!(servers(&p).iter().all(|s| s.1 == from), "{:?}", servers(&p));
    assert!(
        p.handle.status()["discovery"][0]["servers"]
            .as_array()
            .unwrap()
            .len()
            == 2
    );

    // A reload keeps the discovered servers (no empty window).
    p.handle.apply(config(&toml)).expect("apply");
    assert_eq!(servers(&p).len(), 2, "{:?}", servers(&p));

    // A third record: it answers within the `valid` bound (1 s, plus a
    // lookup).
    let a_hits = bs[0].hits.load(std::sync::atomic::Ordering::SeqCst);
    dns.set_hosts("127.0.0.2 web.internal\n127.0.0.3 web.internal\n127.0.0.4 web.internal\n");
    let t0 = std::time::Instant::now();
    let seen = eventually(10, || async {
        get(&c, p.addr, "localhost", "/").await.1 == "HOST c"
    })
    .await;
    assert!(
        seen,
        "the third address never got a request: {:?}",
        servers(&p)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    // The server that stayed kept its counters.
    let st = p.handle.status();
    let a_row = st["upstreams"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == format!("127.0.0.2:{port}"))
        .unwrap()
        .clone();
    assert!(
        a_row["responses"]["2xx"].as_u64().unwrap() as usize >= a_hits,
        "{a_row}"
    );

    // Three slow requests in flight, one per server (round robin); b's
    // address is removed meanwhile: its request finishes, and b gets no new
    // ones.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            let addr = p.addr;
            tokio::spawn(async move { get(&c, addr, "localhost", "/slow").await })
        })
        .collect();
    let busy = eventually(5, || async {
        bs.iter()
            .all(|b| b.hits.load(std::sync::atomic::Ordering::SeqCst) > 0)
            && p.handle.status()["upstreams"][0]["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["active"].as_u64().unwrap())
                .sum::<u64>()
                == 3
    })
    .await;
    assert!(
        busy,
        "three requests never in flight: {}",
        p.handle.status()
    );
    dns.set_hosts("127.0.0.2 web.internal\n127.0.0.4 web.internal\n");
    wait_servers(
        &p,
        &[&format!("127.0.0.2:{port}"), &format!("127.0.0.4:{port}")],
    )
    .await;
    let mut bodies: Vec<String> = Vec::new();
    for s in slow {
        let (status, body) = s.await.unwrap();
        assert_eq!(status, 200, "{body}");
        bodies.push(body);
    }
    bodies.sort();
    assert_eq!(
        bodies,
        ["HOST a", "HOST b", "HOST c"],
        "the in-flight request to b finished"
    );
    let b_hits = bs[1].hits.load(std::sync::atomic::Ordering::SeqCst);
    let m = tally(&c, &p, 10).await;
    assert_eq!(m.get("HOST b"), None, "{m:?}");
    assert_eq!(bs[1].hits.load(std::sync::atomic::Ordering::SeqCst), b_hits);

    // The DNS server goes away: lookups fail, are counted, and the last
    // addresses keep serving.
    let failed = lookups(&p, "failed");
    assert!(lookups(&p, "ok") >= 3.0);
    dns.stop();
    let counted = eventually(15, || async { lookups(&p, "failed") > failed }).await;
    assert!(counted, "{}", p.handle.metrics_text());
    let m = tally(&c, &p, 10).await;
    assert_eq!(m.get("HOST a"), Some(&5), "{m:?}");
    assert_eq!(m.get("HOST c"), Some(&5), "{m:?}");
    assert!(p.handle.status()["discovery"][0]["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_at_start_gives_502_until_it_does() {
    let (_bs, port) = backends_on_one_port(&["a"], Behaviour::Name).await;
    let dns = Dns::start("127.0.0.9 other.internal\n", &[]).await;
    let toml = proxy_toml(
        dns.port,
        &format!("{{ address = \"late.internal:{port}\", resolve = true }}"),
        "",
    );
    let p = start_proxy(config(&toml)).await;
    let c = client();
    assert_eq!(get(&c, p.addr, "localhost", "/").await.0, 502);
    assert!(lookups(&p, "empty") + lookups(&p, "failed") >= 1.0);
    dns.set_hosts("127.0.0.2 late.internal\n");
    let ok = eventually(10, || async {
        get(&c, p.addr, "localhost", "/").await == (200, "HOST a".to_string())
    })
    .await;
    assert!(ok, "{}", p.handle.status());
    // Without `resolve`, a name that does not resolve stays a config error.
    let e = shoal_proxy::Config::parse(
        std::path::Path::new("t.toml"),
        &proxy_toml(dns.port, "{ address = \"nowhere.invalid:80\" }", ""),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("servers[0].address"), "{e}");
}

fn srv(name: &str, target: &str, port: u16, prio: u16, weight: u16) -> String {
    format!("--srv-host={name},{target},{port},{prio},{weight}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_weights_and_backup_priorities() {
    let a = Backend::start_on("127.0.0.2:0".parse().unwrap(), "a", Behaviour::Name).await;
    let b = Backend::start_on("127.0.0.3:0".parse().unwrap(), "b", Behaviour::Name).await;
    let c = Backend::start_on("127.0.0.4:0".parse().unwrap(), "c", Behaviour::Name).await;
    let hosts = "127.0.0.2 a.web.internal\n127.0.0.3 b.web.internal\n127.0.0.4 c.web.internal\n";
    let svc = "_http._tcp.web.internal";
    let mut dns = Dns::start(
        hosts,
        &[
            srv(svc, "a.web.internal", a.addr.port(), 0, 10),
            srv(svc, "b.web.internal", b.addr.port(), 0, 30),
            srv(svc, "c.web.internal", c.addr.port(), 1, 10),
        ],
    )
    .await;
    let toml = proxy_toml(dns.port, &format!("{{ service = \"{svc}\" }}"), "");
    let p = start_proxy(config(&toml)).await;
    let cl = client();
    // Weights 10:30 from SRV; c (priority 1) is a backup.
    let m = tally(&cl, &p, 40).await;
    assert_eq!(m.get("HOST a"), Some(&10), "{m:?}");
    assert_eq!(m.get("HOST b"), Some(&30), "{m:?}");
    let s = servers(&p);
    let want_from = format!("service {svc}");
    assert!(s.iter().all(|x| x.1 == want_from), "{s:?}");
    assert!(
        s.iter().any(|x| x.0 == c.addr.to_string() && x.2),
        "c is a backup: {s:?}"
    );
    // Primaries gone: the backup answers.
    a.stop();
    b.stop();
    let ok = eventually(10, || async {
        get(&cl, p.addr, "localhost", "/").await.1 == "HOST c"
    })
    .await;
    assert!(ok, "backup never answered: {}", p.handle.status());

    // New records (restart on the same port): c is primary alone now, on
    // another port.
    let c2 = Backend::start_on("127.0.0.4:0".parse().unwrap(), "c2", Behaviour::Name).await;
    dns.restart(&[srv(svc, "c.web.internal", c2.addr.port(), 0, 5)])
        .await;
    wait_servers(&p, &[&c2.addr.to_string()]).await;
    let m = tally(&cl, &p, 5).await;
    assert_eq!(m.get("HOST c2"), Some(&5), "{m:?}");
    assert!(!servers(&p)[0].2, "primary now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_sd_instances_come_and_go() {
    let one = Backend::start_on("127.0.0.2:0".parse().unwrap(), "one", Behaviour::Name).await;
    let two = Backend::start_on("127.0.0.3:0".parse().unwrap(), "two", Behaviour::Name).await;
    let ty = "_http._tcp.example.internal";
    let hosts = "127.0.0.2 one.example.internal\n127.0.0.3 two.example.internal\n";
    let inst = |name: &str, target: &str, port: u16| {
        [
            format!("--ptr-record={ty},{name}.{ty}"),
            srv(&format!("{name}.{ty}"), target, port, 0, 1),
            format!("--txt-record={name}.{ty},path=/"),
        ]
    };
    let mut dns = Dns::start(hosts, &inst("one", "one.example.internal", one.addr.port())).await;
    let toml = proxy_toml(
        dns.port,
        &format!("{{ discover = \"{ty}\", weight = 2 }}"),
        "",
    );
    let p = start_proxy(config(&toml)).await;
    let c = client();
    let m = tally(&c, &p, 4).await;
    assert_eq!(m.get("HOST one"), Some(&4), "{m:?}");
    assert_eq!(p.handle.status()["upstreams"][0]["servers"][0]["weight"], 2);
    assert_eq!(servers(&p)[0].1, format!("discover {ty}"));

    // A second instance appears.
    let mut both = inst("one", "one.example.internal", one.addr.port()).to_vec();
    both.extend(inst("two", "two.example.internal", two.addr.port()));
    dns.restart(&both).await;
    let mut want = [one.addr.to_string(), two.addr.to_string()];
    want.sort();
    wait_servers(&p, &[&want[0], &want[1]]).await;
    let m = tally(&c, &p, 10).await;
    assert_eq!(
        (m.get("HOST one"), m.get("HOST two")),
        (Some(&5), Some(&5)),
        "{m:?}"
    );

    // The first goes away.
    dns.restart(&inst("two", "two.example.internal", two.addr.port()))
        .await;
    wait_servers(&p, &[&two.addr.to_string()]).await;
    let m = tally(&c, &p, 4).await;
    assert_eq!(m.get("HOST two"), Some(&4), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_out_server_stays_out_when_dns_changes_the_upstream() {
    // a answers on 127.0.0.2; nothing listens on 127.0.0.3 at that port.
    let (bs, port) = backends_on_one_port(&["a", "b", "c"], Behaviour::Name).await;
    bs[1].stop();
    let mut dns = Dns::start("127.0.0.2 web.internal\n127.0.0.3 web.internal\n", &[]).await;
    let toml = proxy_toml(
        dns.port,
        &format!("{{ address = \"web.internal:{port}\", resolve = true, max_fails = 1, fail_timeout = \"60s\" }}"),
        "",
    );
    let p = start_proxy(config(&toml)).await;
    let c = client();
    let dead = format!("127.0.0.3:{port}");
    let failed_out = |p: &Proxy| {
        p.handle.status()["upstreams"][0]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["address"] == dead.as_str() && s["failed_out"] == true)
    };
    // Requests find b dead (retried on a): b is out for fail_timeout.
    let m = tally(&c, &p, 4).await;
    assert_eq!(m.get("HOST a"), Some(&4), "{m:?}");
    assert!(failed_out(&p), "{}", p.handle.status());
    let generation = p.handle.status()["generation"].as_u64().unwrap();

    // A third address: a new generation, in which b is still out.
    dns.set_hosts("127.0.0.2 web.internal\n127.0.0.3 web.internal\n127.0.0.4 web.internal\n");
    wait_servers(
        &p,
        &[
            &format!("127.0.0.2:{port}"),
            &dead,
            &format!("127.0.0.4:{port}"),
        ],
    )
    .await;
    assert!(p.handle.status()["generation"].as_u64().unwrap() > generation);
    assert!(failed_out(&p), "b came back in: {}", p.handle.status());
    let m = tally(&c, &p, 10).await;
    assert_eq!(
        (m.get("HOST a"), m.get("HOST c")),
        (Some(&5), Some(&5)),
        "{m:?}"
    );
    dns.stop();
}
