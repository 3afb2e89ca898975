//! Broker configuration: the TOML file ([`FileConfig`], `deny_unknown_fields`)
//! validated into a [`Config`] with users, vhosts and compiled permission
//! patterns. With no file, [`Config::default`] is RabbitMQ's out-of-the-box
//! setup: vhost `/`, user `guest`/`guest` allowed only from loopback.

use regex_automata::meta::Regex;
use serde::Deserialize;
use shoal_core::config::{load_toml, parse_toml, ConfigError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// AMQP listen address.
    pub listen: Option<String>,
    /// Directory for definitions and message segments.
    pub data_dir: Option<PathBuf>,
    /// Admin HTTP address (`/metrics`, `/api/...`); empty string disables it.
    pub admin_listen: Option<String>,
    /// Control socket name (`shoal ctl broker --name`).
    pub name: Option<String>,
    /// Heartbeat the server proposes, in seconds (0 disables).
    pub heartbeat: Option<u16>,
    /// Largest frame the server accepts, in bytes.
    pub frame_max: Option<u32>,
    /// Highest channel number per connection.
    pub channel_max: Option<u16>,
    /// Most client connections at once.
    pub max_connections: Option<usize>,
    /// Time from accept to `connection.open-ok` before a connection that
    /// has not logged in is closed, e.g. `"10s"` (RabbitMQ's
    /// `handshake_timeout`).
    pub handshake_timeout: Option<String>,
    /// Largest message body accepted, in bytes (RabbitMQ's
    /// `max_message_size`, default 128 MiB, at most 512 MiB).
    pub max_message_size: Option<u64>,
    /// How long a write to a client may stall (the client not reading)
    /// before the connection is closed, e.g. `"15s"` (RabbitMQ's
    /// `tcp_listen_options.send_timeout`).
    pub send_timeout: Option<String>,
    /// Estimated bytes of ready messages above which publishers are blocked.
    pub memory_high_watermark: Option<u64>,
    /// Free disk space (bytes) below which publishers are blocked.
    pub disk_free_limit: Option<u64>,
    /// Ready-message bytes a queue keeps in memory; beyond it, messages
    /// live on disk only until delivered.
    pub queue_memory_budget: Option<u64>,
    /// Users.
    #[serde(default)]
    pub users: Vec<FileUser>,
    /// Virtual hosts.
    #[serde(default)]
    pub vhosts: Vec<FileVhost>,
    /// Per-user, per-vhost permissions.
    #[serde(default)]
    pub permissions: Vec<FilePermission>,
}

/// A user entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUser {
    /// Login.
    pub name: String,
    /// Password (plain text).
    pub password: String,
    /// Only accept this user from 127.0.0.0/8 and ::1.
    #[serde(default)]
    pub loopback_only: bool,
    /// RabbitMQ user tags: what the user may see and do in the management
    /// API (`administrator`, `monitoring`, `policymaker`, `management`;
    /// none: no management API access, AMQP only).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A vhost entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileVhost {
    /// Vhost name, e.g. `/` or `staging`.
    pub name: String,
}

/// A permission entry: regular expressions over resource names, as in RabbitMQ.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePermission {
    /// User name.
    pub user: String,
    /// Vhost name.
    pub vhost: String,
    /// Which exchanges/queues the user may declare and delete.
    #[serde(default = "all")]
    pub configure: String,
    /// Which exchanges the user may publish to and queues it may bind.
    #[serde(default = "all")]
    pub write: String,
    /// Which queues the user may consume from and exchanges bind from.
    #[serde(default = "all")]
    pub read: String,
}

fn all() -> String {
    ".*".to_string()
}

/// A user after validation.
#[derive(Debug, Clone)]
pub struct User {
    /// Password (plain from the file, a salted hash when created at runtime).
    pub password: crate::accounts::Secret,
    /// Loopback peers only.
    pub loopback_only: bool,
    /// RabbitMQ user tags (management API access).
    pub tags: Vec<String>,
}

/// The user tags RabbitMQ's management plugin knows, from most to least
/// privileged (each includes what the ones after it may do).
pub const USER_TAGS: [&str; 4] = ["administrator", "monitoring", "policymaker", "management"];

/// Compiled permissions of one user on one vhost.
#[derive(Debug, Clone)]
pub struct Permission {
    /// Configure pattern.
    pub configure: Regex,
    /// Write pattern.
    pub write: Regex,
    /// Read pattern.
    pub read: Regex,
    /// The three patterns as written (configure, write, read), for the
    /// management API and definitions export.
    pub patterns: [String; 3],
}

