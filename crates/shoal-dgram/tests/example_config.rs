//! The annotated example config and mapping file parse and validate.

use std::path::PathBuf;

#[test]
fn examples_stats_toml_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/stats.toml");
    let (file, text) =
        shoal_dgram::statsd::FileConfig::load(&path).expect("parse examples/stats.toml");
    let c = file
        .into_config(&path, &text)
        .expect("validate examples/stats.toml");
    assert_eq!(c.udp, vec!["127.0.0.1:8125".parse().unwrap()]);
    assert_eq!(c.flush, std::time::Duration::from_secs(10));
    assert_eq!(c.rules.percentiles, vec![90.0, 95.0, 99.0]);
    assert!(c.sockets >= 1);
}

#[test]
fn examples_stats_mapping_yml_maps_as_its_comments_say() {
    use shoal_dgram::statsd::mapping::{Mapper, Observer, StatType};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/stats-mapping.yml");
    let m = Mapper::load(&path).expect("examples/stats-mapping.yml");
    let r = m
        .map(StatType::Counter, "api.web1.requests.200")
        .expect("mapped");
    assert_eq!(r.name, "api_requests_total");
    assert_eq!(
        r.labels,
        vec![
            ("host".into(), "web1".into()),
            ("code".into(), "200".into())
        ]
    );
    let t = m
        .map(StatType::Observer, "api.web1.latency")
        .expect("mapped");
    assert!(matches!(t.observer, Observer::Histogram { .. }));
    assert!(m.map(StatType::Counter, "api.web1.latency").is_none());
    let j = m.map(StatType::Counter, "jobs.mailer.ok").expect("mapped");
    assert_eq!(
        (j.name.as_str(), j.ttl.map(|d| d.as_secs())),
        ("mailer_jobs_total", Some(600))
    );
    assert!(m.map(StatType::Gauge, "debug.x").expect("mapped").drop);
}
