//! Cache prefetch hints, so that a batch of lookups overlaps its misses.
//!
//! A lookup reads three places in turn, each found through the one before:
//! the index bucket, the key directory entry, and the record in the map.
//! With a large key space each is a cache miss (and often a TLB miss), and
//! one lookup at a time waits for them one after the other. Warming a batch
//! of keys one level per round ([`crate::Store::warm_index`], then
//! `warm_entry`, then `warm_record`, each over the whole batch) puts the
//! batch's misses of a level in flight together.
//!
//! Invariant: a hint changes nothing that a later read sees, and it never
//! faults: x86-64's PREFETCHT0 drops an address it cannot translate. Other
//! targets get no hints (the rounds still run, and cost a few loads).
#![allow(unsafe_code)]

/// Bytes per cache line on the targets Meridian runs on.
const LINE_BYTES: usize = 64;

/// At most this many lines of one range are hinted: a record's header, key
/// and a short value.
const RANGE_LINES_MAX: usize = 4;

/// Hints that the line holding `address` will be read soon.
#[inline]
pub(crate) fn prefetch_line(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 only hints the cache: it reads nothing
    // architecturally and never faults, whatever the address; SSE is part
    // of the x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(address.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Hints the lines of `bytes`, at most `RANGE_LINES_MAX` from its start.
#[inline]
pub(crate) fn prefetch_bytes(bytes: &[u8]) {
    let start = bytes.as_ptr() as usize;
    let first_line = start & !(LINE_BYTES - 1);
    let end = start + bytes.len();
    let mut line = first_line;
    for _ in 0..RANGE_LINES_MAX {
        if line >= end {
            break;
        }
        prefetch_line(line.max(start) as *const u8);
        line += LINE_BYTES;
    }
}
