//! The chapter's Node dgram code against `shoal dgram`: a Node multicast
//! client (bind to the group's address, addMembership) receives what
//! `shoal dgram send` multicasts, and `shoal dgram listen` receives what a
//! Node sender multicasts. Every membership and send is pinned to 127.0.0.1.

mod dgram_support;

use std::process::Command;

use dgram_support::{free_port, node_path, shoal, spawn, start_listener};

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
    let node = spawn(Command::new("node").args(["-e", client, &port.to_string(), "230.1.2.3"]));
    node.wait_out(|l| l == "ready");
    dgram_support::send(&[
        &format!("230.1.2.3:{port}"),
        "--every",
        "50ms",
        "--count",
        "3",
    ]);
    for n in 1..=3 {
        let l = node.wait_out(|l| l.starts_with("Client1"));
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
    let listener = start_listener(shoal().args([
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
        let l = listener.wait_out(|l| l.starts_with("Client3"));
        assert!(
            l.starts_with(&format!(
                "Client3 received message This is message #{n} from 127.0.0.1:"
            )),
            "{l}"
        );
    }
}
