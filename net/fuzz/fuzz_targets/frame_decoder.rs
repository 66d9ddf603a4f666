//! Fuzz target: the frame decoder, both message decoders and the peer
//! message decoders.
//!
//! Feeds the input in chunks whose size comes from its length (so the
//! incremental path is exercised while a seed of valid frames stays valid),
//! under default and under small limits. Asserts: no panic; every error maps
//! to a known code; every message that decodes re-encodes to the very bytes
//! it came from (except an ERROR with a code this build does not know, which
//! decodes as `Unrecognized`).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meridian_net::peer::{self, PeerRequest, PeerResponse};
use meridian_net::{Decoder, Encoder, ErrorCode, Frame, Limits, Response};

fn check_frame(frame: &Frame, limits: &Limits) {
    let encoder = Encoder::new(*limits);
    let mut original = BytesMut::new();
    encoder
        .encode_raw(frame.request_id, frame.opcode, &frame.body, &mut original)
        .expect("raw re-encode");
    match frame.request(limits) {
        Ok(request) => {
            let mut again = BytesMut::new();
            encoder
                .encode(frame.request_id, &request, &mut again)
                .expect("request re-encodes");
            assert_eq!(again, original, "request did not round-trip");
        }
        Err(error) => assert_ne!(error.code(), ErrorCode::Unrecognized),
    }
    match frame.response(limits) {
        Ok(Response::Error {
            code: ErrorCode::Unrecognized,
            ..
        }) => {}
        Ok(response) => {
            let mut again = BytesMut::new();
            encoder
                .encode(frame.request_id, &response, &mut again)
                .expect("response re-encodes");
            assert_eq!(again, original, "response did not round-trip");
        }
        Err(error) => assert_ne!(error.code(), ErrorCode::Unrecognized),
    }
    // Peer messages (replica reads and writes, gossip, membership, digests)
    // come from the network too: they decode without panicking, and what
    // decodes re-encodes to the same bytes.
    if peer::is_peer_request(frame.opcode) {
        if let Ok(request) = PeerRequest::decode(frame, limits) {
            let mut again = BytesMut::new();
            request
                .encode(frame.request_id, limits, &mut again)
                .expect("peer request re-encodes");
            assert_eq!(again, original, "peer request did not round-trip");
        }
    }
    if peer::is_peer_response(frame.opcode) {
        if let Ok(response) = PeerResponse::decode(frame, limits) {
            let mut again = BytesMut::new();
            response
                .encode(frame.request_id, limits, &mut again)
                .expect("peer response re-encodes");
            assert_eq!(again, original, "peer response did not round-trip");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let chunk = data.len() % 32 + 1;
    let small = Limits {
        frame_bytes_max: 1024,
        key_bytes_max: 16,
        value_bytes_max: 64,
        batch_keys_max: 4,
        ..Limits::default()
    };
    for limits in [Limits::default(), small] {
        let mut decoder = Decoder::new(limits);
        let mut buf = BytesMut::new();
        'feed: for piece in data.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => check_frame(&frame, &limits),
                    Ok(None) => break,
                    Err(error) => {
                        assert_ne!(error.code(), ErrorCode::Unrecognized);
                        break 'feed;
                    }
                }
            }
        }
    }
});
