//! The Meridian server: configuration, the thread-per-core runtime, the
//! coordinator and the `meridian` binary.
//!
//! Skeleton: built by the "one node" issue.
