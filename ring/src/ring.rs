//! The ring document: members, ownership of every partition, and the
//! transfers in flight.
//!
//! One value, [`Ring`], is the whole state a node needs to route a key. It is
//! versioned by `epoch`: the claimant plans a change as a new document with
//! `epoch + 1` (see [`crate::plan`]), and every node keeps the highest epoch it
//! hears of ([`crate::adopt`]). The document is immutable once built: a change
//! is a new `Ring`, so a reader never sees half a plan.
//!
//! Invariants (checked by [`Ring::validate`], which every constructor, plan
//! and decode runs before handing a ring out):
//! - `partitions` is a power of two in `PARTITIONS_MIN..=PARTITIONS_MAX`, and
//!   `replicas` (N) is in `1..=REPLICAS_MAX`.
//! - members are sorted by id, ids are unique; there is at least one member
//!   that is not removed.
//! - `owners.len() == partitions`, and every owner is a member that is not
//!   removed.
//! - transfers are sorted by partition, at most one per partition; a
//!   transfer's `source` is the partition's current owner and its `target`
//!   is a different member that is neither leaving nor removed.

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};

/// A node's id inside one cluster.
pub type NodeId = u16;

/// The smallest ring size.
pub const PARTITIONS_MIN: u32 = 8;
/// The largest ring size.
pub const PARTITIONS_MAX: u32 = 65_536;
/// The default ring size.
pub const PARTITIONS_DEFAULT: u32 = 256;
/// The largest replication factor N.
pub const REPLICAS_MAX: u8 = 5;
/// The default replication factor N.
pub const REPLICAS_DEFAULT: u8 = 3;
/// Limits on the document's strings, in bytes.
pub const CLUSTER_NAME_BYTES_MAX: usize = 255;
pub const ADDRESS_BYTES_MAX: usize = 255;
pub const RACK_BYTES_MAX: usize = 255;
/// Limit on the number of members, removed ones included.
pub const MEMBERS_MAX: usize = 4096;

/// The partition of a key in a ring of `partitions` partitions: the top
/// `log2(partitions)` bits of xxh3-64(key). This is exactly
/// `meridian_node::partition::Partitioner::partition_of` and the engine's
/// `key_hash`, so a partition is a contiguous range of digest buckets.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    debug_assert!(partitions.is_power_of_two() && partitions >= 2);
    let shift = 64 - partitions.trailing_zeros();
    (xxh3_64(key) >> shift) as u32
}

/// Where a member stands in the cluster's life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Planned in; receiving its partitions. Serves as soon as it owns one.
    Joining,
    /// A full member.
    Up,
    /// Planned out; handing its partitions off. Still serves what it owns.
    Leaving,
    /// Marked down by an operator or the claimant: keeps its partitions, but
    /// preference lists route around it to fallbacks.
    Down,
    /// Gone: owns nothing, kept so its id is not reused by mistake.
    Removed,
}

impl Status {
    /// Whether requests may be sent to a member with this status.
    pub fn is_live(self) -> bool {
        matches!(self, Status::Joining | Status::Up | Status::Leaving)
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Status::Joining => 0,
            Status::Up => 1,
            Status::Leaving => 2,
            Status::Down => 3,
            Status::Removed => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Status> {
        Some(match code {
            0 => Status::Joining,
            1 => Status::Up,
            2 => Status::Leaving,
            3 => Status::Down,
            4 => Status::Removed,
            _ => return None,
        })
    }
}

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub id: NodeId,
    /// `host:port` of its peer listener.
    pub address: String,
    /// The rack (or zone) it sits in; `None` when racks are not configured.
    pub rack: Option<String>,
    pub status: Status,
}

impl Member {
    /// A member that is up, without a rack.
    pub fn new(id: NodeId, address: impl Into<String>) -> Member {
        Member {
            id,
            address: address.into(),
            rack: None,
            status: Status::Up,
        }
    }

    /// The same member in `rack`.
    pub fn in_rack(mut self, rack: impl Into<String>) -> Member {
        self.rack = Some(rack.into());
        self
    }
}

/// A partition handed from one node to another: `target` streams the
/// partition's records from `source`, then the claimant commits
/// [`crate::complete_transfer`] and ownership flips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Transfer {
    pub partition: u32,
    pub source: NodeId,
    pub target: NodeId,
}

/// The ring document of one cluster. See the module doc for its invariants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ring {
    pub(crate) cluster: String,
    pub(crate) epoch: u64,
    pub(crate) partitions: u32,
    pub(crate) replicas: u8,
    pub(crate) members: Vec<Member>,
    pub(crate) owners: Vec<NodeId>,
    pub(crate) transfers: Vec<Transfer>,
}

