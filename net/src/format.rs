//! The bytes on the wire: frame header, body layouts and limits, in one place.
//!
//! Every frame — client, peer or XDC — is a fixed 16-byte header followed by
//! `body_len` bytes of body. All integers are little-endian and fixed width.
//!
//! ```text
//!  0       2       3       4               8       10      12              16
//!  +-------+-------+-------+---------------+-------+-------+---------------+------------
//!  | magic |version|opcode |  request_id   | flags |reservd|   body_len    | body ...
//!  |  u16  |  u8   |  u8   |      u32      |  u16  |  u16  |      u32      | body_len B
//!  +-------+-------+-------+---------------+-------+-------+---------------+------------
//! ```
//!
//! - `magic` is the two bytes `"MR"` ([`MAGIC`]).
//! - `version` is [`PROTOCOL_VERSION`]; a frame of any other version is refused.
//! - `opcode` names the message (see [`crate::message::Opcode`] for the ranges).
//! - `request_id` is chosen by the requester; the response carries the same id.
//!   Responses may come back out of order.
//! - `flags`: no flag is defined in version 1; every bit must be zero.
//! - `reserved` must be zero.
//! - `body_len` counts the body only. `HEADER_LEN + body_len` must not pass
//!   [`Limits::frame_bytes_max`].
//!
//! Body layouts (version 1). `key` is `key_len u16 | key bytes`; `value` is
//! `value_len u32 | value bytes`; `text` is `len u32 | UTF-8`; `name` is
//! `len u16 | UTF-8`; `version` is `hlc u64 | origin u32`. An `options` byte
//! says which optional fields follow it, in bit order; unknown bits are
//! refused.
//!
//! ```text
//! HELLO       protocol_version u8 | role u8 | options u8 (bit0 credentials)
//!             | cluster name | datacenter name | [credentials: len u16 | bytes]
//! GET         options u8 (bit0 read_quorum) | [read_quorum u8] | key
//! PUT         options u8 (bit0 ttl, bit1 write_quorum) | [ttl_seconds u32]
//!             | [write_quorum u8] | key | value
//! DELETE      options u8 (bit0 write_quorum) | [write_quorum u8] | key
//! MGET        count u32 | count × key
//! MPUT        options u8 (as PUT) | [ttl_seconds u32] | [write_quorum u8]
//!             | count u32 | count × (key | value)
//! PING, BUILDINFO, CLUSTERINFO, NODEHEALTH, STATS   (empty)
//!
//! HELLO_OK    protocol_version u8 | node_id u32 | cluster name | datacenter name
//! PONG        (empty)
//! VALUE       version | value
//! NOT_FOUND   (empty)
//! WRITTEN     version
//! VALUES      count u32 | count × (present u8 | [version | value])
//! WRITTEN_MANY count u32 | count × version
//! INFO        text (JSON, filled by the server)
//! ERROR       code u16 | text (message)
//! ```
//!
//! Invariants:
//! - The header is exactly [`HEADER_LEN`] bytes; offsets below are derived
//!   from each other and checked at compile time.
//! - A decoder checks every length against its limit and against the bytes
//!   that remain before it slices or allocates.

/// The two bytes `"MR"` read as a little-endian u16.
pub const MAGIC: u16 = u16::from_le_bytes(*b"MR");
/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Offset of `magic u16`.
pub const MAGIC_OFFSET: usize = 0;
/// Offset of `version u8`.
pub const VERSION_OFFSET: usize = MAGIC_OFFSET + 2;
/// Offset of `opcode u8`.
pub const OPCODE_OFFSET: usize = VERSION_OFFSET + 1;
/// Offset of `request_id u32`.
pub const REQUEST_ID_OFFSET: usize = OPCODE_OFFSET + 1;
/// Offset of `flags u16`.
pub const FLAGS_OFFSET: usize = REQUEST_ID_OFFSET + 4;
/// Offset of `reserved u16`.
pub const RESERVED_OFFSET: usize = FLAGS_OFFSET + 2;
/// Offset of `body_len u32`.
pub const BODY_LEN_OFFSET: usize = RESERVED_OFFSET + 2;
/// Length of the frame header; the body starts here.
pub const HEADER_LEN: usize = BODY_LEN_OFFSET + 4;

const _: () = assert!(HEADER_LEN == 16);
const _: () = assert!(MAGIC_OFFSET == 0 && BODY_LEN_OFFSET == 12);

/// Flag bits defined in protocol version 1 (none).
pub const FLAGS_KNOWN: u16 = 0;

/// Bit of an `options` byte: the first optional field is present.
pub const OPTION_BIT_0: u8 = 1 << 0;
/// Bit of an `options` byte: the second optional field is present.
pub const OPTION_BIT_1: u8 = 1 << 1;

/// Encoded size of a version: `hlc u64 | origin u32`.
pub const VERSION_LEN: usize = 8 + 4;

