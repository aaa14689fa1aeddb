//! A network namespace made with `ip netns add`, deleted (with everything running in it) on drop.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::proc::{self, run};
use crate::wait::wait_until;

/// A named network namespace owned by the test.
///
/// Dropping it kills every process `ip netns pids` lists in it, then runs `ip netns del`.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// False for the handles helpers keep ([`Netns::handle`]): only the owner deletes.
    owner: bool,
}

impl Netns {
    /// Creates the namespace and brings its `lo` up. Fails if the name is taken.
    pub fn create(name: &str) -> Result<Netns> {
        run(Command::new("ip").args(["netns", "add", name]))
            .with_context(|| format!("cannot create namespace {name}"))?;
        let ns = Netns {
            name: name.to_owned(),
            owner: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle to the same namespace that does not delete it on drop: for helpers (a
    /// [`crate::Peerd`], a [`crate::WgGo`]) and threads that run things in a namespace the test
    /// owns. The owner must outlive its handles' use.
    pub fn handle(&self) -> Netns {
        Netns {
            name: self.name.clone(),
            owner: false,
        }
    }

    /// Whether a namespace called `name` exists.
    pub fn exists(name: &str) -> Result<bool> {
        Ok(list()?.iter().any(|n| n == name))
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, `/var/run/netns/NAME` (what `setns` opens).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// A command that runs `args` inside the namespace through `ip netns exec NAME ...`.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `args` in the namespace and returns its output, whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start {}", proc::describe(&cmd)))
    }

    /// Runs `args` in the namespace; an error unless it exits 0. Returns stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        run(&mut self.command(args))
    }

    /// Starts `args` in the namespace with the given stdout and stderr.
    pub fn spawn(&self, args: &[&str], stdout: Stdio, stderr: Stdio) -> Result<Child> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", proc::describe(&cmd)))
    }

    /// Runs `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Sets a sysctl inside the namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// The pids of processes whose network namespace this is.
    pub fn pids(&self) -> Result<Vec<i32>> {
        pids(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        if let Err(e) = delete(&self.name) {
            eprintln!("netns-tests: cleanup of namespace {}: {e:#}", self.name);
        }
    }
}

/// Kills what runs in namespace `name` (never this process), then deletes it.
pub(crate) fn delete(name: &str) -> Result<()> {
    let me = std::process::id() as i32;
    let others =
        || -> Result<Vec<i32>> { Ok(pids(name)?.into_iter().filter(|p| *p != me).collect()) };
    for pid in others()? {
        proc::kill(pid, libc::SIGKILL);
    }
    wait_until(
        Duration::from_secs(5),
        "namespace processes to exit",
        || Ok(others()?.is_empty()),
    )?;
    run(Command::new("ip").args(["netns", "del", name]))?;
    let etc = PathBuf::from("/etc/netns").join(name);
    if etc.exists() {
        std::fs::remove_dir_all(&etc)
            .with_context(|| format!("cannot remove {}", etc.display()))?;
    }
    Ok(())
}

/// Every namespace `ip netns list` shows.
pub(crate) fn list() -> Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    // Lines look like `name` or `name (id: 3)`.
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

fn pids(name: &str) -> Result<Vec<i32>> {
    let out = run(Command::new("ip").args(["netns", "pids", name]))?;
    out.split_whitespace()
        .map(|p| {
            p.parse()
                .with_context(|| format!("ip netns pids {name}: bad pid {p:?}"))
        })
        .collect()
}
