//! Peer messages: the bodies that nodes of one cluster exchange for
//! replication, gossip, heartbeats and anti-entropy.
//!
//! Peer frames use the same 16-byte header as every frame (drawn in
//! [`crate::format`]); the frame decoder passes the peer opcode ranges
//! through untouched and this module reads and writes their bodies. Peer
//! bodies carry no version byte of their own: the header's protocol version
//! (agreed by HELLO) versions them, as it does the client bodies.
//!
//! Body layouts (protocol version 1). All integers little-endian, fixed
//! width. `key` is `key_len u16 | key bytes`; `value` is
//! `value_len u32 | value bytes`; `ring` is `ring_len u32 | ring bytes`;
//! `count` is a `u32`. An `options` byte says which optional fields follow
//! it, in bit order; unknown bits are refused.
//!
//! ```text
//! record          partition u32 | kind u8 (1 put, 2 tombstone) | hlc u64
//!                 | origin u32 | expires_at u32 (unix seconds, 0 never)
//!                 | key | value
//! summary         kind u8 | hlc u64 | origin u32 | key
//!
//! 0x20 REPLICA_READ     partition u32 | key
//! 0x21 REPLICA_WRITE    options u8 (bit0 hint_for) | [hint_for u16]
//!                       | count | count × record
//! 0x24 GOSSIP           ring
//! 0x25 HEARTBEAT        node_id u16 | ring_epoch u64
//! 0x26 DIGESTS          partition u32 | first_bucket u16 | count u32
//! 0x27 BUCKET_ENTRIES   partition u32 | bucket u16
//! 0x28 MEMBERSHIP       command u8 (1 join_via, 2 admit, 3 leave,
//!                       4 handoff_ready) | flags u8 (bit0 forwarded)
//!                       | node_id u16 | plan u64 | address_len u8 | address
//!                       | rack_len u8 | rack (0: no rack)
//!                       | count | count × partition u32
//!
//! 0xA0 REPLICA_ENTRY    present u8 (0 none, 1 some) | [record]
//! 0xA1 REPLICA_WRITTEN  count | count × status u8 (0 written, 1 stale, 2 refused)
//! 0xA4 GOSSIP_REPLY     ring
//! 0xA5 HEARTBEAT_REPLY  node_id u16 | ring_epoch u64
//! 0xA6 DIGESTS_REPLY    count | count × digest u64
//! 0xA7 BUCKET_ENTRIES_REPLY  count | count × summary
//! 0xA8 MEMBERSHIP_REPLY ring
//! ```
//!
//! Limits, enforced identically by the encoder and the decoder (both call
//! the same checks): a key ≤ `key_bytes_max`, a value ≤ `value_bytes_max`,
//! records, statuses, digests and summaries per message ≤ `batch_keys_max`,
//! a ring document ≤ [`RING_BYTES_MAX`], the partitions of a MEMBERSHIP
//! request ≤ [`MEMBERSHIP_PARTITIONS_MAX`], and a DIGESTS range inside the u16
//! bucket space (`first_bucket + count ≤` [`DIGESTS_COUNT_MAX`], so never
//! more than 65536 digests). The frame as a whole is bounded by
//! `frame_bytes_max`, which the [`crate::Encoder`] and [`crate::Decoder`]
//! check.
//!
//! A peer that fails a request answers with the ordinary ERROR frame
//! (`0xFF`); a requester checks for [`Opcode::ERROR`] (and reads it with
//! [`Frame::response`]) before calling [`PeerResponse::decode`].
//!
//! Trade-off: the peer codec keeps its own small reader instead of sharing
//! the client body module, so the client wire format and this one can evolve
//! apart; the price is a few dozen duplicated lines of cursor code.
//!
//! Invariants:
//! - Every response opcode is its request's opcode + 0x80, all inside the
//!   peer ranges (checked at compile time).
//! - Every length is checked against its limit, then against the bytes that
//!   remain, before any slice or allocation; decoding never panics.
//! - Keys, values and ring documents decoded are slices of the frame body.
//! - `encode` writes nothing when it fails (the [`crate::Encoder`] checks
//!   every limit before it writes a byte).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::Encode;
use crate::format::{FRAME_BYTES_MAX_DEFAULT, HEADER_LEN, OPTION_BIT_0};
use crate::reader::Reader;
use crate::{DecodeError, EncodeError, Encoder, Frame, Limits, Opcode, OpcodeKind};

/// Request: read a key's newest record from a vnode.
pub const REPLICA_READ: Opcode = Opcode::PEER_REPLICA_READ;
/// Request: apply records to a vnode (or hold them as hints).
pub const REPLICA_WRITE: Opcode = Opcode::PEER_REPLICA_WRITE;
/// Request: exchange ring documents.
pub const GOSSIP: Opcode = Opcode::PEER_GOSSIP;
/// Request: liveness and ring epoch.
pub const HEARTBEAT: Opcode = Opcode::PEER_HEARTBEAT;
/// Request: anti-entropy digests of a range of buckets.
pub const DIGESTS: Opcode = Opcode::PEER_DIGEST_EXCHANGE;
/// Request: the entries of one bucket.
pub const BUCKET_ENTRIES: Opcode = Opcode(0x27);
/// Request: a membership command (join, leave, handoff progress).
pub const MEMBERSHIP: Opcode = Opcode(0x28);
/// Response to [`REPLICA_READ`].
pub const REPLICA_ENTRY: Opcode = Opcode(0xA0);
/// Response to [`REPLICA_WRITE`].
pub const REPLICA_WRITTEN: Opcode = Opcode(0xA1);
/// Response to [`GOSSIP`].
pub const GOSSIP_REPLY: Opcode = Opcode(0xA4);
/// Response to [`HEARTBEAT`].
pub const HEARTBEAT_REPLY: Opcode = Opcode(0xA5);
/// Response to [`DIGESTS`].
pub const DIGESTS_REPLY: Opcode = Opcode(0xA6);
/// Response to [`BUCKET_ENTRIES`].
pub const BUCKET_ENTRIES_REPLY: Opcode = Opcode(0xA7);
/// Response to [`MEMBERSHIP`].
pub const MEMBERSHIP_REPLY: Opcode = Opcode(0xA8);

const REQUEST_OPCODES: [Opcode; 7] = [
    REPLICA_READ,
    REPLICA_WRITE,
    GOSSIP,
    HEARTBEAT,
    DIGESTS,
    BUCKET_ENTRIES,
    MEMBERSHIP,
];
const RESPONSE_OPCODES: [Opcode; 7] = [
    REPLICA_ENTRY,
    REPLICA_WRITTEN,
    GOSSIP_REPLY,
    HEARTBEAT_REPLY,
    DIGESTS_REPLY,
    BUCKET_ENTRIES_REPLY,
    MEMBERSHIP_REPLY,
];

