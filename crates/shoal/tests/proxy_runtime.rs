//! Adding, changing, draining and removing a proxy's upstream servers while
//! it serves, through `shoal ctl` and through the admin listener's nginx
//! Plus-style API driven with curl. Node HTTP servers are the upstreams.

mod proxy_support;

use proxy_support::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A Node server answering "HOST NAME"; `/slow` answers after 4 s.
fn host(name: &str) -> (Proc, u16) {
    let script = r#"
const name = process.argv[1];
const server = require('http').createServer((q, r) => {
  const end = () => r.end('HOST ' + name);
  if (q.url === '/slow') setTimeout(end, 4000); else end();
}).listen(0, '127.0.0.1', () => console.log('listening ' + server.address().port));
"#;
    let mut cmd = Command::new("node");
    cmd.args(["-e", script, name]);
    listening(cmd)
}

/// [`wait_until`] 30 s, or fail naming `what`.
fn assert_waited(what: &str, f: impl FnMut() -> bool) {
    assert!(wait_until(30, f), "never: {what}");
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    shoal(dir)
        .args(["ctl", "--name", "px"])
        .args(args)
        .output()
        .unwrap()
}

/// `shoal ctl --name px status --json`'s servers of upstream `web`.
fn servers(dir: &Path) -> Vec<Value> {
    let out = ctl(dir, &["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "web")
        .unwrap()["servers"]
        .as_array()
        .unwrap()
        .clone()
}

/// Which hosts answer `n` requests.
fn answers(addr: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let h = get(addr).expect("a request failed");
        *seen.entry(h).or_insert(0) += 1;
    }
    seen
}

/// A proxy from a file with upstream `web` = `ports`, control name `px`,
/// admin on `admin` with writes on or off.
fn proxy(dir: &TempDir, ports: &[u16], admin: u16, write: bool) -> (Proc, SocketAddr) {
    let port = free_port();
    let servers: Vec<String> = ports
        .iter()
        .map(|p| format!("{{ address = \"127.0.0.1:{p}\" }}"))
        .collect();
    let file = dir.0.join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
             [admin]\naddress = \"127.0.0.1:{admin}\"\nwrite = {write}\n\
             [upstreams.web]\nservers = [ {} ]\n\
             [[routes]]\nupstream = \"web\"\n",
            servers.join(", ")
        ),
    )
    .unwrap();
    let p = Proc(
        shoal(&dir.0)
            .args(["-q", "proxy", "--name", "px", "--config"])
            .arg(&file)
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_waited("the proxy answers", || get(addr).is_some());
    (p, addr)
}

