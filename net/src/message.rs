//! Typed messages and their opcodes.
//!
//! A frame's opcode says which message its body holds. Requests and
//! responses are two enums, [`Request`] and [`Response`], so a server decodes
//! only requests and a client only responses. The byte layout of each body is
//! drawn in [`crate::format`]; the code that reads and writes it is in
//! `body.rs`.
//!
//! Opcode ranges (protocol version 1):
//!
//! | range        | use                                                   |
//! |--------------|-------------------------------------------------------|
//! | `0x00`       | never valid                                           |
//! | `0x01..0x1F` | client requests (HELLO is shared by every role)       |
//! | `0x20..0x3F` | peer requests: reserved, not implemented              |
//! | `0x40..0x5F` | XDC requests (bodies: [`crate::xdc`])                  |
//! | `0x60..0x7F` | unassigned                                            |
//! | `0x80..0x9F` | client responses                                      |
//! | `0xA0..0xBF` | peer responses: reserved, not implemented             |
//! | `0xC0..0xDF` | XDC responses (bodies: [`crate::xdc`])                 |
//! | `0xE0..0xFE` | unassigned                                            |
//! | `0xFF`       | ERROR, a response to any request                      |
//!
//! The frame decoder lets frames with reserved opcodes through (so a later
//! peer or XDC codec can read them); [`Request::decode`] and
//! [`Response::decode`] refuse them with `UnknownOpcode`.
//!
//! Invariants:
//! - Every message's `opcode()` decodes back to the same variant.
//! - Values and keys decoded from a frame are slices of the frame (no copy).

use bytes::Bytes;

use crate::error::ErrorCode;

/// A frame's opcode byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Opcode(pub u8);

/// What an opcode byte means in protocol version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpcodeKind {
    /// An implemented client request.
    Request,
    /// An implemented response.
    Response,
    /// In the peer ranges, reserved.
    PeerReserved,
    /// In the XDC ranges, reserved.
    XdcReserved,
    /// Not assigned to anything.
    Unassigned,
}

impl Opcode {
    /// Request: open a connection (every role).
    pub const HELLO: Opcode = Opcode(0x01);
    /// Request: liveness check.
    pub const PING: Opcode = Opcode(0x02);
    /// Request: read one key.
    pub const GET: Opcode = Opcode(0x03);
    /// Request: write one key.
    pub const PUT: Opcode = Opcode(0x04);
    /// Request: delete one key (writes a tombstone).
    pub const DELETE: Opcode = Opcode(0x05);
    /// Request: read many keys.
    pub const MGET: Opcode = Opcode(0x06);
    /// Request: write many keys.
    pub const MPUT: Opcode = Opcode(0x07);
    /// Request: build information (JSON).
    pub const BUILDINFO: Opcode = Opcode(0x08);
    /// Request: cluster information, ring included (JSON).
    pub const CLUSTERINFO: Opcode = Opcode(0x09);
    /// Request: this node's health (JSON).
    pub const NODEHEALTH: Opcode = Opcode(0x0A);
    /// Request: counters (JSON).
    pub const STATS: Opcode = Opcode(0x0B);
    /// Request: an operator's command (`xdc connect …`, `xdc status`, …),
    /// answered with INFO (JSON).
    pub const ADMIN: Opcode = Opcode(0x0C);

    /// Reserved peer request: read from a replica.
    pub const PEER_REPLICA_READ: Opcode = Opcode(0x20);
    /// Reserved peer request: write to a replica.
    pub const PEER_REPLICA_WRITE: Opcode = Opcode(0x21);
    /// Reserved peer request: deliver a hinted-handoff write.
    pub const PEER_HINT_DELIVERY: Opcode = Opcode(0x22);
    /// Reserved peer request: a chunk of a vnode handoff stream.
    pub const PEER_HANDOFF_STREAM: Opcode = Opcode(0x23);
    /// Reserved peer request: ring gossip.
    pub const PEER_GOSSIP: Opcode = Opcode(0x24);
    /// Reserved peer request: heartbeat.
    pub const PEER_HEARTBEAT: Opcode = Opcode(0x25);
    /// Reserved peer request: anti-entropy digest exchange.
    pub const PEER_DIGEST_EXCHANGE: Opcode = Opcode(0x26);
    /// XDC request: a batch of records (see [`crate::xdc`]).
    pub const XDC_BATCH: Opcode = Opcode(0x40);
    /// XDC request: the opener's introduction (see [`crate::xdc`]).
    pub const XDC_OPEN: Opcode = Opcode(0x41);
    /// Reserved XDC request: fullsync digest exchange.
    pub const XDC_DIGEST_EXCHANGE: Opcode = Opcode(0x42);

