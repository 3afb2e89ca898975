//! The statsd line protocol, parsed without allocating.
//!
//! One line is `name:value[:value...]|type[|@rate][|#tag,tag:v]`. Types are
//! `c` (counter), `g` (gauge; a leading `+`/`-` makes it a delta), `ms`
//! (timer), `h` (histogram) and `d` (distribution), both aggregated as
//! timers, and `s` (set). Several values before the first `|` (DogStatsD's
//! `name:1:2:3|ms`) share the type, rate and tags; several segments
//! (statsd's `name:1|c:2|ms`) each have their own type and rate
//! ([`parse_segments`]). The validity rules follow
//! the Etsy statsd daemon (`lib/helpers.js`): values must be numbers (sets
//! take any string), timers must not be negative, a sample rate must be a
//! positive number (`@2` is accepted as statsd accepts it, and counts each
//! value as half). Other fields after the type are DogStatsD's
//! (`|c:container`, `|T<timestamp>`, `|e:external data`, `|card:low`) or
//! unknown: all are accepted and ignored, never a bad line. DogStatsD
//! events (`_e{...}`) and service checks (`_sc|...`) are told apart by
//! [`special`] before parsing.
//!
//! Tags may also ride in the name, in the styles statsd_exporter reads:
//! InfluxDB `name,k=v,k2=v2`, Librato `name#k=v,k2=v2` and SignalFX
//! `name[k=v,k2=v2]` (the brackets anywhere in the name). statsd 0.9 would
//! strip the `,` `#` `[` `]` and glue the tags onto the name; here they are
//! tags like DogStatsD's `|#k:v`, and both kinds may be combined.

use std::fmt;

/// The type of one metric line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `c`: added up over the interval.
    Counter,
    /// `g`: kept across intervals; `+N`/`-N` changes it.
    Gauge,
    /// `ms`, `h`, `d`: every value kept for the interval's statistics.
    Timer,
    /// `s`: unique values counted over the interval.
    Set,
}

/// A parsed line. Borrowed slices point into the datagram.
#[derive(Clone, Debug, PartialEq)]
pub struct Line<'a> {
    /// The metric name (before the first `:`), as sent (not trimmed: the
    /// key is cleaned later, as statsd cleans it), without name tags.
    pub name: &'a str,
    /// The rest of the name after SignalFX tags in its middle (`a[k=v]b`:
    /// `b`); usually empty.
    pub name_tail: &'a str,
    /// Tags carried in the name (`k=v,k2=v2`), InfluxDB, Librato or
    /// SignalFX style; empty when none.
    pub name_tags: &'a str,
    /// The raw value list: one value, or several separated by `:`.
    pub values: &'a str,
    /// The metric type.
    pub kind: MetricType,
    /// The sample rate (1.0 when absent).
    pub rate: f64,
    /// The raw tag list after `#` (empty when absent).
    pub tags: &'a str,
}

/// Why a line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadLine {
    /// No `:` between name and value, or an empty name.
    NoName,
    /// A name with nothing left after statsd's cleaning (`!!:1|c`).
    EmptyName,
    /// No `|type` field.
    NoType,
    /// A type other than c, g, ms, h, d, s.
    UnknownType,
    /// A value that is not a finite number (or a negative timer).
    BadValue,
    /// A sample rate that is not `@` followed by a positive finite number.
    BadRate,
    /// The line is not valid UTF-8.
    NotUtf8,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadLine::NoName => "missing name or ':'",
            BadLine::EmptyName => "name is empty once cleaned",
            BadLine::NoType => "missing '|type'",
            BadLine::UnknownType => "unknown metric type",
            BadLine::BadValue => "value is not a valid number",
            BadLine::BadRate => "sample rate is not @<positive number>",
            BadLine::NotUtf8 => "not UTF-8",
        })
    }
}

/// One value of a line, ready to aggregate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// A number (counter amount, timer value, absolute gauge).
    Number(f64),
    /// A signed gauge delta (`+N` / `-N`).
    Delta(f64),
    /// A set member.
    Member(&'a str),
}

/// Position of byte `b` in `s`.
#[inline]
fn find(s: &[u8], b: u8) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

fn text(b: &[u8]) -> Result<&str, BadLine> {
    std::str::from_utf8(b).map_err(|_| BadLine::NotUtf8)
}

/// Parse one line (without its newline). Values are validated here, so that
/// [`Line::for_each_value`] never fails afterwards. Works on bytes: only the
/// name, the values and the tags are checked as UTF-8. The line is one
/// segment: for statsd's `name:1|c:2|ms` use [`parse_segments`].
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, BadLine> {
    let (name, rest) = name_and_rest(line)?;
    segment(name, rest, None)
}

