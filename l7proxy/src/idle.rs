//! Closing idle HTTP/1.1 client connections: one timer per connection, armed once and pushed
//! back only when it fires, instead of hyper's header read timeout, which allocates and
//! registers a timer for every request head.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Whether a client connection has a request in progress, and since when it has none.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    /// Requests whose response has not been sent whole.
    busy: AtomicUsize,
    /// Nanoseconds from `origin` to the end of the latest response.
    idle_since: AtomicU64,
}

impl Activity {
    /// A connection idle since `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            origin: now,
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    /// Marks a request in progress until the guard drops (with its response body).
    pub(crate) fn start(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When the connection became idle; `None` while a request is in progress.
    fn idle_since(&self) -> Option<Instant> {
        (self.busy.load(Ordering::Relaxed) == 0)
            .then(|| self.origin + Duration::from_nanos(self.idle_since.load(Ordering::Relaxed)))
    }
}

/// A request in progress on a connection; see [`Activity::start`].
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let nanos = self.0.origin.elapsed().as_nanos();
        self.0
            .idle_since
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Drives `connection` to its end, or until it has been idle (no request in progress) for
/// `limit`: then returns `None`, and the caller drops the connection, which closes it. The
/// caller pins `connection`: taken by value, a large future would be stored twice in this one
/// (as the argument and pinned), for every open connection.
pub(crate) async fn close_when_idle<F: Future>(
    mut connection: Pin<&mut F>,
    activity: &Activity,
    limit: Duration,
) -> Option<F::Output> {
    let mut timer = pin!(tokio::time::sleep(limit));
    loop {
        tokio::select! {
            biased;
            output = &mut connection => return Some(output),
            () = &mut timer => match next_check(activity.idle_since(), Instant::now(), limit) {
                Some(at) => timer.as_mut().reset(at.into()),
                None => return None,
            },
        }
    }
}

/// When the idle timer fires at `now`: the instant to check again, or `None` to close.
pub(crate) fn next_check(
    idle_since: Option<Instant>,
    now: Instant,
    limit: Duration,
) -> Option<Instant> {
    match idle_since {
        Some(since) if now.saturating_duration_since(since) >= limit => None,
        Some(since) => Some(since + limit),
        // Busy: a request in progress is not limited here.
        None => Some(now + limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    #[test]
    fn closes_once_idle_for_the_limit_and_never_while_busy() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(next_check(Some(t0), t0 + LIMIT, LIMIT), None);
        assert_eq!(next_check(Some(t0), t0 + LIMIT * 5, LIMIT), None);
        // Idle only since 30 s: checked again when the limit is up.
        let since = t0 + 30 * s;
        assert_eq!(
            next_check(Some(since), t0 + LIMIT, LIMIT),
            Some(since + LIMIT)
        );
        // Busy (a response longer than the limit): checked again a limit later.
        assert_eq!(next_check(None, t0 + LIMIT, LIMIT), Some(t0 + LIMIT * 2));
    }

    #[test]
    fn activity_is_idle_when_every_request_has_finished() {
        let t0 = Instant::now();
        let activity = Arc::new(Activity::new(t0));
        assert_eq!(activity.idle_since(), Some(t0));
        let first = activity.start();
        let second = activity.start();
        drop(first);
        assert_eq!(activity.idle_since(), None);
        drop(second);
        assert!(activity.idle_since().is_some_and(|since| since >= t0));
    }

    #[tokio::test]
    async fn a_connection_that_ends_returns_its_output() {
        let activity = Activity::new(Instant::now());
        let connection = pin!(async { 7 });
        assert_eq!(close_when_idle(connection, &activity, LIMIT).await, Some(7));
    }
}
