//! `peerd demo`: a whole multi-cluster mesh on this one machine, as an ordinary user. Three
//! userspace-mode daemons (cluster east with nodes in two zones, cluster west with one) on
//! loopback, sample HTTP and gRPC services exported in both clusters, DNS on local ports.
//! Everything lives in one temporary folder that is removed, with every process, at exit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod load;
mod nodes;
mod samples;
mod setup;

use nodes::Nodes;
use samples::Samples;
use setup::{GRPC_PORT, NAMESPACE, NodePlan, WEB_PORT};

/// `peerd demo`'s flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// After start-up, stop every endpoint of cluster east under load and start them again,
    /// showing requests move to west and back with no failed request.
    #[arg(long)]
    pub failover: bool,
    /// Exit once the demo has started (and the failover has run) instead of waiting for Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// First of the local ports the demo uses (UDP and TCP, about 100 of them).
    #[arg(long, default_value_t = 47000)]
    pub base_port: u16,
}

/// Runs the demo until Ctrl-C (or to the end, with `--exit`).
pub fn run(args: DemoArgs) -> Result<()> {
    anyhow::ensure!(
        args.base_port <= 65_000,
        "--base-port {} leaves no room for the demo's ports",
        args.base_port
    );
    // One thread: the daemons' parent must stay alive for PR_SET_PDEATHSIG to hold.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = TempDir::create()?;
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = demo(&args, dir.path()) => r,
            _ = stop_signal() => {
                println!("\nstopping the demo");
                Ok(())
            }
        }
    });
    drop(runtime);
    let path = dir.path().to_owned();
    drop(dir);
    if outcome.is_ok() {
        println!(
            "stopped every peerd of the demo and removed {}",
            path.display()
        );
    }
    outcome
}

async fn demo(args: &DemoArgs, dir: &Path) -> Result<()> {
    let plans = setup::plan(args.base_port);
    step("writing a mesh CA, node keys, certificates and configs");
    let configs = setup::write(dir, &plans)?;
    println!(" in {}", dir.display());
    step(
        "starting sample endpoints (HTTP web.demo on every node, gRPC greeter.demo on east-2 and west-1)",
    );
    let mut samples = Samples::default();
    for p in &plans {
        samples.start(p).await?;
    }
    println!(" ok");
    let named: Vec<(String, PathBuf)> = plans.iter().map(|p| p.name.clone()).zip(configs).collect();
    let mut nodes = Nodes::spawn(dir, &named)?;
    for p in &plans {
        step(&format!(
            "starting {} ({}/{}, userspace mode, WireGuard on 127.0.0.1:{})",
            p.name, p.cluster, p.zone, p.wg_port
        ));
        let socket = p.socket(dir);
        wait(&mut nodes, dir, Duration::from_secs(15), || {
            nodes::status(&socket).is_some()
        })
        .await?;
        println!(" ready");
    }
    step("waiting for every node to learn the others and their services");
    let began = Instant::now();
    wait(&mut nodes, dir, Duration::from_secs(30), || {
        converged(dir, &plans)
    })
    .await?;
    println!(" converged in {:.1} s", began.elapsed().as_secs_f64());

    let client = &plans[0];
    let west_vip = vip(dir, client, "web", Some("west"))?;
    step(&format!(
        "asking west.web.{NAMESPACE}.global through {}'s proxy",
        client.name
    ));
    let (node, body) = load::get(west_vip, &format!("west.web.{NAMESPACE}.global")).await?;
    println!(" answered by {node}: {}", body.trim());

    println!("\n$ peerd status --socket {}", client.socket(dir).display());
    if let Some(status) = nodes::status(&client.socket(dir)) {
        print!("{}", crate::status::render(&status));
    }
    print_commands(dir, &plans)?;

    if args.failover {
        let web = vip(dir, client, "web", None)?;
        println!("\nfailover: every endpoint of cluster east stops and comes back");
        let host = format!("web.{NAMESPACE}.global");
        let o = load::failover(web, &host, "east", &plans, &mut samples).await?;
        let ms =
            |d: Option<Duration>| d.map_or("never".into(), |d| format!("{} ms", d.as_millis()));
        println!(
            "failover: {} requests, {} failed; west carried all traffic {} after east stopped; east answered again {} after it came back",
            o.requests,
            o.failed,
            ms(o.switch),
            ms(o.back)
        );
        if o.failed > 0 {
            bail!("{} requests failed during the failover", o.failed);
        }
    }
    if args.exit {
        return Ok(());
    }
    println!(
        "\nthe demo runs until Ctrl-C (peerd pids {:?})",
        nodes.pids()
    );
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        nodes.check(dir)?;
    }
}

