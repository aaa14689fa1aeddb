//! With every endpoint healthy, the nearest tier takes the traffic.

use super::*;
use crate::client::{count_from, failures, get_many, tally};

/// Requests the issue asks for.
const REQUESTS: u64 = 10_000;

#[test]
fn healthy_local_endpoints_keep_99_percent_of_10000_requests() {
    require_proxy!();
    let (lab, vip) = web_lab("ploc");
    let shares = tier_shares(&lab.mesh, EAST0, WEB).expect("explain");
    assert_eq!(shares, [1.0, 0.0, 0.0, 0.0], "east-0's tier shares");

    let started = std::time::Instant::now();
    let replies =
        get_many(lab.mesh.node(EAST0).pod(), vip, 8, REQUESTS).expect("client in east-0's pod");
    let took = started.elapsed();
    let counts = tally(&replies);
    eprintln!("{REQUESTS} requests in {took:?}: {counts:?}");
    assert_eq!(replies.len() as u64, REQUESTS);
    assert!(failures(&replies).is_empty(), "failed requests: {counts:?}");
    let local = count_from(&replies, "east-");
    assert!(
        local * 100 >= REQUESTS * 99,
        "only {local} of {REQUESTS} requests stayed on east-0: {counts:?}"
    );
    // The endpoints saw what the client saw: every request reached exactly one of them.
    let served: u64 = lab
        .east
        .iter()
        .chain(&lab.west)
        .map(Endpoint::requests)
        .sum();
    assert_eq!(served, REQUESTS, "requests the endpoints served");
    // The same-node tier is balanced: each local endpoint takes a fair part.
    for e in &lab.east {
        let n = counts.get(&e.identity).copied().unwrap_or(0);
        assert!(
            n * 10 >= REQUESTS,
            "{} took only {n} requests: {counts:?}",
            e.identity
        );
    }
}
