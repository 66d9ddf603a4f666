//! Cross-datacenter replication: shipper, links, receiver, fullsync.
//!
//! Skeleton: this crate is built by the cross-datacenter issue. Its state
//! machines stay synchronous; glommio appears only at its I/O edge.
