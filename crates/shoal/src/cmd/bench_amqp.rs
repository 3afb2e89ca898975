//! `shoal bench amqp`: AMQP load generator with PerfTest's flags, for
//! comparing `shoal broker` with RabbitMQ (see bench/broker.sh).

use clap::Args;

/// Publish and consume through an AMQP broker and report rates and latency.
#[derive(Args, Debug)]
#[command(
    after_help = "It names the broker (address, product, version) before it loads it; -H is required.\n\nExamples:\n  \
shoal bench amqp -H 127.0.0.1:5672 -x 1 -y 1 -s 16 -a -z 10                       # transient, autoack\n  \
shoal bench amqp -H 127.0.0.1:5672 -x 1 -y 1 -s 16 -p -c 100 -P 100 -z 10         # persistent, confirms, manual acks\n  \
shoal bench amqp -H 127.0.0.1:5672 -x 4 -y 4 --queues 4 -a -z 10 --json                 # 4 queues, JSON summary\n  \
shoal bench amqp -H 127.0.0.1:5672 -x 1 -y 0 -s 100 -C 1000000 -c 1000 --keep-queues  # fill a queue"
)]
pub struct BenchAmqpArgs {
    #[command(flatten)]
    pub perf: shoal_broker::perf::PerfArgs,
}

pub fn run(args: BenchAmqpArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(shoal_broker::perf::run_and_print(args.perf))?;
    Ok(())
}
