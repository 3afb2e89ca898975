//! Ordering of one series' updates across receive sockets: two senders (so
//! two source ports, which SO_REUSEPORT may spread over different sockets and
//! threads) race on one gauge, and every round must end exactly where the
//! order of sending says.

mod stats_support;

use std::net::UdpSocket;

use stats_support::Collector;

#[test]
fn a_gauge_set_by_one_sender_and_changed_by_another_is_exact_every_round() {
    let c = Collector::start_json(&["--sockets", "4"]);
    let senders: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("sender"))
        .collect();
    let mut sent = 0u64;
    let mut send = |s: &UdpSocket, d: String| {
        s.send_to(d.as_bytes(), c.udp).expect("send");
        sent += 1;
        sent
    };
    for round in 0..500u64 {
        // Each round another pair of senders: a change before the set (it
        // is overwritten), the set, then changes from the other sender and
        // from the setter.
        let a = &senders[(round % 4) as usize];
        let b = &senders[((round / 4 + round + 1) % 4) as usize];
        let b = if std::ptr::eq(a, b) {
            &senders[((round + 2) % 4) as usize]
        } else {
            b
        };
        let n = round * 10;
        send(b, "race.g:+1000|g".to_string());
        send(a, format!("race.g:{n}|g"));
        send(b, "race.g:+1|g".to_string());
        send(a, "race.g:+2|g\nrace.g:-1|g".to_string());
        let total = send(b, "race.g:+5|g".to_string());
        c.wait_health("packets", total);
        let j = c.flush_json();
        assert_eq!(
            j["gauges"]["race.g"].as_f64(),
            Some((n + 7) as f64),
            "round {round}: {j}"
        );
    }
}
