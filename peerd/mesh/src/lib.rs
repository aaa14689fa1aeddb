//! The peerd mesh control plane: trust (mesh CA, node certificates, signed records) and
//! membership (who is in the mesh, with which keys, endpoints and pod CIDRs). Sans-IO: the
//! daemon owns sockets and clocks.

pub mod member;
pub mod mesh;
pub mod record;
pub mod sim;
pub mod store;
pub mod trust;
pub mod wire;

pub use mesh::{Mesh, MeshConfig, MeshNode, MeshStats, NodeState, OwnNode};
pub use record::{NodeId, NodeRecord, SignedRecord};
pub use store::{Reject, Verifier, VerifyCache};
