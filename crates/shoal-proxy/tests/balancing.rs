//! Balancing and failure handling against real backends: the chapter's Node
//! server (`HOST one` / `HOST two`) and small Rust servers, through a hyper
//! client.

mod common;

use common::*;
use std::time::Duration;

fn lb(servers: &str, strategy: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[upstreams.lb_servers]\nstrategy = \"{strategy}\"\nservers = [ {servers} ]\n\n[[routes]]\nupstream = \"lb_servers\"\n"
    )
}

/// Start named `Name` backends; returns them and their TOML server list.
async fn backends(names: &[&str]) -> (Vec<Backend>, String) {
    let mut bs = Vec::new();
    for n in names {
        bs.push(Backend::start(n, Behaviour::Name).await);
    }
    let list: Vec<String> = bs
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.addr))
        .collect();
    (bs, list.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_ten_twenty_split_one_to_two_over_node_servers() {
    let one = node_host("one");
    let two = node_host("two");
    let cfg = lb(
        &format!(
            "{{ address = \"127.0.0.1:{}\", weight = 10 }}, {{ address = \"127.0.0.1:{}\", weight = 20 }}",
            one.port, two.port
        ),
        "round_robin",
    );
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    let m = tally(&c, &p, 300).await;
    let a = m.get("HOST one").copied().unwrap_or(0) as f64;
    let b = m.get("HOST two").copied().unwrap_or(0) as f64;
    assert_eq!(a + b, 300.0, "{m:?}");
    // 1:2 within 2% of the total.
    assert!((a / 300.0 - 1.0 / 3.0).abs() <= 0.02, "{m:?}");
    assert!((b / 300.0 - 2.0 / 3.0).abs() <= 0.02, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fails_takes_a_killed_server_out_and_fail_timeout_brings_it_back() {
    let one = node_host("one");
    let mut two = node_host("two");
    let two_port = two.port;
    let cfg = lb(
        &format!(
            "{{ address = \"127.0.0.1:{}\" }}, {{ address = \"127.0.0.1:{}\", max_fails = 1, fail_timeout = \"1s\" }}",
            one.port, two_port
        ),
        "round_robin",
    );
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    let m = tally(&c, &p, 10).await;
    // Each worker runs its own round robin (as nginx's workers do), so the
    // split is 5:5 give or take one pick per worker.
    let workers = shoal_proxy::workers::resolve_count(0) as i64;
    let two_hits = m.get("HOST two").copied().unwrap_or(0) as i64;
    assert!((two_hits - 5).abs() <= workers, "{m:?}");
    two.kill();
    // Every request still succeeds: the failed attempt goes to the next server.
    let m = tally(&c, &p, 20).await;
    assert_eq!(m.get("HOST one"), Some(&20), "{m:?}");
    let st = p.handle.status();
    let servers = st["upstreams"][0]["servers"].as_array().unwrap().clone();
    assert!(servers[1]["failures"].as_u64().unwrap() >= 1, "{st}");
    // Bring it back on the same port; after fail_timeout it gets traffic again.
    let _two = node("examples/proxy/server.js", two_port, "two");
    let back = eventually(20, || async {
        let m = tally(&c, &p, 4).await;
        m.contains_key("HOST two")
    })
    .await;
    assert!(back, "server two never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_gets_traffic_only_while_primaries_are_out() {
    let primary = Backend::start("primary", Behaviour::Name).await;
    let backup = Backend::start("backup", Behaviour::Name).await;
    let cfg = lb(
        &format!(
            "{{ address = \"{}\", fail_timeout = \"60s\" }}, {{ address = \"{}\", backup = true }}",
            primary.addr, backup.addr
        ),
        "round_robin",
    );
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    let m = tally(&c, &p, 10).await;
    assert_eq!(m.get("HOST primary"), Some(&10), "{m:?}");
    primary.stop();
    // Once the primary is seen failing (its tasks stop asynchronously), the
    // backup takes everything.
    assert!(
        eventually(20, || async {
            get(&c, p.addr, "x", "/").await.1 == "HOST backup"
        })
        .await
    );
    let m = tally(&c, &p, 10).await;
    assert_eq!(m.get("HOST backup"), Some(&10), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_down_is_502_hang_is_504_busy_is_503() {
    // 502: nothing listens.
    let dead = free_addr();
    let cfg = lb(&format!("{{ address = \"{dead}\" }}"), "round_robin");
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    assert_eq!(get(&c, p.addr, "x", "/").await.0, 502);
    assert_eq!(
        get(&c, p.addr, "x", "/").await.0,
        502,
        "still 502 while failed out"
    );
    drop(p);

    // 504: the server accepts but never answers.
    let hang = Backend::start("hang", Behaviour::Hang).await;
    let cfg = format!(
        "{}\n[timeouts]\nupstream_header = \"300ms\"\n",
        lb(&format!("{{ address = \"{}\" }}", hang.addr), "round_robin")
    );
    let p = start_proxy(config(&cfg)).await;
    assert_eq!(get(&c, p.addr, "x", "/").await.0, 504);
    drop(p);

    // 503: the only server is at max_conns with a slow request.
    let slow = Backend::start("slow", Behaviour::Slow(Duration::from_secs(5))).await;
    let cfg = lb(
        &format!("{{ address = \"{}\", max_conns = 1 }}", slow.addr),
        "round_robin",
    );
    let p = start_proxy(config(&cfg)).await;
    let (c2, addr) = (c.clone(), p.addr);
    let inflight = tokio::spawn(async move { get(&c2, addr, "x", "/slow").await });
    assert!(
        eventually(20, || async {
            slow.hits.load(std::sync::atomic::Ordering::SeqCst) == 1
        })
        .await
    );
    assert_eq!(get(&c, p.addr, "x", "/").await.0, 503);
    assert_eq!(inflight.await.unwrap().0, 200);
    assert_eq!(get(&c, p.addr, "x", "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_prefers_the_idle_server_under_slow_requests() {
    // The slow request must outlast the fast ones even on a loaded machine.
    let a = Backend::start("a", Behaviour::Slow(Duration::from_secs(8))).await;
    let b = Backend::start("b", Behaviour::Slow(Duration::from_secs(8))).await;
    let cfg = lb(
        &format!(
            "{{ address = \"{}\" }}, {{ address = \"{}\" }}",
            a.addr, b.addr
        ),
        "least_conn",
    );
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    let (c2, addr) = (c.clone(), p.addr);
    let slow = tokio::spawn(async move { get(&c2, addr, "x", "/slow").await });
    let busy = |bk: &Backend| bk.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(eventually(20, || async { busy(&a) + busy(&b) == 1 }).await);
    let idle_name = if busy(&a) == 1 { "HOST b" } else { "HOST a" };
    for _ in 0..6 {
        assert_eq!(get(&c, p.addr, "x", "/fast").await.1, idle_name);
    }
    let (s, body) = slow.await.unwrap();
    assert_eq!(s, 200);
    assert_ne!(body, idle_name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_keeps_a_client_on_one_server() {
    let (_bs, servers) = backends(&["a", "b", "c"]).await;
    let p = start_proxy(config(&lb(&servers, "ip_hash"))).await;
    // Clients from several /24s inside 127.0.0.0/8, each on its own connections.
    let mut seen = std::collections::HashSet::new();
    for net in 0..8u8 {
        let src: std::net::IpAddr = format!("127.0.{net}.9").parse().unwrap();
        let mut first = None;
        for _ in 0..5 {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(std::net::SocketAddr::new(src, 0)).unwrap();
            let stream = sock.connect(p.addr).await.unwrap();
            let body = raw_get(stream).await;
            match &first {
                None => first = Some(body.clone()),
                Some(f) => assert_eq!(f, &body, "client {src} moved"),
            }
        }
        seen.insert(first.unwrap());
    }
    assert!(seen.len() >= 2, "ip_hash should spread /24s: {seen:?}");
}

/// One GET over a given connection with hyper's low-level client.
async fn raw_get(stream: tokio::net::TcpStream) -> String {
    use http_body_util::BodyExt;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri("/")
        .header("host", "x")
        .body(empty())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_path_is_sticky_and_random_spreads() {
    let (_bs, servers) = backends(&["a", "b"]).await;
    let p = start_proxy(config(&lb(&servers, "hash"))).await;
    let c = client();
    let mut owners = std::collections::HashSet::new();
    for i in 0..20 {
        let path = format!("/item/{i}");
        let first = get(&c, p.addr, "x", &path).await.1;
        assert_eq!(get(&c, p.addr, "x", &path).await.1, first);
        owners.insert(first);
    }
    assert_eq!(owners.len(), 2);
    drop(p);
    let p = start_proxy(config(&lb(&servers, "random"))).await;
    let m = tally(&c, &p, 40).await;
    assert_eq!(m.len(), 2, "{m:?}");
}

struct PathFirst;
impl shoal_proxy::Balance for PathFirst {
    fn select(
        &self,
        ctx: &shoal_proxy::balance::Context<'_>,
        peers: &[shoal_proxy::balance::PeerView],
    ) -> Option<usize> {
        // /b goes to the second server, everything else to the first available.
        let want = if ctx.path.starts_with("/b") { 1 } else { 0 };
        peers
            .iter()
            .find(|p| p.index == want && p.available)
            .or_else(|| peers.iter().find(|p| p.available))
            .map(|p| p.index)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_user_plugs_in_their_own_balancer() {
    let a = Backend::start("a", Behaviour::Name).await;
    let b = Backend::start("b", Behaviour::Name).await;
    let servers = vec![
        shoal_proxy::ServerConfig::new(a.addr),
        shoal_proxy::ServerConfig::new(b.addr),
    ];
    let cfg = shoal_proxy::Config::quick(
        "127.0.0.1:0".parse().unwrap(),
        servers,
        shoal_proxy::Strategy::Custom(std::sync::Arc::new(PathFirst)),
        false,
    )
    .unwrap();
    let p = start_proxy(cfg).await;
    let c = client();
    assert_eq!(get(&c, p.addr, "x", "/a").await.1, "HOST a");
    assert_eq!(get(&c, p.addr, "x", "/b").await.1, "HOST b");
    b.stop();
    assert_eq!(
        get(&c, p.addr, "x", "/b").await.1,
        "HOST a",
        "falls back when b fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_a_server_out_and_bring_it_back() {
    let a = Backend::start("a", Behaviour::Name).await;
    let b = Backend::start("b", Behaviour::Name).await;
    let cfg = format!(
        "{}\n[upstreams.lb_servers.health_check]\nkind = \"http\"\npath = \"/health\"\nexpect_status = 200\ninterval = \"100ms\"\nrise = 2\nfall = 2\n",
        lb(&format!("{{ address = \"{}\" }}, {{ address = \"{}\" }}", a.addr, b.addr), "round_robin")
    );
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    assert_eq!(tally(&c, &p, 10).await.len(), 2);
    a.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = eventually(20, || async {
        p.handle.status()["upstreams"][0]["servers"][0]["healthy"] == false
    })
    .await;
    assert!(out, "health check never failed server a");
    let m = tally(&c, &p, 10).await;
    assert_eq!(m.get("HOST b"), Some(&10), "{m:?}");
    assert!(p.handle.metrics_text().contains(&format!(
        "shoal_proxy_upstream_healthy{{upstream=\"lb_servers\",server=\"{}\"}} 0",
        a.addr
    )));
    a.healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let back = eventually(20, || async {
        tally(&c, &p, 4).await.contains_key("HOST a")
    })
    .await;
    assert!(back, "server a never came back after passing checks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_health_checks_follow_a_server_that_stops_listening_and_returns() {
    let a = Backend::start("a", Behaviour::Name).await;
    let b = Backend::start("b", Behaviour::Name).await;
    let a_addr = a.addr;
    let cfg = format!(
        "{}\n[upstreams.lb_servers.health_check]\nkind = \"tcp\"\ninterval = \"100ms\"\nrise = 2\nfall = 2\n",
        lb(&format!("{{ address = \"{}\" }}, {{ address = \"{}\" }}", a.addr, b.addr), "round_robin")
    );
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    assert_eq!(tally(&c, &p, 10).await.len(), 2);
    // Stop listening on a: connects are refused, and the checker (not a
    // request, none is sent meanwhile) takes it out.
    a.stop();
    drop(a);
    let out = eventually(20, || async {
        p.handle.status()["upstreams"][0]["servers"][0]["healthy"] == false
    })
    .await;
    assert!(out, "tcp check never failed server a");
    let m = tally(&c, &p, 10).await;
    assert_eq!(m.get("HOST b"), Some(&10), "{m:?}");
    // Listen again on the same address: two good connects bring it back.
    let _a = Backend::start_on(a_addr, "a", Behaviour::Name).await;
    let back = eventually(20, || async {
        p.handle.status()["upstreams"][0]["servers"][0]["healthy"] == true
    })
    .await;
    assert!(back, "tcp check never passed server a again");
    let m = tally(&c, &p, 10).await;
    assert!(m.contains_key("HOST a"), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_a_header_keeps_a_user_on_one_server() {
    let (_bs, servers) = backends(&["a", "b", "c"]).await;
    let cfg = lb(&servers, "hash").replace(
        "strategy = \"hash\"",
        "strategy = \"hash\"\nhash_key = \"header:X-User\"",
    );
    let p = start_proxy(config(&cfg)).await;
    let c = client();
    let mut owners = std::collections::HashSet::new();
    for user in 0..30 {
        let mut seen = std::collections::HashSet::new();
        for path in ["/a", "/b", "/c"] {
            let req = hyper::Request::builder()
                .uri(format!("http://{}{path}", p.addr))
                .header("x-user", format!("user-{user}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let resp = c.request(req).await.unwrap();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            seen.insert(body);
        }
        assert_eq!(seen.len(), 1, "user-{user} moved between servers");
        owners.extend(seen);
    }
    assert!(owners.len() >= 2, "users spread over servers: {owners:?}");
}
