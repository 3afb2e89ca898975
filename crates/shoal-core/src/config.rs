//! Loading TOML configuration with errors a person can act on.
//!
//! Every service parses its file into a `FileConfig` (serde, with
//! `deny_unknown_fields`) through [`load_toml`] / [`parse_toml`], then
//! validates it into its own `Config`. Errors carry the file name, the 1-based
//! line and column, and the dotted key path, e.g.
//! `examples/proxy.toml:12:9: upstreams.web.servers[1].weight: invalid type: string "x", expected u32`.

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration error located in a file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read (or `<string>` for in-memory text).
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Dotted key path (`upstreams.web.servers[0].weight`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl ConfigError {
    /// An error about a key that parsed but failed validation. `text` is the
    /// file's contents, used to find the line where `key`'s last segment is set.
    pub fn invalid(file: &Path, text: &str, key: &str, message: impl Into<String>) -> Self {
        let line = spanned_key_line(text, key).or_else(|| find_key_line(text, key));
        ConfigError {
            file: file.to_path_buf(),
            line,
            column: None,
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

/// Read a config file's text; an error names the file.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        key: None,
        message: format!("cannot read: {e}"),
    })
}

/// Read `path` and parse it as `T`.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<(T, String), ConfigError> {
    let text = read_text(path)?;
    let value = parse_toml(path, &text)?;
    Ok((value, text))
}

/// Parse `text` (read from `file`) as `T`, locating any error.
pub fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| from_toml_error(file, text, &e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." || path.is_empty() {
            None
        } else {
            Some(path)
        };
        from_toml_error(file, text, e.inner(), key)
    })
}

fn from_toml_error(
    file: &Path,
    text: &str,
    e: &toml::de::Error,
    key: Option<String>,
) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = line_col(text, span.start);
            (Some(l), Some(c))
        }
        None => (key.as_deref().and_then(|k| find_key_line(text, k)), None),
    };
    ConfigError {
        file: file.to_path_buf(),
        line,
        column,
        key,
        message: e.message().trim().to_string(),
    }
}

/// 1-based line and column of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    (line, col)
}

/// Best-effort line of the last segment of a dotted key (`a.b[2].c` → `c = `).
/// The line where `key` (a dotted path with `[n]` indices, as in
/// `routes[2].upstream` or `upstreams.web.servers[1].weight`) is set, found
/// by walking the parsed document with its spans: the entry of an array of
/// tables, or a key inside an inline table, is found where it is, not at
/// the first line that sets a key of that name.
fn spanned_key_line(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut here: &DeValue<'_> = &DeValue::Table(DeTable::new());
    let mut table: &DeTable<'_> = doc.get_ref();
    let mut span = None;
    for (n, segment) in key.split('.').enumerate() {
        if n > 0 {
            let DeValue::Table(t) = here else { break };
            table = t;
        }
        let mut parts = segment.split('[');
        let name = parts.next()?.trim_matches('"');
        let (k, v) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        span = Some(k.span());
        let mut value = v;
        for index in parts {
            let i: usize = index.trim_end_matches(']').parse().ok()?;
            let DeValue::Array(items) = value.get_ref() else {
                break;
            };
            value = items.get(i)?;
            span = Some(value.span());
        }
        here = value.get_ref();
    }
    let start = span?.start;
    Some(text.get(..start)?.matches('\n').count() + 1)
}

fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let last = key.rsplit('.').next()?.split('[').next()?.trim_matches('"');
    if last.is_empty() {
        return None;
    }
    text.lines().enumerate().find_map(|(i, l)| {
        let l = l.trim_start();
        let rest = l.strip_prefix(last)?;
        rest.trim_start().starts_with('=').then_some(i + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Server {
        address: String,
        #[serde(default)]
        weight: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        servers: Vec<Server>,
    }

    #[test]
    fn type_error_names_line_and_key() {
        let text =
            "[[servers]]\naddress = \"a\"\n\n[[servers]]\naddress = \"b\"\nweight = \"heavy\"\n";
        let e = parse_toml::<File>(Path::new("x.toml"), text).unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert_eq!(e.key.as_deref(), Some("servers[1].weight"), "{e}");
        assert!(e.to_string().starts_with("x.toml:6:"), "{e}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let text = "[[servers]]\naddress = \"a\"\nwieght = 3\n";
        let e = parse_toml::<File>(Path::new("y.toml"), text).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("wieght"), "{e}");
    }

    #[test]
    fn a_bad_entry_of_an_array_of_tables_is_named_at_its_own_line() {
        let text = "[[routes]]\nupstream = \"a\"\n\n[[routes]]\nhost = \"x\"\nupstream = \"b\"\n\n[up]\nservers = [ { address = \"1\" }, { address = \"2\",\n  weight = 0 } ]\n";
        let e = ConfigError::invalid(Path::new("p.toml"), text, "routes[1].upstream", "unknown");
        assert_eq!(e.line, Some(6), "{e}");
        let e = ConfigError::invalid(Path::new("p.toml"), text, "up.servers[1].weight", "bad");
        assert_eq!(e.line, Some(10), "{e}");
        // A path the document does not have falls back to the first line
        // that sets a key of that name.
        let e = ConfigError::invalid(Path::new("p.toml"), text, "nothing.upstream", "x");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = parse_toml::<File>(Path::new("z.toml"), "servers = [\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn validation_error_finds_the_key_line() {
        let text = "a = 1\n[x]\nweight = 0\n";
        let e = ConfigError::invalid(Path::new("v.toml"), text, "x.weight", "must be at least 1");
        assert_eq!(e.to_string(), "v.toml:3: x.weight: must be at least 1");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
