//! Reading and writing message bodies (layouts drawn in [`crate::format`]).
//!
//! Decoding reads from a `Bytes` body by splitting it, so every key and value
//! handed out is a slice of the received frame. Encoding is two passes: the
//! first (`body_len`) checks every limit and sums the exact size, so the
//! encoder reserves once and the second pass (`write_body`) cannot fail.
//!
//! Invariants:
//! - Every length is checked against its limit, then against the bytes that
//!   remain, before any slice or allocation (capacities are capped by what
//!   the remaining bytes could hold).
//! - `write_body` writes exactly `body_len` bytes.

use bytes::Bytes;

use crate::reader::Reader;

use crate::error::{DecodeError, ErrorCode};
use crate::format::{Limits, OPTION_BIT_0, OPTION_BIT_1, VERSION_LEN};
use crate::message::{Hello, Opcode, OpcodeKind, Request, Response, Role, Version, VersionedValue};

mod encode;

impl Reader<'_> {
    fn utf8(field: &'static str, bytes: &[u8]) -> Result<String, DecodeError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(DecodeError::InvalidUtf8 { field }),
        }
    }

    fn short_bytes(&mut self, field: &'static str, max: u32) -> Result<Bytes, DecodeError> {
        let len = self.u16(field)?;
        if u32::from(len) > max {
            return Err(DecodeError::FieldTooLarge {
                field,
                len: u64::from(len),
                max,
            });
        }
        self.take(field, u64::from(len))
    }

    fn name(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.short_bytes(field, self.limits.name_bytes_max)?;
        Self::utf8(field, &bytes)
    }

    fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u32(field)?;
        let bytes = self.take(field, u64::from(len))?;
        Self::utf8(field, &bytes)
    }

    fn version(&mut self) -> Result<Version, DecodeError> {
        let hlc = self.u64("version hlc")?;
        let origin = self.u32("version origin")?;
        Ok(Version { hlc, origin })
    }

    /// Reads a batch count and returns it with a safe initial capacity.
    fn count(&mut self, entry_len_min: usize) -> Result<(u32, usize), DecodeError> {
        let count = self.u32("batch count")?;
        if count > self.limits.batch_keys_max {
            return Err(DecodeError::BatchTooLarge {
                count: u64::from(count),
                max: self.limits.batch_keys_max,
            });
        }
        let capacity = (count as usize).min(self.body.len() / entry_len_min.max(1));
        Ok((count, capacity))
    }
}

fn check_opcode(opcode: Opcode, expected: OpcodeKind) -> Result<(), DecodeError> {
    match opcode.kind() {
        kind if kind == expected => Ok(()),
        OpcodeKind::PeerReserved => Err(DecodeError::ReservedOpcode {
            opcode: opcode.0,
            range: "peer",
        }),
        OpcodeKind::XdcReserved => Err(DecodeError::ReservedOpcode {
            opcode: opcode.0,
            range: "xdc",
        }),
        OpcodeKind::Request => Err(DecodeError::WrongDirection {
            opcode: opcode.0,
            expected: "response",
        }),
        OpcodeKind::Response => Err(DecodeError::WrongDirection {
            opcode: opcode.0,
            expected: "request",
        }),
        _ => Err(DecodeError::UnknownOpcode { opcode: opcode.0 }),
    }
}

fn optional<T>(
    options: u8,
    bit: u8,
    read: impl FnOnce() -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    if options & bit != 0 {
        read().map(Some)
    } else {
        Ok(None)
    }
}

impl Request {
    /// Decodes a request body. Keys and values are slices of `body`.
    pub fn decode(opcode: Opcode, body: Bytes, limits: &Limits) -> Result<Request, DecodeError> {
        check_opcode(opcode, OpcodeKind::Request)?;
        let mut reader = Reader { body, limits };
        let request = match opcode {
            Opcode::HELLO => Request::Hello(decode_hello(&mut reader)?),
            Opcode::PING => Request::Ping,
            Opcode::GET => {
                let options = reader.options(OPTION_BIT_0)?;
                let read_quorum = optional(options, OPTION_BIT_0, || reader.u8("read_quorum"))?;
                Request::Get {
                    key: reader.key()?,
                    read_quorum,
                }
            }
            Opcode::PUT => {
                let (ttl_seconds, write_quorum) = decode_write_options(&mut reader)?;
                let key = reader.key()?;
                let value = reader.value()?;
                Request::Put {
                    key,
                    value,
                    ttl_seconds,
                    write_quorum,
                }
            }
            Opcode::DELETE => {
                let options = reader.options(OPTION_BIT_0)?;
                let write_quorum = optional(options, OPTION_BIT_0, || reader.u8("write_quorum"))?;
                Request::Delete {
                    key: reader.key()?,
                    write_quorum,
                }
            }
            Opcode::MGET => {
                let (count, capacity) = reader.count(2)?;
                let mut keys = Vec::with_capacity(capacity);
                for _ in 0..count {
                    keys.push(reader.key()?);
                }
                Request::MultiGet { keys }
            }
            Opcode::MPUT => {
                let (ttl_seconds, write_quorum) = decode_write_options(&mut reader)?;
                let (count, capacity) = reader.count(2 + 4)?;
                let mut entries = Vec::with_capacity(capacity);
                for _ in 0..count {
                    let key = reader.key()?;
                    entries.push((key, reader.value()?));
                }
                Request::MultiPut {
                    entries,
                    ttl_seconds,
                    write_quorum,
                }
            }
            Opcode::BUILDINFO => Request::BuildInfo,
            Opcode::CLUSTERINFO => Request::ClusterInfo,
            Opcode::NODEHEALTH => Request::NodeHealth,
            Opcode::STATS => Request::Stats,
            Opcode::ADMIN => Request::Admin {
                command: reader.text("admin command")?,
            },
            _ => return Err(DecodeError::UnknownOpcode { opcode: opcode.0 }),
        };
        reader.finish(opcode)?;
        Ok(request)
    }
}

