//! The key directory's hash index: from a key's 32 hash bits to its slots.
//!
//! Linear probing over one array of `u64` words, each `(hash_high << 32) |
//! (slot + 1)`, 0 for an empty bucket. Chosen over a general hash table for
//! a lookup's cache misses: the hash bits and the slot share one word, so a
//! probe touches one cache line (no separate control bytes) and rejects a
//! different key's bucket without reading its entry; the array is zeroed
//! memory (no fill) and, when large, in huge pages (see `words`). A probe
//! starts at the top bits of a multiplicative hash, so the start position
//! grows with that hash: sorting inserts by it sweeps the array in order.
//!
//! Invariants:
//! - every stored word is found by probing from its own start bucket
//!   without crossing an empty bucket (deletion shifts back, no tombstones);
//! - at most 7/8 of the buckets are full; the bucket count is a power of
//!   two, at least `BUCKETS_MIN`.

use crate::words::Words;

const BUCKETS_MIN: usize = 16;
const EMPTY: u64 = 0;
/// Spreads the 32 stored hash bits over the 64 whose top bits pick a bucket.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

fn word_of(hash_high: u32, slot: u32) -> u64 {
    assert!(slot < u32::MAX, "slot {slot} out of range");
    ((hash_high as u64) << 32) | (slot as u64 + 1)
}

fn hash_of(word: u64) -> u32 {
    (word >> 32) as u32
}

fn slot_of(word: u64) -> u32 {
    debug_assert!(word != EMPTY);
    (word as u32).wrapping_sub(1)
}

pub(crate) struct SlotIndex {
    words: Words,
    /// `64 - log2(buckets)`: a start bucket is the mixed hash's top bits.
    shift: u32,
    len: usize,
}

impl Default for SlotIndex {
    fn default() -> SlotIndex {
        SlotIndex::with_capacity(0)
    }
}

impl SlotIndex {
    /// An index that holds `keys` without growing.
    pub(crate) fn with_capacity(keys: usize) -> SlotIndex {
        let buckets = (keys.saturating_mul(8) / 7 + 1)
            .next_power_of_two()
            .max(BUCKETS_MIN);
        SlotIndex {
            words: Words::zeroed(buckets),
            shift: 64 - buckets.trailing_zeros(),
            len: 0,
        }
    }

    fn buckets(&self) -> usize {
        1 << (64 - self.shift)
    }

    /// Keys the index takes before it grows.
    pub(crate) fn capacity(&self) -> usize {
        self.buckets() / 8 * 7
    }

    /// The bucket where probes for `hash_high` start.
    pub(crate) fn start_of(&self, hash_high: u32) -> usize {
        ((hash_high as u64).wrapping_mul(MIX) >> self.shift) as usize
    }

    /// log2 of the bucket count: `start_of` returns that many bits.
    pub(crate) fn bucket_bits(&self) -> u32 {
        64 - self.shift
    }

    /// The slot under `hash_high` for which `is_key` holds.
    #[inline]
    pub(crate) fn find(&self, hash_high: u32, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let words = self.words.as_slice();
        let mask = words.len() - 1;
        let mut bucket = self.start_of(hash_high);
        loop {
            let word = words[bucket];
            if word == EMPTY {
                return None;
            }
            if hash_of(word) == hash_high && is_key(slot_of(word)) {
                return Some(slot_of(word));
            }
            bucket = (bucket + 1) & mask;
        }
    }

    /// The slot under `hash_high` for which `is_key` holds as `Err`, or,
    /// when there is none, the empty bucket where it belongs as `Ok`, to be
    /// given to `fill` before any other change: one probe for both.
    pub(crate) fn find_or_vacant(
        &mut self,
        hash_high: u32,
        mut is_key: impl FnMut(u32) -> bool,
    ) -> Result<usize, u32> {
        self.reserve_one();
        let words = self.words.as_slice();
        let mask = words.len() - 1;
        let mut bucket = self.start_of(hash_high);
        loop {
            let word = words[bucket];
            if word == EMPTY {
                return Ok(bucket);
            }
            if hash_of(word) == hash_high && is_key(slot_of(word)) {
                return Err(slot_of(word));
            }
            bucket = (bucket + 1) & mask;
        }
    }

    /// Hints the cache line of the bucket where probes for `hash_high`
    /// start (see `prefetch`).
    pub(crate) fn prefetch_start(&self, hash_high: u32) {
        let words = self.words.as_slice();
        crate::prefetch::prefetch_line(words[self.start_of(hash_high)..].as_ptr().cast());
    }

