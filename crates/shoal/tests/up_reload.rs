//! SIGHUP to `shoal up` adds and removes parts: an added collector and
//! cluster start (before the proxy is pointed at the cluster), removed ones
//! stop (the proxy first), and the parts that did not change keep their
//! processes; an invalid added part is refused with file, line and key, and
//! nothing changes.

mod cluster_support;
mod up_support;
use cluster_support::{alive, get, kill, TempDir};
use up_support::{
    free_tcp, labels, needs_node, pid_of, pids, status, topology, wait_log, Ports, Up, T,
};

use std::time::Instant;

fn api_cluster(port: u16) -> String {
    format!(
        r#"
[cluster.api]
workers = 1
command = ["node", "examples/up/web.js"]
bind_host = "127.0.0.1"
ready = "listening"
grace = "5s"

[cluster.api.env]
PORT = "{port}"
SERVER_NAME = "api"
"#
    )
}

/// The topology without its `[stats]` table.
fn without_stats(text: &str) -> String {
    let start = text.find("[stats]").unwrap();
    let end = start + text[start..].find("\n\n").unwrap() + 2;
    format!("{}{}", &text[..start], &text[end..])
}

/// The topology without its proxy (the last tables of the file).
fn without_proxy(text: &str) -> String {
    text[..text.find("[proxy]").unwrap()].to_string()
}

#[test]
fn sighup_starts_added_parts_in_order_and_keeps_the_others() {
    if !needs_node() {
        return;
    }
    let data = TempDir::new();
    let p = Ports::new();
    let full = topology(&p, data.path());
    let mut up = Up::spawn(&without_stats(&full));
    up.wait_running();
    let before = status(&up);
    assert_eq!(
        labels(&before),
        ["broker", "cluster.web", "proxy"],
        "{before}"
    );
    let web = pids(&before, "cluster.web");
    assert_eq!(web.len(), 2, "{before}");

    // An added part with a bad key: refused with file:line: key; nothing changes.
    let api = free_tcp();
    let bad = format!("{full}{}", api_cluster(api).replace("grace", "gracee"));
    let line = bad.lines().position(|l| l.starts_with("gracee")).unwrap() + 1;
    std::fs::write(&up.file, &bad).unwrap();
    kill(up.child.id(), "HUP");
    wait_log(&up, &format!("{}:{line}", up.file.display()));
    assert!(up.log().contains("cluster.api.gracee"), "{}", up.log());
    assert_eq!(labels(&status(&up)), ["broker", "cluster.web", "proxy"]);

    // The collector and a cluster added, and the proxy pointed at both clusters.
    let added = format!("{full}{}", api_cluster(api)).replace(
        "servers = \"cluster:web\"",
        "servers = [\"cluster:web\", \"cluster:api\"]",
    );
    std::fs::write(&up.file, &added).unwrap();
    kill(up.child.id(), "HUP");
    wait_log(&up, "reload: proxy: generation");
    let after = status(&up);
    assert_eq!(
        labels(&after),
        ["broker", "stats", "cluster.web", "cluster.api", "proxy"],
        "{after}"
    );
    assert_eq!(pids(&after, "cluster.api").len(), 1, "{after}");
    // Unchanged (only its STATSD_* environment would differ): same workers.
    assert_eq!(pids(&after, "cluster.web"), web, "{}", up.log());
    let log = up.log();
    let at = |s: &str| log.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{log}"));
    assert!(at("reload: stats: started") < at("reload: cluster.api: started"));
    assert!(at("reload: cluster.api: started") < at("reload: proxy: generation"));
    // The new collector listens, and the proxy reaches the new cluster.
    assert_eq!(
        get(&format!("127.0.0.1:{}", p.metrics), "/metrics")
            .unwrap()
            .0,
        200
    );
    let api_pid = pids(&after, "cluster.api")[0] as u32;
    let proxy = format!("127.0.0.1:{}", p.proxy);
    let deadline = Instant::now() + T;
    loop {
        let (code, body) = get(&proxy, "/").unwrap();
        assert_eq!(code, 200, "{body}");
        if pid_of(&body) == Some(api_pid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never reached cluster.api"
        );
    }
    kill(up.child.id(), "TERM");
    assert!(up.wait_exit().success(), "{}", up.log());
    assert!(!alive(api_pid));
}

#[test]
fn sighup_stops_removed_parts_in_reverse_order_and_keeps_the_others() {
    if !needs_node() {
        return;
    }
    let data = TempDir::new();
    let p = Ports::new();
    let full = topology(&p, data.path());
    let api = free_tcp();
    let mut up = Up::spawn(&format!("{full}{}", api_cluster(api)));
    up.wait_running();
    let before = status(&up);
    let web = pids(&before, "cluster.web");
    let api_pids = pids(&before, "cluster.api");
    assert_eq!((web.len(), api_pids.len()), (2, 1), "{before}");

    // The proxy, cluster.api and the collector removed.
    std::fs::write(&up.file, without_stats(&without_proxy(&full))).unwrap();
    kill(up.child.id(), "HUP");
    wait_log(&up, "reload: stats: stopped");
    let after = status(&up);
    assert_eq!(labels(&after), ["broker", "cluster.web"], "{after}");
    assert_eq!(pids(&after, "cluster.web"), web, "{}", up.log());
    for pid in &api_pids {
        assert!(!alive(*pid as u32), "cluster.api's worker {pid} still runs");
    }
    let log = up.log();
    let at = |s: &str| log.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{log}"));
    assert!(at("stopped part=proxy") < at("stopped part=cluster.api"));
    assert!(at("stopped part=cluster.api") < at("stopped part=stats"));
    // Their ports are free; the rest still serves.
    std::net::TcpListener::bind(("127.0.0.1", p.proxy)).unwrap();
    std::net::TcpListener::bind(("127.0.0.1", api)).unwrap();
    assert_eq!(get(&format!("127.0.0.1:{}", p.web), "/").unwrap().0, 200);
    kill(up.child.id(), "TERM");
    assert!(up.wait_exit().success(), "{}", up.log());
    for pid in &web {
        assert!(!alive(*pid as u32));
    }
}
