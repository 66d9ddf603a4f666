//! Goal: every message survives encode → decode unchanged, and no input —
//! random bytes, truncated or mutated valid frames — makes the decoder
//! panic or answer with a nonsensical error. Method: proptest strategies for
//! every request and response variant; the decoder is driven the way a
//! server drives it (bytes arrive in arbitrary chunks).

use bytes::{Bytes, BytesMut};
use meridian_net::{
    Decoder, Encoder, ErrorCode, Frame, Hello, Limits, Request, Response, Role, Version,
    VersionedValue, HEADER_LEN,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn version() -> impl Strategy<Value = Version> {
    (any::<u64>(), any::<u32>()).prop_map(|(hlc, origin)| Version { hlc, origin })
}

fn versioned() -> impl Strategy<Value = VersionedValue> {
    (version(), bytes(64)).prop_map(|(version, value)| VersionedValue { version, value })
}

fn request() -> impl Strategy<Value = Request> {
    let hello = (
        any::<u8>(),
        prop_oneof![Just(Role::Client), Just(Role::Peer), Just(Role::Xdc)],
        "[a-z0-9é-]{0,20}",
        "[a-z0-9-]{0,20}",
        option::of(bytes(40)),
    )
        .prop_map(
            |(protocol_version, role, cluster, datacenter, credentials)| {
                Request::Hello(Hello {
                    protocol_version,
                    role,
                    cluster,
                    datacenter,
                    credentials,
                })
            },
        );
    prop_oneof![
        hello,
        Just(Request::Ping),
        (bytes(40), option::of(any::<u8>()))
            .prop_map(|(key, read_quorum)| Request::Get { key, read_quorum }),
        (
            bytes(40),
            bytes(100),
            option::of(any::<u32>()),
            option::of(any::<u8>())
        )
            .prop_map(|(key, value, ttl_seconds, write_quorum)| Request::Put {
                key,
                value,
                ttl_seconds,
                write_quorum
            }),
        (bytes(40), option::of(any::<u8>()))
            .prop_map(|(key, write_quorum)| Request::Delete { key, write_quorum }),
        vec(bytes(20), 0..8).prop_map(|keys| Request::MultiGet { keys }),
        (
            vec((bytes(20), bytes(40)), 0..8),
            option::of(any::<u32>()),
            option::of(any::<u8>())
        )
            .prop_map(|(entries, ttl_seconds, write_quorum)| Request::MultiPut {
                entries,
                ttl_seconds,
                write_quorum
            }),
        Just(Request::BuildInfo),
        Just(Request::ClusterInfo),
        Just(Request::NodeHealth),
        Just(Request::Stats),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let codes = proptest::sample::select(ErrorCode::ALL.to_vec());
    prop_oneof![
        (any::<u8>(), any::<u32>(), "[a-z-]{0,20}", "[a-z-]{0,20}").prop_map(
            |(protocol_version, node_id, cluster, datacenter)| Response::HelloOk {
                protocol_version,
                node_id,
                cluster,
                datacenter
            }
        ),
        Just(Response::Pong),
        versioned().prop_map(Response::Value),
        Just(Response::NotFound),
        version().prop_map(|version| Response::Written { version }),
        vec(option::of(versioned()), 0..8).prop_map(|entries| Response::Values { entries }),
        vec(version(), 0..8).prop_map(|versions| Response::WrittenMany { versions }),
        "\\PC{0,60}".prop_map(|json| Response::Info { json }),
        (codes, "\\PC{0,60}").prop_map(|(code, message)| Response::Error { code, message }),
    ]
}

/// Feeds `input` in chunks of `chunk` bytes; returns frames and the first error.
fn drive(
    input: &[u8],
    chunk: usize,
    limits: Limits,
) -> (Vec<Frame>, Option<meridian_net::DecodeError>) {
    let mut decoder = Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    (frames, None)
}

/// A decode error must map to a real code and say something.
fn assert_sensible(error: &meridian_net::DecodeError) {
    assert_ne!(error.code(), ErrorCode::Unrecognized);
    assert!(error.to_string().len() > 10, "terse error: {error}");
}

fn small_limits() -> Limits {
    Limits {
        frame_bytes_max: 4096,
        key_bytes_max: 32,
        value_bytes_max: 64,
        batch_keys_max: 6,
        ..Limits::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(messages in vec((any::<u32>(), request()), 1..6), chunk in 1usize..64) {
        let mut wire = BytesMut::new();
        for (id, message) in &messages {
            Encoder::default().encode(*id, message, &mut wire).expect("encode");
        }
        let (frames, error) = drive(&wire, chunk, Limits::default());
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(frames.len(), messages.len());
        for (frame, (id, message)) in frames.iter().zip(&messages) {
            prop_assert_eq!(frame.request_id, *id);
            prop_assert_eq!(&frame.request(&Limits::default()).expect("decode"), message);
            prop_assert!(frame.response(&Limits::default()).is_err());
        }
    }

    #[test]
    fn responses_round_trip(messages in vec((any::<u32>(), response()), 1..6), chunk in 1usize..64) {
        let mut wire = BytesMut::new();
        for (id, message) in &messages {
            Encoder::default().encode(*id, message, &mut wire).expect("encode");
        }
        let (frames, error) = drive(&wire, chunk, Limits::default());
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(frames.len(), messages.len());
        for (frame, (id, message)) in frames.iter().zip(&messages) {
            prop_assert_eq!(frame.request_id, *id);
            prop_assert_eq!(&frame.response(&Limits::default()).expect("decode"), message);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        for limits in [Limits::default(), small_limits()] {
            let (frames, error) = drive(&input, chunk, limits);
            if let Some(error) = &error {
                assert_sensible(error);
            }
            for frame in frames {
                if let Err(error) = frame.request(&limits) { assert_sensible(&error) }
                if let Err(error) = frame.response(&limits) { assert_sensible(&error) }
            }
        }
    }

    #[test]
    fn truncated_frames_wait_for_more(message in request(), cut in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        Encoder::default().encode(1, &message, &mut wire).expect("encode");
        let cut = cut.index(wire.len());
        let (frames, error) = drive(&wire[..cut], 7, Limits::default());
        prop_assert!(frames.is_empty() && error.is_none(), "a prefix must only ask for more bytes");
    }

    #[test]
    fn mutated_frames_fail_sensibly(
        message in prop_oneof![request().prop_map(Ok), response().prop_map(Err)],
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        extra in vec(any::<u8>(), 0..8),
    ) {
        let mut wire = BytesMut::new();
        match &message {
            Ok(request) => Encoder::default().encode(9, request, &mut wire),
            Err(response) => Encoder::default().encode(9, response, &mut wire),
        }.expect("encode");
        let at = at.index(wire.len());
        wire[at] ^= xor;
        wire.extend_from_slice(&extra);
        let limits = small_limits();
        let (frames, error) = drive(&wire, 5, limits);
        if at < 2 {
            prop_assert_eq!(error.as_ref().map(|error| error.code()), Some(ErrorCode::BadMagic));
        }
        if let Some(error) = &error { assert_sensible(error) }
        for frame in frames {
            if at >= HEADER_LEN {
                // The header was untouched: only the body can be wrong.
                prop_assert_eq!(frame.request_id, 9);
            }
            let _ = frame.request(&limits).map_err(|error| assert_sensible(&error));
            let _ = frame.response(&limits).map_err(|error| assert_sensible(&error));
        }
    }
}

#[test]
fn limits_are_enforced_on_decode() {
    let mut wire = BytesMut::new();
    let big = Request::Put {
        key: Bytes::from(vec![1u8; 40]),
        value: Bytes::new(),
        ttl_seconds: None,
        write_quorum: None,
    };
    Encoder::default()
        .encode(1, &big, &mut wire)
        .expect("encode");
    let frame = Decoder::default()
        .decode(&mut wire)
        .expect("ok")
        .expect("frame");
    let error = frame.request(&small_limits()).expect_err("key too large");
    assert_eq!(error.code(), ErrorCode::KeyTooLarge);
    assert!(error.to_string().contains("40"), "{error}");

    let keys = (0..7).map(|_| Bytes::from_static(b"k")).collect();
    let mut wire = BytesMut::new();
    Encoder::default()
        .encode(2, &Request::MultiGet { keys }, &mut wire)
        .expect("encode");
    let frame = Decoder::default()
        .decode(&mut wire)
        .expect("ok")
        .expect("frame");
    assert_eq!(
        frame.request(&small_limits()).expect_err("batch").code(),
        ErrorCode::BatchTooLarge
    );
}

#[test]
fn header_errors_name_their_codes() {
    let mut good = BytesMut::new();
    Encoder::default()
        .encode(5, &Request::Ping, &mut good)
        .expect("encode");
    let cases: [(usize, u8, ErrorCode); 5] = [
        (0, b'X', ErrorCode::BadMagic),
        (2, 2, ErrorCode::UnsupportedVersion),
        (3, 0x70, ErrorCode::UnknownOpcode),
        (8, 1, ErrorCode::MalformedHeader),
        (10, 1, ErrorCode::MalformedHeader),
    ];
    for (offset, byte, code) in cases {
        let mut wire = good.clone();
        wire[offset] = byte;
        let error = Decoder::default()
            .decode(&mut wire)
            .expect_err("bad header");
        assert_eq!(error.code(), code, "offset {offset}: {error}");
    }
    // A reserved peer opcode passes the frame decoder but not message decoding.
    let mut wire = good.clone();
    wire[3] = meridian_net::Opcode::PEER_HEARTBEAT.0;
    let frame = Decoder::default()
        .decode(&mut wire)
        .expect("ok")
        .expect("frame");
    let error = frame.request(&Limits::default()).expect_err("reserved");
    assert_eq!(error.code(), ErrorCode::UnknownOpcode);
    assert!(error.to_string().contains("reserved for peer"), "{error}");
}
