//! Writing message bodies: a checking pass (`body_len`) then a writing pass.
//!
//! Invariants:
//! - `body_len` checks every limit and every wire width (u16 key lengths,
//!   u32 value lengths) and returns the exact size.
//! - `write_body` writes exactly that many bytes and cannot fail.

use bytes::{BufMut, BytesMut};

use crate::codec::Encode;
use crate::error::EncodeError;
use crate::format::{Limits, OPTION_BIT_0, OPTION_BIT_1, VERSION_LEN};
use crate::message::{Opcode, Request, Response, Version};

fn key_len(key: &[u8], limits: &Limits) -> Result<u64, EncodeError> {
    let max = limits.key_bytes_max.min(u32::from(u16::MAX));
    if key.len() as u64 > u64::from(max) {
        return Err(EncodeError::KeyTooLarge {
            len: key.len() as u64,
            max,
        });
    }
    Ok(2 + key.len() as u64)
}

fn value_len(value: &[u8], limits: &Limits) -> Result<u64, EncodeError> {
    if value.len() as u64 > u64::from(limits.value_bytes_max) {
        return Err(EncodeError::ValueTooLarge {
            len: value.len() as u64,
            max: limits.value_bytes_max,
        });
    }
    Ok(4 + value.len() as u64)
}

fn short_len(field: &'static str, bytes: &[u8], max: u32) -> Result<u64, EncodeError> {
    let max = max.min(u32::from(u16::MAX));
    if bytes.len() as u64 > u64::from(max) {
        return Err(EncodeError::FieldTooLarge {
            field,
            len: bytes.len() as u64,
            max,
        });
    }
    Ok(2 + bytes.len() as u64)
}

fn batch_len(count: usize, limits: &Limits) -> Result<u64, EncodeError> {
    if count as u64 > u64::from(limits.batch_keys_max) {
        return Err(EncodeError::BatchTooLarge {
            count: count as u64,
            max: limits.batch_keys_max,
        });
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
                3 + short_len(
                    "cluster name",
                    hello.cluster.as_bytes(),
                    limits.name_bytes_max,
                )? + short_len(
                    "datacenter name",
                    hello.datacenter.as_bytes(),
                    limits.name_bytes_max,
                )? + credentials
            }
            Request::Get { key, read_quorum } => {
                1 + u64::from(read_quorum.is_some()) + key_len(key, limits)?
            }
            Request::Put {
                key,
                value,
                ttl_seconds,
                write_quorum,
            } => {
                write_options_len(*ttl_seconds, *write_quorum)
                    + key_len(key, limits)?
                    + value_len(value, limits)?
            }
            Request::Delete { key, write_quorum } => {
                1 + u64::from(write_quorum.is_some()) + key_len(key, limits)?
            }
            Request::MultiGet { keys } => {
                let mut len = batch_len(keys.len(), limits)?;
                for key in keys {
                    len += key_len(key, limits)?;
                }
                len
            }
            Request::MultiPut {
                entries,
                ttl_seconds,
                write_quorum,
            } => {
                let mut len = write_options_len(*ttl_seconds, *write_quorum)
                    + batch_len(entries.len(), limits)?;
                for (key, value) in entries {
                    len += key_len(key, limits)? + value_len(value, limits)?;
                }
                len
            }
            Request::Ping
            | Request::BuildInfo
            | Request::ClusterInfo
            | Request::NodeHealth
            | Request::Stats => 0,
            Request::Admin { command } => 4 + command.len() as u64,
        })
    }

    fn write_body(&self, buf: &mut BytesMut) {
        match self {
            Request::Hello(hello) => {
                buf.put_u8(hello.protocol_version);
                buf.put_u8(hello.role as u8);
                buf.put_u8(if hello.credentials.is_some() {
                    OPTION_BIT_0
                } else {
                    0
                });
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
            Request::Put {
                key,
                value,
                ttl_seconds,
                write_quorum,
            } => {
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
            Request::MultiPut {
                entries,
                ttl_seconds,
                write_quorum,
            } => {
                put_write_options(buf, *ttl_seconds, *write_quorum);
                buf.put_u32_le(entries.len() as u32);
                for (key, value) in entries {
                    put_key(buf, key);
                    put_value(buf, value);
                }
            }
            Request::Ping
            | Request::BuildInfo
            | Request::ClusterInfo
            | Request::NodeHealth
            | Request::Stats => {}
            Request::Admin { command } => put_text(buf, command),
        }
    }
}

impl Encode for Response {
    fn opcode(&self) -> Opcode {
        Response::opcode(self)
    }

    fn body_len(&self, limits: &Limits) -> Result<u64, EncodeError> {
        Ok(match self {
            Response::HelloOk {
                cluster,
                datacenter,
                ..
            } => {
                5 + short_len("cluster name", cluster.as_bytes(), limits.name_bytes_max)?
                    + short_len(
                        "datacenter name",
                        datacenter.as_bytes(),
                        limits.name_bytes_max,
                    )?
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
            Response::HelloOk {
                protocol_version,
                node_id,
                cluster,
                datacenter,
            } => {
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
                versions
                    .iter()
                    .for_each(|version| put_version(buf, version));
            }
            Response::Info { json } => put_text(buf, json),
            Response::Error { code, message } => {
                buf.put_u16_le(code.as_u16());
                put_text(buf, message);
            }
        }
    }
}
