//! Locality tiers: how close an endpoint is to this node.

use std::fmt;

use crate::Locality;

/// Preference order of an endpoint as seen from this node; lower is preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Same node: same cluster and same node name.
    SameNode,
    /// Same zone, in any cluster (zone names are globally meaningful).
    SameZone,
    /// Same region, in any cluster.
    SameRegion,
    /// Everything else, including endpoints whose locality is unknown.
    Remote,
}

impl Tier {
    /// All tiers in preference order.
    pub const ALL: [Tier; 4] = [
        Tier::SameNode,
        Tier::SameZone,
        Tier::SameRegion,
        Tier::Remote,
    ];

    /// The tier of an endpoint at `ep` seen from a proxy at `local`. An empty node, zone or
    /// region name is unknown and never matches, so endpoints without locality labels are not
    /// mistaken for neighbours.
    pub fn of(local: &Locality, ep: &Locality) -> Tier {
        let known_eq = |a: &str, b: &str| !a.is_empty() && a == b;
        if local.cluster == ep.cluster && known_eq(&local.node, &ep.node) {
            Tier::SameNode
        } else if known_eq(&local.zone, &ep.zone) {
            Tier::SameZone
        } else if known_eq(&local.region, &ep.region) {
            Tier::SameRegion
        } else {
            Tier::Remote
        }
    }

    /// Position in [`Tier::ALL`]: 0 for `SameNode` up to 3 for `Remote`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short name for tables and explanations: `same-node`, `same-zone`, `same-region`, `remote`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::SameNode => "same-node",
            Tier::SameZone => "same-zone",
            Tier::SameRegion => "same-region",
            Tier::Remote => "remote",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(cluster: &str, region: &str, zone: &str, node: &str) -> Locality {
        Locality {
            cluster: cluster.into(),
            region: region.into(),
            zone: zone.into(),
            node: node.into(),
        }
    }

    #[test]
    fn tiers_by_locality() {
        let me = loc("c1", "eu", "eu-a", "n1");
        assert_eq!(
            Tier::of(&me, &loc("c1", "eu", "eu-a", "n1")),
            Tier::SameNode
        );
        // Node names are per cluster.
        assert_eq!(
            Tier::of(&me, &loc("c2", "eu", "eu-a", "n1")),
            Tier::SameZone
        );
        assert_eq!(
            Tier::of(&me, &loc("c1", "eu", "eu-a", "n2")),
            Tier::SameZone
        );
        assert_eq!(
            Tier::of(&me, &loc("c1", "eu", "eu-b", "n3")),
            Tier::SameRegion
        );
        assert_eq!(
            Tier::of(&me, &loc("c3", "eu", "eu-b", "n3")),
            Tier::SameRegion
        );
        assert_eq!(Tier::of(&me, &loc("c1", "us", "us-a", "n4")), Tier::Remote);
    }

    #[test]
    fn unknown_names_never_match() {
        let me = loc("c1", "", "", "");
        assert_eq!(Tier::of(&me, &loc("c1", "", "", "")), Tier::Remote);
        assert!(Tier::SameNode < Tier::SameZone && Tier::SameRegion < Tier::Remote);
        assert_eq!(Tier::ALL.map(Tier::index), [0, 1, 2, 3]);
        assert_eq!(Tier::SameZone.to_string(), "same-zone");
    }
}
