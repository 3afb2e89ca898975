//! Exchanges and their routing: direct, fanout, topic (`*` one word, `#` zero
//! or more), headers (`x-match` all/any). An exchange maps a message to the
//! set of bound destinations (queues or other exchanges).

use crate::message::{value_as_str, Message};
use amq_protocol::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};

/// Exchange type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Routing key equals binding key.
    Direct,
    /// Every binding.
    Fanout,
    /// Dotted-word patterns.
    Topic,
    /// Header table matching.
    Headers,
}

impl Kind {
    /// Parse an AMQP exchange type name.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "direct" => Kind::Direct,
            "fanout" => Kind::Fanout,
            "topic" => Kind::Topic,
            "headers" => Kind::Headers,
            _ => return None,
        })
    }
    /// The AMQP name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Fanout => "fanout",
            Kind::Topic => "topic",
            Kind::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dest {
    /// A queue.
    Queue(String),
    /// Another exchange (exchange-to-exchange binding).
    Exchange(String),
}

/// One binding from an exchange.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Destination.
    pub dest: Dest,
    /// Binding key.
    pub key: String,
    /// Binding arguments (headers exchange).
    pub args: FieldTable,
    topic: Vec<String>,
}

impl Binding {
    /// A binding; topic keys are split once here.
    pub fn new(dest: Dest, key: String, args: FieldTable) -> Self {
        let mut topic: Vec<String> = Vec::new();
        for w in topic_words(&key) {
            // `#.#` matches what `#` matches: keep one.
            if !(w == "#" && topic.last().is_some_and(|l| l == "#")) {
                topic.push(w.to_string());
            }
        }
        Binding {
            dest,
            key,
            args,
            topic,
        }
    }
}

/// An exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: Kind,
    /// Survives restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Clients cannot publish to it directly.
    pub internal: bool,
    /// Declare arguments (e.g. `alternate-exchange`).
    pub arguments: FieldTable,
    /// Bindings from this exchange.
    pub bindings: Vec<Binding>,
    /// The policy that applies to it (name, and its `alternate-exchange`).
    pub policy: Option<(String, Option<String>)>,
}

impl Exchange {
    /// The `alternate-exchange`: its argument, else its policy's (the
    /// argument wins, as RabbitMQ's).
    pub fn alternate(&self) -> Option<&str> {
        self.arguments
            .inner()
            .get("alternate-exchange")
            .and_then(value_as_str)
            .or_else(|| self.policy.as_ref().and_then(|(_, ae)| ae.as_deref()))
    }

    /// Destinations matching `msg`, appended to `out`.
    pub fn route(&self, msg: &Message, out: &mut Vec<Dest>) {
        let rk = &*msg.routing_key;
        match self.kind {
            Kind::Fanout => out.extend(self.bindings.iter().map(|b| b.dest.clone())),
            Kind::Direct => out.extend(
                self.bindings
                    .iter()
                    .filter(|b| b.key == rk)
                    .map(|b| b.dest.clone()),
            ),
            Kind::Topic => {
                let words = topic_words(rk);
                out.extend(
                    self.bindings
                        .iter()
                        .filter(|b| topic_match(&b.topic, &words))
                        .map(|b| b.dest.clone()),
                )
            }
            Kind::Headers => {
                let headers = msg.headers();
                out.extend(
                    self.bindings
                        .iter()
                        .filter(|b| headers_match(&b.args, headers.as_ref()))
                        .map(|b| b.dest.clone()),
                )
            }
        }
    }
}

/// The words of a topic routing or binding key, split as RabbitMQ 3.x does:
/// on every `.`, so `a..b` has an empty middle word and `a.` ends with one;
/// the empty key has no words at all (so `#` matches it and `*` does not).
pub fn topic_words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// Topic match: `*` is exactly one word (possibly empty), `#` zero or more
/// words; `pattern` and `words` as split by [`topic_words`].
pub fn topic_match<P: AsRef<str>>(pattern: &[P], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((p, rest)) => match p.as_ref() {
            "#" => (0..=words.len()).any(|skip| topic_match(rest, &words[skip..])),
            "*" => !words.is_empty() && topic_match(rest, &words[1..]),
            lit => words.first() == Some(&lit) && topic_match(rest, &words[1..]),
        },
    }
}

