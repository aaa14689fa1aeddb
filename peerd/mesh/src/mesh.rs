//! The sans-IO control plane of one node: SWIM membership (foca), signed records, and
//! anti-entropy, over the datagrams of [`crate::wire`]. The caller feeds it datagrams and time
//! and sends what [`Mesh::poll_transmit`] returns; [`Mesh::generation`] changes whenever the
//! set of nodes, their records or their states change.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foca::{Foca, NoCustomBroadcast, PostcardCodec, State};
use overlay::{PrivateKey, PublicKey};
use rand10::SeedableRng;
use rand10::rngs::SmallRng;

use crate::member::{Collector, KeyMap, Member, MemberEvent};
use crate::record::{NodeId, NodeRecord, SignedRecord};
use crate::store::{Accepted, Store, Verifier};
use crate::trust::NodeSigner;
use crate::wire::{self, Hello, Message, Sealed, Sealer, WireError};

/// Timing of the control plane.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// How often each node probes one member.
    pub probe_period: Duration,
    /// How long a probe waits for an answer before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// How long a suspect member has to refute before it is declared down.
    pub suspect_to_down: Duration,
    /// How often a node compares record digests with one random member.
    pub anti_entropy: Duration,
    /// How often seeds (and cached nodes) are greeted while the node knows no live member.
    pub seed_retry: Duration,
    /// How long records loaded from the state directory count as live without confirmation.
    pub cached_grace: Duration,
    /// When the records of a dead node are forgotten.
    pub forget_dead_after: Duration,
}

impl Default for MeshConfig {
    /// Tuned so that a stopped node is declared down within about 2 s on a small mesh.
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(120),
            suspect_to_down: Duration::from_millis(1000),
            anti_entropy: Duration::from_secs(2),
            seed_retry: Duration::from_secs(1),
            cached_grace: Duration::from_secs(15),
            forget_dead_after: Duration::from_secs(600),
        }
    }
}

/// This node's own settings (its identity comes from its certificate).
#[derive(Debug, Clone)]
pub struct OwnNode {
    /// WireGuard private key.
    pub wg_private: PrivateKey,
    /// Underlay endpoints to announce; the first is the membership address.
    pub endpoints: Vec<SocketAddr>,
    /// Pod CIDRs behind this node.
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Overlay IPv4 address.
    pub address: std::net::Ipv4Addr,
    /// Overlay IPv6 address.
    pub address6: Option<std::net::Ipv6Addr>,
    /// Services with endpoints on this node.
    pub services: Vec<peerd_types::ServiceExport>,
}

/// Membership state of a node, as `peerd status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeState {
    /// Answering probes.
    Alive,
    /// Missed probes (or not yet confirmed after a restart); still routed.
    Suspect,
    /// Declared down or left; no longer routed.
    Dead,
}

impl NodeState {
    /// The lowercase name used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
        }
    }
}

/// A known node and its state.
#[derive(Debug, Clone)]
pub struct MeshNode {
    /// Its verified record.
    pub record: NodeRecord,
    /// Its membership state.
    pub state: NodeState,
}

/// Counters for `peerd status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Control datagrams received and their bytes.
    pub rx_datagrams: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Control datagrams sent.
    pub tx_datagrams: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Bytes sent, by message kind (`hello`, `swim`, `records`, `digest`, `want`).
    pub tx_bytes_by_kind: BTreeMap<&'static str, u64>,
    /// Records refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Datagrams dropped, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

/// Positions in foca's membership list by [`foca::Identity::addr`], and whether foca may have
/// changed since they were taken.
#[derive(Default)]
struct MemberIndex {
    at: KeyMap<usize>,
    stale: bool,
}

/// Most entries in one digest datagram (16 bytes each).
const DIGEST_CHUNK: usize = 64;
/// Records are packed into one datagram while it stays under this size.
const RECORDS_BUDGET: usize = 1200;
/// Fewest milliseconds between two hellos to one address.
const HELLO_INTERVAL: Duration = Duration::from_millis(500);

