//! Serves `svc0.bench.global` … `svc{N-1}.bench.global` (VIPs 10.253.x.y, one `http` port) on
//! one thread, for `bench/dnsperf.sh`.
//!
//! Usage: `serve [LISTEN] [NAMES] [UPSTREAM]`, defaults `127.0.0.1:5300 1000 127.0.0.1:9`
//! (nothing listens there, so names outside `.global` get SERVFAIL and nothing leaves the
//! host); `-` as UPSTREAM uses the nameservers of `/etc/resolv.conf`.

use std::net::{Ipv4Addr, SocketAddr};

use dns::{DnsConfig, DnsServer, GlobalName, Zone};
use peerd_types::{Protocol, ServicePort};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:5300").parse()?;
    let count: u16 = args.next().as_deref().unwrap_or("1000").parse()?;
    // The discard port on loopback keeps forwarding local; `-` means /etc/resolv.conf.
    let upstream: Vec<SocketAddr> = match args.next().as_deref().unwrap_or("127.0.0.1:9") {
        "-" => Vec::new(),
        addr => vec![addr.parse()?],
    };

    let zone = Zone {
        names: (0..count).map(bench_name).collect(),
    };
    let config = DnsConfig {
        upstream,
        ..DnsConfig::new(listen)
    };
    // One thread, like `unbound` with `num-threads: 1`.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = DnsServer::start(config, zone).await?;
        println!("listening {}", server.local_addr());
        tokio::signal::ctrl_c().await?;
        println!("{:?}", server.stats());
        server.shutdown().await;
        Ok(())
    })
}

/// `svcN.bench.global` → 10.253.(N / 256).(N % 256).
pub fn bench_name(n: u16) -> GlobalName {
    let [hi, lo] = n.to_be_bytes();
    GlobalName {
        name: format!("svc{n}.bench.global"),
        v4: Some(Ipv4Addr::new(10, 253, hi, lo)),
        v6: None,
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            protocol: Protocol::Http,
        }],
    }
}
