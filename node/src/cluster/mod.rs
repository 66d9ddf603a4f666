//! The datacenter's ring as one shard sees it.
//!
//! The ring is a versioned document (the `ring` crate): the founding members
//! build the same first ring from `cluster.members`; a node that joins later
//! starts with a ring of itself alone and takes the cluster's ring when it is
//! admitted. From then on the ring changes only by adoption: a shard adopts a
//! document it hears (gossip, a membership answer, another shard of its node)
//! when it has a higher epoch ([`meridian_ring::adopt`]) and names this node.
//! Each shard holds its own copy (shards share nothing): the shard that
//! adopts a ring passes it to the node's other shards over their inboxes, and
//! shard 0 persists it (`DATA_DIR/ring.mrng`, replaced crash-safely), so a
//! restart resumes from the last ring this node held.
//!
//! During a handoff (transfers pending) a shard also keeps the *target* ring,
//! the ring once every pending transfer completed: the coordinator writes to
//! and reads from the preference lists of both rings (see `coordinator`).
//!
//! Liveness is each shard's own view: a member is live while it answered a
//! heartbeat or a request within `down_after_ms` (optimistic when it first
//! appears), and preference lists skip the members that are not, to
//! fallbacks (sloppy quorum).
//!
//! Invariants:
//! - this node is always live in its own view;
//! - a shard's ring epoch never decreases, and a shard never adopts a ring
//!   that does not name this node;
//! - `view.target` is `Some` exactly when `view.ring` has transfers pending,
//!   and `view.plan` is then the hash of the target owners (0 otherwise).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use meridian_ring::{Member, PreferenceList, Ring, Status};

use crate::config::Config;

pub mod background;
pub mod coordinator;
pub mod handoff;
pub mod links;
pub mod membership;
pub mod serve;

/// The file, in the data directory, that holds this node's ring.
pub const RING_FILE: &str = "ring.mrng";

/// The digest buckets (top 16 bits of the key hash) of a partition: the
/// first and how many.
pub fn buckets_of_partition(partition: u32, partitions: u32) -> (u16, u32) {
    let per_partition = 65536 / partitions;
    ((partition * per_partition) as u16, per_partition)
}

/// One ring and what is derived from it, replaced as a whole on adoption.
#[derive(Debug)]
pub struct RingView {
    pub ring: Ring,
    /// The ring once every pending transfer completed; `None` when no
    /// transfer is pending.
    pub target: Option<Ring>,
    /// Hash of the target owners while transfers are pending (names the
    /// plan in handoff reports); 0 when none are.
    pub plan: u64,
}

impl RingView {
    pub fn new(ring: Ring) -> Result<RingView, String> {
        if ring.transfers().is_empty() {
            return Ok(RingView {
                ring,
                target: None,
                plan: 0,
            });
        }
        let target = meridian_ring::complete_all(&ring)
            .map_err(|e| format!("cannot complete the ring's plan: {e}"))?;
        let owners: Vec<u8> = ring
            .target_owners()
            .iter()
            .flat_map(|owner| owner.to_le_bytes())
            .collect();
        // Never 0, so 0 can mean "no plan".
        let plan = xxhash_rust::xxh3::xxh3_64(&owners).max(1);
        Ok(RingView {
            ring,
            target: Some(target),
            plan,
        })
    }

    /// The (node, partition) pairs that must hold a partition's records
    /// before the plan's transfers complete: for each partition, the nodes
    /// that are primaries in the target ring and not in the current one.
    pub fn handoffs_needed(&self) -> Vec<(u16, u32)> {
        let Some(target) = &self.target else {
            return Vec::new();
        };
        let mut needed = Vec::new();
        for partition in 0..self.ring.partitions() {
            let current = self.ring.primaries(partition);
            for node in target.primaries(partition) {
                if !current.contains(&node) {
                    needed.push((node, partition));
                }
            }
        }
        needed
    }
}

