//! The two wire protocols the load generator speaks: Meridian's frames
//! (through the net crate's `Encoder` and `Decoder`) and a minimal RESP2
//! (GET, SET, PING) so the same loader drives redis-server.
//!
//! Requests are written from borrowed keys and values straight into the
//! connection's output buffer: no allocation per request. For Meridian this
//! is done with small `Encode` views of GET and PUT; a test checks that
//! they produce exactly the bytes of the net crate's own `Request`s.
//!
//! Invariants:
//! - A parser consumes bytes only when it returns a whole reply; partial
//!   input is left in the buffer for the next read.
//! - Every length read from the wire is checked against `REPLY_BYTES_MAX`
//!   before anything is sliced.

use bytes::{Buf, BufMut, BytesMut};
use meridian_net::format::Limits;
use meridian_net::{Decoder, Encode, EncodeError, Encoder, Opcode, Request};

/// Largest reply the loader accepts (a value plus its framing).
pub const REPLY_BYTES_MAX: usize = 64 << 20;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Meridian's binary frames.
    Meridian,
    /// Redis serialization protocol, version 2.
    Resp,
}

/// The request kinds the loader sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Read one key.
    Get,
    /// Write one key.
    Put,
    /// Round trip only.
    Ping,
}

/// What a reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success (a value, a write, a pong).
    Ok,
    /// A read found no value.
    Miss,
    /// The server answered with an error.
    Error,
}

/// One parsed reply. `request_id` is 0 for RESP (replies come in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The id of the request answered (Meridian), 0 for RESP.
    pub request_id: u32,
    /// What it said.
    pub outcome: Outcome,
}

/// A stream the loader cannot follow any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A GET body from a borrowed key: `options u8 (0) | key_len u16 | key`.
struct GetView<'a> {
    key: &'a [u8],
}

impl Encode for GetView<'_> {
    fn opcode(&self) -> Opcode {
        Opcode::GET
    }
    fn body_len(&self, limits: &Limits) -> Result<u64, EncodeError> {
        check_key(self.key, limits)?;
        Ok(1 + 2 + self.key.len() as u64)
    }
    fn write_body(&self, buf: &mut BytesMut) {
        buf.put_u8(0);
        put_key(self.key, buf);
    }
}

/// A PUT body from borrowed bytes: `options u8 (0) | key | value_len u32 | value`.
struct PutView<'a> {
    key: &'a [u8],
    value: &'a [u8],
}

impl Encode for PutView<'_> {
    fn opcode(&self) -> Opcode {
        Opcode::PUT
    }
    fn body_len(&self, limits: &Limits) -> Result<u64, EncodeError> {
        check_key(self.key, limits)?;
        if self.value.len() as u64 > u64::from(limits.value_bytes_max) {
            return Err(EncodeError::ValueTooLarge {
                len: self.value.len() as u64,
                max: limits.value_bytes_max,
            });
        }
        Ok(1 + 2 + self.key.len() as u64 + 4 + self.value.len() as u64)
    }
    fn write_body(&self, buf: &mut BytesMut) {
        buf.put_u8(0);
        put_key(self.key, buf);
        buf.put_u32_le(self.value.len() as u32);
        buf.extend_from_slice(self.value);
    }
}

fn check_key(key: &[u8], limits: &Limits) -> Result<(), EncodeError> {
    if key.len() as u64 > u64::from(limits.key_bytes_max) {
        return Err(EncodeError::KeyTooLarge {
            len: key.len() as u64,
            max: limits.key_bytes_max,
        });
    }
    Ok(())
}

fn put_key(key: &[u8], buf: &mut BytesMut) {
    buf.put_u16_le(key.len() as u16);
    buf.extend_from_slice(key);
}

/// One connection's protocol state: the codec and the next request id.
#[derive(Debug)]
pub struct Wire {
    protocol: Protocol,
    encoder: Encoder,
    decoder: Decoder,
    next_request_id: u32,
}

