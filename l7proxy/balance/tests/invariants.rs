//! Property tests: balancer invariants under random endpoint sets, picks, reports and time,
//! checked against a small model of what must hold.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use l7proxy_balance::{
    Balancer, BalancerConfig, EndpointInfo, FailureKind, Locality, Outcome, OutlierConfig, Tier,
};
use proptest::prelude::*;

fn loc(cluster: &str, region: &str, zone: &str, node: &str) -> Locality {
    Locality {
        cluster: cluster.into(),
        region: region.into(),
        zone: zone.into(),
        node: node.into(),
    }
}

fn me() -> Locality {
    loc("c1", "eu", "eu-a", "n1")
}

/// Localities an endpoint can have: every tier, several clusters, and unknown.
fn locality(i: u8) -> Locality {
    match i % 7 {
        0 => me(),
        1 => loc("c1", "eu", "eu-a", "n2"),
        2 => loc("c2", "eu", "eu-a", "n1"),
        3 => loc("c1", "eu", "eu-b", "n3"),
        4 => loc("c2", "eu", "eu-b", "n4"),
        5 => loc("c3", "us", "us-a", "n5"),
        _ => Locality::default(),
    }
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, i), 80))
}

#[derive(Debug, Clone)]
enum Op {
    Set(Vec<(u8, u8, bool)>),
    Pick(Vec<u8>),
    /// Reports the outstanding pick at this index (modulo), with this outcome.
    Report(usize, u8, u16),
    /// Reports an address that may have nothing in flight.
    Stray(u8, u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => prop::collection::vec((0u8..10, 0u8..7, prop::bool::weighted(0.7)), 0..10).prop_map(Op::Set),
        6 => prop::collection::vec(0u8..10, 0..3).prop_map(Op::Pick),
        5 => (any::<usize>(), 0u8..6, 0u16..500).prop_map(|(i, o, l)| Op::Report(i, o, l)),
        1 => (0u8..10, 0u8..6).prop_map(|(a, o)| Op::Stray(a, o)),
        2 => (0u16..5000).prop_map(Op::Advance),
    ]
}

fn outcome(o: u8, latency_ms: u16) -> Outcome {
    let latency = Duration::from_millis(u64::from(latency_ms));
    let kind = match o {
        0 | 1 => return Outcome::Success { latency },
        2 => FailureKind::Connect,
        3 => FailureKind::Reset,
        4 => FailureKind::Timeout,
        _ => FailureKind::Status5xx,
    };
    Outcome::Failure { kind, latency }
}

fn config() -> impl Strategy<Value = BalancerConfig> {
    (
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some("c1".to_string())),
            Just(Some("c2".to_string()))
        ],
        prop_oneof![Just(0.0), Just(0.5), Just(1.0)],
        prop_oneof![Just(1.0), Just(1.4), Just(2.0)],
        prop_oneof![Just(0u8), Just(10), Just(50), Just(100)],
        0u32..6,
        0u32..3,
    )
        .prop_map(
            |(
                local_only,
                pinned_cluster,
                panic_threshold,
                overprovision,
                pct,
                failures,
                connects,
            )| {
                BalancerConfig {
                    overprovision,
                    panic_threshold,
                    local_only,
                    pinned_cluster,
                    outlier: OutlierConfig {
                        consecutive_failures: failures,
                        consecutive_connect_failures: connects,
                        max_ejected_percent: pct,
                        ..OutlierConfig::default()
                    },
                    ..BalancerConfig::default()
                }
            },
        )
}

/// What the test knows independently of the balancer.
struct Model {
    config: BalancerConfig,
    set: BTreeMap<SocketAddr, EndpointInfo>,
    in_flight: HashMap<SocketAddr, u32>,
    outstanding: Vec<SocketAddr>,
}

impl Model {
    fn in_scope(&self, e: &EndpointInfo) -> bool {
        (!self.config.local_only || e.locality.cluster == me().cluster)
            && self
                .config
                .pinned_cluster
                .as_ref()
                .is_none_or(|c| *c == e.locality.cluster)
    }

    fn ready(&self) -> impl Iterator<Item = &EndpointInfo> {
        self.set.values().filter(|e| e.ready && self.in_scope(e))
    }

    fn max_ejected(&self, total: usize) -> usize {
        let pct = usize::from(self.config.outlier.max_ejected_percent.min(100));
        if pct == 0 || total == 0 {
            0
        } else {
            (total * pct / 100).max(1)
        }
    }
}

fn ejected_in_tier(b: &Balancer, m: &Model, tier: Tier, now: Instant) -> (usize, usize) {
    let rows = b.explain(now);
    let in_tier = rows
        .iter()
        .filter(|r| r.tier == tier && m.in_scope(&m.set[&r.addr]));
    in_tier.fold((0, 0), |(ejected, total), r| {
        (ejected + usize::from(r.ejected_until.is_some()), total + 1)
    })
}

