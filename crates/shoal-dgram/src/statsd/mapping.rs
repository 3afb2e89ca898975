//! statsd_exporter-compatible mapping files (`--mapping-config FILE`): the
//! YAML file's shape, its validation (errors name the file and line), and
//! the [`Mapper`] that turns a statsd name and type into a Prometheus name,
//! labels, help text, observer (histogram or summary) and time to live.
//!
//! Semantics follow prometheus/statsd_exporter's mapper: a glob `*` matches
//! within one dot-separated component; `$1` / `${1}` (and, for regexes,
//! `${name}`) in `name` and label values are replaced by the captures; glob
//! mappings are tried before regex ones and, within each kind, the first in
//! file order wins (`defaults.glob_disable_ordering: true`: the glob with
//! the most literal components, leftmost first, wins instead); a regex is
//! not anchored, as in Go. `match_metric_type` restricts a mapping to
//! `counter`, `gauge` or `observer` (`timer`, as older files say). A set is
//! matched as a gauge (it is exposed as one). `action: drop` takes the
//! series out of `/metrics` only (Graphite and JSON keep statsd's output).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use regex::Regex;
use serde::Deserialize;

use shoal_core::metrics::{sanitize_label_name, sanitize_name};

/// The Prometheus client's default histogram buckets (seconds), which
/// statsd_exporter uses when a mapping names none.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// statsd_exporter's default summary quantiles.
pub const DEFAULT_QUANTILES: &[f64] = &[0.5, 0.9, 0.99];
/// The default summary window (the Prometheus Go client's `DefMaxAge`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// Mapping results remembered per loaded file; past it the memo restarts.
pub const MAX_CACHED: usize = 100_000;

/// The statsd type a name is mapped for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatType {
    Counter,
    Gauge,
    /// Timers, histograms (`h`) and distributions (`d`).
    Observer,
}

/// How a mapped timer is exposed. Values are in seconds (statsd's
/// milliseconds divided by 1000), as statsd_exporter exposes them.
#[derive(Clone, Debug, PartialEq)]
pub enum Observer {
    /// A cumulative histogram with these upper bounds (`+Inf` added).
    Histogram { buckets: Vec<f64> },
    /// A summary: these quantiles over the values of the last `max_age`.
    Summary {
        quantiles: Vec<f64>,
        max_age: Duration,
    },
}

/// What one statsd series becomes in `/metrics`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped {
    /// `action: drop`: left out of `/metrics`.
    pub drop: bool,
    /// The Prometheus name (captures expanded, sanitised).
    pub name: String,
    /// Labels of the mapping (captures expanded); added to the tags'.
    pub labels: Vec<(String, String)>,
    /// `help`, if given.
    pub help: Option<String>,
    /// For timers: histogram or summary.
    pub observer: Observer,
    /// `ttl` (of the mapping or `defaults`); `Some(0)`: never expires.
    pub ttl: Option<Duration>,
    /// `honor_labels`: a tag wins over a mapping label of the same name.
    pub honor_labels: bool,
}

/// A mapping file that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {msg}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct MappingError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub msg: String,
}

