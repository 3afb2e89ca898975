//! The chapter's Node dgram code against `shoal dgram`: a Node multicast
//! client (bind to the group's address, addMembership) receives what
//! `shoal dgram send` multicasts, and `shoal dgram listen` receives what a
//! Node sender multicasts. Every membership and send is pinned to 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node/node_modules")
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawn `cmd` with piped stdout; lines arrive on the channel.
fn spawn_lines(cmd: &mut Command) -> (Kill, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(format!("stderr: {l}"));
        }
    });
    (Kill(child), rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    loop {
        let l = rx.recv_timeout(WAIT).expect("expected line in time");
        if pred(&l) {
            return l;
        }
        eprintln!("[child] {l}");
    }
}

#[test]
fn node_chapter_client_receives_shoal_multicast() {
    let port = free_port();
    // The chapter's client, with the membership pinned to the loopback.
    let client = r#"
const dgram = require('dgram');
const [port, group] = [Number(process.argv[1]), process.argv[2]];
let n = 0;
dgram.createSocket({ type: 'udp4', reuseAddr: true })
  .on('message', function (message, remote) {
    console.log('Client1 received message ' + message + ' from ' + remote.address + ':' + remote.port);
    if (++n === 3) process.exit(0);
  })
  .on('listening', function () {
    this.addMembership(group, '127.0.0.1');
    console.log('ready');
  })
  .bind(port, group);
"#;
    let (_node, rx) =
        spawn_lines(Command::new("node").args(["-e", client, &port.to_string(), "230.1.2.3"]));
    wait_for(&rx, |l| l == "ready");
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "dgram",
            "send",
            &format!("230.1.2.3:{port}"),
            "--every",
            "50ms",
            "--count",
            "3",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in 1..=3 {
        let l = wait_for(&rx, |l| l.starts_with("Client1"));
        assert!(
            l.starts_with(&format!(
                "Client1 received message This is message #{n} from 127.0.0.1:"
            )),
            "{l}"
        );
    }
}

#[test]
fn shoal_listener_receives_the_chapter_node_sender() {
    let port = free_port();
    let (_l, rx) = spawn_lines(Command::new(env!("CARGO_BIN_EXE_shoal")).args([
        "dgram",
        "listen",
        "--bind",
        &format!("230.3.2.1:{port}"),
        "--group",
        "230.3.2.1",
        "--label",
        "Client3",
        "--count",
        "3",
    ]));
    wait_for(&rx, |l| l.starts_with("stderr: Listening for datagrams"));
    // The chapter's sender (setTimeout loop), pinned to the loopback.
    let sender = r#"
const dgram = require('dgram');
const [port, group] = [Number(process.argv[1]), process.argv[2]];
const socket = dgram.createSocket('udp4');
socket.bind(0, '127.0.0.1', function () {
  socket.setMulticastInterface('127.0.0.1');
  socket.setMulticastTTL(1);
  let cnt = 1;
  (function sender() {
    const msg = Buffer.from('This is message #' + cnt);
    socket.send(msg, 0, msg.length, port, group);
    if (++cnt > 3) { setTimeout(() => socket.close(), 50); return; }
    setTimeout(sender, 50);
  })();
});
"#;
    let st = Command::new("node")
        .args(["-e", sender, &port.to_string(), "230.3.2.1"])
        .env("NODE_PATH", node_path())
        .status()
        .unwrap();
    assert!(st.success());
    for n in 1..=3 {
        let l = wait_for(&rx, |l| l.starts_with("Client3"));
        assert!(
            l.starts_with(&format!(
                "Client3 received message This is message #{n} from 127.0.0.1:"
            )),
            "{l}"
        );
    }
}
