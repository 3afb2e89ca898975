//! The chapter's socket distribution: a Rust parent accepts on a TCP port and
//! hands each socket to a random Node child running the chapter's unchanged
//! `child.js`, which answers "child N was your server today."
//!
//! ```sh
//! cargo run -p shoal-process --example socket_distribution -- 127.0.0.1:8080
//! nc 127.0.0.1 8080
//! ```

use shoal_process::{fork, ForkOptions, Handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let child_js = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/process/child.js"
    );
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut children = Vec::new();
    for idx in 0..n {
        children.push(fork(child_js, [idx.to_string()], ForkOptions::default())?);
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        let pick = rand::random_range(0..children.len());
        if let Err(e) = children[pick]
            .send(&(), Some(Handle::try_from(socket)?))
            .await
        {
            eprintln!("child {pick}: {e}");
        }
    }
}
