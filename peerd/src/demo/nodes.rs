//! The demo's peerd daemons: one `peerd run` child process per node, logging to a file in the
//! demo folder, stopped with SIGTERM (the graceful leave) when the demo ends, and killed by the
//! kernel if the demo itself dies first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::admin::{self, Request};
use crate::status::{ServiceList, Status};

/// The running daemons.
pub struct Nodes {
    children: Vec<(String, Child)>,
}

impl Nodes {
    /// Starts one daemon per `(name, config)`.
    pub fn spawn(dir: &Path, configs: &[(String, PathBuf)]) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the peerd executable")?;
        let mut nodes = Nodes {
            children: Vec::new(),
        };
        for (name, config) in configs {
            let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
            let mut command = Command::new(&exe);
            command
                .args(["run", "--config"])
                .arg(config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .env("PEERD_LOG", "info");
            die_with_parent(&mut command);
            let child = command
                .spawn()
                .with_context(|| format!("cannot start {}", exe.display()))?;
            nodes.children.push((name.clone(), child));
        }
        Ok(nodes)
    }

    /// Fails if a daemon has exited, naming its log.
    pub fn check(&mut self, dir: &Path) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let log =
                    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "{name} exited ({status}); last log lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// Process IDs, for the curious.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child) in &self.children {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, child) in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asks the kernel to SIGTERM the child when the demo dies, so that a killed demo leaves no
/// daemon behind.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// One node's status, once its admin socket answers.
pub fn status(socket: &Path) -> Option<Status> {
    let value = admin::call(socket, &Request::Status).ok()?;
    serde_json::from_value(value).ok()
}

/// One node's view of the services.
pub fn services(socket: &Path) -> Option<ServiceList> {
    let value = admin::call(socket, &Request::Services).ok()?;
    serde_json::from_value(value).ok()
}
