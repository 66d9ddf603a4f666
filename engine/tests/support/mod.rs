//! What a power cut can leave of a file: shared by the power-cut tests
//! (`crash.rs` for one store, `journal_crash.rs` for stores behind a
//! journal), which model the disk the same way.

use meridian_engine::{Clock, Version};
use rand::rngs::StdRng;
use rand::Rng;

const PAGE: usize = 4096;

/// A wall clock that never moves: tombstone grace and expiry depend only on
/// what a test sets, not on when it runs.
#[derive(Debug)]
pub struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        1_700_000_000_000
    }
}

/// A value of `len` bytes that depends on `version`: a value read back
/// shows which write it came from.
pub fn value_bytes(version: Version, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (version.hlc.wrapping_mul(i + 3) >> 11) as u8)
        .collect()
}

/// Reverts some of the dirty bytes of `bytes` (a file as the page cache
/// holds it) to `image` (what its last fdatasync left on disk; zeros past
/// its end): none of them, all after a tear point, all after a tear point
/// with a run of garbage first (a torn sector), or independent 4 KiB
/// pages. The tear point falls anywhere from the first dirty byte to the
/// end, or with `within_dirty` only up to just past the last dirty byte.
/// Returns false when nothing changed.
pub fn tear(bytes: &mut [u8], image: &[u8], rng: &mut StdRng, within_dirty: bool) -> bool {
    let old = |at: usize| image.get(at).copied().unwrap_or(0);
    let Some(first_dirty) = (0..bytes.len()).find(|&at| bytes[at] != old(at)) else {
        return false;
    };
    let tear_end = if within_dirty {
        (0..bytes.len())
            .rfind(|&at| bytes[at] != old(at))
            .expect("a dirty byte")
            + 1
    } else {
        bytes.len()
    };
    let tear_at = rng.random_range(first_dirty..=tear_end);
    match rng.random_range(0..4) {
        0 => return false, // every dirty page made it
        1 => {
            for (at, byte) in bytes.iter_mut().enumerate().skip(tear_at) {
                *byte = old(at);
            }
        }
        2 => {
            let garbage_end = (tear_at + rng.random_range(1..PAGE)).min(bytes.len());
            for (at, byte) in bytes.iter_mut().enumerate().skip(tear_at) {
                if *byte != old(at) {
                    *byte = if at < garbage_end {
                        rng.random()
                    } else {
                        old(at)
                    };
                }
            }
        }
        _ => {
            for page in (first_dirty / PAGE * PAGE..bytes.len()).step_by(PAGE) {
                if rng.random_bool(0.5) {
                    let end = (page + PAGE).min(bytes.len());
                    for (at, byte) in bytes.iter_mut().enumerate().take(end).skip(page) {
                        *byte = old(at);
                    }
                }
            }
        }
    }
    true
}
