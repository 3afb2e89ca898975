//! Durations as people write them on a command line or in a config file
//! (`10s`, `500ms`, `1m 30s`), one parser for every part of Shoal.

use std::time::Duration;

/// Parse `s` with humantime's syntax (`10s`, `500ms`, `2m`, `1h 30m`); the
/// error names the text and shows the expected form.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 10s or 500ms ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms_and_names_bad_text() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        let e = parse_duration("soon").unwrap_err();
        assert!(e.contains("\"soon\"") && e.contains("10s"), "{e}");
        assert!(parse_duration("10").is_err());
    }
}
