//! Writes the seed corpus of the `frame_decoder` fuzz target: one valid
//! frame per client message kind and per peer message kind, plus a file of
//! all of them back to back.
//!
//! Run from the workspace: `cargo run -p meridian-net --example fuzz_corpus`.
//! It writes `net/fuzz/corpus/frame_decoder/` next to this crate.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use meridian_net::format::OPCODE_OFFSET;
use meridian_net::peer::{
    EntryKind, EntrySummary, Membership, MembershipCommand, PeerRequest, PeerResponse,
    ReplicaRecord,
};
use meridian_net::{
    Encode, Encoder, ErrorCode, Hello, Limits, Request, Response, Role, Version, VersionedValue,
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
    let peer_frames = peer_frames(&key(), &value())?;
    for (index, frame) in peer_frames.iter().enumerate() {
        // Peer seeds are numbered from 60, apart from the client ones.
        let name = format!("{:02}-peer{:02x}.bin", 60 + index, frame[OPCODE_OFFSET]);
        std::fs::write(directory.join(name), frame)?;
        all.extend_from_slice(frame);
    }
    std::fs::write(directory.join("99-pipelined.bin"), &all)?;
    println!(
        "wrote {} files to {}",
        messages.len() + peer_frames.len() + 1,
        directory.display()
    );
    Ok(())
}

/// One frame per peer message kind, requests then responses.
fn peer_frames(key: &Bytes, value: &Bytes) -> std::io::Result<Vec<BytesMut>> {
    let record = ReplicaRecord {
        partition: 7,
        kind: EntryKind::Put,
        key: key.clone(),
        value: value.clone(),
        hlc: 0x0001_8F00_0000_0001,
        origin: 0x0100_0200,
        expires_at: 0,
    };
    let requests = vec![
        PeerRequest::ReplicaRead {
            partition: 7,
            key: key.clone(),
        },
        PeerRequest::ReplicaWrite {
            hint_for: Some(3),
            records: vec![record.clone()],
        },
        PeerRequest::Heartbeat {
            node_id: 2,
            ring_epoch: 9,
        },
        PeerRequest::Digests {
            partition: 7,
            first_bucket: 0,
            count: 4,
        },
        PeerRequest::BucketEntries {
            partition: 7,
            bucket: 1,
        },
        PeerRequest::Membership(Membership {
            command: MembershipCommand::Admit,
            forwarded: true,
            node_id: 4,
            plan: 0,
            address: Bytes::from_static(b"10.0.1.14:7411"),
            rack: Bytes::from_static(b"rack-2"),
            partitions: Vec::new(),
        }),
    ];
    let responses = vec![
        PeerResponse::ReplicaEntry(Some(record)),
        PeerResponse::ReplicaWritten {
            statuses: vec![0, 1],
        },
        PeerResponse::HeartbeatReply {
            node_id: 3,
            ring_epoch: 9,
        },
        PeerResponse::DigestsReply {
            digests: vec![1, 2, 3, 4],
        },
        PeerResponse::BucketEntriesReply {
            entries: vec![EntrySummary {
                key: key.clone(),
                hlc: 0x0001_8F00_0000_0001,
                origin: 0x0100_0200,
                kind: EntryKind::Tombstone,
            }],
        },
    ];
    let limits = Limits::default();
    let mut frames = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        let mut frame = BytesMut::new();
        request
            .encode(100 + index as u32, &limits, &mut frame)
            .map_err(std::io::Error::other)?;
        frames.push(frame);
    }
    for (index, response) in responses.iter().enumerate() {
        let mut frame = BytesMut::new();
        response
            .encode(200 + index as u32, &limits, &mut frame)
            .map_err(std::io::Error::other)?;
        frames.push(frame);
    }
    Ok(frames)
}
