//! `shoal dgram listen/send` as the chapter uses them: unicast, the multicast
//! example with three receivers in two groups (IPv4 on the loopback, pinned
//! to 127.0.0.1), a reply to the other group, the size rule, and IPv6
//! multicast over a veth pair between two network namespaces the test
//! creates and removes (skipped, with the reason printed, where namespaces
//! cannot be created).

mod dgram_support;

use std::process::Command;

use dgram_support::{free_port, shoal, spawn, start_listener};
use serde_json::Value;

fn messages(v: &[Value]) -> Vec<String> {
    let mut m: Vec<String> = v
        .iter()
        .map(|j| j["message"].as_str().unwrap().to_string())
        .collect();
    m.sort();
    m
}

#[test]
fn unicast_send_and_listen() {
    let port = free_port();
    let mut l = shoal();
    l.args([
        "dgram",
        "listen",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--json",
        "--count",
        "1",
    ]);
    let mut l = start_listener(&mut l);
    dgram_support::send(&[&format!("127.0.0.1:{port}"), "UDP says Hello!"]);
    let got = l.take_json(1);
    assert_eq!(got[0]["message"], "UDP says Hello!");
    assert_eq!(got[0]["address"], "127.0.0.1");
    assert_eq!(got[0]["family"], "IPv4");
    assert_eq!(got[0]["size"], 15);
    assert!(l.wait_exit().success());
}

#[test]
fn datagrams_over_the_size_rule_are_refused() {
    let big = "a".repeat(65_508);
    let out = shoal()
        .args(["dgram", "send", "127.0.0.1:9", &big])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("65508 bytes is larger than the 65507-byte limit for IPv4"),
        "{err}"
    );
}

#[test]
fn chapter_multicast_two_groups_three_receivers_and_a_reply() {
    let port = free_port();
    let (g1, g2) = ("230.1.2.3", "230.3.2.1");
    let listener = |group: &str, label: &str, count: &str, reply: bool| {
        let mut c = shoal();
        c.args([
            "dgram",
            "listen",
            "--bind",
            &format!("{group}:{port}"),
            "--group",
            group,
        ]);
        c.args(["--label", label, "--json", "--count", count]);
        if reply {
            c.args(["--reply-to", &format!("{g1}:{port}")]);
        }
        start_listener(&mut c)
    };
    // Client1 and Client2 get 3 messages and Client3's 3 replies each.
    let c1 = listener(g1, "Client1", "6", false);
    let c2 = listener(g1, "Client2", "6", false);
    let c3 = listener(g2, "Client3", "3", true);
    dgram_support::send(&[
        &format!("{g1}:{port},{g2}:{port}"),
        "This is message #{num} to {to}",
        "--every",
        "50ms",
        "--count",
        "3",
        "--group-ttl",
        "1",
    ]);
    let mut want1: Vec<String> = (1..=3)
        .map(|n| format!("This is message #{n} to {g1}"))
        .collect();
    want1.extend(std::iter::repeat_n(
        "Calling original group!".to_string(),
        3,
    ));
    want1.sort();
    for c in [&c1, &c2] {
        let got = c.take_json(6);
        assert_eq!(messages(&got), want1);
        assert!(got.iter().all(|j| j["address"] == "127.0.0.1"), "{got:?}");
    }
    let got = c3.take_json(3);
    let want3: Vec<String> = (1..=3)
        .map(|n| format!("This is message #{n} to {g2}"))
        .collect();
    assert_eq!(
        messages(&got),
        want3,
        "Client3 must receive only its own group"
    );
}

/// Two network namespaces joined by a veth pair; removed on drop.
struct Netns {
    a: String,
    b: String,
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let tag = format!("{}", std::process::id());
        let n = Netns {
            a: format!("shoaldg{tag}a"),
            b: format!("shoaldg{tag}b"),
        };
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ip(&["netns", "add", &n.a])?;
        ip(&["netns", "add", &n.b])?;
        for ns in [&n.a, &n.b] {
            for conf in ["all", "default"] {
                let key = format!("net.ipv6.conf.{conf}.accept_dad=0");
                let _ = Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw", &key])
                    .status();
            }
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link", "add", "va", "netns", &n.a, "type", "veth", "peer", "name", "vb", "netns", &n.b,
        ])?;
        for (ns, dev, addr) in [
            (&n.a, "va", "fd00:5d6::1/64"),
            (&n.b, "vb", "fd00:5d6::2/64"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev, "nodad"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(n)
    }

    fn exec(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_shoal")]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn ipv6_multicast_over_veth_in_namespaces() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED ipv6_multicast_over_veth_in_namespaces: cannot create network namespaces: {why}");
            return;
        }
    };
    // One port per group, so each listener sees only its own group.
    let (p1, p2, p3) = (45_461u16, 45_462u16, 45_463u16);
    let listener = |group: &str, port: u16, source: Option<&str>| {
        let mut c = ns.exec(&ns.b);
        let bind = format!("[::]:{port}");
        c.args(["dgram", "listen", "--bind", &bind, "--group", group]);
        if let Some(src) = source {
            c.args(["--source", src]);
        }
        c.args(["--interface", "vb", "--json", "--count", "3"]);
        start_listener(&mut c)
    };
    let site = listener("ff15::5d6", p1, None);
    let link = listener("ff02::1:5d6", p2, None);
    // Source-specific (RFC 4607, ff3x::/32), from the sender's address.
    let ssm = listener("ff3e::5d6", p3, Some("fd00:5d6::1"));
    // Send until every listener has what it needs (the first datagrams may
    // race the group joins on the link); the sender is killed on drop.
    let mut s = ns.exec(&ns.a);
    let to = format!("[ff15::5d6]:{p1},[ff02::1:5d6]:{p2},[ff3e::5d6]:{p3}");
    s.args(["dgram", "send", &to, "v6 #{num} to {to}"]);
    s.args(["--interface", "va", "--every", "100ms", "--count", "600"]);
    let _sender = spawn(&mut s);
    for (l, group) in [
        (&site, "ff15::5d6"),
        (&link, "ff02::1:5d6"),
        (&ssm, "ff3e::5d6"),
    ] {
        let got = l.take_json(3);
        for j in &got {
            assert_eq!(j["family"], "IPv6");
            let m = j["message"].as_str().unwrap();
            assert!(m.ends_with(&format!("to {group}")), "{m}");
        }
    }
}