impl Ring {
    /// A new cluster of one node, which owns every partition. Epoch 1.
    pub fn new(cluster: &str, partitions: u32, replicas: u8, first: Member) -> Result<Ring> {
        let first = Member {
            status: Status::Up,
            ..first
        };
        let ring = Ring {
            cluster: cluster.to_owned(),
            epoch: 1,
            partitions,
            replicas,
            owners: vec![first.id; partitions as usize],
            members: vec![first],
            transfers: Vec::new(),
        };
        ring.validate()?;
        Ok(ring)
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn partitions(&self) -> u32 {
        self.partitions
    }
    /// The replication factor N.
    pub fn replicas(&self) -> u8 {
        self.replicas
    }
    /// Every member, removed ones included, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &self.members[i])
    }
    /// The current owner of every partition, indexed by partition.
    pub fn owners(&self) -> &[NodeId] {
        &self.owners
    }
    pub fn owner(&self, partition: u32) -> NodeId {
        self.owners[partition as usize]
    }
    /// Transfers in flight, sorted by partition.
    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }
    pub fn transfer(&self, partition: u32) -> Option<Transfer> {
        self.transfers
            .binary_search_by_key(&partition, |t| t.partition)
            .ok()
            .map(|i| self.transfers[i])
    }
    /// The owners once every pending transfer has completed.
    pub fn target_owners(&self) -> Vec<NodeId> {
        let mut owners = self.owners.clone();
        for transfer in &self.transfers {
            owners[transfer.partition as usize] = transfer.target;
        }
        owners
    }
    /// The partition of `key` in this ring.
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        partition_of(key, self.partitions)
    }
    /// The claimant: the lowest id among members that are up.
    pub fn claimant(&self) -> Option<NodeId> {
        self.members
            .iter()
            .find(|m| m.status == Status::Up)
            .map(|m| m.id)
    }
    /// A hash of the whole document, used to break ties between two
    /// documents of the same epoch.
    pub fn content_hash(&self) -> u64 {
        xxh3_64(&crate::format::encode(self))
    }

    /// Checks every invariant of the module doc.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::Invalid { reason });
        check_settings(self.partitions, self.replicas)?;
        if self.cluster.len() > CLUSTER_NAME_BYTES_MAX {
            return invalid(format!("cluster name of {} bytes", self.cluster.len()));
        }
        if self.members.len() > MEMBERS_MAX {
            return invalid(format!("{} members", self.members.len()));
        }
        for pair in self.members.windows(2) {
            if pair[0].id >= pair[1].id {
                return invalid(format!("members out of order at id {}", pair[1].id));
            }
        }
        for member in &self.members {
            let rack = member.rack.as_deref().unwrap_or("");
            if member.address.len() > ADDRESS_BYTES_MAX || rack.len() > RACK_BYTES_MAX {
                return invalid(format!("member {} has an oversized string", member.id));
            }
        }
        if !self.members.iter().any(|m| m.status != Status::Removed) {
            return invalid("no member left".to_owned());
        }
        if self.owners.len() != self.partitions as usize {
            return invalid(format!(
                "{} owners for {} partitions",
                self.owners.len(),
                self.partitions
            ));
        }
        for (partition, &owner) in self.owners.iter().enumerate() {
            match self.member(owner) {
                Some(m) if m.status != Status::Removed => {}
                _ => {
                    return invalid(format!(
                        "partition {partition} owned by unknown node {owner}"
                    ))
                }
            }
        }
        self.validate_transfers()
    }

    fn validate_transfers(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::Invalid { reason });
        for pair in self.transfers.windows(2) {
            if pair[0].partition >= pair[1].partition {
                return invalid(format!("transfers out of order at {}", pair[1].partition));
            }
        }
        for transfer in &self.transfers {
            let Transfer {
                partition,
                source,
                target,
            } = *transfer;
            if partition >= self.partitions || self.owners[partition as usize] != source {
                return invalid(format!(
                    "transfer of partition {partition} from a non-owner"
                ));
            }
            let receives = self
                .member(target)
                .is_some_and(|m| !matches!(m.status, Status::Leaving | Status::Removed));
            if target == source || !receives {
                return invalid(format!(
                    "transfer of partition {partition} to node {target}"
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn member_index(&self, id: NodeId) -> Option<usize> {
        self.members.binary_search_by_key(&id, |m| m.id).ok()
    }
}

/// Checks a ring size and a replication factor against their limits.
pub fn check_settings(partitions: u32, replicas: u8) -> Result<()> {
    if !partitions.is_power_of_two() || !(PARTITIONS_MIN..=PARTITIONS_MAX).contains(&partitions) {
        return Err(Error::InvalidSetting {
            name: "partitions",
            reason: format!(
                "{partitions} is not a power of two in {PARTITIONS_MIN}..={PARTITIONS_MAX}"
            ),
        });
    }
    if !(1..=REPLICAS_MAX).contains(&replicas) {
        return Err(Error::InvalidSetting {
            name: "replicas",
            reason: format!("{replicas} is not in 1..={REPLICAS_MAX}"),
        });
    }
    Ok(())
}
