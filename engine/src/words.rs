//! Zeroed arrays of `u64` for the key directory's index, large ones in
//! transparent huge pages.
//!
//! A lookup in a big key directory misses the cache at random, and in a VM
//! each miss on a 4 KiB page is also a TLB miss with a two-level page walk.
//! An array of 2 MiB or more is therefore an anonymous map advised
//! `MADV_HUGEPAGE` (THP is commonly in `madvise` mode), so a few hundred TLB
//! entries cover the whole index. Smaller arrays are plain heap vectors: a
//! store with few keys should not pay 2 MiB.
//!
//! Invariants (they make the `unsafe` blocks sound):
//! - a map's length is a multiple of 8 and its start is page-aligned, so it
//!   holds exactly `len` properly aligned `u64`s;
//! - anonymous memory starts zeroed and every bit pattern is a valid `u64`;
//! - the map is owned here and lives as long as the borrows handed out.
#![allow(unsafe_code)]

use memmap2::{Advice, MmapMut};

/// Arrays at least this large live in their own huge-page-advised map.
const HUGE_BYTES_MIN: usize = 2 << 20;

pub(crate) enum Words {
    Heap(Vec<u64>),
    Mapped { map: MmapMut, len: usize },
}

impl Words {
    /// `len` zeroed words.
    pub(crate) fn zeroed(len: usize) -> Words {
        let bytes = len.checked_mul(8).expect("index size overflows");
        if bytes < HUGE_BYTES_MIN {
            return Words::Heap(vec![0; len]);
        }
        // A whole number of huge pages, so the kernel aligns the map to one.
        let map_bytes = bytes.div_ceil(HUGE_BYTES_MIN) * HUGE_BYTES_MIN;
        match MmapMut::map_anon(map_bytes) {
            Ok(map) => {
                // Best effort: without THP the map works with small pages.
                let _ = map.advise(Advice::HugePage);
                assert!((map.as_ptr() as usize).is_multiple_of(8) && map.len() >= bytes);
                Words::Mapped { map, len }
            }
            // Out of address space for a map: the heap will say so too.
            Err(_) => Words::Heap(vec![0; len]),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u64] {
        match self {
            Words::Heap(words) => words,
            Words::Mapped { map, len } => {
                assert!(map.len() >= len * 8);
                // SAFETY: the map is page-aligned and at least `len * 8`
                // bytes (asserted); any bytes are a valid u64; the borrow of
                // `self` keeps the map alive and unaliased by writers.
                unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<u64>(), *len) }
            }
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u64] {
        match self {
            Words::Heap(words) => words,
            Words::Mapped { map, len } => {
                assert!(map.len() >= *len * 8);
                // SAFETY: as in `as_slice`; the `&mut self` borrow makes this
                // the only reference into the map.
                unsafe { std::slice::from_raw_parts_mut(map.as_mut_ptr().cast::<u64>(), *len) }
            }
        }
    }

    /// Bytes held (a map counts whole, as the allocator would).
    pub(crate) fn allocation_bytes(&self) -> usize {
        match self {
            Words::Heap(words) => words.capacity() * 8,
            Words::Mapped { map, .. } => map.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_arrays_start_zeroed_and_keep_writes() {
        for len in [0usize, 5, 1 << 20] {
            let mut words = Words::zeroed(len);
            assert_eq!(words.as_slice().len(), len);
            assert!(words.as_slice().iter().all(|&w| w == 0));
            if len > 0 {
                words.as_mut_slice()[len - 1] = 7;
                assert_eq!(words.as_slice()[len - 1], 7);
            }
            assert!(words.allocation_bytes() >= len * 8);
        }
    }
}
