//! `shoal broker`: not built yet (placeholder until its part lands).

use clap::Args;

#[derive(Args, Debug)]
pub struct BrokerArgs {
    /// Arguments (placeholder).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(_args: BrokerArgs) -> anyhow::Result<()> {
    anyhow::bail!("`shoal broker` is not built yet")
}
