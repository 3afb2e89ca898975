//! `exec` with a shell pipeline (`ps aux | grep ...`), fully buffered, with a
//! timeout.
//!
//! ```sh
//! cargo run -p shoal-process --example exec_pipeline -- "ps aux | grep -c ."
//! ```

use std::time::Duration;

use shoal_process::{exec, ExecOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cmd = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ps aux | grep -c .".into());
    let opts = ExecOptions {
        timeout: Some(Duration::from_secs(5)),
        ..ExecOptions::default()
    };
    match exec(&cmd, opts).await {
        Ok(out) => print!("{}", out.stdout),
        Err(e) => {
            eprintln!("{e}\nstderr: {}", e.stderr);
            std::process::exit(1);
        }
    }
}