/// Every node sees the other two alive and all five service endpoints.
fn converged(dir: &Path, plans: &[NodePlan]) -> bool {
    plans.iter().all(|p| {
        let alive = nodes::status(&p.socket(dir))
            .and_then(|s| s.node.mesh)
            .and_then(|m| m.nodes.get("alive").copied())
            .unwrap_or(0);
        let endpoints: usize = nodes::services(&p.socket(dir))
            .map(|l| {
                l.services
                    .iter()
                    .flat_map(|s| s.clusters.values())
                    .map(|c| c.endpoints.len())
                    .sum()
            })
            .unwrap_or(0);
        alive as usize + 1 >= plans.len() && endpoints >= 5
    })
}

/// `service`'s virtual IP (pinned to `cluster`, if given) on `node`, with the port.
fn vip(dir: &Path, node: &NodePlan, service: &str, cluster: Option<&str>) -> Result<SocketAddr> {
    let list = nodes::services(&node.socket(dir)).context("no service list")?;
    let s = list
        .services
        .iter()
        .find(|s| s.name == service && s.namespace == NAMESPACE)
        .with_context(|| format!("{service}.{NAMESPACE} is not in the catalog"))?;
    let ip = match cluster {
        Some(c) => s.clusters.get(c).and_then(|c| c.vip.clone()),
        None => s.vip.clone(),
    }
    .with_context(|| format!("{service}.{NAMESPACE} has no virtual IP"))?;
    let port = if service == "web" {
        WEB_PORT
    } else {
        GRPC_PORT
    };
    Ok(SocketAddr::new(ip.parse()?, port))
}

fn print_commands(dir: &Path, plans: &[NodePlan]) -> Result<()> {
    let c = &plans[0];
    let web = vip(dir, c, "web", None)?;
    let west = vip(dir, c, "web", Some("west"))?;
    let grpc = vip(dir, c, "greeter", None)?;
    let dns = c.dns();
    let (host, port) = (dns.ip(), dns.port());
    println!(
        "\ntry these in another terminal (they ask {}, in cluster east):",
        c.name
    );
    println!("  dig @{host} -p {port} web.{NAMESPACE}.global +short");
    println!("  dig @{host} -p {port} _http._tcp.web.{NAMESPACE}.global SRV +short");
    println!(
        "  curl -s http://web.{NAMESPACE}.global:{WEB_PORT}/ --resolve web.{NAMESPACE}.global:{WEB_PORT}:{}",
        web.ip()
    );
    println!(
        "  curl -s http://west.web.{NAMESPACE}.global:{WEB_PORT}/ --resolve west.web.{NAMESPACE}.global:{WEB_PORT}:{}",
        west.ip()
    );
    println!(
        "  printf '\\0\\0\\0\\0\\5world' | curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- http://{}:{GRPC_PORT}/demo.Greeter/SayHello | tail -c +6; echo",
        grpc.ip()
    );
    let socket = c.socket(dir);
    println!("  peerd status --socket {}", socket.display());
    println!("  peerd services --socket {}", socket.display());
    println!(
        "  peerd explain web.{NAMESPACE}.global --socket {}",
        socket.display()
    );
    println!("  curl -s http://{}/metrics | grep peerd_proxy", c.metrics);
    Ok(())
}

/// Polls `ready` every 100 ms until it holds, a daemon dies, or `limit` passes.
async fn wait(
    nodes: &mut Nodes,
    dir: &Path,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        nodes.check(dir)?;
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s; the logs are in {}",
                limit.as_secs(),
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn step(what: &str) {
    use std::io::Write;
    print!("{what} ...");
    let _ = std::io::stdout().flush();
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// The demo's folder (mode 0700), removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let path = base.join(format!("peerd-demo-{}-{attempt}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create a folder in {}", base.display()));
                }
            }
        }
        bail!("cannot create a demo folder in {}", base.display())
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
