//! l7proxy
