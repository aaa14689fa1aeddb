//! Everything outside `global.`: handed to the upstream resolvers through hickory-resolver,
//! which caches answers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, RecordType, TSigResponseContext};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, ZoneHandler,
    ZoneTransfer, ZoneType,
};
use tracing::{debug, trace};

use crate::DnsError;
use crate::authority::{in_class_query, refused};
use crate::stats::{Counters, bump};
use crate::zone::apex;

/// How long one upstream attempt may take. Stub resolvers give up after a few seconds (glibc:
/// 5 s), so an answer later than that helps nobody.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Cached upstream answers (hickory-resolver counts responses, not records).
const CACHE_SIZE: u64 = 4096;

/// The root zone handler: forwards every query that reaches it.
pub(crate) struct Forwarder {
    origin: LowerName,
    global: LowerName,
    /// `None`: no usable upstream; every forwarded query fails with SERVFAIL (and is counted).
    resolver: Option<TokioResolver>,
    stats: Arc<Counters>,
}

impl Forwarder {
    /// `resolver: None` disables forwarding.
    pub fn new(resolver: Option<TokioResolver>, stats: Arc<Counters>) -> Self {
        Self {
            origin: LowerName::new(&Name::root()),
            global: LowerName::new(&apex()),
            resolver,
            stats,
        }
    }
}

/// A caching resolver that asks `upstreams` (each over UDP, and TCP for truncated answers).
pub(crate) fn build_resolver(upstreams: &[SocketAddr]) -> Result<TokioResolver, DnsError> {
    let servers = upstreams
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    let config = ResolverConfig::from_name_servers(servers);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    let opts = builder.options_mut();
    // A forwarder passes names through as asked: no /etc/hosts, no search list, and CNAME
    // chains kept in the answer (RFC 1034 §4.3.2).
    opts.use_hosts_file = ResolveHosts::Never;
    opts.preserve_intermediates = true;
    opts.timeout = UPSTREAM_TIMEOUT;
    // One try per upstream: the client retries on its own schedule (glibc: 5 s).
    opts.attempts = 1;
    opts.cache_size = CACHE_SIZE;
    builder.build().map_err(|error| DnsError::Resolver {
        reason: error.to_string(),
    })
}

/// The `nameserver` lines of a resolv.conf, as socket addresses on port 53.
///
/// Read when the server starts, in the caller's mount namespace: under `ip netns exec NS`,
/// `/etc/resolv.conf` is the bind-mounted `/etc/netns/NS/resolv.conf` (or the host's file when
/// that does not exist), which is what a process in the namespace should use.
///
/// # Errors
///
/// [`DnsError::ResolvConf`] when the file cannot be read or names no nameserver.
pub fn upstreams_from_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let data = std::fs::read(path).map_err(|source| DnsError::ResolvConf {
        path: path.to_owned(),
        reason: source.to_string(),
    })?;
    let (config, _) = hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|error| {
        DnsError::ResolvConf {
            path: path.to_owned(),
            reason: error.to_string(),
        }
    })?;
    Ok(config
        .name_servers()
        .iter()
        .map(|server| SocketAddr::new(server.ip, 53))
        .collect())
}

/// Drops upstreams that are this server itself, which would make every forwarded query loop
/// until it times out. Only the listen address is known here: an upstream that is another
/// address of this host, with `listen` on the unspecified address, is not detected.
pub(crate) fn without_self(upstreams: Vec<SocketAddr>, listen: SocketAddr) -> Vec<SocketAddr> {
    upstreams
        .into_iter()
        .filter(|up| {
            let same_port = up.port() == listen.port();
            let is_self = *up == listen
                || (same_port
                    && listen.ip().is_unspecified()
                    && (up.ip().is_loopback() || up.ip().is_unspecified()));
            if is_self {
                debug!(upstream = %up, "ignoring an upstream that is this server");
            }
            !is_self
        })
        .collect()
}

#[async_trait::async_trait]
impl ZoneHandler for Forwarder {
    fn zone_type(&self) -> ZoneType {
        ZoneType::External
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        // The catalog sends `global.` names to the `global.` handler; this is a second fence
        // so that they can never leak upstream.
        if self.global.zone_of(name) {
            return LookupControlFlow::Break(Err(LookupError::ResponseCode(
                ResponseCode::NXDomain,
            )));
        }
        let Some(resolver) = &self.resolver else {
            bump(&self.stats.forward_errors);
            let servfail = LookupError::ResponseCode(ResponseCode::ServFail);
            return LookupControlFlow::Break(Err(servfail));
        };
        bump(&self.stats.forwarded);
        let name = Name::from(name.clone());
        match resolver.lookup(name, rtype).await {
            Ok(lookup) => LookupControlFlow::Continue(Ok(AuthLookup::from(lookup))),
            Err(error) => {
                if !(error.is_nx_domain() || error.is_no_records_found()) {
                    trace!(%error, "upstream lookup failed");
                    bump(&self.stats.forward_errors);
                }
                LookupControlFlow::Continue(Err(LookupError::from(error)))
            }
        }
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let info = match in_class_query(request, &self.stats) {
            Ok(info) => info,
            Err(error) => return (LookupControlFlow::Break(Err(error)), None),
        };
        // The catalog answers REFUSED when recursion was not asked for; do not spend an
        // upstream query on it first.
        if !request.metadata.recursion_desired {
            return (LookupControlFlow::Break(Err(refused(&self.stats))), None);
        }
        let flow = self
            .lookup(
                info.query.name(),
                info.query.query_type(),
                Some(&info),
                lookup_options,
            )
            .await;
        (flow, None)
    }

    /// Zone transfers are refused: the zone is rebuilt from the mesh, never copied.
    async fn zone_transfer(
        &self,
        _request: &Request,
        _lookup_options: LookupOptions,
        _now: u64,
    ) -> Option<(
        Result<ZoneTransfer, LookupError>,
        Option<TSigResponseContext>,
    )> {
        Some((Err(LookupError::ResponseCode(ResponseCode::Refused)), None))
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Continue(Ok(AuthLookup::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn own_address_is_not_an_upstream() {
        let ups = addrs(&["127.0.0.1:53", "10.0.0.2:53", "127.0.0.53:53"]);
        let kept = without_self(ups.clone(), "127.0.0.1:53".parse().unwrap());
        assert_eq!(kept, addrs(&["10.0.0.2:53", "127.0.0.53:53"]));
        let kept = without_self(ups.clone(), "0.0.0.0:53".parse().unwrap());
        assert_eq!(kept, addrs(&["10.0.0.2:53"]));
        assert_eq!(
            without_self(ups.clone(), "127.0.0.1:5353".parse().unwrap()),
            ups
        );
    }

    #[test]
    fn resolv_conf_nameservers_become_upstreams() {
        let dir = std::env::temp_dir().join(format!("peerd-dns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "# netns\nsearch example.test\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n",
        )
        .unwrap();
        let ups = upstreams_from_resolv_conf(&path).unwrap();
        assert_eq!(ups, addrs(&["192.0.2.53:53", "[2001:db8::53]:53"]));
        std::fs::write(&path, "search only.test\n").unwrap();
        assert!(upstreams_from_resolv_conf(&path).is_err());
        let missing = upstreams_from_resolv_conf(&dir.join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
