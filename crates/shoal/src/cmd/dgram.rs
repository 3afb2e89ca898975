//! `shoal dgram`: not built yet (placeholder until its part lands).

use clap::Args;

#[derive(Args, Debug)]
pub struct DgramArgs {
    /// Arguments (placeholder).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(_args: DgramArgs) -> anyhow::Result<()> {
    anyhow::bail!("`shoal dgram` is not built yet")
}
