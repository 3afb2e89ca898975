//! Users, vhosts and permissions created at runtime through RabbitMQ's
//! management API, driven by Debian's `rabbitmqadmin` and used by pika
//! (fixture `mgmt_users.py`): declare, log in, publish and consume; a
//! deleted permission refuses a new channel's queue.declare with 403; a
//! deleted user's or vhost's connections are closed with 320; a bad
//! pattern is a 400 with the reason; everything survives a restart and a
//! SIGHUP; a
//! corrupt store stops the broker with its path; a definitions export ->
//! import into a second broker carries users, vhosts and permissions.

mod broker_support;
use broker_support::*;
use std::process::{Command, Stdio};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn with_config(dir: &TempDir) -> Broker {
    let cfg = fixture("mgmt.toml");
    Broker::start_with(dir.path(), &["--config", cfg.to_str().expect("utf-8 path")])
}

fn phase(b: &Broker, phase: &str, more: &[&str]) -> String {
    let mut args = vec![b.admin_port.to_string(), phase.to_string()];
    args.extend(more.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = Command::new("python3");
    cmd.arg(fixture("mgmt_users.py"))
        .arg(b.port.to_string())
        .args(&args)
        .env("TMPDIR", &b.data);
    let out = check(
        &run_with_timeout(cmd, std::time::Duration::from_secs(120)),
        &format!("mgmt_users.py {phase}"),
        b,
    );
    assert!(out.contains("ALL OK"), "{out}");
    out
}

#[test]
fn rabbitmqadmin_declares_users_vhosts_permissions_that_pika_uses_and_a_restart_keeps() {
    if !have("rabbitmqadmin") {
        println!("SKIP: rabbitmqadmin is not installed (apt-get install rabbitmq-server)");
        return;
    }
    let dir = TempDir::new("mgmt-users");
    let mut b = with_config(&dir);
    let out = phase(&b, "create", &[]);
    assert_checks(
        &out,
        &[
            "rabbitmqadmin-declare",
            "pika-uses-runtime-user",
            "login-checked",
            "delete-permission-refuses-new-channels",
            "bad-regex-400",
            "admin-only",
            "limits",
            "delete-user-closes-connection",
            "delete-vhost",
        ],
    );
    assert!(b.terminate(), "broker did not stop cleanly");
    let b = with_config(&dir);
    // SIGHUP rereads the file's users; the runtime ones stay.
    let pid = b.child.as_ref().map(|c| c.id()).expect("running");
    let hup = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status();
    assert!(hup.is_ok_and(|s| s.success()));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !b
        .log_text()
        .contains("SIGHUP: users and permissions reloaded")
    {
        assert!(std::time::Instant::now() < deadline, "{}", b.log_text());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = phase(&b, "after-restart", &[]);
    assert_checks(&out, &["survives-restart"]);
}

#[test]
fn a_corrupt_accounts_store_stops_the_broker_naming_the_file() {
    let dir = TempDir::new("mgmt-users-corrupt");
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).expect("store dir");
    let file = store.join("accounts.json");
    std::fs::write(&file, b"{\"users\": {\"x\": ").expect("write");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).expect("runtime dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args(["broker", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&store)
        .env("SHOAL_RUNTIME_DIR", &run)
        .stdin(Stdio::null());
    let o = run_with_timeout(cmd, TIMEOUT);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "started on a corrupt store: {err}");
    assert!(
        err.contains(&file.display().to_string()) && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn definitions_export_import_carries_runtime_users_vhosts_and_permissions() {
    let (d1, d2) = (
        TempDir::new("mgmt-users-defs"),
        TempDir::new("mgmt-users-defs-other"),
    );
    let (b, other) = (with_config(&d1), with_config(&d2));
    let out = phase(
        &b,
        "definitions",
        &[&other.port.to_string(), &other.admin_port.to_string()],
    );
    assert_checks(&out, &["definitions-carry-users"]);
}