pub struct Cluster {
    pub self_id: u16,
    view: RefCell<Rc<RingView>>,
    addresses: RefCell<HashMap<u16, Rc<str>>>,
    last_heard: RefCell<HashMap<u16, Instant>>,
    /// The ring epoch each peer reported in its last heartbeat answer.
    peer_epochs: RefCell<HashMap<u16, u64>>,
    down_after: Duration,
    ring_path: PathBuf,
    /// Handoff reports gathered as claimant (used on shard 0 only).
    pub reports: RefCell<membership::HandoffReports>,
    pub links: links::PeerLinks,
    pub read_quorum: u8,
    pub write_quorum: u8,
    pub request_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("self_id", &self.self_id)
            .field("epoch", &self.view.borrow().ring.epoch())
            .finish()
    }
}

impl Cluster {
    /// This node's ring: the persisted one, else the founding ring of
    /// `cluster.members`, else (with seeds) a ring of this node alone;
    /// `None` for a cluster of one.
    pub fn build(config: &Config) -> Result<Option<Cluster>, String> {
        let ring_path = config.storage.data_dir.join(RING_FILE);
        let persisted = meridian_ring::load(&ring_path)
            .map_err(|e| format!("cannot read the ring at {}: {e}", ring_path.display()))?;
        let ring = match persisted {
            Some(ring) => {
                check_persisted(&ring, config)?;
                ring
            }
            None if config.cluster.members.len() > 1 => founding_ring(config)?,
            None if config.cluster.is_clustered() => Ring::new(
                &config.node.cluster,
                config.storage.partitions,
                config.cluster.replicas,
                member_in(
                    config.node.node_id,
                    config.node.listen.to_string(),
                    config.own_rack(),
                ),
            )
            .map_err(|e| format!("cannot build the ring: {e}"))?,
            None => return Ok(None),
        };
        let settings = &config.cluster;
        let cluster = Cluster {
            self_id: config.node.node_id,
            view: RefCell::new(Rc::new(RingView::new(ring)?)),
            addresses: RefCell::default(),
            last_heard: RefCell::default(),
            peer_epochs: RefCell::default(),
            down_after: Duration::from_millis(settings.down_after_ms as u64),
            ring_path,
            reports: RefCell::default(),
            links: links::PeerLinks::new(config),
            read_quorum: settings.read_quorum,
            write_quorum: settings.write_quorum,
            request_timeout: Duration::from_millis(settings.request_timeout_ms as u64),
        };
        cluster.refresh_members();
        Ok(Some(cluster))
    }

    /// The ring this shard holds now (and its target during a handoff).
    pub fn view(&self) -> Rc<RingView> {
        Rc::clone(&self.view.borrow())
    }

    pub fn epoch(&self) -> u64 {
        self.view.borrow().ring.epoch()
    }

    pub fn replicas(&self) -> u8 {
        self.view.borrow().ring.replicas()
    }

    /// Adopts `remote` when it wins over the held ring and names this node;
    /// returns the new view when it was adopted.
    pub fn adopt(&self, remote: Ring) -> Result<Option<Rc<RingView>>, String> {
        if remote.member(self.self_id).is_none() {
            return Err(format!(
                "ring of epoch {} does not name this node ({})",
                remote.epoch(),
                self.self_id
            ));
        }
        let current = self.view();
        let winner = meridian_ring::adopt(&current.ring, &remote).map_err(|e| e.to_string())?;
        if std::ptr::eq(winner, &current.ring) {
            return Ok(None);
        }
        let view = Rc::new(RingView::new(remote)?);
        *self.view.borrow_mut() = Rc::clone(&view);
        self.refresh_members();
        Ok(Some(view))
    }

    /// Persists the held ring (shard 0 does this after every adoption).
    pub fn persist(&self) -> Result<(), String> {
        let view = self.view();
        meridian_ring::save(&self.ring_path, &view.ring)
            .map_err(|e| format!("cannot persist the ring: {e}"))
    }

