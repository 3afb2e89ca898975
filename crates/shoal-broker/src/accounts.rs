//! Users, vhosts and permissions created at runtime (the management API's
//! `PUT /api/users/..`, `/api/vhosts/..`, `/api/permissions/..` and
//! definitions imports): their validation and limits, RabbitMQ's salted
//! password hashes, and their store, `DATA/accounts.json`, written
//! atomically (temporary file, fsync, rename, fsync of the directory).
//!
//! How they combine with the configuration file: entries of the file are
//! fixed (the API cannot change or delete them; SIGHUP rereads them) and
//! runtime entries add to them. A runtime entry that the file later defines
//! too is shadowed by the file's (logged at start and on SIGHUP).

use crate::config::{anchored, Accounts, Permission, User};
use crate::error::BrokerError;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Most users (configured and runtime together).
pub const MAX_USERS: usize = 10_000;
/// Most vhosts (configured and runtime together).
pub const MAX_VHOSTS: usize = 1_000;
/// Most runtime permission entries.
pub const MAX_PERMISSIONS: usize = 100_000;
/// Longest user or vhost name, in bytes (RabbitMQ's short-string limit).
pub const MAX_NAME: usize = 255;
/// Longest password, in bytes.
pub const MAX_PASSWORD: usize = 1024;
/// Most tags on one user, and the longest tag in bytes.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in bytes.
pub const MAX_TAG: usize = 64;
/// Longest permission pattern, in bytes.
pub const MAX_PATTERN: usize = 4096;

/// RabbitMQ's default password hashing algorithm (3.6 and later).
pub const SHA256: &str = "rabbit_password_hashing_sha256";
/// RabbitMQ's SHA-512 password hashing algorithm.
pub const SHA512: &str = "rabbit_password_hashing_sha512";

/// How a user's password is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A plain-text password (the configuration file).
    Plain(String),
    /// RabbitMQ's salted hash: `salt (4 bytes) ++ H(salt ++ password)`.
    Hashed {
        /// `rabbit_password_hashing_sha256` or `..._sha512`.
        algorithm: &'static str,
        /// Salt and digest.
        hash: Vec<u8>,
    },
    /// No password: password logins are refused (an empty
    /// `password_hash`, as RabbitMQ exports users without one).
    None,
}

fn digest(algorithm: &str, salt: &[u8], password: &[u8]) -> Vec<u8> {
    if algorithm == SHA512 {
        let mut h = sha2::Sha512::new();
        h.update(salt);
        h.update(password);
        h.finalize().to_vec()
    } else {
        let mut h = sha2::Sha256::new();
        h.update(salt);
        h.update(password);
        h.finalize().to_vec()
    }
}

fn salted(algorithm: &'static str, salt: [u8; 4], password: &str) -> Secret {
    let mut hash = salt.to_vec();
    hash.extend_from_slice(&digest(algorithm, &salt, password.as_bytes()));
    Secret::Hashed { algorithm, hash }
}

impl Secret {
    /// `password` hashed with SHA-256 and a random salt, as RabbitMQ stores it.
    pub fn hash(password: &str) -> Secret {
        salted(SHA256, rand::random(), password)
    }

    /// A `password_hash` and `hashing_algorithm` as RabbitMQ exports them
    /// (an empty hash: no password).
    pub fn from_export(hash_b64: &str, algorithm: Option<&str>) -> Result<Secret, String> {
        if hash_b64.is_empty() {
            return Ok(Secret::None);
        }
        let algorithm = match algorithm.unwrap_or(SHA256) {
            SHA256 => SHA256,
            SHA512 => SHA512,
            other => {
                return Err(format!(
                    "hashing_algorithm {other:?} is not supported (use {SHA256} or {SHA512})"
                ))
            }
        };
        let hash = base64::engine::general_purpose::STANDARD
            .decode(hash_b64)
            .map_err(|e| format!("password_hash is not base64: {e}"))?;
        let want = if algorithm == SHA512 { 4 + 64 } else { 4 + 32 };
        if hash.len() != want {
            return Err(format!(
                "password_hash has {} bytes; {algorithm} hashes have {want} (4 of salt, then the digest)",
                hash.len()
            ));
        }
        Ok(Secret::Hashed { algorithm, hash })
    }

