//! `shoal dgram`: the chapter's UDP and multicast examples as tools
//! (`listen` prints datagrams, `send` sends one or a series).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use shoal_core::parse_duration;
use shoal_dgram::{DgramSocket, Family, SocketOptions};

/// Send and receive UDP datagrams and multicast, as the chapter's dgram
/// examples do.
///
/// Multicast safety: unless you pass --interface, IPv4 multicast is joined on
/// and sent out of 127.0.0.1 only, so nothing leaves this machine. IPv6
/// multicast needs an explicit --interface (a name such as eth1, or an index).
#[derive(Args, Debug)]
#[command(after_help = "\
Examples (the chapter's multicast example, on this machine only):
  shoal dgram listen --bind 230.1.2.3:5554 --group 230.1.2.3 --label Client1
  shoal dgram listen --bind 230.1.2.3:5554 --group 230.1.2.3 --label Client2
  shoal dgram listen --bind 230.3.2.1:5554 --group 230.3.2.1 --label Client3 \\
      --reply-to 230.1.2.3:5554
  shoal dgram send 230.1.2.3:5554,230.3.2.1:5554 --every 1s --count 0

Plain UDP:
  shoal dgram listen --bind 127.0.0.1:41234
  shoal dgram send 127.0.0.1:41234 'UDP says Hello!'")]
pub struct DgramArgs {
    #[command(subcommand)]
    pub command: DgramCommand,
}

#[derive(Subcommand, Debug)]
pub enum DgramCommand {
    /// Print every datagram received, with its sender.
    #[command(after_help = "\
Examples:
  shoal dgram listen --bind 127.0.0.1:41234
  shoal dgram listen --bind 230.1.2.3:5554 --group 230.1.2.3 --label Client1 --json
  shoal dgram listen --bind 230.3.2.1:5554 --group 230.3.2.1 --reply-to 230.1.2.3:5554")]
    Listen(Box<ListenArgs>),
    /// Send a datagram, or a series of them.
    #[command(after_help = "\
Examples:
  shoal dgram send 127.0.0.1:41234 'UDP says Hello!'
  shoal dgram send 230.1.2.3:5554,230.3.2.1:5554 --every 1s --count 0    # This is message #1, #2, ...
  shoal dgram send 230.1.2.3:5554 'tick {num} to {to}' --group-ttl 1 --count 5 --every 200ms")]
    Send(Box<SendArgs>),
}

#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Address and port to bind. Binding a group's address (230.1.2.3:5554)
    /// receives only that group's datagrams on the port.
    #[arg(long, default_value = "0.0.0.0:41234", value_name = "ADDR:PORT")]
    pub bind: SocketAddr,
    /// Join this multicast group (repeatable: several groups on one socket).
    #[arg(long, value_name = "GROUP")]
    pub group: Vec<IpAddr>,
    /// Only from this source (source-specific multicast, RFC 4607: groups
    /// in 232.0.0.0/8 or ff3x::/32).
    #[arg(long, value_name = "SOURCE", requires = "group")]
    pub source: Option<IpAddr>,
    /// Interface to join groups on: an IPv4 address, or for IPv6 a name or
    /// index. [default for IPv4: 127.0.0.1]
    #[arg(long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Share the port with other sockets that also set SO_REUSEPORT (the
    /// kernel spreads datagrams over them). Without it, a unicast port
    /// another socket holds is refused; multicast listeners (--group, or a
    /// group address in --bind) share their port anyway (SO_REUSEADDR).
    #[arg(long)]
    pub reuse_port: bool,
    /// One JSON object per datagram: message, address, family, port, size.
    #[arg(long)]
    pub json: bool,
    /// Name printed before each line ("Client1 received message ...").
    #[arg(long, default_value = "shoal")]
    pub label: String,
    /// Exit after this many datagrams (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Answer every datagram by sending --reply to this address (the
    /// chapter's "Calling original group!").
    #[arg(long, value_name = "ADDR:PORT")]
    pub reply_to: Option<SocketAddr>,
    /// The reply's text.
    #[arg(long, default_value = "Calling original group!")]
    pub reply: String,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Destination(s): ADDR:PORT, several separated by commas
    /// (e.g. 230.1.2.3:5554,230.3.2.1:5554). Host names are resolved.
    #[arg(value_name = "ADDR:PORT[,ADDR:PORT...]")]
    pub to: String,
    /// The message; `{num}` becomes the message number (from 1) and `{to}` the
    /// destination address.
    #[arg(default_value = "This is message #{num}")]
    pub message: String,
    /// Multicast TTL: hops a multicast datagram may take (0..=255; system
    /// default 1).
    #[arg(long, value_name = "N")]
    pub group_ttl: Option<u32>,
    /// Unicast TTL (1..=255).
    #[arg(long, value_name = "N")]
    pub ttl: Option<u32>,
    /// Interface multicast leaves by: an IPv4 address, or for IPv6 a name or
    /// index. [default for IPv4: 127.0.0.1]
    #[arg(long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Allow broadcast destinations (SO_BROADCAST). 127.255.255.255 stays
    /// on this machine; other broadcast addresses reach the LAN.
    #[arg(long)]
    pub broadcast: bool,
    /// Time between messages of a series.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// Messages per destination (0: until interrupted; needs --every).
    #[arg(long, default_value_t = 1)]
    pub count: u64,
}

pub fn run(args: DgramArgs) -> anyhow::Result<()> {
    super::run_with_signals(super::Threads::One, None, |shutdown| async move {
        match args.command {
            DgramCommand::Listen(a) => listen(*a, shutdown).await,
            DgramCommand::Send(a) => send(*a, shutdown).await,
        }
    })
}

