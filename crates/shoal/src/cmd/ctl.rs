//! `shoal ctl`: not built yet (placeholder until its part lands).

use clap::Args;

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Arguments (placeholder).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(_args: CtlArgs) -> anyhow::Result<()> {
    anyhow::bail!("`shoal ctl` is not built yet")
}
