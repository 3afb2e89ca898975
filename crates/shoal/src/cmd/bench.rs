//! `shoal bench`: not built yet (placeholder until its part lands).

use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Arguments (placeholder).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("`shoal bench` is not built yet")
}