/// What a permission check is for.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// Declare/delete.
    Configure,
    /// Publish/bind destination.
    Write,
    /// Consume/get/purge/bind source.
    Read,
}

impl Permission {
    /// Whether `resource` is allowed for `access`. Patterns match the whole name.
    pub fn allows(&self, access: Access, resource: &str) -> bool {
        let re = match access {
            Access::Configure => &self.configure,
            Access::Write => &self.write,
            Access::Read => &self.read,
        };
        re.is_match(resource)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// AMQP listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Admin HTTP address, if enabled.
    pub admin_listen: Option<SocketAddr>,
    /// Control socket name.
    pub name: String,
    /// Proposed heartbeat (s).
    pub heartbeat: u16,
    /// Largest frame accepted.
    pub frame_max: u32,
    /// Highest channel number.
    pub channel_max: u16,
    /// Connection cap.
    pub max_connections: usize,
    /// Deadline from accept to `connection.open-ok`.
    pub handshake_timeout: Duration,
    /// Largest message body accepted.
    pub max_message_size: u64,
    /// Longest a write to a client may stall before the connection closes.
    pub send_timeout: Duration,
    /// Memory alarm threshold (bytes of queued bodies).
    pub memory_high_watermark: u64,
    /// Disk alarm threshold (free bytes).
    pub disk_free_limit: u64,
    /// Per-queue in-memory budget for ready message bodies (bytes).
    pub queue_memory_budget: u64,
    /// Users by name.
    pub users: HashMap<String, User>,
    /// Vhost names.
    pub vhosts: Vec<String>,
    /// Permissions by (user, vhost).
    pub permissions: HashMap<(String, String), Permission>,
    /// The file this was loaded from, reread on SIGHUP (`None`: defaults).
    pub source: Option<PathBuf>,
    /// Whether SIGHUP rereads `source` (off where another owner of the
    /// process handles SIGHUP: `shoal up` reloads its topology file).
    pub hangup: bool,
}

/// Who may log in and what they may do: the part of the configuration a
/// running broker rereads on SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// Users by name.
    pub users: HashMap<String, User>,
    /// Permissions by (user, vhost).
    pub permissions: HashMap<(String, String), Permission>,
}

impl Accounts {
    /// What `user` may do in `vhost` (none: may not use it).
    pub fn permission(&self, user: &str, vhost: &str) -> Option<&Permission> {
        self.permissions.get(&(user.to_string(), vhost.to_string()))
    }
}

impl Config {
    /// The users and permissions of this configuration.
    pub fn accounts(&self) -> Accounts {
        Accounts {
            users: self.users.clone(),
            permissions: self.permissions.clone(),
        }
    }
}

/// RabbitMQ's default `max_message_size`: 128 MiB.
pub const MAX_MESSAGE_SIZE_DEFAULT: u64 = 128 << 20;

/// RabbitMQ's ceiling for `max_message_size`: 512 MiB.
pub const MAX_MESSAGE_SIZE_LIMIT: u64 = 512 << 20;

/// Default AMQP address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5672";

impl Default for Config {
    fn default() -> Self {
        match Config::from_file(FileConfig::default(), Path::new("<defaults>"), "") {
            Ok(c) => c,
            Err(e) => unreachable!("built-in defaults are valid: {e}"),
        }
    }
}

/// `pattern` compiled to match whole names; an invalid one is refused
/// with the parser's reason (e.g. "unclosed group").
pub(crate) fn anchored(pattern: &str) -> Result<Regex, String> {
    // The pattern itself is checked: wrapped, `a)|(b` would balance.
    if let Some(why) = syntax_error(pattern) {
        return Err(why);
    }
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())
}

/// `pattern` compiled to match anywhere in a name (RabbitMQ's policy
/// patterns); an invalid one is refused with the parser's reason.
pub(crate) fn unanchored(pattern: &str) -> Result<Regex, String> {
    if let Some(why) = syntax_error(pattern) {
        return Err(why);
    }
    Regex::new(pattern).map_err(|e| e.to_string())
}

/// The parser's reason for refusing `pattern`, if it does.
fn syntax_error(pattern: &str) -> Option<String> {
    let e = regex_automata::util::syntax::parse(pattern).err()?;
    let text = e.to_string();
    let why = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(&text);
    Some(why.to_string())
}