const _: () = {
    let mut index = 0;
    while index < REQUEST_OPCODES.len() {
        let request = REQUEST_OPCODES[index].0;
        assert!(request >= 0x20 && request <= 0x3F);
        assert!(RESPONSE_OPCODES[index].0 == request + 0x80);
        index += 1;
    }
};

/// Largest ring document in a GOSSIP or GOSSIP_REPLY: 16 MiB.
pub const RING_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Size of the bucket space (bucket ids are u16): the most digests one
/// DIGESTS request may ask for, and the end of any range it names.
pub const DIGESTS_COUNT_MAX: u32 = 1 << 16;

/// Most partitions one MEMBERSHIP request names (the largest ring size).
pub const MEMBERSHIP_PARTITIONS_MAX: u32 = 65_536;
/// Longest address in a MEMBERSHIP request, in bytes.
pub const MEMBERSHIP_ADDRESS_BYTES_MAX: usize = 255;
/// Longest rack of a MEMBERSHIP request (its length is one byte; the ring
/// document holds racks of the same bound).
pub const MEMBERSHIP_RACK_BYTES_MAX: usize = 255;

/// REPLICA_WRITTEN status: the record was written.
pub const WRITE_STATUS_WRITTEN: u8 = 0;
/// REPLICA_WRITTEN status: stale, the receiver already had it or newer.
pub const WRITE_STATUS_STALE: u8 = 1;
/// REPLICA_WRITTEN status: the receiver refused the record.
pub const WRITE_STATUS_REFUSED: u8 = 2;

const COUNT_LEN: u64 = 4;
const KEY_LEN_LEN: u64 = 2;
const VALUE_LEN_LEN: u64 = 4;
/// `partition | kind | hlc | origin | expires_at | key_len | value_len`.
const RECORD_FIXED_LEN: u64 = 4 + 1 + 8 + 4 + 4 + KEY_LEN_LEN + VALUE_LEN_LEN;
/// `kind | hlc | origin | key_len`.
const SUMMARY_FIXED_LEN: u64 = 1 + 8 + 4 + KEY_LEN_LEN;
const DIGEST_LEN: u64 = 8;

const _: () = assert!(RECORD_FIXED_LEN == 27 && SUMMARY_FIXED_LEN == 15);
// A largest ring document still fits a default frame.
const _: () =
    assert!(HEADER_LEN as u64 + 4 + RING_BYTES_MAX as u64 <= FRAME_BYTES_MAX_DEFAULT as u64);

/// What a replica record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// A live value.
    Put = 1,
    /// A deletion marker (its value is empty by convention; the codec
    /// carries whatever it is given).
    Tombstone = 2,
}

impl EntryKind {
    /// The kind for a byte, if it names one.
    pub fn from_u8(raw: u8) -> Option<EntryKind> {
        match raw {
            1 => Some(EntryKind::Put),
            2 => Some(EntryKind::Tombstone),
            _ => None,
        }
    }
}

/// One versioned record of a vnode, as replicas exchange it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRecord {
    /// The vnode (partition) the key belongs to.
    pub partition: u32,
    /// Put or tombstone.
    pub kind: EntryKind,
    /// The key (a slice of the frame when decoded).
    pub key: Bytes,
    /// The value (a slice of the frame when decoded).
    pub value: Bytes,
    /// Hybrid logical clock of the write.
    pub hlc: u64,
    /// The clock that stamped the write.
    pub origin: u32,
    /// Expiry in unix seconds, 0 = never.
    pub expires_at: u32,
}

/// A request from one node of the cluster to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRequest {
    /// Read a key's newest record (tombstones included) from a vnode.
    ReplicaRead {
        /// The vnode.
        partition: u32,
        /// The key.
        key: Bytes,
    },
    /// Apply records (newest version wins). `hint_for`: Some(node id) when
    /// the receiver stores them as a fallback for that primary node.
    ReplicaWrite {
        /// The primary node the records are held for, if a hint.
        hint_for: Option<u16>,
        /// The records, answered one status each, in order.
        records: Vec<ReplicaRecord>,
    },
    /// The sender's ring document (opaque bytes, up to 16 MiB); the reply
    /// carries the receiver's.
    Gossip {
        /// The ring document.
        ring: Bytes,
    },
    /// Liveness, with the sender's ring epoch.
    Heartbeat {
        /// The sender's node id.
        node_id: u16,
        /// The epoch of the sender's ring.
        ring_epoch: u64,
    },
    /// Digests of buckets first_bucket .. first_bucket + count of a vnode.
    Digests {
        /// The vnode.
        partition: u32,
        /// First bucket of the range.
        first_bucket: u16,
        /// Number of buckets (`first_bucket + count ≤ 65536`).
        count: u32,
    },
    /// (key, version, kind) of every entry of one bucket of a vnode.
    BucketEntries {
        /// The vnode.
        partition: u32,
        /// The bucket.
        bucket: u16,
    },
    /// A membership command; the reply carries the ring document the
    /// receiver holds once it acted on it.
    Membership(Membership),
}

/// What a MEMBERSHIP request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MembershipCommand {
    /// To the node that should join (from `meridian cli cluster join`):
    /// join the cluster of the member at `address`.
    JoinVia = 1,
    /// To a member (forwarded to the claimant): plan node `node_id`,
    /// reachable at `address`, into the ring.
    Admit = 2,
    /// To a member (forwarded to the claimant): plan node `node_id` out.
    Leave = 3,
    /// To the claimant: node `node_id` holds the records of `partitions`
    /// for the plan whose target owners hash to `plan`.
    HandoffReady = 4,
}

impl MembershipCommand {
    /// The command of a wire byte.
    pub fn from_u8(raw: u8) -> Option<MembershipCommand> {
        Some(match raw {
            1 => MembershipCommand::JoinVia,
            2 => MembershipCommand::Admit,
            3 => MembershipCommand::Leave,
            4 => MembershipCommand::HandoffReady,
            _ => return None,
        })
    }
}

/// The body of a MEMBERSHIP request; fields a command does not use are
/// zero or empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// What is asked.
    pub command: MembershipCommand,
    /// Set by a member that passed the request on to the claimant: the
    /// receiver must not pass it on again.
    pub forwarded: bool,
    /// The node joining, leaving or reporting.
    pub node_id: u16,
    /// The plan a handoff report is about (a hash of its target owners).
    pub plan: u64,
    /// A peer address (`host:port`), at most 255 bytes.
    pub address: Bytes,
    /// The rack of the node an ADMIT asks to join (`node.rack`), at most
    /// 255 bytes; empty when it has none, and for the other commands.
    pub rack: Bytes,
    /// The partitions a handoff report names.
    pub partitions: Vec<u32>,
}

/// Key, version and kind of one entry (anti-entropy compares these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySummary {
    /// The key (a slice of the frame when decoded).
    pub key: Bytes,
    /// Hybrid logical clock of the entry's version.
    pub hlc: u64,
    /// The clock that stamped it.
    pub origin: u32,
    /// Put or tombstone.
    pub kind: EntryKind,
}

