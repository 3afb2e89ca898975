//! RabbitMQ's management HTTP API on the admin listener, driven by the
//! ecosystem's own tools against the `shoal broker` binary: Debian's
//! `rabbitmqadmin` (list, show, declare, publish, get, purge, delete),
//! plain HTTP (urllib) for auth (401 with and without the challenge), 404, 400, 413, health checks and
//! a definitions export -> import round trip, `promtool check metrics`
//! on `/metrics` with RabbitMQ's Prometheus names, and RabbitMQ's policies
//! (`rabbitmqadmin declare|list|delete policy`) taking effect on queues
//! pika uses, across a restart.

mod broker_support;
use broker_support::*;
use std::process::Command;

fn mgmt_broker(tag: &str) -> (TempDir, Broker) {
    let dir = TempDir::new(tag);
    let cfg = fixture("mgmt.toml");
    let b = Broker::start_with(dir.path(), &["--config", cfg.to_str().expect("utf-8 path")]);
    (dir, b)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `rabbitmqadmin -P ADMIN_PORT -u admin -p admin-pw ARGS...`.
fn admin(b: &Broker, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("rabbitmqadmin");
    cmd.args(["-H", "127.0.0.1", "-P", &b.admin_port.to_string()])
        .args(["-u", "admin", "-p", "admin-pw"])
        .args(args)
        .env("HOME", &b.data);
    let o = run_with_timeout(cmd, TIMEOUT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn ok(b: &Broker, args: &[&str]) -> String {
    let (success, out) = admin(b, args);
    assert!(
        success,
        "rabbitmqadmin {args:?} failed:\n{out}\n--- broker log\n{}",
        b.log_text()
    );
    out
}

fn json(b: &Broker, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-f", "raw_json"];
    all.extend_from_slice(args);
    let out = ok(b, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn rabbitmqadmin_lists_declares_publishes_gets_purges_and_deletes() {
    if !have("rabbitmqadmin") {
        println!("SKIP: rabbitmqadmin is not installed (apt-get install rabbitmq-server)");
        return;
    }
    let (_dir, b) = mgmt_broker("mgmt-admin");

    // show overview: RabbitMQ's identity fields and totals.
    let out = ok(&b, &["show", "overview"]);
    assert!(
        out.contains("rabbitmq_version") && out.contains("3.10.8"),
        "{out}"
    );
    let ov = json(&b, &["show", "overview"]);
    let ov = &ov[0];
    assert_eq!(ov["product_name"], "Shoal", "{ov}");
    assert!(ov["node"].as_str().is_some_and(|n| n.contains('@')), "{ov}");
    assert!(
        ov["message_stats"]["publish_details"]["rate"].is_number(),
        "{ov}"
    );

    // declare queue, exchange, binding.
    ok(
        &b,
        &[
            "declare",
            "queue",
            "name=orders",
            "durable=true",
            r#"arguments={"x-max-length": 100}"#,
        ],
    );
    ok(&b, &["declare", "exchange", "name=shop", "type=topic"]);
    ok(
        &b,
        &[
            "declare",
            "binding",
            "source=shop",
            "destination=orders",
            "routing_key=order.*",
        ],
    );
    ok(
        &b,
        &[
            "-V",
            "staging",
            "declare",
            "queue",
            "name=staged",
            "durable=false",
        ],
    );

    let queues = json(&b, &["list", "queues"]);
    let orders = queues
        .as_array()
        .and_then(|a| a.iter().find(|q| q["name"] == "orders"))
        .unwrap_or_else(|| panic!("{queues}"));
    assert_eq!(orders["durable"], true);
    assert_eq!(orders["arguments"]["x-max-length"], 100);
    let out = ok(&b, &["list", "queues", "vhost", "name", "messages"]);
    assert!(
        out.contains("staging") && out.contains("staged") && out.contains("orders"),
        "{out}"
    );
    let out = ok(&b, &["list", "exchanges"]);
    assert!(
        out.contains("shop") && out.contains("topic") && out.contains("amq.direct"),
        "{out}"
    );
    let out = ok(&b, &["list", "bindings"]);
    assert!(out.contains("order.*"), "{out}");
    for what in [
        "vhosts",
        "users",
        "nodes",
        "connections",
        "channels",
        "consumers",
        "permissions",
    ] {
        ok(&b, &["list", what]);
    }
    let users = json(&b, &["list", "users"]);
    assert!(users.to_string().contains("\"watcher\""), "{users}");

    // publish through the exchange, get with requeue, then without.
    let out = ok(
        &b,
        &[
            "publish",
            "exchange=shop",
            "routing_key=order.new",
            "payload=first order",
        ],
    );
    assert!(
        out.contains("Message published") && !out.contains("NOT routed"),
        "{out}"
    );
    let out = ok(
        &b,
        &[
            "publish",
            "exchange=shop",
            "routing_key=nothing.here",
            "payload=x",
        ],
    );
    assert!(out.contains("NOT routed"), "{out}");
    ok(
        &b,
        &[
            "publish",
            "routing_key=orders",
            "payload=second order",
            r#"properties={"content_type": "text/plain"}"#,
        ],
    );
    let out = ok(&b, &["get", "queue=orders"]);
    assert!(
        out.contains("first order") && out.contains("order.new"),
        "{out}"
    );
    let got = json(
        &b,
        &[
            "get",
            "queue=orders",
            "count=2",
            "ackmode=ack_requeue_false",
        ],
    );
    let payloads: Vec<&str> = got
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["payload"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(payloads, ["first order", "second order"], "{got}");
    assert_eq!(got[0]["redelivered"], true, "{got}");
    let q = json(&b, &["list", "queues", "name", "messages"]);
    assert!(q.to_string().contains("\"messages\":0"), "{q}");

    // purge, then delete binding, exchange and queue.
    ok(&b, &["publish", "routing_key=orders", "payload=to purge"]);
    ok(&b, &["purge", "queue", "name=orders"]);
    let got = json(&b, &["get", "queue=orders"]);
    assert_eq!(got, serde_json::json!([]), "purged");
    ok(
        &b,
        &[
            "delete",
            "binding",
            "source=shop",
            "destination_type=queue",
            "destination=orders",
            "properties_key=order.%2A",
        ],
    );
    let out = ok(&b, &["list", "bindings", "source", "destination"]);
    assert!(!out.contains("shop"), "{out}");
    ok(&b, &["delete", "exchange", "name=shop"]);
    ok(&b, &["delete", "queue", "name=orders"]);
    let out = ok(&b, &["list", "queues"]);
    assert!(!out.contains("orders"), "{out}");

    // A user with no management tag is refused; wrong passwords too.
    let mut cmd = Command::new("rabbitmqadmin");
    cmd.args([
        "-P",
        &b.admin_port.to_string(),
        "-u",
        "admin",
        "-p",
        "wrong",
        "list",
        "queues",
    ])
    .env("HOME", &b.data);
    let o = run_with_timeout(cmd, TIMEOUT);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Access refused"),
        "{o:?}"
    );
}

#[test]
fn management_http_auth_errors_health_and_definitions_round_trip() {
    let (_d1, b) = mgmt_broker("mgmt-http");
    let (_d2, other) = mgmt_broker("mgmt-http-other");
    let out = check(
        &python(
            "mgmt_http.py",
            b.port,
            &[&b.admin_port.to_string(), &other.admin_port.to_string()],
        ),
        "mgmt_http.py",
        &b,
    );
    assert_checks(
        &out,
        &[
            "401",
            "not-authorised",
            "visibility",
            "404",
            "400",
            "publish-get",
            "bindings",
            "pagination",
            "health",
            "connections",
            "policies",
            "definitions",
        ],
    );
    assert!(out.contains("ALL OK"), "{out}");
}

/// `curl` with the default guest credentials; returns (status, body).
fn curl(b: &Broker, args: &[&str], path: &str) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-u", "guest:guest"])
        .args(args)
        .arg(format!("http://127.0.0.1:{}{path}", b.admin_port));
    let o = run_with_timeout(cmd, TIMEOUT);
    assert!(o.status.success(), "curl {path}: {o:?}");
    stdout(&o)
}

/// `promtool check metrics` on `doc` (written to a file in `dir` first):
/// whether it passed, and what it said.
fn promtool_file(dir: &TempDir, name: &str, doc: &str) -> (bool, String) {
    let path = dir.path().join(name);
    std::fs::write(&path, doc).expect("write metrics file");
    let mut cmd = Command::new("promtool");
    cmd.args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).expect("metrics file"));
    let o = run_with_timeout(cmd, TIMEOUT);
    let said = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), said)
}

