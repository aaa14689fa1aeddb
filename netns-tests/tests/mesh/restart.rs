//! A node's daemon crashes under traffic and starts again while its seeds are unreachable: the
//! routes and tunnels come back from its state directory, not from gossip it would have to wait
//! for. A second crash with the node unplugged from the network shows the routes need nothing
//! but the state directory.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netns_tests::{MeshLab, Netns, TcpSink, UdpProbe, kernel_routes, tcp_send_paced, wait_until};

use super::*;

/// The target: routes back within 1 s of the process start.
const ROUTES_WITHIN: Duration = Duration::from_secs(1);
/// A seed nobody answers at (east's bridge has no host .99).
const DEAD_SEED: &str = "192.0.2.99:51820";
/// The TCP stream that runs across the crash: 24 MB at 4 MB/s.
const STREAM: u64 = 24 << 20;
const PACE: u64 = 4 << 20;

#[test]
fn a_restarted_node_restores_routes_from_its_state_dir_within_1s() {
    require_mesh!();
    let mut mesh = MeshLab::new("mrst", &CLUSTERS).expect("mesh lab");
    let dead: SocketAddr = DEAD_SEED.parse().expect("seed");
    // east-0 (index 0) only knows a dead seed; the others join through it.
    start_two_by_two(&mut mesh, &[dead]);
    mesh.pods_ping_all(PING).unwrap_or_else(|e| panic!("{e:#}"));
    let (east0, west0) = (mesh.node(0), mesh.node(2));
    let wanted: Vec<String> = mesh.nodes()[1..]
        .iter()
        .map(|n| n.pod_cidr.clone())
        .collect();

    // Traffic in both directions across the crash: a UDP probe out of east-0's pod, a TCP
    // stream into it.
    let probe = UdpProbe::start(
        east0.pod(),
        west0.pod(),
        SocketAddr::new(west0.pod_ip.into(), 9000),
        Duration::from_millis(5),
    )
    .expect("udp probe");
    let dst = SocketAddr::new(east0.pod_ip.into(), 5001);
    let sink = TcpSink::start(east0.pod(), dst).expect("tcp sink in east-0's pod");
    let west_pod = west0.pod().handle();
    let sender = std::thread::spawn(move || tcp_send_paced(&west_pod, dst, STREAM, 61, Some(PACE)));
    wait_until(
        Duration::from_secs(20),
        "2 MB and UDP before the crash",
        || Ok(sink.progress() >= 2 << 20 && probe.received() > 10),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));

    mesh.node_mut(0)
        .expect("east-0")
        .kill()
        .expect("SIGKILL east-0");
    let east0_ns = mesh.node(0).ns().handle();
    wait_until(
        Duration::from_secs(5),
        "east-0's routes to go with its TUN",
        || Ok(kernel_routes(&east0_ns)?.is_empty()),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let at_kill = sink.progress();

    // Watch the kernel table from before the process starts.
    let watcher = watch_routes(east0_ns, wanted.clone());
    let started = Instant::now();
    mesh.node_mut(0)
        .expect("east-0")
        .restart()
        .expect("east-0 starts again");
    let ready = started.elapsed();
    let routes_at = watcher
        .join()
        .expect("route watcher")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    let routes = routes_at - started;
    wait_until(
        Duration::from_secs(10),
        "UDP from east-0's pod to arrive again",
        || Ok(probe.first_after(started).is_some()),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    let udp = probe
        .first_after(started)
        .map(|t| t - started)
        .unwrap_or_default();
    wait_until(
        Duration::from_secs(10),
        "the TCP stream to move again",
        || Ok(sink.progress() > at_kill + (256 << 10)),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    let tcp = started.elapsed();
    eprintln!(
        "east-0 restarted with an unreachable seed: status answered after {ready:?}, routes to \
         {wanted:?} installed {routes:?} after the process start, pod UDP flowing again after \
         {udp:?}, TCP stream moving again (256 KB) after {tcp:?}"
    );

    let log = mesh.node(0).logs();
    assert!(
        log.contains("restoring the last known mesh records=3"),
        "east-0 did not restore 3 records from its state directory:\n{log}"
    );
    assert!(
        routes < ROUTES_WITHIN,
        "routes came back {routes:?} after the process start (target {ROUTES_WITHIN:?})"
    );

    let sent = sender
        .join()
        .expect("sender thread")
        .unwrap_or_else(|e| panic!("the stream across the crash: {e:#}\n{}", mesh.logs()));
    let got = sink.wait(Duration::from_secs(60)).expect("receive");
    assert_eq!(got, sent, "the stream arrived damaged");
    let (sent, errors, received) = probe.stop().expect("udp probe");
    eprintln!("udp probe: {sent} sent, {errors} send errors, {received} received");
    mesh.wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("after the restart: {e:#}"));

    // Once more with east-0 unplugged from its bridge: nothing reaches it, so whatever routes
    // it installs come from the state directory alone.
    mesh.node_mut(0)
        .expect("east-0")
        .kill()
        .expect("SIGKILL east-0");
    mesh.unplug(0).expect("unplug east-0");
    let east0_ns = mesh.node(0).ns().handle();
    wait_until(
        Duration::from_secs(5),
        "east-0's routes to go with its TUN",
        || Ok(kernel_routes(&east0_ns)?.is_empty()),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let watcher = watch_routes(east0_ns.handle(), wanted.clone());
    let started = Instant::now();
    mesh.node_mut(0)
        .expect("east-0")
        .restart()
        .expect("east-0 starts again, cut off");
    let isolated = watcher
        .join()
        .expect("route watcher")
        .unwrap_or_else(|e| panic!("cut off: {e:#}\n{}", mesh.logs()))
        - started;
    eprintln!(
        "east-0 restarted cut off from the network: routes installed {isolated:?} after the process start"
    );
    assert!(
        isolated < ROUTES_WITHIN,
        "cut off, routes came back {isolated:?} after the process start"
    );
    mesh.plug(0).expect("plug east-0 back in");
    mesh.wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("after the link came back: {e:#}"));
    mesh.pods_ping_all(PING)
        .unwrap_or_else(|e| panic!("after the link came back: {e:#}"));
}

/// Polls `ns`'s `proto 112` routes every 5 ms until all of `wanted` are there; returns when.
fn watch_routes(ns: Netns, wanted: Vec<String>) -> JoinHandle<anyhow::Result<Instant>> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let routes = kernel_routes(&ns)?;
            if wanted.iter().all(|w| routes.contains(w)) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                anyhow::bail!("routes {wanted:?} not back after 15 s; have {routes:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}
