//! The AMQP load generator as a standalone program (same flags as
//! `shoal bench amqp`), used by bench/broker.sh.

use clap::Parser;
use shoal_broker::perf::{run_and_print, PerfArgs};

#[derive(Parser)]
#[command(
    name = "amqp_perf",
    about = "AMQP 0-9-1 load generator (PerfTest flags)"
)]
struct Cli {
    #[command(flatten)]
    args: PerfArgs,
}

fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_and_print(cli.args)).map(|_| ())
}
