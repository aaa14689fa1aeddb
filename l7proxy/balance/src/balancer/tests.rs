use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::{FailureKind, OutlierConfig};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const PICKS: usize = 10_000;

fn loc(cluster: &str, zone: &str, node: &str) -> Locality {
    let region = zone.split('-').next().unwrap_or_default();
    Locality {
        cluster: cluster.into(),
        region: region.into(),
        zone: zone.into(),
        node: node.into(),
    }
}

/// This proxy: cluster c1, zone eu-a, node n1.
fn me() -> Locality {
    loc("c1", "eu-a", "n1")
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, n), 8080))
}

fn ep(n: u8, locality: Locality) -> EndpointInfo {
    EndpointInfo {
        addr: addr(n),
        locality,
        ready: true,
    }
}

fn not_ready(n: u8, locality: Locality) -> EndpointInfo {
    EndpointInfo {
        ready: false,
        ..ep(n, locality)
    }
}

fn balancer(endpoints: Vec<EndpointInfo>, now: Instant) -> Balancer {
    balancer_with(BalancerConfig::default(), endpoints, now)
}

fn balancer_with(config: BalancerConfig, endpoints: Vec<EndpointInfo>, now: Instant) -> Balancer {
    let mut b = Balancer::new(me(), config, 7);
    b.set_endpoints(endpoints, now);
    b
}

fn ok(ms: u32) -> Outcome {
    Outcome::Success { latency: ms * MS }
}

fn fail(kind: FailureKind) -> Outcome {
    Outcome::Failure { kind, latency: MS }
}

/// `PICKS` picks at `now`, each reported as a 10 ms success; counts per tier and per address.
fn run(b: &mut Balancer, now: Instant) -> ([usize; 4], HashMap<SocketAddr, usize>) {
    let mut tiers = [0; 4];
    let mut addrs = HashMap::new();
    for _ in 0..PICKS {
        let p = b.pick(now, &[]).expect("a ready endpoint exists");
        tiers[p.tier.index()] += 1;
        *addrs.entry(p.addr).or_default() += 1;
        b.report(p.addr, ok(10), now);
    }
    (tiers, addrs)
}

fn frac(n: usize) -> f64 {
    n as f64 / PICKS as f64
}

/// Zone eu-a holds 1..=3, region eu 4..=6, remote 7..=8.
fn zone_region_remote() -> Vec<EndpointInfo> {
    let mut v: Vec<_> = (1..=3).map(|n| ep(n, loc("c2", "eu-a", "x"))).collect();
    v.extend((4..=6).map(|n| ep(n, loc("c1", "eu-b", "y"))));
    v.extend((7..=8).map(|n| ep(n, loc("c3", "us-a", "z"))));
    v
}

#[test]
fn healthy_same_zone_tier_keeps_the_traffic() {
    let now = Instant::now();
    let mut b = balancer(zone_region_remote(), now);
    let (tiers, addrs) = run(&mut b, now);
    assert!(frac(tiers[Tier::SameZone.index()]) >= 0.99, "{tiers:?}");
    assert_eq!(b.tier_shares(now), [0.0, 1.0, 0.0, 0.0]);
    // P2C spreads the zone's traffic over all three.
    for n in 1..=3 {
        assert!(frac(addrs[&addr(n)]) > 0.25, "{addrs:?}");
    }
}

#[test]
fn healthy_same_node_endpoint_takes_everything() {
    let now = Instant::now();
    let mut endpoints = zone_region_remote();
    endpoints.push(ep(9, me()));
    let mut b = balancer(endpoints, now);
    let (tiers, _) = run(&mut b, now);
    assert_eq!(tiers[Tier::SameNode.index()], PICKS);
}