/// A response to a [`PeerRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerResponse {
    /// `None`: no record for the key.
    ReplicaEntry(Option<ReplicaRecord>),
    /// One status per record of the request, in order: 0 written, 1 stale
    /// (already had it or newer), 2 refused.
    ReplicaWritten {
        /// The statuses ([`WRITE_STATUS_WRITTEN`] and its siblings).
        statuses: Vec<u8>,
    },
    /// The receiver's ring document.
    GossipReply {
        /// The ring document.
        ring: Bytes,
    },
    /// Liveness, with the receiver's ring epoch.
    HeartbeatReply {
        /// The receiver's node id.
        node_id: u16,
        /// The epoch of the receiver's ring.
        ring_epoch: u64,
    },
    /// One digest per requested bucket, in bucket order.
    DigestsReply {
        /// The digests.
        digests: Vec<u64>,
    },
    /// The entries of the requested bucket.
    BucketEntriesReply {
        /// The entries.
        entries: Vec<EntrySummary>,
    },
    /// The receiver's ring document after it acted on a MEMBERSHIP request.
    MembershipReply {
        /// The ring document.
        ring: Bytes,
    },
}

/// True when `opcode` is one of the peer request opcodes above.
pub fn is_peer_request(opcode: Opcode) -> bool {
    REQUEST_OPCODES.contains(&opcode)
}

/// True when `opcode` is one of the peer response opcodes above.
pub fn is_peer_response(opcode: Opcode) -> bool {
    RESPONSE_OPCODES.contains(&opcode)
}

impl PeerRequest {
    /// The opcode of this request.
    pub fn opcode(&self) -> Opcode {
        match self {
            PeerRequest::ReplicaRead { .. } => REPLICA_READ,
            PeerRequest::ReplicaWrite { .. } => REPLICA_WRITE,
            PeerRequest::Gossip { .. } => GOSSIP,
            PeerRequest::Heartbeat { .. } => HEARTBEAT,
            PeerRequest::Membership(_) => MEMBERSHIP,
            PeerRequest::Digests { .. } => DIGESTS,
            PeerRequest::BucketEntries { .. } => BUCKET_ENTRIES,
        }
    }

    /// Appends the whole frame (header + body) to `buf`.
    ///
    /// Checks every limit first; on error `buf` is left as it was.
    pub fn encode(
        &self,
        request_id: u32,
        limits: &Limits,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        Encoder::new(*limits).encode(request_id, self, buf)?;
        Ok(())
    }

    /// Decodes the body of a frame whose opcode is one of the request
    /// opcodes above. Keys and ring documents are slices of the body.
    pub fn decode(frame: &Frame, limits: &Limits) -> Result<PeerRequest, DecodeError> {
        check_opcode(frame.opcode, Direction::Request)?;
        let mut reader = Reader {
            body: frame.body.clone(),
            limits,
        };
        let request = match frame.opcode {
            REPLICA_READ => PeerRequest::ReplicaRead {
                partition: reader.u32("partition")?,
                key: reader.key()?,
            },
            REPLICA_WRITE => {
                let options = reader.options(OPTION_BIT_0)?;
                let hint_for = match options & OPTION_BIT_0 {
                    0 => None,
                    _ => Some(reader.u16("hint_for")?),
                };
                let (count, capacity) =
                    reader.checked_count("record count", RECORD_FIXED_LEN, check_batch)?;
                let mut records = Vec::with_capacity(capacity);
                for _ in 0..count {
                    records.push(reader.record()?);
                }
                PeerRequest::ReplicaWrite { hint_for, records }
            }
            GOSSIP => PeerRequest::Gossip {
                ring: reader.ring()?,
            },
            HEARTBEAT => PeerRequest::Heartbeat {
                node_id: reader.u16("node_id")?,
                ring_epoch: reader.u64("ring_epoch")?,
            },
            DIGESTS => {
                let partition = reader.u32("partition")?;
                let first_bucket = reader.u16("first_bucket")?;
                let count = reader.u32("digests count")?;
                check_digests_range(first_bucket, u64::from(count), limits)
                    .map_err(Breach::decode_error)?;
                PeerRequest::Digests {
                    partition,
                    first_bucket,
                    count,
                }
            }
            BUCKET_ENTRIES => PeerRequest::BucketEntries {
                partition: reader.u32("partition")?,
                bucket: reader.u16("bucket")?,
            },
            MEMBERSHIP => PeerRequest::Membership(reader.membership()?),
            other => return Err(DecodeError::UnknownOpcode { opcode: other.0 }),
        };
        reader.finish(frame.opcode)?;
        Ok(request)
    }
}

impl PeerResponse {
    /// The opcode of this response.
    pub fn opcode(&self) -> Opcode {
        match self {
            PeerResponse::ReplicaEntry(_) => REPLICA_ENTRY,
            PeerResponse::ReplicaWritten { .. } => REPLICA_WRITTEN,
            PeerResponse::GossipReply { .. } => GOSSIP_REPLY,
            PeerResponse::HeartbeatReply { .. } => HEARTBEAT_REPLY,
            PeerResponse::MembershipReply { .. } => MEMBERSHIP_REPLY,
            PeerResponse::DigestsReply { .. } => DIGESTS_REPLY,
            PeerResponse::BucketEntriesReply { .. } => BUCKET_ENTRIES_REPLY,
        }
    }

    /// Appends the whole frame (header + body) to `buf`.
    ///
    /// Checks every limit first; on error `buf` is left as it was. A status
    /// above 2 is refused as `FieldTooLarge` (no better variant exists).
    pub fn encode(
        &self,
        request_id: u32,
        limits: &Limits,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        Encoder::new(*limits).encode(request_id, self, buf)?;
        Ok(())
    }

