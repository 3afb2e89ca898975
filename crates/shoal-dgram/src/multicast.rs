//! Multicast and broadcast options of [`DgramSocket`], as Node names them:
//! `add_membership`, `drop_membership`, `add_source_specific_membership`
//! (RFC 4607), `set_multicast_ttl`, `set_multicast_loopback`,
//! `set_multicast_interface`, `set_broadcast`, `set_ttl`.
//!
//! Interfaces are given as Node gives them: for IPv4 the interface's
//! address (`"127.0.0.1"`); for IPv6 an interface name (`"eth1"`), an index
//! (`"3"`) or Node's scoped form (`"::%eth1"`). `None` lets the kernel pick
//! by its routing table, which on a machine with a default route means the
//! outside network: pin the interface when the traffic must stay local.

use std::net::{IpAddr, Ipv4Addr};

use crate::error::{io_err, Error, Result};
use crate::socket::{DgramSocket, Family};

/// Resolve an IPv6 interface spec (`eth1`, `3`, `::%eth1`) to its index.
pub fn ipv6_interface_index(spec: &str) -> Result<u32> {
    let name = spec.rsplit_once('%').map_or(spec, |(_, n)| n);
    if let Ok(i) = name.parse::<u32>() {
        return Ok(i);
    }
    nix::net::if_::if_nametoindex(name)
        .map_err(|e| Error::Invalid(format!("no interface {name:?}: {e}")))
}

fn ipv4_interface(spec: Option<&str>) -> Result<Ipv4Addr> {
    match spec {
        None => Ok(Ipv4Addr::UNSPECIFIED),
        Some(s) => s.parse().map_err(|_| {
            Error::Invalid(format!(
                "IPv4 multicast interface must be an IPv4 address, not {s:?}"
            ))
        }),
    }
}

/// The IPv6 interface index for `spec`; 0 (the kernel's choice) for `None`.
fn ipv6_interface(spec: Option<&str>) -> Result<u32> {
    Ok(spec.map(ipv6_interface_index).transpose()?.unwrap_or(0))
}

/// Joining or leaving a group: the same checks, the other socket call.
#[derive(Clone, Copy)]
enum Op {
    Join,
    Leave,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Join => "join",
            Op::Leave => "leave",
        }
    }
}

impl DgramSocket {
    fn same_family(&self, ip: &IpAddr, what: &str) -> Result<()> {
        if Family::of(ip) != self.family() {
            return Err(Error::Invalid(format!(
                "{what} {ip} does not match this {} socket",
                self.family()
            )));
        }
        if !ip.is_multicast() {
            return Err(Error::Invalid(format!("{ip} is not a multicast address")));
        }
        Ok(())
    }

    /// Join `group` on `interface` (IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP).
    /// Several groups may be joined on one socket.
    pub fn add_membership(&self, group: IpAddr, interface: Option<&str>) -> Result<()> {
        self.membership(Op::Join, group, interface)
    }

    /// Leave `group` on `interface`.
    pub fn drop_membership(&self, group: IpAddr, interface: Option<&str>) -> Result<()> {
        self.membership(Op::Leave, group, interface)
    }

    fn membership(&self, op: Op, group: IpAddr, interface: Option<&str>) -> Result<()> {
        self.same_family(&group, "group")?;
        let s = self.sock_ref();
        match (group, op) {
            (IpAddr::V4(g), Op::Join) => s.join_multicast_v4(&g, &ipv4_interface(interface)?),
            (IpAddr::V4(g), Op::Leave) => s.leave_multicast_v4(&g, &ipv4_interface(interface)?),
            (IpAddr::V6(g), Op::Join) => s.join_multicast_v6(&g, ipv6_interface(interface)?),
            (IpAddr::V6(g), Op::Leave) => s.leave_multicast_v6(&g, ipv6_interface(interface)?),
        }
        .map_err(io_err(format!("{} multicast group {group}", op.verb())))
    }

    /// Join `group` for datagrams from `source` only (source-specific
    /// multicast, RFC 4607; groups 232.0.0.0/8 and ff3x::/32). IPv4 goes
    /// through socket2; IPv6 uses `MCAST_JOIN_SOURCE_GROUP`, which socket2
    /// does not wrap.
    pub fn add_source_specific_membership(
        &self,
        source: IpAddr,
        group: IpAddr,
        interface: Option<&str>,
    ) -> Result<()> {
        self.source_membership(Op::Join, source, group, interface)
    }

    /// Leave a source-specific membership.
    pub fn drop_source_specific_membership(
        &self,
        source: IpAddr,
        group: IpAddr,
        interface: Option<&str>,
    ) -> Result<()> {
        self.source_membership(Op::Leave, source, group, interface)
    }