    /// Whether `password` is this secret's, compared in constant time.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            Secret::Plain(p) => same(p.as_bytes(), password.as_bytes()),
            Secret::Hashed { algorithm, hash } => {
                let (salt, want) = hash.split_at(4.min(hash.len()));
                same(&digest(algorithm, salt, password.as_bytes()), want)
            }
            Secret::None => false,
        }
    }

    /// `(password_hash, hashing_algorithm)` as RabbitMQ exports them. A
    /// plain password is hashed with a salt derived from the user name and
    /// the password, so that repeated exports are identical.
    pub fn export(&self, user: &str) -> (String, &'static str) {
        let b64 = |h: &[u8]| base64::engine::general_purpose::STANDARD.encode(h);
        match self {
            Secret::Plain(p) => {
                let seed = digest(SHA256, user.as_bytes(), p.as_bytes());
                let salt = [seed[0], seed[1], seed[2], seed[3]];
                match salted(SHA256, salt, p) {
                    Secret::Hashed { hash, .. } => (b64(&hash), SHA256),
                    _ => (String::new(), SHA256),
                }
            }
            Secret::Hashed { algorithm, hash } => (b64(hash), algorithm),
            Secret::None => (String::new(), SHA256),
        }
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A runtime user as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredUser {
    /// `password_hash` (base64; empty: no password).
    pub password_hash: String,
    /// `hashing_algorithm`.
    pub hashing_algorithm: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A runtime permission's three patterns as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Patterns {
    /// Configure pattern.
    pub configure: String,
    /// Write pattern.
    pub write: String,
    /// Read pattern.
    pub read: String,
}

impl Patterns {
    fn key(&self) -> [String; 3] {
        [
            self.configure.clone(),
            self.write.clone(),
            self.read.clone(),
        ]
    }
}

/// Compiled permissions by their patterns, so that putting runtime
/// permissions in force compiles each distinct triple once.
pub type Compiled = HashMap<[String; 3], Permission>;

/// Everything created at runtime: the content of `DATA/accounts.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Runtime {
    /// Users by name.
    #[serde(default)]
    pub users: BTreeMap<String, StoredUser>,
    /// Vhost names.
    #[serde(default)]
    pub vhosts: Vec<String>,
    /// Permissions: user -> vhost -> patterns.
    #[serde(default)]
    pub permissions: BTreeMap<String, BTreeMap<String, Patterns>>,
}

/// The store file in `data_dir`.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("accounts.json")
}

impl Runtime {
    /// Read `path` (missing: nothing created yet). A file that does not
    /// parse, or carries a bad hash or pattern, is an error naming it.
    pub fn load(path: &Path) -> Result<Runtime, BrokerError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Runtime::default()),
            Err(e) => return Err(BrokerError::io(format!("read {}", path.display()), e)),
        };
        let bad = |why: String| {
            BrokerError::Accounts(format!(
                "{}: {why} (the users, vhosts and permissions created through the management API: \
                 fix the file, or move it away to start without them)",
                path.display()
            ))
        };
        let r: Runtime = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        for (name, u) in &r.users {
            Secret::from_export(&u.password_hash, Some(&u.hashing_algorithm))
                .map_err(|e| bad(format!("user {name:?}: {e}")))?;
        }
        for (user, v, p) in r.permission_entries() {
            compile(&p.configure, &p.write, &p.read)
                .map_err(|e| bad(format!("permission of {user:?} in {v:?}: {e}")))?;
        }
        Ok(r)
    }

    /// Write to `path` atomically: a temporary file, fsync, rename, fsync
    /// of the directory.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &text)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Every permission: (user, vhost, patterns).
    pub fn permission_entries(&self) -> impl Iterator<Item = (&String, &String, &Patterns)> {
        self.permissions
            .iter()
            .flat_map(|(u, m)| m.iter().map(move |(v, p)| (u, v, p)))
    }

    /// How many permission entries.
    pub fn permission_count(&self) -> usize {
        self.permissions.values().map(BTreeMap::len).sum()
    }

    /// The configured accounts with these added (configured entries win).
    /// `memo` holds compiled patterns from the last call and is left with
    /// those this one used.
    pub fn merge(&self, config: &Accounts, memo: &mut Compiled) -> Accounts {
        let mut a = config.clone();
        for (name, u) in &self.users {
            if a.users.contains_key(name) {
                continue;
            }
            let Ok(secret) = Secret::from_export(&u.password_hash, Some(&u.hashing_algorithm))
            else {
                continue;
            };
            a.users.insert(
                name.clone(),
                User {
                    password: secret,
                    // RabbitMQ's default `loopback_users = [guest]`: a
                    // guest imported from another broker stays local.
                    loopback_only: name == "guest",
                    tags: u.tags.clone(),
                },
            );
        }
        let mut used = Compiled::new();
        for (user, vhost, p) in self.permission_entries() {
            let key = (user.clone(), vhost.clone());
            if a.permissions.contains_key(&key) || !a.users.contains_key(user) {
                continue;
            }
            let k = p.key();
            let perm = match used.get(&k).or_else(|| memo.get(&k)) {
                Some(c) => c.clone(),
                None => match compile(&p.configure, &p.write, &p.read) {
                    Ok(c) => c,
                    Err(_) => continue,
                },
            };
            used.insert(k, perm.clone());
            a.permissions.insert(key, perm);
        }
        *memo = used;
        a
    }
}

