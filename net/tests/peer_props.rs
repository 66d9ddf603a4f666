//! Goal: every peer request and response survives
//! `encode` → `Decoder::decode` → `decode` unchanged (keys and values as
//! slices of the frame); no body — random bytes, truncated or mutated valid
//! bodies — makes a peer decoder panic; and the encoder and the decoder
//! enforce the same limits. Method: proptest strategies for every variant;
//! bytes reach the frame decoder in arbitrary chunks, as they do from a
//! socket.

use bytes::{Bytes, BytesMut};
use meridian_net::peer::{self, EntryKind, EntrySummary, PeerRequest, PeerResponse, ReplicaRecord};
use meridian_net::{Decoder, ErrorCode, Frame, Limits, Opcode};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn kind() -> impl Strategy<Value = EntryKind> {
    prop_oneof![Just(EntryKind::Put), Just(EntryKind::Tombstone)]
}

fn record() -> impl Strategy<Value = ReplicaRecord> {
    (
        any::<u32>(),
        kind(),
        bytes(40),
        bytes(100),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(partition, kind, key, value, hlc, origin, expires_at)| ReplicaRecord {
                partition,
                kind,
                key,
                value,
                hlc,
                origin,
                expires_at,
            },
        )
}

fn summary() -> impl Strategy<Value = EntrySummary> {
    (bytes(40), any::<u64>(), any::<u32>(), kind()).prop_map(|(key, hlc, origin, kind)| {
        EntrySummary {
            key,
            hlc,
            origin,
            kind,
        }
    })
}

fn request() -> impl Strategy<Value = PeerRequest> {
    prop_oneof![
        (any::<u32>(), bytes(40))
            .prop_map(|(partition, key)| PeerRequest::ReplicaRead { partition, key }),
        (option::of(any::<u16>()), vec(record(), 0..6))
            .prop_map(|(hint_for, records)| PeerRequest::ReplicaWrite { hint_for, records }),
        bytes(300).prop_map(|ring| PeerRequest::Gossip { ring }),
        (any::<u16>(), any::<u64>()).prop_map(|(node_id, ring_epoch)| PeerRequest::Heartbeat {
            node_id,
            ring_epoch
        }),
        (any::<u32>(), any::<u16>(), 0u32..=4096).prop_map(|(partition, first_bucket, count)| {
            PeerRequest::Digests {
                partition,
                first_bucket,
                count: count.min(65536 - u32::from(first_bucket)),
            }
        }),
        (any::<u32>(), any::<u16>())
            .prop_map(|(partition, bucket)| PeerRequest::BucketEntries { partition, bucket }),
    ]
}

fn response() -> impl Strategy<Value = PeerResponse> {
    prop_oneof![
        option::of(record()).prop_map(PeerResponse::ReplicaEntry),
        vec(0u8..=2, 0..20).prop_map(|statuses| PeerResponse::ReplicaWritten { statuses }),
        bytes(300).prop_map(|ring| PeerResponse::GossipReply { ring }),
        (any::<u16>(), any::<u64>()).prop_map(|(node_id, ring_epoch)| {
            PeerResponse::HeartbeatReply {
                node_id,
                ring_epoch,
            }
        }),
        vec(any::<u64>(), 0..40).prop_map(|digests| PeerResponse::DigestsReply { digests }),
        vec(summary(), 0..8).prop_map(|entries| PeerResponse::BucketEntriesReply { entries }),
    ]
}

/// Feeds `wire` to a frame decoder in `chunk`-byte pieces; returns the frames.
fn frames(mut wire: BytesMut, chunk: usize) -> Vec<Frame> {
    let mut decoder = Decoder::default();
    let mut input = BytesMut::new();
    let mut out = Vec::new();
    while !wire.is_empty() {
        let piece = wire.split_to(chunk.min(wire.len()));
        input.extend_from_slice(&piece);
        while let Some(frame) = decoder.decode(&mut input).expect("valid header") {
            out.push(frame);
        }
    }
    assert!(input.is_empty(), "bytes left over");
    out
}

fn body_frame(opcode: Opcode, body: Bytes) -> Frame {
    Frame {
        request_id: 1,
        opcode,
        flags: 0,
        body,
    }
}

