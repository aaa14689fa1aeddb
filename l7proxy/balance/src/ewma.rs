//! Peak-EWMA round-trip estimate (Linkerd, Finagle): a sample above the estimate replaces it at
//! once, so an endpoint that slows down loses traffic immediately; lower samples pull it down
//! with exponential decay in the time since the last sample, so it earns traffic back slowly.
//!
//! Unlike tower's estimate, which decays toward zero while idle, ours decays toward the default
//! RTT: an endpoint we have heard nothing from recently is rated like a new one. Old bad news
//! (a failure penalty) therefore fades, and old good news does not make an idle endpoint look
//! better than the ones we are measuring.

use std::time::{Duration, Instant};

/// One endpoint's estimate.
#[derive(Debug, Clone)]
pub(crate) struct PeakEwma {
    /// Estimate in nanoseconds as of `updated`.
    estimate: f64,
    updated: Instant,
}

impl PeakEwma {
    /// A fresh estimate at `default_rtt`.
    pub(crate) fn new(default_rtt: Duration, now: Instant) -> Self {
        Self {
            estimate: nanos(default_rtt),
            updated: now,
        }
    }

    /// The estimate at `now` in nanoseconds, decayed toward `default_rtt` since the last sample.
    pub(crate) fn at(&self, now: Instant, default_rtt: Duration, decay: Duration) -> f64 {
        self.decayed(self.weight_at(now, decay), default_rtt)
    }

    /// Feeds one sample observed at `now`.
    pub(crate) fn observe(
        &mut self,
        sample: Duration,
        now: Instant,
        default_rtt: Duration,
        decay: Duration,
    ) {
        // One weight (one `exp`) serves both the current estimate and the decay toward the sample.
        let w = self.weight_at(now, decay);
        let sample = nanos(sample);
        if sample > self.decayed(w, default_rtt) {
            self.estimate = sample;
        } else {
            self.estimate = self.estimate * w + sample * (1.0 - w);
        }
        // Time never runs backwards for the estimate; an out-of-order `now` counts as no time.
        self.updated = self.updated.max(now);
    }

    /// The weight the estimate keeps at `now`.
    fn weight_at(&self, now: Instant, decay: Duration) -> f64 {
        weight(now.saturating_duration_since(self.updated), decay)
    }

    /// The estimate decayed toward `default_rtt` by weight `w`.
    fn decayed(&self, w: f64, default_rtt: Duration) -> f64 {
        self.estimate * w + nanos(default_rtt) * (1.0 - w)
    }
}

/// Weight the old estimate keeps after `elapsed`: e^(−elapsed/decay). A zero `decay` keeps no
/// memory: every endpoint is rated at the default RTT and the cost reduces to least-in-flight.
fn weight(elapsed: Duration, decay: Duration) -> f64 {
    if decay.is_zero() {
        return 0.0;
    }
    (-elapsed.as_secs_f64() / decay.as_secs_f64()).exp()
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const DECAY: Duration = Duration::from_secs(10);

    #[test]
    fn peak_replaces_at_once_and_decays_slowly() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(20 * MS, t0);
        e.observe(200 * MS, t0, 20 * MS, DECAY);
        assert_eq!(e.at(t0, 20 * MS, DECAY), 200e6);
        // A fast sample one second later moves the estimate only ~10 % of the way.
        let t1 = t0 + Duration::from_secs(1);
        e.observe(10 * MS, t1, 20 * MS, DECAY);
        let est = e.at(t1, 20 * MS, DECAY);
        assert!(est > 180e6 && est < 185e6, "{est}");
    }

    #[test]
    fn idle_estimate_returns_to_default() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(20 * MS, t0);
        e.observe(500 * MS, t0, 20 * MS, DECAY);
        let later = e.at(t0 + Duration::from_secs(100), 20 * MS, DECAY);
        assert!((later - 20e6).abs() < 1e5, "{later}");
    }

    #[test]
    fn zero_decay_means_no_memory() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(20 * MS, t0);
        e.observe(5 * MS, t0, 20 * MS, Duration::ZERO);
        e.observe(500 * MS, t0, 20 * MS, Duration::ZERO);
        assert_eq!(e.at(t0, 20 * MS, Duration::ZERO), 20e6);
    }
}