type Swim = Foca<Member, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// One node's control plane.
pub struct Mesh {
    config: MeshConfig,
    me: Member,
    own: NodeRecord,
    own_signed: SignedRecord,
    signer: NodeSigner,
    verifier: Verifier,
    store: Store,
    sealer: Sealer,
    keys: HashMap<PublicKey, NodeId>,
    foca: Swim,
    /// Where each member sits in foca's membership list (see [`Mesh::swim_member`]).
    member_index: Mutex<MemberIndex>,
    rt: Collector,
    outbox: VecDeque<(SocketAddr, Vec<u8>, &'static str)>,
    seeds: Vec<SocketAddr>,
    next_seed_hello: Instant,
    next_anti_entropy: Instant,
    /// When foca's suspects were first seen suspect, by identity and incarnation (see
    /// [`Mesh::expire_suspects`]); checked every half `suspect_to_down`.
    suspect_since: HashMap<(Member, foca::Incarnation), Instant>,
    next_suspect_check: Instant,
    cached_until: HashMap<NodeId, Instant>,
    dead_since: HashMap<NodeId, Instant>,
    /// When we last greeted each address, and whether that hello asked for a reply.
    hello_sent: HashMap<(SocketAddr, bool), Instant>,
    unsolicited: Unsolicited,
    generation: u64,
    stats: MeshStats,
}

/// Errors building a mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// No underlay endpoint to announce.
    #[error("no underlay endpoint to announce: set [mesh] advertise")]
    NoEndpoint,
    /// The node's own record does not pass its own certificate's checks.
    #[error("this node's own record is refused: {0}")]
    OwnRecord(crate::store::Reject),
}

impl Mesh {
    /// A node's control plane, not yet joined.
    pub fn new(
        config: MeshConfig,
        own: OwnNode,
        signer: NodeSigner,
        verifier: Verifier,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Self, MeshError> {
        let id = signer.identity().clone();
        let addr = *own.endpoints.first().ok_or(MeshError::NoEndpoint)?;
        let generation = unix_nanos(wall);
        let me = Member {
            cluster: id.cluster.clone(),
            name: id.name.clone(),
            addr,
            generation,
        };
        let record = NodeRecord {
            name: id.name,
            cluster: id.cluster,
            region: id.region,
            zone: id.zone,
            wg_public_key: *own.wg_private.public_key().as_bytes(),
            endpoints: own.endpoints,
            pod_cidrs: own.pod_cidrs,
            address: own.address,
            address6: own.address6,
            services: own.services,
            member_gen: generation,
            version: generation,
        };
        let own_signed = SignedRecord::sign(&record, &signer);
        verifier
            .verify(&own_signed, wall)
            .map_err(MeshError::OwnRecord)?;
        let foca_config = foca_config(&config);
        let rng = SmallRng::seed_from_u64(rand::random());
        let foca = Foca::new(me.clone(), foca_config, rng, PostcardCodec);
        let mut rt = Collector::default();
        rt.set_now(now);
        Ok(Self {
            next_anti_entropy: now + config.anti_entropy,
            suspect_since: HashMap::new(),
            next_suspect_check: now + config.suspect_to_down / 2,
            config,
            me,
            own: record,
            own_signed,
            signer,
            verifier,
            store: Store::default(),
            sealer: Sealer::new(own.wg_private),
            keys: HashMap::new(),
            foca,
            member_index: Mutex::default(),
            rt,
            outbox: VecDeque::new(),
            seeds: Vec::new(),
            next_seed_hello: now,
            cached_until: HashMap::new(),
            dead_since: HashMap::new(),
            hello_sent: HashMap::new(),
            unsolicited: Unsolicited::default(),
            generation: 1,
            stats: MeshStats::default(),
        })
    }

    /// Joins through `seeds`, after loading records remembered from a previous run (they count
    /// as live, and their nodes are greeted, until confirmed or until the grace period ends).
    pub fn start(
        &mut self,
        seeds: Vec<SocketAddr>,
        cached: Vec<SignedRecord>,
        now: Instant,
        wall: SystemTime,
    ) {
        for signed in cached {
            if let Verdict::Changed(id) | Verdict::Known(id) = self.accept(signed, wall) {
                self.cached_until.insert(id, now + self.config.cached_grace);
            }
        }
        self.seeds = seeds;
        self.greet_seeds(now);
    }

    /// Handles one control datagram from `from`.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        wall: SystemTime,
    ) {
        self.rt.set_now(now);
        self.stats.rx_datagrams += 1;
        self.stats.rx_bytes += datagram.len() as u64;
        let keys = &self.keys;
        match self.sealer.open(datagram, wall, |k| keys.contains_key(k)) {
            Err(WireError::UnknownSender) => {
                self.drop_reason(WireError::UnknownSender.reason());
                // It knows us but we do not know it: introduce ourselves and ask for its record.
                // The sender is unauthenticated and a Hello is ~16x its datagram, so these answers
                // are limited per source address and in total (no amplification for spoofers).
                if self.unsolicited.allow(from.ip(), now) {
                    self.hello(from, true, now);
                }
            }
            Err(e) => self.drop_reason(e.reason()),
            Ok(Message::Hello(hello)) => self.on_hello(from, hello, now, wall),
            Ok(Message::Sealed { from: key, body }) => match body {
                Sealed::Swim(bytes) => {
                    let handled = self.foca.handle_data(&bytes, &mut self.rt);
                    self.swim_changed();
                    if let Err(e) = handled {
                        tracing::debug!(%from, error = %e, "swim message refused");
                        self.drop_reason("swim");
                    }
                }
                Sealed::Records(list) => {
                    for signed in list {
                        self.accept(signed, wall);
                    }
                }
                Sealed::Digest(digest) => self.on_digest(from, key, &digest, wall),
                Sealed::Want(wanted) => self.on_want(from, key, &wanted, wall),
            },
        }
        self.flush(now, wall);
    }

