//! The in-memory key directory: where each key's newest record is.
//!
//! Built for bytes per key. Keys themselves are not kept in memory: an entry
//! holds the top 32 bits of the key's hash, and a lookup confirms a match by
//! comparing the key stored in the log (the caller's `is_key`). Entries live
//! in fixed-size chunks (no reallocation, so no doubling peak), addressed by
//! a 32-bit slot; an index of `(hash bits, slot)` words finds them (8 bytes
//! per bucket, see `slot_index`). At steady state an entry costs 32 bytes
//! plus 9–18 bytes of index; while the index grows, the old and new index
//! coexist (at most ~27 bytes of index per key then).
//!
//! Invariants:
//! - every live slot is in the index exactly once, a free slot never;
//! - `Entry::segment == FREE_SLOT` exactly for free slots;
//! - two live entries never describe the same key (the caller checks with
//!   `find` before `insert`).

use crate::slot_index::SlotIndex;

/// Marks a free slot in `Entry::segment`.
const FREE_SLOT: u32 = u32::MAX;
/// Entries per chunk: 4096 × 32 bytes = 128 KiB.
const CHUNK_ENTRIES: usize = 4096;
/// Top bit of `record_len_and_kind`: the record is a tombstone.
const TOMBSTONE_BIT: u32 = 1 << 31;

/// Where a key's newest record is and what it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub hash_high: u32,
    /// Slot of the segment in the store's segment table.
    pub segment: u32,
    pub offset: u32,
    record_len_and_kind: u32,
    pub hlc: u64,
    pub origin: u32,
    pub expires_at: u32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 32);

impl Entry {
    pub(crate) fn new(
        hash_high: u32,
        segment: u32,
        offset: u32,
        record_len: u32,
        tombstone: bool,
        version: crate::Version,
        expires_at: u32,
    ) -> Entry {
        assert!(
            record_len < TOMBSTONE_BIT,
            "record length {record_len} too large"
        );
        assert!(segment != FREE_SLOT);
        Entry {
            hash_high,
            segment,
            offset,
            record_len_and_kind: record_len | if tombstone { TOMBSTONE_BIT } else { 0 },
            hlc: version.hlc,
            origin: version.origin,
            expires_at,
        }
    }

    pub(crate) fn record_len(&self) -> u32 {
        self.record_len_and_kind & !TOMBSTONE_BIT
    }

    pub(crate) fn is_tombstone(&self) -> bool {
        self.record_len_and_kind & TOMBSTONE_BIT != 0
    }

    pub(crate) fn version(&self) -> crate::Version {
        crate::Version::new(self.hlc, self.origin)
    }

    /// True when the entry reads as absent at `now_s`.
    pub(crate) fn is_expired(&self, now_s: u32) -> bool {
        self.expires_at != 0 && now_s >= self.expires_at
    }
}

#[derive(Default)]
pub(crate) struct KeyDir {
    chunks: Vec<Box<[Entry]>>,
    index: SlotIndex,
    free: Vec<u32>,
    /// Slots ever handed out (the next fresh slot).
    high_water: u32,
    live: usize,
}

impl std::fmt::Debug for KeyDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyDir")
            .field("live", &self.live)
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

