//! Passive outlier detection for one endpoint: consecutive-failure counters, ejection with
//! exponential back-off, and the decay of the back-off while the endpoint behaves.
//!
//! The tier-wide cap (`max_ejected_percent`) needs the whole tier, so the balancer applies it:
//! [`Outlier::record`] only says an ejection is due.

use std::time::{Duration, Instant};

use crate::{FailureKind, Outcome, OutlierConfig};

/// Why an endpoint was (or is due to be) ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// This many consecutive failures of any kind.
    Failures(u32),
    /// This many consecutive connect failures.
    Connect(u32),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Failures(n) => write!(f, "{n} consecutive failures"),
            Cause::Connect(1) => write!(f, "a connect failure"),
            Cause::Connect(n) => write!(f, "{n} consecutive connect failures"),
        }
    }
}

/// One endpoint's outlier state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outlier {
    consecutive: u32,
    consecutive_connect: u32,
    /// Ejections so far, before decay; see [`Outlier::ejections_at`].
    ejections: u32,
    ejected_until: Option<Instant>,
    /// Cause of the current or last ejection.
    cause: Option<Cause>,
    /// An ejection was due but the tier was at its cap; cleared by a success or an ejection.
    held: Option<Cause>,
    /// Ejected, and not picked since: once the ejection ends, the next pick that draws it
    /// takes it (a probe).
    probe: bool,
}

impl Outlier {
    /// Whether the endpoint is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }

    /// End of the current ejection, if ejected at `now`.
    pub(crate) fn ejected_until(&self, now: Instant) -> Option<Instant> {
        self.ejected_until.filter(|&until| until > now)
    }

    /// Counts one outcome; returns the cause when an ejection is due now. Outcomes of attempts
    /// that were in flight when the endpoint was ejected update the counters but never extend
    /// the ejection.
    pub(crate) fn record(
        &mut self,
        outcome: Outcome,
        now: Instant,
        config: &OutlierConfig,
    ) -> Option<Cause> {
        match outcome {
            Outcome::Success { .. } => {
                self.consecutive = 0;
                self.consecutive_connect = 0;
                self.held = None;
                return None;
            }
            Outcome::Failure {
                kind: FailureKind::Connect,
                ..
            } => {
                self.consecutive = self.consecutive.saturating_add(1);
                self.consecutive_connect = self.consecutive_connect.saturating_add(1);
            }
            Outcome::Failure { .. } => {
                self.consecutive = self.consecutive.saturating_add(1);
                self.consecutive_connect = 0;
            }
        }
        if self.is_ejected(now) {
            return None;
        }
        // A threshold of zero disables that trigger.
        let connect = config.consecutive_connect_failures;
        let any = config.consecutive_failures;
        if connect > 0 && self.consecutive_connect >= connect {
            Some(Cause::Connect(self.consecutive_connect))
        } else if any > 0 && self.consecutive >= any {
            Some(Cause::Failures(self.consecutive))
        } else {
            None
        }
    }

    /// Ejects the endpoint at `now` for `base × 2^(ejections − 1)`, capped at `max_ejection`.
    pub(crate) fn eject(&mut self, cause: Cause, now: Instant, config: &OutlierConfig) -> Instant {
        self.ejections = self.ejections_at(now, config).saturating_add(1);
        let doublings = (self.ejections - 1).min(31);
        let time = config
            .base_ejection
            .saturating_mul(1 << doublings)
            .min(config.max_ejection);
        let until = now + time;
        self.ejected_until = Some(until);
        self.cause = Some(cause);
        self.held = None;
        self.probe = true;
        // A returning endpoint must fail a full run again before the next ejection.
        self.consecutive = 0;
        self.consecutive_connect = 0;
        until
    }

    /// Whether the endpoint is back from an ejection and has not been tried since.
    pub(crate) fn awaits_probe(&self, now: Instant) -> bool {
        self.probe && !self.is_ejected(now)
    }

    /// Notes that the endpoint was picked: a probe after an ejection is on its way.
    pub(crate) fn picked(&mut self, now: Instant) {
        if !self.is_ejected(now) {
            self.probe = false;
        }
    }

    /// Notes that an ejection was due but the tier's cap forbade it.
    pub(crate) fn hold(&mut self, cause: Cause) {
        self.held = Some(cause);
    }

