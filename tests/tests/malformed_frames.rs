//! Goal: every kind of bad input gets one ERROR frame with the right code
//! and a message naming the problem, then the connection closes, and the
//! server keeps serving everyone else.
//!
//! Method: against a server that requires a secret, each case opens a raw
//! TCP connection, writes its bytes in one write (a valid HELLO first when
//! the case is about a later frame, and a PING after the bad frame that must
//! go unanswered), and reads until the server closes. The answers must be
//! the HELLO_OK, if any, then exactly one ERROR echoing the bad frame's
//! request id. Afterwards a normal client must still work.

use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_net::format::{FLAGS_OFFSET, MAGIC_OFFSET, RESERVED_OFFSET};
use meridian_net::message::Hello;
use meridian_net::{ErrorCode, Opcode, Request, Response, Role, PROTOCOL_VERSION};
use meridian_tests::raw::{exchange, exchange_then_shutdown, frame, hello, request};
use meridian_tests::{ServerConfig, ServerProcess};

const SECRET: &[u8] = b"s3cret";
const FRAME_BYTES_MAX: u32 = 2 << 20;
const BAD_ID: u32 = 77;

struct Case {
    name: &'static str,
    /// Whether a valid HELLO goes first.
    greeted: bool,
    bad_frame: Vec<u8>,
    code: ErrorCode,
    /// Text the message must contain.
    names: &'static str,
}

fn hello_with(protocol_version: u8, cluster: &str, credentials: Option<&[u8]>) -> Request {
    Request::Hello(Hello {
        protocol_version,
        role: Role::Client,
        cluster: cluster.to_string(),
        datacenter: "dc1".to_string(),
        credentials: credentials.map(Bytes::copy_from_slice),
    })
}

fn patched(mut bytes: Vec<u8>, offset: usize, patch: &[u8]) -> Vec<u8> {
    bytes[offset..offset + patch.len()].copy_from_slice(patch);
    bytes
}

fn ping(request_id: u32) -> Vec<u8> {
    request(request_id, &Request::Ping)
}

fn cases() -> Vec<Case> {
    let valid_hello_body =
        request(0, &hello_with(PROTOCOL_VERSION, "meridian", Some(SECRET)))[16..].to_vec();
    // A PUT body whose key claims 100 bytes and has 5: options, key_len, "short".
    let mut truncated_put = vec![0u8];
    truncated_put.extend_from_slice(&100u16.to_le_bytes());
    truncated_put.extend_from_slice(b"short");
    let mut bad_role_hello = valid_hello_body.clone();
    bad_role_hello[1] = 9;
    vec![
        Case {
            name: "bad magic",
            greeted: false,
            bad_frame: patched(ping(BAD_ID), MAGIC_OFFSET, b"XX"),
            code: ErrorCode::BadMagic,
            names: "magic",
        },
        Case {
            name: "unsupported header version",
            greeted: false,
            bad_frame: frame(2, Opcode::HELLO, BAD_ID, &valid_hello_body),
            code: ErrorCode::UnsupportedVersion,
            names: "version 2",
        },
        Case {
            name: "unsupported HELLO protocol version",
            greeted: false,
            bad_frame: request(BAD_ID, &hello_with(9, "meridian", Some(SECRET))),
            code: ErrorCode::UnsupportedVersion,
            names: "version 9",
        },
        Case {
            name: "unassigned opcode",
            greeted: true,
            bad_frame: frame(PROTOCOL_VERSION, Opcode(0x70), BAD_ID, &[]),
            code: ErrorCode::UnknownOpcode,
            names: "0x70",
        },
        Case {
            name: "reserved peer opcode",
            greeted: true,
            bad_frame: frame(PROTOCOL_VERSION, Opcode::PEER_GOSSIP, BAD_ID, &[]),
            code: ErrorCode::UnknownOpcode,
            names: "0x24",
        },
        Case {
            name: "response opcode sent as a request",
            greeted: true,
            bad_frame: frame(PROTOCOL_VERSION, Opcode::PONG, BAD_ID, &[]),
            code: ErrorCode::UnknownOpcode,
            names: "0x82",
        },
        Case {
            name: "length past frame_bytes_max",
            greeted: true,
            // The header alone: the server must refuse without the body.
            bad_frame: patched(ping(BAD_ID), 12, &(FRAME_BYTES_MAX * 2).to_le_bytes()),
            code: ErrorCode::FrameTooLarge,
            names: "frame_bytes_max 2097152",
        },
        Case {
            name: "undefined flag bits",
            greeted: true,
            bad_frame: patched(ping(BAD_ID), FLAGS_OFFSET, &0x8000u16.to_le_bytes()),
            code: ErrorCode::MalformedHeader,
            names: "flag",
        },
        Case {
            name: "reserved header field not zero",
            greeted: true,
            bad_frame: patched(ping(BAD_ID), RESERVED_OFFSET, &1u16.to_le_bytes()),
            code: ErrorCode::MalformedHeader,
            names: "reserved",
        },
        Case {
            name: "truncated PUT body",
            greeted: true,
            bad_frame: frame(PROTOCOL_VERSION, Opcode::PUT, BAD_ID, &truncated_put),
            code: ErrorCode::MalformedBody,
            names: "body ends inside",
        },
        Case {
            name: "bytes after a PING body",
            greeted: true,
            bad_frame: frame(PROTOCOL_VERSION, Opcode::PING, BAD_ID, &[0, 0, 0]),
            code: ErrorCode::MalformedBody,
            names: "3 unexpected bytes",
        },
        Case {
            name: "HELLO with an unknown role",
            greeted: false,
            bad_frame: frame(PROTOCOL_VERSION, Opcode::HELLO, BAD_ID, &bad_role_hello),
            code: ErrorCode::MalformedBody,
            names: "role",
        },
        Case {
            name: "first frame not HELLO",
            greeted: false,
            bad_frame: ping(BAD_ID),
            code: ErrorCode::NotHelloFirst,
            names: "HELLO",
        },
        Case {
            name: "second HELLO",
            greeted: true,
            bad_frame: hello(BAD_ID, "meridian", Some(SECRET)),
            code: ErrorCode::MalformedBody,
            names: "already",
        },
        Case {
            name: "wrong cluster",
            greeted: false,
            bad_frame: hello(BAD_ID, "elsewhere", Some(SECRET)),
            code: ErrorCode::ClusterMismatch,
            names: "elsewhere",
        },
        Case {
            name: "wrong secret",
            greeted: false,
            bad_frame: hello(BAD_ID, "meridian", Some(b"guess")),
            code: ErrorCode::AuthFailed,
            names: "secret",
        },
        Case {
            name: "missing secret",
            greeted: false,
            bad_frame: hello(BAD_ID, "meridian", None),
            code: ErrorCode::AuthFailed,
            names: "secret",
        },
    ]
}