    /// Addresses and liveness entries of the held ring's members: a member
    /// seen for the first time counts as heard from now.
    fn refresh_members(&self) {
        let view = self.view();
        let now = Instant::now();
        let mut addresses = self.addresses.borrow_mut();
        addresses.clear();
        let mut heard = self.last_heard.borrow_mut();
        for member in view.ring.members() {
            addresses.insert(member.id, Rc::from(member.address.as_str()));
            heard.entry(member.id).or_insert(now);
        }
    }

    pub fn address(&self, node: u16) -> Option<Rc<str>> {
        self.addresses.borrow().get(&node).cloned()
    }

    /// Other members' ids (removed ones left out), sorted.
    pub fn peers(&self) -> Vec<u16> {
        let view = self.view();
        view.ring
            .members()
            .iter()
            .filter(|m| m.id != self.self_id && m.status != Status::Removed)
            .map(|m| m.id)
            .collect()
    }

    pub fn is_live(&self, node: u16) -> bool {
        node == self.self_id
            || self
                .last_heard
                .borrow()
                .get(&node)
                .is_some_and(|heard| heard.elapsed() < self.down_after)
    }

    /// Records an answer from `node`.
    pub fn heard_from(&self, node: u16) {
        if let Some(heard) = self.last_heard.borrow_mut().get_mut(&node) {
            *heard = Instant::now();
        }
    }

    /// Records the ring epoch `node` reported.
    pub fn peer_reported_epoch(&self, node: u16, epoch: u64) {
        self.peer_epochs.borrow_mut().insert(node, epoch);
    }

    /// True when every live peer reported an epoch of at least `epoch`.
    pub fn live_peers_reached(&self, epoch: u64) -> bool {
        let epochs = self.peer_epochs.borrow();
        self.peers()
            .into_iter()
            .filter(|&peer| self.is_live(peer))
            .all(|peer| epochs.get(&peer).is_some_and(|&seen| seen >= epoch))
    }

    /// The claimant in this shard's view: the lowest id among the members
    /// that are up in the ring and live to this shard.
    pub fn claimant(&self) -> Option<u16> {
        let view = self.view();
        view.ring
            .members()
            .iter()
            .find(|m| m.status == Status::Up && self.is_live(m.id))
            .map(|m| m.id)
    }

    /// The key's preference list in the held ring, with this shard's
    /// liveness.
    pub fn preference_list(&self, partition: u32) -> PreferenceList {
        self.view()
            .ring
            .preference_list_with(partition, |node| self.is_live(node))
    }

    /// True when this node is one of the N owners of `partition`.
    pub fn is_primary(&self, partition: u32) -> bool {
        self.view()
            .ring
            .primaries(partition)
            .contains(&self.self_id)
    }
}

/// A ring member that is up, in `rack` if it has one.
pub(crate) fn member_in(id: u16, address: String, rack: Option<String>) -> Member {
    let member = Member::new(id, address);
    match rack {
        Some(rack) => member.in_rack(rack),
        None => member,
    }
}

/// The first ring of the founding members (`cluster.members`): joined in
/// id order, transfers completed, so every founding member builds the same.
fn founding_ring(config: &Config) -> Result<Ring, String> {
    let members = config.cluster.parsed_members().map_err(|e| e.to_string())?;
    let as_member =
        |m: &crate::config::MemberAddress| member_in(m.id, m.address.clone(), m.rack.clone());
    let first = as_member(&members[0]);
    let mut ring = Ring::new(
        &config.node.cluster,
        config.storage.partitions,
        config.cluster.replicas,
        first,
    )
    .map_err(|e| format!("cannot build the ring: {e}"))?;
    for member in &members[1..] {
        ring = meridian_ring::plan_join(&ring, as_member(member))
            .map_err(|e| format!("cannot add member {} to the ring: {e}", member.id))?;
    }
    meridian_ring::complete_all(&ring).map_err(|e| format!("cannot settle the ring: {e}"))
}

