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

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::Encode;
use crate::error::{DecodeError, EncodeError, ErrorCode};
use crate::format::{Limits, OPTION_BIT_0, OPTION_BIT_1, VERSION_LEN};
use crate::message::{Hello, Opcode, OpcodeKind, Request, Response, Role, Version, VersionedValue};

/// A cursor over a body that checks before it slices.
struct Reader<'a> {
    body: Bytes,
    limits: &'a Limits,
}

impl<'a> Reader<'a> {
    fn need(&self, field: &'static str, needed: u64) -> Result<(), DecodeError> {
        if needed > self.body.len() as u64 {
            return Err(DecodeError::Truncated {
                field,
                needed,
                remaining: self.body.len(),
            });
        }
        Ok(())
    }

    fn take(&mut self, field: &'static str, len: u64) -> Result<Bytes, DecodeError> {
        self.need(field, len)?;
        // `need` proved len <= body.len(), so the cast and split are in range.
        Ok(self.body.split_to(len as usize))
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        self.need(field, N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.body[..N]);
        bytes::Buf::advance(&mut self.body, N);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    fn options(&mut self, known: u8) -> Result<u8, DecodeError> {
        let options = self.u8("options")?;
        if options & !known != 0 {
            return Err(DecodeError::InvalidValue {
                field: "options",
                value: u64::from(options),
            });
        }
        Ok(options)
    }

    fn key(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16("key length")?;
        if u32::from(len) > self.limits.key_bytes_max {
            return Err(DecodeError::KeyTooLarge {
                len: u64::from(len),
                max: self.limits.key_bytes_max,
            });
        }
        self.take("key", u64::from(len))
    }

    fn value(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32("value length")?;
        if len > self.limits.value_bytes_max {
            return Err(DecodeError::ValueTooLarge {
                len: u64::from(len),
                max: self.limits.value_bytes_max,
            });
        }
        self.take("value", u64::from(len))
    }

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

    fn finish(self, opcode: Opcode) -> Result<(), DecodeError> {
        if !self.body.is_empty() {
            return Err(DecodeError::TrailingBytes {
                opcode: opcode.0,
                extra: self.body.len(),
            });
        }
        Ok(())
    }
}

fn check_opcode(opcode: Opcode, expected: OpcodeKind) -> Result<(), DecodeError> {
    match opcode.kind() {
        kind if kind == expected => Ok(()),
        OpcodeKind::PeerReserved => Err(DecodeError::ReservedOpcode { opcode: opcode.0, range: "peer" }),
        OpcodeKind::XdcReserved => Err(DecodeError::ReservedOpcode { opcode: opcode.0, range: "xdc" }),
        OpcodeKind::Request => Err(DecodeError::WrongDirection { opcode: opcode.0, expected: "response" }),
        OpcodeKind::Response => Err(DecodeError::WrongDirection { opcode: opcode.0, expected: "request" }),
        _ => Err(DecodeError::UnknownOpcode { opcode: opcode.0 }),
    }
}

fn optional<T>(options: u8, bit: u8, read: impl FnOnce() -> Result<T, DecodeError>) -> Result<Option<T>, DecodeError> {
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
                Request::Get { key: reader.key()?, read_quorum }
            }
            Opcode::PUT => {
                let (ttl_seconds, write_quorum) = decode_write_options(&mut reader)?;
                let key = reader.key()?;
                let value = reader.value()?;
                Request::Put { key, value, ttl_seconds, write_quorum }
            }
            Opcode::DELETE => {
                let options = reader.options(OPTION_BIT_0)?;
                let write_quorum = optional(options, OPTION_BIT_0, || reader.u8("write_quorum"))?;
                Request::Delete { key: reader.key()?, write_quorum }
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
                Request::MultiPut { entries, ttl_seconds, write_quorum }
            }
            Opcode::BUILDINFO => Request::BuildInfo,
            Opcode::CLUSTERINFO => Request::ClusterInfo,
            Opcode::NODEHEALTH => Request::NodeHealth,
            Opcode::STATS => Request::Stats,
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
    let credentials = optional(options, OPTION_BIT_0, || reader.short_bytes("credentials", credential_bytes_max))?;
    Ok(Hello { protocol_version, role, cluster, datacenter, credentials })
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
                Response::Value(VersionedValue { version, value: reader.value()? })
            }
            Opcode::NOT_FOUND => Response::NotFound,
            Opcode::WRITTEN => Response::Written { version: reader.version()? },
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
            Opcode::INFO => Response::Info { json: reader.text("info json")? },
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
            Ok(Some(VersionedValue { version, value: reader.value()? }))
        }
        other => Err(DecodeError::InvalidValue { field: "present", value: u64::from(other) }),
    }
}

