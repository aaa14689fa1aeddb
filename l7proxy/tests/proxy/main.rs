//! Component tests of the proxy: real hyper endpoints and clients and raw sockets on loopback.
//! Every test listens on its own virtual IP in 127/8 (all of it is local on Linux), so the
//! tests run in parallel.

mod support;

mod failover;
mod fast_path;
mod h2;
mod malformed;
mod observability;
mod protocols;
mod updates;