/// A line's name split from the tags it carries.
#[derive(Clone, Copy)]
struct Name<'a> {
    head: &'a str,
    tail: &'a str,
    tags: &'a str,
}

/// Split tags off a name: Librato `a#k=v`, SignalFX `a[k=v]b`, InfluxDB
/// `a,k=v` (the first of `#`, `[`, `,` decides the style).
fn split_name(name: &str) -> Name<'_> {
    let plain = Name {
        head: name,
        tail: "",
        tags: "",
    };
    let Some(at) = name.bytes().position(|b| matches!(b, b'#' | b'[' | b',')) else {
        return plain;
    };
    match name.as_bytes()[at] {
        b'[' => match name[at..].find(']') {
            Some(len) => Name {
                head: &name[..at],
                tail: &name[at + len + 1..],
                tags: &name[at + 1..at + len],
            },
            None => plain,
        },
        _ => Name {
            head: &name[..at],
            tail: "",
            tags: &name[at + 1..],
        },
    }
}

/// Parse one line that may carry several `value|type[|@rate]` segments after
/// its name, as the statsd daemon takes them (`name:1|c:2|ms|@0.5`: a `:`
/// ending the type or the rate starts the next segment), and call `f` with
/// each segment's result. The tags (`|#...`, wherever they stand) belong to
/// every segment, as in statsd, which splits them off the line first. A line
/// with one segment gives what [`parse_line`] gives.
pub fn parse_segments<'a>(line: &'a [u8], mut f: impl FnMut(Result<Line<'a>, BadLine>)) {
    let (name, mut rest) = match name_and_rest(line) {
        Ok(x) => x,
        Err(why) => return f(Err(why)),
    };
    // The last `#` field, as parse_line keeps the last one.
    let tags = match rest
        .split(|&b| b == b'|')
        .skip(1)
        .filter(|field| field.first() == Some(&b'#'))
        .last()
        .map(|field| text(&field[1..]))
        .transpose()
    {
        Ok(tags) => tags.unwrap_or(""),
        Err(why) => return f(Err(why)),
    };
    loop {
        let (seg, next) = split_segment(rest);
        f(segment(name, seg, Some(tags)));
        match next {
            Some(n) => rest = n,
            None => return,
        }
    }
}

/// The first segment of `rest` and what follows its ending `:`, if any. Only
/// a `:` in the type field or in an `@rate` field ends a segment: the values
/// (DogStatsD's `1:2:3|ms`), tags and `c:` container fields keep theirs.
fn split_segment(rest: &[u8]) -> (&[u8], Option<&[u8]>) {
    let Some(pipe) = find(rest, b'|') else {
        return (rest, None);
    };
    let mut at = pipe + 1;
    let mut first = true;
    loop {
        let field = &rest[at..];
        let end = find(field, b'|').unwrap_or(field.len());
        if first || field.first() == Some(&b'@') {
            if let Some(colon) = find(&field[..end], b':') {
                return (&rest[..at + colon], Some(&rest[at + colon + 1..]));
            }
        }
        if end == field.len() {
            return (rest, None);
        }
        at += end + 1;
        first = false;
    }
}

/// The name before the first `:` (untrimmed, as statsd takes it), and the
/// rest after it. A name that statsd's cleaning would empty is refused.
fn name_and_rest(line: &[u8]) -> Result<(Name<'_>, &[u8]), BadLine> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let colon = find(line, b':').ok_or(BadLine::NoName)?;
    let name = split_name(text(&line[..colon])?);
    if name.head.is_empty() && name.tail.is_empty() {
        return Err(BadLine::NoName);
    }
    if super::name::cleans_to_empty(name.head) && super::name::cleans_to_empty(name.tail) {
        return Err(BadLine::EmptyName);
    }
    Ok((name, &line[colon + 1..]))
}

