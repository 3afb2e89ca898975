//! Property tests of the statsd line parser: any bytes are either parsed or
//! refused (never a panic), and well-formed lines built from parts parse back
//! to those parts.

use proptest::prelude::*;
use shoal_dgram::statsd::aggregate::{ingest, BadSample, Interval, KeyBuf, ShardStats};
use shoal_dgram::statsd::parse::{lines, parse_line, MetricType, Value};
use std::sync::atomic::Ordering;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_datagrams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut i = Interval::default();
        let stats = ShardStats::default();
        ingest(&data, 0, &mut i, &mut KeyBuf::default(), &stats, &BadSample::default());
        let n = lines(&data).count() as u64;
        prop_assert_eq!(
            stats.metrics.load(Ordering::Relaxed)
                + stats.bad_lines.load(Ordering::Relaxed)
                + stats.events.load(Ordering::Relaxed)
                + stats.service_checks.load(Ordering::Relaxed),
            n
        );
    }

    #[test]
    fn statsd_shaped_noise_never_panics(s in "[a-z:|@#,.+\\-0-9 ]{0,40}") {
        let _ = parse_line(s.as_bytes());
    }

    #[test]
    fn well_formed_lines_round_trip(
        name in "[a-z][a-z0-9_.]{0,20}",
        kind in prop_oneof![Just("c"), Just("g"), Just("ms"), Just("s")],
        values in proptest::collection::vec(0u32..1_000_000, 1..4),
        rate in prop_oneof![Just(None), Just(Some(0.5)), Just(Some(0.1))],
        tags in proptest::collection::vec(("[a-z]{1,5}", "[a-z0-9]{0,5}"), 0..3),
    ) {
        let vals: Vec<String> = values.iter().map(u32::to_string).collect();
        let mut line = format!("{name}:{}|{kind}", vals.join(":"));
        if let Some(r) = rate {
            line.push_str(&format!("|@{r}"));
        }
        if !tags.is_empty() {
            let t: Vec<String> = tags
                .iter()
                .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}:{v}") })
                .collect();
            line.push_str(&format!("|#{}", t.join(",")));
        }
        let l = parse_line(line.as_bytes()).map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
        prop_assert_eq!(l.name, name.as_str());
        prop_assert_eq!(l.rate, rate.unwrap_or(1.0));
        let want = match kind {
            "c" => MetricType::Counter,
            "g" => MetricType::Gauge,
            "ms" => MetricType::Timer,
            _ => MetricType::Set,
        };
        prop_assert_eq!(l.kind, want);
        let mut got = Vec::new();
        l.for_each_value(|v| got.push(v));
        prop_assert_eq!(got.len(), values.len());
        for (v, want) in got.iter().zip(&values) {
            match v {
                Some(Value::Number(n)) => prop_assert_eq!(*n, *want as f64),
                Some(Value::Member(m)) => prop_assert_eq!(*m, want.to_string()),
                other => prop_assert!(false, "{:?}", other),
            }
        }
        let mut n = 0;
        l.for_each_tag(|_, _| n += 1);
        prop_assert_eq!(n, tags.len());
    }
}