/// Headers match: `x-match` = `all` (default) or `any`; keys starting with
/// `x-` are ignored; a Void binding value matches presence only.
pub fn headers_match(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = args
        .inner()
        .get("x-match")
        .and_then(value_as_str)
        .unwrap_or("all");
    let any = mode.starts_with("any");
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty);
    let mut considered = 0;
    for (k, v) in args.inner() {
        if k.as_str().starts_with("x-") {
            continue;
        }
        considered += 1;
        let ok = match headers.inner().get(k) {
            None => false,
            Some(h) => matches!(v, AMQPValue::Void) || values_equal(v, h),
        };
        if any && ok {
            return true;
        }
        if !any && !ok {
            return false;
        }
    }
    !any || considered == 0
}

fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (value_as_str(a), value_as_str(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (
        crate::message::value_as_i64(a),
        crate::message::value_as_i64(b),
    ) {
        return x == y;
    }
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, rk: &str) -> bool {
        let b = Binding::new(
            Dest::Queue("q".into()),
            p.to_string(),
            FieldTable::default(),
        );
        topic_match(&b.topic, &topic_words(rk))
    }

    /// RabbitMQ 3.x (`rabbit_exchange_type_topic`: keys split on every `.`,
    /// the empty key into no words, matched against the binding trie).
    #[test]
    fn topic_edges_as_rabbitmq() {
        let cases: &[(&str, &str, bool)] = &[
            // the empty routing key: zero words
            ("#", "", true),
            ("#.#", "", true),
            ("", "", true),
            ("*", "", false),
            ("#.*", "", false),
            ("*.#", "", false),
            ("a", "", false),
            ("", "a", false),
            // empty words
            ("a..b", "a..b", true),
            ("a.*.b", "a..b", true),
            ("a.#.b", "a..b", true),
            ("a.b", "a..b", false),
            ("a.*", "a.", true),
            ("a.", "a.", true),
            ("a.", "a", false),
            ("a.*", "a", false),
            ("*", ".", false),
            ("*.*", ".", true),
            (".", ".", true),
            (".", "", false),
            ("#", ".", true),
            ("*.a", ".a", true),
            // # and * at either end and in a row
            ("#", "a.b", true),
            ("#.#", "a", true),
            ("#.#", "a.b.c", true),
            ("*", "a", true),
            ("*", "a.b", false),
            ("*.#", "a", true),
            ("*.#", "a.b.c", true),
            ("#.*", "a", true),
            ("#.*", "a.b", true),
            ("*.#.*", "a", false),
            ("*.#.*", "a.b", true),
            ("*.#.*", "a.b.c.d", true),
            ("*.*", "a", false),
            ("*.*", "a.b", true),
            ("a.#", "a", true),
            ("#.a", "a", true),
            ("#.a.#", "a", true),
            ("#.a.#", "b.a.c", true),
            ("#.a.#", "b.c", false),
            ("a.#.#.b", "a.b", true),
            ("a.*.#", "a", false),
            ("a.*.#", "a.b", true),
            ("#.b.#.c", "a.b.c", true),
            ("#.b.#.c", "a.c.b", false),
            // wildcard characters in a routing key are plain words
            ("a.*", "a.#", true),
            ("a.b", "a.*", false),
        ];
        for (pattern, key, want) in cases {
            assert_eq!(m(pattern, key), *want, "binding {pattern:?} key {key:?}");
        }
    }

    #[test]
    fn topic_wildcards() {
        assert!(m("#", "animals.dogs.poodles"));
        assert!(m("#", ""));
        assert!(!m("*", ""));
        assert!(m("animals.*.shorthaired", "animals.cats.shorthaired"));
        assert!(!m("animals.*.shorthaired", "animals.misc"));
        assert!(m("*.cats.*", "animals.cats.shorthaired"));
        assert!(!m("*.cats.*", "animals.dogs.shorthaired"));
        assert!(m("a.#", "a"));
        assert!(m("a.#.z", "a.b.c.z"));
        assert!(m("a.#.z", "a.z"));
        assert!(!m("a.*", "a"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("#.c", "a.b.c"));
    }

    #[test]
    fn headers_all_and_any() {
        let mut args = FieldTable::default();
        args.insert("a".into(), AMQPValue::LongString("1".into()));
        args.insert("b".into(), AMQPValue::LongInt(2));
        let mut h = FieldTable::default();
        h.insert("a".into(), AMQPValue::ShortString("1".into()));
        assert!(!headers_match(&args, Some(&h)));
        h.insert("b".into(), AMQPValue::LongLongInt(2));
        assert!(headers_match(&args, Some(&h)));
        let mut any = args.clone();
        any.insert("x-match".into(), AMQPValue::LongString("any".into()));
        let mut h2 = FieldTable::default();
        h2.insert("b".into(), AMQPValue::LongInt(2));
        assert!(headers_match(&any, Some(&h2)));
        assert!(!headers_match(&any, None));
    }
}
