//! `shoal ctl broker ...`: ask a running `shoal broker` (through its control
//! socket) for its queues, exchanges, connections or overview, printed as a
//! table like `rabbitmqctl list_queues`, or as JSON.

use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};
use std::time::Duration;

/// Broker commands of `shoal ctl`.
#[derive(Subcommand, Debug)]
#[command(after_help = "Examples:\n  \
shoal ctl broker list-queues\n  \
shoal ctl broker list-queues --json\n  \
shoal ctl --name staging-broker broker overview\n\n\
The broker's control socket name defaults to `broker` (its `shoal broker --name`).")]
pub enum BrokerCtl {
    /// Queues with ready/unacked messages and consumers (like `rabbitmqctl list_queues`).
    ListQueues,
    /// Exchanges with type and binding count.
    ListExchanges,
    /// Open client connections.
    ListConnections,
    /// Totals: messages, rates, connections, alarms.
    Overview,
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.to_vec()) + "\n";
    for r in rows {
        out += &(line(r.iter().map(String::as_str).collect()) + "\n");
    }
    out
}

fn cell(v: &Value, k: &str) -> String {
    super::ctl::cell(&v[k])
}

/// Run one broker control command against the broker called `name`.
pub fn run(cmd: &BrokerCtl, name: &str, as_json: bool) -> anyhow::Result<()> {
    let req = match cmd {
        BrokerCtl::ListQueues => "list-queues",
        BrokerCtl::ListExchanges => "list-exchanges",
        BrokerCtl::ListConnections => "list-connections",
        BrokerCtl::Overview => "overview",
    };
    let reply = super::ctl::request(name, &json!({ "cmd": req }), Duration::from_secs(10))?;
    if reply["ok"] != Value::Bool(true) {
        bail!("broker refused {req}: {}", cell(&reply, "error"));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let rows = |key: &str, cols: &[&str]| -> Vec<Vec<String>> {
        reply[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| cols.iter().map(|c| cell(r, c)).collect())
                    .collect()
            })
            .unwrap_or_default()
    };
    match cmd {
        BrokerCtl::ListQueues => {
            let cols = [
                "vhost",
                "name",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
                "durable",
            ];
            print!(
                "{}",
                table(
                    &["vhost", "name", "ready", "unacked", "consumers", "durable"],
                    &rows("queues", &cols)
                )
            );
        }
        BrokerCtl::ListExchanges => {
            let cols = ["vhost", "name", "type", "durable", "bindings"];
            print!("{}", table(&cols, &rows("exchanges", &cols)));
        }
        BrokerCtl::ListConnections => {
            let cols = ["id", "peer", "user", "vhost"];
            print!("{}", table(&cols, &rows("connections", &cols)));
        }
        BrokerCtl::Overview => println!("{}", serde_json::to_string_pretty(&reply)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["name", "ready"],
            &[
                vec!["a-long-name".into(), "3".into()],
                vec!["b".into(), "10".into()],
            ],
        );
        assert_eq!(t, "name         ready\na-long-name  3\nb            10\n");
    }
}