// ---- The file, as written ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMappings {
    #[serde(default)]
    defaults: FileDefaults,
    #[serde(default)]
    mappings: Vec<FileMapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDefaults {
    #[serde(alias = "timer_type")]
    observer_type: Option<String>,
    buckets: Option<Vec<f64>>,
    quantiles: Option<Vec<FileQuantile>>,
    histogram_options: Option<FileHistogram>,
    summary_options: Option<FileSummary>,
    match_type: Option<String>,
    glob_disable_ordering: Option<bool>,
    ttl: Option<FileDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMapping {
    #[serde(rename = "match")]
    pattern: String,
    name: Option<String>,
    #[serde(default)]
    labels: Option<serde_yaml::Mapping>,
    help: Option<String>,
    match_type: Option<String>,
    match_metric_type: Option<String>,
    action: Option<String>,
    #[serde(alias = "timer_type")]
    observer_type: Option<String>,
    buckets: Option<Vec<f64>>,
    quantiles: Option<Vec<FileQuantile>>,
    histogram_options: Option<FileHistogram>,
    summary_options: Option<FileSummary>,
    ttl: Option<FileDuration>,
    honor_labels: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuantile {
    quantile: f64,
    /// Accepted for compatibility: quantiles here are exact over the window.
    #[allow(dead_code)]
    error: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHistogram {
    buckets: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSummary {
    quantiles: Option<Vec<FileQuantile>>,
    max_age: Option<FileDuration>,
    /// Accepted for compatibility (the window here is exact, see docs).
    #[allow(dead_code)]
    age_buckets: Option<u32>,
    #[allow(dead_code)]
    buf_cap: Option<u32>,
}

/// A Go duration: `"1m30s"`, `"0"`, or a bare number (nanoseconds, as Go's
/// YAML decoding of a `time.Duration` takes it).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum FileDuration {
    Nanos(u64),
    Text(String),
}

impl FileDuration {
    fn get(&self) -> Result<Duration, String> {
        match self {
            FileDuration::Nanos(n) => Ok(Duration::from_nanos(*n)),
            FileDuration::Text(t) if t.trim() == "0" => Ok(Duration::ZERO),
            FileDuration::Text(t) => super::config::parse_duration(t.trim()),
        }
    }
}

// ---- Compiled ----

/// Mapping results by type and name (`None`: no mapping matched).
type Memo = HashMap<(StatType, String), Option<Arc<Mapped>>>;

#[derive(Debug)]
struct Rule {
    /// Anchored for globs, as written for regexes.
    re: Regex,
    /// For `glob_disable_ordering`: per component, whether it is a wildcard.
    wild: Vec<bool>,
    metric_type: Option<StatType>,
    drop: bool,
    name: String,
    labels: Vec<(String, String)>,
    help: Option<String>,
    observer: Observer,
    ttl: Option<Duration>,
    honor_labels: bool,
}

/// A loaded mapping file (or none: every name unmapped).
#[derive(Debug, Default)]
pub struct Mapper {
    globs: Vec<Rule>,
    regexes: Vec<Rule>,
    glob_unordered: bool,
    /// `defaults.ttl`, for names no mapping matches.
    default_ttl: Option<Duration>,
    any_ttl: bool,
    cache: Mutex<Memo>,
    /// The file it came from.
    pub source: Option<PathBuf>,
}

impl Mapper {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Mapper, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|e| MappingError {
            file: path.to_path_buf(),
            line: None,
            msg: format!("cannot read the mapping file: {e}"),
        })?;
        Mapper::parse(path, &text)
    }

    /// Validate `text` (read from `file`, which errors name).
    pub fn parse(file: &Path, text: &str) -> Result<Mapper, MappingError> {
        let err = |line: Option<usize>, msg: String| MappingError {
            file: file.to_path_buf(),
            line,
            msg,
        };
        let f: FileMappings = if text.trim().is_empty() {
            FileMappings::default()
        } else {
            serde_yaml::from_str(text)
                .map_err(|e| err(e.location().map(|l| l.line()), e.to_string()))?
        };
        let lines = item_lines(text);
        let d = &f.defaults;
        let default_match = match d.match_type.as_deref() {
            None | Some("") | Some("glob") => false,
            Some("regex") => true,
            Some(o) => {
                return Err(err(
                    None,
                    format!("defaults.match_type: {o:?} is not glob or regex"),
                ))
            }
        };
        let default_ttl = d
            .ttl
            .as_ref()
            .map(FileDuration::get)
            .transpose()
            .map_err(|e| err(None, format!("defaults.ttl: {e}")))?;
        let mut m = Mapper {
            glob_unordered: d.glob_disable_ordering.unwrap_or(false),
            default_ttl,
            any_ttl: default_ttl.is_some(),
            source: Some(file.to_path_buf()),
            ..Mapper::default()
        };
        for (i, fm) in f.mappings.iter().enumerate() {
            let line = lines.get(i).copied();
            let rule = compile(fm, d, default_match, default_ttl).map_err(|msg| {
                err(
                    line,
                    format!("mapping {} (match {:?}): {msg}", i + 1, fm.pattern),
                )
            })?;
            m.any_ttl |= rule.ttl.is_some();
            if rule.wild.is_empty() {
                m.regexes.push(rule);
            } else {
                m.globs.push(rule);
            }
        }
        Ok(m)
    }

    /// Mappings loaded.
    pub fn len(&self) -> usize {
        self.globs.len() + self.regexes.len()
    }

    /// Whether no mapping is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any mapping (or the defaults) sets a `ttl`.
    pub fn has_ttl(&self) -> bool {
        self.any_ttl
    }

    /// The time to live for `name` of type `t`: the matching mapping's, or
    /// `defaults.ttl`; `None` when neither sets one.
    pub fn ttl(&self, t: StatType, name: &str) -> Option<Duration> {
        if !self.any_ttl {
            return None;
        }
        match self.map(t, name) {
            Some(m) => m.ttl,
            None => self.default_ttl,
        }
    }

    /// What `name` (a statsd name, already cleaned) of type `t` maps to;
    /// `None` when no mapping matches (the default translation applies).
    pub fn map(&self, t: StatType, name: &str) -> Option<Arc<Mapped>> {
        if self.is_empty() {
            return None;
        }
        let key = (t, name.to_string());
        if let Some(hit) = self.cache.lock().get(&key) {
            return hit.clone();
        }
        let out = self.find(t, name).map(Arc::new);
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, out.clone());
        out
    }

    fn find(&self, t: StatType, name: &str) -> Option<Mapped> {
        let fits = |r: &&Rule| !matches!(r.metric_type, Some(m) if m != t);
        let glob = if self.glob_unordered {
            self.globs
                .iter()
                .filter(fits)
                .filter(|r| r.re.is_match(name))
                .min_by(|a, b| a.wild.cmp(&b.wild))
        } else {
            self.globs.iter().filter(fits).find(|r| r.re.is_match(name))
        };
        let rule = glob.or_else(|| {
            self.regexes
                .iter()
                .filter(fits)
                .find(|r| r.re.is_match(name))
        })?;
        let caps = rule.re.captures(name)?;
        let expand = |template: &str| {
            let mut s = String::new();
            caps.expand(template, &mut s);
            s
        };
        Some(Mapped {
            drop: rule.drop,
            name: sanitize_name(&expand(&rule.name)),
            labels: rule
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), expand(v)))
                .collect(),
            help: rule.help.clone(),
            observer: rule.observer.clone(),
            ttl: rule.ttl,
            honor_labels: rule.honor_labels,
        })
    }
}

