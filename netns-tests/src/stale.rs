//! Removal of what dead test processes left behind: namespaces, temporary directories and
//! wireguard-go/peerd UAPI sockets. Only leftovers whose owning pid is gone are touched, so tests
//! running in other processes at the same time are safe.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use crate::lab::{DIR_PREFIX, NS_PREFIX};
use crate::proc::alive;
use crate::wait::wait_until;

/// Where wireguard-go (and peerd, by default) put UAPI sockets, for every namespace.
pub(crate) const UAPI_DIR: &str = "/var/run/wireguard";

/// Runs [`cleanup`] once per process.
pub(crate) fn cleanup_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(cleanup);
}

/// Deletes stale namespaces, directories and sockets; reports problems without failing.
fn cleanup() {
    match crate::netns::list() {
        Ok(names) => {
            for name in names.iter().filter(|n| n.starts_with(NS_PREFIX)) {
                // `pdt-<tag>-<role>-<n>-<pid>`
                let pid = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !alive(p)) {
                    eprintln!("netns-tests: deleting stale namespace {name}");
                    if let Err(e) = crate::netns::delete(name) {
                        eprintln!("netns-tests: cannot delete stale namespace {name}: {e:#}");
                    }
                }
            }
        }
        Err(e) => eprintln!("netns-tests: cannot list namespaces: {e:#}"),
    }
    remove_stale_dirs(&std::env::temp_dir());
    remove_stale_sockets(Path::new(UAPI_DIR));
}

fn remove_stale_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !alive(p)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes `<iface>.sock` files whose interface name ends in the base-36 pid of a dead process
/// (see [`crate::Lab::ifname`]) and that nobody listens on any more.
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(iface) = name.strip_suffix(".sock") else {
            continue;
        };
        if iface.len() < 8 || !iface.is_char_boundary(iface.len() - 5) {
            continue;
        }
        let pid = u32::from_str_radix(&iface[iface.len() - 5..], 36).ok();
        if pid.is_none_or(alive) {
            continue;
        }
        // A daemon just killed with its namespace may hold the socket for a moment while its
        // threads exit.
        let path = entry.path();
        let gone = wait_until(Duration::from_secs(2), "a stale socket to refuse", || {
            Ok(UnixStream::connect(&path).is_err())
        });
        match gone {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => eprintln!(
                "netns-tests: {} is still served; leaving it",
                path.display()
            ),
        }
    }
}

/// Removes the UAPI socket of `iface` if one is left over (the name is unique to this test, so
/// any existing file is stale).
pub(crate) fn remove_socket(iface: &str) {
    let _ = std::fs::remove_file(Path::new(UAPI_DIR).join(format!("{iface}.sock")));
}
