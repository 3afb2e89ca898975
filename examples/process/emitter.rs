//! The chapter's `fork('./emitter.js')` three times: the children share our
//! stdout (`-> 0 -> 0 -> 0 -> 1 ...`); pass `--silent` to pipe it away instead.
//!
//! ```sh
//! cargo run -p shoal-process --example emitter
//! ```

use std::time::Duration;

use shoal_process::{fork, ForkOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let js = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/process/emitter.js"
    );
    let silent = std::env::args().any(|a| a == "--silent");
    let mut kids = Vec::new();
    for _ in 0..3 {
        kids.push(fork(
            js,
            Vec::<String>::new(),
            ForkOptions {
                silent,
                ..ForkOptions::default()
            },
        )?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for k in &kids {
        k.kill(libc::SIGTERM)?;
        k.wait().await;
    }
    println!();
    Ok(())
}
