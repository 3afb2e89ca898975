//! The child_process toolkit against real Node children (and a Rust child):
//! IPC both ways, internal messages filtered, garbage reported, disconnect,
//! kill after exit, and the chapter's socket distribution with its unchanged
//! `child.js`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use shoal_process::{
    fork, spawn, Child, ChildEvent, Error, ForkOptions, Handle, SpawnOptions, Stdio,
};

const T: Duration = Duration::from_secs(30);

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/process")
        .join(name)
}

fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p
}

async fn event(c: &mut Child) -> ChildEvent {
    tokio::time::timeout(T, c.next_event())
        .await
        .expect("timed out waiting for a child event")
        .expect("event stream ended")
}

/// Skip events until a message arrives.
async fn message(c: &mut Child) -> Value {
    loop {
        match event(c).await {
            ChildEvent::Message(v, _) => return v,
            ChildEvent::Exit(s) => panic!("child exited early: {s}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn chapter_messaging_round_trip() {
    let mut cp = fork(
        example("message_child.js"),
        Vec::<String>::new(),
        ForkOptions {
            silent: true,
            ..ForkOptions::default()
        },
    )
    .unwrap();
    assert!(cp.connected());
    cp.send(&json!({"text": "I love you ü \u{2028}"}), None)
        .await
        .unwrap();
    let m = message(&mut cp).await;
    assert_eq!(m, json!({"text": "I love you ü \u{2028} too"}));
    let mut out = String::new();
    let mut so = cp.stdout.take().unwrap();
    cp.disconnect().await.unwrap();
    assert!(!cp.connected());
    tokio::io::AsyncReadExt::read_to_string(&mut so, &mut out)
        .await
        .unwrap();
    assert_eq!(out, "Child got message: I love you ü \u{2028}\n");
    let mut seen = Vec::new();
    loop {
        match event(&mut cp).await {
            ChildEvent::Close(s) => {
                assert!(s.success(), "{s}");
                break;
            }
            e => seen.push(format!("{e:?}")),
        }
    }
    assert!(seen.iter().any(|e| e == "Disconnect"), "{seen:?}");
    assert!(seen.iter().any(|e| e.starts_with("Exit")), "{seen:?}");
    // The child is gone and reaped: kill reports that instead of signalling.
    assert!(!cp.kill(libc::SIGKILL).unwrap());
}

#[tokio::test]
async fn internal_messages_and_garbage_are_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let js = script(
        &dir,
        "c.js",
        r#"
        const fs = require('fs');
        process.on('message', m => process.send({ ordinary: m }));
        process.on('internalMessage', m => { if (m.cmd === 'NODE_PING') process.send({ internal: m.cmd }); });
        process.send({ cmd: 'NODE_FROM_CHILD', x: 1 });
        fs.writeSync(3, 'this is not json\n');
        process.send({ env: process.env.NODE_CHANNEL_FD === undefined, big: 'x'.repeat(1 << 20) });
        "#,
    );
    let mut cp = fork(&js, Vec::<String>::new(), ForkOptions::default()).unwrap();
    match event(&mut cp).await {
        ChildEvent::Internal(v) => assert_eq!(v["cmd"], "NODE_FROM_CHILD"),
        e => panic!("{e:?}"),
    }
    match event(&mut cp).await {
        ChildEvent::Error(Error::NotJson { preview, .. }) => assert!(preview.contains("not json")),
        e => panic!("{e:?}"),
    }
    let m = message(&mut cp).await;
    assert_eq!(
        m["env"], true,
        "Node removes NODE_CHANNEL_FD from the child's env"
    );
    assert_eq!(m["big"].as_str().unwrap().len(), 1 << 20);
    cp.send(&json!({"cmd": "NODE_PING"}), None).await.unwrap();
    cp.send(&json!([1, "two"]), None).await.unwrap();
    // The internal message reached the child's 'internalMessage', not 'message'.
    assert_eq!(message(&mut cp).await, json!({"internal": "NODE_PING"}));
    assert_eq!(message(&mut cp).await, json!({"ordinary": [1, "two"]}));
    assert!(cp.kill(libc::SIGTERM).unwrap());
    let s = tokio::time::timeout(T, cp.wait()).await.unwrap();
    assert_eq!(s.signal, Some(libc::SIGTERM));
    assert_eq!(s.signal_name(), Some("SIGTERM"));
}

#[tokio::test]
async fn chapter_socket_distribution_with_unchanged_child() {
    let mut children = Vec::new();
    for idx in 0..2 {
        children.push(
            fork(
                example("child.js"),
                [idx.to_string()],
                ForkOptions::default(),
            )
            .unwrap(),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let clients = tokio::task::spawn_blocking(move || {
        (0..20)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(T)).unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            })
            .collect::<Vec<_>>()
    });
    for i in 0..20 {
        let (sock, _) = tokio::time::timeout(T, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let pick = (i * 7 + i / 3) % children.len();
        children[pick]
            .send(&Value::Null, Some(Handle::try_from(sock).unwrap()))
            .await
            .unwrap();
    }
    let answers = tokio::time::timeout(T, clients).await.unwrap().unwrap();
    for a in &answers {
        assert!(
            a == "child 0 was your server today.\r\n" || a == "child 1 was your server today.\r\n",
            "{a:?}"
        );
    }
    assert!(answers.iter().any(|a| a.contains("child 0")));
    assert!(answers.iter().any(|a| a.contains("child 1")));
    for c in &children {
        c.disconnect().await.unwrap();
        tokio::time::timeout(T, c.wait()).await.unwrap();
    }
}

#[tokio::test]
async fn a_node_child_can_send_a_socket_back() {
    let dir = tempfile::tempdir().unwrap();
    let js = script(
        &dir,
        "srv.js",
        r#"
        const net = require('net');
        const srv = net.createServer(s => process.send({ got: 'conn' }, s));
        srv.listen(0, '127.0.0.1', () => process.send({ port: srv.address().port }));
        process.on('message', () => process.exit(0));
        "#,
    );
    let mut cp = fork(&js, Vec::<String>::new(), ForkOptions::default()).unwrap();
    let port = message(&mut cp).await["port"].as_u64().unwrap() as u16;
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let sock = loop {
        match event(&mut cp).await {
            ChildEvent::Message(v, Some(Handle::TcpStream(s))) => {
                assert_eq!(v, json!({"got": "conn"}));
                break s;
            }
            ChildEvent::Message(v, h) => panic!("{v} {h:?}"),
            _ => {}
        }
    };
    (&sock).write_all(b"from the rust parent\n").unwrap();
    drop(sock);
    client.set_read_timeout(Some(T)).unwrap();
    let mut out = String::new();
    // Node may still hold its copy until it closes; read the first line.
    let mut buf = [0u8; 64];
    let n = client.read(&mut buf).unwrap();
    out.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    assert_eq!(out, "from the rust parent\n");
    cp.send(&"stop", None).await.unwrap();
    assert!(tokio::time::timeout(T, cp.wait()).await.unwrap().success());
}

/// The Rust side of the channel, in a child: this same test binary re-run
/// with `SHOAL_TEST_RUST_CHILD=1`.
#[tokio::test]
async fn rust_child_echo() {
    if std::env::var_os("SHOAL_TEST_RUST_CHILD").is_some() {
        let mut ch = shoal_process::Channel::from_env()
            .unwrap()
            .expect("no channel");
        assert!(std::env::var_os("NODE_CHANNEL_FD").is_none());
        while let Some(item) = ch.recv().await {
            if let shoal_process::Incoming::Message(v, _) = item {
                if v == "bye" {
                    ch.sender().disconnect().await;
                    break;
                }
                ch.send(&json!({ "echo": v }), None).await.unwrap();
            }
        }
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut stdio = vec![Stdio::Ignore, Stdio::Ignore, Stdio::Inherit];
    stdio.push(Stdio::Ipc);
    let mut cp = spawn(
        exe,
        [
            "--exact",
            "rust_child_echo",
            "--nocapture",
            "--test-threads=1",
        ],
        SpawnOptions {
            stdio,
            extra_env: vec![("SHOAL_TEST_RUST_CHILD".into(), "1".into())],
            ..SpawnOptions::default()
        },
    )
    .unwrap();
    cp.send(&json!({"n": 1}), None).await.unwrap();
    assert_eq!(message(&mut cp).await, json!({"echo": {"n": 1}}));
    cp.send(&"bye", None).await.unwrap();
    let s = tokio::time::timeout(T, cp.wait()).await.unwrap();
    assert!(s.success(), "{s}");
}

#[tokio::test]
async fn spawn_options_cwd_env_fd_and_detached() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.txt");
    let file = std::fs::File::create(&out_path).unwrap();
    let mut env = std::collections::BTreeMap::new();
    env.insert("name".into(), "Sandro".into());
    env.insert("PATH".into(), std::env::var_os("PATH").unwrap());
    let cp = spawn(
        "/bin/sh",
        [
            "-c",
            "echo \"$name $(pwd) $(cat /proc/self/stat | cut -d' ' -f6)\" >&4; echo $$",
        ],
        SpawnOptions {
            cwd: Some(dir.path().to_path_buf()),
            env: Some(env),
            detached: true,
            stdio: vec![
                Stdio::Ignore,
                Stdio::Ignore,
                Stdio::Ignore,
                Stdio::Ignore,
                Stdio::fd(file),
            ],
            ..SpawnOptions::default()
        },
    )
    .unwrap();
    let pid = cp.pid();
    assert!(tokio::time::timeout(T, cp.wait()).await.unwrap().success());
    let text = std::fs::read_to_string(&out_path).unwrap();
    let parts: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(parts[0], "Sandro");
    assert_eq!(
        std::fs::canonicalize(parts[1]).unwrap(),
        std::fs::canonicalize(dir.path()).unwrap()
    );
    // Field 6 of /proc/self/stat is the session id: the child leads its own session.
    // (The subshell's stat line is read by `cat`, a member of that session.)
    assert_eq!(parts[2], pid.to_string(), "{text}");
    // A program that does not exist is an error naming it.
    let e = spawn(
        "no-such-program-xyz",
        Vec::<String>::new(),
        SpawnOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no-such-program-xyz"), "{e}");
}

/// `uid`/`gid` need privileges: checked when the tests run as root (as in
/// CI containers), reported and skipped otherwise.
#[tokio::test]
async fn uid_and_gid_are_applied() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("uid_and_gid_are_applied: not root, cannot change uid; skipped");
        return;
    }
    let out = shoal_process::exec_file(
        "/bin/sh",
        ["-c", "id -u; id -g"],
        shoal_process::ExecOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout.text(), "0\n0\n");
    let mut cp = spawn(
        "/bin/sh",
        ["-c", "id -u; id -g"],
        SpawnOptions {
            uid: Some(65534),
            gid: Some(65534),
            stdio: vec![Stdio::Ignore, Stdio::Pipe, Stdio::Inherit],
            ..SpawnOptions::default()
        },
    )
    .unwrap();
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(cp.stdout.as_mut().unwrap(), &mut text)
        .await
        .unwrap();
    assert_eq!(text, "65534\n65534\n");
    assert!(tokio::time::timeout(T, cp.wait()).await.unwrap().success());
}

/// A listening socket handed to a Node child (`net.Server`) and a UDP socket
/// (`dgram.Socket`): the child serves on both.
#[tokio::test]
async fn a_listener_and_a_udp_socket_passed_to_node() {
    let dir = tempfile::tempdir().unwrap();
    let js = script(
        &dir,
        "srv.js",
        r#"
        process.on('message', (m, h) => {
            if (m === 'tcp') h.on('connection', s => s.end('served by node\n'));
            if (m === 'udp') h.on('message', (buf, rinfo) => h.send('echo ' + buf, rinfo.port, rinfo.address));
            process.send('got ' + m);
        });
        "#,
    );
    let mut cp = fork(&js, Vec::<String>::new(), ForkOptions::default()).unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    cp.send(&"tcp", Some(Handle::from(l))).await.unwrap();
    assert_eq!(message(&mut cp).await, "got tcp");
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uaddr = u.local_addr().unwrap();
    cp.send(&"udp", Some(Handle::from(u))).await.unwrap();
    assert_eq!(message(&mut cp).await, "got udp");
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        c.send_to(b"ping", uaddr).unwrap();
        let mut buf = [0u8; 64];
        let n = c.recv(&mut buf).unwrap();
        (out, String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .unwrap();
    assert_eq!(
        answer,
        ("served by node\n".to_string(), "echo ping".to_string())
    );
    cp.kill(libc::SIGKILL).unwrap();
    tokio::time::timeout(T, cp.wait()).await.unwrap();
}

/// A child in another language gets the channel as Node gives it: a
/// blocking descriptor, so plain `write(2)` calls neither fail with EAGAIN
/// when the parent is a little behind nor come back short for big messages.
#[tokio::test]
async fn a_python_child_gets_a_blocking_channel_and_its_writes_all_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let child = script(
        &dir,
        "child.py",
        r#"
import fcntl, json, os
fd = int(os.environ["NODE_CHANNEL_FD"])
blocking = not (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
# 3,000 messages of 4 KiB and one of 1 MiB, each with a single os.write:
# far more than the socket buffer holds while the parent is not reading.
pad = "x" * 4096
for i in range(3000):
    os.write(fd, (json.dumps({"i": i, "pad": pad}) + "\n").encode())
big = (json.dumps({"big": "y" * (1 << 20)}) + "\n").encode()
n = os.write(fd, big)
os.write(fd, (json.dumps({"blocking": blocking, "big_written": n == len(big)}) + "\n").encode())
"#,
    );
    let mut cp = fork(
        &child,
        Vec::<String>::new(),
        ForkOptions {
            exec_path: Some("python3".into()),
            silent: true,
            ..ForkOptions::default()
        },
    )
    .unwrap();
    // Let the child fill the socket before reading anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3000 {
        let m = message(&mut cp).await;
        assert_eq!(m["i"], i, "message {i} lost or out of order");
    }
    let big = message(&mut cp).await;
    assert_eq!(big["big"].as_str().map(str::len), Some(1 << 20));
    let last = message(&mut cp).await;
    assert_eq!(last, json!({"blocking": true, "big_written": true}));
}
