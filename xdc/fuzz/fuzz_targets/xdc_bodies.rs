//! Fuzz target: every body a remote datacenter can send to an XDC link.
//!
//! The first byte picks the decoder (BATCH under default and small limits,
//! through a `Receiver` too; ACK; the handshake introduction; the fullsync
//! digests and entries requests and replies; FETCH); the rest is the body.
//! Asserts: no panic; what decodes re-encodes to the same bytes where the
//! encoding is canonical (ACK, introduction, fullsync bodies).

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_xdc::format::{decode_ack, decode_batch, encode_ack, BatchLimits};
use meridian_xdc::fullsync;
use meridian_xdc::{Introduction, Opened, Receiver, ReceiverConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 9 {
        0 => {
            let _ = decode_batch(body, &BatchLimits::default());
            let small = BatchLimits {
                batch_records_max: 4,
                batch_bytes_max: 256,
                key_bytes_max: 16,
                value_bytes_max: 64,
            };
            let _ = decode_batch(body, &small);
            let link_id = body
                .get(4..8)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let mut receiver = Receiver::new(ReceiverConfig::new(link_id));
            if let Ok(Opened::Fresh(batch)) = receiver.open(body) {
                let outcomes = vec![meridian_engine::Applied::Written; batch.records.len()];
                let _ = receiver.close(&batch, &outcomes, 0);
                assert!(matches!(receiver.open(body), Ok(Opened::Duplicate(_))));
            }
        }
        1 => {
            if let Ok(ack) = decode_ack(body) {
                assert_eq!(&encode_ack(&ack)[..], body, "ack did not round-trip");
            }
        }
        2 => {
            if let Ok(intro) = Introduction::decode(body) {
                assert_eq!(intro.encode(), body, "introduction did not round-trip");
            }
        }
        3 => {
            if let Ok((first, count)) = fullsync::decode_digests_request(body) {
                assert_eq!(fullsync::encode_digests_request(first, count), body);
            }
        }
        4 => {
            if let Ok(digests) = fullsync::decode_digests(body) {
                assert_eq!(fullsync::encode_digests(&digests), body);
            }
        }
        5 => {
            if let Ok(entries) = fullsync::decode_entries(body) {
                assert_eq!(&fullsync::encode_entries(&entries)[..], body);
            }
        }
        6 => {
            if let Ok((bucket, prints)) = fullsync::decode_entries_request(body) {
                assert_eq!(fullsync::encode_entries_request(bucket, &prints), body);
            }
        }
        7 => {
            let asked = body.first().map_or(0, |&n| usize::from(n));
            let _ = fullsync::decode_entries_reply(body.get(1..).unwrap_or(&[]), asked);
        }
        _ => {
            if let Ok(keys) = fullsync::decode_fetch(body) {
                assert_eq!(fullsync::encode_fetch(&keys), body);
            }
        }
    }
});
