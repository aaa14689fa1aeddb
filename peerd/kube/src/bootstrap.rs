//! Node bootstrap for the DaemonSet's init container: read this node's Node object once and
//! render the node config file from the template in the `peerd-config` ConfigMap.
//!
//! Template variables (`$$` is a literal `$`; an unknown `${...}` is an error):
//!
//! | variable | value |
//! |---|---|
//! | `${NODE_NAME}` | the Node's name |
//! | `${REGION}`, `${ZONE}` | `topology.kubernetes.io/region` / `zone`, empty when missing |
//! | `${POD_CIDRS}` | a TOML array of `spec.podCIDRs` (else `podCIDR`), e.g. `["10.1.1.0/24"]` |
//! | `${OVERLAY_ADDRESS}` | the last usable address of the first IPv4 pod CIDR (reserve it in the CNI's IPAM) |
//! | `${NODE_IP}` | the first InternalIP (IPv4 first), else the first ExternalIP |
//! | `${NODE_IP_HOST}` | `${NODE_IP}`, in brackets when IPv6, for `host:port` values |

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

use crate::Error;
use crate::view::{NodeView, node_facts};

/// What the per-node-secrets flow (`deploy/overlays/per-node-secrets`) reads, in peerd's own
/// namespace only: (API group, resource, verbs).
pub const SECRET_READS: &[(&str, &str, &[&str])] = &[("", "secrets", &["get"])];

/// A node certificate chain and its key, as `peerd ca issue` writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCredentials {
    /// `node.pem`.
    pub cert_pem: Vec<u8>,
    /// `node.key`.
    pub key_pem: Vec<u8>,
}

/// The node credentials in the Secret `name` of `client`'s default namespace (in a pod: the
/// pod's own), keys `node.pem` and `node.key`; `None` when the Secret does not exist.
pub async fn fetch_node_secret(
    client: &kube::Client,
    name: &str,
) -> Result<Option<NodeCredentials>, Error> {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::default_namespaced(client.clone());
    let secret = api.get_opt(name).await.map_err(|source| Error::Api {
        what: format!("cannot read secret {name}"),
        source,
    })?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    let field = |key: &str| {
        data.get(key)
            .map(|b| b.0.clone())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::BadSecret(format!("secret {name} has no {key}")))
    };
    Ok(Some(NodeCredentials {
        cert_pem: field("node.pem")?,
        key_pem: field("node.key")?,
    }))
}

/// Reads the Node `name` (name, locality, pod CIDRs, addresses; no exports).
pub async fn fetch_node(client: &kube::Client, name: &str) -> Result<NodeView, Error> {
    if name.is_empty() {
        return Err(Error::NoNodeName);
    }
    let api: Api<Node> = Api::all(client.clone());
    match api.get_opt(name).await {
        Ok(Some(node)) => Ok(node_facts(&node)),
        Ok(None) => Err(Error::NodeNotFound(name.to_owned())),
        Err(source) => Err(Error::Api {
            what: format!("cannot read node {name}"),
            source,
        }),
    }
}

/// Renders `template` for `node` (see the module docs for the variables).
pub fn render(template: &str, node: &NodeView) -> Result<String, Error> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| Error::Template("unterminated ${".into()))?;
            out.push_str(&variable(&tail[..end], node)?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn variable(name: &str, node: &NodeView) -> Result<String, Error> {
    let node_ip = || {
        node.addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or(node.addresses.first())
            .copied()
            .ok_or_else(|| {
                Error::Template(format!(
                    "node {} has no InternalIP or ExternalIP",
                    node.name
                ))
            })
    };
    Ok(match name {
        "NODE_NAME" => node.name.clone(),
        "REGION" => node.region.clone(),
        "ZONE" => node.zone.clone(),
        "POD_CIDRS" => {
            let items: Vec<String> = node.pod_cidrs.iter().map(|c| format!("\"{c}\"")).collect();
            format!("[{}]", items.join(", "))
        }
        "OVERLAY_ADDRESS" => overlay_address(&node.pod_cidrs)
            .ok_or_else(|| {
                Error::Template(format!(
                    "node {} has no IPv4 pod CIDR of /30 or larger",
                    node.name
                ))
            })?
            .to_string(),
        "NODE_IP" => node_ip()?.to_string(),
        "NODE_IP_HOST" => match node_ip()? {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        },
        other => return Err(Error::Template(format!("unknown variable ${{{other}}}"))),
    })
}

/// The last usable address of the first IPv4 pod CIDR: the node's address inside the overlay.
/// IPAM plug-ins hand out addresses from the start of the range, so the end is the least
/// likely to be taken; reserve it (e.g. host-local `rangeEnd`) where pods fill the range.
pub fn overlay_address(pod_cidrs: &[IpNet]) -> Option<Ipv4Addr> {
    pod_cidrs.iter().find_map(|c| match c {
        IpNet::V4(n) if n.prefix_len() <= 30 => Some(Ipv4Addr::from(u32::from(n.broadcast()) - 1)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeView {
        NodeView {
            name: "east-1".into(),
            region: "us-east".into(),
            zone: "us-east-1a".into(),
            pod_cidrs: vec![
                "10.1.1.0/24".parse().unwrap(),
                "fd00:1:1::/64".parse().unwrap(),
            ],
            addresses: vec!["fd00::5".parse().unwrap(), "192.0.2.5".parse().unwrap()],
            exports: Vec::new(),
        }
    }

    #[test]
    fn every_variable_renders() {
        let t = "name = \"${NODE_NAME}\"\nregion = \"${REGION}\"\nzone = \"${ZONE}\"\n\
                 pod_cidrs = ${POD_CIDRS}\naddress = \"${OVERLAY_ADDRESS}\"\n\
                 listen = \"${NODE_IP_HOST}:53\"\nip = \"${NODE_IP}\"\ncost = \"$$5 $x\"\n";
        let out = render(t, &node()).unwrap();
        assert_eq!(
            out,
            "name = \"east-1\"\nregion = \"us-east\"\nzone = \"us-east-1a\"\n\
             pod_cidrs = [\"10.1.1.0/24\", \"fd00:1:1::/64\"]\naddress = \"10.1.1.254\"\n\
             listen = \"192.0.2.5:53\"\nip = \"192.0.2.5\"\ncost = \"$5 $x\"\n"
        );
    }

    #[test]
    fn ipv6_only_nodes_get_brackets_and_bad_templates_are_named() {
        let mut n = node();
        n.addresses = vec!["fd00::5".parse().unwrap()];
        n.pod_cidrs = vec!["fd00:1:1::/64".parse().unwrap()];
        assert_eq!(render("${NODE_IP_HOST}:53", &n).unwrap(), "[fd00::5]:53");
        let err = render("${OVERLAY_ADDRESS}", &n).unwrap_err().to_string();
        assert!(err.contains("no IPv4 pod CIDR"), "{err}");
        let err = render("${NODE_NAEM}", &n).unwrap_err().to_string();
        assert!(err.contains("unknown variable ${NODE_NAEM}"), "{err}");
        assert!(
            render("${NODE_NAME", &n)
                .unwrap_err()
                .to_string()
                .contains("unterminated")
        );
        n.addresses.clear();
        assert!(render("${NODE_IP}", &n).is_err());
    }

    #[test]
    fn overlay_address_takes_the_end_of_the_first_ipv4_cidr() {
        let c = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            overlay_address(&[c("fd00::/64"), c("10.2.0.0/16")]),
            Some("10.2.255.254".parse().unwrap())
        );
        assert_eq!(overlay_address(&[c("10.2.0.0/31")]), None);
        assert_eq!(overlay_address(&[]), None);
    }
}
