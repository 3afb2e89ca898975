//! Changing an upstream's servers while the proxy runs: add one, change its
//! weight, `max_fails`, `max_conns`, `down` or `drain`, remove one. An edit
//! is applied to a copy of the running configuration, which then goes in as
//! the next generation exactly as a reload does: new requests see the
//! change, requests in flight finish where they started, and servers that
//! stay keep their counters and health.
//!
//! The control socket (`{"cmd":"add-server"...}`, `shoal ctl`) and the
//! admin listener's nginx Plus-style API (`/api/upstreams/...`) both come
//! here. As with nginx Plus without a `state` file and HAProxy's runtime
//! API without a server-state file, a reload re-reads the file and so
//! forgets runtime edits.

use serde_json::{json, Value};
use std::time::Duration;

use crate::config::{resolve, Config, ServerConfig, Strategy, StrategyName};

/// Why an edit was refused, with the HTTP status the admin API answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditError {
    /// No such upstream or server (404).
    NotFound(String),
    /// The server is there already (409).
    Conflict(String),
    /// The edit itself is wrong (400).
    Invalid(String),
}

impl EditError {
    /// The admin API's status for this refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            EditError::NotFound(_) => 404,
            EditError::Conflict(_) => 409,
            EditError::Invalid(_) => 400,
        }
    }
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (EditError::NotFound(m) | EditError::Conflict(m) | EditError::Invalid(m)) = self;
        f.write_str(m)
    }
}

impl std::error::Error for EditError {}

/// Settings an edit may change; `None` leaves one as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerChanges {
    pub weight: Option<u32>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<Duration>,
    pub max_conns: Option<usize>,
    pub down: Option<bool>,
    pub drain: Option<bool>,
}

impl ServerChanges {
    fn apply(&self, s: &mut ServerConfig) {
        if let Some(w) = self.weight {
            s.weight = w;
        }
        if let Some(m) = self.max_fails {
            s.max_fails = m;
        }
        if let Some(t) = self.fail_timeout {
            s.fail_timeout = t;
        }
        if let Some(m) = self.max_conns {
            s.max_conns = m;
        }
        if let Some(d) = self.down {
            s.down = d;
        }
        if let Some(d) = self.drain {
            s.drain = d;
        }
    }

    fn is_empty(&self) -> bool {
        *self == ServerChanges::default()
    }
}

/// One change to one upstream's servers.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEdit {
    /// A new server (`address` as the user wrote it), primary or backup.
    Add {
        address: String,
        backup: bool,
        changes: ServerChanges,
    },
    /// New settings for the server at `address`.
    Set {
        address: String,
        changes: ServerChanges,
    },
    /// Take the server at `address` out of the upstream.
    Remove { address: String },
}

impl ServerEdit {
    /// Read an edit from a control request: `cmd` is `add-server`,
    /// `set-server`, `drain-server` (`set` with `drain: true`) or
    /// `remove-server`; the other keys are `upstream`, `address` and the
    /// settings (`weight`, `max_fails`, `fail_timeout` like `"10s"`,
    /// `max_conns`, `backup` for add, `down`, `drain`). Returns the upstream
    /// name and the edit.
    pub fn from_request(req: &Value) -> Result<(String, ServerEdit), String> {
        let cmd = req["cmd"].as_str().unwrap_or_default();
        only_known_keys(req, &["cmd", "upstream", "address", "backup"])?;
        let upstream = str_field(req, "upstream")?;
        let address = str_field(req, "address")?;
        let mut changes = changes_from(req)?;
        let edit = match cmd {
            "add-server" => ServerEdit::Add {
                address,
                backup: bool_field(req, "backup")?.unwrap_or(false),
                changes,
            },
            "set-server" => {
                if changes.is_empty() {
                    return Err(
                        "set-server needs one of weight, max_fails, fail_timeout, max_conns, down, drain"
                            .into(),
                    );
                }
                ServerEdit::Set { address, changes }
            }
            "drain-server" => {
                changes.drain = Some(true);
                ServerEdit::Set { address, changes }
            }
            "remove-server" => ServerEdit::Remove { address },
            other => return Err(format!("not a server edit: {other:?}")),
        };
        Ok((upstream, edit))
    }
}

/// The settings keys an edit may carry (besides the server's address).
pub const SETTINGS: [&str; 6] = [
    "weight",
    "max_fails",
    "fail_timeout",
    "max_conns",
    "down",
    "drain",
];

/// Refuse a key of `v` that is neither in [`SETTINGS`] nor in `also`, so
/// that a misspelt setting is an error rather than silently ignored.
pub fn only_known_keys(v: &Value, also: &[&str]) -> Result<(), String> {
    let Some(o) = v.as_object() else {
        return Err("expected a JSON object".into());
    };
    match o
        .keys()
        .find(|k| !SETTINGS.contains(&k.as_str()) && !also.contains(&k.as_str()))
    {
        Some(k) => Err(format!(
            "unknown key {k:?} (known: {}, {})",
            also.join(", "),
            SETTINGS.join(", ")
        )),
        None => Ok(()),
    }
}

