//! Benchmarks of Meridian against its peers.
