//! Preference lists: which nodes hold a key, and who stands in for the ones
//! that are down (sloppy quorum).
//!
//! The primaries of partition `p` are the first N distinct owners met walking
//! the ring from `p` (partitions `p, p+1, ...`, wrapping). The claim keeps N
//! consecutive partitions on N distinct nodes, so usually these are simply
//! the owners of `p .. p+N`; walking on past repeats keeps the list right
//! even on a ring that is mid-handoff or has fewer nodes than N.
//! A primary that is not live is replaced by a fallback: the next distinct
//! live node further along the ring, taken in ring order, and the entry says
//! which primary it stands in for, so the write it receives becomes a hint
//! for that primary (hinted handoff).
//!
//! Invariants:
//! - a list never names a node twice;
//! - a list never names a node that is not live;
//! - primaries come first, in ring order; fallbacks follow, in ring order,
//!   the k-th fallback standing in for the k-th dead primary;
//! - the list has `min(N, live nodes)` entries whenever the ring has at least
//!   N distinct owners.

use crate::ring::{NodeId, Ring};

/// The role of one entry of a preference list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// One of the N owners of the key.
    Primary,
    /// A live node standing in for `primary`, which is down.
    Fallback { primary: NodeId },
}

/// One node of a preference list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Replica {
    pub node: NodeId,
    pub role: Role,
}

/// The nodes a request for one partition goes to, primaries first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PreferenceList {
    pub partition: u32,
    pub replicas: Vec<Replica>,
    /// Primaries that are down and got no fallback (too few live nodes).
    pub uncovered: Vec<NodeId>,
}

impl PreferenceList {
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas.iter().map(|r| r.node)
    }
    /// The first live owner: the node that coordinates, and ships the
    /// partition to other datacenters.
    pub fn first(&self) -> Option<NodeId> {
        self.replicas.first().map(|r| r.node)
    }
}

impl Ring {
    /// The N distinct owners of `partition`, in ring order, whatever their
    /// status.
    pub fn primaries(&self, partition: u32) -> Vec<NodeId> {
        self.primaries_up_to(partition, usize::from(self.replicas))
    }

    /// The primaries of every partition, in partition order: what
    /// [`Ring::primaries`] gives for each. With fewer owners than N, a
    /// partition's walk stops once it met every owner instead of going
    /// round the whole ring (which made this quadratic in the ring size:
    /// about 10 s for 65,536 partitions and two nodes).
    pub fn all_primaries(&self) -> Vec<Vec<NodeId>> {
        let mut owners: Vec<NodeId> = self.owners().to_vec();
        owners.sort_unstable();
        owners.dedup();
        let wanted = usize::from(self.replicas).min(owners.len());
        (0..self.partitions())
            .map(|partition| self.primaries_up_to(partition, wanted))
            .collect()
    }

    fn primaries_up_to(&self, partition: u32, wanted: usize) -> Vec<NodeId> {
        let mut primaries = Vec::with_capacity(wanted);
        for node in self.walk(partition) {
            if primaries.len() == wanted {
                break;
            }
            if !primaries.contains(&node) {
                primaries.push(node);
            }
        }
        primaries
    }

    /// The racks the members of the ring sit in (a member without a rack is
    /// a rack of its own), and the partitions whose primaries sit on fewer
    /// distinct racks than `min(N, racks)`: the partitions a rack's outage
    /// would cost more than one replica. `(0, 0)` when no member has a rack.
    /// `primaries` is this ring's [`Ring::all_primaries`], which a caller
    /// such as CLUSTERINFO computes once for its other counts too.
    pub fn rack_spread(&self, primaries: &[Vec<NodeId>]) -> (usize, u32) {
        assert_eq!(
            primaries.len(),
            self.partitions() as usize,
            "one primaries list per partition"
        );
        if self.members().iter().all(|m| m.rack.is_none()) {
            return (0, 0);
        }
        let rack_of = |id: NodeId| {
            let member = self.member(id).expect("an owner is a member");
            match &member.rack {
                Some(rack) => (Some(rack.as_str()), 0),
                None => (None, member.id),
            }
        };
        let mut racks: Vec<(Option<&str>, NodeId)> =
            self.owners().iter().map(|&id| rack_of(id)).collect();
        racks.sort_unstable();
        racks.dedup();
        let wanted = usize::from(self.replicas).min(racks.len());
        let shared = primaries
            .iter()
            .filter(|primaries| {
                let mut on: Vec<(Option<&str>, NodeId)> =
                    primaries.iter().map(|&id| rack_of(id)).collect();
                on.sort_unstable();
                on.dedup();
                on.len() < wanted
            })
            .count() as u32;
        (racks.len(), shared)
    }

    /// The preference list of `partition`, with liveness taken from member
    /// status ([`crate::Status::is_live`]).
    pub fn preference_list(&self, partition: u32) -> PreferenceList {
        self.preference_list_with(partition, |node| {
            self.member(node).is_some_and(|m| m.status.is_live())
        })
    }

    /// The preference list of `partition`, with liveness decided by the
    /// caller (its failure detector), e.g. a node whose heartbeats stopped
    /// before the ring marked it down.
    pub fn preference_list_with(
        &self,
        partition: u32,
        is_live: impl Fn(NodeId) -> bool,
    ) -> PreferenceList {
        assert!(
            partition < self.partitions,
            "partition {partition} out of range"
        );
        let primaries = self.primaries(partition);
        let mut replicas: Vec<Replica> = Vec::with_capacity(primaries.len());
        let mut dead: Vec<NodeId> = Vec::new();
        for &node in &primaries {
            if is_live(node) {
                replicas.push(Replica {
                    node,
                    role: Role::Primary,
                });
            } else {
                dead.push(node);
            }
        }
        let mut uncovered = dead.into_iter();
        if uncovered.len() > 0 {
            // Fallbacks: the walk goes on after the primaries, in ring order.
            for node in self.walk(partition) {
                if uncovered.len() == 0 {
                    break;
                }
                let seen = primaries.contains(&node) || replicas.iter().any(|r| r.node == node);
                if !seen && is_live(node) {
                    let primary = uncovered.next().expect("length checked above");
                    replicas.push(Replica {
                        node,
                        role: Role::Fallback { primary },
                    });
                }
            }
        }
        debug_assert!(distinct(&replicas));
        PreferenceList {
            partition,
            replicas,
            uncovered: uncovered.collect(),
        }
    }

    /// The preference list of a key.
    pub fn preference_list_of_key(&self, key: &[u8]) -> PreferenceList {
        self.preference_list(self.partition_of(key))
    }

    /// The owners met walking once around the ring from `partition`.
    fn walk(&self, partition: u32) -> impl Iterator<Item = NodeId> + '_ {
        let count = self.partitions as usize;
        (0..count).map(move |step| self.owners[(partition as usize + step) % count])
    }
}

fn distinct(replicas: &[Replica]) -> bool {
    replicas
        .iter()
        .enumerate()
        .all(|(i, a)| replicas[..i].iter().all(|b| b.node != a.node))
}