/// Read the settings of an edit from `body` (a control request or an API
/// JSON body); unknown keys are the caller's business.
pub fn changes_from(body: &Value) -> Result<ServerChanges, String> {
    let fail_timeout = match &body["fail_timeout"] {
        Value::Null => None,
        Value::String(t) => {
            Some(shoal_core::parse_duration(t).map_err(|e| format!("fail_timeout: {e}"))?)
        }
        Value::Number(n) if n.is_u64() => n.as_u64().map(Duration::from_secs),
        v => {
            return Err(format!(
                "fail_timeout: expected \"10s\" or seconds, got {v}"
            ))
        }
    };
    let weight = u64_field(body, "weight")?;
    if weight == Some(0) || weight.is_some_and(|w| w > u32::MAX as u64) {
        return Err("weight must be between 1 and 4294967295".into());
    }
    let max_fails = u64_field(body, "max_fails")?;
    if max_fails.is_some_and(|m| m > u32::MAX as u64) {
        return Err("max_fails is too large".into());
    }
    Ok(ServerChanges {
        weight: weight.map(|w| w as u32),
        max_fails: max_fails.map(|m| m as u32),
        fail_timeout,
        max_conns: u64_field(body, "max_conns")?.map(|m| m as usize),
        down: bool_field(body, "down")?,
        drain: bool_field(body, "drain")?,
    })
}

fn str_field(v: &Value, key: &str) -> Result<String, String> {
    match &v[key] {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Null => Err(format!("missing {key:?}")),
        other => Err(format!("{key:?} must be a non-empty string, got {other}")),
    }
}

pub(crate) fn bool_field(v: &Value, key: &str) -> Result<Option<bool>, String> {
    match &v[key] {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        other => Err(format!("{key:?} must be true or false, got {other}")),
    }
}

fn u64_field(v: &Value, key: &str) -> Result<Option<u64>, String> {
    match &v[key] {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{key:?} must be a whole number ≥ 0, got {n}")),
        other => Err(format!("{key:?} must be a number, got {other}")),
    }
}

/// Which of `servers` `address` names: the one written the same way, else
/// the one at `resolved` (what `address` resolves to, when the caller has
/// it already; looked up here only when needed).
fn find(
    servers: &[ServerConfig],
    address: &str,
    resolved: Option<std::net::SocketAddr>,
) -> Option<usize> {
    if let Some(i) = servers.iter().position(|s| s.name == address) {
        return Some(i);
    }
    let addr = match resolved {
        Some(a) => a,
        None => resolve(address).ok()?,
    };
    servers.iter().position(|s| s.address == addr)
}

/// A server found over DNS follows its records (nginx Plus likewise
/// refuses to change such a server: "UpstreamServerImmutable").
fn immutable(s: &ServerConfig) -> Result<(), EditError> {
    match &s.from {
        Some(from) => Err(EditError::Invalid(format!(
            "{} was found over DNS ({from}): change its records, or the entry in the file",
            s.name
        ))),
        None => Ok(()),
    }
}

/// The index of the server `address` names in `upstream`'s `servers`, if
/// there is one and it may be edited (not found over DNS).
fn existing(servers: &[ServerConfig], upstream: &str, address: &str) -> Result<usize, EditError> {
    let Some(i) = find(servers, address, None) else {
        let listed: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
        return Err(EditError::NotFound(format!(
            "upstream {upstream:?} has no server {address:?} (servers: {})",
            listed.join(", ")
        )));
    };
    immutable(&servers[i])?;
    Ok(i)
}

/// Apply `edit` to `upstream` in `config`. Returns the edited server's
/// entry as `/status` shows its settings, or an error a person can read
/// (unknown upstream or server, a duplicate, the last primary server).
pub fn apply(config: &mut Config, upstream: &str, edit: &ServerEdit) -> Result<Value, EditError> {
    let Some(u) = config.upstreams.get_mut(upstream) else {
        let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
        return Err(EditError::NotFound(format!(
            "no upstream {upstream:?} (upstreams: {})",
            known.join(", ")
        )));
    };
    let hashed = matches!(
        u.strategy,
        Strategy::Builtin(StrategyName::IpHash | StrategyName::Hash)
    );
    match edit {
        ServerEdit::Add {
            address,
            backup,
            changes,
        } => {
            let addr = resolve(address).map_err(EditError::Invalid)?;
            if let Some(i) = find(&u.servers, address, Some(addr)) {
                return Err(EditError::Conflict(format!(
                    "upstream {upstream:?} already has server {} (change it with set-server)",
                    u.servers[i].name
                )));
            }
            if *backup && hashed {
                return Err(EditError::Invalid(
                    "backup servers cannot be used with hash strategies (as in nginx)".into(),
                ));
            }
            let mut s = ServerConfig::new(addr);
            s.name = address.clone();
            s.backup = *backup;
            changes.apply(&mut s);
            let shown = server_json(&s);
            u.servers.push(s);
            Ok(shown)
        }
        ServerEdit::Set { address, changes } => {
            let i = existing(&u.servers, upstream, address)?;
            changes.apply(&mut u.servers[i]);
            Ok(server_json(&u.servers[i]))
        }
        ServerEdit::Remove { address } => {
            let i = existing(&u.servers, upstream, address)?;
            if !u.servers[i].backup && u.servers.iter().filter(|s| !s.backup).count() == 1 {
                return Err(EditError::Invalid(format!(
                    "{} is the last primary server of upstream {upstream:?}: add another first, or mark it down",
                    u.servers[i].name
                )));
            }
            let s = u.servers.remove(i);
            Ok(server_json(&s))
        }
    }
}

