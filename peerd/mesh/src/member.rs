//! Membership identities for foca (SWIM) and the runtime that collects what foca asks for.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
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
    /// A hash of `(cluster, name)` ([`member_key`]). foca builds the `Addr` of every member it
    /// knows for each update it applies, so it must be cheap: a `(String, String)` pair cost two
    /// allocations per member per update and dominated a 1,000-node simulation. Two nodes whose
    /// keys collided would share one membership slot, as they would share a digest key.
    type Addr = u64;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> u64 {
        member_key(&self.cluster, &self.name)
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// The membership `Addr` of node `cluster`/`name`. In-process only (never sent), so it favours
/// speed: eight bytes per multiply (FxHash's step) rather than the byte-wise FNV-1a of
/// [`NodeId::digest_key`], which is on the wire and must stay stable.
#[inline]
pub(crate) fn member_key(cluster: &str, name: &str) -> u64 {
    // The lengths first: with them, the words below determine both strings.
    let h = step(0, ((cluster.len() as u64) << 32) ^ name.len() as u64);
    words(words(h, cluster.as_bytes()), name.as_bytes())
}

/// One FxHash step.
#[inline]
fn step(h: u64, word: u64) -> u64 {
    (h.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// Folds `bytes` into `h` a word at a time; short and ragged ends are read as overlapping
/// words (as wyhash does), so that no byte is read one at a time.
#[inline]
fn words(mut h: u64, bytes: &[u8]) -> u64 {
    let n = bytes.len();
    let le32 = |at: usize| u64::from(u32::from_le_bytes(word(&bytes[at..at + 4])));
    let le64 = |at: usize| u64::from_le_bytes(word(&bytes[at..at + 8]));
    match n {
        0 => h,
        1..=3 => step(
            h,
            u64::from(bytes[0]) | u64::from(bytes[n / 2]) << 8 | u64::from(bytes[n - 1]) << 16,
        ),
        4..=7 => step(h, le32(0) | le32(n - 4) << 32),
        _ => {
            let mut at = 0;
            while at + 8 <= n {
                h = step(h, le64(at));
                at += 8;
            }
            if at < n {
                h = step(h, le64(n - 8));
            }
            h
        }
    }
}

/// `bytes` as an array (it always has the length asked for).
#[inline]
fn word<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().unwrap_or([0; N])
}

/// A map keyed by [`member_key`]s, which are hashes already: SipHash over them again would only
/// slow the index rebuilds down.
pub(crate) type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// The (almost) identity hasher for [`KeyMap`].
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u64, which KeyMap never has; fold them anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, key: u64) {
        // The table takes buckets from the low bits: fold the high ones in.
        self.0 = (key ^ (key >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::member_key;

    #[test]
    fn member_keys_tell_nodes_apart() {
        let mut seen = HashMap::new();
        let clusters = [
            "",
            "a",
            "ab",
            "c0",
            "east",
            "prod-eu",
            "prod-eu-west-1",
            "x".repeat(17).leak(),
        ];
        for cluster in clusters {
            for i in 0..2000 {
                for name in [
                    format!("{i}"),
                    format!("{cluster}-{i}"),
                    format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250),
                ] {
                    let key = member_key(cluster, &name);
                    if let Some(other) = seen.insert(key, (cluster, name.clone())) {
                        assert_eq!(other, (cluster, name), "same key");
                    }
                }
            }
        }
        // Where one string ends and the other begins matters.
        assert_ne!(member_key("ab", "c"), member_key("a", "bc"));
        assert_ne!(member_key("", "abc"), member_key("abc", ""));
    }
}