fn decode_hello(reader: &mut Reader<'_>) -> Result<Hello, DecodeError> {
    let protocol_version = reader.u8("protocol_version")?;
    let role_raw = reader.u8("role")?;
    let role = Role::from_u8(role_raw).ok_or(DecodeError::InvalidValue {
        field: "role",
        value: u64::from(role_raw),
    })?;
    let options = reader.options(OPTION_BIT_0)?;
    let cluster = reader.name("cluster name")?;
    let datacenter = reader.name("datacenter name")?;
    let credential_bytes_max = reader.limits.credential_bytes_max;
    let credentials = optional(options, OPTION_BIT_0, || {
        reader.short_bytes("credentials", credential_bytes_max)
    })?;
    Ok(Hello {
        protocol_version,
        role,
        cluster,
        datacenter,
        credentials,
    })
}

fn decode_write_options(reader: &mut Reader<'_>) -> Result<(Option<u32>, Option<u8>), DecodeError> {
    let options = reader.options(OPTION_BIT_0 | OPTION_BIT_1)?;
    let ttl_seconds = optional(options, OPTION_BIT_0, || reader.u32("ttl_seconds"))?;
    let write_quorum = optional(options, OPTION_BIT_1, || reader.u8("write_quorum"))?;
    Ok((ttl_seconds, write_quorum))
}

impl Response {
    /// Decodes a response body. Values are slices of `body`.
    pub fn decode(opcode: Opcode, body: Bytes, limits: &Limits) -> Result<Response, DecodeError> {
        check_opcode(opcode, OpcodeKind::Response)?;
        let mut reader = Reader { body, limits };
        let response = match opcode {
            Opcode::HELLO_OK => Response::HelloOk {
                protocol_version: reader.u8("protocol_version")?,
                node_id: reader.u32("node_id")?,
                cluster: reader.name("cluster name")?,
                datacenter: reader.name("datacenter name")?,
            },
            Opcode::PONG => Response::Pong,
            Opcode::VALUE => {
                let version = reader.version()?;
                Response::Value(VersionedValue {
                    version,
                    value: reader.value()?,
                })
            }
            Opcode::NOT_FOUND => Response::NotFound,
            Opcode::WRITTEN => Response::Written {
                version: reader.version()?,
            },
            Opcode::VALUES => {
                let (count, capacity) = reader.count(1)?;
                let mut entries = Vec::with_capacity(capacity);
                for _ in 0..count {
                    entries.push(decode_optional_value(&mut reader)?);
                }
                Response::Values { entries }
            }
            Opcode::WRITTEN_MANY => {
                let (count, capacity) = reader.count(VERSION_LEN)?;
                let mut versions = Vec::with_capacity(capacity);
                for _ in 0..count {
                    versions.push(reader.version()?);
                }
                Response::WrittenMany { versions }
            }
            Opcode::INFO => Response::Info {
                json: reader.text("info json")?,
            },
            Opcode::ERROR => Response::Error {
                code: ErrorCode::from_u16(reader.u16("error code")?),
                message: reader.text("error message")?,
            },
            _ => return Err(DecodeError::UnknownOpcode { opcode: opcode.0 }),
        };
        reader.finish(opcode)?;
        Ok(response)
    }
}

fn decode_optional_value(reader: &mut Reader<'_>) -> Result<Option<VersionedValue>, DecodeError> {
    match reader.u8("present")? {
        0 => Ok(None),
        1 => {
            let version = reader.version()?;
            Ok(Some(VersionedValue {
                version,
                value: reader.value()?,
            }))
        }
        other => Err(DecodeError::InvalidValue {
            field: "present",
            value: u64::from(other),
        }),
    }
}
