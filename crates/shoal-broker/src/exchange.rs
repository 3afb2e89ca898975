//! Exchanges and their routing: direct, fanout, topic (`*` one word, `#` zero
//! or more), headers (`x-match` all/any, and their `-with-x` forms). An exchange maps a message to the
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
///
/// One pass over the pattern keeps, for each `j`, whether the pattern so
/// far can take exactly the first `j` words: linear in pattern times key,
/// where trying each split at every `#` is exponential in the number of
/// `#` (a binding like `#.a.#.a.#.a…` against a long key would hold the
/// vhost for good).
pub fn topic_match<P: AsRef<str>>(pattern: &[P], words: &[&str]) -> bool {
    if !pattern.iter().any(|p| p.as_ref() == "#") {
        // Word for word (most bindings): no table.
        return pattern.len() == words.len()
            && pattern
                .iter()
                .zip(words)
                .all(|(p, w)| p.as_ref() == "*" || p.as_ref() == *w);
    }
    // Keys are short strings (at most 256 words): on the stack.
    let mut stack = [false; 258];
    let mut heap = Vec::new();
    let reach: &mut [bool] = if words.len() < stack.len() {
        &mut stack[..=words.len()]
    } else {
        heap.resize(words.len() + 1, false);
        &mut heap
    };
    reach[0] = true;
    for p in pattern {
        match p.as_ref() {
            "#" => {
                let mut any = false;
                for r in reach.iter_mut() {
                    any |= *r;
                    *r = any;
                }
            }
            step => {
                let mut live = false;
                for j in (1..reach.len()).rev() {
                    reach[j] = reach[j - 1] && (step == "*" || words[j - 1] == step);
                    live |= reach[j];
                }
                reach[0] = false;
                if !live {
                    return false;
                }
            }
        }
    }
    reach[words.len()]
}

/// A headers binding's `x-match`, as RabbitMQ 3.10 reads it: `all` (also
/// when absent or not one of the four, for bindings made before the check
/// at bind time), `any`, and their `-with-x` forms, which also match
/// binding keys that start with `x-` (but `x-match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl XMatch {
    fn of(args: &FieldTable) -> XMatch {
        match args.inner().get("x-match").and_then(value_as_str) {
            Some("any") => XMatch::Any,
            Some("all-with-x") => XMatch::AllWithX,
            Some("any-with-x") => XMatch::AnyWithX,
            _ => XMatch::All,
        }
    }
}

/// RabbitMQ's check of a headers binding's `x-match` at bind time; the
/// error is its text (a 406).
pub fn check_x_match(args: &FieldTable) -> Result<(), String> {
    match args.inner().get("x-match") {
        None => Ok(()),
        Some(AMQPValue::LongString(s)) => match s.as_bytes() {
            b"all" | b"any" | b"all-with-x" | b"any-with-x" => Ok(()),
            other => Err(format!(
                "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                erlang_binary(other)
            )),
        },
        Some(v) => Err(format!(
            "Invalid x-match field type {} (value {}); expected longstr",
            crate::queue::type_name(v),
            crate::queue::show(v)
        )),
    }
}

/// A binary as Erlang's `~p` prints it: `<<"text">>` when printable ASCII,
/// else its bytes, `<<1,2,3>>` (and `<<>>` when empty).
fn erlang_binary(b: &[u8]) -> String {
    if !b.is_empty() && b.iter().all(|c| (0x20..0x7f).contains(c)) {
        let mut text = String::with_capacity(b.len() + 6);
        text.push_str("<<\"");
        for &c in b {
            if c == b'"' || c == b'\\' {
                text.push('\\');
            }
            text.push(char::from(c));
        }
        text.push_str("\">>");
        text
    } else {
        let bytes: Vec<String> = b.iter().map(u8::to_string).collect();
        format!("<<{}>>", bytes.join(","))
    }
}

/// Headers match, as RabbitMQ's: with `all` every binding key must be in the
/// headers with an equal value (a Void binding value: present), and no keys
/// match everything; with `any` one such key is enough, and no keys match
/// nothing. Binding keys starting with `x-` are left out, but for the
/// `-with-x` forms, which leave out only `x-match`.
pub fn headers_match(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = XMatch::of(args);
    let any = matches!(mode, XMatch::Any | XMatch::AnyWithX);
    let with_x = matches!(mode, XMatch::AllWithX | XMatch::AnyWithX);
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty);
    for (k, v) in args.inner() {
        let k = k.as_str();
        if k == "x-match" || (!with_x && k.starts_with("x-")) {
            continue;
        }
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
    !any
}

