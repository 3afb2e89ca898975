//! The process-group guard: a tiny `/bin/sh` helper that outlives a primary
//! killed with SIGKILL just long enough to kill what its workers left behind.
//!
//! `PR_SET_PDEATHSIG` takes the workers down with the primary, but not their
//! own children. The guard reads the workers' process-group ids on a pipe
//! from the primary (`123` when a worker starts, `-123` once its group has
//! been cleaned up); when the pipe closes — the primary exited, however it
//! died — it sends SIGKILL to every group still listed, then exits. It runs in
//! its own process group, so signals aimed at the primary's group do not
//! reach it first.

use std::io::Write;

use shoal_process::{spawn, Child, SpawnOptions, Stdio};

const SCRIPT: &str = r#"set -f
pgs=" "
while IFS= read -r l; do
  case "$l" in
    -*) x=${l#-}; case "$pgs" in *" $x "*) pgs="${pgs%% $x *} ${pgs#* $x }";; esac;;
    *[!0-9]*|"") ;;
    *) pgs="$pgs$l ";;
  esac
done
for p in $pgs; do kill -s KILL -- "-$p" 2>/dev/null; done
"#;

/// The primary's end of the guard.
pub(crate) struct Guard {
    pipe: std::fs::File,
    _child: Child,
}

impl Guard {
    /// Start the guard; `None` (with a warning) if it cannot be started.
    pub(crate) fn start() -> Option<Guard> {
        let r = (|| -> std::io::Result<Guard> {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let child = spawn(
                "/bin/sh",
                ["-c", SCRIPT],
                SpawnOptions {
                    stdio: vec![Stdio::Fd(read), Stdio::Ignore, Stdio::Ignore],
                    process_group: true,
                    ..SpawnOptions::default()
                },
            )
            .map_err(std::io::Error::other)?;
            Ok(Guard {
                pipe: std::fs::File::from(write),
                _child: child,
            })
        })();
        match r {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the process-group guard; a primary killed with SIGKILL may leave workers' children behind");
                None
            }
        }
    }

    /// A worker's group now exists.
    pub(crate) fn add(&mut self, pgid: u32) {
        let _ = writeln!(self.pipe, "{pgid}");
    }

    /// A worker's group has been cleaned up; forget it (its id may be reused).
    pub(crate) fn remove(&mut self, pgid: u32) {
        let _ = writeln!(self.pipe, "-{pgid}");
    }
}
