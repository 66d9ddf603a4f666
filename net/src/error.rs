//! Error codes on the wire and the codec's errors.
//!
//! [`ErrorCode`] is the number an ERROR frame carries; it is part of the
//! protocol, so a code's number never changes and a retired number is never
//! reused. [`DecodeError`] and [`EncodeError`] are this crate's Rust errors;
//! every [`DecodeError`] names the [`ErrorCode`] a server answers it with.
//!
//! Invariants:
//! - `ErrorCode::from_u16(code.as_u16()) == code` for every known code.
//! - A decode error's text names the field and the numbers that were wrong.

use thiserror::Error;

/// The numeric code carried by an ERROR frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame's length passes `frame_bytes_max`.
    FrameTooLarge = 1,
    /// The frame does not start with the magic bytes.
    BadMagic = 2,
    /// The frame's protocol version is not spoken here.
    UnsupportedVersion = 3,
    /// The opcode is unknown, reserved, or not valid in this direction.
    UnknownOpcode = 4,
    /// Undefined flag bits or a non-zero reserved field.
    MalformedHeader = 5,
    /// The body does not decode.
    MalformedBody = 6,
    /// A key passes `key_bytes_max`.
    KeyTooLarge = 7,
    /// A value passes `value_bytes_max`.
    ValueTooLarge = 8,
    /// A batch holds more than `batch_keys_max` keys.
    BatchTooLarge = 9,
    /// The connection's first frame was not HELLO.
    NotHelloFirst = 10,
    /// The credentials were refused.
    AuthFailed = 11,
    /// The cluster name (or ring size, or secret) does not match.
    ClusterMismatch = 12,
    /// The server sheds load; retry later.
    Overloaded = 13,
    /// The request did not complete in time (for example, no quorum).
    Timeout = 14,
    /// The storage engine failed.
    StorageError = 15,
    /// The server is stopping.
    ShuttingDown = 16,
    /// A bug or an unexpected state in the server.
    Internal = 17,
    /// Too few replicas were reachable to meet the requested quorum.
    QuorumUnavailable = 18,
    /// A code this library does not know (sent by a newer peer).
    Unrecognized = 0xFFFF,
}

impl ErrorCode {
    /// Every known code, in number order (without `Unrecognized`).
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::FrameTooLarge,
        ErrorCode::BadMagic,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownOpcode,
        ErrorCode::MalformedHeader,
        ErrorCode::MalformedBody,
        ErrorCode::KeyTooLarge,
        ErrorCode::ValueTooLarge,
        ErrorCode::BatchTooLarge,
        ErrorCode::NotHelloFirst,
        ErrorCode::AuthFailed,
        ErrorCode::ClusterMismatch,
        ErrorCode::Overloaded,
        ErrorCode::Timeout,
        ErrorCode::StorageError,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::QuorumUnavailable,
    ];

    /// The number on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a number; unknown numbers become `Unrecognized`.
    pub fn from_u16(raw: u16) -> ErrorCode {
        let index = usize::from(raw).wrapping_sub(1);
        match Self::ALL.get(index) {
            Some(code) => *code,
            None => ErrorCode::Unrecognized,
        }
    }

    /// Whether a client may retry the same request later with hope.
    /// True for errors after which the server closes the connection: the
    /// stream can no longer be trusted (or the peer was refused).
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::FrameTooLarge
                | ErrorCode::BadMagic
                | ErrorCode::UnsupportedVersion
                | ErrorCode::UnknownOpcode
                | ErrorCode::MalformedHeader
                | ErrorCode::MalformedBody
                | ErrorCode::NotHelloFirst
                | ErrorCode::AuthFailed
                | ErrorCode::ClusterMismatch
        )
    }

    /// True for failures worth retrying later (load, timeouts, shutdown).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Overloaded
                | ErrorCode::Timeout
                | ErrorCode::ShuttingDown
                | ErrorCode::QuorumUnavailable
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}({})", self.as_u16())
    }
}

