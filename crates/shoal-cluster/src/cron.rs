//! `--restart-cron EXPR` (PM2's `cron_restart`): a rolling reload at each
//! match of a cron expression, in local time. Five fields (minute hour
//! day-of-month month day-of-week, as PM2 and crontab take them) or six
//! with seconds first; parsed by the `croner` crate.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Local};

use crate::error::ClusterError;

/// A parsed cron expression.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    text: String,
    cron: croner::Cron,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl std::fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for CronSchedule {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.split_whitespace().collect::<Vec<_>>().join(" ");
        let fields = text.split(' ').filter(|f| !f.is_empty()).count();
        let bad = |why: String| {
            ClusterError::Spec(format!(
                "--restart-cron {s:?}: {why}; expected 5 fields, minute hour day-of-month month day-of-week (e.g. \"0 3 * * *\" for 03:00 daily), or 6 with seconds first"
            ))
        };
        if !(5..=6).contains(&fields) {
            return Err(bad(format!("{fields} field(s)")));
        }
        let cron = croner::Cron::new(&text)
            .with_seconds_optional()
            .parse()
            .map_err(|e| bad(e.to_string()))?;
        let me = CronSchedule { text, cron };
        if me.next_after(Local::now()).is_none() {
            return Err(bad("it never matches".into()));
        }
        Ok(me)
    }
}

impl CronSchedule {
    /// The first match strictly after `t`.
    pub fn next_after(&self, t: DateTime<Local>) -> Option<DateTime<Local>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The next match after `after` (or after now, if later), and how long
    /// until then.
    pub(crate) fn next(
        &self,
        after: Option<DateTime<Local>>,
    ) -> Option<(DateTime<Local>, Duration)> {
        let now = Local::now();
        let from = after.filter(|a| *a > now).unwrap_or(now);
        let at = self.next_after(from)?;
        Some((at, (at - now).to_std().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn five_and_six_fields_parse() {
        let c: CronSchedule = "0 3 * * *".parse().unwrap();
        let t = Local.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let n = c.next_after(t).unwrap();
        assert_eq!(n, Local.with_ymd_and_hms(2026, 1, 2, 3, 0, 0).unwrap());
        let c: CronSchedule = "*/10 * * * * *".parse().unwrap();
        let n = c.next_after(t).unwrap();
        assert_eq!(n, Local.with_ymd_and_hms(2026, 1, 1, 12, 0, 10).unwrap());
        assert_eq!(c.to_string(), "*/10 * * * * *");
    }

    #[test]
    fn bad_expressions_are_clear_errors() {
        for (bad, says) in [
            ("", "0 field(s)"),
            ("* * *", "3 field(s)"),
            ("61 * * * *", "--restart-cron \"61 * * * *\""),
            ("0 25 * * *", "expected 5 fields"),
            ("a b c d e", "expected 5 fields"),
            ("0 0 31 2 *", "never matches"),
        ] {
            let e = bad.parse::<CronSchedule>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
