//! Membership identities for foca (SWIM) and the runtime that collects what foca asks for.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use foca::{Identity, Notification, Runtime, Timer};
use serde::{Deserialize, Serialize};

use crate::record::NodeId;

/// A node's membership identity: who it is, where to reach it, and the generation of its
/// current run (a restarted node is a new generation that supersedes the old one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Cluster name.
    pub cluster: String,
    /// Node name.
    pub name: String,
    /// Where its control plane (and WireGuard) listens.
    pub addr: SocketAddr,
    /// Generation: larger wins.
    pub generation: u64,
}

impl Member {
    /// The node this identity belongs to.
    pub fn node_id(&self) -> NodeId {
        NodeId::new(&self.cluster, &self.name)
    }
}

impl Identity for Member {
    type Addr = (String, String);

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> (String, String) {
        (self.cluster.clone(), self.name.clone())
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// A membership change foca reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member became active.
    Up(Member),
    /// A member was declared down (or left).
    Down(Member),
    /// A member restarted as a new identity.
    Renamed(Member, Member),
    /// We were declared down and rejoined as this identity.
    Rejoined(Member),
}

/// Collects foca's sends, timers and notifications for the mesh to act on.
#[derive(Default)]
pub struct Collector {
    /// Datagrams foca wants sent.
    pub sends: Vec<(Member, Vec<u8>)>,
    /// Membership changes.
    pub events: Vec<MemberEvent>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Timer<Member>>,
    next_timer: u64,
    now: Option<Instant>,
}

impl Collector {
    /// Sets the time that `submit_after` counts from.
    pub fn set_now(&mut self, now: Instant) {
        self.now = Some(now);
    }

    /// The earliest pending timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the timers due at `now`, in order.
    pub fn due(&mut self, now: Instant) -> Vec<Timer<Member>> {
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(timer) = self.pending.remove(&id) {
                due.push(timer);
            }
        }
        due
    }
}

impl Runtime<Member> for Collector {
    fn notify(&mut self, notification: Notification<'_, Member>) {
        let event = match notification {
            Notification::MemberUp(m) => MemberEvent::Up(m.clone()),
            Notification::MemberDown(m) => MemberEvent::Down(m.clone()),
            Notification::Rename(old, new) => MemberEvent::Renamed(old.clone(), new.clone()),
            Notification::Rejoin(m) => MemberEvent::Rejoined(m.clone()),
            _ => return,
        };
        self.events.push(event);
    }

    fn send_to(&mut self, to: Member, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<Member>, after: Duration) {
        let at = self.now.unwrap_or_else(Instant::now) + after;
        let id = self.next_timer;
        self.next_timer += 1;
        self.timers.push(Reverse((at, id)));
        self.pending.insert(id, event);
    }
}