/// Every opcode a peer decoder might be handed: its own, the reserved
/// neighbours, a client opcode and ERROR.
fn opcode() -> impl Strategy<Value = Opcode> {
    prop_oneof![
        (0x20u8..=0x28).prop_map(Opcode),
        (0xA0u8..=0xA8).prop_map(Opcode),
        Just(Opcode::GET),
        Just(Opcode::ERROR),
    ]
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (0u32..40, 0u32..100, 0u32..8).prop_map(|(key, value, batch)| Limits {
        key_bytes_max: key,
        value_bytes_max: value,
        batch_keys_max: batch,
        ..Limits::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(messages in vec((any::<u32>(), request()), 1..6), chunk in 1usize..64) {
        let limits = Limits::default();
        let mut wire = BytesMut::new();
        for (id, message) in &messages {
            message.encode(*id, &limits, &mut wire).expect("fits the limits");
        }
        let decoded = frames(wire, chunk);
        prop_assert_eq!(decoded.len(), messages.len());
        for (frame, (id, message)) in decoded.iter().zip(&messages) {
            prop_assert_eq!(frame.request_id, *id);
            prop_assert_eq!(frame.opcode, message.opcode());
            prop_assert!(peer::is_peer_request(frame.opcode));
            prop_assert_eq!(&PeerRequest::decode(frame, &limits).expect("decodes"), message);
        }
    }

    #[test]
    fn responses_round_trip(messages in vec((any::<u32>(), response()), 1..6), chunk in 1usize..64) {
        let limits = Limits::default();
        let mut wire = BytesMut::new();
        for (id, message) in &messages {
            message.encode(*id, &limits, &mut wire).expect("fits the limits");
        }
        let decoded = frames(wire, chunk);
        prop_assert_eq!(decoded.len(), messages.len());
        for (frame, (id, message)) in decoded.iter().zip(&messages) {
            prop_assert_eq!(frame.request_id, *id);
            prop_assert_eq!(frame.opcode, message.opcode());
            prop_assert!(!peer::is_peer_request(frame.opcode));
            prop_assert_eq!(&PeerResponse::decode(frame, &limits).expect("decodes"), message);
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic(opcode in opcode(), body in vec(any::<u8>(), 0..256), limits in small_limits()) {
        let frame = body_frame(opcode, Bytes::from(body));
        for limits in [Limits::default(), limits] {
            if let Ok(request) = PeerRequest::decode(&frame, &limits) {
                prop_assert!(peer::is_peer_request(opcode));
                prop_assert_eq!(request.opcode(), opcode);
            }
            if let Ok(response) = PeerResponse::decode(&frame, &limits) {
                prop_assert!(peer::is_peer_response(opcode));
                prop_assert_eq!(response.opcode(), opcode);
            }
        }
    }

    #[test]
    fn truncated_and_extended_bodies_are_refused(
        message in request(),
        cut in any::<prop::sample::Index>(),
        extra in vec(any::<u8>(), 1..8),
    ) {
        let limits = Limits::default();
        let mut wire = BytesMut::new();
        message.encode(1, &limits, &mut wire).expect("fits");
        let frame = frames(wire, usize::MAX).remove(0);
        // Every field is fixed-width or length-prefixed, so no strict prefix
        // of a body is itself a body.
        let cut = cut.index(frame.body.len().max(1)).min(frame.body.len().saturating_sub(1));
        if !frame.body.is_empty() {
            let short = body_frame(frame.opcode, frame.body.slice(..cut));
            let error = PeerRequest::decode(&short, &limits).expect_err("truncated");
            prop_assert_eq!(error.code(), ErrorCode::MalformedBody);
        }
        let long = body_frame(frame.opcode, [&frame.body[..], &extra[..]].concat().into());
        let error = PeerRequest::decode(&long, &limits).expect_err("trailing");
        prop_assert_eq!(error.code(), ErrorCode::MalformedBody);
    }

    #[test]
    fn mutated_bodies_never_panic(
        message in response(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let limits = Limits::default();
        let mut wire = BytesMut::new();
        message.encode(1, &limits, &mut wire).expect("fits");
        let frame = frames(wire, usize::MAX).remove(0);
        let mut body = frame.body.to_vec();
        if !body.is_empty() {
            for (at, byte) in flips {
                let at = at.index(body.len());
                body[at] ^= byte;
            }
        }
        let mutated = body_frame(frame.opcode, Bytes::from(body));
        if let Ok(decoded) = PeerResponse::decode(&mutated, &limits) {
            prop_assert_eq!(decoded.opcode(), frame.opcode);
        }
    }

    #[test]
    fn encoder_and_decoder_enforce_the_same_limits(
        request in request(),
        response in response(),
        limits in small_limits(),
    ) {
        let default = Limits::default();
        let mut wire = BytesMut::new();
        request.encode(1, &default, &mut wire).expect("fits");
        response.encode(2, &default, &mut wire).expect("fits");
        let decoded = frames(wire, usize::MAX);

        let mut scratch = BytesMut::new();
        let encoded = request.encode(1, &limits, &mut scratch).map_err(|error| error.code());
        prop_assert!(encoded.is_ok() || scratch.is_empty(), "wrote on error");
        let decoded_request = PeerRequest::decode(&decoded[0], &limits).map_err(|error| error.code());
        prop_assert_eq!(encoded, decoded_request.map(|_| ()));

        let mut scratch = BytesMut::new();
        let encoded = response.encode(2, &limits, &mut scratch).map_err(|error| error.code());
        prop_assert!(encoded.is_ok() || scratch.is_empty(), "wrote on error");
        let decoded_response = PeerResponse::decode(&decoded[1], &limits).map_err(|error| error.code());
        prop_assert_eq!(encoded, decoded_response.map(|_| ()));
    }
}
