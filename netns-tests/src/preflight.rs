//! What a test needs from the machine, checked before it builds anything.

use std::path::Path;

use crate::proc::find_program;

/// One capability a test depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Running as root (namespaces, veth, TUN).
    Root,
    /// `/dev/net/tun` exists.
    Tun,
    /// The `ip` tool (iproute2).
    Ip,
    /// `ping`.
    Ping,
    /// The `wireguard-go` binary.
    WireguardGo,
    /// The `wg` tool (wireguard-tools).
    Wg,
    /// The `peerd` binary (see [`crate::peerd_bin`]).
    Peerd,
    /// `dig` (bind9-dnsutils).
    Dig,
    /// The `unbound` resolver.
    Unbound,
    /// `curl`.
    Curl,
    /// `setpriv` (util-linux), to run as an unprivileged user.
    Setpriv,
}

/// Checks every need; the error names all that are missing.
pub fn check(needs: &[Need]) -> Result<(), String> {
    let mut missing = Vec::new();
    for need in needs {
        if let Err(why) = check_one(*need) {
            missing.push(why);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// Whether the tests run under CI (`CI=true`), where a test that cannot run must fail.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn check_one(need: Need) -> Result<(), String> {
    let program = |name: &str| match find_program(name) {
        Some(_) => Ok(()),
        None => Err(format!("`{name}` is not installed")),
    };
    match need {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        Need::Root => match unsafe { libc::geteuid() } {
            0 => Ok(()),
            uid => Err(format!("not root (euid {uid})")),
        },
        Need::Tun => match Path::new("/dev/net/tun").exists() {
            true => Ok(()),
            false => Err("/dev/net/tun is missing".to_owned()),
        },
        Need::Ip => program("ip"),
        Need::Ping => program("ping"),
        Need::WireguardGo => program("wireguard-go"),
        Need::Wg => program("wg"),
        Need::Dig => program("dig"),
        Need::Unbound => program("unbound"),
        Need::Curl => program("curl"),
        Need::Setpriv => program("setpriv"),
        Need::Peerd => crate::peerd_bin().map(|_| ()).map_err(|e| format!("{e:#}")),
    }
}