#[test]
fn two_of_three_unhealthy_spill_over() {
    let now = Instant::now();
    let mut endpoints = zone_region_remote();
    endpoints[1].ready = false;
    endpoints[2].ready = false;
    let mut b = balancer(endpoints, now);
    let expected = 1.4 / 3.0;
    let shares = b.tier_shares(now);
    assert!(
        (shares[1] - expected).abs() < 1e-9 && (shares[2] - (1.0 - expected)).abs() < 1e-9,
        "{shares:?}"
    );
    let (tiers, addrs) = run(&mut b, now);
    assert!((frac(tiers[1]) - expected).abs() < 0.03, "{tiers:?}");
    assert!(
        (frac(tiers[2]) - (1.0 - expected)).abs() < 0.03,
        "{tiers:?}"
    );
    assert_eq!(tiers[0] + tiers[3], 0);
    assert!(!addrs.contains_key(&addr(2)) && !addrs.contains_key(&addr(3)));
    let row = b
        .explain(now)
        .into_iter()
        .find(|r| r.addr == addr(4))
        .unwrap();
    assert_eq!(
        row.reason,
        "spillover (53.3% of traffic): same-zone has 1/3 healthy"
    );
}

#[test]
fn ejected_tier_spills_entirely_and_traffic_returns() {
    let t0 = Instant::now();
    let mut endpoints = zone_region_remote();
    endpoints.push(ep(9, me()));
    let mut b = balancer(endpoints, t0);
    // A refused connect ejects the lone same-node endpoint at once.
    b.report(addr(9), fail(FailureKind::Connect), t0);
    assert_eq!(b.tier_shares(t0), [0.0, 1.0, 0.0, 0.0]);
    let (tiers, _) = run(&mut b, t0);
    assert_eq!(tiers[Tier::SameZone.index()], PICKS);
    let row = b
        .explain(t0)
        .into_iter()
        .find(|r| r.addr == addr(9))
        .unwrap();
    assert_eq!(row.ejected_until, Some(t0 + SEC));
    assert_eq!(
        row.reason,
        "ejected for 1.0s after a connect failure (ejection 1)"
    );
    // After the base ejection time it is back.
    let t1 = t0 + SEC;
    let (tiers, _) = run(&mut b, t1);
    assert_eq!(tiers[Tier::SameNode.index()], PICKS);
}

#[test]
fn whole_multi_endpoint_tier_ejected_when_the_cap_allows() {
    let t0 = Instant::now();
    let config = BalancerConfig {
        outlier: OutlierConfig {
            max_ejected_percent: 100,
            ..OutlierConfig::default()
        },
        ..BalancerConfig::default()
    };
    let mut b = balancer_with(config, zone_region_remote(), t0);
    for n in 1..=3 {
        for _ in 0..5 {
            b.report(addr(n), fail(FailureKind::Status5xx), t0);
        }
    }
    let (tiers, _) = run(&mut b, t0);
    assert_eq!(tiers[Tier::SameRegion.index()], PICKS, "{tiers:?}");
    let (tiers, _) = run(&mut b, t0 + SEC);
    assert_eq!(tiers[Tier::SameZone.index()], PICKS, "{tiers:?}");
}

#[test]
fn slow_endpoint_gets_clearly_less_traffic() {
    let t0 = Instant::now();
    let endpoints = (1..=3).map(|n| ep(n, loc("c1", "eu-a", "x"))).collect();
    let mut b = balancer(endpoints, t0);
    let latency = |a: SocketAddr| if a == addr(3) { 100 * MS } else { 10 * MS };
    // One request per millisecond, each completing after its endpoint's latency.
    let mut pending: Vec<(Instant, SocketAddr)> = Vec::new();
    let mut picks: HashMap<SocketAddr, usize> = HashMap::new();
    let mut now = t0;
    for _ in 0..PICKS {
        now += MS;
        pending.retain(|&(due, a)| {
            let done = due <= now;
            if done {
                b.report(
                    a,
                    Outcome::Success {
                        latency: latency(a),
                    },
                    now,
                );
            }
            !done
        });
        let p = b.pick(now, &[]).unwrap();
        *picks.entry(p.addr).or_default() += 1;
        pending.push((now + latency(p.addr), p.addr));
    }
    assert!(frac(picks[&addr(3)]) < 0.2, "{picks:?}");
    assert!(
        frac(picks[&addr(1)]) > 0.35 && frac(picks[&addr(2)]) > 0.35,
        "{picks:?}"
    );
}

