//! RabbitMQ's policies in a vhost: a name, a pattern matched (unanchored,
//! as RabbitMQ's) against queue and exchange names, what it applies to
//! (`queues`, `exchanges` or `all`), a priority and a definition. A queue
//! takes the matching policy of highest priority (one at most); of its
//! definition the queue settings `message-ttl`, `expires`, `max-length`,
//! `max-length-bytes` (the lower of policy and queue argument wins),
//! `overflow`, `dead-letter-exchange` and `dead-letter-routing-key` (the
//! queue argument wins) take effect, as RabbitMQ resolves them. Policies
//! are saved with the vhost's definitions, so they survive a restart; a
//! change applies at once to every queue, a lower length limit dropping
//! (or dead-lettering) the oldest messages of a `drop-head` queue. An
//! exchange takes its policy's `alternate-exchange` (its own argument wins).

use super::*;
use regex_automata::meta::Regex;
use serde_json::{Map, Value};

/// Policy settings RabbitMQ knows (its built-in validators); others are
/// refused. Those listed in the module doc take effect; the rest are kept
/// and shown but have nothing to do on this broker.
const KNOWN: [&str; 28] = [
    "alternate-exchange",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "delivery-limit",
    "queue-mode",
    "queue-version",
    "overflow",
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "queue-master-locator",
    "queue-leader-locator",
    "initial-cluster-size",
    "max-age",
    "stream-max-segment-size-bytes",
    "federation-upstream",
    "federation-upstream-set",
    "consumer-timeout",
];

/// One policy, as the management API and definitions show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// Name (unique in its vhost).
    pub name: String,
    /// Regular expression matched against names.
    pub pattern: String,
    /// `queues`, `exchanges` or `all`.
    #[serde(rename = "apply-to")]
    pub apply_to: String,
    /// The highest priority among matching policies applies.
    pub priority: i64,
    /// Its settings.
    pub definition: Map<String, Value>,
    #[serde(skip)]
    regex: Option<Regex>,
}

/// How RabbitMQ prints a JSON value in a validation error.
fn erl(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        other => other.to_string(),
    }
}

fn check_setting(key: &str, v: &Value) -> Result<(), String> {
    let non_negative = |what: &str| match v.as_u64() {
        Some(_) => Ok(()),
        None => Err(format!("{} is not a valid {what}", erl(v))),
    };
    let text = |what: &str| match v {
        Value::String(_) => Ok(()),
        _ => Err(format!("{} is not a valid {what}", erl(v))),
    };
    match key {
        "message-ttl" => non_negative("message TTL"),
        "expires" => match v.as_u64() {
            Some(n) if n > 0 => Ok(()),
            _ => Err(format!("{} is not a valid queue expiry", erl(v))),
        },
        "max-length" => non_negative("maximum length"),
        "max-length-bytes" => non_negative("maximum length in bytes"),
        "dead-letter-exchange" => text("dead letter exchange name"),
        "dead-letter-routing-key" => text("dead letter exchange routing key"),
        "overflow" => match v.as_str().and_then(Overflow::from_name) {
            Some(_) => Ok(()),
            None => Err(format!("{} is not a valid overflow value", erl(v))),
        },
        _ => Ok(()),
    }
}

