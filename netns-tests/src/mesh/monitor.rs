//! Route changes in a namespace as the kernel announces them (`ip -4 monitor route`), each
//! stamped with the moment it was read: event-driven timing of route installs and withdrawals
//! without polling the table.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::netns::Netns;
use crate::wait::wait_until;

/// A route that only the monitor's own readiness check uses (a blackhole, `proto 113`).
const MARK: &str = "10.255.255.254/32";

/// A running `ip -4 monitor route` in a namespace. Dropping it kills the monitor.
#[derive(Debug)]
pub struct RouteMonitor {
    child: Child,
    events: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<JoinHandle<()>>,
}

/// One route change: added or deleted, and its destination (`/32` spelled out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEvent {
    /// When the monitor read it.
    pub at: Instant,
    /// False for an added (or replaced) route, true for a deletion.
    pub deleted: bool,
    /// The destination prefix.
    pub dst: String,
}

impl RouteMonitor {
    /// Starts the monitor in `ns` and returns once it demonstrably sees changes (it adds and
    /// deletes a blackhole route of its own and waits for both events).
    pub fn start(ns: &Netns) -> Result<RouteMonitor> {
        let mut child = ns.spawn(
            &["ip", "-4", "monitor", "route"],
            Stdio::piped(),
            Stdio::null(),
        )?;
        let stdout = child.stdout.take().context("monitor has no stdout")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = events.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut log) = log.lock() {
                    log.push((Instant::now(), line));
                }
            }
        });
        let monitor = RouteMonitor {
            child,
            events,
            reader: Some(reader),
        };
        let route = ["route", "add", "blackhole", MARK, "proto", "113"];
        wait_until(
            Duration::from_secs(5),
            "the route monitor to see changes",
            || {
                ns.ip(&route)?;
                ns.ip(&["route", "del", "blackhole", MARK, "proto", "113"])?;
                Ok(monitor
                    .all_events()?
                    .iter()
                    .any(|e| e.dst == MARK && e.deleted))
            },
        )
        .with_context(|| format!("ip monitor in {}", ns.name()))?;
        Ok(monitor)
    }

    /// Every route change seen so far (without the monitor's own readiness check).
    pub fn events(&self) -> Result<Vec<RouteEvent>> {
        let mut events = self.all_events()?;
        events.retain(|e| e.dst != MARK);
        Ok(events)
    }

    /// When `dst` was first added (`deleted` false) or deleted (true) after `since`.
    pub fn first(&self, dst: &str, deleted: bool, since: Instant) -> Option<Instant> {
        self.events()
            .ok()?
            .into_iter()
            .find(|e| e.at >= since && e.deleted == deleted && e.dst == dst)
            .map(|e| e.at)
    }
}

impl RouteMonitor {
    fn all_events(&self) -> Result<Vec<RouteEvent>> {
        let log = self
            .events
            .lock()
            .map_err(|_| anyhow!("monitor log poisoned"))?;
        Ok(log
            .iter()
            .filter_map(|(at, line)| parse(*at, line))
            .collect())
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// `10.2.0.0/24 dev tun proto 112 ...` or `Deleted 10.2.0.0/24 ...`.
fn parse(at: Instant, line: &str) -> Option<RouteEvent> {
    let (deleted, rest) = match line.strip_prefix("Deleted ") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let mut words = rest.split_whitespace();
    let mut dst = words.next()?;
    // Typed routes (`blackhole 10.255.255.254`, `local ...`) put the type first.
    if matches!(
        dst,
        "blackhole" | "unreachable" | "prohibit" | "local" | "broadcast"
    ) {
        dst = words.next()?;
    }
    if !dst.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let dst = if dst.contains('/') {
        dst.to_owned()
    } else {
        format!("{dst}/32")
    };
    Some(RouteEvent { at, deleted, dst })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_added_and_deleted_routes() {
        let now = Instant::now();
        let add = parse(now, "10.2.0.0/24 dev pd0 proto 112 scope link src 10.1.0.1").unwrap();
        assert_eq!((add.deleted, add.dst.as_str()), (false, "10.2.0.0/24"));
        let del = parse(now, "Deleted 10.2.0.1 dev pd0 proto 112 scope link").unwrap();
        assert_eq!((del.deleted, del.dst.as_str()), (true, "10.2.0.1/32"));
        let hole = parse(now, "Deleted blackhole 10.255.255.254 proto 113").unwrap();
        assert_eq!(hole.dst, MARK);
        assert!(parse(now, "default via 192.0.2.254 dev eth0").is_none());
    }
}