#[test]
fn failures_cost_traffic_before_ejection() {
    let now = Instant::now();
    let endpoints = (1..=3).map(|n| ep(n, loc("c1", "eu-a", "x"))).collect();
    let mut b = balancer(endpoints, now);
    for _ in 0..4 {
        b.report(addr(1), fail(FailureKind::Status5xx), now);
    }
    assert!(b.explain(now).iter().all(|r| r.ejected_until.is_none()));
    let (_, addrs) = run(&mut b, now);
    assert!(
        frac(addrs.get(&addr(1)).copied().unwrap_or(0)) < 0.05,
        "{addrs:?}"
    );
}

#[test]
fn in_flight_spreads_unreported_picks() {
    let now = Instant::now();
    let endpoints = (1..=2).map(|n| ep(n, loc("c1", "eu-a", "x"))).collect();
    let mut b = balancer(endpoints, now);
    for _ in 0..100 {
        b.pick(now, &[]).unwrap();
    }
    let rows = b.explain(now);
    assert_eq!(
        rows.iter().map(|r| r.in_flight).collect::<Vec<_>>(),
        [50, 50]
    );
    for _ in 0..200 {
        b.report(addr(1), ok(10), now);
    }
    assert_eq!(b.explain(now)[0].in_flight, 0, "no underflow");
}

#[test]
fn back_off_doubles_on_repeated_ejection() {
    let t0 = Instant::now();
    let mut b = balancer(zone_region_remote(), t0);
    let until = |b: &Balancer, now| {
        b.explain(now)
            .into_iter()
            .find(|r| r.addr == addr(1))
            .unwrap()
            .ejected_until
    };
    let mut now = t0;
    for expected in [1, 2, 4, 8, 16, 30, 30] {
        b.report(addr(1), fail(FailureKind::Connect), now);
        assert_eq!(until(&b, now), Some(now + expected * SEC));
        // Outcomes of attempts still in flight do not extend the ejection.
        b.report(addr(1), fail(FailureKind::Connect), now + MS);
        assert_eq!(until(&b, now + MS), Some(now + expected * SEC));
        now += expected * SEC;
        assert_eq!(until(&b, now), None);
    }
    // A clean minute (two max-ejection periods) halves the count twice: 7 → 1.
    now += 60 * SEC;
    b.report(addr(1), fail(FailureKind::Connect), now);
    assert_eq!(until(&b, now), Some(now + 2 * SEC));
}

#[test]
fn five_failures_eject_and_a_success_resets() {
    let now = Instant::now();
    let mut b = balancer(zone_region_remote(), now);
    let ejected = |b: &Balancer| {
        b.explain(now)
            .into_iter()
            .find(|r| r.addr == addr(1))
            .unwrap()
            .ejected_until
    };
    for kind in [
        FailureKind::Status5xx,
        FailureKind::Reset,
        FailureKind::Timeout,
        FailureKind::Status5xx,
    ] {
        b.report(addr(1), fail(kind), now);
    }
    b.report(addr(1), ok(5), now);
    for _ in 0..4 {
        b.report(addr(1), fail(FailureKind::Timeout), now);
    }
    assert_eq!(ejected(&b), None);
    b.report(addr(1), fail(FailureKind::Timeout), now);
    assert_eq!(ejected(&b), Some(now + SEC));
    assert_eq!(b.ejected_until(addr(1), now), Some(now + SEC));
    assert_eq!(b.ejected_until(addr(1), now + SEC), None);
    assert_eq!(b.ejected_until(addr(99), now), None);
}

/// Five 5xx answers in a row: the failures that eject under the cap.
fn fail_5xx_run(b: &mut Balancer, n: u8, now: Instant) {
    for _ in 0..5 {
        b.report(addr(n), fail(FailureKind::Status5xx), now);
    }
}