impl Policy {
    /// A policy named `name` from a `PUT /api/policies/{vhost}/{name}` body
    /// or a definitions entry: `pattern` and `definition` required,
    /// `apply-to` (default `all`) and `priority` (default 0) optional.
    /// The error is RabbitMQ's reason.
    pub fn from_json(name: &str, body: &Value) -> Result<Policy, String> {
        let (Some(pattern), Some(def)) = (body.get("pattern"), body.get("definition")) else {
            let missing = if body.get("pattern").is_none() {
                "pattern"
            } else {
                "definition"
            };
            return Err(format!("[{{key_missing,{missing}}}]"));
        };
        let failed = |why: String| format!("Validation failed\n\n{why}\n");
        let pattern = pattern
            .as_str()
            .ok_or_else(|| failed(format!("pattern should be a string but is {pattern}")))?;
        let Some(definition) = def.as_object() else {
            return Err(failed(format!(
                "definition should be an object but is {def}"
            )));
        };
        let unknown: Vec<String> = definition
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erl(v)))
            .collect();
        if !unknown.is_empty() {
            return Err(failed(format!(
                "[{}] are not recognised policy settings",
                unknown.join(",")
            )));
        }
        if definition.is_empty() {
            return Err(failed("no policy provided".to_string()));
        }
        for (k, v) in definition {
            check_setting(k, v).map_err(failed)?;
        }
        let apply_to = match body.get("apply-to") {
            None | Some(Value::Null) => "all",
            Some(v) => match v.as_str() {
                Some(a @ ("queues" | "exchanges" | "all")) => a,
                _ => {
                    let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    return Err(failed(format!(
                        "apply-to '{shown}' unrecognised; should be 'queues', 'exchanges' or 'all'"
                    )));
                }
            },
        };
        let priority = match body.get("priority") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| {
                    failed(format!(
                        "priority should be a number, actually was {}",
                        erl(v)
                    ))
                })?,
        };
        let mut p = Policy {
            name: name.to_string(),
            pattern: pattern.to_string(),
            apply_to: apply_to.to_string(),
            priority,
            definition: definition.clone(),
            regex: None,
        };
        p.compile().map_err(|e| {
            failed(format!(
                "pattern should be regular expression but is invalid: {e}"
            ))
        })?;
        Ok(p)
    }

    fn compile(&mut self) -> Result<(), String> {
        let regex =
            crate::config::unanchored(&self.pattern).map_err(|why| format!("{{\"{why}\"}}"))?;
        self.regex = Some(regex);
        Ok(())
    }

    /// As the management API shows it (`vhost` added by the caller).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.name, "pattern": self.pattern, "apply-to": self.apply_to,
            "definition": self.definition, "priority": self.priority,
        })
    }

    fn matches_queue(&self, name: &str) -> bool {
        self.apply_to != "exchanges" && self.regex.as_ref().is_some_and(|r| r.is_match(name))
    }

    fn matches_exchange(&self, name: &str) -> bool {
        self.apply_to != "queues" && self.regex.as_ref().is_some_and(|r| r.is_match(name))
    }
}

/// The policy of highest priority among `matching` (the first by name of
/// equal priorities).
fn highest<'a>(matching: impl Iterator<Item = &'a Policy>) -> Option<&'a Policy> {
    matching.fold(None, |best, p| match best {
        Some(b) if b.priority >= p.priority => Some(b),
        _ => Some(p),
    })
}

/// A queue's settings: its arguments, with `policy`'s definition resolved
/// against them as RabbitMQ does.
pub fn effective_args(arguments: &FieldTable, policy: Option<&Policy>) -> QueueArgs {
    let mut a = QueueArgs::parse(arguments).unwrap_or_default();
    let Some(def) = policy.map(|p| &p.definition) else {
        return a;
    };
    let num = |k: &str| def.get(k).and_then(Value::as_u64);
    let text = |k: &str| def.get(k).and_then(Value::as_str).map(str::to_string);
    let lower = |arg: Option<u64>, pol: Option<u64>| match (arg, pol) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    a.message_ttl = lower(a.message_ttl, num("message-ttl"));
    a.expires = lower(a.expires, num("expires").filter(|n| *n > 0));
    a.max_length = lower(a.max_length, num("max-length"));
    a.max_length_bytes = lower(a.max_length_bytes, num("max-length-bytes"));
    if a.overflow.is_none() {
        a.overflow = def
            .get("overflow")
            .and_then(Value::as_str)
            .and_then(Overflow::from_name);
    }
    if a.dlx.is_none() {
        a.dlx = text("dead-letter-exchange");
    }
    if a.dlrk.is_none() {
        a.dlrk = text("dead-letter-routing-key");
    }
    a
}

impl VHost {
    /// The policies, by name.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    /// The policy that applies to queue `name`: the matching one of
    /// highest priority (of equal priorities, the first by name).
    pub fn queue_policy(&self, name: &str) -> Option<&Policy> {
        highest(self.policies.values().filter(|p| p.matches_queue(name)))
    }

    /// The policy that applies to exchange `name`, likewise.
    pub fn exchange_policy(&self, name: &str) -> Option<&Policy> {
        highest(self.policies.values().filter(|p| p.matches_exchange(name)))
    }

