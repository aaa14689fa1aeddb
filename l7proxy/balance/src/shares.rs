//! Tier shares: Envoy's priority load with overprovisioning, spillover and normalisation.
//! Pure functions over per-tier counts.

/// Endpoint counts of one tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TierCounts {
    /// Endpoints in scope.
    pub(crate) total: u32,
    /// Ready endpoints (ejected or not).
    pub(crate) ready: u32,
    /// Ready and not ejected.
    pub(crate) healthy: u32,
}

/// What a plan's shares were computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Basis {
    /// Healthy endpoints: the normal case.
    Healthy,
    /// Ready endpoints, because none is healthy (every ready one is ejected): the last resort.
    Ready,
}

/// Tier shares and what they rest on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    /// Share of traffic per tier; sums to 1.
    pub(crate) shares: [f64; 4],
    /// What the shares were computed from.
    pub(crate) basis: Basis,
}

/// The plan for `counts`, or `None` when no endpoint is ready.
pub(crate) fn plan(counts: &[TierCounts; 4], overprovision: f64) -> Option<Plan> {
    let healthy = health(counts, overprovision, |c| c.healthy);
    if let Some(shares) = spread(healthy) {
        return Some(Plan {
            shares,
            basis: Basis::Healthy,
        });
    }
    let ready = health(counts, overprovision, |c| c.ready);
    spread(ready).map(|shares| Plan {
        shares,
        basis: Basis::Ready,
    })
}

/// Normalised health of all tiers together (sum of tier healths, capped at 1); compared with
/// the panic threshold.
pub(crate) fn total_health(counts: &[TierCounts; 4], overprovision: f64) -> f64 {
    health(counts, overprovision, |c| c.healthy)
        .iter()
        .sum::<f64>()
        .min(1.0)
}

/// The overprovisioning factor actually used: a non-finite or non-positive value would starve
/// every tier, so it counts as 1.
pub(crate) fn sane_overprovision(overprovision: f64) -> f64 {
    if overprovision.is_finite() && overprovision > 0.0 {
        overprovision
    } else {
        1.0
    }
}

/// Each tier's health: available/total × overprovision, capped at 1; 0 for an empty tier.
fn health(
    counts: &[TierCounts; 4],
    overprovision: f64,
    available: impl Fn(&TierCounts) -> u32,
) -> [f64; 4] {
    let overprovision = sane_overprovision(overprovision);
    counts.map(|c| {
        if c.total == 0 {
            0.0
        } else {
            (f64::from(available(&c)) / f64::from(c.total) * overprovision).min(1.0)
        }
    })
}

/// Envoy's priority load: tier 0 takes its health, the remainder flows down in order; when the
/// healths sum to less than 1 they are normalised. `None` when every health is zero.
fn spread(health: [f64; 4]) -> Option<[f64; 4]> {
    let sum: f64 = health.iter().sum();
    if sum <= 0.0 {
        return None;
    }
    if sum < 1.0 {
        return Some(health.map(|h| h / sum));
    }
    let mut remaining = 1.0_f64;
    Some(health.map(|h| {
        let load = h.min(remaining).max(0.0);
        remaining -= load;
        load
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers(spec: [(u32, u32, u32); 4]) -> [TierCounts; 4] {
        spec.map(|(total, ready, healthy)| TierCounts {
            total,
            ready,
            healthy,
        })
    }

    fn close(a: [f64; 4], b: [f64; 4]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn healthy_first_tier_keeps_everything() {
        let p = plan(&tiers([(3, 3, 3), (5, 5, 5), (0, 0, 0), (2, 2, 2)]), 1.4).unwrap();
        assert!(close(p.shares, [1.0, 0.0, 0.0, 0.0]));
        assert_eq!(p.basis, Basis::Healthy);
    }

    #[test]
    fn partial_health_spills_over() {
        // 1 of 3 healthy: 1/3 × 1.4 ≈ 0.467 stays, the rest spills.
        let p = plan(&tiers([(3, 1, 1), (2, 2, 2), (0, 0, 0), (0, 0, 0)]), 1.4).unwrap();
        assert!(
            close(p.shares, [1.4 / 3.0, 1.0 - 1.4 / 3.0, 0.0, 0.0]),
            "{:?}",
            p.shares
        );
        // 5 of 7 healthy (71.4 %) is still full health.
        let p = plan(&tiers([(7, 5, 5), (2, 2, 2), (0, 0, 0), (0, 0, 0)]), 1.4).unwrap();
        assert!(close(p.shares, [1.0, 0.0, 0.0, 0.0]));
    }

    #[test]
    fn low_total_health_normalises() {
        // Healths 0.35 and 0.28: normalised to 5/9 and 4/9.
        let p = plan(&tiers([(4, 1, 1), (5, 5, 1), (0, 0, 0), (0, 0, 0)]), 1.4).unwrap();
        assert!(
            close(p.shares, [0.35 / 0.63, 0.28 / 0.63, 0.0, 0.0]),
            "{:?}",
            p.shares
        );
        assert!(
            (total_health(&tiers([(4, 1, 1), (5, 5, 1), (0, 0, 0), (0, 0, 0)]), 1.4) - 0.63).abs()
                < 1e-9
        );
    }

    #[test]
    fn only_ejected_endpoints_left_is_the_last_resort() {
        let p = plan(&tiers([(1, 1, 0), (2, 1, 0), (0, 0, 0), (0, 0, 0)]), 1.4).unwrap();
        assert_eq!(p.basis, Basis::Ready);
        assert!(close(p.shares, [1.0, 0.0, 0.0, 0.0]));
        assert_eq!(
            plan(&tiers([(1, 0, 0), (2, 0, 0), (0, 0, 0), (0, 0, 0)]), 1.4),
            None
        );
    }

    #[test]
    fn bad_overprovision_counts_as_one() {
        for op in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let p = plan(&tiers([(2, 1, 1), (2, 2, 2), (0, 0, 0), (0, 0, 0)]), op).unwrap();
            assert!(
                close(p.shares, [0.5, 0.5, 0.0, 0.0]),
                "{op}: {:?}",
                p.shares
            );
        }
    }
}
