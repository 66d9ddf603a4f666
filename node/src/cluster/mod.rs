//! The datacenter's ring as one shard sees it.
//!
//! Membership is static for now: every node reads the same
//! `cluster.members` and builds the same ring from it (the `ring` crate's
//! planner, joined in id order, transfers completed), so all nodes agree on
//! partition owners without a gossip round. Liveness is each shard's own
//! view: a member is live while it answered a heartbeat or a request within
//! `down_after_ms` (optimistic at start-up), and preference lists skip the
//! members that are not, to fallbacks (sloppy quorum).
//!
//! Invariants:
//! - this node is always live in its own view;
//! - the ring never changes while the process runs (no join/leave yet).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use meridian_ring::{Member, PreferenceList, Ring};

use crate::config::Config;

pub mod background;
pub mod coordinator;
pub mod links;
pub mod serve;

/// The digest buckets (top 16 bits of the key hash) of a partition: the
/// first and how many.
pub fn buckets_of_partition(partition: u32, partitions: u32) -> (u16, u32) {
    let per_partition = 65536 / partitions;
    ((partition * per_partition) as u16, per_partition)
}

pub struct Cluster {
    pub ring: Ring,
    pub self_id: u16,
    addresses: HashMap<u16, String>,
    last_heard: RefCell<HashMap<u16, Instant>>,
    down_after: Duration,
    pub links: links::PeerLinks,
    pub read_quorum: u8,
    pub write_quorum: u8,
    pub request_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("self_id", &self.self_id)
            .field("epoch", &self.ring.epoch())
            .finish()
    }
}

impl Cluster {
    /// The ring of `config.cluster.members`; `None` for a cluster of one.
    pub fn build(config: &Config) -> Result<Option<Cluster>, String> {
        let members = config.cluster.parsed_members().map_err(|e| e.to_string())?;
        if members.len() <= 1 {
            return Ok(None);
        }
        let settings = &config.cluster;
        let first = Member::new(members[0].id, members[0].address.clone());
        let mut ring = Ring::new(
            &config.node.cluster,
            config.storage.partitions,
            settings.replicas,
            first,
        )
        .map_err(|e| format!("cannot build the ring: {e}"))?;
        for member in &members[1..] {
            ring = meridian_ring::plan_join(&ring, Member::new(member.id, member.address.clone()))
                .map_err(|e| format!("cannot add member {} to the ring: {e}", member.id))?;
        }
        while let Some(transfer) = ring.transfers().first().copied() {
            ring = meridian_ring::complete_transfer(&ring, transfer.partition)
                .map_err(|e| format!("cannot settle the ring: {e}"))?;
        }
        let now = Instant::now();
        let addresses: HashMap<u16, String> =
            members.iter().map(|m| (m.id, m.address.clone())).collect();
        Ok(Some(Cluster {
            ring,
            self_id: config.node.node_id,
            last_heard: RefCell::new(addresses.keys().map(|&id| (id, now)).collect()),
            addresses,
            down_after: Duration::from_millis(settings.down_after_ms as u64),
            links: links::PeerLinks::new(config),
            read_quorum: settings.read_quorum,
            write_quorum: settings.write_quorum,
            request_timeout: Duration::from_millis(settings.request_timeout_ms as u64),
        }))
    }

    pub fn address(&self, node: u16) -> Option<&str> {
        self.addresses.get(&node).map(String::as_str)
    }

    /// Other members' ids.
    pub fn peers(&self) -> Vec<u16> {
        let mut peers: Vec<u16> = self
            .addresses
            .keys()
            .copied()
            .filter(|&id| id != self.self_id)
            .collect();
        peers.sort_unstable();
        peers
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

    pub fn preference_list(&self, partition: u32) -> PreferenceList {
        self.ring
            .preference_list_with(partition, |node| self.is_live(node))
    }

    /// True when this node is one of the N owners of `partition`.
    pub fn is_primary(&self, partition: u32) -> bool {
        self.ring.primaries(partition).contains(&self.self_id)
    }
}
