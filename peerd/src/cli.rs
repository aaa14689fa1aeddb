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
