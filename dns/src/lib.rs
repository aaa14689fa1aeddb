//! The `.global` DNS authority and forwarder (a later milestone). Empty for now: it builds so
//! that the workspace layout is complete.
