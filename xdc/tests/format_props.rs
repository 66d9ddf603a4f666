//! Goal: the BATCH and ACK decoders round-trip every valid body and return
//! an error, never panic, on any other bytes.
//!
//! Method: proptest over random records (both compression settings), random
//! byte strings, and valid bodies with one byte changed or cut short.

use bytes::Bytes;
use meridian_engine::{RecordKind, Version};
use meridian_xdc::format::{decode_ack, decode_batch, encode_ack, encode_batch};
use meridian_xdc::{Ack, BatchLimits, Compression, XdcRecord};
use proptest::prelude::*;

fn record() -> impl Strategy<Value = XdcRecord> {
    (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(0u8..4, 0..300),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(tombstone, key, value, hlc, origin, expires_at, partition)| XdcRecord {
                kind: if tombstone {
                    RecordKind::Tombstone
                } else {
                    RecordKind::Put
                },
                key: Bytes::from(key),
                value: if tombstone {
                    Bytes::new()
                } else {
                    Bytes::from(value)
                },
                version: Version::new(hlc, origin),
                expires_at,
                partition,
            },
        )
}

fn small_limits() -> BatchLimits {
    BatchLimits {
        batch_records_max: 64,
        batch_bytes_max: 64 << 10,
        key_bytes_max: 64,
        value_bytes_max: 4096,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn batch_round_trip(
        link_id in any::<u32>(),
        sequence in any::<u64>(),
        records in proptest::collection::vec(record(), 0..20),
        compress in any::<bool>(),
    ) {
        let limits = small_limits();
        let compression = if compress { Compression::Lz4 } else { Compression::None };
        let body = encode_batch(link_id, sequence, &records, compression, &limits).expect("encode");
        let batch = decode_batch(&body, &limits).expect("decode");
        prop_assert_eq!(batch.link_id, link_id);
        prop_assert_eq!(batch.sequence, sequence);
        prop_assert_eq!(batch.records, records);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_batch(&bytes, &small_limits());
        let _ = decode_batch(&bytes, &BatchLimits::default());
        let _ = decode_ack(&bytes);
    }

    #[test]
    fn damaged_bodies_are_errors_or_equal(
        records in proptest::collection::vec(record(), 1..8),
        compress in any::<bool>(),
        at in any::<u16>(),
        xor in 1u8..,
        cut in any::<u16>(),
    ) {
        let limits = small_limits();
        let compression = if compress { Compression::Lz4 } else { Compression::None };
        let body = encode_batch(1, 2, &records, compression, &limits).expect("encode");
        let mut flipped = body.to_vec();
        let index = at as usize % flipped.len();
        flipped[index] ^= xor;
        // Any change to a checked field or the records is refused; the
        // link id, sequence and checksum fields decode to other numbers or
        // fail the checksum: never to other records.
        if let Ok(batch) = decode_batch(&flipped, &limits) {
            prop_assert_eq!(batch.records, records.clone());
        }
        let short = &body[..cut as usize % body.len()];
        prop_assert!(decode_batch(short, &limits).is_err());
    }

    #[test]
    fn ack_round_trip(
        link_id in any::<u32>(),
        sequence in any::<u64>(),
        applied in any::<u32>(),
        stale in any::<u32>(),
        duplicate in any::<bool>(),
    ) {
        let ack = Ack { link_id, sequence, applied, stale, duplicate };
        prop_assert_eq!(decode_ack(&encode_ack(&ack)).expect("decode"), ack);
    }
}