#[test]
fn max_ejected_percent_caps_each_tier() {
    let now = Instant::now();
    let endpoints: Vec<_> = (1..=5).map(|n| ep(n, loc("c1", "eu-a", "x"))).collect();
    let mut b = balancer(endpoints, now);
    for n in 1..=5 {
        fail_5xx_run(&mut b, n, now);
    }
    let rows = b.explain(now);
    // 50 % of 5, rounded down.
    assert_eq!(rows.iter().filter(|r| r.ejected_until.is_some()).count(), 2);
    let held = rows.iter().find(|r| r.ejected_until.is_none()).unwrap();
    assert!(
        held.reason
            .contains("5 consecutive failures, not ejected: 2 of the tier already ejected (cap)"),
        "{}",
        held.reason
    );
    // When an ejection ends, the next failure of a held endpoint can take its place.
    let later = now + SEC;
    b.report(held.addr, fail(FailureKind::Status5xx), later);
    assert!(
        b.explain(later)
            .into_iter()
            .find(|r| r.addr == held.addr)
            .unwrap()
            .ejected_until
            .is_some()
    );

    // Two endpoints: one may go even at a 10 % cap.
    let config = BalancerConfig {
        outlier: OutlierConfig {
            max_ejected_percent: 10,
            ..OutlierConfig::default()
        },
        ..BalancerConfig::default()
    };
    let mut b = balancer_with(
        config,
        (1..=2).map(|n| ep(n, loc("c1", "eu-a", "x"))).collect(),
        now,
    );
    fail_5xx_run(&mut b, 1, now);
    fail_5xx_run(&mut b, 2, now);
    assert_eq!(
        b.explain(now)
            .iter()
            .filter(|r| r.ejected_until.is_some())
            .count(),
        1
    );
}