/// One `values|type[|fields]` segment of `name`'s line. With `line_tags`,
/// the tags were read off the whole line already and `#` fields are skipped.
fn segment<'a>(
    name: Name<'a>,
    rest: &'a [u8],
    line_tags: Option<&'a str>,
) -> Result<Line<'a>, BadLine> {
    let pipe = find(rest, b'|').ok_or(BadLine::NoType)?;
    let values = text(&rest[..pipe])?;
    let mut fields = rest[pipe + 1..].split(|&b| b == b'|');
    let kind = match fields.next().map(<[u8]>::trim_ascii) {
        Some(b"c") => MetricType::Counter,
        Some(b"g") => MetricType::Gauge,
        Some(b"ms") | Some(b"h") | Some(b"d") => MetricType::Timer,
        Some(b"s") => MetricType::Set,
        Some(b"") | None => return Err(BadLine::NoType),
        Some(_) => return Err(BadLine::UnknownType),
    };
    let mut rate = 1.0;
    let mut tags = line_tags.unwrap_or("");
    for field in fields {
        match field.first() {
            Some(b'@') => {
                rate = text(&field[1..])
                    .ok()
                    .and_then(|r| r.trim().parse::<f64>().ok())
                    .ok_or(BadLine::BadRate)?;
                if !(rate > 0.0 && rate.is_finite()) {
                    return Err(BadLine::BadRate);
                }
            }
            Some(b'#') if line_tags.is_some() => {}
            Some(b'#') => tags = text(&field[1..])?,
            // DogStatsD's container id (`c:`), timestamp (`T`), external
            // data (`e:`), cardinality (`card:`), and fields unknown to us:
            // accepted, not used.
            _ => {}
        }
    }
    let parsed = Line {
        name: name.head,
        name_tail: name.tail,
        name_tags: name.tags,
        values,
        kind,
        rate,
        tags,
    };
    // Validate every value now so a bad one refuses the whole line.
    let mut ok = true;
    parsed.for_each_value(|v| {
        if v.is_none() {
            ok = false;
        }
    });
    if ok {
        Ok(parsed)
    } else {
        Err(BadLine::BadValue)
    }
}

impl<'a> Line<'a> {
    /// Call `f` with each value (`None` for an invalid one).
    #[inline]
    pub fn for_each_value(&self, mut f: impl FnMut(Option<Value<'a>>)) {
        if !self.values.as_bytes().contains(&b':') {
            f(self.value(self.values));
            return;
        }
        for raw in self.values.split(':') {
            f(self.value(raw));
        }
    }

    #[inline]
    fn value(&self, raw: &'a str) -> Option<Value<'a>> {
        let raw = raw.trim_ascii();
        match self.kind {
            MetricType::Set => (!raw.is_empty()).then_some(Value::Member(raw)),
            MetricType::Counter => number(raw).map(Value::Number),
            MetricType::Timer => number(raw).filter(|v| *v >= 0.0).map(Value::Number),
            MetricType::Gauge => {
                let v = number(raw)?;
                if raw.starts_with(['+', '-']) {
                    Some(Value::Delta(v))
                } else {
                    Some(Value::Number(v))
                }
            }
        }
    }

    /// Call `f` with each tag as `(key, value)`; a tag without `:` has an
    /// empty value. Empty tags are skipped.
    pub fn for_each_tag(&self, mut f: impl FnMut(&'a str, &'a str)) {
        for t in self.tags.split(',') {
            let t = t.trim();
            if t.is_empty() {
                continue;
            }
            match t.split_once(':') {
                Some((k, v)) => f(k, v),
                None => f(t, ""),
            }
        }
    }
}

#[inline]
fn number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    // Fast path: a plain unsigned integer of up to 15 digits (exact in f64).
    if !b.is_empty() && b.len() <= 15 && b.iter().all(u8::is_ascii_digit) {
        return Some(b.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')) as f64);
    }
    if s.is_empty() {
        return None;
    }
    // Rust accepts "inf"/"nan"; statsd values must be finite numbers.
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// [`super::name::is_kept_byte`] as a table, for the parser's scan.
const KEPT: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = super::name::is_kept_byte(c);
        b += 1;
    }
    t
};

/// The common line, `name:value|type` with one value, no other field and a
/// name already clean (only bytes statsd keeps, so no tags in it either),
/// read in one pass: the name (which is then the series key), the type and
/// the value. `None` for any other line, which [`parse_segments`] then
/// reads; for a line both accept, they agree (a sample rate, tags, several
/// values, a set, whitespace or a carriage return all go the long way).
#[inline]
pub fn quick(line: &[u8]) -> Option<(&str, MetricType, Value<'static>)> {
    let colon = line.iter().position(|&b| !KEPT[b as usize])?;
    if colon == 0 || line[colon] != b':' {
        return None;
    }
    let rest = &line[colon + 1..];
    let pipe = find(rest, b'|')?;
    let kind = match &rest[pipe + 1..] {
        b"c" => MetricType::Counter,
        b"g" => MetricType::Gauge,
        b"ms" | b"h" | b"d" => MetricType::Timer,
        _ => return None,
    };
    let raw = std::str::from_utf8(&rest[..pipe]).ok()?;
    let v = number(raw)?;
    let value = match kind {
        MetricType::Gauge if raw.starts_with(['+', '-']) => Value::Delta(v),
        MetricType::Timer if v < 0.0 => return None,
        _ => Value::Number(v),
    };
    // SAFETY: every byte of the name is an ASCII byte of `KEPT`.
    let name = unsafe { std::str::from_utf8_unchecked(&line[..colon]) };
    Some((name, kind, value))
}

/// A DogStatsD line that is not a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// An event, `_e{title_len,text_len}:title|text|...`.
    Event,
    /// A service check, `_sc|name|status|...`.
    ServiceCheck,
}