impl Config {
    /// Load and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (file, text) = load_toml::<FileConfig>(path)?;
        let mut c = Config::from_file(file, path, &text)?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// Parse and validate TOML text (named `file` in errors).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let fc = parse_toml::<FileConfig>(file, text)?;
        Config::from_file(fc, file, text)
    }

    /// Validate a parsed file.
    pub fn from_file(fc: FileConfig, file: &Path, text: &str) -> Result<Config, ConfigError> {
        let bad = |key: &str, msg: String| ConfigError::invalid(file, text, key, msg);
        let listen_s = fc.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_s.parse().map_err(|e| {
            bad(
                "listen",
                format!("{listen_s:?} is not an address:port ({e})"),
            )
        })?;
        let admin_listen = match fc.admin_listen.as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 15672))),
            Some("") => None,
            Some(s) => Some(s.parse().map_err(|e| {
                bad(
                    "admin_listen",
                    format!("{s:?} is not an address:port ({e})"),
                )
            })?),
        };
        let frame_max = fc.frame_max.unwrap_or(131_072);
        if frame_max < 4096 {
            return Err(bad("frame_max", "must be at least 4096".into()));
        }
        let channel_max = fc.channel_max.unwrap_or(2047);
        if channel_max == 0 {
            return Err(bad("channel_max", "must be at least 1".into()));
        }
        let duration = |key: &str, v: Option<&str>, default: Duration| match v {
            None => Ok(default),
            Some(v) => match shoal_core::duration::parse_duration(v) {
                Ok(d) if d.is_zero() => Err(bad(key, "must be longer than zero".into())),
                Ok(d) => Ok(d),
                Err(e) => Err(bad(key, e)),
            },
        };
        let handshake_timeout = duration(
            "handshake_timeout",
            fc.handshake_timeout.as_deref(),
            Duration::from_secs(10),
        )?;
        let send_timeout = duration(
            "send_timeout",
            fc.send_timeout.as_deref(),
            Duration::from_secs(15),
        )?;
        let max_message_size = fc.max_message_size.unwrap_or(MAX_MESSAGE_SIZE_DEFAULT);
        if max_message_size == 0 || max_message_size > MAX_MESSAGE_SIZE_LIMIT {
            return Err(bad(
                "max_message_size",
                format!("must be between 1 and {MAX_MESSAGE_SIZE_LIMIT} bytes (512 MiB)"),
            ));
        }
        let mut users = HashMap::new();
        if fc.users.is_empty() {
            users.insert(
                "guest".to_string(),
                User {
                    password: crate::accounts::Secret::Plain("guest".into()),
                    loopback_only: true,
                    // As RabbitMQ's default user.
                    tags: vec!["administrator".to_string()],
                },
            );
        }
        for (i, u) in fc.users.iter().enumerate() {
            if u.name.is_empty() {
                return Err(bad(&format!("users[{i}].name"), "must not be empty".into()));
            }
            for (j, t) in u.tags.iter().enumerate() {
                if t.is_empty() || t.contains(char::is_whitespace) || t.contains(',') {
                    return Err(bad(
                        &format!("users[{i}].tags[{j}]"),
                        format!("{t:?} is not a tag (one word, e.g. \"administrator\", \"monitoring\", \"management\")"),
                    ));
                }
            }
            users.insert(
                u.name.clone(),
                User {
                    password: crate::accounts::Secret::Plain(u.password.clone()),
                    loopback_only: u.loopback_only,
                    tags: u.tags.clone(),
                },
            );
        }
        let mut vhosts: Vec<String> = fc.vhosts.iter().map(|v| v.name.clone()).collect();
        if vhosts.is_empty() {
            vhosts.push("/".to_string());
        }
        let mut permissions = HashMap::new();
        if fc.permissions.is_empty() {
            // Like RabbitMQ's first boot: every configured user gets full access to every vhost.
            for u in users.keys() {
                for v in &vhosts {
                    let full = anchored(".*").map_err(|e| bad("permissions", e))?;
                    permissions.insert(
                        (u.clone(), v.clone()),
                        Permission {
                            configure: full.clone(),
                            write: full.clone(),
                            read: full,
                            patterns: [".*".into(), ".*".into(), ".*".into()],
                        },
                    );
                }
            }
        }
        for (i, p) in fc.permissions.iter().enumerate() {
            if !users.contains_key(&p.user) {
                return Err(bad(
                    &format!("permissions[{i}].user"),
                    format!("no user named {:?}", p.user),
                ));
            }
            if !vhosts.contains(&p.vhost) {
                return Err(bad(
                    &format!("permissions[{i}].vhost"),
                    format!("no vhost named {:?}", p.vhost),
                ));
            }
            let c = |k: &str, pat: &str| {
                anchored(pat).map_err(|e| bad(&format!("permissions[{i}].{k}"), e))
            };
            permissions.insert(
                (p.user.clone(), p.vhost.clone()),
                Permission {
                    configure: c("configure", &p.configure)?,
                    write: c("write", &p.write)?,
                    read: c("read", &p.read)?,
                    patterns: [p.configure.clone(), p.write.clone(), p.read.clone()],
                },
            );
        }
        Ok(Config {
            listen,
            data_dir: fc
                .data_dir
                .unwrap_or_else(|| PathBuf::from("shoal-broker-data")),
            admin_listen,
            name: fc.name.unwrap_or_else(|| "broker".to_string()),
            heartbeat: fc.heartbeat.unwrap_or(60),
            frame_max,
            channel_max,
            max_connections: fc.max_connections.unwrap_or(10_000),
            handshake_timeout,
            max_message_size,
            send_timeout,
            memory_high_watermark: fc.memory_high_watermark.unwrap_or(1 << 30),
            disk_free_limit: fc.disk_free_limit.unwrap_or(50 << 20),
            queue_memory_budget: fc.queue_memory_budget.unwrap_or(64 << 20),
            users,
            vhosts,
            permissions,
            source: None,
            hangup: true,
        })
    }
}