/// A server's settings as JSON (the same keys `/status` uses).
pub fn server_json(s: &ServerConfig) -> Value {
    json!({
        "address": s.name,
        "weight": s.weight,
        "max_fails": s.max_fails,
        "fail_timeout": humantime_serde::re::humantime::format_duration(s.fail_timeout).to_string(),
        "max_conns": s.max_conns,
        "backup": s.backup,
        "down": s.down,
        "drain": s.drain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(strategy: StrategyName) -> Config {
        let mut c = Config::quick(
            "127.0.0.1:8080".parse().unwrap(),
            vec![ServerConfig::new("127.0.0.1:8001".parse().unwrap())],
            Strategy::Builtin(strategy),
            false,
        )
        .unwrap();
        let u = c.upstreams.remove("default").unwrap();
        c.upstreams.insert("web".into(), u);
        c
    }

    fn req(v: Value) -> (String, ServerEdit) {
        ServerEdit::from_request(&v).unwrap()
    }

    #[test]
    fn add_set_drain_and_remove() {
        let mut c = config(StrategyName::RoundRobin);
        let (u, e) = req(json!({"cmd": "add-server", "upstream": "web",
            "address": "127.0.0.1:8002", "weight": 3}));
        let s = apply(&mut c, &u, &e).unwrap();
        assert_eq!(s["weight"], 3);
        assert_eq!(c.upstreams["web"].servers.len(), 2);
        // The same server twice is refused, by its name or its address.
        let again = apply(&mut c, &u, &e).unwrap_err();
        assert_eq!(again.http_status(), 409);
        assert!(again.to_string().contains("already has server"), "{again}");
        let (u, e) = req(json!({"cmd": "drain-server", "upstream": "web",
            "address": "127.0.0.1:8002"}));
        assert_eq!(apply(&mut c, &u, &e).unwrap()["drain"], true);
        let (u, e) = req(json!({"cmd": "set-server", "upstream": "web",
            "address": "127.0.0.1:8002", "drain": false, "down": true, "fail_timeout": "3s"}));
        let s = apply(&mut c, &u, &e).unwrap();
        assert_eq!(
            (s["drain"].clone(), s["down"].clone()),
            (json!(false), json!(true))
        );
        assert_eq!(
            c.upstreams["web"].servers[1].fail_timeout,
            Duration::from_secs(3)
        );
        let (u, e) = req(json!({"cmd": "remove-server", "upstream": "web",
            "address": "127.0.0.1:8002"}));
        apply(&mut c, &u, &e).unwrap();
        assert_eq!(c.upstreams["web"].servers.len(), 1);
    }

    #[test]
    fn bad_edits_are_refused_with_a_reason() {
        let mut c = config(StrategyName::Hash);
        let cases = [
            (
                json!({"cmd": "remove-server", "upstream": "web", "address": "127.0.0.1:8001"}),
                "last primary server",
            ),
            (
                json!({"cmd": "set-server", "upstream": "web", "address": "127.0.0.1:9"}),
                "needs one of",
            ),
            (
                json!({"cmd": "set-server", "upstream": "web", "address": "127.0.0.1:9", "weight": 2}),
                "has no server",
            ),
            (
                json!({"cmd": "add-server", "upstream": "api", "address": "127.0.0.1:9"}),
                "no upstream \"api\" (upstreams: web)",
            ),
            (
                json!({"cmd": "add-server", "upstream": "web", "address": "127.0.0.1:9", "backup": true}),
                "hash strategies",
            ),
            (
                json!({"cmd": "add-server", "upstream": "web", "address": "127.0.0.1:9", "weight": 0}),
                "weight must be",
            ),
            (
                json!({"cmd": "add-server", "upstream": "web", "address": "nowhere"}),
                "HOST:PORT",
            ),
            (
                json!({"cmd": "add-server", "upstream": "web"}),
                "missing \"address\"",
            ),
            (
                json!({"cmd": "add-server", "upstream": "web", "address": "127.0.0.1:9", "down": "yes"}),
                "true or false",
            ),
        ];
        for (r, want) in cases {
            let err = ServerEdit::from_request(&r)
                .map_err(EditError::Invalid)
                .and_then(|(u, e)| apply(&mut c, &u, &e).map(|_| ()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{r}: {err}");
        }
        assert_eq!(c.upstreams["web"].servers.len(), 1);
    }
}