/// Whether a header's value equals a binding's: strings and byte arrays
/// by their bytes (RabbitMQ matches a longstr against a byte array), and
/// integers of any width by their value.
fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (value_bytes(a), value_bytes(b)) {
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

fn value_bytes(v: &AMQPValue) -> Option<&[u8]> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ByteArray(b) => Some(b.as_slice()),
        _ => None,
    }
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
    /// A binding with many `#` against a long key that almost matches: a
    /// backtracking matcher tries every split (about 120^10 here) and holds
    /// the vhost for good; this one is linear in pattern times key.
    #[test]
    fn many_hashes_against_a_long_key_are_matched_at_once() {
        let key = vec!["a"; 120].join(".");
        let words = topic_words(&key);
        let pattern: Vec<&str> = "#.a.#.a.#.a.#.a.#.a.#.a.#.a.#.a.#.a.#.a.#.b"
            .split('.')
            .collect();
        assert!(!topic_match(&pattern, &words));
        let pattern: Vec<&str> = "#.a.#.a.#.a.#.a.#.a.#.a.#.a.#.a.#.a.#.a.#"
            .split('.')
            .collect();
        assert!(topic_match(&pattern, &words));
        let long = vec!["*"; 120].join(".");
        let pattern: Vec<&str> = long.split('.').collect();
        assert!(topic_match(&pattern, &words));
        assert!(!topic_match(&pattern[1..], &words));
    }

    /// The definition, tried split by split: the oracle for small cases.
    fn topic_match_by_backtracking(pattern: &[&str], words: &[&str]) -> bool {
        match pattern.split_first() {
            None => words.is_empty(),
            Some((&"#", rest)) => {
                (0..=words.len()).any(|skip| topic_match_by_backtracking(rest, &words[skip..]))
            }
            Some((&p, rest)) => {
                words.first().is_some_and(|w| p == "*" || *w == p)
                    && topic_match_by_backtracking(rest, &words[1..])
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn topic_match_agrees_with_backtracking(
            pattern in proptest::collection::vec(proptest::sample::select(vec!["#", "*", "a", "b", ""]), 0..8),
            words in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "", "#", "*"]), 0..8),
        ) {
            proptest::prop_assert_eq!(
                topic_match(&pattern, &words),
                topic_match_by_backtracking(&pattern, &words)
            );
        }
    }

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

    fn table(pairs: &[(&str, &str)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), AMQPValue::LongString((*v).into()));
        }
        t
    }

    /// The answers RabbitMQ 3.10.8 gave for a binding {x-match: MODE,
    /// x-foo: 1, a: 1} and for one with only {x-match: MODE, x-foo: 1}.
    #[test]
    fn headers_modes_match_as_rabbitmq_including_the_with_x_forms() {
        let with = |mode: &str, rest: &[(&str, &str)]| {
            let mut pairs = vec![("x-match", mode)];
            pairs.extend_from_slice(rest);
            table(&pairs)
        };
        let messages: [&[(&str, &str)]; 5] = [
            &[("x-foo", "1"), ("a", "1")],
            &[("a", "1")],
            &[("x-foo", "1")],
            &[("x-foo", "2"), ("a", "1")],
            &[],
        ];
        let expected = [
            ("all", [true, true, false, true, false]),
            ("any", [true, true, false, true, false]),
            ("all-with-x", [true, false, false, false, false]),
            ("any-with-x", [true, true, true, true, false]),
        ];
        for (mode, want) in expected {
            let binding = with(mode, &[("x-foo", "1"), ("a", "1")]);
            for (m, w) in messages.iter().zip(want) {
                assert_eq!(headers_match(&binding, Some(&table(m))), w, "{mode} {m:?}");
            }
        }
        // Only x- keys: `all` has nothing to check (matches all), `any`
        // nothing to find (matches none); the -with-x forms check x-foo.
        let only_x = [
            ("all", [true, true, true]),
            ("any", [false, false, false]),
            ("all-with-x", [true, false, false]),
            ("any-with-x", [true, false, false]),
        ];
        let messages: [&[(&str, &str)]; 3] = [&[("x-foo", "1")], &[], &[("b", "2")]];
        for (mode, want) in only_x {
            let binding = with(mode, &[("x-foo", "1")]);
            for (m, w) in messages.iter().zip(want) {
                assert_eq!(headers_match(&binding, Some(&table(m))), w, "{mode} {m:?}");
            }
        }
    }

    #[test]
    fn a_byte_array_header_matches_the_same_text() {
        let binding = table(&[("k", "a")]);
        let mut h = FieldTable::default();
        h.insert("k".into(), AMQPValue::ByteArray(b"a".to_vec().into()));
        assert!(headers_match(&binding, Some(&h)));
        h.insert("k".into(), AMQPValue::LongInt(1));
        assert!(!headers_match(&table(&[("k", "1")]), Some(&h)));
    }

    #[test]
    fn x_match_is_checked_with_rabbitmqs_words() {
        for ok in ["all", "any", "all-with-x", "any-with-x"] {
            assert_eq!(check_x_match(&table(&[("x-match", ok)])), Ok(()));
        }
        assert_eq!(check_x_match(&FieldTable::default()), Ok(()));
        let want = |v: &str| {
            format!("Invalid x-match field value {v}; expected all, any, all-with-x, or any-with-x")
        };
        assert_eq!(
            check_x_match(&table(&[("x-match", "ALL")])),
            Err(want("<<\"ALL\">>"))
        );
        assert_eq!(check_x_match(&table(&[("x-match", "")])), Err(want("<<>>")));
        let mut t = FieldTable::default();
        t.insert("x-match".into(), AMQPValue::LongInt(5));
        assert_eq!(
            check_x_match(&t),
            Err("Invalid x-match field type signedint (value 5); expected longstr".into())
        );
    }
}
