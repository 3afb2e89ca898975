//! Metric names and tags cleaned exactly as the statsd 0.9 daemon cleans its
//! keys (`sanitizeKeyName` in `stats.js`, on by default):
//!
//! 1. every run of JavaScript whitespace (`\s`: ASCII blanks, NBSP,
//!    U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000,
//!    U+FEFF) becomes one `_`;
//! 2. every `/` becomes `-`;
//! 3. every character outside `[A-Za-z0-9_.;=-]` is removed.
//!
//! The name is not trimmed first (statsd does not trim: ` a:1|c` is `_a`).
//! DogStatsD tags join the key as statsd builds it, `name;tag;tag`, each tag
//! with its first `;` turned into `_` and its first `:` into `=` before the
//! cleaning. A name that cleans to nothing is refused by the parser (statsd
//! would keep a series named ``).

/// Whether `c` matches JavaScript's `\s` (ECMAScript WhiteSpace and
/// LineTerminator), which differs from Rust's `char::is_whitespace` (U+FEFF
/// in, U+0085 out).
#[inline]
pub fn is_js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// Whether statsd keeps byte `b` as it is (`[A-Za-z0-9_.;=-]`): the one
/// definition of the set, for characters, names and the parser's table.
#[inline]
pub const fn is_kept_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b';' | b'=')
}

/// Whether statsd keeps `c` as it is.
#[inline]
pub fn is_kept(c: char) -> bool {
    c.is_ascii() && is_kept_byte(c as u8)
}

/// Whether `s` is already clean (the common case: copied as it is).
#[inline]
fn is_plain(s: &str) -> bool {
    s.bytes().all(is_kept_byte)
}

/// The cleaner's state over a stream of characters.
struct Cleaner<'o> {
    out: &'o mut String,
    in_space: bool,
}

impl Cleaner<'_> {
    #[inline]
    fn push(&mut self, c: char) {
        if is_js_space(c) {
            if !self.in_space {
                self.out.push('_');
            }
            self.in_space = true;
            return;
        }
        // Any other character ends a whitespace run, even one removed
        // afterwards (statsd replaces the runs before removing).
        self.in_space = false;
        if c == '/' {
            self.out.push('-');
        } else if is_kept(c) {
            self.out.push(c);
        }
    }
}

/// Append `name` cleaned as statsd cleans a key.
pub fn push_clean(out: &mut String, name: &str) {
    if is_plain(name) {
        out.push_str(name);
        return;
    }
    let mut c = Cleaner {
        out,
        in_space: false,
    };
    for ch in name.chars() {
        c.push(ch);
    }
}

/// Append one tag as statsd puts it into the key: the first `;` becomes
/// `_`, the first `:` becomes `=`, then the whole is cleaned.
pub fn push_clean_tag(out: &mut String, tag: &str) {
    let (mut semi, mut colon) = (false, false);
    let mut c = Cleaner {
        out,
        in_space: false,
    };
    for ch in tag.chars() {
        let ch = match ch {
            ';' if !semi => {
                semi = true;
                '_'
            }
            ':' if !colon => {
                colon = true;
                '='
            }
            ch => ch,
        };
        c.push(ch);
    }
}

/// Whether `name` cleans to the empty string (it has no whitespace, no `/`
/// and no kept character).
pub fn cleans_to_empty(name: &str) -> bool {
    !name
        .chars()
        .any(|c| is_kept(c) || c == '/' || is_js_space(c))
}

/// `name` cleaned (allocates; for tests and tools).
pub fn clean(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    push_clean(&mut s, name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_statsd_sanitize_key_name() {
        // Expected values computed with statsd 0.9's own regular expressions.
        for (raw, want) in [
            ("plain.name_ok-1", "plain.name_ok-1"),
            ("my  metric/x!", "my_metric-x"),
            (" lead and trail ", "_lead_and_trail_"),
            ("tab\t\tnl", "tab_nl"),
            ("a;b=c", "a;b=c"),
            ("naïve", "nave"),
            ("a\u{a0}\u{3000}b", "a_b"),
            ("a\u{feff}b", "a_b"),
            // U+0085 is whitespace to Rust, not to JavaScript: removed.
            ("a\u{85}b", "ab"),
            // A removed character splits a whitespace run into two.
            ("a \u{1} b", "a__b"),
            ("//", "--"),
            ("é!", ""),
        ] {
            assert_eq!(clean(raw), want, "{raw:?}");
            assert_eq!(cleans_to_empty(raw), want.is_empty(), "{raw:?}");
        }
    }

    #[test]
    fn tags_join_as_statsd_joins_them() {
        for (raw, want) in [
            ("env:prod", "env=prod"),
            ("flag", "flag"),
            ("x;y:z=w", "x_y=z=w"),
            ("k=x:v", "k=x=v"),
            ("a;b;c:d:e", "a_b;c=de"),
            ("path:/a b", "path=-a_b"),
        ] {
            let mut s = String::new();
            push_clean_tag(&mut s, raw);
            assert_eq!(s, want, "{raw:?}");
        }
    }
}