/// The line of each item of the top-level `mappings:` list (1-based), so
/// that an error in the n-th mapping names its line.
fn item_lines(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut indent = None;
    for (i, l) in text.lines().enumerate() {
        let body = l.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let depth = l.len() - body.len();
        if depth == 0 && !body.starts_with('-') {
            inside = body.starts_with("mappings:");
            indent = None;
            continue;
        }
        if inside && body.starts_with('-') && *indent.get_or_insert(depth) == depth {
            out.push(i + 1);
        }
    }
    out
}

fn quantiles(q: &[FileQuantile]) -> Result<Vec<f64>, String> {
    let out: Vec<f64> = q.iter().map(|q| q.quantile).collect();
    if let Some(bad) = out.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        return Err(format!("quantile {bad} is not between 0 and 1"));
    }
    Ok(out)
}

fn buckets(b: &[f64]) -> Result<Vec<f64>, String> {
    if b.is_empty() {
        return Err("buckets: needs at least one bound".into());
    }
    if b.iter().any(|x| !x.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("buckets {b:?} must be finite and increasing"));
    }
    Ok(b.to_vec())
}

fn compile(
    fm: &FileMapping,
    d: &FileDefaults,
    default_regex: bool,
    default_ttl: Option<Duration>,
) -> Result<Rule, String> {
    let regex = match fm.match_type.as_deref() {
        None | Some("") => default_regex,
        Some("glob") => false,
        Some("regex") => true,
        Some(o) => return Err(format!("match_type {o:?} is not glob or regex")),
    };
    if fm.pattern.is_empty() {
        return Err("match is empty".into());
    }
    let (re, wild) = if regex {
        let re = Regex::new(&fm.pattern).map_err(|e| format!("bad regex: {e}"))?;
        (re, Vec::new())
    } else {
        let mut r = String::from("^");
        for c in fm.pattern.chars() {
            if c == '*' {
                r.push_str("([^.]*)");
            } else {
                r.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
            }
        }
        r.push('$');
        let re = Regex::new(&r).map_err(|e| format!("bad glob: {e}"))?;
        let wild = fm.pattern.split('.').map(|c| c.contains('*')).collect();
        (re, wild)
    };
    let metric_type = match fm.match_metric_type.as_deref() {
        None | Some("") => None,
        Some("counter") => Some(StatType::Counter),
        Some("gauge") => Some(StatType::Gauge),
        Some("observer") | Some("timer") => Some(StatType::Observer),
        Some(o) => {
            return Err(format!(
                "match_metric_type {o:?} is not counter, gauge or observer"
            ))
        }
    };
    let drop = match fm.action.as_deref() {
        None | Some("") | Some("map") => false,
        Some("drop") => true,
        Some(o) => return Err(format!("action {o:?} is not map or drop")),
    };
    let name = match (&fm.name, drop) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, true) => String::new(),
        _ => return Err("a mapping needs a name".into()),
    };
    let mut labels = Vec::new();
    for (k, v) in fm.labels.iter().flatten() {
        let k = match k {
            serde_yaml::Value::String(s) => s.clone(),
            other => return Err(format!("label name {other:?} is not a string")),
        };
        if k.is_empty() || sanitize_label_name(&k) != k || k.starts_with("__") {
            return Err(format!(
                "label name {k:?} is not a valid Prometheus label name"
            ));
        }
        let v = match v {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            other => return Err(format!("label {k:?}: value {other:?} is not a string")),
        };
        labels.push((k, v));
    }
    let kind = fm
        .observer_type
        .as_deref()
        .or(d.observer_type.as_deref())
        .unwrap_or("summary");
    let observer = match kind {
        "histogram" => {
            let b = fm
                .histogram_options
                .as_ref()
                .and_then(|h| h.buckets.clone())
                .or_else(|| fm.buckets.clone())
                .or_else(|| d.histogram_options.as_ref().and_then(|h| h.buckets.clone()))
                .or_else(|| d.buckets.clone())
                .unwrap_or_else(|| DEFAULT_BUCKETS.to_vec());
            Observer::Histogram {
                buckets: buckets(&b)?,
            }
        }
        "summary" | "" | "default" => {
            let q = fm
                .summary_options
                .as_ref()
                .and_then(|s| s.quantiles.clone())
                .or_else(|| fm.quantiles.clone())
                .or_else(|| d.summary_options.as_ref().and_then(|s| s.quantiles.clone()))
                .or_else(|| d.quantiles.clone());
            let q = match q {
                Some(q) => quantiles(&q)?,
                None => DEFAULT_QUANTILES.to_vec(),
            };
            let age = fm
                .summary_options
                .as_ref()
                .and_then(|s| s.max_age.clone())
                .or_else(|| d.summary_options.as_ref().and_then(|s| s.max_age.clone()));
            let max_age = match age {
                Some(a) => a.get().map_err(|e| format!("max_age: {e}"))?,
                None => DEFAULT_MAX_AGE,
            };
            if max_age.is_zero() {
                return Err("max_age must be longer than 0".into());
            }
            Observer::Summary {
                quantiles: q,
                max_age,
            }
        }
        o => return Err(format!("observer_type {o:?} is not histogram or summary")),
    };
    let ttl = match &fm.ttl {
        Some(t) => Some(t.get().map_err(|e| format!("ttl: {e}"))?),
        None => default_ttl,
    };
    Ok(Rule {
        re,
        wild,
        metric_type,
        drop,
        name,
        labels,
        help: fm.help.clone(),
        observer,
        ttl,
        honor_labels: fm.honor_labels.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(text: &str) -> Mapper {
        Mapper::parse(Path::new("m.yml"), text).unwrap()
    }

    fn err(text: &str) -> String {
        Mapper::parse(Path::new("m.yml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn readme_globs_and_regexes() {
        let m = mapper(
            "mappings:\n\
             - match: test.dispatcher.*.*.*\n  name: \"dispatcher_events_total\"\n  labels:\n    processor: \"$1\"\n    action: \"$2\"\n    outcome: \"$3\"\n    job: \"test_dispatcher\"\n\
             - match: \"*.signup.*.*\"\n  name: \"signup_events_total\"\n  labels:\n    provider: \"$2\"\n    outcome: \"$3\"\n    job: \"${1}_server\"\n\
             - match: test\\.(\\w+)\\.(\\w+)\\.counter\n  match_type: regex\n  name: \"${2}_total\"\n  labels:\n    provider: \"$1\"\n",
        );
        let d = m
            .map(
                StatType::Counter,
                "test.dispatcher.FooProcessor.send.success",
            )
            .unwrap();
        assert_eq!(d.name, "dispatcher_events_total");
        assert_eq!(
            d.labels,
            vec![
                ("processor".into(), "FooProcessor".into()),
                ("action".into(), "send".into()),
                ("outcome".into(), "success".into()),
                ("job".into(), "test_dispatcher".into())
            ]
        );
        let s = m
            .map(StatType::Counter, "foo_product.signup.facebook.failure")
            .unwrap();
        assert_eq!(s.labels[2], ("job".into(), "foo_product_server".into()));
        // `*` is one component: four components do not match `*.signup.*.*`.
        assert!(m.map(StatType::Counter, "a.b.signup.c.d").is_none());
        assert!(m
            .map(StatType::Counter, "test.web-server.foo.bar")
            .is_none());
        let r = m.map(StatType::Gauge, "test.x.y.counter").unwrap();
        assert_eq!((r.name.as_str(), r.labels[0].1.as_str()), ("y_total", "x"));
    }

    #[test]
    fn order_types_drop_and_observers() {
        let m = mapper(
            "defaults:\n  observer_type: histogram\n  buckets: [0.1, 1]\n  ttl: 0\n\
             mappings:\n\
             - match: .\n  match_type: regex\n  action: drop\n  name: dropped\n\
             - match: a.*\n  name: first\n  match_metric_type: counter\n\
             - match: a.*\n  name: second\n  ttl: 1m30s\n\
             - match: t.*\n  name: t\n  observer_type: summary\n  summary_options:\n    quantiles: [{quantile: 0.5, error: 0.05}]\n    max_age: 30s\n\
             - match: h.*\n  name: h\n  histogram_options:\n    buckets: [1, 2]\n",
        );
        assert_eq!(m.map(StatType::Counter, "a.x").unwrap().name, "first");
        let g = m.map(StatType::Gauge, "a.x").unwrap();
        assert_eq!(
            (g.name.as_str(), g.ttl),
            ("second", Some(Duration::from_secs(90)))
        );
        assert_eq!(
            m.map(StatType::Counter, "a.x").unwrap().ttl,
            Some(Duration::ZERO)
        );
        // Globs first: the regex `.` drops only what no glob took.
        assert!(m.map(StatType::Counter, "zzz").unwrap().drop);
        assert_eq!(
            m.map(StatType::Observer, "t.1").unwrap().observer,
            Observer::Summary {
                quantiles: vec![0.5],
                max_age: Duration::from_secs(30)
            }
        );
        assert_eq!(
            m.map(StatType::Observer, "h.1").unwrap().observer,
            Observer::Histogram {
                buckets: vec![1.0, 2.0]
            }
        );
        assert_eq!(
            m.map(StatType::Observer, "a.1").unwrap().observer,
            Observer::Histogram {
                buckets: vec![0.1, 1.0]
            }
        );
    }

    #[test]
    fn unordered_globs_prefer_literals() {
        let text = "defaults:\n  glob_disable_ordering: true\nmappings:\n- match: a.*.c\n  name: wild\n- match: a.b.c\n  name: exact\n";
        assert_eq!(
            mapper(text).map(StatType::Counter, "a.b.c").unwrap().name,
            "exact"
        );
        let ordered = text.replace("true", "false");
        assert_eq!(
            mapper(&ordered)
                .map(StatType::Counter, "a.b.c")
                .unwrap()
                .name,
            "wild"
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = err("mappings:\n- match: a.*\n  name: ok\n- match: b.*\n  nme: typo\n");
        assert!(e.starts_with("m.yml:5:") && e.contains("nme"), "{e}");
        let e = err(
            "mappings:\n- match: a.*\n  name: ok\n- match: \"(\"\n  match_type: regex\n  name: x\n",
        );
        assert!(
            e.starts_with("m.yml:4: mapping 2 (match \"(\"): bad regex"),
            "{e}"
        );
        let e = err("mappings:\n- match: a\n  name: x\n  labels:\n    bad-name: v\n");
        assert!(e.starts_with("m.yml:2:") && e.contains("bad-name"), "{e}");
        let e = err(
            "mappings:\n- match: a\n  name: x\n  observer_type: histogram\n  buckets: [2, 1]\n",
        );
        assert!(e.contains("increasing"), "{e}");
        let e = err("mappings:\n- match: a\n");
        assert!(e.contains("needs a name"), "{e}");
        let e = err("mappings: [\n");
        assert!(e.starts_with("m.yml:"), "{e}");
    }
}
