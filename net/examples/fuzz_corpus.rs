//! Writes the seed corpus of the `frame_decoder` fuzz target: one valid
//! frame per message kind, plus a file of several frames back to back.
//!
//! Run from the workspace: `cargo run -p meridian-net --example fuzz_corpus`.
//! It writes `net/fuzz/corpus/frame_decoder/` next to this crate.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use meridian_net::{
    Encode, Encoder, ErrorCode, Hello, Request, Response, Role, Version, VersionedValue,
};

fn main() -> std::io::Result<()> {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame_decoder");
    std::fs::create_dir_all(&directory)?;
    let key = || Bytes::from_static(b"user:42");
    let value = || Bytes::from_static(b"{\"name\":\"ada\"}");
    let version = Version {
        hlc: 0x0001_8F00_0000_0001,
        origin: 0x0100_0200,
    };
    let requests = vec![
        Request::Hello(Hello {
            protocol_version: 1,
            role: Role::Client,
            cluster: "meridian".into(),
            datacenter: "dc1".into(),
            credentials: Some(Bytes::from_static(b"secret")),
        }),
        Request::Ping,
        Request::Get {
            key: key(),
            read_quorum: Some(2),
        },
        Request::Put {
            key: key(),
            value: value(),
            ttl_seconds: Some(60),
            write_quorum: Some(2),
        },
        Request::Delete {
            key: key(),
            write_quorum: None,
        },
        Request::MultiGet {
            keys: vec![key(), Bytes::from_static(b"user:43")],
        },
        Request::MultiPut {
            entries: vec![(key(), value())],
            ttl_seconds: None,
            write_quorum: Some(1),
        },
        Request::BuildInfo,
        Request::ClusterInfo,
        Request::NodeHealth,
        Request::Stats,
    ];
    let responses = vec![
        Response::HelloOk {
            protocol_version: 1,
            node_id: 3,
            cluster: "meridian".into(),
            datacenter: "dc1".into(),
        },
        Response::Pong,
        Response::Value(VersionedValue {
            version,
            value: value(),
        }),
        Response::NotFound,
        Response::Written { version },
        Response::Values {
            entries: vec![
                Some(VersionedValue {
                    version,
                    value: value(),
                }),
                None,
            ],
        },
        Response::WrittenMany {
            versions: vec![version, version],
        },
        Response::Info {
            json: "{\"version\":\"0.1.0\"}".into(),
        },
        Response::Error {
            code: ErrorCode::Overloaded,
            message: "try later".into(),
        },
    ];
    let mut all = BytesMut::new();
    let messages: Vec<&dyn Encode> = requests
        .iter()
        .map(|r| r as &dyn Encode)
        .chain(responses.iter().map(|r| r as &dyn Encode))
        .collect();
    for (index, message) in messages.iter().enumerate() {
        let mut frame = BytesMut::new();
        Encoder::default()
            .encode(index as u32 + 1, *message, &mut frame)
            .map_err(std::io::Error::other)?;
        all.extend_from_slice(&frame);
        let name = format!("{:02}-op{:02x}.bin", index, message.opcode().0);
        std::fs::write(directory.join(name), &frame)?;
    }
    std::fs::write(directory.join("99-pipelined.bin"), &all)?;
    println!(
        "wrote {} files to {}",
        messages.len() + 1,
        directory.display()
    );
    Ok(())
}