#[test]
fn connect_failures_eject_past_the_cap_and_spill_in_envoy_proportion() {
    let now = Instant::now();
    // Three on this node, three remote: two local ones refuse connections.
    let mut endpoints: Vec<_> = (1..=3).map(|n| ep(n, me())).collect();
    endpoints.extend((4..=6).map(|n| ep(n, loc("c2", "us-b", "m1"))));
    let mut b = balancer(endpoints, now);
    b.report(addr(2), fail(FailureKind::Connect), now);
    b.report(addr(3), fail(FailureKind::Connect), now);
    let shares = b.tier_shares(now);
    let kept = 1.4 / 3.0;
    assert!(
        (shares[0] - kept).abs() < 1e-9 && (shares[3] - (1.0 - kept)).abs() < 1e-9,
        "{shares:?}"
    );
    let (tiers, addrs) = run(&mut b, now);
    assert!((frac(tiers[0]) - kept).abs() < 0.02, "{tiers:?}");
    assert_eq!(addrs.get(&addr(2)).copied().unwrap_or(0), 0);
    assert_eq!(addrs.get(&addr(3)).copied().unwrap_or(0), 0);

    // All three dead: everything goes remote, without panic (the remote tier is healthy).
    b.report(addr(1), fail(FailureKind::Connect), now);
    let shares = b.tier_shares(now);
    assert_eq!(shares, [0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn an_endpoint_back_from_ejection_is_probed_despite_its_cost() {
    let now = Instant::now();
    let mut b = balancer((1..=2).map(|n| ep(n, me())).collect(), now);
    // addr(1) is fast; addr(2) refused a connection and carries the failure penalty.
    for _ in 0..20 {
        b.report(addr(1), ok(1), now);
    }
    b.report(addr(2), fail(FailureKind::Connect), now);
    assert!(b.ejected_until(addr(2), now).is_some());
    let back = now + 2 * SEC;
    assert!(b.ejected_until(addr(2), back).is_none());
    // The first pick after the ejection is the probe, although addr(1) is much cheaper.
    let probe = b.pick(back, &[]).unwrap();
    assert_eq!(probe.addr, addr(2));
    // While the probe is out, cost decides again.
    let next = b.pick(back, &[]).unwrap();
    assert_eq!(next.addr, addr(1));
    b.report(next.addr, ok(1), back);
    // The probe fails: ejected again, for twice as long.
    b.report(addr(2), fail(FailureKind::Connect), back);
    assert_eq!(b.ejected_until(addr(2), back), Some(back + 2 * SEC));
}

#[test]
fn panic_uses_ejected_endpoints_of_a_starved_tier() {
    let now = Instant::now();
    // 4 in the zone: 2 not ready, 1 ejected, 1 healthy → total health 0.35 < 0.5.
    let endpoints = vec![
        ep(1, loc("c1", "eu-a", "x")),
        ep(2, loc("c1", "eu-a", "x")),
        not_ready(3, loc("c1", "eu-a", "x")),
        not_ready(4, loc("c1", "eu-a", "x")),
    ];
    let mut b = balancer(endpoints.clone(), now);
    b.report(addr(2), fail(FailureKind::Connect), now);
    let row = b
        .explain(now)
        .into_iter()
        .find(|r| r.addr == addr(2))
        .unwrap();
    assert!(
        row.reason
            .ends_with("used anyway: panic, total health 35% below 50%"),
        "{}",
        row.reason
    );
    // Under concurrent load (nothing reported yet) the ejected one takes part of it: its cost
    // carries the 200 ms failure penalty, so it is chosen once the healthy one has ~10 in flight.
    let in_flight = |b: &mut Balancer| {
        let mut addrs: HashMap<SocketAddr, u32> = HashMap::new();
        for _ in 0..100 {
            *addrs.entry(b.pick(now, &[]).unwrap().addr).or_default() += 1;
        }
        addrs
    };
    let addrs = in_flight(&mut b);
    assert!((5..=20).contains(&addrs[&addr(2)]), "{addrs:?}");
    assert!(!addrs.contains_key(&addr(3)) && !addrs.contains_key(&addr(4)));
    // Under sequential load the healthy one is cheaper every time.
    let (_, addrs) = run(&mut b, now);
    assert_eq!(addrs.keys().collect::<Vec<_>>(), [&addr(1)]);

    // Without panic the ejected one gets nothing, however loaded the healthy one is.
    let config = BalancerConfig {
        panic_threshold: 0.0,
        ..BalancerConfig::default()
    };
    let mut b = balancer_with(config, endpoints, now);
    b.report(addr(2), fail(FailureKind::Connect), now);
    assert_eq!(in_flight(&mut b).keys().collect::<Vec<_>>(), [&addr(1)]);
}

#[test]
fn panic_does_not_move_traffic_to_an_ejected_tier() {
    let now = Instant::now();
    // The same-node endpoint is ejected; the zone has 1 of 3 ready, so total health is 0.47.
    let endpoints = vec![
        ep(9, me()),
        ep(1, loc("c1", "eu-a", "x")),
        not_ready(2, loc("c1", "eu-a", "x")),
        not_ready(3, loc("c1", "eu-a", "x")),
    ];
    let mut b = balancer(endpoints, now);
    b.report(addr(9), fail(FailureKind::Connect), now);
    let (_, addrs) = run(&mut b, now);
    assert_eq!(addrs.keys().collect::<Vec<_>>(), [&addr(1)]);
}

#[test]
fn last_resort_then_nothing() {
    let now = Instant::now();
    let config = BalancerConfig {
        panic_threshold: 0.0,
        ..BalancerConfig::default()
    };
    let mut b = balancer_with(
        config,
        vec![ep(1, loc("c1", "eu-a", "x")), not_ready(2, me())],
        now,
    );
    b.report(addr(1), fail(FailureKind::Connect), now);
    assert_eq!(b.tier_shares(now), [0.0, 1.0, 0.0, 0.0]);
    assert_eq!(b.pick(now, &[]).map(|p| p.addr), Some(addr(1)));
    assert!(
        b.explain(now)[1]
            .reason
            .ends_with("used as last resort: no endpoint is healthy")
    );

    b.set_endpoints(vec![not_ready(1, me()), not_ready(2, me())], now);
    assert_eq!(b.pick(now, &[]), None);
    assert_eq!(b.tier_shares(now), [0.0; 4]);
    assert_eq!(b.len(), 2);
    b.set_endpoints(Vec::new(), now);
    assert!(b.is_empty() && b.pick(now, &[]).is_none());
}

#[test]
fn retries_avoid_tried_endpoints_and_prefer_another_locality() {
    let now = Instant::now();
    let mut b = balancer(zone_region_remote(), now);
    // Other healthy endpoints in the tier, but a healthy tier elsewhere: a retry leaves the
    // failed one's locality (its endpoints tend to fail together), never to the tried one.
    for _ in 0..1000 {
        let p = b.pick(now, &[addr(1)]).unwrap();
        assert_ne!(p.addr, addr(1));
        assert_ne!(p.tier, Tier::SameZone);
        b.report(p.addr, ok(10), now);
    }
    // No other endpoint in the tier: the retry goes to the next tier.
    for _ in 0..100 {
        let p = b.pick(now, &[addr(1), addr(2), addr(3)]).unwrap();
        assert_eq!(p.tier, Tier::SameRegion);
        b.report(p.addr, ok(10), now);
    }
    // Everything tried: fall back to a tried one rather than nothing.
    let all: Vec<_> = (1..=8).map(addr).collect();
    assert!(b.pick(now, &all).is_some());
}

#[test]
fn retries_prefer_untried_ejected_over_tried() {
    let now = Instant::now();
    let mut b = balancer(
        (1..=2).map(|n| ep(n, loc("c1", "eu-a", "x"))).collect(),
        now,
    );
    b.report(addr(2), fail(FailureKind::Connect), now);
    assert_eq!(b.pick(now, &[addr(1)]).map(|p| p.addr), Some(addr(2)));
    assert_eq!(
        b.pick(now, &[addr(1), addr(2)]).map(|p| p.addr),
        Some(addr(1))
    );
}

#[test]
fn scope_local_only_and_pinned_cluster() {
    let now = Instant::now();
    let config = BalancerConfig {
        local_only: true,
        ..BalancerConfig::default()
    };
    let mut b = balancer_with(config, zone_region_remote(), now);
    assert_eq!(b.len(), 3);
    let (_, addrs) = run(&mut b, now);
    assert!(
        addrs
            .keys()
            .all(|a| [addr(4), addr(5), addr(6)].contains(a)),
        "{addrs:?}"
    );
    let rows = b.explain(now);
    assert_eq!(rows.len(), 8);
    assert_eq!(
        rows[7].reason,
        r#"not used: cluster "c3", local_only to "c1""#
    );

    let config = BalancerConfig {
        pinned_cluster: Some("c3".into()),
        ..BalancerConfig::default()
    };
    let mut b = balancer_with(config, zone_region_remote(), now);
    assert_eq!(b.tier_shares(now), [0.0, 0.0, 0.0, 1.0]);
    let (_, addrs) = run(&mut b, now);
    assert!(
        addrs.keys().all(|a| [addr(7), addr(8)].contains(a)),
        "{addrs:?}"
    );
    assert_eq!(
        b.explain(now)[7].reason,
        r#"not used: cluster "c1", name pinned to cluster "c3""#
    );
}

#[test]
fn set_endpoints_keeps_state_of_survivors() {
    let t0 = Instant::now();
    let mut b = balancer(zone_region_remote(), t0);
    b.report(addr(1), fail(FailureKind::Connect), t0);
    b.report(addr(2), ok(300), t0);
    let picked = b.pick(t0, &[]).unwrap().addr;
    let before = b.explain(t0);
    // Reorder, duplicate, drop one and add one; 2 becomes not ready.
    let mut next = zone_region_remote();
    next.reverse();
    next.retain(|e| e.addr != addr(8));
    next.push(ep(20, me()));
    next.push(ep(1, me()));
    next.iter_mut()
        .filter(|e| e.addr == addr(2))
        .for_each(|e| e.ready = false);
    b.set_endpoints(next, t0 + MS);
    let after = b.explain(t0);
    for row in &after {
        if let Some(old) = before.iter().find(|o| o.addr == row.addr) {
            assert_eq!(
                (row.ejected_until, row.ewma, row.in_flight),
                (old.ejected_until, old.ewma, old.in_flight)
            );
            assert_eq!(row.tier, old.tier, "first of a duplicate wins");
        }
    }
    assert_eq!(
        after.iter().find(|r| r.addr == picked).unwrap().in_flight,
        1
    );
    assert!(after.iter().all(|r| r.addr != addr(8)));
    assert_eq!(after[0].addr, addr(20));
    assert_eq!(
        after.iter().find(|r| r.addr == addr(2)).unwrap().reason,
        "not ready"
    );
}

#[test]
fn same_seed_same_picks() {
    let now = Instant::now();
    let picks = |seed| {
        let mut b = Balancer::new(me(), BalancerConfig::default(), seed);
        b.set_endpoints(zone_region_remote(), now);
        (0..50)
            .map(|_| b.pick(now, &[]).unwrap().addr)
            .collect::<Vec<_>>()
    };
    assert_eq!(picks(3), picks(3));
    assert_ne!(picks(3), picks(4));
}