    /// Ejections counted for the back-off at `now`: the count halves for every full
    /// `max_ejection` that has passed since the last ejection ended.
    pub(crate) fn ejections_at(&self, now: Instant, config: &OutlierConfig) -> u32 {
        let Some(until) = self.ejected_until else {
            return self.ejections;
        };
        if until > now {
            return self.ejections;
        }
        let clean = now.duration_since(until);
        let halvings = match config.max_ejection {
            period if period.is_zero() => u128::MAX,
            period => clean.as_nanos() / period.as_nanos(),
        };
        if halvings >= 32 {
            0
        } else {
            self.ejections >> halvings
        }
    }

    /// Cause of the current or last ejection.
    pub(crate) fn cause(&self) -> Option<Cause> {
        self.cause
    }

    /// The ejection that is due but held back by the tier's cap, if any.
    pub(crate) fn held(&self) -> Option<Cause> {
        self.held
    }

    /// Consecutive failures so far.
    pub(crate) fn consecutive(&self) -> u32 {
        self.consecutive
    }
}

/// How many of a tier's `total` endpoints may be ejected at once: `max_ejected_percent` of them
/// rounded down, but at least one (so a lone same-node endpoint that refuses connections spills
/// its traffic to the next tier); zero when the percentage is zero.
pub(crate) fn max_ejected(total: u32, config: &OutlierConfig) -> u32 {
    let percent = u32::from(config.max_ejected_percent.min(100));
    if percent == 0 || total == 0 {
        return 0;
    }
    (total * percent / 100).max(1)
}

/// Human-readable duration for explanations: milliseconds below a second, else seconds.
pub(crate) fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    fn fail(kind: FailureKind) -> Outcome {
        Outcome::Failure { kind, latency: MS }
    }

    #[test]
    fn five_failures_or_one_connect_failure() {
        let config = OutlierConfig::default();
        let now = Instant::now();
        let mut o = Outlier::default();
        for _ in 0..4 {
            assert_eq!(o.record(fail(FailureKind::Status5xx), now, &config), None);
        }
        assert_eq!(
            o.record(fail(FailureKind::Timeout), now, &config),
            Some(Cause::Failures(5))
        );

        let mut o = Outlier::default();
        assert_eq!(
            o.record(fail(FailureKind::Connect), now, &config),
            Some(Cause::Connect(1))
        );
    }

    #[test]
    fn success_resets_the_run() {
        let config = OutlierConfig::default();
        let now = Instant::now();
        let mut o = Outlier::default();
        for _ in 0..4 {
            o.record(fail(FailureKind::Reset), now, &config);
        }
        o.record(Outcome::Success { latency: MS }, now, &config);
        for _ in 0..4 {
            assert_eq!(o.record(fail(FailureKind::Reset), now, &config), None);
        }
    }

    #[test]
    fn back_off_doubles_caps_and_decays() {
        let config = OutlierConfig::default();
        let t0 = Instant::now();
        let mut o = Outlier::default();
        let mut now = t0;
        for expected in [1, 2, 4, 8, 16, 30, 30] {
            let until = o.eject(Cause::Connect(1), now, &config);
            assert_eq!(until - now, expected * SEC);
            assert!(o.is_ejected(until - MS) && !o.is_ejected(until));
            now = until;
        }
        assert_eq!(o.ejections_at(now, &config), 7);
        // Two clean max-ejection periods: 7 → 3 → 1; the next ejection lasts base × 2.
        now += 2 * config.max_ejection;
        assert_eq!(o.ejections_at(now, &config), 1);
        assert_eq!(o.eject(Cause::Connect(1), now, &config) - now, 2 * SEC);
    }

    #[test]
    fn cap_rounds_down_but_allows_one() {
        let config = OutlierConfig::default();
        assert_eq!(max_ejected(0, &config), 0);
        assert_eq!(max_ejected(1, &config), 1);
        assert_eq!(max_ejected(3, &config), 1);
        assert_eq!(max_ejected(4, &config), 2);
        let ten = OutlierConfig {
            max_ejected_percent: 10,
            ..config.clone()
        };
        assert_eq!(max_ejected(5, &ten), 1);
        assert_eq!(max_ejected(25, &ten), 2);
        let none = OutlierConfig {
            max_ejected_percent: 0,
            ..config
        };
        assert_eq!(max_ejected(5, &none), 0);
    }
}