/// Whether `line` is a DogStatsD event or service check (counted and
/// dropped by the collector, never a bad line).
#[inline]
pub fn special(line: &[u8]) -> Option<Special> {
    if line.starts_with(b"_e{") {
        Some(Special::Event)
    } else if line.starts_with(b"_sc|") {
        Some(Special::ServiceCheck)
    } else {
        None
    }
}

/// Split a datagram into lines (by `\n`), skipping empty ones.
pub fn lines(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    datagram
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && *l != b"\r")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(l: &Line<'_>) -> Vec<Value<'static>> {
        let mut out = Vec::new();
        l.for_each_value(|v| {
            out.push(match v.unwrap() {
                Value::Member(_) => Value::Member("m"),
                Value::Number(n) => Value::Number(n),
                Value::Delta(n) => Value::Delta(n),
            })
        });
        out
    }

    #[test]
    fn quick_path_agrees_with_the_full_parser() {
        for l in [
            "a.b:1|c",
            "a:-3|g",
            "a:+3|g",
            "a:4|g",
            "t:5.5|ms",
            "h:2|h",
            "d:7|d",
            "a;b=c:1|c",
            "x-y_z:12345678901234567|c",
            "a:1e3|c",
        ] {
            let (name, kind, v) = quick(l.as_bytes()).unwrap_or_else(|| panic!("{l}"));
            let full = parse_line(l.as_bytes()).unwrap();
            let want = (full.name, full.kind, vals(&full));
            assert_eq!((name, kind, vec![v]), want, "{l}");
        }
        // Everything else goes the long way.
        for l in [
            "a:1|c|@0.5",
            "a:1|c|#t:v",
            "a:1:2|c",
            "a b:1|c",
            "a:1|c\r",
            "a: 1|c",
            "s:x|s",
            ":1|c",
            "a:-1|ms",
            "a:x|c",
            "a,k=v:1|c",
            "a#k=v:1|c",
            "a[k=v]:1|c",
            "na\u{ef}ve:1|c",
            "a:1|c:2|ms",
            "a:1|x",
            "a:1",
            "a:inf|c",
        ] {
            assert!(quick(l.as_bytes()).is_none(), "{l:?}");
        }
    }

    #[test]
    fn counters_with_rate_and_tags() {
        let l = parse_line(b"gorets:1|c|@0.1|#env:prod,canary").unwrap();
        assert_eq!(l.name, "gorets");
        assert_eq!(l.kind, MetricType::Counter);
        assert_eq!(l.rate, 0.1);
        let mut tags = Vec::new();
        l.for_each_tag(|k, v| tags.push((k, v)));
        assert_eq!(tags, vec![("env", "prod"), ("canary", "")]);
    }

    #[test]
    fn sample_rate_above_one_is_accepted_as_statsd_does() {
        // statsd's helpers.js takes any `@<number>` not starting with '-',
        // and divides by it: `@2` counts a value as half.
        let l = parse_line(b"a:4|c|@2").unwrap();
        assert_eq!(l.rate, 2.0);
        assert_eq!(parse_line(b"a:1|ms|@10").unwrap().rate, 10.0);
    }

    #[test]
    fn gauges_deltas_and_sets() {
        let l = parse_line(b"gaugor:-10|g").unwrap();
        assert_eq!(vals(&l), vec![Value::Delta(-10.0)]);
        let l = parse_line(b"gaugor:+4|g").unwrap();
        assert_eq!(vals(&l), vec![Value::Delta(4.0)]);
        let l = parse_line(b"gaugor:333|g").unwrap();
        assert_eq!(vals(&l), vec![Value::Number(333.0)]);
        let l = parse_line(b"uniques:765|s").unwrap();
        assert_eq!(l.kind, MetricType::Set);
    }

    #[test]
    fn multi_value_and_timer_aliases() {
        let l = parse_line(b"glork:1:2.5:3|ms|@0.5").unwrap();
        assert_eq!(
            vals(&l),
            vec![Value::Number(1.0), Value::Number(2.5), Value::Number(3.0)]
        );
        assert_eq!(parse_line(b"x:1|h").unwrap().kind, MetricType::Timer);
        assert_eq!(
            parse_line(b"x:1|d|#a:b|c:abc|T1656581400").unwrap().kind,
            MetricType::Timer
        );
    }

    /// A segment's type, rate, values and tags, or why it was refused.
    type Segment<'a> = Result<(MetricType, f64, String, &'a str), BadLine>;

    fn segments(line: &[u8]) -> Vec<Segment<'_>> {
        let mut out = Vec::new();
        parse_segments(line, |r| {
            out.push(r.map(|l| (l.kind, l.rate, l.values.to_string(), l.tags)))
        });
        out
    }

    #[test]
    fn several_segments_on_one_line() {
        use MetricType::*;
        // statsd's `name:value|type[|@rate]:value|type...`; tags for all.
        assert_eq!(
            segments(b"a:1|c:2.5|ms|@0.1:+3|g|#env:prod"),
            vec![
                Ok((Counter, 1.0, "1".into(), "env:prod")),
                Ok((Timer, 0.1, "2.5".into(), "env:prod")),
                Ok((Gauge, 1.0, "+3".into(), "env:prod")),
            ]
        );
        // One bad segment leaves the others; an empty last one is bad, as
        // in statsd.
        assert_eq!(
            segments(b"a:x|c:2|c:"),
            vec![
                Err(BadLine::BadValue),
                Ok((Counter, 1.0, "2".into(), "")),
                Err(BadLine::NoType),
            ]
        );
        // DogStatsD's forms keep their colons: several values of one type,
        // tags with values, the container field.
        assert_eq!(
            segments(b"d:1:2|ms|#k:v|c:abc|T1"),
            vec![Ok((Timer, 1.0, "1:2".into(), "k:v"))]
        );
        assert_eq!(segments(b"nocolon"), vec![Err(BadLine::NoName)]);
        // A one-segment line gives what parse_line gives.
        for l in [&b"g:1|c|@0.5|#t"[..], b"g:1|x", b"g:1|c|zz:1", b"g:-1|ms"] {
            let mut got = Vec::new();
            parse_segments(l, |r| got.push(r));
            assert_eq!(got, vec![parse_line(l)]);
        }
    }

    #[test]
    fn bad_lines() {
        assert_eq!(parse_line(b"nocolon"), Err(BadLine::NoName));
        assert_eq!(parse_line(b":1|c"), Err(BadLine::NoName));
        assert_eq!(parse_line(b"!@\xc3\xa9:1|c"), Err(BadLine::EmptyName));
        assert_eq!(parse_line(b" :1|c").unwrap().name, " ");
        assert_eq!(parse_line(b"a:1"), Err(BadLine::NoType));
        assert_eq!(parse_line(b"a:1|"), Err(BadLine::NoType));
        assert_eq!(parse_line(b"a:1|x"), Err(BadLine::UnknownType));
        assert_eq!(parse_line(b"a:abc|c"), Err(BadLine::BadValue));
        assert_eq!(parse_line(b"a:|c"), Err(BadLine::BadValue));
        assert_eq!(parse_line(b"a:-1|ms"), Err(BadLine::BadValue));
        assert_eq!(parse_line(b"a:inf|g"), Err(BadLine::BadValue));
        assert_eq!(parse_line(b"a:1|c|@x"), Err(BadLine::BadRate));
        assert_eq!(parse_line(b"a:1|c|@0"), Err(BadLine::BadRate));
        assert_eq!(parse_line(b"a:1|c|@-0.5"), Err(BadLine::BadRate));
        assert_eq!(parse_line(b"a:1|c|@inf"), Err(BadLine::BadRate));
        // Unknown fields after the type are ignored, as DogStatsD's are.
        for l in [&b"a:1|c|zz"[..], b"a:1|c|e:x|card:low|T1|c:id", b"a:1|c||9"] {
            assert_eq!(parse_line(l).map(|l| l.values), Ok("1"), "{l:?}");
        }
        assert_eq!(parse_line(b"a:1:x|ms"), Err(BadLine::BadValue));
        assert_eq!(parse_line(b"a\xff:1|c"), Err(BadLine::NotUtf8));
    }

    #[test]
    fn splits_lines_skipping_empty_ones() {
        let d = b"a:1|c\n\nb:2|c\r\n";
        let got: Vec<_> = lines(d).collect();
        assert_eq!(got, vec![&b"a:1|c"[..], &b"b:2|c\r"[..]]);
        assert_eq!(parse_line(got[1]).unwrap().name, "b");
    }
}