    /// Runs due timers: SWIM probes and suspicion, anti-entropy, seed retries, expiry of cached
    /// and dead records.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        self.rt.set_now(now);
        for timer in self.rt.due(now) {
            if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
                tracing::debug!(error = %e, "swim timer failed");
            }
            self.swim_changed();
        }
        if now >= self.next_anti_entropy {
            self.next_anti_entropy = now + self.config.anti_entropy;
            self.anti_entropy(wall);
            // Forget rate-limit entries that no longer limit anything.
            self.hello_sent
                .retain(|_, at| now.duration_since(*at) < HELLO_INTERVAL);
            self.unsolicited.prune(now);
        }
        if self.foca.num_members() == 0 && now >= self.next_seed_hello {
            self.greet_seeds(now);
        }
        if now >= self.next_suspect_check {
            self.next_suspect_check = now + self.config.suspect_to_down / 2;
            self.expire_suspects(now);
        }
        let before = self.cached_until.len();
        self.cached_until.retain(|_, until| *until > now);
        if self.cached_until.len() != before {
            self.generation += 1;
        }
        let forget = self.config.forget_dead_after;
        let expired: Vec<NodeId> = self
            .dead_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= forget)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.dead_since.remove(&id);
            if self.state_of(&id, now) == NodeState::Dead
                && let Some(entry) = self.store.remove(&id)
            {
                self.keys
                    .remove(&PublicKey::from_bytes(entry.record.wg_public_key));
                self.generation += 1;
            }
        }
        self.flush(now, wall);
    }

    /// Declares down the members suspect for twice `suspect_to_down` without refuting. foca
    /// does so from a timer it arms when its own probe of a member fails, and it drops every
    /// such timer when it learns that this node was itself declared down (and rejoins under a
    /// new generation): the suspects it held then, and those it learns of by gossip, stay
    /// suspect until they refute, which they do only if word of the suspicion reaches them.
    /// After a partition healed, that kept a node suspect to the other side for 10 to 40 s,
    /// until a periodic announcement happened to settle it. Down, the member's next message
    /// gets it told so (`TurnUndead`), and it rejoins under a new generation, as after any
    /// false suspicion.
    fn expire_suspects(&mut self, now: Instant) {
        let limit = self.config.suspect_to_down * 2;
        let suspects: Vec<(Member, foca::Incarnation)> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect)
            .map(|m| (m.id().clone(), m.incarnation()))
            .collect();
        self.suspect_since.retain(|key, _| suspects.contains(key));
        let mut down = Vec::new();
        for key in suspects {
            let since = *self.suspect_since.entry(key.clone()).or_insert(now);
            if now.duration_since(since) >= limit {
                down.push(foca::Member::new(key.0, key.1, State::Down));
            }
        }
        if down.is_empty() {
            return;
        }
        for member in &down {
            tracing::info!(node = %member.id().node_id(), "suspect too long: declared down");
        }
        if let Err(e) = self.foca.apply_many(down.into_iter(), true, &mut self.rt) {
            tracing::debug!(error = %e, "cannot declare suspects down");
        }
        self.swim_changed();
    }

    /// When [`Mesh::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Instant {
        let mut next = self.next_anti_entropy;
        if let Some(t) = self.rt.next_deadline() {
            next = next.min(t);
        }
        if self.foca.num_members() == 0 {
            next = next.min(self.next_seed_hello);
        } else {
            next = next.min(self.next_suspect_check);
        }
        if let Some(t) = self.cached_until.values().min() {
            next = next.min(*t);
        }
        next
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let (to, datagram, kind) = self.outbox.pop_front()?;
        self.stats.tx_datagrams += 1;
        self.stats.tx_bytes += datagram.len() as u64;
        *self.stats.tx_bytes_by_kind.entry(kind).or_default() += datagram.len() as u64;
        Some((to, datagram))
    }

    /// Announces that this node leaves (graceful shutdown).
    pub fn leave(&mut self, now: Instant, wall: SystemTime) {
        self.rt.set_now(now);
        if let Err(e) = self.foca.leave_cluster(&mut self.rt) {
            tracing::debug!(error = %e, "leave failed");
        }
        self.swim_changed();
        self.flush(now, wall);
    }

    /// Changes what this node announces (endpoints, pod CIDRs, addresses) and pushes the new
    /// version to every live member.
    pub fn update_own(
        &mut self,
        change: impl FnOnce(&mut NodeRecord),
        now: Instant,
        wall: SystemTime,
    ) {
        change(&mut self.own);
        self.resign(wall);
        self.push_own(now, wall);
    }

    /// Every known node but this one, with its state, ordered by id.
    pub fn nodes(&self, now: Instant) -> Vec<MeshNode> {
        self.store
            .iter()
            .map(|(id, e)| MeshNode {
                record: e.record.clone(),
                state: self.state_of(id, now),
            })
            .collect()
    }

    /// What this node knows of `id`: its record and state, or `None` without a verified record.
    /// Copies nothing, unlike [`Mesh::nodes`].
    pub fn node(&self, id: &NodeId, now: Instant) -> Option<(&NodeRecord, NodeState)> {
        self.store
            .get(id)
            .map(|e| (&e.record, self.state_of(id, now)))
    }

    /// This node's own current record.
    pub fn own(&self) -> &NodeRecord {
        &self.own
    }

    /// Signed records of every known node, for the state directory.
    pub fn export(&self) -> Vec<SignedRecord> {
        self.store.iter().map(|(_, e)| e.signed.clone()).collect()
    }

    /// Changes whenever nodes, records or states change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counters.
    pub fn stats(&self) -> &MeshStats {
        &self.stats
    }

    fn state_of(&self, id: &NodeId, now: Instant) -> NodeState {
        match self.swim_member(id).map(|m| m.state()) {
            Some(State::Alive) => NodeState::Alive,
            Some(State::Suspect) => NodeState::Suspect,
            Some(State::Down) => NodeState::Dead,
            None if self.cached_until.get(id).is_some_and(|t| *t > now) => NodeState::Suspect,
            None => NodeState::Dead,
        }
    }

    /// foca's entry for `id` (foca keeps one per [`foca::Identity::addr`]). Scanning foca's
    /// list on every lookup made [`Mesh::nodes`] quadratic; an index of positions is checked
    /// on every use instead (a position that holds `id` is right however old the index is),
    /// and rebuilt on a wrong position or a miss if foca changed since it was built.
    fn swim_member(&self, id: &NodeId) -> Option<&foca::Member<Member>> {
        let key = crate::member::member_key(&id.cluster, &id.name);
        let members = || self.foca.iter_membership_state();
        let lookup = |index: &MemberIndex| {
            let at = *index.at.get(&key)?;
            members()
                .nth(at)
                .filter(|m| m.id().cluster == id.cluster && m.id().name == id.name)
        };
        let mut index = self.member_index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(member) = lookup(&index) {
            return Some(member);
        }
        if !index.stale {
            return None;
        }
        index.at = members()
            .enumerate()
            .map(|(at, m)| (foca::Identity::addr(m.id()), at))
            .collect();
        index.stale = false;
        lookup(&index)
    }

    /// Marks the member index as possibly out of date (after any call into foca that may add,
    /// remove or move members).
    fn swim_changed(&mut self) {
        self.member_index
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .stale = true;
    }

    /// Verifies and stores a record.
    fn accept(&mut self, signed: SignedRecord, wall: SystemTime) -> Verdict {
        let (record, node) = match self.verifier.verify(&signed, wall) {
            Ok(v) => v,
            Err(reject) => {
                tracing::warn!(%reject, "record refused");
                *self.stats.rejected.entry(reject.reason()).or_default() += 1;
                return Verdict::Refused;
            }
        };
        let id = record.id();
        if id == self.own.id() {
            return Verdict::Own;
        }
        let old_key = self
            .store
            .get(&id)
            .map(|e| PublicKey::from_bytes(e.record.wg_public_key));
        match self.store.insert(signed, record.clone(), &node) {
            Accepted::Stale => Verdict::Known(id),
            Accepted::New | Accepted::Updated => {
                if let Some(old) = old_key.filter(|k| k.as_bytes() != &record.wg_public_key) {
                    self.keys.remove(&old);
                    self.sealer.forget(&old);
                }
                self.keys
                    .insert(PublicKey::from_bytes(record.wg_public_key), id.clone());
                self.generation += 1;
                Verdict::Changed(id)
            }
        }
    }

    fn on_hello(&mut self, from: SocketAddr, hello: Hello, now: Instant, wall: SystemTime) {
        let member = hello.member;
        // Only a record that verified (new, newer, or the one we hold) earns an answer: a
        // refused one gets nothing, whatever its unsigned `member` field claims.
        let (Verdict::Changed(id) | Verdict::Known(id)) = self.accept(hello.record, wall) else {
            return;
        };
        if member.node_id() != id || id == self.own.id() {
            *self.stats.rejected.entry("identity_mismatch").or_default() += 1;
            return;
        }
        if hello.reply {
            self.hello(from, false, now);
        }
        let known_alive = self.foca.iter_members().any(|m| m.id() == &member);
        if !known_alive {
            let announced = self.foca.announce(member, &mut self.rt);
            self.swim_changed();
            if let Err(e) = announced {
                tracing::debug!(error = %e, "announce failed");
            }
        }
    }

    fn on_digest(
        &mut self,
        from: SocketAddr,
        key: PublicKey,
        digest: &[(u64, u64)],
        wall: SystemTime,
    ) {
        let theirs: BTreeMap<u64, u64> = digest.iter().copied().collect();
        let own_key = self.own.id().digest_key();
        let mut send = Vec::new();
        let mut want = Vec::new();
        // Only offer what they listed as older: a chunked digest does not list everything.
        for (&k, &v) in &theirs {
            if k == own_key {
                if v < self.own.version {
                    send.push(self.own_signed.clone());
                }
                continue;
            }
            match self.store.version_by_digest_key(k) {
                Some(ours) if v == ours => {}
                Some(ours) if v < ours => {
                    send.extend(self.store.by_digest_key(k).map(|e| e.signed.clone()));
                }
                _ => want.push(k),
            }
        }
        self.send_records(from, key, send, wall);
        if !want.is_empty() {
            let datagram = self.sealer.seal(&key, &Sealed::Want(want), wall);
            self.outbox.push_back((from, datagram, "want"));
        }
    }

    fn on_want(&mut self, from: SocketAddr, key: PublicKey, wanted: &[u64], wall: SystemTime) {
        let own_key = self.own.id().digest_key();
        let mut send = Vec::new();
        for k in wanted.iter().take(4 * DIGEST_CHUNK) {
            if *k == own_key {
                send.push(self.own_signed.clone());
            } else if let Some(e) = self.store.by_digest_key(*k) {
                send.push(e.signed.clone());
            }
        }
        self.send_records(from, key, send, wall);
    }

    fn send_records(
        &mut self,
        to: SocketAddr,
        key: PublicKey,
        records: Vec<SignedRecord>,
        wall: SystemTime,
    ) {
        let mut batch = Vec::new();
        let mut size = 0;
        for r in records {
            if !batch.is_empty() && size + r.size() > RECORDS_BUDGET {
                let datagram =
                    self.sealer
                        .seal(&key, &Sealed::Records(std::mem::take(&mut batch)), wall);
                self.outbox.push_back((to, datagram, "records"));
                size = 0;
            }
            size += r.size();
            batch.push(r);
        }
        if !batch.is_empty() {
            let datagram = self.sealer.seal(&key, &Sealed::Records(batch), wall);
            self.outbox.push_back((to, datagram, "records"));
        }
    }

    fn anti_entropy(&mut self, wall: SystemTime) {
        // One member at random, without copying the list: this runs on every node every round.
        let count = self.foca.num_members();
        if count == 0 {
            return;
        }
        let Some(pick) = self
            .foca
            .iter_members()
            .nth(rand::random::<usize>() % count)
            .map(|m| m.id().clone())
        else {
            return;
        };
        let Some(key) = self
            .store
            .get(&pick.node_id())
            .map(|e| PublicKey::from_bytes(e.record.wg_public_key))
        else {
            return;
        };
        let mut digest = self.store.digest();
        digest.push((self.own.id().digest_key(), self.own.version));
        for chunk in digest.chunks(DIGEST_CHUNK) {
            let datagram = self
                .sealer
                .seal(&key, &Sealed::Digest(chunk.to_vec()), wall);
            self.outbox.push_back((pick.addr, datagram, "digest"));
        }
    }

    fn push_own(&mut self, now: Instant, wall: SystemTime) {
        let members: Vec<Member> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        for m in members {
            if let Some(key) = self
                .store
                .get(&m.node_id())
                .map(|e| PublicKey::from_bytes(e.record.wg_public_key))
            {
                let datagram =
                    self.sealer
                        .seal(&key, &Sealed::Records(vec![self.own_signed.clone()]), wall);
                self.outbox.push_back((m.addr, datagram, "records"));
            }
        }
        self.flush(now, wall);
    }

    fn resign(&mut self, wall: SystemTime) {
        self.own.version = (self.own.version + 1).max(unix_nanos(wall));
        self.own_signed = SignedRecord::sign(&self.own, &self.signer);
    }

    fn greet_seeds(&mut self, now: Instant) {
        self.next_seed_hello = now + self.config.seed_retry;
        let mut targets = self.seeds.clone();
        for id in self.cached_until.keys() {
            if let Some(e) = self.store.get(id) {
                targets.extend(e.record.endpoints.first().copied());
            }
        }
        for to in targets {
            if to != self.me.addr {
                self.hello(to, true, now);
            }
        }
    }

    fn hello(&mut self, to: SocketAddr, reply: bool, now: Instant) {
        // Greetings and replies are limited apart: a greeting sent before the peer was up (and
        // lost) must not silence the reply to its own greeting, or two seeds that start a few
        // milliseconds apart wait for the next seed retry or anti-entropy round to meet.
        if let Some(last) = self.hello_sent.get(&(to, reply))
            && now.duration_since(*last) < HELLO_INTERVAL
        {
            return;
        }
        self.hello_sent.insert((to, reply), now);
        let hello = Hello {
            member: self.me.clone(),
            record: self.own_signed.clone(),
            reply,
        };
        self.outbox
            .push_back((to, wire::encode_hello(&hello), "hello"));
    }

    /// Turns what foca asked for into sealed datagrams, and membership events into state.
    fn flush(&mut self, now: Instant, wall: SystemTime) {
        for (member, bytes) in std::mem::take(&mut self.rt.sends) {
            match self
                .store
                .get(&member.node_id())
                .map(|e| PublicKey::from_bytes(e.record.wg_public_key))
            {
                Some(key) => {
                    let datagram = self.sealer.seal(&key, &Sealed::Swim(bytes), wall);
                    self.outbox.push_back((member.addr, datagram, "swim"));
                }
                None => self.hello(member.addr, true, now),
            }
        }
        for event in std::mem::take(&mut self.rt.events) {
            self.generation += 1;
            match event {
                MemberEvent::Up(m) => {
                    let id = m.node_id();
                    self.dead_since.remove(&id);
                    self.cached_until.remove(&id);
                    // Greet it even when its record is already here (anti-entropy can bring a
                    // record before SWIM brings the member): it may have joined after us and not
                    // know us, and in a large mesh nothing else would tell it before one of us
                    // probes the other, minutes later. Ask for its record only if we lack it.
                    let known = self.store.get(&id).is_some();
                    self.hello(m.addr, !known, now);
                    tracing::info!(node = %id, addr = %m.addr, "member up");
                }
                MemberEvent::Down(m) => {
                    tracing::info!(node = %m.node_id(), "member down");
                    self.dead_since.insert(m.node_id(), now);
                }
                MemberEvent::Renamed(_, new) => {
                    self.dead_since.remove(&new.node_id());
                }
                MemberEvent::Rejoined(me) => {
                    tracing::info!(
                        generation = me.generation,
                        "rejoined the mesh under a new generation"
                    );
                    self.own.member_gen = me.generation;
                    self.me = me;
                    self.resign(wall);
                    self.push_own(now, wall);
                }
            }
        }
        if !self.rt.sends.is_empty() || !self.rt.events.is_empty() {
            self.flush(now, wall);
        }
    }

    fn drop_reason(&mut self, reason: &'static str) {
        *self.stats.dropped.entry(reason).or_default() += 1;
    }
}

