//! Free loopback ports for test servers, shared by the test support
//! modules of more than one crate (included with `#[path]`).

/// A port free for both TCP and UDP on 127.0.0.1, chosen below the
/// kernel's ephemeral range (`ip_local_port_range`). A port the kernel
/// handed out for `bind(0)` and released is exactly what it hands the next
/// client as a source port, so a server started on it a moment later could
/// find it taken ("Address already in use", seen in the `shoal up` tests);
/// below the range no client gets it. Ports are not given twice in one
/// test process. Falls back to the kernel's choice if nothing below fits.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (from, to) = (low.saturating_sub(12_000).max(1025), low.saturating_sub(1));
    let bindable = |p: u16| {
        std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
    };
    if to > from {
        let mut given = GIVEN.lock().unwrap();
        let given = given.get_or_insert_with(HashSet::new);
        for i in 0..500u32 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u32(i);
            let p = (from + (h.finish() % u64::from(to - from)) as u32) as u16;
            if !given.contains(&p) && bindable(p) {
                given.insert(p);
                return p;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
