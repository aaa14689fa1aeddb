//! The authoritative `global.` zone handler: answers from the current [`Snapshot`], never
//! forwards, and says NXDOMAIN for any name it does not know (`.global` is a real TLD).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, LowerName, RecordSet, RecordType, TSigResponseContext};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
    ZoneHandler, ZoneTransfer, ZoneType,
};

use crate::fast::Outcome;
use crate::stats::{Counters, bump};
use crate::zone::{Snapshot, Zone, apex};

/// The `global.` zone. Queries hold a read lock while they look up (and, on the fast path,
/// copy out) their answer; an update builds the new snapshot first and holds the write lock
/// only to swap the pointer.
pub(crate) struct GlobalZone {
    origin: LowerName,
    ttl: u32,
    serial: AtomicU32,
    snapshot: RwLock<Arc<Snapshot>>,
    stats: Arc<Counters>,
}

/// What a name and type resolve to in one snapshot.
enum Resolution {
    Records(LookupRecords, Option<LookupRecords>),
    NoData,
    NxDomain,
}

impl GlobalZone {
    pub fn new(zone: &Zone, ttl: u32, stats: Arc<Counters>) -> Self {
        Self {
            origin: LowerName::new(&apex()),
            ttl,
            serial: AtomicU32::new(1),
            snapshot: RwLock::new(Arc::new(Snapshot::build(zone, ttl, 1))),
            stats,
        }
    }

    /// Replaces the whole zone; the next query sees the new names.
    pub fn replace(&self, zone: &Zone) {
        // The serial only tells a human (or `dig SOA`) that the data changed.
        let serial = self.serial.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let snapshot = Arc::new(Snapshot::build(zone, self.ttl, serial));
        // A panic elsewhere cannot leave a half-written `Arc`: poisoning carries no meaning here.
        let mut current = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut *current, snapshot);
        drop(current);
        // Freeing a large zone takes a while: not while queries wait for the lock.
        drop(old);
    }

    /// The precomputed answer to `packet`, if it has the common shape (see `fast.rs`); counted.
    pub fn fast_answer(
        &self,
        packet: &[u8],
        ra: bool,
        max: impl Fn(Option<u16>) -> usize,
    ) -> Option<Vec<u8>> {
        let (reply, outcome) = {
            let snapshot = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
            snapshot.fast.answer(packet, ra, max)?
        };
        bump(match outcome {
            Outcome::Answer => &self.stats.global_answers,
            Outcome::NoData => &self.stats.global_nodata,
            Outcome::NxDomain => &self.stats.global_nxdomain,
        });
        Some(reply)
    }

    fn resolve(&self, name: &LowerName, rtype: RecordType, opts: LookupOptions) -> Resolution {
        // Held only while looking up: answers keep their own `Arc`s to record sets, so the
        // updater, not a query, frees a replaced snapshot.
        let snap = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        let one = |set: &Arc<RecordSet>| LookupRecords::new(opts, set.clone());
        if *name == self.origin {
            return match rtype {
                RecordType::SOA => Resolution::Records(one(&snap.soa), None),
                RecordType::NS => Resolution::Records(one(&snap.ns), None),
                // RFC 8482 allows a subset for ANY; the apex has only these two.
                RecordType::ANY => Resolution::Records(
                    LookupRecords::many(opts, vec![snap.soa.clone(), snap.ns.clone()]),
                    None,
                ),
                _ => Resolution::NoData,
            };
        }
        let Some(node) = snap.nodes.get(name) else {
            return Resolution::NxDomain;
        };
        let found = match rtype {
            RecordType::A => node.a.as_ref().map(|s| (one(s), None)),
            RecordType::AAAA => node.aaaa.as_ref().map(|s| (one(s), None)),
            RecordType::SRV => node.srv.as_ref().map(|s| {
                let glue =
                    (!node.glue.is_empty()).then(|| LookupRecords::many(opts, node.glue.clone()));
                (one(s), glue)
            }),
            RecordType::ANY => {
                let sets: Vec<_> = [&node.a, &node.aaaa, &node.srv]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                (!sets.is_empty()).then(|| (LookupRecords::many(opts, sets), None))
            }
            _ => None,
        };
        match found {
            Some((answers, additionals)) => Resolution::Records(answers, additionals),
            None => Resolution::NoData,
        }
    }
}

/// REFUSED, counted.
pub(crate) fn refused(stats: &Counters) -> LookupError {
    bump(&stats.refused);
    LookupError::ResponseCode(ResponseCode::Refused)
}

/// The question of a client request: the request's own error, or REFUSED (counted) for a
/// class other than IN. Both handlers serve IN only: `global.` has no other data, and
/// hickory-resolver only asks in class IN, so anything else (CHAOS `version.bind`, ...)
/// would come back as the wrong question.
pub(crate) fn in_class_query<'r>(
    request: &'r Request,
    stats: &Counters,
) -> Result<RequestInfo<'r>, LookupError> {
    let info = request.request_info()?;
    if info.query.query_class() != DNSClass::IN {
        return Err(refused(stats));
    }
    Ok(info)
}

fn into_flow(resolution: Resolution) -> LookupControlFlow<AuthLookup> {
    // `Break`: no other handler may add to (or forward) a `.global` answer.
    LookupControlFlow::Break(match resolution {
        Resolution::Records(answers, additionals) => Ok(AuthLookup::answers(answers, additionals)),
        // The catalog turns these into NOERROR / NXDOMAIN with our SOA in the authority
        // section (RFC 2308 §2.1, §2.2).
        Resolution::NoData => Err(LookupError::NameExists),
        Resolution::NxDomain => Err(LookupError::ResponseCode(ResponseCode::NXDomain)),
    })
}

#[async_trait::async_trait]
impl ZoneHandler for GlobalZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// Used by the catalog for the SOA and NS it adds to authority sections; not counted.
    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        into_flow(self.resolve(name, rtype, lookup_options))
    }

    /// One client query: resolved and counted.
    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let info = match in_class_query(request, &self.stats) {
            Ok(info) => info,
            Err(error) => return (LookupControlFlow::Break(Err(error)), None),
        };
        let resolution = self.resolve(info.query.name(), info.query.query_type(), lookup_options);
        bump(match resolution {
            Resolution::Records(..) => &self.stats.global_answers,
            Resolution::NoData => &self.stats.global_nodata,
            Resolution::NxDomain => &self.stats.global_nxdomain,
        });
        (into_flow(resolution), None)
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
        // The zone is unsigned.
        LookupControlFlow::Break(Ok(AuthLookup::default()))
    }
}
