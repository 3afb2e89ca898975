//! Helpers shared by the broker's library-level tests: an in-process broker
//! on 127.0.0.1:0, a lapin connection to it, and raw-socket frame I/O for
//! tests that play a hostile or broken client.
#![allow(dead_code)]

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{connection, AMQPClass};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use shoal_broker::Config;
use shoal_core::Shutdown;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const T: Duration = Duration::from_secs(30);

pub struct TestBroker {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestBroker {
        Self::start_in(tempfile::tempdir().expect("tempdir"), f).await
    }

    pub async fn start_in(dir: tempfile::TempDir, f: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = Config {
            data_dir: dir.path().join("data"),
            admin_listen: None,
            name: format!("lapin-test-{}-{}", std::process::id(), rand_suffix()),
            ..Config::default()
        };
        f(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = shoal_broker::serve(listener, config, s).await {
                panic!("broker failed: {e}");
            }
        });
        TestBroker {
            addr,
            shutdown,
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub async fn stop(self) {
        self.stop_keep().await;
    }

    /// Stop and hand back the data directory (for a restart).
    pub async fn stop_keep(mut self) -> tempfile::TempDir {
        self.shutdown.trigger();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(T, t).await;
        }
        let placeholder = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self._dir, placeholder)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn rand_suffix() -> u64 {
    use std::time::SystemTime;
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub async fn lapin_conn(b: &TestBroker) -> Connection {
    tokio::time::timeout(
        T,
        Connection::connect(&b.uri(), ConnectionProperties::default()),
    )
    .await
    .expect("connect timeout")
    .expect("connect")
}

pub fn encode(f: &AMQPFrame) -> Vec<u8> {
    gen_frame(f)(WriteContext::from(Vec::new()))
        .expect("encode")
        .write
}

pub async fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<AMQPFrame> {
    loop {
        if let Ok((rest, f)) = parse_frame(&buf[..]) {
            let used = buf.len() - rest.len();
            buf.drain(..used);
            return Some(f);
        }
        let mut tmp = [0u8; 4096];
        let n = tokio::time::timeout(T, s.read(&mut tmp)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Connect, send the protocol header, read connection.start.
pub async fn raw_start(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    let mut buf = Vec::new();
    match read_frame(&mut s, &mut buf).await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(st)))) => {
            assert!(st.mechanisms.to_string().contains("PLAIN"));
        }
        other => panic!("expected connection.start, got {other:?}"),
    }
    (s, buf)
}

pub async fn expect_close(s: &mut TcpStream, buf: &mut Vec<u8>, code: u16) {
    loop {
        match read_frame(s, buf).await {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
                assert_eq!(c.reply_code, code, "{c:?}");
                return;
            }
            Some(_) => continue,
            None => panic!("connection ended without connection.close {code}"),
        }
    }
}

/// Handshake by hand (PLAIN guest/guest, the given heartbeat), up to open-ok.
pub async fn raw_open(addr: SocketAddr, heartbeat: u16) -> (TcpStream, Vec<u8>) {
    let (mut s, mut buf) = raw_start(addr).await;
    let start_ok = AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
    );
    s.write_all(&encode(&start_ok)).await.unwrap();
    match read_frame(&mut s, &mut buf).await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t)))) => {
            assert_eq!(t.frame_max, 131072);
        }
        other => panic!("expected tune, got {other:?}"),
    }
    let tune_ok = AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 16,
            frame_max: 65536,
            heartbeat,
        })),
    );
    let open = AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    );
    s.write_all(&encode(&tune_ok)).await.unwrap();
    s.write_all(&encode(&open)).await.unwrap();
    loop {
        match read_frame(&mut s, &mut buf).await {
            Some(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)),
            )) => break,
            Some(AMQPFrame::Heartbeat) => {}
            other => panic!("expected open-ok, got {other:?}"),
        }
    }
    (s, buf)
}