    /// Decodes the body of a frame whose opcode is one of the response
    /// opcodes above. Keys, values and ring documents are slices of the body.
    pub fn decode(frame: &Frame, limits: &Limits) -> Result<PeerResponse, DecodeError> {
        check_opcode(frame.opcode, Direction::Response)?;
        let mut reader = Reader {
            body: frame.body.clone(),
            limits,
        };
        let response = match frame.opcode {
            REPLICA_ENTRY => match reader.u8("present")? {
                0 => PeerResponse::ReplicaEntry(None),
                1 => PeerResponse::ReplicaEntry(Some(reader.record()?)),
                other => {
                    return Err(DecodeError::InvalidValue {
                        field: "present",
                        value: u64::from(other),
                    })
                }
            },
            REPLICA_WRITTEN => {
                let (count, capacity) = reader.checked_count("status count", 1, check_batch)?;
                let mut statuses = Vec::with_capacity(capacity);
                for _ in 0..count {
                    let status = reader.u8("replica write status")?;
                    check_status(status).map_err(Breach::decode_error)?;
                    statuses.push(status);
                }
                PeerResponse::ReplicaWritten { statuses }
            }
            GOSSIP_REPLY => PeerResponse::GossipReply {
                ring: reader.ring()?,
            },
            MEMBERSHIP_REPLY => PeerResponse::MembershipReply {
                ring: reader.ring()?,
            },
            HEARTBEAT_REPLY => PeerResponse::HeartbeatReply {
                node_id: reader.u16("node_id")?,
                ring_epoch: reader.u64("ring_epoch")?,
            },
            DIGESTS_REPLY => {
                let (count, capacity) =
                    reader.checked_count("digests count", DIGEST_LEN, check_digests)?;
                let mut digests = Vec::with_capacity(capacity);
                for _ in 0..count {
                    digests.push(reader.u64("digest")?);
                }
                PeerResponse::DigestsReply { digests }
            }
            BUCKET_ENTRIES_REPLY => {
                let (count, capacity) =
                    reader.checked_count("entry count", SUMMARY_FIXED_LEN, check_batch)?;
                let mut entries = Vec::with_capacity(capacity);
                for _ in 0..count {
                    entries.push(reader.summary()?);
                }
                PeerResponse::BucketEntriesReply { entries }
            }
            other => return Err(DecodeError::UnknownOpcode { opcode: other.0 }),
        };
        reader.finish(frame.opcode)?;
        Ok(response)
    }
}

// ---------------------------------------------------------------------------
// Limits, shared by the encoder and the decoder.

/// A broken limit, before it becomes an encode or a decode error.
#[derive(Debug)]
enum Breach {
    Key {
        len: u64,
        max: u32,
    },
    Value {
        len: u64,
        max: u32,
    },
    Batch {
        count: u64,
        max: u32,
    },
    Field {
        field: &'static str,
        len: u64,
        max: u32,
    },
    Invalid {
        field: &'static str,
        value: u64,
        max: u32,
    },
}

impl Breach {
    fn encode_error(self) -> EncodeError {
        match self {
            Breach::Key { len, max } => EncodeError::KeyTooLarge { len, max },
            Breach::Value { len, max } => EncodeError::ValueTooLarge { len, max },
            Breach::Batch { count, max } => EncodeError::BatchTooLarge { count, max },
            Breach::Field { field, len, max } => EncodeError::FieldTooLarge { field, len, max },
            // EncodeError has no InvalidValue; FieldTooLarge names the field,
            // the value and the largest valid one.
            Breach::Invalid { field, value, max } => EncodeError::FieldTooLarge {
                field,
                len: value,
                max,
            },
        }
    }

    fn decode_error(self) -> DecodeError {
        match self {
            Breach::Key { len, max } => DecodeError::KeyTooLarge { len, max },
            Breach::Value { len, max } => DecodeError::ValueTooLarge { len, max },
            Breach::Batch { count, max } => DecodeError::BatchTooLarge { count, max },
            Breach::Field { field, len, max } => DecodeError::FieldTooLarge { field, len, max },
            Breach::Invalid { field, value, .. } => DecodeError::InvalidValue { field, value },
        }
    }
}

fn check_key(len: u64, limits: &Limits) -> Result<(), Breach> {
    let max = limits.key_bytes_max.min(u32::from(u16::MAX));
    if len > u64::from(max) {
        return Err(Breach::Key { len, max });
    }
    Ok(())
}

fn check_value(len: u64, limits: &Limits) -> Result<(), Breach> {
    let max = limits.value_bytes_max;
    if len > u64::from(max) {
        return Err(Breach::Value { len, max });
    }
    Ok(())
}

fn check_batch(count: u64, limits: &Limits) -> Result<(), Breach> {
    let max = limits.batch_keys_max;
    if count > u64::from(max) {
        return Err(Breach::Batch { count, max });
    }
    Ok(())
}

fn check_ring(len: u64) -> Result<(), Breach> {
    if len > u64::from(RING_BYTES_MAX) {
        return Err(Breach::Field {
            field: "ring",
            len,
            max: RING_BYTES_MAX,
        });
    }
    Ok(())
}

/// A DIGESTS range must fit the batch limit and end inside the bucket space.
fn check_digests_range(first_bucket: u16, count: u64, limits: &Limits) -> Result<(), Breach> {
    check_batch(count, limits)?;
    let max = DIGESTS_COUNT_MAX - u32::from(first_bucket);
    if count > u64::from(max) {
        return Err(Breach::Field {
            field: "digests count",
            len: count,
            max,
        });
    }
    Ok(())
}

/// A DIGESTS_REPLY holds at most one digest per bucket of the bucket space.
fn check_digests(count: u64, limits: &Limits) -> Result<(), Breach> {
    check_batch(count, limits)?;
    if count > u64::from(DIGESTS_COUNT_MAX) {
        return Err(Breach::Field {
            field: "digests count",
            len: count,
            max: DIGESTS_COUNT_MAX,
        });
    }
    Ok(())
}

fn check_membership_partitions(count: u64, _: &Limits) -> Result<(), Breach> {
    if count > u64::from(MEMBERSHIP_PARTITIONS_MAX) {
        return Err(Breach::Field {
            field: "membership partitions",
            len: count,
            max: MEMBERSHIP_PARTITIONS_MAX,
        });
    }
    Ok(())
}

fn check_membership_address(len: u64) -> Result<(), Breach> {
    check_membership_text("membership address", len, MEMBERSHIP_ADDRESS_BYTES_MAX)
}

fn check_membership_rack(len: u64) -> Result<(), Breach> {
    check_membership_text("membership rack", len, MEMBERSHIP_RACK_BYTES_MAX)
}

/// A text field of a MEMBERSHIP request (its length is one byte on the wire).
fn check_membership_text(field: &'static str, len: u64, max: usize) -> Result<(), Breach> {
    if len > max as u64 {
        return Err(Breach::Field {
            field,
            len,
            max: max as u32,
        });
    }
    Ok(())
}

