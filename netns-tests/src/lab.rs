//! A test's private world: unique names derived from a tag, the pid and a counter, and a
//! temporary directory for configs, keys, sockets and logs.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

use crate::link::{End, connect};
use crate::netns::Netns;

/// Underlay address of the first node of a [`Pair`] (on a /24).
pub const A_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Underlay address of the second node of a [`Pair`] (on a /24).
pub const B_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// IPv6 underlay address of the first node of a [`Pair`] (on a /64).
pub const A_UNDERLAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// IPv6 underlay address of the second node of a [`Pair`] (on a /64).
pub const B_UNDERLAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// Prefix of every namespace this harness creates: `pdt-<tag>-<role>-<n>-<pid>`.
pub(crate) const NS_PREFIX: &str = "pdt-";
/// Prefix of every temporary directory: `/tmp/peerd-test-<pid>-<n>`.
pub(crate) const DIR_PREFIX: &str = "peerd-test-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One test's names and directory. Create it first in a test, so it is dropped last.
///
/// The directory is removed on drop, except when the thread is panicking: then its path is
/// printed so the logs can be read.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    n: u32,
    dir: PathBuf,
}

impl Lab {
    /// A new lab. `tag` (1–4 lowercase letters or digits) names the test in every derived name.
    /// The first lab of a process also removes what dead test processes left behind.
    pub fn new(tag: &str) -> Result<Lab> {
        if tag.is_empty()
            || tag.len() > 4
            || !tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!("lab tag {tag:?} must be 1-4 lowercase letters or digits");
        }
        crate::stale::cleanup_once();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Lab {
            tag: tag.to_owned(),
            n,
            dir,
        })
    }

    /// The namespace name for `role` (`a`, `b`, `wg`, ...).
    pub fn ns_name(&self, role: &str) -> String {
        format!(
            "{NS_PREFIX}{}-{role}-{}-{}",
            self.tag,
            self.n,
            std::process::id()
        )
    }

    /// Creates the namespace for `role`.
    pub fn netns(&self, role: &str) -> Result<Netns> {
        Netns::create(&self.ns_name(role))
    }

    /// An interface name for `role`, unique across tests and processes and at most 15 bytes:
    /// `<tag><role><n, 2 base-36 digits><pid, 5 base-36 digits>`. wireguard-go and peerd put
    /// their UAPI socket at `/var/run/wireguard/<name>.sock`, shared by every namespace, so the
    /// name must be unique machine-wide; the fixed-width pid at the end makes it so.
    pub fn ifname(&self, role: &str) -> Result<String> {
        let name = format!(
            "{}{role}{}{}",
            self.tag,
            base36(u64::from(self.n % 1296), 2),
            base36(u64::from(std::process::id()), 5)
        );
        if name.len() > 15 {
            bail!("interface name {name} is longer than 15 bytes: shorten the tag or role");
        }
        Ok(name)
    }

    /// The lab's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the lab's directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Two namespaces `a` and `b` joined by a veth pair: `a` has [`A_UNDERLAY`]/24 and
    /// [`A_UNDERLAY6`]/64, `b` has [`B_UNDERLAY`]/24 and [`B_UNDERLAY6`]/64. Nothing else is
    /// routed: the namespaces reach only each other.
    pub fn pair(&self) -> Result<Pair> {
        let a = self.netns("a")?;
        let b = self.netns("b")?;
        let (a_if, b_if) = (self.ifname("va")?, self.ifname("vb")?);
        let (a4, a6) = (format!("{A_UNDERLAY}/24"), format!("{A_UNDERLAY6}/64"));
        let (b4, b6) = (format!("{B_UNDERLAY}/24"), format!("{B_UNDERLAY6}/64"));
        connect(
            End {
                ns: &a,
                ifname: &a_if,
                addrs: &[&a4, &a6],
            },
            End {
                ns: &b,
                ifname: &b_if,
                addrs: &[&b4, &b6],
            },
        )?;
        Ok(Pair { a, b, a_if, b_if })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("netns-tests: keeping {} for inspection", self.dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("netns-tests: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Two namespaces joined by a veth pair (see [`Lab::pair`]).
#[derive(Debug)]
pub struct Pair {
    /// The first namespace.
    pub a: Netns,
    /// The second namespace.
    pub b: Netns,
    /// `a`'s end of the veth pair.
    pub a_if: String,
    /// `b`'s end of the veth pair.
    pub b_if: String,
}

/// `value` in lowercase base 36, left-padded with zeros to `width` digits.
pub(crate) fn base36(mut value: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while value > 0 {
        out.push(DIGITS[(value % 36) as usize]);
        value /= 36;
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_is_fixed_width_and_round_trips() {
        assert_eq!(base36(0, 2), "00");
        assert_eq!(base36(35, 2), "0z");
        assert_eq!(base36(4_194_304, 5), "2hwcg");
        assert_eq!(
            u64::from_str_radix(&base36(1234567, 5), 36).unwrap(),
            1234567
        );
    }
}
