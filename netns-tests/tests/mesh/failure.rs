//! Failures: a node killed outright, and the underlay link between two clusters cut and
//! restored.

use std::time::{Duration, Instant};

use netns_tests::{MeshLab, ping};

use super::*;

/// The target for declaring a killed node dead.
const DEAD_WITHIN: Duration = Duration::from_secs(3);

#[test]
fn a_killed_node_is_dead_everywhere_within_3s_and_comes_back() {
    require_mesh!();
    let mut mesh = two_by_two("mkil");
    // west-0: west-1's only seed.
    let (victim, observers) = (2, [0, 1, 3]);
    let (name, cidr) = {
        let v = mesh.node(victim);
        (v.name.clone(), v.pod_cidr.clone())
    };
    mesh.node_mut(victim)
        .expect("victim")
        .kill()
        .expect("SIGKILL");
    let killed = Instant::now();

    // When each observer first showed the victim dead, and when its kernel lost the route.
    let mut dead_at = [None; 3];
    let mut unrouted_at = [None; 3];
    mesh.wait_for(
        Duration::from_secs(10),
        "every observer to show the victim dead and drop its route",
        |m| {
            let mut missing = None;
            for (slot, &o) in observers.iter().enumerate() {
                let node = m.node(o);
                let state = node.state_of(&name)?;
                if dead_at[slot].is_none() && state.as_deref() == Some("dead") {
                    dead_at[slot] = Some(killed.elapsed());
                }
                let routes = node.routes()?;
                if unrouted_at[slot].is_none() && !routes.contains(&cidr) {
                    unrouted_at[slot] = Some(killed.elapsed());
                }
                if dead_at[slot].is_none() || unrouted_at[slot].is_none() {
                    missing = Some(format!(
                        "{} shows {name} as {state:?} with routes {routes:?}",
                        node.name
                    ));
                }
            }
            Ok(missing)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "{name} killed: dead at observers after {dead_at:?}, routes gone after {unrouted_at:?}"
    );
    let slowest = dead_at.iter().flatten().max().copied().unwrap_or_default();
    assert!(
        slowest <= DEAD_WITHIN,
        "{name} declared dead only after {slowest:?}: {dead_at:?}"
    );
    // Nothing of the victim is left in any kernel: no route to its pods or overlay address.
    let gone = mesh.node(victim).address.to_string();
    for &o in &observers {
        let routes = mesh.node(o).routes().expect("routes");
        assert!(
            !routes.iter().any(|r| r == &cidr || r.starts_with(&gone)),
            "{} still routes to {name}: {routes:?}",
            mesh.node(o).name
        );
    }

    mesh.node_mut(victim)
        .expect("victim")
        .restart()
        .expect("the victim restarts");
    let restarted = Instant::now();
    let back = mesh
        .wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("after the restart: {e:#}"));
    mesh.pods_ping_all(PING)
        .unwrap_or_else(|e| panic!("after the restart: {e:#}"));
    eprintln!(
        "{name} alive and routed everywhere {back:?} after its restart; every pod pair pings {:?} after it",
        restarted.elapsed()
    );
}

#[test]
fn a_cut_between_clusters_heals_without_restarts() {
    require_mesh!();
    let mut mesh = two_by_two("mcut");
    let (east, west) = ([0, 1], [2, 3]);
    mesh.cut(WEST).expect("cut west off");
    let cut = Instant::now();
    let split = mesh
        .wait_for(
            Duration::from_secs(10),
            "each side to declare the other dead",
            |m| split_missing(m, &east, &west),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("cut: each side sees the other dead, routes withdrawn, {split:?} after the cut");
    // Inside each cluster, pods still talk; across, they cannot.
    for (a, b) in [(0, 1), (2, 3)] {
        assert!(
            ping(mesh.node(a).pod(), mesh.node(b).pod_ip.into(), 3),
            "{} -> {} inside a cluster during the cut\n{}",
            mesh.node(a).name,
            mesh.node(b).name,
            mesh.logs()
        );
    }
    assert!(
        !ping(mesh.node(0).pod(), mesh.node(2).pod_ip.into(), 1),
        "a pod crossed the cut"
    );

    mesh.restore(WEST).expect("link back");
    let healed = Instant::now();
    let back = mesh
        .wait_converged(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("after the link came back: {e:#}"));
    mesh.pods_ping_all(PING)
        .unwrap_or_else(|e| panic!("after the link came back: {e:#}"));
    eprintln!(
        "link restored: reconverged {back:?} after it, every pod pair pings {:?} after it ({:?} after the cut)",
        healed.elapsed(),
        cut.elapsed()
    );
    for i in 0..4 {
        let node = mesh.node_mut(i).expect("node");
        assert!(node.is_running(), "{} exited", node.name);
    }
}

/// What still differs from a clean split: every node of `a` sees every node of `b` dead and
/// routes nothing to it (and the other way round), while nodes of one side still see each other
/// alive and routed.
fn split_missing(mesh: &MeshLab, a: &[usize], b: &[usize]) -> anyhow::Result<Option<String>> {
    for (mine, theirs) in [(a, b), (b, a)] {
        for &i in mine {
            let node = mesh.node(i);
            let status = node.status()?;
            let routes = node.routes()?;
            for &j in theirs.iter().chain(mine.iter().filter(|&&j| j != i)) {
                let other = mesh.node(j);
                let want_dead = theirs.contains(&j);
                let state = netns_tests::peer_state(&status, &other.name);
                let routed = routes.contains(&other.pod_cidr);
                let ok = if want_dead {
                    state == Some("dead") && !routed
                } else {
                    state == Some("alive") && routed
                };
                if !ok {
                    return Ok(Some(format!(
                        "{} sees {} as {state:?}, routed: {routed}",
                        node.name, other.name
                    )));
                }
            }
        }
    }
    Ok(None)
}
