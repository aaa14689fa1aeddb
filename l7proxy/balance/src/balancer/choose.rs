//! Random choices: a tier by its share, then the cheaper of two random endpoints in it.

use crate::rng::Rng;

/// Rejection-sampling attempts before falling back to a scan.
const TRIES: usize = 32;

/// Samples a tier index by `shares`; only tiers with a positive share can come out.
pub(super) fn tier(rng: &mut Rng, shares: &[f64; 4]) -> usize {
    let u = rng.unit();
    let mut acc = 0.0;
    let mut last = 0;
    for (t, &share) in shares.iter().enumerate().filter(|(_, s)| **s > 0.0) {
        acc += share;
        last = t;
        if u < acc {
            return t;
        }
    }
    // Rounding left `acc` just below `u`: the last tier with a share takes it.
    last
}

/// Power of two choices among the `candidates` members that are `eligible`: two distinct ones
/// at random, the one with the lower `cost` wins. O(1) expected when candidates are dense,
/// one scan when they are sparse.
pub(super) fn p2c(
    rng: &mut Rng,
    members: &[usize],
    candidates: usize,
    eligible: impl Fn(usize) -> bool,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    debug_assert_eq!(
        members.iter().filter(|&&i| eligible(i)).count(),
        candidates,
        "stale tier counts"
    );
    let cheaper = |a: usize, b: usize| if cost(b) < cost(a) { b } else { a };
    if candidates < 2 || candidates * 4 < members.len() {
        let first = rng.below(candidates.max(1));
        let a = nth(members, &eligible, first)?;
        if candidates < 2 {
            return Some(a);
        }
        let mut second = rng.below(candidates - 1);
        if second >= first {
            second += 1;
        }
        return Some(nth(members, &eligible, second).map_or(a, |b| cheaper(a, b)));
    }
    let a = draw(rng, members, &eligible, None).or_else(|| nth(members, &eligible, 0))?;
    let b = draw(rng, members, &eligible, Some(a))
        .or_else(|| members.iter().copied().find(|&i| i != a && eligible(i)));
    Some(b.map_or(a, |b| cheaper(a, b)))
}

/// A random eligible member other than `except`, if one turns up within [`TRIES`].
fn draw(
    rng: &mut Rng,
    members: &[usize],
    eligible: &impl Fn(usize) -> bool,
    except: Option<usize>,
) -> Option<usize> {
    (0..TRIES)
        .map(|_| members[rng.below(members.len())])
        .find(|&i| Some(i) != except && eligible(i))
}

/// The `n`th eligible member, falling back to the first one.
fn nth(members: &[usize], eligible: &impl Fn(usize) -> bool, n: usize) -> Option<usize> {
    let mut it = members.iter().copied().filter(|&i| eligible(i));
    it.clone().nth(n).or_else(|| it.next())
}