#[test]
fn metrics_carry_rabbitmq_prometheus_names_and_pass_promtool() {
    let dir = TempDir::new("mgmt-prom");
    let b = Broker::start(dir.path());
    curl(&b, &["-X", "PUT", "-d", "{}"], "/api/queues/%2F/m.q");
    for _ in 0..3 {
        curl(
            &b,
            &[
                "-d",
                r#"{"routing_key":"m.q","payload":"x","payload_encoding":"string","properties":{}}"#,
            ],
            "/api/exchanges/%2F/amq.default/publish",
        );
    }
    curl(
        &b,
        &["-d", r#"{"count":1,"ackmode":"ack_requeue_false"}"#],
        "/api/queues/%2F/m.q/get",
    );

    let agg = curl(&b, &[], "/metrics");
    let (valid, out) = promtool_file(&dir, "metrics.txt", &agg);
    assert!(valid, "promtool on /metrics:\n{out}\n{agg}");
    for line in [
        "rabbitmq_queues 1",
        "rabbitmq_queue_messages_ready 2",
        "rabbitmq_queue_messages 2",
        "rabbitmq_global_messages_received_total{protocol=\"amqp091\"} 3",
        "rabbitmq_global_messages_delivered_total{protocol=\"amqp091\"} 1",
        "rabbitmq_global_messages_acknowledged_total{protocol=\"amqp091\"} 1",
        "rabbitmq_connections 0",
        "shoal_broker_published_total{vhost=\"/\"} 3",
    ] {
        assert!(agg.lines().any(|l| l == line), "{line} missing:\n{agg}");
    }
    assert!(
        agg.contains("rabbitmq_identity_info{rabbitmq_node="),
        "{agg}"
    );

    let per = curl(&b, &[], "/metrics/per-object");
    let (valid, out) = promtool_file(&dir, "per-object.txt", &per);
    assert!(valid, "promtool on /metrics/per-object:\n{out}\n{per}");
    for line in [
        "rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"m.q\"} 2",
        "rabbitmq_queue_messages_published_total{vhost=\"/\",queue=\"m.q\"} 3",
    ] {
        assert!(per.lines().any(|l| l == line), "{line} missing:\n{per}");
    }
}

/// `count QUEUE N` lines of `pika_policy.py` run on `specs`.
fn pika_counts(b: &Broker, specs: &[&str]) -> String {
    let out = python("pika_policy.py", b.port, specs);
    check(&out, "pika_policy.py", b)
}

#[test]
fn rabbitmqadmin_policies_apply_to_queues_and_survive_a_restart() {
    if !have("rabbitmqadmin") {
        println!("SKIP: rabbitmqadmin is not installed (apt-get install rabbitmq-server)");
        return;
    }
    let (dir, mut b) = mgmt_broker("mgmt-policy");
    let cap = [
        "declare",
        "policy",
        "name=cap",
        r"pattern=^capped\.",
        r#"definition={"max-length": 2}"#,
        "priority=1",
        "apply-to=queues",
    ];
    ok(&b, &cap);
    ok(
        &b,
        &[
            "declare",
            "policy",
            "name=wide",
            "pattern=.*",
            r#"definition={"max-length": 100}"#,
        ],
    );
    let listed = json(&b, &["list", "policies"]);
    let cap_row = listed
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "cap"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(cap_row["vhost"], "/", "{listed}");
    assert_eq!(cap_row["apply-to"], "queues", "{listed}");
    assert_eq!(cap_row["priority"], 1, "{listed}");
    assert_eq!(cap_row["definition"]["max-length"], 2, "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // The highest-priority policy applies (one per queue); the lower of
    // policy and x-max-length wins; drop-head keeps the newest.
    let out = pika_counts(&b, &["capped.a", "capped.b:1", "other.q"]);
    for line in ["count capped.a 2", "count capped.b 1", "count other.q 5"] {
        assert!(out.lines().any(|l| l == line), "{line}: {out}");
    }
    let queues = json(&b, &["list", "queues"]);
    let row = |n: &str| {
        queues
            .as_array()
            .and_then(|a| a.iter().find(|q| q["name"] == n))
            .cloned()
            .unwrap_or_else(|| panic!("{n}: {queues}"))
    };
    assert_eq!(row("capped.a")["policy"], "cap", "{queues}");
    assert_eq!(
        row("capped.a")["effective_policy_definition"]["max-length"],
        2,
        "{queues}"
    );
    assert_eq!(row("other.q")["policy"], "wide", "{queues}");

    // Exported with the definitions; kept across a restart.
    let file = dir.path().join("defs.json");
    ok(&b, &["export", file.to_str().expect("utf-8 path")]);
    let text = std::fs::read_to_string(&file).expect("exported definitions");
    let defs: serde_json::Value = serde_json::from_str(&text).expect("definitions json");
    let names: Vec<&str> = defs["policies"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["cap", "wide"], "{defs}");
    b.terminate();
    let b = Broker::start_with(
        dir.path(),
        &[
            "--config",
            fixture("mgmt.toml").to_str().expect("utf-8 path"),
        ],
    );
    let listed = json(&b, &["list", "policies"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let out = pika_counts(&b, &["capped.a"]);
    assert!(out.contains("count capped.a 2"), "{out}");

    // Deleted: the next policy by priority applies at once.
    ok(&b, &["delete", "policy", "name=cap"]);
    let out = pika_counts(&b, &["capped.a"]);
    assert!(out.contains("count capped.a 7"), "{out}");
    let listed = json(&b, &["list", "policies"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // An exchange policy's alternate-exchange routes what its exchange
    // cannot.
    ok(&b, &["declare", "exchange", "name=ae", "type=fanout"]);
    ok(&b, &["declare", "queue", "name=ae.q"]);
    ok(&b, &["declare", "binding", "source=ae", "destination=ae.q"]);
    ok(&b, &["declare", "exchange", "name=with.ae", "type=direct"]);
    let publish = [
        "publish",
        "exchange=with.ae",
        "routing_key=nowhere",
        "payload=hi",
    ];
    assert!(ok(&b, &publish).contains("NOT routed"));
    ok(
        &b,
        &[
            "declare",
            "policy",
            "name=aex",
            r"pattern=^with\.",
            r#"definition={"alternate-exchange": "ae"}"#,
            "apply-to=exchanges",
        ],
    );
    let out = ok(&b, &publish);
    assert!(!out.contains("NOT routed"), "{out}");
    let xs = json(&b, &["list", "exchanges"]);
    let with_ae = xs
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "with.ae"))
        .unwrap_or_else(|| panic!("{xs}"));
    assert_eq!(with_ae["policy"], "aex", "{xs}");
}
