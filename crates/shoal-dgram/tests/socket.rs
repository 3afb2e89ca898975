//! The dgram socket API over real loopback sockets: bind/send/receive with
//! sender info, the size rule, events, close, and IPv4 multicast pinned to
//! 127.0.0.1 (several groups, two members, source-specific membership).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use shoal_dgram::{DgramSocket, Error, Event, Family, SocketOptions, MAX_DATAGRAM_V4};

const WAIT: Duration = Duration::from_secs(30);
const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn recv_text(s: &DgramSocket) -> (String, shoal_dgram::RemoteInfo) {
    let m = tokio::time::timeout(WAIT, s.recv())
        .await
        .expect("a datagram in time")
        .expect("recv");
    (String::from_utf8(m.data.to_vec()).expect("utf8"), m.rinfo)
}

#[tokio::test]
async fn send_receive_with_sender_info() {
    let v4 = SocketOptions::new(Family::V4);
    let server = DgramSocket::bind(&v4, 0, Some(LO)).unwrap();
    let client = DgramSocket::bind(&v4, 0, Some(LO)).unwrap();
    let port = server.address().unwrap().port();
    let buf = b"xxUDP says Hello!yy";
    let n = client.send(buf, 2, 15, port, "localhost").await.unwrap();
    assert_eq!(n, 15);
    let (text, rinfo) = recv_text(&server).await;
    assert_eq!(text, "UDP says Hello!");
    assert_eq!(rinfo.address, LO);
    assert_eq!(rinfo.family, Family::V4);
    assert_eq!(rinfo.port, client.address().unwrap().port());
    assert_eq!(rinfo.size, 15);
    // offset/length outside the buffer.
    assert!(matches!(
        client.send(buf, 10, 20, port, "127.0.0.1").await,
        Err(Error::OutOfBounds { .. })
    ));
    // A v6 destination from a v4 socket.
    assert!(client.send(buf, 0, 1, port, "::1").await.is_err());
}

