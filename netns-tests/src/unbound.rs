//! A real `unbound` resolver in a test namespace, serving a few local names and logging every
//! query it receives: the upstream that peerd's DNS server forwards to, whose log shows what
//! peerd sent it.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::dig::{Transport, dig};
use crate::netns::Netns;
use crate::proc::tail;
use crate::wait::{GiveUp, wait_until};

/// How long unbound may take to answer its first query.
const READY: Duration = Duration::from_secs(10);
/// The name the readiness probe asks for (a local name, so nothing leaves the namespace).
const PROBE: &str = "ready.unbound.test.";

/// A query unbound logged (`log-queries: yes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedQuery {
    /// Who asked.
    pub client: IpAddr,
    /// The name asked for, lowercase, with the trailing dot.
    pub name: String,
    /// `A`, `AAAA`, `SRV`, ...
    pub rtype: String,
}

/// A running `unbound -d` in a namespace. Dropping it kills it.
#[derive(Debug)]
pub struct Unbound {
    ns: Netns,
    addr: SocketAddr,
    log: PathBuf,
    stderr: PathBuf,
    child: Option<Child>,
}

impl Unbound {
    /// Starts unbound in `ns` on `listen`:53 with its files in `dir` (`unbound.conf`,
    /// `unbound.log`), answering `local_data` (`("www.example.test.", ip)`) from static local
    /// zones; every other name it would resolve from the root, which no test namespace reaches.
    /// Returns once it answers a probe from inside `ns`.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        listen: Ipv4Addr,
        local_data: &[(&str, Ipv4Addr)],
    ) -> Result<Unbound> {
        std::fs::create_dir_all(dir)?;
        let (conf, log, stderr) = (
            dir.join("unbound.conf"),
            dir.join("unbound.log"),
            dir.join("unbound.stderr.log"),
        );
        std::fs::write(&conf, config(dir, &log, listen, local_data))?;
        let open = || std::fs::File::create(&stderr);
        let child = ns.spawn(
            &["unbound", "-d", "-c", &conf.to_string_lossy()],
            Stdio::from(open()?),
            Stdio::from(open()?),
        )?;
        let mut unbound = Unbound {
            ns: ns.handle(),
            addr: SocketAddr::new(listen.into(), 53),
            log,
            stderr,
            child: Some(child),
        };
        unbound.wait_ready()?;
        Ok(unbound)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every query logged so far, in order.
    pub fn queries(&self) -> Result<Vec<LoggedQuery>> {
        let text = std::fs::read_to_string(&self.log)
            .with_context(|| format!("cannot read {}", self.log.display()))?;
        Ok(text.lines().filter_map(parse_query).collect())
    }

    /// The tails of its log and stderr.
    pub fn logs(&self) -> String {
        format!("{}{}", tail(&self.log, 8000), tail(&self.stderr, 4000))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let ready = wait_until(READY, "unbound to answer", || {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(GiveUp(format!("unbound exited: {status}")).into());
            }
            let answer = dig(
                &self.ns,
                self.addr,
                PROBE,
                "A",
                Transport::Udp,
                Duration::from_secs(1),
            )?;
            Ok(answer.status == "NOERROR" && !answer.answer.is_empty())
        });
        ready.with_context(|| format!("unbound did not start\n{}", self.logs()))
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("unbound logs:\n{}", self.logs());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The config: one thread, no privilege drop or chroot, no DNSSEC (no trust anchor to fetch),
/// every query logged to `log`.
fn config(dir: &Path, log: &Path, listen: Ipv4Addr, local_data: &[(&str, Ipv4Addr)]) -> String {
    let mut conf = format!(
        "server:\n\
         \x20 interface: {listen}\n\
         \x20 port: 53\n\
         \x20 do-ip6: no\n\
         \x20 num-threads: 1\n\
         \x20 access-control: 0.0.0.0/0 allow\n\
         \x20 username: \"\"\n\
         \x20 chroot: \"\"\n\
         \x20 directory: \"{dir}\"\n\
         \x20 pidfile: \"{pid}\"\n\
         \x20 use-syslog: no\n\
         \x20 logfile: \"{log}\"\n\
         \x20 verbosity: 1\n\
         \x20 log-queries: yes\n\
         \x20 module-config: \"iterator\"\n\
         \x20 local-data: \"{PROBE} 60 IN A {listen}\"\n",
        dir = dir.display(),
        pid = dir.join("unbound.pid").display(),
        log = log.display(),
    );
    for (name, ip) in local_data {
        let _ = writeln!(conf, "  local-data: \"{name} 60 IN A {ip}\"");
    }
    conf.push_str("remote-control:\n  control-enable: no\n");
    conf
}

/// A `log-queries` line: `[time] unbound[pid:thread] info: CLIENT NAME TYPE CLASS`.
fn parse_query(line: &str) -> Option<LoggedQuery> {
    let rest = line.split_once("] info: ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let [client, name, rtype, class] = fields[..] else {
        return None;
    };
    (class == "IN").then_some(())?;
    Some(LoggedQuery {
        client: client.parse().ok()?,
        name: name.to_ascii_lowercase(),
        rtype: rtype.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_logged_queries_only() {
        let log = "\
[1700000000] unbound[12:0] notice: init module 0: iterator
[1700000000] unbound[12:0] info: start of service (unbound 1.17.1).
[1700000001] unbound[12:0] info: 198.51.100.1 WWW.example.test. A IN
[1700000001] unbound[12:0] info: 198.51.100.1 web.shop.global. AAAA IN
";
        let got: Vec<_> = log.lines().filter_map(parse_query).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].name, "www.example.test.");
        assert_eq!(got[1].rtype, "AAAA");
        assert_eq!(got[1].client, IpAddr::from([198, 51, 100, 1]));
    }
}
