//! The annotated example config parses and validates.

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
