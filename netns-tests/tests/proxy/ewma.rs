//! Inside a tier, a slow endpoint loses traffic to its fast neighbours (power of two choices on
//! peak EWMA).

use super::*;
use crate::client::{failures, get_many, tally};

/// How much slower the slow endpoint answers.
const SLOW: Duration = Duration::from_millis(100);

#[test]
fn a_slow_endpoint_gets_less_traffic_than_fast_ones() {
    require_proxy!();
    let (lab, vip) = web_lab("pewm");
    let slow = &lab.east[0];
    slow.set_delay(SLOW);
    let total = 2000;
    let replies =
        get_many(lab.mesh.node(EAST0).pod(), vip, 4, total).expect("client in east-0's pod");
    let counts = tally(&replies);
    eprintln!("{} answers {SLOW:?} late: {counts:?}", slow.identity);
    assert!(failures(&replies).is_empty(), "failed requests: {counts:?}");
    let of = |id: &str| counts.get(id).copied().unwrap_or(0);
    let slow_n = of(&slow.identity);
    for fast in &lab.east[1..] {
        let fast_n = of(&fast.identity);
        assert!(
            slow_n * 4 < fast_n,
            "{} ({SLOW:?} slower) got {slow_n}, not well below {}'s {fast_n}: {counts:?}",
            slow.identity,
            fast.identity
        );
    }
    assert!(
        slow_n * 20 < total,
        "the slow endpoint took {slow_n} of {total} requests: {counts:?}"
    );
}