/// Why bytes did not decode into a frame or a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The header announces a frame longer than the limit.
    #[error("frame of {frame_len} bytes passes frame_bytes_max {frame_bytes_max}")]
    FrameTooLarge {
        /// Header plus announced body length.
        frame_len: u64,
        /// The limit in force.
        frame_bytes_max: u32,
    },
    /// The first two bytes are not the magic.
    #[error("bad magic 0x{found:04x}, expected 0x{expected:04x} (\"MR\")")]
    BadMagic {
        /// What was read.
        found: u16,
        /// The magic.
        expected: u16,
    },
    /// The version byte is not ours.
    #[error("unsupported protocol version {found}, this side speaks {supported}")]
    UnsupportedVersion {
        /// What was read.
        found: u8,
        /// The version spoken here.
        supported: u8,
    },
    /// The opcode is not assigned.
    #[error("unknown opcode 0x{opcode:02x}")]
    UnknownOpcode {
        /// What was read.
        opcode: u8,
    },
    /// The opcode lies in a reserved range that this version does not implement.
    #[error("opcode 0x{opcode:02x} is reserved for {range} operations, not implemented in protocol version 1")]
    ReservedOpcode {
        /// What was read.
        opcode: u8,
        /// `"peer"` or `"xdc"`.
        range: &'static str,
    },
    /// A request opcode where a response was expected, or the reverse.
    #[error("opcode 0x{opcode:02x} is not a {expected}")]
    WrongDirection {
        /// What was read.
        opcode: u8,
        /// `"request"` or `"response"`.
        expected: &'static str,
    },
    /// Undefined flag bits are set.
    #[error("undefined flag bits 0x{flags:04x} are set")]
    UnknownFlags {
        /// The flags field.
        flags: u16,
    },
    /// The reserved header field is not zero.
    #[error("reserved header field is 0x{reserved:04x}, must be zero")]
    ReservedNotZero {
        /// The reserved field.
        reserved: u16,
    },
    /// The body ended before a field did.
    #[error("body ends inside {field}: needs {needed} bytes, {remaining} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the body.
        remaining: usize,
    },
    /// Bytes remain after the last field.
    #[error("{extra} unexpected bytes after the body of opcode 0x{opcode:02x}")]
    TrailingBytes {
        /// The message's opcode.
        opcode: u8,
        /// How many bytes were left.
        extra: usize,
    },
    /// A key passes the limit.
    #[error("key of {len} bytes passes key_bytes_max {max}")]
    KeyTooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A value passes the limit.
    #[error("value of {len} bytes passes value_bytes_max {max}")]
    ValueTooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A batch count passes the limit.
    #[error("batch of {count} entries passes batch_keys_max {max}")]
    BatchTooLarge {
        /// The announced count.
        count: u64,
        /// The limit.
        max: u32,
    },
    /// Another length-limited field passes its limit.
    #[error("{field} of {len} bytes passes its limit {max}")]
    FieldTooLarge {
        /// The field.
        field: &'static str,
        /// The announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A text field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A field holds a value outside its enumeration.
    #[error("{field} has invalid value {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What was read.
        value: u64,
    },
}

impl DecodeError {
    /// The code a server answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::BadMagic { .. } => ErrorCode::BadMagic,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownOpcode { .. }
            | DecodeError::ReservedOpcode { .. }
            | DecodeError::WrongDirection { .. } => ErrorCode::UnknownOpcode,
            DecodeError::UnknownFlags { .. } | DecodeError::ReservedNotZero { .. } => {
                ErrorCode::MalformedHeader
            }
            DecodeError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
            DecodeError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            DecodeError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
            DecodeError::Truncated { .. }
            | DecodeError::TrailingBytes { .. }
            | DecodeError::FieldTooLarge { .. }
            | DecodeError::InvalidUtf8 { .. }
            | DecodeError::InvalidValue { .. } => ErrorCode::MalformedBody,
        }
    }
}

/// Why a message could not be encoded (it would break a limit).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would pass `frame_bytes_max`.
    #[error("frame of {frame_len} bytes would pass frame_bytes_max {frame_bytes_max}")]
    FrameTooLarge {
        /// Header plus body length.
        frame_len: u64,
        /// The limit.
        frame_bytes_max: u32,
    },
    /// A key passes `key_bytes_max`.
    #[error("key of {len} bytes passes key_bytes_max {max}")]
    KeyTooLarge {
        /// The key's length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A value passes `value_bytes_max`.
    #[error("value of {len} bytes passes value_bytes_max {max}")]
    ValueTooLarge {
        /// The value's length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A batch passes `batch_keys_max`.
    #[error("batch of {count} entries passes batch_keys_max {max}")]
    BatchTooLarge {
        /// The batch size.
        count: u64,
        /// The limit.
        max: u32,
    },
    /// A name or credentials pass `name_bytes_max`.
    #[error("{field} of {len} bytes passes its limit {max}")]
    FieldTooLarge {
        /// The field.
        field: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: u32,
    },
}

impl EncodeError {
    /// The code a peer would have answered the same frame with.
    pub fn code(&self) -> ErrorCode {
        match self {
            EncodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            EncodeError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
            EncodeError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            EncodeError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
            EncodeError::FieldTooLarge { .. } => ErrorCode::MalformedBody,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_numbers_are_unrecognized() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), code);
        }
        assert_eq!(ErrorCode::from_u16(0), ErrorCode::Unrecognized);
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Unrecognized);
        assert_eq!(ErrorCode::ALL.len(), ErrorCode::QuorumUnavailable as usize);
    }

    #[test]
    fn decode_error_text_names_the_numbers() {
        let error = DecodeError::KeyTooLarge {
            len: 70000,
            max: 65535,
        };
        assert_eq!(error.code(), ErrorCode::KeyTooLarge);
        assert!(error.to_string().contains("70000"));
        assert!(error.to_string().contains("key_bytes_max"));
    }
}