    /// The first slot stored under `hash_high`, its key unchecked: the
    /// entry a lookup will most likely read (a guess, for hints only).
    pub(crate) fn first_candidate(&self, hash_high: u32) -> Option<u32> {
        self.find(hash_high, |_| true)
    }

    /// Stores `slot` in the bucket `find_or_vacant` returned for `hash_high`.
    pub(crate) fn fill(&mut self, bucket: usize, hash_high: u32, slot: u32) {
        assert!(self.len < self.capacity());
        let words = self.words.as_mut_slice();
        assert!(words[bucket] == EMPTY, "bucket {bucket} taken");
        words[bucket] = word_of(hash_high, slot);
        self.len += 1;
    }

    /// Stores `slot` under `hash_high`; the caller knows it is not there.
    pub(crate) fn insert_unique(&mut self, hash_high: u32, slot: u32) {
        self.reserve_one();
        self.place(word_of(hash_high, slot));
        self.len += 1;
    }

    fn place(&mut self, word: u64) {
        let start = self.start_of(hash_of(word));
        let words = self.words.as_mut_slice();
        let mask = words.len() - 1;
        let mut bucket = start;
        while words[bucket] != EMPTY {
            debug_assert!(words[bucket] != word, "word stored twice");
            bucket = (bucket + 1) & mask;
        }
        words[bucket] = word;
    }

    /// Doubles the buckets when one more key would pass 7/8 full. The words
    /// are moved in bucket order, so the new array is written front to back.
    fn reserve_one(&mut self) {
        if self.len < self.capacity() {
            return;
        }
        let buckets = self.buckets() * 2;
        let old = std::mem::replace(&mut self.words, Words::zeroed(buckets));
        self.shift -= 1;
        for &word in old.as_slice() {
            if word != EMPTY {
                self.place(word);
            }
        }
        assert!(self.len < self.capacity());
    }

    /// Removes `slot` stored under `hash_high`; panics when it is not there.
    pub(crate) fn remove(&mut self, hash_high: u32, slot: u32) {
        let target = word_of(hash_high, slot);
        let shift = self.shift;
        let words = self.words.as_mut_slice();
        let mask = words.len() - 1;
        let mut hole = ((hash_high as u64).wrapping_mul(MIX) >> shift) as usize;
        while words[hole] != target {
            assert!(
                words[hole] != EMPTY,
                "key directory slot {slot} missing from its index"
            );
            hole = (hole + 1) & mask;
        }
        // Backward shift: pull later words of the run into the hole when
        // their start bucket is not after it, so no probe meets a gap.
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let word = words[next];
            if word == EMPTY {
                break;
            }
            let start = ((hash_of(word) as u64).wrapping_mul(MIX) >> shift) as usize;
            if next.wrapping_sub(start) & mask >= next.wrapping_sub(hole) & mask {
                words[hole] = word;
                hole = next;
            }
        }
        words[hole] = EMPTY;
        self.len -= 1;
    }

    pub(crate) fn allocation_bytes(&self) -> usize {
        self.words.allocation_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Goal: the index agrees with a map under random inserts and removes,
    /// with many equal and clustered hashes (wrap-around included). Method:
    /// a small xorshift stream of operations against a `HashMap`.
    #[test]
    fn agrees_with_a_map_under_inserts_and_removes() {
        let mut index = SlotIndex::default();
        let mut model: HashMap<u32, u32> = HashMap::new(); // slot -> hash
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..200_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let slot = (state % 5_000) as u32;
            // Few distinct hashes, some near the top (they start at the end).
            let hash = ((state >> 20) % 64) as u32 * 0x0400_0001 | (slot % 3) << 30;
            match model.get(&slot).copied() {
                Some(stored) if step % 3 != 0 => {
                    index.remove(stored, slot);
                    model.remove(&slot);
                }
                Some(stored) => {
                    assert_eq!(index.find(stored, |s| s == slot), Some(slot));
                }
                None => {
                    index.insert_unique(hash, slot);
                    model.insert(slot, hash);
                }
            }
            assert_eq!(index.len, model.len());
        }
        for (&slot, &hash) in &model {
            assert_eq!(index.find(hash, |s| s == slot), Some(slot));
            assert_eq!(index.find_or_vacant(hash, |s| s == slot), Err(slot));
        }
        assert_eq!(index.find(12345, |_| true), None);
    }
}