    /// Give exchange `name` the policy that applies to it.
    pub(super) fn apply_exchange_policy(&mut self, name: &str) {
        let policy = self.exchange_policy(name).map(|p| {
            let ae = p
                .definition
                .get("alternate-exchange")
                .and_then(Value::as_str);
            (p.name.clone(), ae.map(str::to_string))
        });
        if let Some(x) = self.exchanges.get_mut(name) {
            x.policy = policy;
        }
    }

    /// Add or replace a policy and apply it; true if it is new.
    pub fn put_policy(&mut self, p: Policy) -> bool {
        let created = self.policies.insert(p.name.clone(), p).is_none();
        self.apply_policies();
        self.save_definitions();
        created
    }

    /// Delete a policy; false if there is none of that name.
    pub fn delete_policy(&mut self, name: &str) -> bool {
        if self.policies.remove(name).is_none() {
            return false;
        }
        self.apply_policies();
        self.save_definitions();
        true
    }

    /// Policies loaded with the vhost's definitions.
    pub(super) fn load_policies(&mut self, saved: Vec<Policy>) {
        for mut p in saved {
            if p.compile().is_ok() {
                self.policies.insert(p.name.clone(), p);
            }
        }
        self.apply_policies();
    }

    /// Resolve every queue's settings against the policies in force; a
    /// `drop-head` queue now over a length limit drops (or dead-letters)
    /// its oldest messages.
    pub(super) fn apply_policies(&mut self) {
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for name in names {
            self.apply_policy_to(&name);
        }
        let names: Vec<String> = self.exchanges.keys().cloned().collect();
        for name in names {
            self.apply_exchange_policy(&name);
        }
    }

    /// Resolve queue `name`'s settings against the policies in force.
    pub(super) fn apply_policy_to(&mut self, name: &str) {
        let policy = self.queue_policy(name).cloned();
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        let mut args = effective_args(&q.arguments, policy.as_ref());
        // The priority levels are fixed when the queue is made.
        args.max_priority = q.args.max_priority;
        q.args = args;
        q.policy = policy.map(|p| p.name);
        let mut dropped = Vec::new();
        if q.args.overflow.unwrap_or(Overflow::DropHead) == Overflow::DropHead {
            while q.over_limit() {
                match q.pop() {
                    Some(m) => dropped.push(m),
                    None => break,
                }
            }
        }
        if !dropped.is_empty() {
            self.dead_letter(name, dropped, "maxlen", 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(def: Value) -> Policy {
        Policy::from_json("p", &json!({"pattern": "^q", "definition": def})).expect("valid")
    }

    #[test]
    fn lower_limit_wins_and_the_argument_wins_the_rest() {
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongInt(5));
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(100));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("mine".into()),
        );
        let p = policy(json!({"max-length": 2, "message-ttl": 5000, "expires": 900,
            "dead-letter-exchange": "theirs", "dead-letter-routing-key": "k",
            "overflow": "reject-publish"}));
        let a = effective_args(&args, Some(&p));
        assert_eq!(a.max_length, Some(2));
        assert_eq!(a.message_ttl, Some(100));
        assert_eq!(a.expires, Some(900));
        assert_eq!(a.dlx.as_deref(), Some("mine"));
        assert_eq!(a.dlrk.as_deref(), Some("k"));
        assert_eq!(a.overflow, Some(Overflow::RejectPublish));
        assert_eq!(effective_args(&args, None).max_length, Some(5));
    }

    #[test]
    fn bad_policies_are_refused_in_rabbitmqs_words() {
        let refused = |body: Value| Policy::from_json("p", &body).unwrap_err();
        assert_eq!(
            refused(json!({"pattern": "x"})),
            "[{key_missing,definition}]"
        );
        assert_eq!(
            refused(json!({"pattern": "x", "definition": {"foo": 1}})),
            "Validation failed\n\n[{<<\"foo\">>,1}] are not recognised policy settings\n"
        );
        assert_eq!(
            refused(json!({"pattern": "x", "definition": {"max-length": "a"}})),
            "Validation failed\n\n<<\"a\">> is not a valid maximum length\n"
        );
        assert!(
            refused(json!({"pattern": "(", "definition": {"max-length": 1}})).starts_with(
                "Validation failed\n\npattern should be regular expression but is invalid"
            )
        );
        let p = policy(json!({"max-length": 1}));
        assert_eq!((p.apply_to.as_str(), p.priority), ("all", 0));
        assert!(p.matches_queue("queue") && !p.matches_queue("other"));
    }
}
