//! Anti-entropy digests: per bucket of key hashes, the XOR of the entry
//! digests of every key in it (tombstones included).
//!
//! XOR makes an update O(1) (remove the old entry's digest, add the new one)
//! and the result independent of write order. Buckets are the top 16 bits of
//! the key hash; a vnode owns a contiguous range of them, so the table is
//! paged: 256 pages of 256 buckets, a page allocated on first use.
//!
//! Invariant: `bucket(b)` equals the XOR of `entry_digest(key, version)` over
//! the key directory's entries in bucket `b`.

const PAGE_BUCKETS: usize = 256;
const PAGES: usize = 65536 / PAGE_BUCKETS;

#[derive(Debug, Default, Clone)]
pub(crate) struct DigestTable {
    pages: Vec<Option<Box<[u64; PAGE_BUCKETS]>>>,
}

impl DigestTable {
    pub(crate) fn new() -> DigestTable {
        DigestTable {
            pages: vec![None; PAGES],
        }
    }

    /// Toggles `digest` in `bucket`: adds it if absent, removes it if present.
    pub(crate) fn toggle(&mut self, bucket: u16, digest: u64) {
        let page = self.pages[bucket as usize / PAGE_BUCKETS]
            .get_or_insert_with(|| Box::new([0; PAGE_BUCKETS]));
        page[bucket as usize % PAGE_BUCKETS] ^= digest;
    }

    pub(crate) fn bucket(&self, bucket: u16) -> u64 {
        self.pages[bucket as usize / PAGE_BUCKETS]
            .as_ref()
            .map_or(0, |page| page[bucket as usize % PAGE_BUCKETS])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toggling_twice_cancels_and_order_does_not_matter() {
        let mut a = DigestTable::new();
        let mut b = DigestTable::new();
        a.toggle(300, 1);
        a.toggle(300, 2);
        b.toggle(300, 2);
        b.toggle(300, 1);
        assert_eq!(a.bucket(300), b.bucket(300));
        a.toggle(300, 1);
        a.toggle(300, 2);
        assert_eq!(a.bucket(300), 0);
        assert_eq!(a.bucket(301), 0);
    }
}