/// The interface to use for multicast: the user's, else 127.0.0.1 for IPv4;
/// IPv6 needs one.
fn multicast_interface(family: Family, given: &Option<String>) -> anyhow::Result<String> {
    match (given, family) {
        (Some(i), _) => Ok(i.clone()),
        (None, Family::V4) => Ok("127.0.0.1".to_string()),
        (None, Family::V6) => {
            bail!("IPv6 multicast needs --interface (an interface name such as eth1, or its index)")
        }
    }
}

fn sender_socket(family: Family) -> anyhow::Result<DgramSocket> {
    Ok(DgramSocket::bind(&SocketOptions::new(family), 0, None)?)
}

async fn listen(a: ListenArgs, shutdown: shoal_core::Shutdown) -> anyhow::Result<()> {
    let family = Family::of(&a.bind.ip());
    // Several multicast listeners share a port (the chapter's clients do,
    // with reuseAddr); a unicast port is shared only when asked.
    let multicast = !a.group.is_empty() || a.bind.ip().is_multicast();
    let opts = SocketOptions::new(family)
        .reuse_addr(multicast)
        .reuse_port(a.reuse_port);
    let sock = DgramSocket::bind(&opts, a.bind.port(), Some(a.bind.ip())).map_err(|e| {
        let in_use = matches!(&e, shoal_dgram::Error::Bind { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse);
        let mut err = anyhow::Error::new(e);
        if in_use {
            err = err.context(format!(
                "UDP {} is already held by another socket; not sharing it (pass --reuse-port on \
                 every listener to share it on purpose)",
                a.bind
            ));
        }
        err
    })?;
    if !a.group.is_empty() {
        let iface = multicast_interface(family, &a.interface)?;
        for g in &a.group {
            match a.source {
                Some(src) => sock.add_source_specific_membership(src, *g, Some(&iface))?,
                None => sock.add_membership(*g, Some(&iface))?,
            }
        }
        // Only the groups joined here, not every group joined on this host.
        sock.set_multicast_all(false)?;
    }
    let replier = match a.reply_to {
        Some(to) => {
            let fam = Family::of(&to.ip());
            let r = sender_socket(fam)?;
            if to.ip().is_multicast() {
                r.set_multicast_interface(&multicast_interface(fam, &a.interface)?)?;
            }
            Some((r, to))
        }
        None => None,
    };
    let groups: Vec<String> = a.group.iter().map(|g| g.to_string()).collect();
    let listening = format!(
        "Listening for datagrams on {}{}\n",
        sock.address()?,
        if groups.is_empty() {
            String::new()
        } else {
            format!(" (groups {})", groups.join(", "))
        }
    );
    shoal_core::output::stderr(listening.as_bytes());
    let mut seen = 0u64;
    loop {
        let m = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = sock.recv() => m?,
        };
        let text = String::from_utf8_lossy(&m.data);
        let line = if a.json {
            serde_json::json!({
                "label": a.label,
                "message": text,
                "address": m.rinfo.address,
                "family": m.rinfo.family,
                "port": m.rinfo.port,
                "size": m.rinfo.size,
            })
            .to_string()
        } else {
            format!(
                "{} received message {} from {}:{}",
                a.label, text, m.rinfo.address, m.rinfo.port
            )
        };
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                // Whoever read our output is gone (`| head`): stop as a
                // filter does, without a panic.
                break;
            }
        }
        if let Some((r, to)) = &replier {
            r.send_to(a.reply.as_bytes(), *to).await?;
        }
        seen += 1;
        if a.count > 0 && seen >= a.count {
            break;
        }
    }
    sock.close();
    Ok(())
}

/// Split `host:port` / `[v6]:port`.
fn parse_target(t: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = t
        .rsplit_once(':')
        .with_context(|| format!("destination {t:?} is not ADDR:PORT"))?;
    let port = port.parse().with_context(|| format!("bad port in {t:?}"))?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

async fn send(a: SendArgs, shutdown: shoal_core::Shutdown) -> anyhow::Result<()> {
    if a.count == 0 && a.every.is_none() {
        bail!("--count 0 (forever) needs --every");
    }
    let targets: Vec<(String, u16)> =
        a.to.split(',')
            .map(parse_target)
            .collect::<anyhow::Result<_>>()?;
    let family = match targets.first().map(|(h, _)| h.parse::<IpAddr>()) {
        Some(Ok(ip)) => Family::of(&ip),
        _ => Family::V4,
    };
    let sock = sender_socket(family)?;
    let any_multicast = targets
        .iter()
        .any(|(h, _)| h.parse::<IpAddr>().is_ok_and(|ip| ip.is_multicast()));
    if any_multicast || a.interface.is_some() {
        sock.set_multicast_interface(&multicast_interface(family, &a.interface)?)?;
    }
    if let Some(t) = a.group_ttl {
        sock.set_multicast_ttl(t)?;
    }
    if let Some(t) = a.ttl {
        sock.set_ttl(t)?;
    }
    if a.broadcast {
        sock.set_broadcast(true)?;
    }
    let mut n = 1u64;
    loop {
        for (host, port) in &targets {
            let msg = a
                .message
                .replace("{num}", &n.to_string())
                .replace("{to}", host);
            sock.send(msg.as_bytes(), 0, msg.len(), *port, host).await?;
        }
        if a.count > 0 && n >= a.count {
            break;
        }
        n += 1;
        let every = a.every.unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    shoal_core::output::stderr(format!("sent {n} message(s) to each of {}\n", a.to).as_bytes());
    Ok(())
}
