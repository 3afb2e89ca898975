//! A small writer for the Prometheus text exposition format (version 0.0.4).
//!
//! Servers keep their own counters (atomics, per-shard maps) and render them on
//! each scrape through [`TextWriter`], which emits `# HELP` / `# TYPE` once per
//! family, escapes label values and sanitises names.

use std::fmt::Write;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Builds one exposition document.
#[derive(Default)]
pub struct TextWriter {
    out: String,
    last_family: String,
}

/// The kind of a metric family.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        }
    }
}

impl TextWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start a family; repeated calls with the same name are ignored so that
    /// samples of one family can be written in several places.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let name = sanitize_name(name);
        if self.last_family != name {
            let help = help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(self.out, "# HELP {name} {help}");
            let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
            self.last_family = name;
        }
        self
    }

    /// One sample line: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(&sanitize_name(name));
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(&sanitize_label_name(k));
                self.out.push_str("=\"");
                escape_label_value(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
        self
    }

    /// The finished document.
    pub fn finish(self) -> String {
        self.out
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Make `name` a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`; anything else
/// becomes `_`.
pub fn sanitize_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Make `name` a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn sanitize_label_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_and_escapes() {
        let mut w = TextWriter::new();
        w.family("req.total", Kind::Counter, "Requests")
            .sample("req.total", &[("up", "a\"b"), ("1x", "v")], 3.0)
            .family("req.total", Kind::Counter, "Requests")
            .sample("req.total", &[], 0.5);
        assert_eq!(
            w.finish(),
            "# HELP req_total Requests\n# TYPE req_total counter\nreq_total{up=\"a\\\"b\",_1x=\"v\"} 3\nreq_total 0.5\n"
        );
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitize_name("9api.requests-ok"), "_9api_requests_ok");
        assert_eq!(sanitize_label_name("host:name"), "host_name");
    }
}
