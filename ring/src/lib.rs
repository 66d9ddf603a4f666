//! Where a key lives: the partitioner, the claim of partitions by nodes,
//! preference lists with fallbacks, and the versioned ring document with
//! its planner.
//!
//! This crate is independent: synchronous and runtime-free, it knows nothing
//! of the engine's insides, the network or the node (its one I/O is the
//! persistence helper, [`save`] and [`load`], built on the engine's
//! crash-safe `replace_file`). Everything else is pure functions of values,
//! so every membership scenario is a unit test.
//!
//! - [`partition_of`]: partition = top `log2(partitions)` bits of xxh3(key),
//!   identical to the node's `Partitioner` and the engine's `key_hash`.
//! - [`Ring`]: the document (epoch, members, owner per partition, pending
//!   transfers), with [`Ring::preference_list`].
//! - [`plan_join`], [`plan_leave`], [`set_status`], [`complete_transfer`],
//!   [`complete_all`],
//!   [`adopt`]: the planner (module [`plan`]).
//! - [`claim`]: the placement algorithm and its guarantees (module doc).
//! - [`encode`], [`decode`]: the persisted bytes (module [`format`]).
//!
//! Invariants kept by the crate as a whole:
//! - a `Ring` handed out by any public function passes [`Ring::validate`];
//! - the epoch grows by one with every planned change, and a node adopts
//!   only a higher epoch (or, at equal epochs, the higher content hash);
//! - a preference list never repeats a node and never names a node that is
//!   not live.

pub mod claim;
pub mod error;
pub mod format;
pub mod plan;
mod preference;
mod ring;
mod tiling;

pub use claim::{window_violations, Claimant};
pub use error::{Error, Result};
pub use format::{decode, encode, load, save};
pub use plan::{adopt, complete_all, complete_transfer, plan_join, plan_leave, set_status};
pub use preference::{PreferenceList, Replica, Role};
pub use ring::{
    check_settings, partition_of, Member, NodeId, Ring, Status, Transfer, PARTITIONS_DEFAULT,
    PARTITIONS_MAX, PARTITIONS_MIN, REPLICAS_DEFAULT, REPLICAS_MAX,
};