/// A persisted ring must belong to this cluster, ring size and node.
fn check_persisted(ring: &Ring, config: &Config) -> Result<(), String> {
    if ring.cluster() != config.node.cluster || ring.partitions() != config.storage.partitions {
        return Err(format!(
            "the persisted ring is of cluster {:?} with {} partitions, the config says {:?} with {}",
            ring.cluster(),
            ring.partitions(),
            config.node.cluster,
            config.storage.partitions
        ));
    }
    let Some(member) = ring.member(config.node.node_id) else {
        return Err(format!(
            "the persisted ring does not name this node (node.node_id = {})",
            config.node.node_id
        ));
    };
    let configured = config.own_rack();
    if member.rack != configured && member.status != meridian_ring::Status::Removed {
        let shown = |rack: &Option<String>| rack.clone().unwrap_or_else(|| "(none)".to_string());
        return Err(format!(
            "the ring places this node (node {}) in rack {}, its config in rack {}: the claim placed its replicas by the ring's rack, so a node moves to another rack by leaving the ring and joining again; to start it as it is, set node.rack back to {}",
            config.node.node_id,
            shown(&member.rack),
            shown(&configured),
            shown(&member.rack)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Goal: the view derived from a ring names the right target and the
    //! right handoffs. Method: rings planned with the ring crate.

    use super::*;

    fn three_members() -> Ring {
        let mut ring = Ring::new("test", 16, 3, Member::new(1, "127.0.0.1:1")).expect("ring");
        for id in [2, 3] {
            ring = meridian_ring::plan_join(&ring, Member::new(id, format!("127.0.0.1:{id}")))
                .expect("join");
        }
        while let Some(transfer) = ring.transfers().first().copied() {
            ring = meridian_ring::complete_transfer(&ring, transfer.partition).expect("complete");
        }
        ring
    }

    #[test]
    fn a_settled_ring_has_no_plan_and_needs_no_handoff() {
        let view = RingView::new(three_members()).expect("view");
        assert!(view.target.is_none());
        assert_eq!(view.plan, 0);
        assert!(view.handoffs_needed().is_empty());
    }

    #[test]
    fn a_join_needs_the_new_node_to_pull_every_partition_it_will_replicate() {
        let settled = three_members();
        let joined =
            meridian_ring::plan_join(&settled, Member::new(4, "127.0.0.1:4")).expect("join");
        let view = RingView::new(joined.clone()).expect("view");
        let target = view.target.as_ref().expect("a target during the handoff");
        assert!(target.transfers().is_empty());
        assert_eq!(target.owners(), &joined.target_owners()[..]);
        assert_ne!(view.plan, 0);
        let needed = view.handoffs_needed();
        // Three members held every partition: only the new node is new.
        assert!(needed.iter().all(|&(node, _)| node == 4), "{needed:?}");
        let replicated = (0..16)
            .filter(|&p| target.primaries(p).contains(&4))
            .count();
        assert_eq!(needed.len(), replicated);
        // The same plan reached by another path has the same hash.
        assert_eq!(RingView::new(joined).expect("view").plan, view.plan);
    }

    #[test]
    fn a_leave_needs_the_remaining_nodes_to_pull_what_the_leaver_replicated() {
        let settled = three_members();
        let mut four =
            meridian_ring::plan_join(&settled, Member::new(4, "127.0.0.1:4")).expect("join");
        while let Some(transfer) = four.transfers().first().copied() {
            four = meridian_ring::complete_transfer(&four, transfer.partition).expect("complete");
        }
        let leaving = meridian_ring::plan_leave(&four, 2).expect("leave");
        let view = RingView::new(leaving).expect("view");
        let needed = view.handoffs_needed();
        assert!(!needed.is_empty());
        assert!(needed.iter().all(|&(node, _)| node != 2), "{needed:?}");
        let target = view.target.as_ref().expect("target");
        assert!((0..16).all(|p| !target.primaries(p).contains(&2)));
    }
}
