//! The real `peerd` binary, run in a namespace with a generated config, and its status.

mod config;
mod service;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use config::{KubeSpec, MeshSpec, PeerdConfig};
pub use service::{DnsSpec, EndpointSpec, PortSpec, ServiceSpec};

use crate::netns::Netns;
use crate::proc::{run, tail};
use crate::stale::remove_socket;
use crate::wait::{GiveUp, wait_until};

/// How long `peerd run` may take to answer `peerd status`.
const READY: Duration = Duration::from_secs(10);

/// The peerd binary: `$PEERD_BIN`, else `peerd` in the target directory this test runs from
/// (`target/<profile>/deps/<test>` → `target/<profile>/peerd`).
pub fn peerd_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PEERD_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("PEERD_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let exe = std::env::current_exe().context("cannot locate the test executable")?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("peerd"))
        .context("test executable has no target directory")?;
    if !bin.is_file() {
        bail!(
            "no peerd binary at {}: build it first: cargo build -p peerd (or set PEERD_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running `peerd run --config FILE` in a namespace. Dropping it kills the daemon (and prints
/// its logs if the test is panicking).
#[derive(Debug)]
pub struct Peerd {
    ns: Netns,
    bin: PathBuf,
    cfg: PeerdConfig,
    config: PathBuf,
    key: PathBuf,
    uapi_dir: PathBuf,
    socket: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    child: Option<Child>,
}

impl Peerd {
    /// Writes the key and config for `cfg` into `dir` (`<name>.key`, `<name>.toml`), starts
    /// peerd in `ns` with stdout and stderr to `<name>.stdout.log` / `<name>.stderr.log`, and
    /// waits until `peerd status --json` answers.
    pub fn start(ns: &Netns, dir: &Path, cfg: &PeerdConfig) -> Result<Peerd> {
        let bin = peerd_bin()?;
        let file = |ext: &str| dir.join(format!("{}.{ext}", cfg.name));
        let (key, config, socket) = (file("key"), file("toml"), file("sock"));
        std::fs::write(&key, format!("{}\n", cfg.private_key))?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        let uapi_dir = dir.join("wg");
        std::fs::create_dir_all(&uapi_dir)?;
        std::fs::write(&config, cfg.render(&key, &socket, &uapi_dir)?)?;
        if cfg.default_uapi_dir {
            remove_socket(&cfg.interface);
        }
        let mut peerd = Peerd {
            ns: ns.handle(),
            bin,
            cfg: cfg.clone(),
            config,
            key,
            uapi_dir,
            socket,
            stdout: file("stdout.log"),
            stderr: file("stderr.log"),
            child: None,
        };
        peerd.spawn()?;
        Ok(peerd)
    }

    /// Starts the daemon (logs are appended to) and waits until it answers `status`.
    fn spawn(&mut self) -> Result<()> {
        let open = |p: &Path| OpenOptions::new().create(true).append(true).open(p);
        let mut cmd = self.ns.command([
            self.bin.as_os_str(),
            "run".as_ref(),
            "--config".as_ref(),
            self.config.as_os_str(),
        ]);
        cmd.env(
            "RUST_LOG",
            std::env::var("PEERD_LOG").unwrap_or_else(|_| "debug".to_owned()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(open(&self.stdout)?)
        .stderr(open(&self.stderr)?);
        if let Some(k) = &self.cfg.kubernetes {
            cmd.env("NODE_NAME", &k.node_name)
                .env("KUBECONFIG", &k.kubeconfig);
        }
        let mut child = cmd.spawn().context("cannot start peerd")?;
        let ready = wait_until(READY, "peerd status to answer", || {
            if let Some(status) = child.try_wait()? {
                return Err(GiveUp(format!("peerd exited: {status}")).into());
            }
            self.status().map(|_| true)
        });
        if let Err(e) = ready {
            let _ = child.kill();
            let _ = child.wait();
            let name = &self.cfg.name;
            return Err(e.context(format!(
                "peerd {name} did not become ready\n{}",
                self.logs()
            )));
        }
        self.child = Some(child);
        Ok(())
    }

    /// `peerd status --socket SOCK --json`, parsed. Runs from the host namespace: the admin
    /// socket is a file on the shared filesystem.
    pub fn status(&self) -> Result<Value> {
        let sock = self.socket.to_string_lossy();
        let out = run(Command::new(&self.bin).args(["status", "--socket", &sock, "--json"]))?;
        serde_json::from_str(&out).with_context(|| format!("peerd status printed no JSON: {out:?}"))
    }

    /// `peerd services --socket SOCK --json` (the mesh's service catalog as this node sees it),
    /// parsed.
    pub fn services(&self) -> Result<Value> {
        let sock = self.socket.to_string_lossy();
        let out = run(Command::new(&self.bin).args(["services", "--socket", &sock, "--json"]))?;
        serde_json::from_str(&out)
            .with_context(|| format!("peerd services printed no JSON: {out:?}"))
    }

    /// Rewrites the config file from `cfg` (same key, socket and UAPI paths) and sends SIGHUP,
    /// which makes peerd re-read it. Returns once the signal is sent: the caller waits for the
    /// effect it expects (a service answered or gone), since peerd acknowledges nothing.
    pub fn reload(&mut self, cfg: &PeerdConfig) -> Result<()> {
        let Some(child) = &self.child else {
            bail!("peerd {} is not running: cannot reload it", self.cfg.name);
        };
        let text = cfg.render(&self.key, &self.socket, &self.uapi_dir)?;
        // Write then rename: peerd never reads a half-written file.
        let tmp = self.config.with_extension("toml.new");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.config)
            .with_context(|| format!("cannot replace {}", self.config.display()))?;
        self.cfg = cfg.clone();
        crate::proc::kill(child.id() as i32, libc::SIGHUP);
        Ok(())
    }

    /// The status object of peer `name`.
    pub fn peer_status(&self, name: &str) -> Result<Value> {
        let status = self.status()?;
        let peers = status["peers"]
            .as_array()
            .context("status has no peers array")?;
        peers
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .with_context(|| format!("peer {name} not in status {status}"))
    }

    /// Node-level drop counters (datagrams not attributable to a peer), by reason.
    pub fn node_drops(&self) -> Result<BTreeMap<String, u64>> {
        drops(&self.status()?["node"]["drops"])
    }

    /// Drop counters of peer `name`, by reason.
    pub fn peer_drops(&self, name: &str) -> Result<BTreeMap<String, u64>> {
        drops(&self.peer_status(name)?["drops"])
    }

    /// Polls `status` every 50 ms until `cond` holds on it; on timeout the error carries the last
    /// status and the log tails.
    pub fn wait_status<F>(&self, timeout: Duration, what: &str, mut cond: F) -> Result<Value>
    where
        F: FnMut(&Value) -> bool,
    {
        let mut last = Value::Null;
        let waited = wait_until(timeout, what, || {
            last = self.status()?;
            Ok(cond(&last))
        });
        waited.with_context(|| format!("last status: {last}\n{}", self.logs()))?;
        Ok(last)
    }

    /// Whether the daemon was started and not killed or stopped through this handle since (it may
    /// still have crashed: see [`Peerd::is_running`]).
    pub fn started(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the daemon with SIGKILL (no graceful shutdown) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("cannot kill peerd")?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops the daemon with SIGTERM (a graceful stop: a mesh node announces its leave) and
    /// waits up to 10 s for it to exit.
    pub fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        crate::proc::kill(child.id() as i32, libc::SIGTERM);
        let exited = wait_until(READY, "peerd to exit after SIGTERM", || {
            Ok(child.try_wait()?.is_some())
        });
        if let Err(e) = exited {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context(format!(
                "peerd {} ignored SIGTERM\n{}",
                self.cfg.name,
                self.logs()
            )));
        }
        Ok(())
    }

    /// Starts the daemon again with the same config, after a [`Peerd::kill`] (or kills it first).
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// The config this daemon runs with.
    pub fn config(&self) -> &PeerdConfig {
        &self.cfg
    }

    /// The admin socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The tails of the daemon's stdout and stderr logs.
    pub fn logs(&self) -> String {
        format!("{}{}", tail(&self.stdout, 4000), tail(&self.stderr, 8000))
    }
}

impl Drop for Peerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("peerd {} logs:\n{}", self.cfg.name, self.logs());
        }
        let _ = self.kill();
        if self.cfg.default_uapi_dir {
            remove_socket(&self.cfg.interface);
        }
    }
}

fn drops(v: &Value) -> Result<BTreeMap<String, u64>> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(map) => map
            .iter()
            .map(|(k, n)| {
                Ok((
                    k.clone(),
                    n.as_u64()
                        .with_context(|| format!("drop counter {k}={n}"))?,
                ))
            })
            .collect(),
        other => bail!("drops is not an object: {other}"),
    }
}
