//! The chapter's parent/child messaging: the parent forks `message_child.js`,
//! sends `{text: "I love you"}` and prints the child's answer.
//!
//! ```sh
//! cargo run -p shoal-process --example messaging
//! ```

use serde_json::json;
use shoal_process::{fork, ChildEvent, ForkOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let js = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/process/message_child.js"
    );
    let mut cp = fork(js, Vec::<String>::new(), ForkOptions::default())?;
    cp.send(&json!({ "text": "I love you" }), None).await?;
    while let Some(ev) = cp.next_event().await {
        match ev {
            ChildEvent::Message(m, _) => {
                println!(
                    "Parent got message: {}",
                    m["text"].as_str().unwrap_or_default()
                );
                cp.disconnect().await?;
            }
            ChildEvent::Exit(status) => println!("child ended: {status}"),
            _ => {}
        }
    }
    Ok(())
}
