//! A kernel-mode node and a userspace-mode node (smoltcp inside peerd: no TUN, no routes) in
//! one mesh exchange TCP through their endpoints, both ways: the userspace node's proxy dials
//! the kernel node's pod through its in-process stack, and the kernel node's pod reaches the
//! userspace node's endpoint (a socket on the node's loopback) both by overlay address and
//! through its own proxy; UDP to that endpoint is relayed to the local UDP socket and back.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use netns_tests::{EndpointSpec, MeshLab, Netns, NodeOptions, PortSpec, ServiceSpec, in_netns};

use super::*;

/// A TCP service with one endpoint.
fn tcp_service(name: &str, port: u16, endpoint: SocketAddr) -> ServiceSpec {
    ServiceSpec {
        name: name.to_owned(),
        namespace: "mix".to_owned(),
        ports: vec![PortSpec {
            name: "echo".to_owned(),
            port,
            protocol: "tcp".to_owned(),
        }],
        endpoints: vec![EndpointSpec {
            address: endpoint.ip(),
            port: endpoint.port(),
            ready: None,
        }],
    }
}

/// An echo server on `bind` inside `ns`, one thread per connection; returns once bound.
fn echo_server(ns: &Netns, bind: SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = in_netns(ns, move || {
        let listener = TcpListener::bind(bind)?;
        let _ = tx.send(());
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("echo server cannot bind {bind} in {}", ns.name()));
}

/// A UDP echo server on `bind` inside `ns`; returns once bound.
fn udp_echo_server(ns: &Netns, bind: SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = in_netns(ns, move || {
        let socket = UdpSocket::bind(bind)?;
        let _ = tx.send(());
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            socket.send_to(&buf[..n], from)?;
        }
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("udp echo cannot bind {bind} in {}", ns.name()));
}

/// Sends 20 numbered datagrams to `to` from inside `ns`; how many came back intact.
fn udp_round_trips(ns: &Netns, to: SocketAddr) -> anyhow::Result<usize> {
    in_netns(ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut echoed = 0;
        let mut buf = [0u8; 2048];
        for i in 0..20u32 {
            let sent = format!("datagram {i} through the tunnel");
            socket.send_to(sent.as_bytes(), to)?;
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                echoed += usize::from(&buf[..n] == sent.as_bytes());
            }
        }
        Ok(echoed)
    })
    .join()
    .expect("client thread")
}

/// Sends 256 KiB of patterned bytes to `to` from inside `ns` and checks they come back intact.
fn echo_round_trip(ns: &Netns, to: SocketAddr) -> anyhow::Result<()> {
    in_netns(ns, move || {
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let sent: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        let writer = {
            let (mut w, data) = (conn.try_clone()?, sent.clone());
            std::thread::spawn(move || w.write_all(&data))
        };
        let mut got = vec![0u8; sent.len()];
        conn.read_exact(&mut got)?;
        writer.join().expect("writer thread")?;
        anyhow::ensure!(got == sent, "echo through {to} came back damaged");
        Ok(())
    })
    .join()
    .expect("client thread")
}

/// `name.mix`'s virtual IP on a node, from its `peerd services --json`.
fn vip(mesh: &MeshLab, i: usize, name: &str) -> Option<IpAddr> {
    let list = mesh.node(i).services().ok()?;
    let service = list["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name && s["namespace"] == "mix")?;
    service["vip"].as_str()?.parse().ok()
}

#[test]
fn kernel_and_userspace_nodes_exchange_tcp_through_their_endpoints_both_ways() {
    require_mesh!();
    let mut mesh = MeshLab::new("mus", &CLUSTERS[..2]).expect("mesh lab");
    let deferred = |seed| NodeOptions {
        seeds: vec![seed],
        deferred: true,
        ..Default::default()
    };
    let east = mesh
        .add_node_with(EAST, deferred(MeshLab::seed(WEST, 0)))
        .expect("east-0");
    let west = mesh
        .add_node_with(WEST, deferred(MeshLab::seed(EAST, 0)))
        .expect("west-0");
    let pod = SocketAddr::new(mesh.node(east).pod_ip.into(), 7001);
    let overlay = SocketAddr::new(mesh.node(west).address.into(), 7101);
    {
        let cfg = mesh.node_mut(east).expect("east-0").config_mut();
        cfg.services = vec![tcp_service("echo-e", 7000, pod)];
    }
    {
        let cfg = mesh.node_mut(west).expect("west-0").config_mut();
        cfg.userspace = true;
        cfg.services = vec![tcp_service("echo-w", 7100, overlay)];
    }
    // East's endpoint is a pod; west's is a socket on the node's own loopback, which peerd
    // reaches for tunnel connections to its overlay address (the endpoint's default `local`).
    echo_server(mesh.node(east).pod(), pod);
    let west_local = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 7101);
    echo_server(mesh.node(west).ns(), west_local);
    udp_echo_server(mesh.node(west).ns(), west_local);
    mesh.start(east).expect("east-0 starts");
    mesh.start(west).expect("west-0 starts");

    let status = mesh.node(west).status().expect("west-0 status");
    assert_eq!(status["node"]["mode"], "userspace", "{status}");
    let deadline = Instant::now() + CONVERGE;
    let (west_vip, east_vip) = loop {
        if let (Some(w), Some(e)) = (vip(&mesh, west, "echo-e"), vip(&mesh, east, "echo-w")) {
            break (w, e);
        }
        assert!(
            Instant::now() < deadline,
            "services did not reach both nodes\n{}",
            mesh.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        west_vip.is_loopback(),
        "a userspace node's virtual IPs come from 127.0.0.0/8, got {west_vip}"
    );

    // Userspace -> kernel: a client on the userspace node, through its proxy and smoltcp, to
    // the kernel node's pod.
    let to = SocketAddr::new(west_vip, 7000);
    retry(|| echo_round_trip(mesh.node(west).ns(), to))
        .unwrap_or_else(|e| panic!("west-0 -> {to} (echo-e): {e:#}\n{}", mesh.logs()));
    // Kernel -> userspace: the pod dials the userspace node's overlay address through the TUN.
    retry(|| echo_round_trip(mesh.node(east).pod(), overlay))
        .unwrap_or_else(|e| panic!("east-0 pod -> {overlay}: {e:#}\n{}", mesh.logs()));
    // UDP to the same endpoint reaches the local UDP socket and its replies come back.
    let echoed = udp_round_trips(mesh.node(east).pod(), overlay).expect("udp client");
    assert!(
        echoed >= 18,
        "{echoed} of 20 datagrams came back from {overlay}\n{}",
        mesh.logs()
    );
    // ... and TCP through the kernel node's proxy on the virtual IP.
    let to = SocketAddr::new(east_vip, 7100);
    retry(|| echo_round_trip(mesh.node(east).pod(), to))
        .unwrap_or_else(|e| panic!("east-0 pod -> {to} (echo-w): {e:#}\n{}", mesh.logs()));

    // The bytes crossed the tunnel: west received at least the three transfers' worth.
    let status = mesh.node(west).status().expect("west-0 status");
    let rx = netns_tests::peer_field(&status, "east-0", "rx_bytes").and_then(|v| v.as_u64());
    assert!(
        rx >= Some(3 * 256 * 1024),
        "west-0 received {rx:?} bytes from east-0: {status}"
    );
}

/// The first connection may race the handshake: a few tries over 5 s.
fn retry(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
