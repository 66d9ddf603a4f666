//! The ring as a client sees it, read from a node's CLUSTERINFO document:
//! enough to send each key straight to one of its replicas.
//!
//! Runtime-free and I/O-free. The partition of a key is the top
//! `log2(partitions)` bits of xxh3-64(key), exactly the server's; the
//! replicas of a partition are the first N distinct owners met walking the
//! ring from it, the server's primaries. Routing is only a shortcut: any
//! node coordinates any key, so a stale ring costs a hop, never a wrong
//! answer.
//!
//! Invariants:
//! - a parsed ring has a power-of-two number of partitions and one owner
//!   per partition, each a listed member with an address;
//! - parsing never panics on any document; a document that does not check
//!   out is refused with the reason.

use std::collections::HashMap;

use serde_json::Value;
use xxhash_rust::xxh3::xxh3_64;

/// A client's copy of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRing {
    epoch: u64,
    replicas: u8,
    owners: Vec<u16>,
    /// Peer and client address of each member that is not removed.
    addresses: HashMap<u16, String>,
    /// Members the answering node saw down.
    down: Vec<u16>,
}

impl ClientRing {
    /// Reads the ring from a CLUSTERINFO document.
    pub fn from_cluster_info(json: &str) -> Result<ClientRing, String> {
        let info: Value =
            serde_json::from_str(json).map_err(|e| format!("CLUSTERINFO is not JSON: {e}"))?;
        let number = |field: &str| {
            info[field]
                .as_u64()
                .ok_or_else(|| format!("CLUSTERINFO has no number {field:?}"))
        };
        let epoch = number("ring_epoch")?;
        let partitions = number("partitions")?;
        let replicas = u8::try_from(number("replicas")?)
            .map_err(|_| "CLUSTERINFO replicas out of range".to_string())?;
        if !partitions.is_power_of_two() || !(2..=65_536).contains(&partitions) || replicas == 0 {
            return Err(format!(
                "CLUSTERINFO ring of {partitions} partitions and {replicas} replicas"
            ));
        }
        let owners: Vec<u16> = info["owners"]
            .as_array()
            .ok_or("CLUSTERINFO lists no owners")?
            .iter()
            .map(|owner| owner.as_u64().and_then(|id| u16::try_from(id).ok()))
            .collect::<Option<_>>()
            .ok_or("CLUSTERINFO has an owner that is not a node id")?;
        if owners.len() as u64 != partitions {
            return Err(format!(
                "CLUSTERINFO lists {} owners for {partitions} partitions",
                owners.len()
            ));
        }
        let mut addresses = HashMap::new();
        let mut down = Vec::new();
        for member in info["members"]
            .as_array()
            .ok_or("CLUSTERINFO lists no members")?
        {
            let id = member["node_id"]
                .as_u64()
                .and_then(|id| u16::try_from(id).ok())
                .ok_or("CLUSTERINFO has a member without a node id")?;
            if member["ring_status"].as_str() == Some("removed") {
                continue;
            }
            let address = member["address"]
                .as_str()
                .ok_or_else(|| format!("CLUSTERINFO member {id} has no address"))?;
            addresses.insert(id, address.to_string());
            if member["status"].as_str() == Some("down") {
                down.push(id);
            }
        }
        if let Some(owner) = owners.iter().find(|owner| !addresses.contains_key(owner)) {
            return Err(format!("CLUSTERINFO names owner {owner}, not a member"));
        }
        Ok(ClientRing {
            epoch,
            replicas,
            owners,
            addresses,
            down,
        })
    }

    /// The ring's epoch: a higher one replaces this copy.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The partition of `key`.
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        let shift = 64 - self.owners.len().trailing_zeros();
        (xxh3_64(key) >> shift) as u32
    }

    /// The addresses of the key's replicas, live ones first, in ring order.
    pub fn replica_addresses(&self, key: &[u8]) -> Vec<&str> {
        let count = self.owners.len();
        let start = self.partition_of(key) as usize;
        let mut replicas: Vec<u16> = Vec::with_capacity(usize::from(self.replicas));
        for step in 0..count {
            if replicas.len() == usize::from(self.replicas) {
                break;
            }
            let owner = self.owners[(start + step) % count];
            if !replicas.contains(&owner) {
                replicas.push(owner);
            }
        }
        replicas.sort_by_key(|node| self.down.contains(node));
        replicas
            .iter()
            .filter_map(|node| self.addresses.get(node).map(String::as_str))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the client finds the same replicas as the server and refuses a
    //! document that does not check out. Method: hand-written documents.

    use super::*;

    fn document(owners: &str, status_of_2: &str) -> String {
        format!(
            r#"{{"ring_epoch": 7, "partitions": 8, "replicas": 2,
                "owners": {owners},
                "members": [
                  {{"node_id": 1, "address": "h:1", "status": "up", "ring_status": "up"}},
                  {{"node_id": 2, "address": "h:2", "status": "{status_of_2}", "ring_status": "up"}},
                  {{"node_id": 3, "address": "h:3", "status": "up", "ring_status": "up"}},
                  {{"node_id": 9, "address": "h:9", "status": "up", "ring_status": "removed"}}
                ]}}"#
        )
    }

    #[test]
    fn replicas_are_the_distinct_owners_walking_from_the_partition() {
        let ring =
            ClientRing::from_cluster_info(&document("[1,2,3,1,2,3,1,2]", "up")).expect("valid");
        assert_eq!(ring.epoch(), 7);
        for key in [&b"a"[..], b"key-17", b""] {
            let partition = ring.partition_of(key) as usize;
            assert_eq!(partition as u64, xxh3_64(key) >> 61);
            let owners = [1, 2, 3, 1, 2, 3, 1, 2];
            let first = owners[partition];
            let mut second = owners[(partition + 1) % 8];
            if second == first {
                second = owners[(partition + 2) % 8];
            }
            let expected = vec![format!("h:{first}"), format!("h:{second}")];
            assert_eq!(ring.replica_addresses(key), expected);
        }
    }

    #[test]
    fn a_member_seen_down_comes_last() {
        let ring =
            ClientRing::from_cluster_info(&document("[2,1,2,1,2,1,2,1]", "down")).expect("valid");
        for key in [&b"a"[..], b"b", b"c", b"d"] {
            assert_eq!(ring.replica_addresses(key), vec!["h:1", "h:2"]);
        }
    }

    #[test]
    fn documents_that_do_not_check_out_are_refused() {
        let short = ClientRing::from_cluster_info(&document("[1,2,3]", "up"));
        assert!(short.expect_err("refused").contains("3 owners for 8"));
        let removed_owner = ClientRing::from_cluster_info(&document("[9,2,3,1,2,3,1,2]", "up"));
        assert!(removed_owner.expect_err("refused").contains("owner 9"));
        assert!(ClientRing::from_cluster_info("not json").is_err());
        assert!(ClientRing::from_cluster_info("{}").is_err());
    }
}
