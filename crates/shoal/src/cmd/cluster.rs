//! `shoal cluster`: not built yet (placeholder until its part lands).

use clap::Args;

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Arguments (placeholder).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(_args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::bail!("`shoal cluster` is not built yet")
}