/// Default for [`Limits::frame_bytes_max`]: 32 MiB.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 32 * 1024 * 1024;
/// Default for [`Limits::key_bytes_max`]: 64 KiB - 1, the most a u16 length holds.
pub const KEY_BYTES_MAX_DEFAULT: u32 = u16::MAX as u32;
/// Default for [`Limits::value_bytes_max`]: 16 MiB.
pub const VALUE_BYTES_MAX_DEFAULT: u32 = 16 * 1024 * 1024;
/// Default for [`Limits::batch_keys_max`].
pub const BATCH_KEYS_MAX_DEFAULT: u32 = 4096;
/// Default for [`Limits::name_bytes_max`].
pub const NAME_BYTES_MAX_DEFAULT: u32 = 255;
/// Default for [`Limits::credential_bytes_max`].
pub const CREDENTIAL_BYTES_MAX_DEFAULT: u32 = 4096;

const _: () = assert!(VALUE_BYTES_MAX_DEFAULT < FRAME_BYTES_MAX_DEFAULT);

/// Limits a codec enforces on both encode and decode.
///
/// Each limit may be set lower than its default; the wire widths set the
/// ceilings (`key_bytes_max` ≤ 65535 because a key length is a u16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, header included.
    pub frame_bytes_max: u32,
    /// Largest key.
    pub key_bytes_max: u32,
    /// Largest value.
    pub value_bytes_max: u32,
    /// Most keys in one MGET or MPUT, and most entries in their responses.
    pub batch_keys_max: u32,
    /// Largest cluster or datacenter name.
    pub name_bytes_max: u32,
    /// Largest credentials in a HELLO.
    pub credential_bytes_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            key_bytes_max: KEY_BYTES_MAX_DEFAULT,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            batch_keys_max: BATCH_KEYS_MAX_DEFAULT,
            name_bytes_max: NAME_BYTES_MAX_DEFAULT,
            credential_bytes_max: CREDENTIAL_BYTES_MAX_DEFAULT,
        }
    }
}

impl Limits {
    /// Largest body a frame may carry under these limits.
    pub fn body_bytes_max(&self) -> u32 {
        self.frame_bytes_max.saturating_sub(HEADER_LEN as u32)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version byte.
    pub version: u8,
    /// Raw opcode byte.
    pub opcode: u8,
    /// Id chosen by the requester, echoed by the response.
    pub request_id: u32,
    /// Flag bits (none defined in version 1).
    pub flags: u16,
    /// Length of the body that follows.
    pub body_len: u32,
}

impl Header {
    /// Writes the header as its 16 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC.to_le_bytes());
        out[VERSION_OFFSET] = self.version;
        out[OPCODE_OFFSET] = self.opcode;
        out[REQUEST_ID_OFFSET..FLAGS_OFFSET].copy_from_slice(&self.request_id.to_le_bytes());
        out[FLAGS_OFFSET..RESERVED_OFFSET].copy_from_slice(&self.flags.to_le_bytes());
        out[RESERVED_OFFSET..BODY_LEN_OFFSET].copy_from_slice(&0u16.to_le_bytes());
        out[BODY_LEN_OFFSET..HEADER_LEN].copy_from_slice(&self.body_len.to_le_bytes());
        out
    }

    /// Reads the raw fields of a header without judging them.
    ///
    /// Returns `(magic, header, reserved)`.
    pub fn read_raw(bytes: &[u8; HEADER_LEN]) -> (u16, Header, u16) {
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let header = Header {
            version: bytes[VERSION_OFFSET],
            opcode: bytes[OPCODE_OFFSET],
            request_id: u32_at(REQUEST_ID_OFFSET),
            flags: u16_at(FLAGS_OFFSET),
            body_len: u32_at(BODY_LEN_OFFSET),
        };
        (u16_at(MAGIC_OFFSET), header, u16_at(RESERVED_OFFSET))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_at_named_offsets() {
        let header = Header {
            version: PROTOCOL_VERSION,
            opcode: 0x03,
            request_id: 0x0403_0201,
            flags: 0,
            body_len: 0x0C0B_0A09,
        };
        let bytes = header.to_bytes();
        assert_eq!(&bytes[..2], b"MR");
        assert_eq!(bytes[REQUEST_ID_OFFSET], 0x01);
        assert_eq!(bytes[BODY_LEN_OFFSET], 0x09);
        let (magic, parsed, reserved) = Header::read_raw(&bytes);
        assert_eq!(magic, MAGIC);
        assert_eq!(reserved, 0);
        assert_eq!(parsed, header);
    }

    #[test]
    fn default_limits_match_the_design() {
        let limits = Limits::default();
        assert_eq!(limits.frame_bytes_max, 32 << 20);
        assert_eq!(limits.key_bytes_max, 65535);
        assert_eq!(limits.value_bytes_max, 16 << 20);
        assert_eq!(limits.body_bytes_max(), (32 << 20) - 16);
    }
}