    fn source_membership(
        &self,
        op: Op,
        source: IpAddr,
        group: IpAddr,
        interface: Option<&str>,
    ) -> Result<()> {
        self.same_family(&group, "group")?;
        match (source, group) {
            (IpAddr::V4(src), IpAddr::V4(g)) => {
                let s = self.sock_ref();
                let ifc = ipv4_interface(interface)?;
                match op {
                    Op::Join => s.join_ssm_v4(&src, &g, &ifc),
                    Op::Leave => s.leave_ssm_v4(&src, &g, &ifc),
                }
                .map_err(io_err(format!("{} {g} for source {src}", op.verb())))
            }
            (IpAddr::V6(_), IpAddr::V6(_)) => {
                let opt = match op {
                    Op::Join => libc::MCAST_JOIN_SOURCE_GROUP,
                    Op::Leave => libc::MCAST_LEAVE_SOURCE_GROUP,
                };
                self.ssm_v6(opt, source, group, interface)
            }
            _ => Err(Error::Invalid(
                "source and group must be of the same family".into(),
            )),
        }
    }

    /// `MCAST_{JOIN,LEAVE}_SOURCE_GROUP` for IPv6 (RFC 3678's protocol-
    /// independent form).
    fn ssm_v6(
        &self,
        op: libc::c_int,
        source: IpAddr,
        group: IpAddr,
        interface: Option<&str>,
    ) -> Result<()> {
        use std::os::fd::AsRawFd;
        fn storage(ip: IpAddr) -> libc::sockaddr_storage {
            let addr = socket2::SockAddr::from(std::net::SocketAddr::new(ip, 0));
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let len = (addr.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
            // SAFETY: copies `len` bytes of a valid sockaddr into a buffer at
            // least that large; the regions do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    addr.as_ptr() as *const u8,
                    &mut st as *mut _ as *mut u8,
                    len,
                );
            }
            st
        }
        let req = libc::group_source_req {
            gsr_interface: ipv6_interface(interface)?,
            gsr_group: storage(group),
            gsr_source: storage(source),
        };
        // SAFETY: setsockopt on our socket with a fully initialised
        // group_source_req and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                self.as_tokio().as_raw_fd(),
                libc::IPPROTO_IPV6,
                op,
                &req as *const libc::group_source_req as *const libc::c_void,
                std::mem::size_of::<libc::group_source_req>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io_err(format!(
                "source-specific membership {group} from {source}"
            ))(std::io::Error::last_os_error()))
        }
    }

    /// Hops a multicast datagram may take (IP_MULTICAST_TTL /
    /// IPV6_MULTICAST_HOPS), 0..=255; the system default is 1.
    pub fn set_multicast_ttl(&self, ttl: u32) -> Result<()> {
        if ttl > 255 {
            return Err(Error::Invalid(format!(
                "multicast TTL {ttl} is out of range 0..=255"
            )));
        }
        let s = self.sock_ref();
        match self.family() {
            Family::V4 => s.set_multicast_ttl_v4(ttl),
            Family::V6 => s.set_multicast_hops_v6(ttl),
        }
        .map_err(io_err("set the multicast TTL"))
    }

    /// Whether this host's own members receive what this socket sends to a
    /// group (IP_MULTICAST_LOOP; on by default).
    pub fn set_multicast_loopback(&self, on: bool) -> Result<()> {
        let s = self.sock_ref();
        match self.family() {
            Family::V4 => s.set_multicast_loop_v4(on),
            Family::V6 => s.set_multicast_loop_v6(on),
        }
        .map_err(io_err("set multicast loopback"))
    }

    /// The interface that outgoing multicast leaves by (IP_MULTICAST_IF /
    /// IPV6_MULTICAST_IF).
    pub fn set_multicast_interface(&self, interface: &str) -> Result<()> {
        let s = self.sock_ref();
        match self.family() {
            Family::V4 => s.set_multicast_if_v4(&ipv4_interface(Some(interface))?),
            Family::V6 => s.set_multicast_if_v6(ipv6_interface_index(interface)?),
        }
        .map_err(io_err(format!(
            "set the multicast interface to {interface}"
        )))
    }

    /// With `false`, receive only the groups this socket joined, not every
    /// group joined on the host for its port (Linux's IP_MULTICAST_ALL,
    /// on by default; IPV6_MULTICAST_ALL for udp6, Linux 4.20+).
    pub fn set_multicast_all(&self, on: bool) -> Result<()> {
        let s = self.sock_ref();
        match self.family() {
            Family::V4 => s.set_multicast_all_v4(on),
            Family::V6 => s.set_multicast_all_v6(on),
        }
        .map_err(io_err("set IP_MULTICAST_ALL"))
    }

    /// Allow sending to broadcast addresses (SO_BROADCAST).
    pub fn set_broadcast(&self, on: bool) -> Result<()> {
        self.sock_ref()
            .set_broadcast(on)
            .map_err(io_err("set SO_BROADCAST"))
    }

    /// Unicast hop limit (IP_TTL / IPV6_UNICAST_HOPS), 1..=255.
    pub fn set_ttl(&self, ttl: u32) -> Result<()> {
        if !(1..=255).contains(&ttl) {
            return Err(Error::Invalid(format!("TTL {ttl} is out of range 1..=255")));
        }
        let s = self.sock_ref();
        match self.family() {
            Family::V4 => s.set_ttl_v4(ttl),
            Family::V6 => s.set_unicast_hops_v6(ttl),
        }
        .map_err(io_err("set the TTL"))
    }
}