/// Compile the three patterns (anchored, as RabbitMQ matches whole names).
pub fn compile(configure: &str, write: &str, read: &str) -> Result<Permission, String> {
    let c = |k: &str, p: &str| {
        if p.len() > MAX_PATTERN {
            return Err(format!("{k} pattern is longer than {MAX_PATTERN} bytes"));
        }
        anchored(p).map_err(|e| format!("invalid_regexp: {k} {p:?}: {e}"))
    };
    Ok(Permission {
        configure: c("configure", configure)?,
        write: c("write", write)?,
        read: c("read", read)?,
        patterns: [configure.into(), write.into(), read.into()],
    })
}

/// A user or vhost name: 1 to [`MAX_NAME`] bytes, no control characters.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name must not be empty"));
    }
    if name.len() > MAX_NAME {
        return Err(format!("{what} name is longer than {MAX_NAME} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} name must not contain control characters"));
    }
    Ok(())
}

/// User tags from a JSON value: a comma-separated string (rabbitmqadmin,
/// RabbitMQ's exports before 3.9) or an array of strings.
pub fn parse_tags(v: Option<&serde_json::Value>) -> Result<Vec<String>, String> {
    use serde_json::Value;
    let raw: Vec<String> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|t| t.trim().to_string()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(|s| s.trim().to_string())
                    .ok_or_else(|| "tags must be strings".to_string())
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err("tags must be a comma-separated string or an array of strings".into())
        }
    };
    let mut tags: Vec<String> = Vec::new();
    for t in raw.into_iter().filter(|t| !t.is_empty()) {
        if t.len() > MAX_TAG || t.contains(char::is_whitespace) || t.chars().any(char::is_control) {
            return Err(format!(
                "{t:?} is not a tag (one word of at most {MAX_TAG} bytes)"
            ));
        }
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(format!("a user has at most {MAX_TAGS} tags"));
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_hashes_verify_and_round_trip() {
        // `rabbitmqctl hash_password guest` style: salt ++ sha256(salt ++ pw).
        let s = Secret::hash("s3cret");
        assert!(s.verify("s3cret") && !s.verify("s3cre") && !s.verify(""));
        let (h, algo) = s.export("u");
        assert_eq!(algo, SHA256);
        assert_eq!(Secret::from_export(&h, Some(algo)).unwrap(), s);
        let plain = Secret::Plain("pw".into());
        assert_eq!(plain.export("u"), plain.export("u"));
        let (h, algo) = plain.export("u");
        assert!(Secret::from_export(&h, Some(algo)).unwrap().verify("pw"));
        assert!(!Secret::from_export("", None).unwrap().verify(""));
        assert!(Secret::from_export("AAAA", None).is_err());
        assert!(Secret::from_export(&h, Some("rabbit_password_hashing_md5")).is_err());
    }

    #[test]
    fn tags_from_a_comma_list_or_an_array() {
        let v = serde_json::json!("administrator, monitoring");
        assert_eq!(
            parse_tags(Some(&v)).unwrap(),
            ["administrator", "monitoring"]
        );
        let v = serde_json::json!(["management"]);
        assert_eq!(parse_tags(Some(&v)).unwrap(), ["management"]);
        assert_eq!(
            parse_tags(Some(&serde_json::json!(""))).unwrap(),
            Vec::<String>::new()
        );
        assert!(parse_tags(Some(&serde_json::json!(3))).is_err());
    }

    #[test]
    fn bad_patterns_and_names_are_refused_with_the_reason() {
        let e = compile("(", ".*", ".*").err().unwrap();
        assert!(
            e.contains("invalid_regexp") && e.contains("configure"),
            "{e}"
        );
        assert!(check_name("user", "").is_err());
        assert!(check_name("user", &"x".repeat(256)).is_err());
        assert!(check_name("vhost", "a\nb").is_err());
        assert!(check_name("vhost", "staging").is_ok());
    }

    #[test]
    fn a_corrupt_store_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = store_path(dir.path());
        assert_eq!(Runtime::load(&p).unwrap(), Runtime::default());
        std::fs::write(&p, b"{not json").unwrap();
        let e = Runtime::load(&p).unwrap_err().to_string();
        assert!(e.contains("accounts.json"), "{e}");
        let mut r = Runtime::default();
        r.vhosts.push("v".into());
        r.save(&p).unwrap();
        assert_eq!(Runtime::load(&p).unwrap(), r);
    }
}