// ---- encoding ----

fn key_len(key: &[u8], limits: &Limits) -> Result<u64, EncodeError> {
    let max = limits.key_bytes_max.min(u32::from(u16::MAX));
    if key.len() as u64 > u64::from(max) {
        return Err(EncodeError::KeyTooLarge { len: key.len() as u64, max });
    }
    Ok(2 + key.len() as u64)
}

fn value_len(value: &[u8], limits: &Limits) -> Result<u64, EncodeError> {
    if value.len() as u64 > u64::from(limits.value_bytes_max) {
        return Err(EncodeError::ValueTooLarge { len: value.len() as u64, max: limits.value_bytes_max });
    }
    Ok(4 + value.len() as u64)
}

fn short_len(field: &'static str, bytes: &[u8], max: u32) -> Result<u64, EncodeError> {
    let max = max.min(u32::from(u16::MAX));
    if bytes.len() as u64 > u64::from(max) {
        return Err(EncodeError::FieldTooLarge { field, len: bytes.len() as u64, max });
    }
    Ok(2 + bytes.len() as u64)
}

fn batch_len(count: usize, limits: &Limits) -> Result<u64, EncodeError> {
    if count as u64 > u64::from(limits.batch_keys_max) {
        return Err(EncodeError::BatchTooLarge { count: count as u64, max: limits.batch_keys_max });
    }
    Ok(4)
}

fn write_options_len(ttl_seconds: Option<u32>, write_quorum: Option<u8>) -> u64 {
    1 + if ttl_seconds.is_some() { 4 } else { 0 } + u64::from(write_quorum.is_some())
}

fn put_write_options(buf: &mut BytesMut, ttl_seconds: Option<u32>, write_quorum: Option<u8>) {
    let mut options = 0;
    if ttl_seconds.is_some() {
        options |= OPTION_BIT_0;
    }
    if write_quorum.is_some() {
        options |= OPTION_BIT_1;
    }
    buf.put_u8(options);
    if let Some(ttl) = ttl_seconds {
        buf.put_u32_le(ttl);
    }
    if let Some(quorum) = write_quorum {
        buf.put_u8(quorum);
    }
}

fn put_optional_u8(buf: &mut BytesMut, value: Option<u8>) {
    match value {
        Some(value) => {
            buf.put_u8(OPTION_BIT_0);
            buf.put_u8(value);
        }
        None => buf.put_u8(0),
    }
}

fn put_key(buf: &mut BytesMut, key: &[u8]) {
    // body_len proved key.len() <= u16::MAX.
    buf.put_u16_le(key.len() as u16);
    buf.put_slice(key);
}

fn put_value(buf: &mut BytesMut, value: &[u8]) {
    // body_len proved value.len() <= value_bytes_max <= u32::MAX.
    buf.put_u32_le(value.len() as u32);
    buf.put_slice(value);
}

fn put_short(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u16_le(bytes.len() as u16);
    buf.put_slice(bytes);
}

fn put_text(buf: &mut BytesMut, text: &str) {
    // body_len proved the whole body fits in frame_bytes_max <= u32::MAX.
    buf.put_u32_le(text.len() as u32);
    buf.put_slice(text.as_bytes());
}

fn put_version(buf: &mut BytesMut, version: &Version) {
    buf.put_u64_le(version.hlc);
    buf.put_u32_le(version.origin);
}

impl Encode for Request {
    fn opcode(&self) -> Opcode {
        Request::opcode(self)
    }

    fn body_len(&self, limits: &Limits) -> Result<u64, EncodeError> {
        Ok(match self {
            Request::Hello(hello) => {
                let credentials = match &hello.credentials {
                    Some(bytes) => short_len("credentials", bytes, limits.credential_bytes_max)?,
                    None => 0,
                };
                3 + short_len("cluster name", hello.cluster.as_bytes(), limits.name_bytes_max)?
                    + short_len("datacenter name", hello.datacenter.as_bytes(), limits.name_bytes_max)?
                    + credentials
            }
            Request::Get { key, read_quorum } => 1 + u64::from(read_quorum.is_some()) + key_len(key, limits)?,
            Request::Put { key, value, ttl_seconds, write_quorum } => {
                write_options_len(*ttl_seconds, *write_quorum) + key_len(key, limits)? + value_len(value, limits)?
            }
            Request::Delete { key, write_quorum } => 1 + u64::from(write_quorum.is_some()) + key_len(key, limits)?,
            Request::MultiGet { keys } => {
                let mut len = batch_len(keys.len(), limits)?;
                for key in keys {
                    len += key_len(key, limits)?;
                }
                len
            }
            Request::MultiPut { entries, ttl_seconds, write_quorum } => {
                let mut len = write_options_len(*ttl_seconds, *write_quorum) + batch_len(entries.len(), limits)?;
                for (key, value) in entries {
                    len += key_len(key, limits)? + value_len(value, limits)?;
                }
                len
            }
            Request::Ping | Request::BuildInfo | Request::ClusterInfo | Request::NodeHealth | Request::Stats => 0,
        })
    }

