//! Waiting for and checking the state of a whole [`MeshLab`]: convergence, invariants that must
//! hold for a while, and pod-to-pod reachability.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::status::peer_state;
use super::{MeshLab, MeshNode};
use crate::ping::wait_ping;
use crate::wait::wait_until;

impl MeshLab {
    /// Indices of the nodes that are mesh members and running.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].member && self.nodes[i].is_up())
            .collect()
    }

    /// Whether every live member shows every other live member `alive` and routes its pod CIDR
    /// into the tunnel. Returns what is missing, or `None` when converged.
    pub fn missing(&self) -> Result<Option<String>> {
        let live = self.live();
        for &i in &live {
            let node = &self.nodes[i];
            let status = node.status()?;
            let routes = node.routes()?;
            for &j in live.iter().filter(|&&j| j != i) {
                let other = &self.nodes[j];
                let state = peer_state(&status, &other.name);
                if state != Some("alive") {
                    return Ok(Some(format!(
                        "{} sees {} as {state:?}",
                        node.name, other.name
                    )));
                }
                if !routes.contains(&other.pod_cidr) {
                    return Ok(Some(format!(
                        "{} has no route to {} ({}); routes {routes:?}",
                        node.name, other.name, other.pod_cidr
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Waits until [`MeshLab::missing`] finds nothing; returns how long it took. On timeout the
    /// error says what was missing and carries every node's log tail.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration> {
        self.wait_for(timeout, "the mesh to converge", MeshLab::missing)
    }

    /// Polls `missing` (every 50 ms) until it finds nothing missing (`Ok(None)`); returns how
    /// long that took. On timeout the error names `what`, the last thing missing, and carries
    /// every node's log tail.
    pub fn wait_for<F>(&self, timeout: Duration, what: &str, mut missing: F) -> Result<Duration>
    where
        F: FnMut(&MeshLab) -> Result<Option<String>>,
    {
        let start = Instant::now();
        let mut last = String::new();
        let waited = wait_until(timeout, what, || {
            Ok(match missing(self)? {
                None => true,
                Some(why) => {
                    last = why;
                    false
                }
            })
        });
        waited.with_context(|| format!("still missing: {last}\n{}", self.logs()))?;
        Ok(start.elapsed())
    }

    /// Checks for `window` (every 50 ms) that `broken` finds nothing wrong (`Ok(None)`): for
    /// asserting that something does not happen. Fails at the first breach, naming `what`, the
    /// breach and carrying every node's log tail.
    pub fn hold<F>(&self, window: Duration, what: &str, mut broken: F) -> Result<()>
    where
        F: FnMut(&MeshLab) -> Result<Option<String>>,
    {
        let end = Instant::now() + window;
        loop {
            if let Some(why) = broken(self)? {
                bail!("{what} broke: {why}\n{}", self.logs());
            }
            if Instant::now() >= end {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50)); // sampling an interval, not readiness
        }
    }

    /// Every live member's pod pings every other live member's pod (the first ping of a pair may
    /// wait for a handshake: `timeout` each).
    pub fn pods_ping_all(&self, timeout: Duration) -> Result<()> {
        let live = self.live();
        for &i in &live {
            for &j in live.iter().filter(|&&j| j != i) {
                let (from, to) = (&self.nodes[i], &self.nodes[j]);
                let pinged = wait_ping(&from.pod, to.pod_ip.into(), timeout);
                if pinged.is_err() && std::env::var_os("PEERD_TEST_HOLD").is_some() {
                    eprintln!(
                        "HOLDING: {} -> {} failed; namespaces stay up for 600 s",
                        from.name, to.name
                    );
                    std::thread::sleep(Duration::from_secs(600));
                }
                pinged.with_context(|| {
                    let status = |n: &MeshNode| {
                        n.status().map_or_else(|e| format!("{e:#}"), |v| v.to_string())
                    };
                    let udp = |n: &MeshNode| {
                        n.ns()
                            .exec(&["nstat", "-az", "Udp*", "Ip*Discards", "IpExtInNoRoutes"])
                            .map_or_else(|e| format!("{e:#}"), |o| String::from_utf8_lossy(&o.stdout).into_owned())
                    };
                    format!(
                        "pod of {} -> pod of {}\nstatus {}: {}\nstatus {}: {}\nudp {}:\n{}\nudp {}:\n{}\n{}",
                        from.name,
                        to.name,
                        from.name,
                        status(from),
                        to.name,
                        status(to),
                        from.name,
                        udp(from),
                        to.name,
                        udp(to),
                        self.logs()
                    )
                })?;
            }
        }
        Ok(())
    }

    /// The log tails of every node that has run.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(MeshNode::logs).collect()
    }
}
