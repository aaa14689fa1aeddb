//! `peerd`: the per-node daemon of the peerd mesh and its command line.
//!
//! `main` parses the command line and hands over; the daemon lives in [`daemon`], the CLI's
//! read commands talk to it through [`admin`].

mod admin;
mod admin_http;
mod catalog;
mod cli;
mod config;
mod daemon;
mod datapath;
mod demo;
mod icmp;
mod kube_init;
mod meshd;
mod netlink;
mod proxyd;
mod status;
mod uapi_server;
mod vip;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
