//! The retry budget: retries may add at most `ratio` × the requests of the last 10 s, plus a
//! floor of `min_per_sec` per second (Finagle's `RetryBudget`, Linkerd's retry budgets). Keeps
//! retries from multiplying the load on a struggling service. Sans-IO: time comes in as `now`.

use std::time::{Duration, Instant};

/// Length of the window retries are measured over.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
const SLOTS: usize = 10;

/// Requests and retries per one-second slot over the last [`WINDOW`].
#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio: f64,
    min_per_sec: u32,
    origin: Instant,
    /// Index (seconds since `origin`) of the newest slot.
    newest: u64,
    requests: [u32; SLOTS],
    retries: [u32; SLOTS],
}

impl RetryBudget {
    pub(crate) fn new(ratio: f64, min_per_sec: u32, now: Instant) -> Self {
        Self {
            ratio: sane_ratio(ratio),
            min_per_sec,
            origin: now,
            newest: 0,
            requests: [0; SLOTS],
            retries: [0; SLOTS],
        }
    }

    /// Changes the limits, keeping the counts.
    pub(crate) fn set_limits(&mut self, ratio: f64, min_per_sec: u32) {
        self.ratio = sane_ratio(ratio);
        self.min_per_sec = min_per_sec;
    }

    /// Counts a request.
    pub(crate) fn deposit(&mut self, now: Instant) {
        let slot = self.advance(now);
        self.requests[slot] = self.requests[slot].saturating_add(1);
    }

    /// Takes a retry from the budget if one is left.
    pub(crate) fn try_withdraw(&mut self, now: Instant) -> bool {
        let slot = self.advance(now);
        let requests: u64 = self.requests.iter().map(|&n| u64::from(n)).sum();
        let retries: u64 = self.retries.iter().map(|&n| u64::from(n)).sum();
        let allowed =
            self.ratio * requests as f64 + f64::from(self.min_per_sec) * WINDOW.as_secs_f64();
        if (retries + 1) as f64 <= allowed {
            self.retries[slot] = self.retries[slot].saturating_add(1);
            true
        } else {
            false
        }
    }

    /// Moves the window to `now`, clearing slots that fell out of it; returns `now`'s slot.
    fn advance(&mut self, now: Instant) -> usize {
        let second = now.saturating_duration_since(self.origin).as_secs();
        if second > self.newest {
            let stale = (second - self.newest).min(SLOTS as u64);
            for i in 1..=stale {
                let slot = ((self.newest + i) % SLOTS as u64) as usize;
                self.requests[slot] = 0;
                self.retries[slot] = 0;
            }
            self.newest = second;
        }
        // A `now` older than the newest slot (clocks read on other threads) counts in the newest.
        (self.newest % SLOTS as u64) as usize
    }
}

/// `ratio`, or 0 when it is negative or not finite.
fn sane_ratio(ratio: f64) -> f64 {
    if ratio.is_finite() {
        ratio.max(0.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_allows_min_per_sec_times_window_without_traffic() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.2, 1, t0);
        let granted = (0..20).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn ratio_scales_with_requests_and_expires_after_the_window() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.2, 0, t0);
        for _ in 0..100 {
            b.deposit(t0);
        }
        let granted = (0..50).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 20);
        // 11 s later the requests and retries have left the window.
        let later = t0 + Duration::from_secs(11);
        assert!(!b.try_withdraw(later));
        for _ in 0..10 {
            b.deposit(later);
        }
        assert!(b.try_withdraw(later));
        assert!(b.try_withdraw(later));
        assert!(!b.try_withdraw(later));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(f64::NAN, u32::MAX, t0);
        assert!(b.try_withdraw(t0 + Duration::from_secs(u32::MAX as u64)));
        b.set_limits(-1.0, 0);
        b.deposit(t0);
        assert!(!b.try_withdraw(t0));
    }
}
