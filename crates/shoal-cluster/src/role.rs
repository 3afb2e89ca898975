//! The worker's side: am I the primary or a worker (the chapter's
//! `cluster.isMaster` / `isWorker`), which id, which listeners did I inherit
//! (systemd's `LISTEN_FDS`), and how to say "ready".

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use shoal_process::ipc::Channel;

/// The variable carrying a worker's id (1..N).
pub const WORKER_ID_ENV: &str = "SHOAL_WORKER_ID";
/// The variable carrying the cluster's name.
pub const CLUSTER_NAME_ENV: &str = "SHOAL_CLUSTER_NAME";
/// The first inherited listener, per systemd's `SD_LISTEN_FDS_START`.
pub const LISTEN_FDS_START: i32 = 3;

/// Whether this process is a primary (not started as a Shoal worker).
pub fn is_primary() -> bool {
    std::env::var_os(WORKER_ID_ENV).is_none()
}

/// Whether this process was started by a Shoal primary as a worker.
pub fn is_worker() -> bool {
    !is_primary()
}

/// This worker's id (1..N), if it is one.
pub fn worker_id() -> Option<u32> {
    std::env::var(WORKER_ID_ENV).ok()?.parse().ok()
}

/// The listeners passed by socket activation (`LISTEN_FDS`, checked against
/// `LISTEN_PID`), in order, with their `LISTEN_FDNAMES`. Takes them once:
/// the variables are removed so that our children do not claim them.
pub fn take_listeners() -> io::Result<Vec<(String, OwnedFd)>> {
    let Some(n) = std::env::var_os("LISTEN_FDS") else {
        return Ok(Vec::new());
    };
    let n: i32 = n
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "LISTEN_FDS is not a number"))?;
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|s| s.split(':').map(String::from).collect())
        .unwrap_or_default();
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDNAMES");
    if !pid_ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "LISTEN_PID does not match this process: the listeners are not ours",
        ));
    }
    (0..n)
        .map(|i| {
            let fd = LISTEN_FDS_START + i;
            // SAFETY: socket activation hands descriptors LISTEN_FDS_START..
            // to this process (LISTEN_PID checked above) and nothing else owns them.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            nix::fcntl::fcntl(
                &owned,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(io::Error::from)?;
            let name = names
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            Ok((name, owned))
        })
        .collect()
}

/// The inherited TCP listeners, non-blocking, ready for `tokio::net::TcpListener::from_std`.
pub fn take_tcp_listeners() -> io::Result<Vec<std::net::TcpListener>> {
    take_listeners()?
        .into_iter()
        .map(|(_, fd)| {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .collect()
}

/// Tell the primary this worker is ready: `"ready"` on the IPC channel (if
/// given) and `READY=1` to `$NOTIFY_SOCKET` (if set), so that it works with
/// `--ready ipc` and `--ready notify` alike.
pub async fn notify_ready(channel: Option<&Channel>) -> io::Result<()> {
    if let Some(ch) = channel {
        ch.send("ready", None).await.map_err(io::Error::other)?;
    }
    sd_notify("READY=1")
}

/// Send `state` to `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
/// namespace), like systemd's `sd_notify`; does nothing if it is not set.
pub fn sd_notify(state: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))?;
    }
    Ok(())
}
