//! The `shoal` binary: parse the command line, install logging, run one
//! subcommand. Each subcommand lives in its own thin module under `cmd/` and
//! calls into its library crate.

mod cli;
mod cmd;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    cli::init_logging(&cli.global);
    if let Err(e) = cli::dispatch(cli) {
        // `{:#}` prints the whole context chain on one line.
        eprintln!("shoal: error: {e:#}");
        std::process::exit(1);
    }
}
