//! The primary's reloads that nobody asks for at the moment they happen —
//! at each `--restart-cron` match, and after a `--watch`ed file changed —
//! and its commands on the `--log-dir` files (reopen on SIGUSR1, flush).

use std::path::PathBuf;

use super::{Cmd, Primary, Reply};
use crate::error::Result;
use crate::spec::ClusterSpec;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// The commands of this module.
pub(crate) enum AutoCmd {
    /// A `--restart-cron` match is due.
    CronReload,
    /// Watched files changed (some of them named).
    WatchReload(Vec<PathBuf>),
    /// Reopen the log files (SIGUSR1, logrotate).
    ReopenLogs,
    /// Empty the log files (`ctl flush`).
    FlushLogs(Reply<usize>),
}

/// Start `--watch`, if set; its changes come back as [`AutoCmd::WatchReload`].
pub(super) fn start_watch(
    spec: &ClusterSpec,
    cmds: mpsc::Sender<Cmd>,
) -> Result<Option<AbortHandle>> {
    let Some(w) = &spec.watch else {
        return Ok(None);
    };
    // The workers' own log lines must not reload them.
    let skip = spec.logs.iter().map(|l| l.dir.clone()).collect();
    let task = crate::watch::start(w, skip, move |paths| {
        if cmds
            .try_send(Cmd::Auto(AutoCmd::WatchReload(paths)))
            .is_err()
        {
            tracing::warn!("--watch: the primary is busy; this change is not acted on");
        }
    })?;
    Ok(Some(task))
}

impl Primary {
    /// Arm the timer for the next `--restart-cron` match.
    pub(super) fn schedule_cron(&mut self) {
        let Some(c) = self.spec.restart_cron.as_ref() else {
            return;
        };
        if self.stopping {
            return;
        }
        if let Some((at, wait)) = c.next(self.cron_due) {
            self.cron_due = Some(at);
            self.after(wait, Cmd::Auto(AutoCmd::CronReload));
        }
    }

    pub(super) fn on_auto(&mut self, c: AutoCmd) {
        match c {
            AutoCmd::CronReload => {
                if self.stopping {
                    return;
                }
                if let Some(c) = &self.spec.restart_cron {
                    tracing::info!("--restart-cron {c}: rolling reload");
                }
                self.start_reload(None);
                self.schedule_cron();
            }
            AutoCmd::WatchReload(paths) => {
                if self.stopping {
                    return;
                }
                let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                tracing::info!("--watch: {} changed: rolling reload", shown.join(", "));
                self.start_reload(None);
            }
            AutoCmd::ReopenLogs => {
                if let Some(l) = &self.logs {
                    l.reopen();
                }
            }
            AutoCmd::FlushLogs(tx) => match &self.logs {
                Some(l) => {
                    let done = l.flush();
                    tokio::spawn(async move {
                        let _ = tx.send(done.await);
                    });
                }
                None => {
                    let _ = tx.send(Err(
                        "no log files: the cluster was started without --log-dir".into(),
                    ));
                }
            },
        }
    }
}
