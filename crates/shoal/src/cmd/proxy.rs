//! `shoal proxy`: not built yet (placeholder until its part lands).

use clap::Args;

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Arguments (placeholder).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(_args: ProxyArgs) -> anyhow::Result<()> {
    anyhow::bail!("`shoal proxy` is not built yet")
}