    /// Response to HELLO.
    pub const HELLO_OK: Opcode = Opcode(0x81);
    /// Response to PING.
    pub const PONG: Opcode = Opcode(0x82);
    /// Response to GET: the value and its version.
    pub const VALUE: Opcode = Opcode(0x83);
    /// Response to GET: no live value.
    pub const NOT_FOUND: Opcode = Opcode(0x84);
    /// Response to PUT or DELETE: the version written.
    pub const WRITTEN: Opcode = Opcode(0x85);
    /// Response to MGET.
    pub const VALUES: Opcode = Opcode(0x86);
    /// Response to MPUT.
    pub const WRITTEN_MANY: Opcode = Opcode(0x87);
    /// Response to BUILDINFO, CLUSTERINFO, NODEHEALTH, STATS.
    pub const INFO: Opcode = Opcode(0x88);
    /// Response to any request that failed, or to a frame that did not decode.
    pub const ERROR: Opcode = Opcode(0xFF);

    /// Peer request range (reserved).
    pub const PEER_REQUEST_RANGE: std::ops::RangeInclusive<u8> = 0x20..=0x3F;
    /// XDC request range (reserved).
    pub const XDC_REQUEST_RANGE: std::ops::RangeInclusive<u8> = 0x40..=0x5F;
    /// Peer response range (reserved).
    pub const PEER_RESPONSE_RANGE: std::ops::RangeInclusive<u8> = 0xA0..=0xBF;
    /// XDC response range (reserved).
    pub const XDC_RESPONSE_RANGE: std::ops::RangeInclusive<u8> = 0xC0..=0xDF;

    /// What this opcode means.
    pub fn kind(self) -> OpcodeKind {
        match self.0 {
            0x01..=0x0C => OpcodeKind::Request,
            0x81..=0x88 | 0xFF => OpcodeKind::Response,
            0x20..=0x3F | 0xA0..=0xBF => OpcodeKind::PeerReserved,
            0x40..=0x5F | 0xC0..=0xDF => OpcodeKind::XdcReserved,
            _ => OpcodeKind::Unassigned,
        }
    }
}

impl std::fmt::Display for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:02x}", self.0)
    }
}

/// The version of a stored entry: last-writer-wins on `(hlc, origin)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Version {
    /// Hybrid logical clock: 48 bits of ms since the epoch, 16 bits of counter.
    pub hlc: u64,
    /// The clock that stamped the write: datacenter u8, node u16, shard u8.
    pub origin: u32,
}

/// A value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedValue {
    /// The version that wrote it.
    pub version: Version,
    /// The value bytes (a slice of the frame when decoded).
    pub value: Bytes,
}

/// Who opens a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Role {
    /// An application using the client library.
    Client = 1,
    /// Another node of the same cluster.
    Peer = 2,
    /// A node of a cluster in another datacenter.
    Xdc = 3,
}

impl Role {
    /// The role for a byte, if it names one.
    pub fn from_u8(raw: u8) -> Option<Role> {
        match raw {
            1 => Some(Role::Client),
            2 => Some(Role::Peer),
            3 => Some(Role::Xdc),
            _ => None,
        }
    }
}

/// The first request on every connection.
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the opener speaks.
    pub protocol_version: u8,
    /// Who the opener is.
    pub role: Role,
    /// The cluster the opener expects to reach.
    pub cluster: String,
    /// The opener's datacenter.
    pub datacenter: String,
    /// Opaque credentials (a secret or a token), if any.
    pub credentials: Option<Bytes>,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are a secret: never print them.
        f.debug_struct("Hello")
            .field("protocol_version", &self.protocol_version)
            .field("role", &self.role)
            .field("cluster", &self.cluster)
            .field("datacenter", &self.datacenter)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A request from a client (or the HELLO of any role).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Open the connection.
    Hello(Hello),
    /// Liveness check.
    Ping,
    /// Read one key.
    Get {
        /// The key.
        key: Bytes,
        /// Override of the cluster's R.
        read_quorum: Option<u8>,
    },
    /// Write one key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Expire the entry after this many seconds.
        ttl_seconds: Option<u32>,
        /// Override of the cluster's W.
        write_quorum: Option<u8>,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: Bytes,
        /// Override of the cluster's W.
        write_quorum: Option<u8>,
    },
    /// Read many keys; the response holds one entry per key, in order.
    MultiGet {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// Write many keys; the response holds one version per entry, in order.
    MultiPut {
        /// `(key, value)` pairs.
        entries: Vec<(Bytes, Bytes)>,
        /// Expire every entry after this many seconds.
        ttl_seconds: Option<u32>,
        /// Override of the cluster's W.
        write_quorum: Option<u8>,
    },
    /// Build information.
    BuildInfo,
    /// Cluster information (members, ring).
    ClusterInfo,
    /// This node's health.
    NodeHealth,
    /// Counters.
    Stats,
    /// An operator's command, as its words (`xdc status`, `xdc connect
    /// NAME ADDR`); the answer is INFO with JSON.
    Admin {
        /// The command line, space-separated words.
        command: String,
    },
}