fn check_status(status: u8) -> Result<(), Breach> {
    if status > WRITE_STATUS_REFUSED {
        return Err(Breach::Invalid {
            field: "replica write status",
            value: u64::from(status),
            max: u32::from(WRITE_STATUS_REFUSED),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Decoding.

#[derive(Clone, Copy)]
enum Direction {
    Request,
    Response,
}

fn check_opcode(opcode: Opcode, direction: Direction) -> Result<(), DecodeError> {
    let (expected, opposite, name) = match direction {
        Direction::Request => (
            is_peer_request(opcode),
            is_peer_response(opcode),
            "peer request",
        ),
        Direction::Response => (
            is_peer_response(opcode),
            is_peer_request(opcode),
            "peer response",
        ),
    };
    if expected {
        Ok(())
    } else if opposite {
        Err(DecodeError::WrongDirection {
            opcode: opcode.0,
            expected: name,
        })
    } else if opcode.kind() == OpcodeKind::PeerReserved {
        Err(DecodeError::ReservedOpcode {
            opcode: opcode.0,
            range: "peer",
        })
    } else {
        Err(DecodeError::UnknownOpcode { opcode: opcode.0 })
    }
}

impl Reader<'_> {
    fn kind(&mut self) -> Result<EntryKind, DecodeError> {
        let raw = self.u8("entry kind")?;
        EntryKind::from_u8(raw).ok_or(DecodeError::InvalidValue {
            field: "entry kind",
            value: u64::from(raw),
        })
    }

    fn ring(&mut self) -> Result<Bytes, DecodeError> {
        let len = u64::from(self.u32("ring length")?);
        check_ring(len).map_err(Breach::decode_error)?;
        self.take("ring", len)
    }

    /// Reads a count, checks it, and returns it with a safe initial
    /// capacity (no more entries than the remaining bytes could hold).
    fn checked_count(
        &mut self,
        field: &'static str,
        entry_len_min: u64,
        check: fn(u64, &Limits) -> Result<(), Breach>,
    ) -> Result<(u32, usize), DecodeError> {
        let count = self.u32(field)?;
        check(u64::from(count), self.limits).map_err(Breach::decode_error)?;
        let fits = self.body.len() as u64 / entry_len_min.max(1);
        // Bounded by count, a u32.
        Ok((count, u64::from(count).min(fits) as usize))
    }

    fn record(&mut self) -> Result<ReplicaRecord, DecodeError> {
        let partition = self.u32("partition")?;
        let kind = self.kind()?;
        let hlc = self.u64("hlc")?;
        let origin = self.u32("origin")?;
        let expires_at = self.u32("expires_at")?;
        let key = self.key()?;
        let value = self.value()?;
        Ok(ReplicaRecord {
            partition,
            kind,
            key,
            value,
            hlc,
            origin,
            expires_at,
        })
    }

    fn membership(&mut self) -> Result<Membership, DecodeError> {
        let raw = self.u8("membership command")?;
        let command = MembershipCommand::from_u8(raw).ok_or(DecodeError::InvalidValue {
            field: "membership command",
            value: u64::from(raw),
        })?;
        let forwarded = self.options(OPTION_BIT_0)? & OPTION_BIT_0 != 0;
        let node_id = self.u16("node_id")?;
        let plan = self.u64("plan")?;
        // A u8 length cannot pass the 255-byte limit.
        let address_len = u64::from(self.u8("address length")?);
        let address = self.take("address", address_len)?;
        let rack_len = u64::from(self.u8("rack length")?);
        let rack = self.take("rack", rack_len)?;
        let (count, capacity) =
            self.checked_count("partition count", 4, check_membership_partitions)?;
        let mut partitions = Vec::with_capacity(capacity);
        for _ in 0..count {
            partitions.push(self.u32("partition")?);
        }
        Ok(Membership {
            command,
            forwarded,
            node_id,
            plan,
            address,
            rack,
            partitions,
        })
    }

    fn summary(&mut self) -> Result<EntrySummary, DecodeError> {
        let kind = self.kind()?;
        let hlc = self.u64("hlc")?;
        let origin = self.u32("origin")?;
        let key = self.key()?;
        Ok(EntrySummary {
            key,
            hlc,
            origin,
            kind,
        })
    }
}

// ---------------------------------------------------------------------------
// Encoding: `body_len` checks every limit and sums the exact size, then
// `write_body` writes exactly that many bytes and cannot fail.

fn key_len(key: &[u8], limits: &Limits) -> Result<u64, EncodeError> {
    check_key(key.len() as u64, limits).map_err(Breach::encode_error)?;
    Ok(KEY_LEN_LEN + key.len() as u64)
}

fn ring_len(ring: &[u8]) -> Result<u64, EncodeError> {
    check_ring(ring.len() as u64).map_err(Breach::encode_error)?;
    Ok(4 + ring.len() as u64)
}

fn record_len(record: &ReplicaRecord, limits: &Limits) -> Result<u64, EncodeError> {
    check_key(record.key.len() as u64, limits).map_err(Breach::encode_error)?;
    check_value(record.value.len() as u64, limits).map_err(Breach::encode_error)?;
    Ok(RECORD_FIXED_LEN + record.key.len() as u64 + record.value.len() as u64)
}

fn put_key(buf: &mut BytesMut, key: &[u8]) {
    // body_len proved key.len() <= u16::MAX.
    buf.put_u16_le(key.len() as u16);
    buf.put_slice(key);
}

fn put_sized(buf: &mut BytesMut, bytes: &[u8]) {
    // body_len proved the length fits its limit, itself a u32.
    buf.put_u32_le(bytes.len() as u32);
    buf.put_slice(bytes);
}

fn put_count(buf: &mut BytesMut, count: usize) {
    // body_len proved count <= batch_keys_max, a u32.
    buf.put_u32_le(count as u32);
}

fn put_record(buf: &mut BytesMut, record: &ReplicaRecord) {
    buf.put_u32_le(record.partition);
    buf.put_u8(record.kind as u8);
    buf.put_u64_le(record.hlc);
    buf.put_u32_le(record.origin);
    buf.put_u32_le(record.expires_at);
    put_key(buf, &record.key);
    put_sized(buf, &record.value);
}

impl Encode for PeerRequest {
    fn opcode(&self) -> Opcode {
        PeerRequest::opcode(self)
    }

    fn body_len(&self, limits: &Limits) -> Result<u64, EncodeError> {
        Ok(match self {
            PeerRequest::ReplicaRead { key, .. } => 4 + key_len(key, limits)?,
            PeerRequest::ReplicaWrite { hint_for, records } => {
                check_batch(records.len() as u64, limits).map_err(Breach::encode_error)?;
                let mut len = 1 + if hint_for.is_some() { 2 } else { 0 } + COUNT_LEN;
                for record in records {
                    len += record_len(record, limits)?;
                }
                len
            }
            PeerRequest::Gossip { ring } => ring_len(ring)?,
            PeerRequest::Heartbeat { .. } => 2 + 8,
            PeerRequest::Digests {
                first_bucket,
                count,
                ..
            } => {
                check_digests_range(*first_bucket, u64::from(*count), limits)
                    .map_err(Breach::encode_error)?;
                4 + 2 + 4
            }
            PeerRequest::BucketEntries { .. } => 4 + 2,
            PeerRequest::Membership(membership) => {
                check_membership_address(membership.address.len() as u64)
                    .map_err(Breach::encode_error)?;
                check_membership_rack(membership.rack.len() as u64)
                    .map_err(Breach::encode_error)?;
                check_membership_partitions(membership.partitions.len() as u64, limits)
                    .map_err(Breach::encode_error)?;
                1 + 1
                    + 2
                    + 8
                    + 1
                    + membership.address.len() as u64
                    + 1
                    + membership.rack.len() as u64
                    + COUNT_LEN
                    + 4 * membership.partitions.len() as u64
            }
        })
    }

    fn write_body(&self, buf: &mut BytesMut) {
        match self {
            PeerRequest::ReplicaRead { partition, key } => {
                buf.put_u32_le(*partition);
                put_key(buf, key);
            }
            PeerRequest::ReplicaWrite { hint_for, records } => {
                match hint_for {
                    Some(node_id) => {
                        buf.put_u8(OPTION_BIT_0);
                        buf.put_u16_le(*node_id);
                    }
                    None => buf.put_u8(0),
                }
                put_count(buf, records.len());
                records.iter().for_each(|record| put_record(buf, record));
            }
            PeerRequest::Gossip { ring } => put_sized(buf, ring),
            PeerRequest::Heartbeat {
                node_id,
                ring_epoch,
            } => {
                buf.put_u16_le(*node_id);
                buf.put_u64_le(*ring_epoch);
            }
            PeerRequest::Digests {
                partition,
                first_bucket,
                count,
            } => {
                buf.put_u32_le(*partition);
                buf.put_u16_le(*first_bucket);
                buf.put_u32_le(*count);
            }
            PeerRequest::BucketEntries { partition, bucket } => {
                buf.put_u32_le(*partition);
                buf.put_u16_le(*bucket);
            }
            PeerRequest::Membership(membership) => {
                buf.put_u8(membership.command as u8);
                buf.put_u8(if membership.forwarded {
                    OPTION_BIT_0
                } else {
                    0
                });
                buf.put_u16_le(membership.node_id);
                buf.put_u64_le(membership.plan);
                // body_len proved the address fits 255 bytes.
                buf.put_u8(membership.address.len() as u8);
                buf.put_slice(&membership.address);
                // body_len proved the rack fits 255 bytes.
                buf.put_u8(membership.rack.len() as u8);
                buf.put_slice(&membership.rack);
                put_count(buf, membership.partitions.len());
                membership
                    .partitions
                    .iter()
                    .for_each(|partition| buf.put_u32_le(*partition));
            }
        }
    }
}

impl Encode for PeerResponse {
    fn opcode(&self) -> Opcode {
        PeerResponse::opcode(self)
    }

    fn body_len(&self, limits: &Limits) -> Result<u64, EncodeError> {
        Ok(match self {
            PeerResponse::ReplicaEntry(None) => 1,
            PeerResponse::ReplicaEntry(Some(record)) => 1 + record_len(record, limits)?,
            PeerResponse::ReplicaWritten { statuses } => {
                check_batch(statuses.len() as u64, limits).map_err(Breach::encode_error)?;
                for status in statuses {
                    check_status(*status).map_err(Breach::encode_error)?;
                }
                COUNT_LEN + statuses.len() as u64
            }
            PeerResponse::GossipReply { ring } | PeerResponse::MembershipReply { ring } => {
                ring_len(ring)?
            }
            PeerResponse::HeartbeatReply { .. } => 2 + 8,
            PeerResponse::DigestsReply { digests } => {
                check_digests(digests.len() as u64, limits).map_err(Breach::encode_error)?;
                COUNT_LEN + DIGEST_LEN * digests.len() as u64
            }
            PeerResponse::BucketEntriesReply { entries } => {
                check_batch(entries.len() as u64, limits).map_err(Breach::encode_error)?;
                let mut len = COUNT_LEN;
                for entry in entries {
                    len += SUMMARY_FIXED_LEN - KEY_LEN_LEN + key_len(&entry.key, limits)?;
                }
                len
            }
        })
    }

    fn write_body(&self, buf: &mut BytesMut) {
        match self {
            PeerResponse::ReplicaEntry(None) => buf.put_u8(0),
            PeerResponse::ReplicaEntry(Some(record)) => {
                buf.put_u8(1);
                put_record(buf, record);
            }
            PeerResponse::ReplicaWritten { statuses } => {
                put_count(buf, statuses.len());
                buf.put_slice(statuses);
            }
            PeerResponse::GossipReply { ring } | PeerResponse::MembershipReply { ring } => {
                put_sized(buf, ring)
            }
            PeerResponse::HeartbeatReply {
                node_id,
                ring_epoch,
            } => {
                buf.put_u16_le(*node_id);
                buf.put_u64_le(*ring_epoch);
            }
            PeerResponse::DigestsReply { digests } => {
                put_count(buf, digests.len());
                digests.iter().for_each(|digest| buf.put_u64_le(*digest));
            }
            PeerResponse::BucketEntriesReply { entries } => {
                put_count(buf, entries.len());
                for entry in entries {
                    buf.put_u8(entry.kind as u8);
                    buf.put_u64_le(entry.hlc);
                    buf.put_u32_le(entry.origin);
                    put_key(buf, &entry.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the layouts drawn above are the bytes written, and every limit
    //! and malformed field is refused with the named error. Method: golden
    //! bytes for one body per shape, then one hand-made breach per check.

    use super::*;
    use crate::{Decoder, ErrorCode};

    fn frame(opcode: Opcode, body: &[u8]) -> Frame {
        Frame {
            request_id: 1,
            opcode,
            flags: 0,
            body: Bytes::copy_from_slice(body),
        }
    }

    fn wire_request(request: &PeerRequest, limits: &Limits) -> Frame {
        let mut buf = BytesMut::new();
        request.encode(9, limits, &mut buf).expect("encode");
        let frame = Decoder::default()
            .decode(&mut buf)
            .expect("header")
            .expect("frame");
        assert!(buf.is_empty());
        frame
    }

    fn record(key: &'static [u8], value: &'static [u8]) -> ReplicaRecord {
        ReplicaRecord {
            partition: 0x0102_0304,
            kind: EntryKind::Put,
            key: Bytes::from_static(key),
            value: Bytes::from_static(value),
            hlc: 0x1112_1314_1516_1718,
            origin: 0x2122_2324,
            expires_at: 0x3132_3334,
        }
    }

    #[test]
    fn replica_write_body_is_the_drawn_layout() {
        let request = PeerRequest::ReplicaWrite {
            hint_for: Some(0x0A0B),
            records: vec![record(b"k", b"vv")],
        };
        let frame = wire_request(&request, &Limits::default());
        assert_eq!(frame.opcode, REPLICA_WRITE);
        assert_eq!(frame.request_id, 9);
        let expected: Vec<u8> = [
            &[0x01, 0x0B, 0x0A][..],                           // options, hint_for
            &[1, 0, 0, 0],                                     // count
            &[0x04, 0x03, 0x02, 0x01],                         // partition
            &[1],                                              // kind put
            &[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11], // hlc
            &[0x24, 0x23, 0x22, 0x21],                         // origin
            &[0x34, 0x33, 0x32, 0x31],                         // expires_at
            &[1, 0, b'k'],                                     // key
            &[2, 0, 0, 0, b'v', b'v'],                         // value
        ]
        .concat();
        assert_eq!(&frame.body[..], &expected[..]);
        assert_eq!(
            frame.body.len() as u64,
            3 + COUNT_LEN + RECORD_FIXED_LEN + 3
        );
        let decoded = PeerRequest::decode(&frame, &Limits::default()).expect("decode");
        assert_eq!(decoded, request);
    }

    #[test]
    fn fixed_bodies_are_the_drawn_layout() {
        let limits = Limits::default();
        let digests = PeerRequest::Digests {
            partition: 7,
            first_bucket: 0x0102,
            count: 3,
        };
        let body = wire_request(&digests, &limits).body;
        assert_eq!(&body[..], &[7, 0, 0, 0, 0x02, 0x01, 3, 0, 0, 0]);
        let heartbeat = PeerRequest::Heartbeat {
            node_id: 5,
            ring_epoch: 6,
        };
        let body = wire_request(&heartbeat, &limits).body;
        assert_eq!(&body[..], &[5, 0, 6, 0, 0, 0, 0, 0, 0, 0]);

        let mut buf = BytesMut::new();
        let summary = EntrySummary {
            key: Bytes::from_static(b"ab"),
            hlc: 1,
            origin: 2,
            kind: EntryKind::Tombstone,
        };
        PeerResponse::BucketEntriesReply {
            entries: vec![summary],
        }
        .encode(3, &limits, &mut buf)
        .expect("encode");
        let expected = [
            &[1, 0, 0, 0, 2][..],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            &[2, 0, 0, 0],
            &[2, 0, b'a', b'b'],
        ]
        .concat();
        assert_eq!(&buf[HEADER_LEN..], &expected[..]);
        assert_eq!(buf[crate::format::OPCODE_OFFSET], 0xA7);
    }

    #[test]
    fn membership_body_is_the_drawn_layout_and_round_trips() {
        let limits = Limits::default();
        let request = PeerRequest::Membership(Membership {
            command: MembershipCommand::HandoffReady,
            forwarded: true,
            node_id: 0x0102,
            plan: 0x0A0B_0C0D_0E0F_1011,
            address: Bytes::from_static(b"h:1"),
            rack: Bytes::from_static(b"r2"),
            partitions: vec![7, 0x0102_0304],
        });
        let wire = wire_request(&request, &limits);
        let expected: Vec<u8> = [
            &[4u8, 1][..],
            &[0x02, 0x01],
            &[0x11, 0x10, 0x0F, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A],
            &[3, b'h', b':', b'1'],
            &[2, b'r', b'2'],
            &[2, 0, 0, 0],
            &[7, 0, 0, 0, 0x04, 0x03, 0x02, 0x01],
        ]
        .concat();
        assert_eq!(&wire.body[..], &expected[..]);
        assert_eq!(
            PeerRequest::decode(&wire, &limits).expect("decode"),
            request
        );
        // A partition count past the limit is refused before any allocation.
        let mut body = expected[..19].to_vec();
        body.extend_from_slice(&(MEMBERSHIP_PARTITIONS_MAX + 1).to_le_bytes());
        assert!(matches!(
            PeerRequest::decode(&frame(MEMBERSHIP, &body), &limits),
            Err(DecodeError::FieldTooLarge { .. })
        ));
        // An unknown command is refused by name.
        let mut body = expected.clone();
        body[0] = 9;
        assert!(matches!(
            PeerRequest::decode(&frame(MEMBERSHIP, &body), &limits),
            Err(DecodeError::InvalidValue {
                field: "membership command",
                ..
            })
        ));
        let long = PeerRequest::Membership(Membership {
            command: MembershipCommand::Admit,
            forwarded: false,
            node_id: 1,
            plan: 0,
            address: Bytes::from(vec![b'a'; 256]),
            rack: Bytes::new(),
            partitions: Vec::new(),
        });
        assert!(long.encode(1, &limits, &mut BytesMut::new()).is_err());
        let long_rack = PeerRequest::Membership(Membership {
            command: MembershipCommand::Admit,
            forwarded: false,
            node_id: 1,
            plan: 0,
            address: Bytes::from_static(b"h:1"),
            rack: Bytes::from(vec![b'r'; 256]),
            partitions: Vec::new(),
        });
        assert!(long_rack.encode(1, &limits, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn opcodes_pair_and_are_recognised() {
        for raw in 0..=u8::MAX {
            let opcode = Opcode(raw);
            assert!(!(is_peer_request(opcode) && is_peer_response(opcode)));
            if is_peer_request(opcode) {
                assert!(is_peer_response(Opcode(raw + 0x80)), "{raw:#x}");
                assert_eq!(opcode.kind(), OpcodeKind::PeerReserved);
            }
        }
        assert!(is_peer_request(BUCKET_ENTRIES));
        assert!(!is_peer_request(Opcode::PEER_HINT_DELIVERY));
        assert!(!is_peer_request(Opcode::GET));
    }

    #[test]
    fn opcodes_outside_the_direction_are_refused() {
        let limits = Limits::default();
        let error = PeerRequest::decode(&frame(HEARTBEAT_REPLY, &[0; 10]), &limits);
        assert!(matches!(
            error,
            Err(DecodeError::WrongDirection { opcode: 0xA5, .. })
        ));
        let error = PeerResponse::decode(&frame(HEARTBEAT, &[0; 10]), &limits);
        assert!(matches!(
            error,
            Err(DecodeError::WrongDirection { opcode: 0x25, .. })
        ));
        let error = PeerRequest::decode(&frame(Opcode::PEER_HINT_DELIVERY, &[]), &limits);
        assert!(matches!(
            error,
            Err(DecodeError::ReservedOpcode { opcode: 0x22, .. })
        ));
        let error = PeerResponse::decode(&frame(Opcode::ERROR, &[]), &limits);
        assert!(matches!(
            error,
            Err(DecodeError::UnknownOpcode { opcode: 0xFF })
        ));
    }

    #[test]
    fn key_limit_is_enforced_on_both_sides() {
        let limits = Limits {
            key_bytes_max: 3,
            ..Limits::default()
        };
        let request = PeerRequest::ReplicaRead {
            partition: 1,
            key: Bytes::from_static(b"four"),
        };
        let mut buf = BytesMut::new();
        let error = request.encode(1, &limits, &mut buf).expect_err("key");
        assert_eq!(error, EncodeError::KeyTooLarge { len: 4, max: 3 });
        assert!(buf.is_empty(), "nothing written on error");
        let frame = wire_request(&request, &Limits::default());
        let error = PeerRequest::decode(&frame, &limits).expect_err("key");
        assert_eq!(error, DecodeError::KeyTooLarge { len: 4, max: 3 });
    }

    #[test]
    fn value_and_batch_limits_are_enforced_on_both_sides() {
        let request = PeerRequest::ReplicaWrite {
            hint_for: None,
            records: vec![record(b"a", b"12345"), record(b"b", b"")],
        };
        let frame = wire_request(&request, &Limits::default());
        let small_value = Limits {
            value_bytes_max: 4,
            ..Limits::default()
        };
        let small_batch = Limits {
            batch_keys_max: 1,
            ..Limits::default()
        };
        let mut buf = BytesMut::new();
        let error = request.encode(1, &small_value, &mut buf);
        assert_eq!(error, Err(EncodeError::ValueTooLarge { len: 5, max: 4 }));
        let error = PeerRequest::decode(&frame, &small_value);
        assert_eq!(error, Err(DecodeError::ValueTooLarge { len: 5, max: 4 }));
        let error = request.encode(1, &small_batch, &mut buf);
        assert_eq!(error, Err(EncodeError::BatchTooLarge { count: 2, max: 1 }));
        let error = PeerRequest::decode(&frame, &small_batch);
        assert_eq!(error, Err(DecodeError::BatchTooLarge { count: 2, max: 1 }));
        assert!(buf.is_empty());
    }

    #[test]
    fn ring_length_is_refused_before_any_slice() {
        let announced = RING_BYTES_MAX + 1;
        let error =
            PeerRequest::decode(&frame(GOSSIP, &announced.to_le_bytes()), &Limits::default());
        assert_eq!(
            error,
            Err(DecodeError::FieldTooLarge {
                field: "ring",
                len: u64::from(announced),
                max: RING_BYTES_MAX
            })
        );
        let error =
            PeerResponse::decode(&frame(GOSSIP_REPLY, &[5, 0, 0, 0, 1]), &Limits::default());
        assert!(matches!(
            error,
            Err(DecodeError::Truncated {
                field: "ring",
                needed: 5,
                remaining: 1
            })
        ));
        let ring = Bytes::from(vec![0u8; RING_BYTES_MAX as usize + 1]);
        let mut buf = BytesMut::new();
        let error = PeerRequest::Gossip { ring }.encode(1, &Limits::default(), &mut buf);
        assert_eq!(error.expect_err("ring").code(), ErrorCode::MalformedBody);
    }

    #[test]
    fn digests_range_stays_inside_the_bucket_space() {
        let limits = Limits {
            batch_keys_max: u32::MAX,
            ..Limits::default()
        };
        let whole = PeerRequest::Digests {
            partition: 0,
            first_bucket: 0,
            count: DIGESTS_COUNT_MAX,
        };
        assert_eq!(
            PeerRequest::decode(&wire_request(&whole, &limits), &limits),
            Ok(whole)
        );
        let past_end = PeerRequest::Digests {
            partition: 0,
            first_bucket: 1,
            count: DIGESTS_COUNT_MAX,
        };
        let mut buf = BytesMut::new();
        let error = past_end.encode(1, &limits, &mut buf);
        assert!(matches!(
            error,
            Err(EncodeError::FieldTooLarge { max: 65535, .. })
        ));
        let body = [&[0, 0, 0, 0, 1, 0][..], &DIGESTS_COUNT_MAX.to_le_bytes()].concat();
        let error = PeerRequest::decode(&frame(DIGESTS, &body), &limits);
        assert!(matches!(
            error,
            Err(DecodeError::FieldTooLarge { max: 65535, .. })
        ));
        let error = PeerRequest::decode(&frame(DIGESTS, &body), &Limits::default());
        assert!(matches!(
            error,
            Err(DecodeError::BatchTooLarge { max: 4096, .. })
        ));
        let reply = (DIGESTS_COUNT_MAX + 1).to_le_bytes();
        let error = PeerResponse::decode(&frame(DIGESTS_REPLY, &reply), &limits);
        assert!(matches!(error, Err(DecodeError::FieldTooLarge { .. })));
    }

    #[test]
    fn enumerations_and_options_refuse_unknown_values() {
        let limits = Limits::default();
        let written = PeerResponse::ReplicaWritten {
            statuses: vec![0, 1, 3],
        };
        let mut buf = BytesMut::new();
        assert!(written.encode(1, &limits, &mut buf).is_err());
        assert!(buf.is_empty());
        let error = PeerResponse::decode(&frame(REPLICA_WRITTEN, &[1, 0, 0, 0, 3]), &limits);
        assert_eq!(
            error,
            Err(DecodeError::InvalidValue {
                field: "replica write status",
                value: 3
            })
        );
        let error = PeerResponse::decode(&frame(REPLICA_ENTRY, &[2]), &limits);
        assert!(matches!(
            error,
            Err(DecodeError::InvalidValue {
                field: "present",
                ..
            })
        ));
        let mut body = vec![1];
        body.extend_from_slice(&[0; 4]);
        body.push(3); // kind
        body.extend_from_slice(&[0; 22]);
        let error = PeerResponse::decode(&frame(REPLICA_ENTRY, &body), &limits);
        assert!(matches!(
            error,
            Err(DecodeError::InvalidValue {
                field: "entry kind",
                value: 3
            })
        ));
        let error = PeerRequest::decode(&frame(REPLICA_WRITE, &[2, 0, 0, 0, 0]), &limits);
        assert!(matches!(
            error,
            Err(DecodeError::InvalidValue {
                field: "options",
                ..
            })
        ));
    }

    #[test]
    fn trailing_and_missing_bytes_are_refused() {
        let limits = Limits::default();
        let error = PeerRequest::decode(&frame(BUCKET_ENTRIES, &[0; 7]), &limits);
        assert_eq!(
            error,
            Err(DecodeError::TrailingBytes {
                opcode: 0x27,
                extra: 1
            })
        );
        let error = PeerRequest::decode(&frame(BUCKET_ENTRIES, &[0; 5]), &limits);
        assert!(matches!(
            error,
            Err(DecodeError::Truncated {
                field: "bucket",
                ..
            })
        ));
        // A huge count with no entries behind it allocates nothing big.
        let error = PeerResponse::decode(&frame(DIGESTS_REPLY, &[0, 16, 0, 0]), &limits);
        assert!(matches!(error, Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn decoded_keys_and_values_are_slices_of_the_frame() {
        let response = PeerResponse::ReplicaEntry(Some(record(b"key", b"value")));
        let mut buf = BytesMut::new();
        response
            .encode(4, &Limits::default(), &mut buf)
            .expect("encode");
        let range = buf.as_ptr_range();
        let frame = Decoder::default()
            .decode(&mut buf)
            .expect("ok")
            .expect("frame");
        let Ok(PeerResponse::ReplicaEntry(Some(decoded))) =
            PeerResponse::decode(&frame, &Limits::default())
        else {
            panic!("not an entry");
        };
        assert!(range.contains(&decoded.key.as_ptr()), "key was copied");
        assert!(range.contains(&decoded.value.as_ptr()), "value was copied");
        assert_eq!(PeerResponse::ReplicaEntry(Some(decoded)), response);
    }
}
