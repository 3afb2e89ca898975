//! Graceful shutdown: one root [`Shutdown`] token per server, cloned into every
//! task, plus helpers that turn OS signals into cancellation.
//!
//! Accept loops and connection handlers `select!` on [`Shutdown::cancelled`];
//! the owner calls [`Shutdown::trigger`] (or a signal does) and then waits a
//! grace period before forcing the rest.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal. Children created with [`Shutdown::child`] are
/// cancelled with their parent but can also be cancelled alone.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A fresh, untriggered shutdown signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal that fires when this one does, or when triggered itself.
    pub fn child(&self) -> Self {
        Self {
            token: self.token.child_token(),
        }
    }

    /// Ask every holder to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether [`Shutdown::trigger`] has been called (here or on a parent).
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the signal fires.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The underlying token, for APIs that take a `CancellationToken`.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Trigger this signal on the first SIGTERM or SIGINT. Spawns a task on the
    /// current tokio runtime; returns an error if signal handlers cannot be
    /// installed.
    pub fn trigger_on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
                _ = me.cancelled() => return,
            }
            me.trigger();
        });
        Ok(())
    }
}

/// Wait for `fut` at most `grace`; returns `true` if it finished in time.
pub async fn within_grace<F: std::future::Future>(grace: Duration, fut: F) -> bool {
    tokio::time::timeout(grace, fut).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn child_follows_parent_but_not_the_reverse() {
        let root = Shutdown::new();
        let a = root.child();
        let b = root.child();
        a.trigger();
        assert!(a.is_triggered());
        assert!(!root.is_triggered());
        assert!(!b.is_triggered());
        root.trigger();
        b.cancelled().await;
        assert!(b.is_triggered());
    }

    #[tokio::test]
    async fn grace_reports_timeouts() {
        assert!(within_grace(Duration::from_millis(200), async {}).await);
        assert!(
            !within_grace(
                Duration::from_millis(10),
                tokio::time::sleep(Duration::from_secs(5))
            )
            .await
        );
    }
}
