//! The `shoal` binary: parse the command line, install logging, run one
//! subcommand. Each subcommand lives in its own thin module under `cmd/` and
//! calls into its library crate.

mod cli;
mod cmd;

// Linked for its `memcmp` and `bcmp`, which replace glibc's in this binary.
use shoal_memcmp as _;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the proxy allocates and frees a
/// connection's buffers for every short-lived connection, and glibc's
/// consolidation of those chunks showed up as about a tenth of the proxy's
/// CPU with one request per connection (docs/BENCHMARKS.md). Built with
/// `no_thp`: with transparent huge pages on ("always" here), mimalloc's
/// eagerly committed arena doubled the resident size of an idle process
/// (the cluster primary went from 8.6 to 15.5 MiB).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Give memory the calling thread's mimalloc heap holds free back to the
/// system. mimalloc returns freed pages only on later allocator activity of
/// the same thread, so after a burst of requests an idle proxy worker would
/// keep its peak; the proxy's workers call this four times a second. Three
/// calls in four only collect (5-25 µs when there is little to give back);
/// every fourth forces freed pages back at once (up to about 1 ms with
/// thousands of connections open), so that memory a burst left behind is
/// back with the system within a second or two rather than lingering.
fn release_free_memory() {
    thread_local! {
        static CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    let n = CALLS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    });
    // SAFETY: `mi_collect` takes no pointers; it walks the calling thread's
    // own heap.
    unsafe { libmimalloc_sys::mi_collect(n.is_multiple_of(4)) }
}

fn main() {
    shoal_proxy::workers::set_housekeeping(release_free_memory);
    let cli = cli::Cli::parse();
    let output = cli::init_logging(&cli.global);
    if let Err(e) = cli::dispatch(cli) {
        shoal_core::output::stderr(format!("shoal: error: {}\n", error_line(&e)).as_bytes());
        drop(output);
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: several of the
/// libraries' errors already name their cause in their own message.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
