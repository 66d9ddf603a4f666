//! Goal: the persisted document round-trips, and the decoder rejects
//! without panicking anything that is not a document it wrote. Method:
//! property tests over random rings (mid-handoff included), arbitrary
//! bytes, truncations and single-bit flips; a save/load through a file.

mod common;

use common::{grown, member};
use meridian_ring::{decode, encode, load, plan_join, save, Error, Ring};
use proptest::prelude::*;

fn sample(replicas: u8, size: u16, racks: u16) -> Ring {
    // Mid-handoff: a planned join with its transfers pending.
    let ring = grown(64, replicas, size, racks);
    plan_join(&ring, member(size, racks)).expect("join")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_the_identity(replicas in 1..=5u8, size in 1..=12u16, racks in 0..4u16) {
        let ring = sample(replicas, size, racks);
        prop_assert!(!ring.transfers().is_empty() || size >= 64);
        let decoded = decode(&encode(&ring)).expect("decodes");
        prop_assert_eq!(decoded, ring);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused(cut in any::<prop::sample::Index>(), bit in any::<prop::sample::Index>()) {
        let bytes = encode(&sample(3, 5, 2));
        let cut = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..cut]).is_err());
        let mut flipped = bytes.clone();
        let bit = bit.index(bytes.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode(&flipped).is_err());
    }
}

#[test]
fn a_valid_checksum_over_an_invalid_ring_is_refused() {
    let ring = sample(3, 4, 0);
    let mut bytes = encode(&ring);
    // Point the first owner at an unknown node and fix the checksum.
    let owners_at = bytes.len() - 4 - ring.transfers().len() * 8 - ring.owners().len() * 2;
    bytes[owners_at..owners_at + 2].copy_from_slice(&999u16.to_le_bytes());
    let checksum = xxhash_rust::xxh3::xxh3_64(&bytes[meridian_ring::format::HEADER_LEN..]);
    bytes[12..20].copy_from_slice(&checksum.to_le_bytes());
    assert!(matches!(decode(&bytes), Err(Error::Invalid { .. })));
}

#[test]
fn save_then_load_returns_the_ring() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("ring");
    assert!(load(&path).expect("no file yet").is_none());
    let ring = sample(3, 6, 3);
    save(&path, &ring).expect("save");
    assert_eq!(load(&path).expect("load"), Some(ring.clone()));
    let next = grown(64, 3, 7, 3);
    save(&path, &next).expect("replace");
    assert_eq!(load(&path).expect("load"), Some(next));
}

/// Exhaustive companion of the property above: every single-bit flip of an
/// encoded ring, header included, is refused (a flip in the reserved header
/// bytes used to decode).
#[test]
fn every_single_bit_flip_of_a_document_is_refused() {
    let bytes = encode(&sample(3, 5, 2));
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(decode(&flipped).is_err(), "flip of bit {bit} decoded");
    }
}
