//! The chapter's first example: `spawn("ls", ["-lh", "."])`, reading its stdout.
//!
//! ```sh
//! cargo run -p shoal-process --example ls
//! ```

use shoal_process::{spawn, ChildEvent, SpawnOptions};
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ls = spawn("ls", ["-lh", "."], SpawnOptions::default())?;
    let mut out = String::new();
    if let Some(mut so) = ls.stdout.take() {
        so.read_to_string(&mut out).await?;
    }
    print!("{out}");
    while let Some(ev) = ls.next_event().await {
        if let ChildEvent::Close(status) = ev {
            println!("child process exited with {status}");
        }
    }
    Ok(())
}
