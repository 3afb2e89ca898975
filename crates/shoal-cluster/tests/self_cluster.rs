//! The chapter's `cluster.isMaster` pattern in Rust: this test binary is its
//! own primary (through the library API) and, re-run with
//! `SHOAL_WORKER_ID` set, its own workers, which take their listener from
//! `LISTEN_FDS` and talk over the IPC channel.

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Value};
use shoal_cluster::{role, Cluster, ClusterSpec, Event, Ready};
use shoal_core::Shutdown;
use shoal_process::{Channel, Incoming};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

const T: Duration = Duration::from_secs(60);

async fn worker_main() {
    let id = role::worker_id().expect("SHOAL_WORKER_ID");
    let extra = std::env::var("EXTRA").unwrap_or_default();
    let std_l = role::take_tcp_listeners()
        .unwrap()
        .into_iter()
        .next()
        .expect("one listener");
    assert!(std::env::var_os("LISTEN_FDS").is_none(), "taken once");
    let l = tokio::net::TcpListener::from_std(std_l).unwrap();
    let mut ch = Channel::from_env().unwrap().expect("IPC channel");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s
                .write_all(format!("worker {id}{extra}\n").as_bytes())
                .await;
        }
    });
    role::notify_ready(Some(&ch)).await.unwrap();
    while let Some(item) = ch.recv().await {
        if let Incoming::Message(v, _) = item {
            ch.send(&json!({ "echo": v, "id": id }), None)
                .await
                .unwrap();
        }
    }
}

async fn next_matching(
    rx: &mut broadcast::Receiver<Event>,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(T, async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

fn read_line(addr: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).trim().to_string()
}

#[tokio::test]
async fn rust_program_is_its_own_primary_and_workers() {
    if role::is_worker() {
        return worker_main().await;
    }
    assert!(role::is_primary());
    let exe = std::env::current_exe().unwrap();
    let mut spec = ClusterSpec::new(
        exe,
        [
            "--exact",
            "rust_program_is_its_own_primary_and_workers",
            "--test-threads=1",
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
    );
    spec.name = format!("selftest-{}", std::process::id());
    spec.workers = 2;
    spec.listen = vec!["127.0.0.1:0".parse().unwrap()];
    spec.ready = Ready::Ipc;
    spec.control = false;
    spec.silent = true;
    spec.grace = Duration::from_secs(5);
    let (cluster, running) = Cluster::new(spec, Shutdown::new()).await.unwrap();
    let mut ev = cluster.subscribe();
    cluster.begin().await.unwrap();
    let shoal_cluster::ListenAddr::Tcp(addr) = cluster.addrs()[0].clone() else {
        panic!()
    };
    let mut online = std::collections::BTreeSet::new();
    while online.len() < 2 {
        if let Event::Online { id, .. } =
            next_matching(&mut ev, |e| matches!(e, Event::Online { .. })).await
        {
            online.insert(id);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + T;
    while std::time::Instant::now() < deadline {
        seen.insert(
            tokio::task::spawn_blocking(move || read_line(addr))
                .await
                .unwrap(),
        );
        if seen.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["worker 1", "worker 2"]
    );
    let ws = cluster.workers().await.unwrap();
    assert_eq!(ws.iter().map(|w| w.id).collect::<Vec<_>>(), [1, 2]);

    // worker.send and the worker's answer as a message event.
    let w1 = cluster.worker(1).await.unwrap().expect("worker 1");
    assert_eq!((w1.id(), w1.pid()), (1, ws[0].pid));
    assert!(cluster.worker(9).await.unwrap().is_none());
    w1.send(json!({"n": 7})).await.unwrap().unwrap();
    let m = next_matching(
        &mut ev,
        |e| matches!(e, Event::Message { message, .. } if message != "ready"),
    )
    .await;
    let Event::Message { id, message, .. } = m else {
        unreachable!()
    };
    assert_eq!((id, message), (1, json!({"echo": {"n": 7}, "id": 1})));
    assert_eq!(cluster.send_all(json!("all")).await.unwrap(), 2);

    // cluster.fork(env): a third worker with its own environment.
    let w3 = cluster
        .fork(vec![("EXTRA".into(), " extra".into())])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w3.id, 3);
    next_matching(&mut ev, |e| matches!(e, Event::Online { id: 3, .. })).await;
    let mut got3 = false;
    let deadline = std::time::Instant::now() + T;
    while std::time::Instant::now() < deadline {
        if tokio::task::spawn_blocking(move || read_line(addr))
            .await
            .unwrap()
            == "worker 3 extra"
        {
            got3 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(got3, "worker 3 never answered");

    // worker.kill: it is not replaced, and its exit says it was asked to go.
    let w3h = cluster.worker(3).await.unwrap().expect("worker 3");
    w3h.kill(libc::SIGKILL).await.unwrap().unwrap();
    let e = next_matching(&mut ev, |e| matches!(e, Event::Exit { id: 3, .. })).await;
    let Event::Exit {
        signal,
        exited_after_disconnect,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(signal.as_deref(), Some("SIGKILL"));
    assert!(exited_after_disconnect);
    assert_eq!(cluster.workers().await.unwrap().len(), 2);
    assert!(cluster.kill(3, libc::SIGTERM).await.unwrap().is_err());

    // cluster.disconnect: the workers leave when their channel closes.
    cluster.disconnect().await.unwrap();
    let mut exits = Vec::<Value>::new();
    while exits.len() < 2 {
        if let Event::Exit {
            id,
            code,
            exited_after_disconnect,
            ..
        } = next_matching(&mut ev, |e| matches!(e, Event::Exit { .. })).await
        {
            exits.push(json!({"id": id, "code": code, "asked": exited_after_disconnect}));
        }
    }
    for e in &exits {
        assert_eq!(e["asked"], true, "{exits:?}");
    }
    tokio::time::timeout(T, running.wait())
        .await
        .unwrap()
        .unwrap();
}
