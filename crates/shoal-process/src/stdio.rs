//! What each of a child's descriptors is connected to: Node's `stdio` option
//! (`pipe`, `ipc`, `ignore`, `inherit`, a given descriptor) and its shortcuts.

use std::os::fd::OwnedFd;

/// One entry of the `stdio` array: what the child's descriptor N is.
#[derive(Debug, Default)]
pub enum Stdio {
    /// A pipe to the parent: `child.stdin/stdout/stderr` for 0–2, a Unix
    /// socket in [`crate::Child::extra`] for higher descriptors. The default
    /// for 0–2.
    #[default]
    Pipe,
    /// The IPC channel (at most one per child).
    Ipc,
    /// `/dev/null` for 0–2; for higher descriptors, nothing is opened.
    Ignore,
    /// The parent's own descriptor with the same number.
    Inherit,
    /// A descriptor the caller provides (a file, a socket, one end of a pipe).
    Fd(OwnedFd),
}

impl Stdio {
    /// `["pipe", "pipe", "pipe"]`.
    pub fn pipe() -> Vec<Stdio> {
        vec![Stdio::Pipe, Stdio::Pipe, Stdio::Pipe]
    }
    /// `["ignore", "ignore", "ignore"]`.
    pub fn ignore() -> Vec<Stdio> {
        vec![Stdio::Ignore, Stdio::Ignore, Stdio::Ignore]
    }
    /// `["inherit", "inherit", "inherit"]` (Node's `[0, 1, 2]`).
    pub fn inherit() -> Vec<Stdio> {
        vec![Stdio::Inherit, Stdio::Inherit, Stdio::Inherit]
    }
    /// Parse Node's shortcut strings: `pipe`, `ignore`, `inherit`.
    pub fn shortcut(s: &str) -> Option<Vec<Stdio>> {
        match s {
            "pipe" => Some(Self::pipe()),
            "ignore" => Some(Self::ignore()),
            "inherit" => Some(Self::inherit()),
            _ => None,
        }
    }
}

impl Stdio {
    /// A descriptor the caller provides: a `File`, a socket, a pipe end.
    pub fn fd(fd: impl Into<OwnedFd>) -> Stdio {
        Stdio::Fd(fd.into())
    }
}