impl Wire {
    /// A fresh connection's state.
    pub fn new(protocol: Protocol) -> Wire {
        Wire {
            protocol,
            encoder: Encoder::default(),
            decoder: Decoder::default(),
            next_request_id: 1,
        }
    }

    /// The protocol spoken.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Appends the handshake (Meridian's HELLO; nothing for RESP) and
    /// returns how many replies it expects.
    pub fn handshake(&mut self, cluster: &str, out: &mut BytesMut) -> Result<usize, ProtocolError> {
        match self.protocol {
            Protocol::Resp => Ok(0),
            Protocol::Meridian => {
                let hello = Request::Hello(meridian_net::Hello {
                    protocol_version: meridian_net::PROTOCOL_VERSION,
                    role: meridian_net::Role::Client,
                    cluster: cluster.to_owned(),
                    datacenter: "bench".to_owned(),
                    credentials: None,
                });
                let id = self.take_request_id();
                self.encoder
                    .encode(id, &hello, out)
                    .map_err(|e| ProtocolError(format!("HELLO: {e}")))?;
                Ok(1)
            }
        }
    }

    /// Appends one request; returns its id (0 for RESP).
    pub fn encode(
        &mut self,
        kind: OpKind,
        key: &[u8],
        value: &[u8],
        out: &mut BytesMut,
    ) -> Result<u32, ProtocolError> {
        match self.protocol {
            Protocol::Resp => {
                match kind {
                    OpKind::Get => resp_command(&[b"GET", key], out),
                    OpKind::Put => resp_command(&[b"SET", key, value], out),
                    OpKind::Ping => resp_command(&[b"PING"], out),
                }
                Ok(0)
            }
            Protocol::Meridian => {
                let id = self.take_request_id();
                let result = match kind {
                    OpKind::Get => self.encoder.encode(id, &GetView { key }, out),
                    OpKind::Put => self.encoder.encode(id, &PutView { key, value }, out),
                    OpKind::Ping => self.encoder.encode(id, &Request::Ping, out),
                };
                result.map_err(|e| ProtocolError(format!("encode: {e}")))?;
                Ok(id)
            }
        }
    }

    /// The next complete reply in `input`, `Ok(None)` if more bytes are needed.
    pub fn parse(&mut self, input: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        match self.protocol {
            Protocol::Resp => parse_resp(input),
            Protocol::Meridian => {
                let Some(frame) = self
                    .decoder
                    .decode(input)
                    .map_err(|e| ProtocolError(format!("decode: {e}")))?
                else {
                    return Ok(None);
                };
                let outcome = match frame.opcode {
                    Opcode::VALUE | Opcode::WRITTEN | Opcode::PONG | Opcode::HELLO_OK => {
                        Outcome::Ok
                    }
                    Opcode::NOT_FOUND => Outcome::Miss,
                    _ => Outcome::Error,
                };
                Ok(Some(Reply {
                    request_id: frame.request_id,
                    outcome,
                }))
            }
        }
    }

    fn take_request_id(&mut self) -> u32 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        id
    }
}

/// Appends a RESP array of bulk strings.
fn resp_command(parts: &[&[u8]], out: &mut BytesMut) {
    let mut digits = itoa_buffer();
    out.put_u8(b'*');
    out.extend_from_slice(format_usize(parts.len(), &mut digits));
    out.extend_from_slice(b"\r\n");
    for part in parts {
        out.put_u8(b'$');
        out.extend_from_slice(format_usize(part.len(), &mut digits));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
}

fn itoa_buffer() -> [u8; 20] {
    [0u8; 20]
}

fn format_usize(mut value: usize, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[at..];
        }
    }
}

