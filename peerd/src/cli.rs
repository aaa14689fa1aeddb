//! The command line: subcommands, their flags, and what each one does.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use overlay::PrivateKey;

use crate::admin::{self, Request};
use crate::status::{self, Status};

/// peerd joins Kubernetes clusters and Linux hosts into one WireGuard mesh.
#[derive(Debug, Parser)]
#[command(name = "peerd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the daemon.
    Run {
        /// The node's TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a new private key (base64, like `wg genkey`).
    Keygen,
    /// Read a private key on stdin and print its public key (like `wg pubkey`).
    Pubkey,
    /// Show this node and its peers.
    Status {
        #[command(flatten)]
        read: ReadArgs,
    },
    /// List the mesh's services with their endpoints per cluster.
    Services {
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Show which endpoints a global name maps to from this node, their tier, health and share,
    /// and why.
    Explain {
        /// A global name: `svc.ns.global` or `cluster.svc.ns.global`.
        name: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Send pings through the tunnel to another node and time the round trips.
    Ping {
        /// Node name (or cluster/name).
        node: String,
        /// How many pings.
        #[arg(long, short, default_value_t = 3)]
        count: u32,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// The mesh CA and node certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Kubernetes helpers.
    #[command(subcommand)]
    Kube(KubeCommand),
    /// Run a whole multi-cluster mesh on this machine with sample services; no root needed.
    Demo(crate::demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum KubeCommand {
    /// Render this node's config from the Node object (NODE_NAME) and ensure its WireGuard key
    /// and mesh certificate (what the DaemonSet's init container runs).
    Init {
        /// The config template (deploy/kubernetes/node.toml).
        #[arg(long)]
        template: PathBuf,
        /// Where to write the rendered config.
        #[arg(long)]
        config: PathBuf,
        /// Issue a missing or stale certificate from this CA folder (ca.pem, ca.key).
        #[arg(long, conflicts_with = "cert_secret")]
        ca: Option<PathBuf>,
        /// Or copy it from this Secret (node.pem, node.key) in the pod's namespace.
        #[arg(long)]
        cert_secret: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a mesh CA: DIR/ca.pem and DIR/ca.key.
    Init {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create an intermediate CA that may only certify nodes of one cluster.
    Intermediate {
        /// Folder of the issuing CA (ca.pem, ca.key).
        #[arg(long)]
        ca: PathBuf,
        /// The cluster it certifies.
        #[arg(long)]
        cluster: String,
        /// CIDRs its nodes may claim (repeat; none: any).
        #[arg(long = "pod-cidr")]
        pod_cidrs: Vec<ipnet::IpNet>,
        /// Output folder (ca.pem, ca.key).
        #[arg(long)]
        out: PathBuf,
    },
    /// Certify a node: DIR/node.pem and DIR/node.key (mode 0600).
    Issue {
        /// Folder of the issuing CA (root or intermediate).
        #[arg(long)]
        ca: PathBuf,
        /// Node name.
        #[arg(long)]
        node: String,
        /// Cluster.
        #[arg(long)]
        cluster: String,
        /// Region.
        #[arg(long, default_value = "")]
        region: String,
        /// Zone.
        #[arg(long, default_value = "")]
        zone: String,
        /// Pod CIDRs the node may announce (repeat).
        #[arg(long = "pod-cidr", required = true)]
        pod_cidrs: Vec<ipnet::IpNet>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Flags every read command shares.
#[derive(Debug, clap::Args)]
struct ReadArgs {
    /// The daemon's admin socket.
    #[arg(long, default_value = "/run/peerd/pd0.sock")]
    socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config } => {
            init_tracing();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(crate::daemon::run(&config))
        }
        Command::Keygen => {
            println!("{}", PrivateKey::generate().to_base64());
            Ok(())
        }
        Command::Pubkey => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read stdin")?;
            let key =
                PrivateKey::from_base64(&text).context("stdin does not hold a private key")?;
            println!("{}", key.public_key());
            Ok(())
        }
        Command::Ca(ca) => run_ca(ca),
        Command::Demo(args) => crate::demo::run(args),
        Command::Kube(KubeCommand::Init {
            template,
            config,
            ca,
            cert_secret,
        }) => {
            init_tracing();
            let cert = ca
                .map(crate::kube_init::CertFrom::Ca)
                .or(cert_secret.map(crate::kube_init::CertFrom::Secret));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::kube_init::run(&template, &config, cert))
        }
        Command::Explain { name, read } => {
            let value = admin::call(&read.socket, &Request::Explain { name })?;
            if read.json {
                return print_json(&value);
            }
            let report: status::ExplainReport =
                serde_json::from_value(value).context("unexpected explain shape")?;
            print!("{}", status::render_explain(&report));
            Ok(())
        }
        Command::Services { read } => {
            let value = admin::call(&read.socket, &Request::Services)?;
            if read.json {
                return print_json(&value);
            }
            let list: status::ServiceList =
                serde_json::from_value(value).context("unexpected services shape")?;
            print!("{}", status::render_services(&list));
            Ok(())
        }
        Command::Ping { node, count, read } => {
            let value = admin::call(&read.socket, &Request::Ping { node, count })?;
            if read.json {
                return print_json(&value);
            }
            let ping: status::PingReport =
                serde_json::from_value(value).context("unexpected ping shape")?;
            print!("{}", status::render_ping(&ping));
            if ping.replies == 0 {
                anyhow::bail!("no reply from {}", ping.node);
            }
            Ok(())
        }
        Command::Status { read } => {
            let value = admin::call(&read.socket, &Request::Status)?;
            if read.json {
                print_json(&value)
            } else {
                let status: Status =
                    serde_json::from_value(value).context("unexpected status shape")?;
                print!("{}", status::render(&status));
                Ok(())
            }
        }
    }
}

fn run_ca(command: CaCommand) -> Result<()> {
    use peerd_mesh::trust;
    match command {
        CaCommand::Init { out } => {
            trust::init_ca(&out)?;
            println!(
                "wrote {0}/ca.pem and {0}/ca.key (keep ca.key offline)",
                out.display()
            );
        }
        CaCommand::Intermediate {
            ca,
            cluster,
            pod_cidrs,
            out,
        } => {
            trust::issue_intermediate(&ca, &cluster, &pod_cidrs, &out)?;
            println!(
                "wrote {0}/ca.pem and {0}/ca.key for cluster {cluster}",
                out.display()
            );
        }
        CaCommand::Issue {
            ca,
            node,
            cluster,
            region,
            zone,
            pod_cidrs,
            days,
            out,
        } => {
            let identity = trust::NodeIdentity {
                name: node,
                cluster,
                region,
                zone,
                pod_cidrs,
            };
            trust::issue_node(
                &ca,
                &identity,
                std::time::Duration::from_secs(days * 86_400),
                &out,
            )?;
            println!(
                "wrote {0}/node.pem and {0}/node.key for {1}/{2}",
                out.display(),
                identity.cluster,
                identity.name
            );
        }
    }
    Ok(())
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Installs the one tracing subscriber: `PEERD_LOG` (or `RUST_LOG`) filters, default `info`;
/// `PEERD_LOG_FORMAT=json` for JSON lines.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("PEERD_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("PEERD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
