//! The chapter's three `amqp` (npm 0.2.7) examples against `shoal broker`,
//! with only host and port changed: the basic `#` consumer, the topic example
//! with three queues (each queue receives exactly the chapter's lines; its
//! code is examples/broker/topic.js), and
//! the direct and fanout variants.

mod broker_support;
use broker_support::*;

fn lines_sorted(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn chapter_basic_consumer_gets_hello() {
    let out = client_on_fresh_broker("ch-basic", &[], node, "chapter_basic.js");
    assert_eq!(out.trim(), "Hello!");
}

#[test]
fn chapter_topic_three_queues_get_exactly_the_listed_messages() {
    let dir = TempDir::new("ch-topic");
    let b = Broker::start(dir.path());
    // The chapter's code lives once, in examples/broker/topic.js.
    let mut cmd = std::process::Command::new("node");
    cmd.arg("-r")
        .arg(fixture("chapter_harness.js"))
        .arg(workspace().join("examples/broker/topic.js"))
        .arg(b.port.to_string())
        .env("EXPECT_LINES", "8")
        .env("NODE_PATH", workspace().join("tests/node/node_modules"));
    let out = check(
        &run_with_timeout(cmd, TIMEOUT),
        "examples/broker/topic.js",
        &b,
    );
    let expected = [
        "# -> Poodle!",
        "animals.*.shorthaired -> Shorthaired Cat!",
        "*.cats.* -> Shorthaired Cat!",
        "# -> Dachshund!",
        "# -> Shorthaired Cat!",
        "animals.*.shorthaired -> Shorthaired Dog!",
        "# -> Shorthaired Dog!",
        "# -> Misc!",
    ];
    let mut exp: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    exp.sort();
    assert_eq!(lines_sorted(&out), exp, "full output:\n{out}");
    // Per queue, order is publish order.
    let q2: Vec<&str> = out.lines().filter(|l| l.starts_with("# -> ")).collect();
    assert_eq!(
        q2,
        [
            "# -> Poodle!",
            "# -> Dachshund!",
            "# -> Shorthaired Cat!",
            "# -> Shorthaired Dog!",
            "# -> Misc!"
        ]
    );
}

#[test]
fn chapter_direct_and_fanout_variants() {
    let out = client_on_fresh_broker("ch-direct", &[], node, "chapter_direct_fanout.js");
    let mut exp: Vec<String> = [
        "direct room-1 -> to room 1",
        "fanout a -> broadcast A",
        "fanout a -> broadcast B",
        "fanout b -> broadcast A",
        "fanout b -> broadcast B",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    exp.sort();
    assert_eq!(lines_sorted(&out), exp, "full output:\n{out}");
}