impl Request {
    /// The opcode of this request.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Hello(_) => Opcode::HELLO,
            Request::Ping => Opcode::PING,
            Request::Get { .. } => Opcode::GET,
            Request::Put { .. } => Opcode::PUT,
            Request::Delete { .. } => Opcode::DELETE,
            Request::MultiGet { .. } => Opcode::MGET,
            Request::MultiPut { .. } => Opcode::MPUT,
            Request::BuildInfo => Opcode::BUILDINFO,
            Request::ClusterInfo => Opcode::CLUSTERINFO,
            Request::NodeHealth => Opcode::NODEHEALTH,
            Request::Stats => Opcode::STATS,
            Request::Admin { .. } => Opcode::ADMIN,
        }
    }
}

/// A response to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// HELLO accepted.
    HelloOk {
        /// The protocol version the server will speak.
        protocol_version: u8,
        /// The answering node's id.
        node_id: u32,
        /// The server's cluster name.
        cluster: String,
        /// The server's datacenter.
        datacenter: String,
    },
    /// Answer to PING.
    Pong,
    /// A GET found a live value.
    Value(VersionedValue),
    /// A GET found nothing live.
    NotFound,
    /// A PUT or DELETE was written with this version.
    Written {
        /// The version of the write (of the tombstone for DELETE).
        version: Version,
    },
    /// MGET results, one per key in request order.
    Values {
        /// `None` where the key was not found.
        entries: Vec<Option<VersionedValue>>,
    },
    /// MPUT results, one version per entry in request order.
    WrittenMany {
        /// The versions written.
        versions: Vec<Version>,
    },
    /// An info response: a JSON document the server filled.
    Info {
        /// UTF-8 JSON.
        json: String,
    },
    /// The request failed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

impl Response {
    /// The opcode of this response.
    pub fn opcode(&self) -> Opcode {
        match self {
            Response::HelloOk { .. } => Opcode::HELLO_OK,
            Response::Pong => Opcode::PONG,
            Response::Value(_) => Opcode::VALUE,
            Response::NotFound => Opcode::NOT_FOUND,
            Response::Written { .. } => Opcode::WRITTEN,
            Response::Values { .. } => Opcode::VALUES,
            Response::WrittenMany { .. } => Opcode::WRITTEN_MANY,
            Response::Info { .. } => Opcode::INFO,
            Response::Error { .. } => Opcode::ERROR,
        }
    }

    /// The ERROR response a server sends for a decode error.
    pub fn from_decode_error(error: &crate::error::DecodeError) -> Response {
        Response::Error {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_kinds_follow_the_documented_ranges() {
        for raw in 0..=u8::MAX {
            let kind = Opcode(raw).kind();
            if Opcode::PEER_REQUEST_RANGE.contains(&raw)
                || Opcode::PEER_RESPONSE_RANGE.contains(&raw)
            {
                assert_eq!(kind, OpcodeKind::PeerReserved, "{raw:#x}");
            }
            if Opcode::XDC_REQUEST_RANGE.contains(&raw) || Opcode::XDC_RESPONSE_RANGE.contains(&raw)
            {
                assert_eq!(kind, OpcodeKind::XdcReserved, "{raw:#x}");
            }
        }
        assert_eq!(Opcode(0).kind(), OpcodeKind::Unassigned);
        assert_eq!(Opcode::STATS.kind(), OpcodeKind::Request);
        assert_eq!(Opcode(0x0D).kind(), OpcodeKind::Unassigned);
        assert_eq!(Opcode::ERROR.kind(), OpcodeKind::Response);
        assert_eq!(Opcode::XDC_OPEN.kind(), OpcodeKind::XdcReserved);
        assert_eq!(Opcode::PEER_GOSSIP.kind(), OpcodeKind::PeerReserved);
    }

    #[test]
    fn hello_debug_hides_credentials() {
        let hello = Hello {
            protocol_version: 1,
            role: Role::Client,
            cluster: "c".into(),
            datacenter: "dc".into(),
            credentials: Some(Bytes::from_static(b"hunter2")),
        };
        let text = format!("{hello:?}");
        assert!(!text.contains("hunter2"));
        assert!(text.contains("redacted"));
    }
}
