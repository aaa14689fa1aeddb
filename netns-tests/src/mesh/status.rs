//! Reading what a mesh node shows: `peerd status --json` fields and the kernel routes peerd
//! installed.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::Value;

use crate::netns::Netns;

/// peerd's route protocol number (`ip route ... proto 112`).
const PEERD_PROTO: &str = "112";

/// The membership state (`alive`, `suspect`, `dead`, `static`) `status` shows for peer `name`,
/// or `None` when the peer is not listed.
pub fn peer_state<'a>(status: &'a Value, name: &str) -> Option<&'a str> {
    peer_field(status, name, "state")?.as_str()
}

/// Field `field` of peer `name` in `status`.
pub fn peer_field<'a>(status: &'a Value, name: &str, field: &str) -> Option<&'a Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| &p[field])
}

/// A control-plane counter: `node.mesh.<group>.<key>` (`group` is `nodes`, `rejected` or
/// `dropped`); 0 when absent.
pub fn mesh_count(status: &Value, group: &str, key: &str) -> u64 {
    status["node"]["mesh"][group][key].as_u64().unwrap_or(0)
}

/// Destinations (CIDR form, `/32` spelled out) of the `proto 112` routes in `ns`'s main table.
pub fn kernel_routes(ns: &Netns) -> Result<BTreeSet<String>> {
    let out = ns.ip(&["-4", "route", "show", "proto", PEERD_PROTO])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|dst| {
            if dst.contains('/') {
                dst.to_owned()
            } else {
                format!("{dst}/32")
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_peer_fields_and_counters() {
        let status: Value = serde_json::json!({
            "node": {"mesh": {"rejected": {"certificate": 3}}},
            "peers": [{"name": "west-0", "state": "dead"}]
        });
        assert_eq!(peer_state(&status, "west-0"), Some("dead"));
        assert_eq!(peer_state(&status, "west-1"), None);
        assert_eq!(mesh_count(&status, "rejected", "certificate"), 3);
        assert_eq!(mesh_count(&status, "rejected", "signature"), 0);
    }
}
