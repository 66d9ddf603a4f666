//! Where a key lives: partitioner, ring ownership, preference lists and
//! membership state.
//!
//! Skeleton: this crate is built by the "one datacenter" issue. Like `engine`
//! it will stay synchronous and runtime-free.
