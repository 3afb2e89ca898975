//! Time limits that cost little on the request path.
//!
//! A plain `tokio::time::timeout` reads the clock when it is made and files
//! an entry in the timer wheel whenever its future has to wait, then takes it
//! out again: for a proxy that waits on every read, that is several clock
//! reads and wheel updates per request. Two cheaper forms:
//!
//! - [`lazy`] polls the future once first and only starts the clock when it
//!   would wait: a write into a socket with room, or a read of bytes that
//!   have already arrived, costs no timer at all.
//! - [`Timer`] is one timer kept for a connection's lifetime and re-armed
//!   lazily, as nginx does with its `NGX_TIMER_LAZY_DELAY`: when a new limit
//!   would end less than a little (`t / 8`, at most 250 ms) after the armed
//!   one, the armed one stays. A wait may so end up to that much early, never
//!   late.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// Most a [`Timer`] lets a limit end early to avoid re-arming.
const MAX_SLACK: Duration = Duration::from_millis(250);

/// Run `fut` for at most `t`, arming a timer only if its first poll is not
/// already the answer.
pub async fn lazy<F: Future>(t: Duration, fut: F) -> Result<F::Output, TimedOut> {
    let mut fut = pin!(fut);
    if let Poll::Ready(v) = poll_once(fut.as_mut()).await {
        return Ok(v);
    }
    tokio::time::timeout(t, fut).await.map_err(|_| TimedOut)
}

/// Poll `fut` once and report what it said.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// A connection's reusable timer (see the module docs). It takes memory
/// only once a limit first has to wait, so a default one is free to make and
/// to move.
#[derive(Default)]
pub struct Timer {
    /// Made on the first wait; its deadline is `armed`.
    sleep: Option<Pin<Box<Sleep>>>,
    /// When `sleep` fires; `None` until armed and after it fired.
    armed: Option<Instant>,
}

impl Timer {
    /// A timer that is not armed yet.
    pub fn new() -> Timer {
        Timer::default()
    }

    /// Run `fut` for at most about `t` (up to `t / 8`, at most 250 ms,
    /// less), re-arming the timer only when its deadline is too early or
    /// too late for this limit.
    pub async fn limit<F: Future>(&mut self, t: Duration, fut: F) -> Result<F::Output, TimedOut> {
        let mut fut = pin!(fut);
        if let Poll::Ready(v) = poll_once(fut.as_mut()).await {
            return Ok(v);
        }
        self.arm(t);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            self.poll_fired(cx).map(|()| Err(TimedOut))
        })
        .await
    }

    /// Make the timer fire about `t` from now (up to `t / 8`, at most
    /// 250 ms, earlier), keeping the armed deadline when it is close enough.
    /// For waits that poll the timer themselves with [`Timer::poll_fired`].
    pub fn arm(&mut self, t: Duration) {
        let want = Instant::now() + t;
        let slack = (t / 8).min(MAX_SLACK);
        if matches!(self.armed, Some(at) if at <= want && want - at <= slack) {
            return;
        }
        self.armed = Some(want);
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(want),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(want))),
        }
    }

    /// Poll the armed deadline: ready once it has passed (the next
    /// [`Timer::arm`] then arms afresh). Pending forever when not armed.
    pub fn poll_fired(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        match (&mut self.sleep, self.armed) {
            (Some(s), Some(_)) => s.as_mut().poll(cx).map(|()| self.armed = None),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_futures_never_time_out() {
        assert_eq!(lazy(Duration::ZERO, async { 7 }).await, Ok(7));
        let mut t = Timer::new();
        assert_eq!(t.limit(Duration::ZERO, async { 8 }).await, Ok(8));
    }

    #[tokio::test(start_paused = true)]
    async fn limits_end_waits() {
        let never = std::future::pending::<()>();
        let start = Instant::now();
        assert_eq!(lazy(Duration::from_secs(2), never).await, Err(TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        let mut t = Timer::new();
        let start = Instant::now();
        let r = t
            .limit(Duration::from_secs(3), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn lazy_rearm_ends_early_by_at_most_the_slack() {
        let mut t = Timer::new();
        // Arm at 10 s, then 100 ms later ask for 10 s again: the armed
        // deadline is within the slack (250 ms) and stays.
        let sleep_then_ok = |d| async move {
            tokio::time::sleep(d).await;
        };
        t.limit(
            Duration::from_secs(10),
            sleep_then_ok(Duration::from_millis(100)),
        )
        .await
        .unwrap();
        let start = Instant::now();
        let r = t
            .limit(Duration::from_secs(10), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(TimedOut));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(9_750) && waited <= Duration::from_secs(10));
        // A shorter limit than the armed deadline re-arms at once.
        t.limit(
            Duration::from_secs(60),
            sleep_then_ok(Duration::from_millis(1)),
        )
        .await
        .unwrap();
        let start = Instant::now();
        let r = t
            .limit(Duration::from_secs(1), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
