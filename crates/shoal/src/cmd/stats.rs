//! `shoal stats`: not built yet (placeholder until its part lands).

use clap::Args;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Arguments (placeholder).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(_args: StatsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`shoal stats` is not built yet")
}
