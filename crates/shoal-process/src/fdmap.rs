//! Placing descriptors at fixed numbers in a child between fork and exec,
//! without allocating and without clobbering a source that sits at another
//! entry's target number.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Descriptors to install in the child, by target number.
#[derive(Debug, Default)]
pub struct FdPlan {
    entries: Vec<(RawFd, Source)>,
}

#[derive(Debug)]
enum Source {
    Owned(OwnedFd),
    Inherit,
}

/// A plan reduced to raw numbers, ready to run in the forked child.
#[derive(Debug)]
pub struct Prepared {
    pairs: Vec<(RawFd, RawFd)>,
    scratch: Vec<RawFd>,
    floor: RawFd,
}

impl FdPlan {
    /// Put `fd` at descriptor `target` in the child.
    pub fn place(&mut self, target: RawFd, fd: OwnedFd) {
        self.entries.retain(|(t, _)| *t != target);
        self.entries.push((target, Source::Owned(fd)));
    }

    /// Keep our own descriptor `target` open at the same number in the child.
    pub fn inherit(&mut self, target: RawFd) {
        self.entries.retain(|(t, _)| *t != target);
        self.entries.push((target, Source::Inherit));
    }

    /// The raw moves; `self` must stay alive (it owns the sources) until the
    /// child has been spawned.
    pub fn prepare(&self) -> Prepared {
        let pairs: Vec<(RawFd, RawFd)> = self
            .entries
            .iter()
            .map(|(t, s)| match s {
                Source::Owned(fd) => (fd.as_raw_fd(), *t),
                Source::Inherit => (*t, *t),
            })
            .collect();
        let floor = pairs.iter().map(|(_, t)| *t).max().unwrap_or(2) + 1;
        Prepared {
            scratch: vec![-1; pairs.len()],
            pairs,
            floor,
        }
    }
}

impl Prepared {
    /// Run in the child after fork: first copy every source above all
    /// targets, then `dup2` each copy onto its target (which clears
    /// close-on-exec there). Only async-signal-safe calls; no allocation.
    pub fn apply(&mut self) -> io::Result<()> {
        for (i, (src, _)) in self.pairs.iter().enumerate() {
            // SAFETY: fcntl on a descriptor number; fails cleanly if not open.
            let d = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, self.floor) };
            if d < 0 {
                return Err(io::Error::last_os_error());
            }
            self.scratch[i] = d;
        }
        for (i, (_, target)) in self.pairs.iter().enumerate() {
            // SAFETY: dup2 between descriptor numbers we just created.
            if unsafe { libc::dup2(self.scratch[i], *target) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
