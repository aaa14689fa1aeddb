//! An in-memory mesh for tests and the convergence benchmark: many [`Mesh`]es exchanging
//! datagrams through a simulated network with latency, partitions and crashes, in virtual time.
//! Everything but the network and the clock is the real control plane (real certificates,
//! signatures, sealing and foca).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use overlay::PrivateKey;

use crate::mesh::{Mesh, MeshConfig, MeshNode, NodeState, OwnNode};
use crate::record::NodeId;
use crate::store::{Verifier, VerifyCache};
use crate::trust::{self, NodeIdentity, NodeSigner, TrustAnchor};

mod window;

use window::{Arrival, Job, Window};

/// One simulated node.
pub struct SimNode {
    /// Its control plane (`None` while crashed).
    pub mesh: Option<Mesh>,
    /// Its identity.
    pub id: NodeId,
    /// Its underlay address.
    pub addr: SocketAddr,
    cert_dir: PathBuf,
    own: OwnNode,
}

/// A simulated network of meshes.
pub struct Sim {
    /// The nodes, in creation order.
    pub nodes: Vec<SimNode>,
    /// One-way latency of every datagram.
    pub latency: Duration,
    /// Datagrams delivered and their bytes.
    pub delivered: (u64, u64),
    /// Threads that run the nodes of a window (all cores unless set).
    pub threads: usize,
    config: MeshConfig,
    anchor: TrustAnchor,
    cache: VerifyCache,
    queue: BinaryHeap<Reverse<InFlight>>,
    /// Node deadlines; an entry is live only while it equals `deadlines[i]` (stale entries are
    /// skipped when they surface), so rescheduling never searches the heap.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    deadlines: Vec<Option<Instant>>,
    by_addr: HashMap<SocketAddr, usize>,
    cut: BTreeSet<(String, String)>,
    seq: u64,
    start: Instant,
    wall_start: SystemTime,
    /// Virtual time now.
    pub now: Instant,
    _dir: tempfile_dir::TempDir,
}

/// A datagram in flight: arrival, sequence number (ties in arrival order), sender index,
/// destination, bytes.
type InFlight = (Instant, u64, usize, SocketAddr, Vec<u8>);

