//! `shoal ctl broker ...`: ask a running `shoal broker` (through its control
//! socket) for its queues, exchanges, connections or overview, printed as a
//! table like `rabbitmqctl list_queues`, or as JSON.

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use std::time::Duration;

/// Broker commands of `shoal ctl`.
#[derive(Subcommand, Debug)]
#[command(after_help = "Examples:\n  \
shoal ctl broker list-queues\n  \
shoal ctl broker list-queues --json\n  \
shoal ctl broker --name staging-broker overview")]
pub enum BrokerCtl {
    /// Queues with ready/unacked messages and consumers (like `rabbitmqctl list_queues`).
    ListQueues(CtlOpts),
    /// Exchanges with type and binding count.
    ListExchanges(CtlOpts),
    /// Open client connections.
    ListConnections(CtlOpts),
    /// Totals: messages, rates, connections, alarms.
    Overview(CtlOpts),
}

/// Options shared by the broker control commands.
#[derive(clap::Args, Debug)]
pub struct CtlOpts {
    /// The broker's control socket name (`shoal broker --name`).
    #[arg(long, default_value = "broker")]
    pub name: String,
    /// Print the raw JSON reply.
    #[arg(long)]
    pub json: bool,
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
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Run one broker control command.
pub fn run(cmd: BrokerCtl) -> anyhow::Result<()> {
    let (opts, req) = match &cmd {
        BrokerCtl::ListQueues(o) => (o, "list-queues"),
        BrokerCtl::ListExchanges(o) => (o, "list-exchanges"),
        BrokerCtl::ListConnections(o) => (o, "list-connections"),
        BrokerCtl::Overview(o) => (o, "overview"),
    };
    let path = shoal_core::control::socket_path(&opts.name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let reply = rt.block_on(shoal_core::control::request(
        &path,
        &json!({ "cmd": req }),
        Duration::from_secs(10),
    ))?;
    if reply["ok"] != Value::Bool(true) {
        bail!("broker refused {req}: {}", cell(&reply, "error"));
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let rows = |key: &str, cols: &[&str]| -> Vec<Vec<String>> {
        reply[key]
            .as_array()
            .map(|a| a.iter().map(|r| cols.iter().map(|c| cell(r, c)).collect()).collect())
            .unwrap_or_default()
    };
    match cmd {
        BrokerCtl::ListQueues(_) => {
            let cols = ["vhost", "name", "messages_ready", "messages_unacknowledged", "consumers", "durable"];
            print!(
                "{}",
                table(&["vhost", "name", "ready", "unacked", "consumers", "durable"], &rows("queues", &cols))
            );
        }
        BrokerCtl::ListExchanges(_) => {
            let cols = ["vhost", "name", "type", "durable", "bindings"];
            print!("{}", table(&cols, &rows("exchanges", &cols)));
        }
        BrokerCtl::ListConnections(_) => {
            let cols = ["id", "peer", "user", "vhost"];
            print!("{}", table(&cols, &rows("connections", &cols)));
        }
        BrokerCtl::Overview(_) => println!("{}", serde_json::to_string_pretty(&reply)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["name", "ready"], &[vec!["a-long-name".into(), "3".into()], vec!["b".into(), "10".into()]]);
        assert_eq!(t, "name         ready\na-long-name  3\nb            10\n");
    }
}