#[test]
fn each_malformed_frame_gets_an_error_and_a_close() {
    let server = ServerProcess::start(
        ServerConfig::default()
            .shards(2)
            .secret(std::str::from_utf8(SECRET).expect("UTF-8"))
            .set("limits", "frame_bytes_max", &FRAME_BYTES_MAX.to_string()),
    );
    for case in cases() {
        let mut bytes = Vec::new();
        if case.greeted {
            bytes.extend(hello(1, "meridian", Some(SECRET)));
        }
        bytes.extend(&case.bad_frame);
        bytes.extend(ping(BAD_ID + 1));
        let answer = exchange(
            server.address(),
            &bytes,
            Instant::now() + Duration::from_secs(10),
        );
        assert!(
            answer.closed,
            "{}: the server kept the connection open: {answer:?}",
            case.name
        );
        let expected_responses = if case.greeted { 2 } else { 1 };
        assert_eq!(
            answer.responses.len(),
            expected_responses,
            "{}: {answer:?}",
            case.name
        );
        if case.greeted {
            assert!(
                matches!(answer.responses[0], (1, Response::HelloOk { .. })),
                "{}: {answer:?}",
                case.name
            );
        }
        let (request_id, code, message) = answer.final_error();
        assert_eq!(code, case.code, "{}: {message}", case.name);
        assert!(
            message.contains(case.names),
            "{}: {message:?} does not name {:?}",
            case.name,
            case.names
        );
        assert_eq!(
            request_id, BAD_ID,
            "{}: the ERROR echoes the bad frame's id",
            case.name
        );
    }

    // A frame cut short by the client's close: nothing to answer, the server just closes.
    let mut cut = hello(1, "meridian", Some(SECRET));
    cut.extend_from_slice(&ping(2)[..10]);
    let answer = exchange_then_shutdown(
        server.address(),
        &cut,
        Instant::now() + Duration::from_secs(10),
    );
    assert!(answer.closed, "{answer:?}");
    assert_eq!(answer.responses.len(), 1, "only the HELLO_OK: {answer:?}");

    let mut config = server.client_config();
    config.credentials = Some(Bytes::from_static(SECRET));
    let mut client = meridian_net::client::blocking::Client::connect(config).expect("connect");
    client.ping().expect("ping after the bad frames");
    client.put(b"still", b"serving").expect("put");
    let entry = client.get(b"still").expect("get").expect("written");
    assert_eq!(&entry.value[..], b"serving");
}