/// Parses one RESP2 reply: `+`, `-`, `:`, `$` (bulk or nil). Arrays are
/// not sent by GET/SET/PING and are refused.
fn parse_resp(input: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
    let Some(line_end) = find_crlf(input) else {
        if input.len() > REPLY_BYTES_MAX {
            return Err(ProtocolError("RESP line without CRLF".into()));
        }
        return Ok(None);
    };
    let outcome = match input[0] {
        b'+' | b':' => Outcome::Ok,
        b'-' => Outcome::Error,
        b'$' => {
            let length = parse_signed(&input[1..line_end])?;
            if length < 0 {
                input.advance(line_end + 2);
                return Ok(Some(Reply {
                    request_id: 0,
                    outcome: Outcome::Miss,
                }));
            }
            let length = length as usize;
            if length > REPLY_BYTES_MAX {
                return Err(ProtocolError(format!("RESP bulk of {length} bytes")));
            }
            let total = line_end + 2 + length + 2;
            if input.len() < total {
                input.reserve(total - input.len());
                return Ok(None);
            }
            if &input[total - 2..total] != b"\r\n" {
                return Err(ProtocolError("RESP bulk not followed by CRLF".into()));
            }
            input.advance(total);
            return Ok(Some(Reply {
                request_id: 0,
                outcome: Outcome::Ok,
            }));
        }
        other => {
            return Err(ProtocolError(format!(
                "unexpected RESP type byte {:?}",
                other as char
            )))
        }
    };
    input.advance(line_end + 2);
    Ok(Some(Reply {
        request_id: 0,
        outcome,
    }))
}

fn find_crlf(input: &[u8]) -> Option<usize> {
    input.windows(2).position(|pair| pair == b"\r\n")
}

fn parse_signed(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| {
            ProtocolError(format!(
                "bad RESP length {:?}",
                String::from_utf8_lossy(text)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn meridian_views_match_the_net_crate_requests() {
        let encoder = Encoder::default();
        let (key, value) = (b"k000000000000042".as_slice(), [7u8; 100]);
        let mut ours = BytesMut::new();
        let mut theirs = BytesMut::new();
        encoder.encode(5, &GetView { key }, &mut ours).expect("get");
        let get = Request::Get {
            key: Bytes::copy_from_slice(key),
            read_quorum: None,
        };
        encoder.encode(5, &get, &mut theirs).expect("get");
        let put_view = PutView { key, value: &value };
        encoder.encode(6, &put_view, &mut ours).expect("put");
        let put = Request::Put {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(&value),
            ttl_seconds: None,
            write_quorum: None,
        };
        encoder.encode(6, &put, &mut theirs).expect("put");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn resp_replies_parse_only_when_complete() {
        let mut wire = Wire::new(Protocol::Resp);
        let mut input = BytesMut::from(&b"+OK\r\n$3\r\nab"[..]);
        let first = wire.parse(&mut input).expect("ok").expect("reply");
        assert_eq!(first.outcome, Outcome::Ok);
        assert_eq!(wire.parse(&mut input).expect("partial"), None);
        input.extend_from_slice(b"c\r\n$-1\r\n-ERR x\r\n");
        let outcomes: Vec<_> = std::iter::from_fn(|| wire.parse(&mut input).expect("valid"))
            .map(|r| r.outcome)
            .collect();
        assert_eq!(outcomes, [Outcome::Ok, Outcome::Miss, Outcome::Error]);
        assert!(input.is_empty());
        let mut bad = BytesMut::from(&b"*1\r\n"[..]);
        assert!(wire.parse(&mut bad).is_err());
    }

    #[test]
    fn resp_commands_are_arrays_of_bulk_strings() {
        let mut wire = Wire::new(Protocol::Resp);
        let mut out = BytesMut::new();
        wire.encode(OpKind::Put, b"key", b"value", &mut out)
            .expect("set");
        wire.encode(OpKind::Ping, b"", b"", &mut out).expect("ping");
        assert_eq!(
            &out[..],
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*1\r\n$4\r\nPING\r\n"
        );
    }
}