impl KeyDir {
    pub(crate) fn with_capacity(keys: usize) -> KeyDir {
        KeyDir {
            index: SlotIndex::with_capacity(keys),
            ..KeyDir::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn get(&self, slot: u32) -> &Entry {
        let entry = &self.chunks[slot as usize / CHUNK_ENTRIES][slot as usize % CHUNK_ENTRIES];
        debug_assert!(entry.segment != FREE_SLOT, "read of free slot {slot}");
        entry
    }

    /// Hints the cache line of the index bucket where a lookup of
    /// `hash_high` starts.
    pub(crate) fn prefetch_bucket(&self, hash_high: u32) {
        self.index.prefetch_start(hash_high);
    }

    /// The slot a lookup of `hash_high` will most likely read, with its
    /// entry's cache line hinted; `None` when no entry has that hash.
    pub(crate) fn prefetch_entry(&self, hash_high: u32) -> Option<u32> {
        let slot = self.index.first_candidate(hash_high)?;
        let entry = &self.chunks[slot as usize / CHUNK_ENTRIES][slot as usize % CHUNK_ENTRIES];
        crate::prefetch::prefetch_line(std::ptr::from_ref(entry).cast());
        Some(slot)
    }

    /// The live entry in `slot`, if it is one (for hints, which may hold
    /// a stale slot).
    pub(crate) fn entry(&self, slot: u32) -> Option<&Entry> {
        self.chunks
            .get(slot as usize / CHUNK_ENTRIES)
            .map(|chunk| &chunk[slot as usize % CHUNK_ENTRIES])
            .filter(|entry| entry.segment != FREE_SLOT)
    }

    /// Replaces a live entry; its hash must not change.
    pub(crate) fn set(&mut self, slot: u32, entry: Entry) {
        let current =
            &mut self.chunks[slot as usize / CHUNK_ENTRIES][slot as usize % CHUNK_ENTRIES];
        assert_eq!(
            current.hash_high, entry.hash_high,
            "an entry's hash never changes"
        );
        assert!(current.segment != FREE_SLOT);
        *current = entry;
    }

    /// The slot of the entry whose hash is `hash_high` and for which `is_key`
    /// holds (it compares the key stored in the log).
    pub(crate) fn find(
        &self,
        hash_high: u32,
        mut is_key: impl FnMut(&Entry) -> bool,
    ) -> Option<u32> {
        let chunks = &self.chunks;
        self.index.find(hash_high, |slot| {
            let entry = &chunks[slot as usize / CHUNK_ENTRIES][slot as usize % CHUNK_ENTRIES];
            debug_assert_eq!(entry.hash_high, hash_high);
            is_key(entry)
        })
    }

    /// Adds an entry for a key that has none; returns its slot.
    pub(crate) fn insert(&mut self, entry: Entry) -> u32 {
        assert!(entry.segment != FREE_SLOT);
        let slot = self.take_slot(entry);
        self.index.insert_unique(entry.hash_high, slot);
        slot
    }

    /// The slot of the entry for which `is_key` holds (as `find`), or, when
    /// there is none, `entry` added in a new slot: `Err(existing)` or
    /// `Ok(new)`. One probe of the index where `find` then `insert` take two
    /// (recovery replays millions of records through this).
    pub(crate) fn find_or_insert(
        &mut self,
        entry: Entry,
        mut is_key: impl FnMut(&Entry) -> bool,
    ) -> Result<u32, u32> {
        assert!(entry.segment != FREE_SLOT);
        let chunks = &self.chunks;
        let bucket = self.index.find_or_vacant(entry.hash_high, |slot| {
            is_key(&chunks[slot as usize / CHUNK_ENTRIES][slot as usize % CHUNK_ENTRIES])
        })?;
        let slot = self.take_slot(entry);
        self.index.fill(bucket, entry.hash_high, slot);
        Ok(slot)
    }

    /// Stores `entry` in a free slot (a new chunk when none is free) and
    /// counts it live; the caller adds the slot to the index.
    fn take_slot(&mut self, entry: Entry) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.high_water;
                assert!(slot < FREE_SLOT, "key directory full");
                if (slot as usize).is_multiple_of(CHUNK_ENTRIES) {
                    self.chunks.push(Self::free_chunk());
                }
                self.high_water += 1;
                slot
            }
        };
        self.chunks[slot as usize / CHUNK_ENTRIES][slot as usize % CHUNK_ENTRIES] = entry;
        self.live += 1;
        slot
    }

    /// `items` reordered by where their hashes' probes start in the index,
    /// coarsely (65,536 regions; a counting sort that reads `items` in order
    /// and scatters copies). Inserting many keys in this order sweeps the
    /// index once instead of touching it at random: recovery's cost is the
    /// index's cache and TLB misses, not its work. Only an access order: any
    /// order of distinct keys gives the same key directory.
    pub(crate) fn in_insertion_order<T: Copy>(
        &self,
        items: &[T],
        hash_high_of: impl Fn(&T) -> u32,
    ) -> Vec<T> {
        const REGION_BITS: u32 = 16;
        // A probe's start bucket grows with the hash's mixed top bits.
        let shift = self.index.bucket_bits().saturating_sub(REGION_BITS);
        let region = |item: &T| -> usize { self.index.start_of(hash_high_of(item)) >> shift };
        let mut starts = vec![0usize; (1usize << REGION_BITS) + 1];
        for item in items {
            starts[region(item) + 1] += 1;
        }
        for index in 1..starts.len() {
            starts[index] += starts[index - 1];
        }
        let Some(&first) = items.first() else {
            return Vec::new();
        };
        let mut ordered = vec![first; items.len()];
        for item in items {
            let next = &mut starts[region(item)];
            ordered[*next] = *item;
            *next += 1;
        }
        ordered
    }

    fn free_chunk() -> Box<[Entry]> {
        let free = Entry {
            segment: FREE_SLOT,
            ..Entry::new(0, 0, 0, 0, false, crate::Version::default(), 0)
        };
        vec![free; CHUNK_ENTRIES].into_boxed_slice()
    }

    /// Removes the entry in `slot`.
    pub(crate) fn remove(&mut self, slot: u32) {
        let hash_high = self.get(slot).hash_high;
        self.index.remove(hash_high, slot);
        self.chunks[slot as usize / CHUNK_ENTRIES][slot as usize % CHUNK_ENTRIES].segment =
            FREE_SLOT;
        self.free.push(slot);
        self.live -= 1;
    }

    /// Every live entry with its slot, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Entry)> + '_ {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.iter())
            .take(self.high_water as usize)
            .enumerate()
            .filter(|(_, entry)| entry.segment != FREE_SLOT)
            .map(|(slot, entry)| (slot as u32, entry))
    }

    /// Heap bytes held: entry chunks, index and free list.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.chunks.len() * CHUNK_ENTRIES * std::mem::size_of::<Entry>()
            + self.index.allocation_bytes()
            + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;

    fn entry(hash_high: u32, offset: u32) -> Entry {
        Entry::new(hash_high, 0, offset, 40, false, Version::new(1, 1), 0)
    }

    #[test]
    fn insert_find_remove_reuses_slots() {
        let mut keydir = KeyDir::default();
        let a = keydir.insert(entry(7, 100));
        let b = keydir.insert(entry(7, 200)); // same hash, other key
        assert_ne!(a, b);
        assert_eq!(keydir.find(7, |e| e.offset == 200), Some(b));
        assert_eq!(keydir.find(7, |e| e.offset == 100), Some(a));
        assert_eq!(keydir.find(8, |_| true), None);
        keydir.remove(a);
        assert_eq!(keydir.find(7, |e| e.offset == 100), None);
        assert_eq!(keydir.len(), 1);
        let c = keydir.insert(entry(9, 300));
        assert_eq!(c, a, "free slot reused");
        assert_eq!(keydir.iter().count(), 2);
    }

    #[test]
    fn find_or_insert_finds_or_adds_once() {
        let mut keydir = KeyDir::default();
        let a = keydir
            .find_or_insert(entry(7, 100), |_| false)
            .expect("added");
        let b = keydir
            .find_or_insert(entry(7, 200), |e| e.offset == 200)
            .expect("same hash, other key: added");
        assert_ne!(a, b);
        assert_eq!(
            keydir.find_or_insert(entry(7, 300), |e| e.offset == 100),
            Err(a)
        );
        assert_eq!(keydir.len(), 2);
        assert_eq!(keydir.find(7, |e| e.offset == 200), Some(b));
        for i in 0..20_000u32 {
            let hash = i.wrapping_mul(2_654_435_761);
            assert!(keydir
                .find_or_insert(entry(hash, i), |e| e.offset == i)
                .is_ok());
        }
        assert_eq!(keydir.len(), 20_002);
        assert_eq!(
            keydir.find_or_insert(entry(0, 0), |e| e.offset == 0),
            Err(2)
        );
    }

    #[test]
    fn insertion_order_is_a_permutation() {
        let keydir = KeyDir::with_capacity(100_000);
        let hashes: Vec<u32> = (0..50_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let mut ordered = keydir.in_insertion_order(&hashes, |&h| h);
        assert_ne!(ordered, hashes);
        ordered.sort_unstable();
        let mut sorted = hashes.clone();
        sorted.sort_unstable();
        assert_eq!(ordered, sorted);
        assert!(KeyDir::default()
            .in_insertion_order(&[], |&h: &u32| h)
            .is_empty());
        assert_eq!(
            KeyDir::default()
                .in_insertion_order(&[5u32, 9], |&h| h)
                .len(),
            2
        );
    }

    #[test]
    fn tombstone_bit_and_length_are_separate() {
        let e = Entry::new(1, 2, 3, 1234, true, Version::new(5, 6), 7);
        assert!(e.is_tombstone());
        assert_eq!(e.record_len(), 1234);
        assert!(e.is_expired(7) && !e.is_expired(6));
    }

    #[test]
    fn survives_growth() {
        let mut keydir = KeyDir::default();
        for i in 0..20_000u32 {
            keydir.insert(entry(i.wrapping_mul(2_654_435_761), i));
        }
        for i in (0..20_000u32).step_by(97) {
            assert!(keydir
                .find(i.wrapping_mul(2_654_435_761), |e| e.offset == i)
                .is_some());
        }
        assert!(
            keydir.memory_bytes() < 20_000 * 48,
            "{}",
            keydir.memory_bytes()
        );
    }
}
