//! `--watch PATH...` (PM2's `--watch`): a change under a watched path
//! triggers one rolling reload, after a quiet period (`--watch-delay`) so
//! that a burst of writes (a `git pull`, an editor's save) is one reload.
//! Paths matching an ignore glob (`--watch-ignore`, by default
//! `node_modules` and `.git`) and the cluster's own log directory do not
//! count. Uses the `notify` crate (inotify on Linux).

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::ClusterError;

/// What to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// Files or directories (directories recursively).
    pub paths: Vec<PathBuf>,
    /// Globs a changed path is ignored for: matched against the path
    /// relative to the watched one and against each of its components
    /// (`node_modules`, `*.log`, `dist/**`).
    pub ignore: Vec<String>,
    /// How long the files must stay quiet before the reload.
    pub delay: Duration,
}

impl WatchSpec {
    /// `paths`, ignoring `node_modules` and `.git`, with a 1 s delay.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        WatchSpec {
            paths,
            ignore: vec!["node_modules".into(), ".git".into()],
            delay: Duration::from_secs(1),
        }
    }

    /// Check the globs and that every path exists.
    pub fn validate(&self) -> Result<(), ClusterError> {
        self.globs()?;
        if self.paths.is_empty() {
            return Err(ClusterError::Spec("--watch needs at least one path".into()));
        }
        for p in &self.paths {
            if let Err(e) = std::fs::metadata(p) {
                return Err(ClusterError::Spec(format!("--watch {}: {e}", p.display())));
            }
        }
        Ok(())
    }

    fn globs(&self) -> Result<GlobSet, ClusterError> {
        let mut b = GlobSetBuilder::new();
        for g in &self.ignore {
            b.add(
                Glob::new(g)
                    .map_err(|e| ClusterError::Spec(format!("--watch-ignore {g:?}: {e}")))?,
            );
        }
        b.build()
            .map_err(|e| ClusterError::Spec(format!("--watch-ignore: {e}")))
    }
}

/// Which changed paths count.
struct Filter {
    roots: Vec<PathBuf>,
    globs: GlobSet,
    /// Directories whose changes never count (the log directory).
    skip: Vec<PathBuf>,
}

impl Filter {
    fn counts(&self, p: &Path) -> bool {
        if self.skip.iter().any(|s| p.starts_with(s)) {
            return false;
        }
        let rel = self
            .roots
            .iter()
            .find_map(|r| p.strip_prefix(r).ok())
            .unwrap_or(p);
        if self.globs.is_match(rel) {
            return false;
        }
        !rel.components()
            .any(|c| self.globs.is_match(Path::new(c.as_os_str())))
    }
}

/// Start watching; `reload(paths)` is called (on the runtime) once per
/// quiet period after changes, with up to a few of the changed paths. The
/// watch ends when the returned handle is dropped.
pub(crate) fn start(
    spec: &WatchSpec,
    skip: Vec<PathBuf>,
    reload: impl Fn(Vec<PathBuf>) + Send + 'static,
) -> Result<tokio::task::AbortHandle, ClusterError> {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let filter = Filter {
        roots: spec.paths.iter().map(|p| abs(p)).collect(),
        globs: spec.globs()?,
        skip: skip.iter().map(|p| abs(p)).collect(),
    };
    // Bounded: a storm of events costs nothing but a full channel, and
    // the task only needs to know that something changed.
    let (tx, mut rx) = mpsc::channel::<PathBuf>(64);
    let mut watcher =
        notify::recommended_watcher(move |r: notify::Result<notify::Event>| match r {
            Ok(ev) => {
                if matches!(ev.kind, EventKind::Access(_)) {
                    return;
                }
                for p in ev.paths {
                    if filter.counts(&p) {
                        let _ = tx.try_send(p);
                    }
                }
            }
            Err(e) => tracing::warn!("--watch: {e}"),
        })
        .map_err(|e| ClusterError::Spec(format!("--watch: {e}")))?;
    for p in &spec.paths {
        watcher
            .watch(&abs(p), RecursiveMode::Recursive)
            .map_err(|e| ClusterError::Spec(format!("--watch {}: {e}", p.display())))?;
    }
    let delay = spec.delay;
    let task = tokio::spawn(async move {
        let _watcher = watcher;
        while let Some(first) = rx.recv().await {
            let mut changed = vec![first];
            // Debounce: wait until nothing changed for `delay`.
            loop {
                match tokio::time::timeout(delay, rx.recv()).await {
                    Ok(Some(p)) => {
                        if changed.len() < 5 && !changed.contains(&p) {
                            changed.push(p);
                        }
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            reload(changed);
        }
    });
    Ok(task.abort_handle())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_by_component_relative_glob_and_log_dir() {
        let mut spec = WatchSpec::new(vec!["/app".into()]);
        spec.ignore.push("*.log".into());
        spec.ignore.push("dist/**".into());
        let f = Filter {
            roots: vec!["/app".into()],
            globs: spec.globs().unwrap(),
            skip: vec!["/app/logs".into()],
        };
        assert!(f.counts(Path::new("/app/server.js")));
        assert!(f.counts(Path::new("/app/lib/util.js")));
        assert!(!f.counts(Path::new("/app/node_modules/x/index.js")));
        assert!(!f.counts(Path::new("/app/.git/index")));
        assert!(!f.counts(Path::new("/app/out.log")));
        assert!(!f.counts(Path::new("/app/dist/bundle.js")));
        assert!(!f.counts(Path::new("/app/logs/web-out.log.1")));
        spec.ignore = vec!["[".into()];
        assert!(spec
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--watch-ignore"));
    }
}