fn check(b: &Balancer, m: &Model, now: Instant) -> Result<(), TestCaseError> {
    let shares = b.tier_shares(now);
    prop_assert!(shares.iter().all(|s| (0.0..=1.0).contains(s)), "{shares:?}");
    let sum: f64 = shares.iter().sum();
    if m.ready().next().is_some() {
        prop_assert!((sum - 1.0).abs() < 1e-9, "{shares:?}");
    } else {
        prop_assert_eq!(sum, 0.0);
    }
    prop_assert_eq!(b.len(), m.set.values().filter(|e| m.in_scope(e)).count());
    prop_assert_eq!(b.is_empty(), m.set.values().all(|e| !m.in_scope(e)));
    let rows = b.explain(now);
    prop_assert_eq!(rows.len(), m.set.len());
    for r in &rows {
        let e = &m.set[&r.addr];
        prop_assert_eq!((&r.locality, r.ready), (&e.locality, e.ready));
        prop_assert_eq!(r.tier, Tier::of(&me(), &e.locality));
        prop_assert_eq!(r.in_flight, m.in_flight.get(&r.addr).copied().unwrap_or(0));
        prop_assert!(r.ejected_until.is_none_or(|u| u > now));
        prop_assert!(!r.reason.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn balancer_invariants(config in config(), seed in any::<u64>(), ops in prop::collection::vec(op(), 1..80)) {
        let mut now = Instant::now();
        let mut b = Balancer::new(me(), config.clone(), seed);
        let mut m = Model { config, set: BTreeMap::new(), in_flight: HashMap::new(), outstanding: Vec::new() };
        for op in ops {
            match op {
                Op::Set(spec) => {
                    let endpoints: Vec<EndpointInfo> = spec
                        .iter()
                        .map(|&(a, l, ready)| EndpointInfo { addr: addr(a), locality: locality(l), ready })
                        .collect();
                    let before = b.explain(now);
                    b.set_endpoints(endpoints.clone(), now);
                    m.set.clear();
                    for e in endpoints {
                        m.set.entry(e.addr).or_insert(e);
                    }
                    m.in_flight.retain(|a, _| m.set.contains_key(a));
                    m.outstanding.retain(|a| m.set.contains_key(a));
                    for r in b.explain(now) {
                        if let Some(old) = before.iter().find(|o| o.addr == r.addr) {
                            prop_assert_eq!((r.ewma, r.ejected_until, r.in_flight), (old.ewma, old.ejected_until, old.in_flight));
                        }
                    }
                }
                Op::Pick(avoid) => {
                    let avoid: Vec<SocketAddr> = avoid.into_iter().map(addr).collect();
                    let pick = b.pick(now, &avoid);
                    let any_ready = m.ready().next().is_some();
                    let untried_ready = m.ready().any(|e| !avoid.contains(&e.addr));
                    match pick {
                        None => prop_assert!(!any_ready, "None while a ready endpoint exists"),
                        Some(p) => {
                            let e = m.set.get(&p.addr);
                            prop_assert!(e.is_some_and(|e| m.in_scope(e)), "picked {} outside the set", p.addr);
                            let e = &m.set[&p.addr];
                            prop_assert!(e.ready, "picked a not-ready endpoint");
                            prop_assert_eq!(p.tier, Tier::of(&me(), &e.locality));
                            prop_assert!(!untried_ready || !avoid.contains(&p.addr), "picked an avoided endpoint");
                            *m.in_flight.entry(p.addr).or_default() += 1;
                            m.outstanding.push(p.addr);
                        }
                    }
                }
                Op::Report(i, o, latency) => {
                    if m.outstanding.is_empty() {
                        continue;
                    }
                    let a = m.outstanding.swap_remove(i % m.outstanding.len());
                    let tier = Tier::of(&me(), &m.set[&a].locality);
                    let (ejected_before, _) = ejected_in_tier(&b, &m, tier, now);
                    b.report(a, outcome(o, latency), now);
                    if let Some(n) = m.in_flight.get_mut(&a) {
                        *n = n.saturating_sub(1);
                    }
                    let (ejected, total) = ejected_in_tier(&b, &m, tier, now);
                    // Connect failures eject past the cap (unless ejection is disabled).
                    let uncapped = o == 2 && m.config.outlier.max_ejected_percent > 0;
                    prop_assert!(ejected <= ejected_before || ejected <= m.max_ejected(total) || uncapped,
                        "{ejected} of {total} ejected in {tier}");
                }
                Op::Stray(a, o) => {
                    let a = addr(a);
                    b.report(a, outcome(o, 10), now);
                    if let Some(n) = m.in_flight.get_mut(&a) {
                        *n = n.saturating_sub(1);
                        // The stray report used up one outstanding attempt's accounting.
                        if let Some(k) = m.outstanding.iter().position(|x| *x == a) {
                            m.outstanding.swap_remove(k);
                        }
                    }
                }
                Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
            }
            check(&b, &m, now)?;
        }
    }
}