    fn write_body(&self, buf: &mut BytesMut) {
        match self {
            Request::Hello(hello) => {
                buf.put_u8(hello.protocol_version);
                buf.put_u8(hello.role as u8);
                buf.put_u8(if hello.credentials.is_some() { OPTION_BIT_0 } else { 0 });
                put_short(buf, hello.cluster.as_bytes());
                put_short(buf, hello.datacenter.as_bytes());
                if let Some(credentials) = &hello.credentials {
                    put_short(buf, credentials);
                }
            }
            Request::Get { key, read_quorum } => {
                put_optional_u8(buf, *read_quorum);
                put_key(buf, key);
            }
            Request::Put { key, value, ttl_seconds, write_quorum } => {
                put_write_options(buf, *ttl_seconds, *write_quorum);
                put_key(buf, key);
                put_value(buf, value);
            }
            Request::Delete { key, write_quorum } => {
                put_optional_u8(buf, *write_quorum);
                put_key(buf, key);
            }
            Request::MultiGet { keys } => {
                buf.put_u32_le(keys.len() as u32);
                keys.iter().for_each(|key| put_key(buf, key));
            }
            Request::MultiPut { entries, ttl_seconds, write_quorum } => {
                put_write_options(buf, *ttl_seconds, *write_quorum);
                buf.put_u32_le(entries.len() as u32);
                for (key, value) in entries {
                    put_key(buf, key);
                    put_value(buf, value);
                }
            }
            Request::Ping | Request::BuildInfo | Request::ClusterInfo | Request::NodeHealth | Request::Stats => {}
        }
    }
}

impl Encode for Response {
    fn opcode(&self) -> Opcode {
        Response::opcode(self)
    }

    fn body_len(&self, limits: &Limits) -> Result<u64, EncodeError> {
        Ok(match self {
            Response::HelloOk { cluster, datacenter, .. } => {
                5 + short_len("cluster name", cluster.as_bytes(), limits.name_bytes_max)?
                    + short_len("datacenter name", datacenter.as_bytes(), limits.name_bytes_max)?
            }
            Response::Pong | Response::NotFound => 0,
            Response::Value(entry) => VERSION_LEN as u64 + value_len(&entry.value, limits)?,
            Response::Written { .. } => VERSION_LEN as u64,
            Response::Values { entries } => {
                let mut len = batch_len(entries.len(), limits)?;
                for entry in entries {
                    len += 1 + match entry {
                        Some(entry) => VERSION_LEN as u64 + value_len(&entry.value, limits)?,
                        None => 0,
                    };
                }
                len
            }
            Response::WrittenMany { versions } => {
                batch_len(versions.len(), limits)? + (VERSION_LEN * versions.len()) as u64
            }
            Response::Info { json } => 4 + json.len() as u64,
            Response::Error { message, .. } => 2 + 4 + message.len() as u64,
        })
    }

    fn write_body(&self, buf: &mut BytesMut) {
        match self {
            Response::HelloOk { protocol_version, node_id, cluster, datacenter } => {
                buf.put_u8(*protocol_version);
                buf.put_u32_le(*node_id);
                put_short(buf, cluster.as_bytes());
                put_short(buf, datacenter.as_bytes());
            }
            Response::Pong | Response::NotFound => {}
            Response::Value(entry) => {
                put_version(buf, &entry.version);
                put_value(buf, &entry.value);
            }
            Response::Written { version } => put_version(buf, version),
            Response::Values { entries } => {
                buf.put_u32_le(entries.len() as u32);
                for entry in entries {
                    match entry {
                        Some(entry) => {
                            buf.put_u8(1);
                            put_version(buf, &entry.version);
                            put_value(buf, &entry.value);
                        }
                        None => buf.put_u8(0),
                    }
                }
            }
            Response::WrittenMany { versions } => {
                buf.put_u32_le(versions.len() as u32);
                versions.iter().for_each(|version| put_version(buf, version));
            }
            Response::Info { json } => put_text(buf, json),
            Response::Error { code, message } => {
                buf.put_u16_le(code.as_u16());
                put_text(buf, message);
            }
        }
    }
}