#[cfg(test)]
mod tests {

    /// A pattern that is only valid once wrapped in `^(?:...)$` is
    /// refused: `a)|(b` would otherwise match any name starting with `a`.
    #[test]
    fn anchored_patterns_are_checked_before_they_are_wrapped() {
        for bad in ["a)|(b", ")(", "(a"] {
            assert!(super::anchored(bad).is_err(), "{bad:?} was accepted");
        }
        let ok = super::anchored("amq\\..*|app-[0-9]+").unwrap();
        assert!(ok.is_match("amq.direct") && ok.is_match("app-7"));
        assert!(!ok.is_match("xamq.direct") && !ok.is_match("app-7x"));
    }
    use super::*;

    #[test]
    fn defaults_are_guest_on_loopback() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.users["guest"].loopback_only);
        assert_eq!(c.users["guest"].tags, ["administrator"]);
        let p = &c.permissions[&("guest".to_string(), "/".to_string())];
        assert!(p.allows(Access::Configure, "anything"));
    }

    #[test]
    fn permission_patterns_match_whole_names() {
        let text = "[[users]]\nname = \"app\"\npassword = \"x\"\n[[vhosts]]\nname = \"/\"\n[[permissions]]\nuser = \"app\"\nvhost = \"/\"\nconfigure = \"app\\\\..*\"\nread = \"\"\n";
        let c = Config::parse(Path::new("t.toml"), text).unwrap();
        let p = &c.permissions[&("app".to_string(), "/".to_string())];
        assert!(p.allows(Access::Configure, "app.q"));
        assert!(!p.allows(Access::Configure, "other.app.q"));
        assert!(!p.allows(Access::Read, "app.q"));
        assert!(p.allows(Access::Write, "x"));
    }

    #[test]
    fn unknown_user_in_permission_names_the_line() {
        let text = "[[permissions]]\nuser = \"nobody\"\nvhost = \"/\"\n";
        let e = Config::parse(Path::new("b.toml"), text).unwrap_err();
        assert!(e.to_string().contains("b.toml:2"), "{e}");
    }

    #[test]
    fn user_tags_are_kept_and_a_bad_tag_names_its_line() {
        let text = "[[users]]\nname = \"ops\"\npassword = \"x\"\ntags = [\"monitoring\"]\n";
        let c = Config::parse(Path::new("t.toml"), text).unwrap();
        assert_eq!(c.users["ops"].tags, ["monitoring"]);
        let text = "[[users]]\nname = \"ops\"\npassword = \"x\"\ntags = [\"a b\"]\n";
        let e = Config::parse(Path::new("t.toml"), text).unwrap_err();
        assert!(e.to_string().contains("users[0].tags[0]"), "{e}");
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/broker.toml");
        if let Err(e) = Config::load(&path) {
            panic!("{e}");
        }
    }
}
