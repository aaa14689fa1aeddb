//! The locality-aware L7 proxy (a later milestone). Empty for now: it builds so that the
//! workspace layout is complete.
