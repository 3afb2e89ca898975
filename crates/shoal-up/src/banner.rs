//! The few lines `shoal up` prints to stderr once everything runs: each part
//! and its address, then what to try (and whether the clusters run the
//! built-in worker, and why: `node` is missing, or cannot load `amqplib`).

use crate::start::View;

/// The banner for the running parts.
pub fn text(
    name: &str,
    parts: &[(String, View)],
    dashboard: Option<std::net::SocketAddr>,
    builtin_worker: Option<&str>,
) -> String {
    let mut out = String::from("\nshoal up: running\n");
    if let Some(why) = builtin_worker {
        out.push_str(&format!(
            "  ({why}: the clusters run Shoal's built-in HTTP worker, `shoal up-worker`, \
             which answers, publishes and counts like examples/up/web.js)\n"
        ));
    }
    let mut tries = Vec::new();
    for (label, view) in parts {
        let line = match view {
            View::Broker { listen, admin, .. } => {
                let a = crate::config::reachable(*listen);
                tries.push(format!(
                    "AMQP_URL=amqp://guest:guest@{a}/   (any RabbitMQ client)"
                ));
                format!(
                    "amqp://{a}/{}",
                    admin.map_or(String::new(), |x| format!(
                        "  admin http://{x}/api/overview"
                    ))
                )
            }
            View::Stats { udp, http, .. } => {
                let u: Vec<String> = udp.iter().map(|a| format!("udp {a}")).collect();
                if let Some(h) = http {
                    tries.push(format!("curl -s {h}/metrics"));
                }
                format!(
                    "{}{}",
                    u.join(", "),
                    http.map_or(String::new(), |h| format!("  metrics http://{h}/metrics"))
                )
            }
            View::Cluster {
                cluster,
                serves,
                command,
            } => {
                let s: Vec<String> = serves.iter().map(|a| a.to_string()).collect();
                format!(
                    "{}  `{command}`  (shoal ctl --name {} status)",
                    if s.is_empty() {
                        "-".to_string()
                    } else {
                        s.join(", ")
                    },
                    cluster.name()
                )
            }
            View::Proxy { listen, admin, .. } => {
                for l in listen {
                    tries.insert(0, format!("curl {l}"));
                }
                let l: Vec<String> = listen.iter().map(|a| format!("http://{a}")).collect();
                format!(
                    "{}{}",
                    l.join(", "),
                    admin.map_or(String::new(), |a| format!("  admin http://{a}/status"))
                )
            }
        };
        out.push_str(&format!("  {label:<14} {line}\n"));
    }
    if let Some(d) = dashboard {
        out.push_str(&format!(
            "  {:<14} http://{d}/  (live status of every part)\n",
            "dashboard"
        ));
        tries.push(format!(
            "http://{d}/ in a browser (the dashboard), or curl -s {d}/api/status"
        ));
    }
    tries.push(if name == "up" {
        "shoal ctl status   (every part; --json for programs)".to_string()
    } else {
        format!("shoal ctl --name {name} status   (every part; --json for programs)")
    });
    out.push_str("try:\n");
    for t in tries {
        out.push_str(&format!("  {t}\n"));
    }
    out.push_str("stop: Ctrl-C (or SIGTERM, or shoal ctl --name ");
    out.push_str(name);
    out.push_str(" stop)\n\n");
    out
}