fn foca_config(c: &MeshConfig) -> foca::Config {
    let mut f = foca::Config::new_lan(std::num::NonZeroU32::new(64).expect("non-zero"));
    f.probe_period = c.probe_period;
    f.probe_rtt = c.probe_rtt;
    f.suspect_to_down_after = c.suspect_to_down;
    f.num_indirect_probes = NonZeroUsize::new(3).expect("non-zero");
    f.max_transmissions = NonZeroU8::new(10).expect("non-zero");
    f.max_packet_size = NonZeroUsize::new(1200).expect("non-zero");
    f.notify_down_members = true;
    f.remove_down_after = Some(Duration::from_secs(3600));
    f.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: NonZeroUsize::new(1).expect("non-zero"),
    });
    f.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(2),
        num_members: NonZeroUsize::new(2).expect("non-zero"),
    });
    f.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(150),
        num_members: NonZeroUsize::new(3).expect("non-zero"),
    });
    f
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What [`Mesh::accept`] made of a record.
enum Verdict {
    /// Refused (and counted).
    Refused,
    /// About this node itself: ignored.
    Own,
    /// Verified, but not newer than what we hold.
    Known(NodeId),
    /// Verified and new or newer: stored.
    Changed(NodeId),
}

/// Limits answers to unauthenticated senders: one per source address per second, and at most
/// [`Unsolicited::BURST`] (refilled at [`Unsolicited::RATE`] per second) in total.
#[derive(Default)]
struct Unsolicited {
    by_ip: HashMap<std::net::IpAddr, Instant>,
    tokens: f64,
    last: Option<Instant>,
}

impl Unsolicited {
    const RATE: f64 = 5.0;
    const BURST: f64 = 10.0;
    const PER_IP: Duration = Duration::from_secs(1);

    fn allow(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        let elapsed = self.last.map_or(Self::BURST, |t| {
            now.duration_since(t).as_secs_f64() * Self::RATE
        });
        self.tokens = (self.tokens + elapsed).min(Self::BURST);
        self.last = Some(now);
        if self.tokens < 1.0
            || self
                .by_ip
                .get(&ip)
                .is_some_and(|t| now.duration_since(*t) < Self::PER_IP)
        {
            return false;
        }
        self.tokens -= 1.0;
        self.by_ip.insert(ip, now);
        true
    }

    fn prune(&mut self, now: Instant) {
        self.by_ip
            .retain(|_, t| now.duration_since(*t) < Self::PER_IP);
    }
}