/// Minimal self-cleaning temporary folder (the crate has no runtime tempfile dependency).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> std::io::Result<Self> {
            let path = std::env::temp_dir().join(format!(
                "peerd-sim-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Sim {
    /// A mesh with `clusters` (name, node count); node `i` of cluster `c` gets pod CIDR
    /// 10.<c>.<i>.0/24. Nothing runs until [`Sim::start`].
    pub fn new(clusters: &[(&str, usize)], config: MeshConfig) -> Self {
        let dir = tempfile_dir::TempDir::new().expect("temp dir");
        let ca = dir.path().join("ca");
        trust::init_ca(&ca).expect("CA");
        let anchor = TrustAnchor::load(&ca.join("ca.pem")).expect("anchor");
        let mut nodes = Vec::new();
        let mut by_addr = HashMap::new();
        for (c, (cluster, count)) in clusters.iter().enumerate() {
            for i in 0..*count {
                let name = format!("{cluster}-{i}");
                let pod = format!("10.{}.{}.0/24", c + 1, i).parse().expect("cidr");
                let identity = NodeIdentity {
                    name: name.clone(),
                    cluster: cluster.to_string(),
                    region: format!("region-{cluster}"),
                    zone: format!("zone-{cluster}-{}", i % 2),
                    pod_cidrs: vec![pod],
                };
                let cert_dir = dir.path().join(&name);
                issue(&ca, &identity, &cert_dir);
                let n = nodes.len();
                let addr = SocketAddr::new(
                    Ipv4Addr::new(192, 0, (n / 250) as u8, (n % 250 + 1) as u8).into(),
                    51820,
                );
                let own = OwnNode {
                    wg_private: PrivateKey::generate(),
                    endpoints: vec![addr],
                    pod_cidrs: vec![pod],
                    address: Ipv4Addr::new(10, (c + 1) as u8, i as u8, 1),
                    address6: None,
                    services: Vec::new(),
                };
                by_addr.insert(addr, n);
                nodes.push(SimNode {
                    mesh: None,
                    id: NodeId::new(*cluster, name),
                    addr,
                    cert_dir,
                    own,
                });
            }
        }
        let now = Instant::now();
        Self {
            deadlines: vec![None; nodes.len()],
            nodes,
            latency: Duration::from_millis(5),
            delivered: (0, 0),
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            config,
            anchor,
            cache: VerifyCache::default(),
            queue: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            by_addr,
            cut: BTreeSet::new(),
            seq: 0,
            start: now,
            wall_start: SystemTime::now(),
            now,
            _dir: dir,
        }
    }

    /// The CA folder (to issue more certificates, e.g. forged ones, in tests).
    pub fn ca_dir(&self) -> PathBuf {
        self._dir.path().join("ca")
    }

    /// Wall-clock time matching the virtual time.
    pub fn wall(&self) -> SystemTime {
        self.wall_start + (self.now - self.start)
    }

    /// Starts node `i`, joining through the addresses of nodes `seeds`.
    pub fn start(&mut self, i: usize, seeds: &[usize]) {
        let seeds: Vec<SocketAddr> = seeds.iter().map(|s| self.nodes[*s].addr).collect();
        let node = &self.nodes[i];
        let signer = NodeSigner::load(
            &node.cert_dir.join("node.pem"),
            &node.cert_dir.join("node.key"),
        )
        .expect("signer");
        let verifier = Verifier::new(self.anchor.clone(), self.cache.clone());
        let wall = self.wall();
        let mut mesh = Mesh::new(
            self.config.clone(),
            node.own.clone(),
            signer,
            verifier,
            self.now,
            wall,
        )
        .expect("mesh");
        mesh.start(seeds, Vec::new(), self.now, wall);
        self.nodes[i].mesh = Some(mesh);
        self.collect(i);
    }

    /// Crashes node `i`: it stops without saying goodbye.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].mesh = None;
        self.deadlines[i] = None;
    }

    /// Stops node `i` gracefully (it announces its leave).
    pub fn stop(&mut self, i: usize) {
        let (now, wall) = (self.now, self.wall());
        if let Some(mesh) = self.nodes[i].mesh.as_mut() {
            mesh.leave(now, wall);
        }
        self.collect(i);
        self.nodes[i].mesh = None;
        self.deadlines[i] = None;
    }

    /// Drops every datagram between clusters `a` and `b` (both ways) until [`Sim::heal`].
    pub fn partition(&mut self, a: &str, b: &str) {
        self.cut.insert((a.to_owned(), b.to_owned()));
        self.cut.insert((b.to_owned(), a.to_owned()));
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Delivers a raw datagram to node `to` as if sent from `from` (for forged traffic).
    pub fn inject(&mut self, from: SocketAddr, to: usize, datagram: Vec<u8>) {
        let (now, wall) = (self.now, self.wall());
        if let Some(mesh) = self.nodes[to].mesh.as_mut() {
            mesh.handle_datagram(from, &datagram, now, wall);
        }
        self.collect(to);
    }

    /// Runs the network for `d` of virtual time, in windows one latency wide whose busy nodes
    /// run in parallel (see [`window`]).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        // Meshes may have been changed from outside since the last run (`update_own` through
        // `nodes[i].mesh`): send what they queued and read every deadline again.
        self.timers.clear();
        self.deadlines.fill(None);
        for i in 0..self.nodes.len() {
            self.collect(i);
        }
        loop {
            let next_timer = self.next_timer();
            let next_packet = self.queue.peek().map(|Reverse((at, ..))| *at);
            match next_timer.into_iter().chain(next_packet).min() {
                Some(next) if next <= end => {
                    self.now = self.now.max(next);
                    self.window(end);
                }
                // Nothing due before `end` (or nothing at all: every node down, no datagram).
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
    }

    /// Runs until `done` holds or `limit` passes; returns the virtual time it took.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            if done(self) {
                return Some(self.now - start);
            }
            self.run_for(Duration::from_millis(10));
        }
        done(self).then(|| self.now - start)
    }

    /// What node `i` knows.
    pub fn view(&self, i: usize) -> Vec<MeshNode> {
        self.nodes[i]
            .mesh
            .as_ref()
            .map(|m| m.nodes(self.now))
            .unwrap_or_default()
    }

    /// The state node `i` gives node `j` (`None` if unknown).
    pub fn state(&self, i: usize, j: usize) -> Option<NodeState> {
        let mesh = self.nodes[i].mesh.as_ref()?;
        mesh.node(&self.nodes[j].id, self.now)
            .map(|(_, state)| state)
    }

    /// Whether node `i` holds node `j`'s current record and sees it alive (`false` unless both
    /// run).
    pub fn sees(&self, i: usize, j: usize) -> bool {
        let (Some(mesh), Some(other)) = (&self.nodes[i].mesh, &self.nodes[j].mesh) else {
            return false;
        };
        mesh.node(&self.nodes[j].id, self.now)
            .is_some_and(|(record, state)| {
                state == NodeState::Alive && record.version == other.own().version
            })
    }

    /// Whether every running node sees every other running node alive, with its current record.
    pub fn converged(&self) -> bool {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].mesh.is_some())
            .collect();
        running.iter().all(|&i| {
            running
                .iter()
                .filter(|&&j| j != i)
                .all(|&j| self.sees(i, j))
        })
    }

    /// The earliest live node deadline, dropping stale heap entries on the way.
    fn next_timer(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if self.deadlines[i] == Some(at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Runs every event from now until one latency later (or `end`): hands each node with work
    /// its datagrams, runs the nodes, then queues what they sent.
    fn window(&mut self, end: Instant) {
        let window = Window {
            now: self.now,
            before: self.now + self.latency,
            end,
            latency: self.latency,
            origin: (self.start, self.wall_start),
        };
        let mut work: BTreeMap<usize, Vec<Arrival>> = BTreeMap::new();
        while let Some(Reverse((at, ..))) = self.queue.peek() {
            if !window.holds(*at) {
                break;
            }
            let Some(Reverse((at, seq, from, to, datagram))) = self.queue.pop() else {
                break;
            };
            if let Some(dst) = self.route(from, to) {
                let from = self.nodes[from].addr;
                work.entry(dst).or_default().push((at, seq, from, datagram));
            }
        }
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if !window.holds(at) {
                break;
            }
            self.timers.pop();
            if self.deadlines[i] == Some(at) {
                work.entry(i).or_default();
            }
        }
        let mut jobs: Vec<Job> = work
            .into_iter()
            .filter_map(|(node, arrivals)| {
                Some(Job {
                    node,
                    mesh: self.nodes[node].mesh.take()?,
                    arrivals,
                    sent: Vec::new(),
                    delivered: (0, 0),
                })
            })
            .collect();
        window::run(&mut jobs, &window, self.threads);
        for job in jobs {
            self.nodes[job.node].mesh = Some(job.mesh);
            self.delivered.0 += job.delivered.0;
            self.delivered.1 += job.delivered.1;
            for (at, to, datagram) in job.sent {
                self.seq += 1;
                self.queue
                    .push(Reverse((at, self.seq, job.node, to, datagram)));
            }
            self.deadlines[job.node] = None;
            self.collect(job.node);
        }
    }

    /// The node a datagram from node `from` to `to` reaches, if any (unknown address, cut).
    fn route(&self, from: usize, to: SocketAddr) -> Option<usize> {
        let dst = *self.by_addr.get(&to)?;
        let cut = !self.cut.is_empty()
            && self.cut.contains(&(
                self.nodes[from].id.cluster.clone(),
                self.nodes[dst].id.cluster.clone(),
            ));
        (!cut).then_some(dst)
    }

    /// Queues what node `i` sent and (re)schedules its next deadline.
    fn collect(&mut self, i: usize) {
        let at = self.now + self.latency;
        let Some(mesh) = self.nodes[i].mesh.as_mut() else {
            self.deadlines[i] = None;
            return;
        };
        while let Some((to, datagram)) = mesh.poll_transmit() {
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq, i, to, datagram)));
        }
        let deadline = mesh.poll_timeout();
        if self.deadlines[i] != Some(deadline) {
            self.deadlines[i] = Some(deadline);
            self.timers.push(Reverse((deadline, i)));
        }
    }
}

fn issue(ca: &Path, identity: &NodeIdentity, out: &Path) {
    trust::issue_node(ca, identity, Duration::from_secs(86_400), out).expect("node certificate");
}
