//! `shoal dgram listen` never shares a unicast UDP port silently: a port
//! another listener holds is refused with a clear message, unless every
//! sharer asks for it (`--reuse-port`); multicast listeners (`--group`)
//! still share their port as the chapter's clients do.

mod dgram_support;

use dgram_support::{free_port, shoal, spawn, start_listener};

#[test]
fn a_held_unicast_port_is_refused_unless_reuse_port() {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let _first = start_listener(shoal().args(["dgram", "listen", "--bind", &bind]));
    let mut second = spawn(shoal().args(["dgram", "listen", "--bind", &bind]));
    let status = second.wait_exit();
    assert!(!status.success(), "the second listener shared the port");
    let msg = second.wait_err(|l| l.starts_with("shoal: error:"));
    assert!(
        msg.contains(&bind) && msg.contains("--reuse-port") && msg.contains("in use"),
        "{msg}"
    );

    // Both asking for SO_REUSEPORT: shared on purpose.
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let args = ["dgram", "listen", "--reuse-port", "--bind", &bind];
    let _a = start_listener(shoal().args(args));
    let _b = start_listener(shoal().args(args));
}
