//! Where a key lives inside one node: its partition (vnode) and the shard
//! (core) that owns it.
//!
//! partition = the top `log2(partitions)` bits of xxh3(key) — the same hash
//! the engine buckets by, so a partition is a contiguous range of digest
//! buckets. A node that owns every partition (a cluster of one) spreads
//! them over its shards round-robin.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partitioner {
    shift: u32,
    shards: u32,
}

impl Partitioner {
    /// `partitions` is a power of two (checked by the configuration).
    pub fn new(partitions: u32, shards: usize) -> Partitioner {
        assert!(partitions.is_power_of_two() && partitions >= 2);
        assert!(shards >= 1);
        Partitioner {
            shift: 64 - partitions.trailing_zeros(),
            shards: shards as u32,
        }
    }

    pub fn partition_of(&self, key: &[u8]) -> u32 {
        (meridian_engine::format::key_hash(key) >> self.shift) as u32
    }

    pub fn shard_of_partition(&self, partition: u32) -> usize {
        (partition % self.shards) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_the_ring_and_spread_over_shards() {
        let partitioner = Partitioner::new(8, 3);
        let mut seen = [0u32; 8];
        for i in 0..10_000u32 {
            seen[partitioner.partition_of(&i.to_le_bytes()) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 1000), "{seen:?}");
        assert_eq!(partitioner.shard_of_partition(7), 1);
    }
}
