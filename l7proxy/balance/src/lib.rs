//! Locality-aware load balancing (in progress).