#[test]
fn ctl_adds_drains_and_removes_servers_while_requests_flow() {
    let (_one, p1) = host("one");
    let (_two, p2) = host("two");
    let (_three, p3) = host("three");
    let dir = TempDir::new("ctl");
    let (_proxy, addr) = proxy(&dir, &[p1, p2], free_port(), false);
    let seen = answers(addr, 20);
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Added: it takes requests at once, by its weight.
    let three = format!("127.0.0.1:{p3}");
    let out = ctl(&dir.0, &["add-server", "web", &three, "--weight", "2"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "upstream web: added {three}: weight 2, max_fails 1, fail_timeout 10s, max_conns 0"
        )
    );
    // (Each worker thread keeps its own round-robin place, so the split
    // is by weight give or take a request or two per worker.)
    let seen = answers(addr, 40);
    let three_got = seen.get("HOST three").copied().unwrap_or(0);
    assert!((16..=24).contains(&three_got), "{seen:?}");

    // Drained while a slow request is on it: no new requests go there, the
    // one in flight finishes, and status shows it until then.
    let one = format!("127.0.0.1:{p1}");
    // Slow requests, one at a time, until one of them is on server one
    // (each worker thread keeps its own round-robin place, so which
    // request lands there is not known in advance).
    let one_busy = || {
        servers(&dir.0)
            .iter()
            .any(|s| s["address"] == one.as_str() && s["active"].as_u64() >= Some(1))
    };
    let mut slow = Vec::new();
    while !one_busy() {
        assert!(slow.len() < 24, "no slow request reached one");
        slow.push(std::thread::spawn(move || get_path(addr, "/slow")));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ctl(&dir.0, &["drain-server", "web", &one]);
    assert!(out.status.success(), "{out:?}");
    let s1 = servers(&dir.0)
        .into_iter()
        .find(|s| s["address"] == one.as_str())
        .unwrap();
    assert_eq!(
        (s1["state"].as_str(), s1["drain"].as_bool()),
        (Some("draining"), Some(true)),
        "{s1}"
    );
    assert!(s1["active"].as_u64() >= Some(1), "{s1}");
    let table = String::from_utf8_lossy(&ctl(&dir.0, &["status"]).stdout).to_string();
    assert!(table.contains("draining"), "{table}");
    let seen = answers(addr, 30);
    assert!(!seen.contains_key("HOST one"), "{seen:?}");
    let done: Vec<_> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(done.iter().all(Option::is_some), "{done:?}");
    assert!(
        done.iter().any(|d| d.as_deref() == Some("HOST one")),
        "{done:?}"
    );
    assert_waited("one drained", || {
        servers(&dir.0)
            .iter()
            .any(|s| s["address"] == one.as_str() && s["active"] == 0)
    });

    // Removed: gone from status, never answers again.
    let out = ctl(&dir.0, &["remove-server", "web", &one]);
    assert!(out.status.success(), "{out:?}");
    assert!(servers(&dir.0).iter().all(|s| s["address"] != one.as_str()));
    let seen = answers(addr, 15);
    assert!(!seen.contains_key("HOST one"), "{seen:?}");

    // Refusals name the problem and change nothing.
    let cases: [(&[&str], &str); 4] = [
        (
            &["add-server", "api", &three],
            "no upstream \"api\" (upstreams: web)",
        ),
        (&["add-server", "web", &three], "already has server"),
        (
            &["set-server", "web", "127.0.0.1:1", "--weight", "2"],
            "has no server",
        ),
        (&["set-server", "web", &three], "needs one of"),
    ];
    for (args, want) in cases {
        let out = ctl(&dir.0, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
    // Marked down, then removed; the last primary cannot be removed.
    let two = format!("127.0.0.1:{p2}");
    let out = ctl(&dir.0, &["set-server", "web", &three, "--down"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(answers(addr, 6).get("HOST two"), Some(&6));
    let out = ctl(&dir.0, &["remove-server", "web", &three]);
    assert!(out.status.success(), "{out:?}");
    let out = ctl(&dir.0, &["remove-server", "web", &two]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("last primary server"),
        "{err}"
    );
    assert_eq!(answers(addr, 5).get("HOST two"), Some(&5));

    // A reload re-reads the file: runtime edits are forgotten.
    let out = ctl(&dir.0, &["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(answers(addr, 20).len(), 2);
}

fn curl(args: &[&str]) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-m", "10"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

#[test]
fn the_admin_api_changes_servers_with_nginx_plus_style_requests() {
    let (_one, p1) = host("one");
    let (_two, p2) = host("two");
    let dir = TempDir::new("api");
    let admin = free_port();
    let (_proxy, addr) = proxy(&dir, &[p1], admin, true);
    let api = format!("http://127.0.0.1:{admin}/api/upstreams");
    let two = format!("127.0.0.1:{p2}");
    let servers_url = format!("{api}/web/servers");
    let json = ["-H", "Content-Type: application/json"];

    let (code, v) = curl(&[&servers_url]);
    assert_eq!((code, v.as_array().map(Vec::len)), (200, Some(1)), "{v}");
    let body = format!(r#"{{"server": "{two}", "weight": 3}}"#);
    let (code, v) = curl(&[&json[..], &["-X", "POST", "-d", &body, &servers_url]].concat());
    assert_eq!((code, &v["weight"]), (201, &Value::from(3)), "{v}");
    let seen = answers(addr, 40);
    let two_got = seen.get("HOST two").copied().unwrap_or(0);
    assert!((26..=34).contains(&two_got), "{seen:?}");
    // The same again: 409; an unknown upstream: 404; bad JSON: 400.
    let (code, v) = curl(&[&json[..], &["-X", "POST", "-d", &body, &servers_url]].concat());
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["error"]["status"], 409, "{v}");
    let (code, _) = curl(&["-X", "POST", "-d", &body, &format!("{api}/nope/servers")]);
    assert_eq!(code, 404);
    let (code, v) = curl(&["-X", "POST", "-d", "{weight", &servers_url]);
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]["text"].as_str().unwrap().contains("not JSON"),
        "{v}"
    );
    let typo = r#"{"server": "127.0.0.1:9", "wieght": 3}"#;
    let (code, v) = curl(&["-X", "POST", "-d", typo, &servers_url]);
    assert_eq!(code, 400, "{v}");
    let text = v["error"]["text"].as_str().unwrap();
    assert!(text.contains("unknown key \"wieght\""), "{v}");

    // PATCH drains it; GET shows the state; DELETE removes it.
    let two_url = format!("{servers_url}/{two}");
    let (code, v) = curl(&["-X", "PATCH", "-d", r#"{"drain": true}"#, &two_url]);
    assert_eq!((code, &v["drain"]), (200, &Value::Bool(true)), "{v}");
    let (code, v) = curl(&[&format!("{api}/web")]);
    assert_eq!(code, 200);
    let st = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == two.as_str())
        .cloned()
        .unwrap();
    assert_eq!(st["state"], "draining", "{v}");
    let metrics = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            &format!("http://127.0.0.1:{admin}/metrics"),
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    let draining: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("shoal_proxy_upstream_draining{"))
        .collect();
    assert!(
        draining
            .iter()
            .any(|l| l.contains(&two) && l.ends_with(" 1"))
            && draining
                .iter()
                .any(|l| !l.contains(&two) && l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(!answers(addr, 10).contains_key("HOST two"));
    let (code, _) = curl(&["-X", "DELETE", &two_url]);
    assert_eq!(code, 200);
    let (code, v) = curl(&["-X", "DELETE", &two_url]);
    assert_eq!(code, 404, "{v}");
    let (code, v) = curl(&[&servers_url]);
    assert_eq!((code, v.as_array().map(Vec::len)), (200, Some(1)), "{v}");
    // The last primary stays: 400 with the reason.
    let (code, v) = curl(&["-X", "DELETE", &format!("{servers_url}/127.0.0.1:{p1}")]);
    assert_eq!(code, 400, "{v}");
    assert_eq!(answers(addr, 3).get("HOST one"), Some(&3));
}

#[test]
fn admin_api_writes_are_refused_unless_turned_on() {
    let (_one, p1) = host("one");
    let dir = TempDir::new("ro");
    let admin = free_port();
    let (_proxy, _addr) = proxy(&dir, &[p1], admin, false);
    let url = format!("http://127.0.0.1:{admin}/api/upstreams/web/servers");
    let (code, v) = curl(&["-X", "POST", "-d", r#"{"server": "127.0.0.1:9"}"#, &url]);
    assert_eq!(code, 405, "{v}");
    assert!(
        v["error"]["text"]
            .as_str()
            .unwrap()
            .contains("write = true"),
        "{v}"
    );
    let (code, v) = curl(&[&url]);
    assert_eq!((code, v.as_array().map(Vec::len)), (200, Some(1)), "{v}");
}