#[tokio::test]
async fn size_rule_refuses_before_sending() {
    let v4 = SocketOptions::new(Family::V4);
    let server = DgramSocket::bind(&v4, 0, Some(LO)).unwrap();
    let client = DgramSocket::bind(&v4, 0, Some(LO)).unwrap();
    let to = server.address().unwrap();
    let big = vec![b'a'; MAX_DATAGRAM_V4 + 1];
    match client.send_to(&big, to).await {
        Err(Error::TooLarge { size, max, .. }) => assert_eq!((size, max), (65_508, 65_507)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The largest legal datagram goes through whole.
    assert_eq!(
        client.send_to(&big[..MAX_DATAGRAM_V4], to).await.unwrap(),
        MAX_DATAGRAM_V4
    );
    let m = tokio::time::timeout(WAIT, server.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.rinfo.size, MAX_DATAGRAM_V4);
}

#[tokio::test]
async fn events_listening_message_close() {
    let v4 = SocketOptions::new(Family::V4);
    let server = DgramSocket::bind(&v4, 0, Some(LO)).unwrap();
    let mut events = server.events();
    let at = match tokio::time::timeout(WAIT, events.next()).await.unwrap() {
        Some(Event::Listening(a)) => a,
        other => panic!("expected Listening, got {other:?}"),
    };
    let client = DgramSocket::bind(&v4, 0, Some(LO)).unwrap();
    client.send_to(b"ping", at).await.unwrap();
    match tokio::time::timeout(WAIT, events.next()).await.unwrap() {
        Some(Event::Message(m)) => assert_eq!(&m.data[..], b"ping"),
        other => panic!("expected Message, got {other:?}"),
    }
    server.close();
    assert!(matches!(
        tokio::time::timeout(WAIT, events.next()).await.unwrap(),
        Some(Event::Close)
    ));
    assert!(tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .is_none());
    assert!(matches!(server.send_to(b"x", at).await, Err(Error::Closed)));
    assert!(matches!(server.address(), Err(Error::Closed)));
}

#[tokio::test]
async fn option_ranges() {
    let s = DgramSocket::bind(&SocketOptions::new(Family::V4), 0, Some(LO)).unwrap();
    assert!(s.set_multicast_ttl(64).is_ok());
    assert!(s.set_multicast_ttl(0).is_ok());
    assert!(matches!(s.set_multicast_ttl(256), Err(Error::Invalid(_))));
    assert!(matches!(s.set_ttl(0), Err(Error::Invalid(_))));
    assert!(s.set_ttl(255).is_ok());
    assert!(s.set_broadcast(true).is_ok());
    assert!(s.set_multicast_loopback(true).is_ok());
    let e = s
        .add_membership("10.0.0.1".parse().unwrap(), Some("127.0.0.1"))
        .unwrap_err();
    assert!(e.to_string().contains("not a multicast address"), "{e}");
    let e = s
        .add_membership("ff15::1".parse().unwrap(), None)
        .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    assert!(DgramSocket::bind(&SocketOptions::new(Family::V6), 0, Some(LO)).is_err());
}

/// A member of `group` on 127.0.0.1, bound to the group's address (as the
/// chapter's clients are), sharing the port.
fn member(group: &str, port: u16) -> DgramSocket {
    let g: IpAddr = group.parse().unwrap();
    let s = DgramSocket::bind(
        &SocketOptions::new(Family::V4).reuse_addr(true),
        port,
        Some(g),
    )
    .unwrap();
    s.add_membership(g, Some("127.0.0.1")).unwrap();
    s
}

/// A sender bound to `from` whose multicast leaves by 127.0.0.1: nothing
/// leaves the host.
fn sender_from(from: IpAddr) -> DgramSocket {
    let s = DgramSocket::bind(&SocketOptions::new(Family::V4), 0, Some(from)).unwrap();
    s.set_multicast_interface("127.0.0.1").unwrap();
    s
}

/// Send all of `text` to `group` on `port`.
async fn send_text(s: &DgramSocket, text: &str, port: u16, group: &str) {
    let n = s
        .send(text.as_bytes(), 0, text.len(), port, group)
        .await
        .unwrap();
    assert_eq!(n, text.len());
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn multicast_two_groups_on_loopback() {
    let port = free_port();
    let a1 = member("230.1.2.3", port);
    let a2 = member("230.1.2.3", port);
    let b = member("230.3.2.1", port);
    // The sender is pinned to the loopback interface: nothing leaves the host.
    let sender = sender_from(LO);
    sender.set_multicast_ttl(1).unwrap();
    sender.set_multicast_loopback(true).unwrap();
    for n in 1..=3 {
        send_text(&sender, &format!("This is message #{n}"), port, "230.1.2.3").await;
        send_text(&sender, &format!("group two #{n}"), port, "230.3.2.1").await;
    }
    for s in [&a1, &a2] {
        for n in 1..=3 {
            let (text, rinfo) = recv_text(s).await;
            assert_eq!(text, format!("This is message #{n}"));
            assert_eq!(rinfo.address, LO);
        }
    }
    for n in 1..=3 {
        assert_eq!(recv_text(&b).await.0, format!("group two #{n}"));
    }
    // A member replies to the other group, as the chapter's last example does.
    send_text(
        &sender_from(LO),
        "Calling original group!",
        port,
        "230.1.2.3",
    )
    .await;
    assert_eq!(recv_text(&a1).await.0, "Calling original group!");
    assert_eq!(recv_text(&a2).await.0, "Calling original group!");
    // After leaving, nothing more arrives for the group (b still gets its own).
    a1.drop_membership("230.1.2.3".parse().unwrap(), Some("127.0.0.1"))
        .unwrap();
    a1.close();
}

#[tokio::test]
async fn source_specific_membership_filters_senders() {
    let port = free_port();
    let group: IpAddr = "232.1.2.3".parse().unwrap();
    let r = DgramSocket::bind(
        &SocketOptions::new(Family::V4).reuse_addr(true),
        port,
        Some(group),
    )
    .unwrap();
    r.add_source_specific_membership(LO, group, Some("127.0.0.1"))
        .unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    // The datagram from 127.0.0.2 is sent first; only the one from the
    // joined source may arrive.
    send_text(&sender_from(other), "from .2", port, "232.1.2.3").await;
    send_text(&sender_from(LO), "from .1", port, "232.1.2.3").await;
    let (text, rinfo) = recv_text(&r).await;
    assert_eq!((text.as_str(), rinfo.address), ("from .1", LO));
    r.drop_source_specific_membership(LO, group, Some("127.0.0.1"))
        .unwrap();
    assert!(r
        .add_source_specific_membership("::1".parse().unwrap(), group, None)
        .is_err());
}

#[tokio::test]
async fn one_socket_in_several_groups() {
    let port = free_port();
    let s =
        DgramSocket::bind(&SocketOptions::new(Family::V4).reuse_addr(true), port, None).unwrap();
    for g in ["230.1.2.3", "230.3.2.1"] {
        s.add_membership(g.parse().unwrap(), Some("127.0.0.1"))
            .unwrap();
    }
    s.set_multicast_all(false).unwrap();
    let sender = sender_from(LO);
    send_text(&sender, "to one", port, "230.1.2.3").await;
    send_text(&sender, "to two", port, "230.3.2.1").await;
    // Not joined: must not arrive (IP_MULTICAST_ALL off).
    send_text(&sender, "to three", port, "230.9.9.9").await;
    send_text(&sender, "end", port, "230.1.2.3").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(recv_text(&s).await.0);
    }
    assert_eq!(got, vec!["to one", "to two", "end"]);
}
