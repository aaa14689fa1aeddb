//! Endpoints dying: spillover to the next tier in Envoy's proportion, and failover of all
//! traffic to the remote cluster without a failed request.

use std::time::Instant;

use super::*;
use crate::client::{Load, Reply, count_from, failures, get_many, tally};

/// Envoy's overprovisioning factor, peerd's default.
const OVERPROVISION: f64 = 1.4;
/// Allowed distance of a measured share from the expected one.
const TOLERANCE: f64 = 0.06;
/// The target: from this long after the kill, every answer comes from the remote
/// cluster.
const FAILOVER: Duration = Duration::from_secs(1);

#[test]
fn two_of_three_local_endpoints_dead_spill_the_expected_share_to_the_remote_cluster() {
    require_proxy!();
    let (mut lab, vip) = web_lab("pspl");
    let pod = lab.mesh.node(EAST0).pod().handle();
    for e in &mut lab.east[1..] {
        e.kill();
    }
    // The first requests find the dead endpoints (refused connections, retried elsewhere).
    let warmup = get_many(&pod, vip, 4, 200).expect("warm-up requests");
    assert!(failures(&warmup).is_empty(), "{:?}", tally(&warmup));
    let shares = tier_shares(&lab.mesh, EAST0, WEB).expect("explain");
    let want = OVERPROVISION / 3.0;
    assert!(
        (shares[0] - want).abs() < 1e-6 && (shares[3] - (1.0 - want)).abs() < 1e-6,
        "east-0's tier shares {shares:?}, want [{want}, 0, 0, {}]\n{:#}",
        1.0 - want,
        explain(&lab.mesh, EAST0, WEB).unwrap_or_default()
    );

    let total = 4000;
    let replies = get_many(&pod, vip, 4, total).expect("client in east-0's pod");
    let counts = tally(&replies);
    assert!(failures(&replies).is_empty(), "failed requests: {counts:?}");
    let local = count_from(&replies, "east-") as f64 / total as f64;
    eprintln!("local share {local:.3} (want {want:.3}): {counts:?}");
    assert!(
        (local - want).abs() <= TOLERANCE,
        "the live local endpoint took {local:.3} of the traffic, want {want:.3} ± {TOLERANCE}: \
         {counts:?}"
    );
    let remote = count_from(&replies, "west-");
    assert_eq!(
        remote + count_from(&replies, "east-1"),
        total,
        "answers only from east-1 and west: {counts:?}"
    );
}

#[test]
fn all_local_endpoints_killed_under_load_fail_over_without_errors_and_come_back() {
    require_proxy!();
    let (mut lab, vip) = web_lab("pfo");
    let pod = lab.mesh.node(EAST0).pod().handle();
    let load = Load::start(&pod, vip, 4, None);
    std::thread::sleep(Duration::from_secs(1));

    let killed = Instant::now();
    for e in &mut lab.east {
        e.kill();
    }
    // The balancer itself moves all traffic away within the target, not only the retries.
    let moved = wait_until(FAILOVER, "all traffic on the remote tier", || {
        Ok(tier_shares(&lab.mesh, EAST0, WEB)? == [0.0, 0.0, 0.0, 1.0])
    });
    let moved_after = killed.elapsed();
    std::thread::sleep(Duration::from_secs(3).saturating_sub(moved_after));

    let restarted = Instant::now();
    for e in &mut lab.east {
        e.restart().expect("endpoint restarts");
    }
    // Ejections of the dead endpoints end by themselves (1 s, doubling per ejection).
    let back = wait_until(Duration::from_secs(20), "the local tier back", || {
        Ok(tier_shares(&lab.mesh, EAST0, WEB)?[0] == 1.0)
    });
    std::thread::sleep(Duration::from_secs(1));
    let replies = load.stop().expect("load");
    moved.unwrap_or_else(|e| panic!("{e:#}"));
    back.unwrap_or_else(|e| panic!("{e:#}"));
    let stopped = Instant::now();

    let counts = tally(&replies);
    let failed = failures(&replies);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        replies.len(),
        &failed[..failed.len().min(5)]
    );
    let window = |from: Instant, to: Instant| -> Vec<Reply> {
        replies
            .iter()
            .filter(|r| r.at >= from && r.at < to)
            .cloned()
            .collect()
    };
    let before = window(killed - Duration::from_millis(800), killed);
    let during = window(killed + FAILOVER, restarted);
    let after = window(stopped - Duration::from_millis(800), stopped);
    for (what, part) in [("before", &before), ("during", &during), ("after", &after)] {
        assert!(
            part.len() >= 50,
            "only {} replies {what} the outage",
            part.len()
        );
    }
    assert_eq!(
        count_from(&before, "east-"),
        before.len() as u64,
        "before the kill: {:?}",
        tally(&before)
    );
    assert_eq!(
        count_from(&during, "west-"),
        during.len() as u64,
        "from {FAILOVER:?} after the kill: {:?}",
        tally(&during)
    );
    let local_after = count_from(&after, "east-");
    assert!(
        local_after * 100 >= after.len() as u64 * 99,
        "after the restart only {local_after} of {} answers were local: {:?}",
        after.len(),
        tally(&after)
    );
    let last_local = replies
        .iter()
        .filter(|r| r.at < restarted && r.outcome.as_ref().is_ok_and(|id| id.starts_with("east-")))
        .map(|r| r.at.saturating_duration_since(killed))
        .max();
    let first_back = replies
        .iter()
        .find(|r| r.at >= restarted && r.outcome.as_ref().is_ok_and(|id| id.starts_with("east-")))
        .map(|r| r.at.duration_since(restarted));
    eprintln!(
        "{} requests, none failed: {counts:?}; tier shares all remote {moved_after:?} after \
         the kill, last local answer {last_local:?} after it; first local answer {first_back:?} \
         after the restart",
        replies.len()
    );
}
