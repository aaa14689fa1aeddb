//! A wireguard-go node in a namespace, configured with `wg set` and `ip`.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::PeerSpec;
use crate::netns::Netns;
use crate::proc::tail;
use crate::stale::{UAPI_DIR, remove_socket};
use crate::wait::{GiveUp, wait_until};

/// How a wireguard-go node is set up.
#[derive(Debug, Clone)]
pub struct WgGoConfig {
    /// The interface name (unique machine-wide: its UAPI socket is global).
    pub interface: String,
    /// Base64 private key.
    pub private_key: String,
    /// UDP listen port.
    pub listen_port: u16,
    /// Addresses on the interface, in CIDR form (`10.0.0.2/32`).
    pub addresses: Vec<String>,
    /// Peers; a route into the interface is added for each of their allowed IPs.
    pub peers: Vec<PeerSpec>,
}

/// A running `wireguard-go -f IFACE` in a namespace. Dropping it kills the process and removes
/// its UAPI socket.
#[derive(Debug)]
pub struct WgGo {
    ns: Netns,
    interface: String,
    child: Child,
    log: PathBuf,
}

impl WgGo {
    /// Starts wireguard-go in `ns`, waits for its UAPI socket, applies `cfg` with `wg set`, adds
    /// the addresses, brings the interface up and routes every peer's allowed IPs into it. The
    /// key file and the log (`<iface>.wggo.log`) go to `dir`.
    pub fn start(ns: &Netns, dir: &Path, cfg: &WgGoConfig) -> Result<WgGo> {
        remove_socket(&cfg.interface);
        let log = dir.join(format!("{}.wggo.log", cfg.interface));
        let out = File::create(&log)?;
        let mut cmd = ns.command(["wireguard-go", "-f", &cfg.interface]);
        cmd.env("LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd.spawn().context("cannot start wireguard-go")?;
        let mut node = WgGo {
            ns: Netns::handle(ns),
            interface: cfg.interface.clone(),
            child,
            log,
        };
        node.configure(dir, cfg).with_context(|| {
            format!(
                "wireguard-go {} in {}\n{}",
                cfg.interface,
                ns.name(),
                node.log_tail()
            )
        })?;
        Ok(node)
    }

    fn configure(&mut self, dir: &Path, cfg: &WgGoConfig) -> Result<()> {
        let sock = self.socket();
        let what = format!("{} to accept connections", sock.display());
        wait_until(Duration::from_secs(10), &what, || {
            if let Some(status) = self.child.try_wait()? {
                return Err(GiveUp(format!("wireguard-go exited: {status}")).into());
            }
            Ok(UnixStream::connect(&sock).is_ok())
        })?;
        let key = dir.join(format!("{}.key", cfg.interface));
        std::fs::write(&key, format!("{}\n", cfg.private_key))?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        let port = cfg.listen_port.to_string();
        let key = key.to_string_lossy().into_owned();
        self.wg(&[
            "set",
            &cfg.interface,
            "private-key",
            &key,
            "listen-port",
            &port,
        ])?;
        for peer in &cfg.peers {
            self.set_peer(peer)?;
        }
        for addr in &cfg.addresses {
            crate::link::addr_add(&self.ns, &cfg.interface, addr)?;
        }
        self.ns.ip(&["link", "set", &cfg.interface, "up"])?;
        for cidr in cfg.peers.iter().flat_map(|p| &p.allowed_ips) {
            self.ns
                .ip(&["route", "replace", cidr, "dev", &cfg.interface])?;
        }
        Ok(())
    }

    /// Adds or updates a peer with `wg set` (routes are not touched).
    pub fn set_peer(&self, peer: &PeerSpec) -> Result<()> {
        let mut args = vec!["set", &self.interface, "peer", &peer.public_key];
        let endpoint = peer.endpoint.map(|e| e.to_string());
        if let Some(e) = &endpoint {
            args.extend(["endpoint", e]);
        }
        let allowed = peer.allowed_ips.join(",");
        args.extend(["allowed-ips", &allowed]);
        let keepalive = peer.persistent_keepalive.unwrap_or(0).to_string();
        args.extend(["persistent-keepalive", &keepalive]);
        self.wg(&args).map(|_| ())
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The UAPI socket path.
    pub fn socket(&self) -> PathBuf {
        Path::new(UAPI_DIR).join(format!("{}.sock", self.interface))
    }

    /// Runs `wg ARGS` inside the node's namespace and returns stdout.
    pub fn wg(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["wg"];
        full.extend_from_slice(args);
        self.ns.run(&full)
    }

    /// The unix time of the last handshake with `peer` (0: none yet), from `wg show`.
    pub fn latest_handshake(&self, peer: &str) -> Result<u64> {
        let out = self.wg(&["show", &self.interface, "latest-handshakes"])?;
        Ok(field(&out, peer)?.parse()?)
    }

    /// The endpoint wireguard-go has for `peer` (`None` before it knows one).
    pub fn endpoint(&self, peer: &str) -> Result<Option<String>> {
        let out = self.wg(&["show", &self.interface, "endpoints"])?;
        let e = field(&out, peer)?;
        Ok((e != "(none)").then(|| e.to_owned()))
    }

    /// Whether wireguard-go is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The tail of wireguard-go's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 4000)
    }
}

impl Drop for WgGo {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_socket(&self.interface);
    }
}

/// The value after `key` in `wg show IFACE <field>` output (`<pubkey>\t<value>` lines).
fn field<'a>(out: &'a str, key: &str) -> Result<&'a str> {
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim())
        .with_context(|| format!("peer {key} not in wg output {out:?}"))
}
