//! The peerd mesh control plane: trust (mesh CA, node certificates, signed records) and
//! membership (who is in the mesh, with which keys, endpoints and pod CIDRs). Sans-IO: the
//! daemon owns sockets and clocks.
