//! Sans-IO frame codec: bytes in, frames out; messages in, bytes out.
//!
//! The codec owns no socket and no runtime. A reader appends whatever bytes
//! arrived to a `BytesMut` and calls [`Decoder::decode`] until it returns
//! `Ok(None)`; a writer calls [`Encoder::encode`] into its output buffer.
//! The same code serves the glommio server, the blocking client, the tokio
//! client and the fuzz target.
//!
//! Trade-off: a frame's body is handed out whole, as a `Bytes` split off the
//! read buffer, instead of being parsed as it streams in. That costs holding
//! one frame (bounded by `frame_bytes_max`) in memory, and buys zero-copy
//! keys and values and a decoder that cannot be left half-way through a
//! message.
//!
//! Invariants:
//! - The header is judged (magic, version, opcode, flags, reserved, length
//!   against `frame_bytes_max`) before any byte of the body is awaited,
//!   reserved or sliced; a too-large frame is refused from its header alone.
//! - `decode` never panics and consumes bytes only when it returns a frame.
//! - After an error the stream is out of step: the caller answers with an
//!   ERROR frame and closes the connection.
//! - `encode` reserves the exact frame size once and writes nothing on error.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::format::{Header, Limits, FLAGS_KNOWN, HEADER_LEN, MAGIC, PROTOCOL_VERSION};
use crate::message::{Opcode, OpcodeKind, Request, Response};

/// A message that can be written as a frame body.
pub trait Encode {
    /// The opcode of the frame.
    fn opcode(&self) -> Opcode;
    /// Checks the limits and returns the exact body size.
    fn body_len(&self, limits: &Limits) -> Result<u64, EncodeError>;
    /// Writes exactly `body_len` bytes. Called only after `body_len` succeeded.
    fn write_body(&self, buf: &mut bytes::BytesMut);
}

/// One complete frame: a judged header and its raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Id chosen by the requester; a response echoes it.
    pub request_id: u32,
    /// The message kind.
    pub opcode: Opcode,
    /// Flag bits (zero in version 1).
    pub flags: u16,
    /// The body, a slice of the read buffer.
    pub body: Bytes,
}

impl Frame {
    /// Decodes the body as a request.
    pub fn request(&self, limits: &Limits) -> Result<Request, DecodeError> {
        Request::decode(self.opcode, self.body.clone(), limits)
    }

    /// Decodes the body as a request, handing the body over instead of
    /// sharing it (one reference-count round trip less per request).
    pub fn into_request(self, limits: &Limits) -> Result<Request, DecodeError> {
        Request::decode(self.opcode, self.body, limits)
    }

    /// Decodes the body as a response.
    pub fn response(&self, limits: &Limits) -> Result<Response, DecodeError> {
        Response::decode(self.opcode, self.body.clone(), limits)
    }

    /// Size of the frame on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }
}

/// Judges a header: magic, version, opcode, flags, reserved and length.
pub fn check_header(bytes: &[u8; HEADER_LEN], limits: &Limits) -> Result<Header, DecodeError> {
    let (magic, header, reserved) = Header::read_raw(bytes);
    if magic != MAGIC {
        return Err(DecodeError::BadMagic {
            found: magic,
            expected: MAGIC,
        });
    }
    if header.version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: header.version,
            supported: PROTOCOL_VERSION,
        });
    }
    if Opcode(header.opcode).kind() == OpcodeKind::Unassigned {
        return Err(DecodeError::UnknownOpcode {
            opcode: header.opcode,
        });
    }
    if header.flags & !FLAGS_KNOWN != 0 {
        return Err(DecodeError::UnknownFlags {
            flags: header.flags,
        });
    }
    if reserved != 0 {
        return Err(DecodeError::ReservedNotZero { reserved });
    }
    let frame_len = HEADER_LEN as u64 + u64::from(header.body_len);
    if frame_len > u64::from(limits.frame_bytes_max) {
        return Err(DecodeError::FrameTooLarge {
            frame_len,
            frame_bytes_max: limits.frame_bytes_max,
        });
    }
    Ok(header)
}

/// Splits complete frames off a read buffer.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    limits: Limits,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Returns the next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// When the header is complete but the body is not, reserves room for the
    /// rest of the frame (its length already checked against the limit).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(header_bytes) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut header_array = [0u8; HEADER_LEN];
        header_array.copy_from_slice(header_bytes);
        let header = check_header(&header_array, &self.limits)?;
        // check_header bounded body_len by frame_bytes_max (a u32), so this
        // sum fits a usize on every platform with at least 32-bit pointers.
        let frame_len = HEADER_LEN + header.body_len as usize;
        if buf.len() < frame_len {
            buf.reserve(frame_len - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(frame_len);
        frame.advance(HEADER_LEN);
        assert_eq!(frame.len(), header.body_len as usize);
        Ok(Some(Frame {
            request_id: header.request_id,
            opcode: Opcode(header.opcode),
            flags: header.flags,
            body: frame.freeze(),
        }))
    }
}

/// Writes messages as frames.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    limits: Limits,
}

impl Encoder {
    /// An encoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Appends `message` as one frame to `buf`; returns the frame's length.
    ///
    /// Allocates nothing but the growth of `buf` (reserved once, exactly).
    pub fn encode<M: Encode + ?Sized>(
        &self,
        request_id: u32,
        message: &M,
        buf: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let body_len = message.body_len(&self.limits)?;
        let frame_len = self.check_frame_len(body_len)?;
        let start = buf.len();
        buf.reserve(frame_len);
        self.put_header(request_id, message.opcode(), body_len, buf);
        message.write_body(buf);
        assert_eq!(
            buf.len() - start,
            frame_len,
            "body_len and write_body disagree"
        );
        Ok(frame_len)
    }

    /// Appends a frame with an already-encoded body (for opcodes whose body
    /// this crate does not model yet, such as the reserved peer range).
    pub fn encode_raw(
        &self,
        request_id: u32,
        opcode: Opcode,
        body: &[u8],
        buf: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let frame_len = self.check_frame_len(body.len() as u64)?;
        buf.reserve(frame_len);
        self.put_header(request_id, opcode, body.len() as u64, buf);
        buf.extend_from_slice(body);
        Ok(frame_len)
    }

    fn check_frame_len(&self, body_len: u64) -> Result<usize, EncodeError> {
        let frame_len = HEADER_LEN as u64 + body_len;
        if frame_len > u64::from(self.limits.frame_bytes_max) {
            return Err(EncodeError::FrameTooLarge {
                frame_len,
                frame_bytes_max: self.limits.frame_bytes_max,
            });
        }
        // Bounded by frame_bytes_max, a u32.
        Ok(frame_len as usize)
    }

    fn put_header(&self, request_id: u32, opcode: Opcode, body_len: u64, buf: &mut BytesMut) {
        let header = Header {
            version: PROTOCOL_VERSION,
            opcode: opcode.0,
            request_id,
            flags: 0,
            // check_frame_len bounded it by a u32.
            body_len: body_len as u32,
        };
        buf.extend_from_slice(&header.to_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Version, VersionedValue};

    fn get(key: &'static [u8]) -> Request {
        Request::Get {
            key: Bytes::from_static(key),
            read_quorum: None,
        }
    }

    #[test]
    fn frames_split_across_reads_decode_once_complete() {
        let encoder = Encoder::default();
        let mut wire = BytesMut::new();
        encoder
            .encode(7, &get(b"alpha"), &mut wire)
            .expect("encode");
        encoder
            .encode(8, &Request::Ping, &mut wire)
            .expect("encode");
        let mut decoder = Decoder::default();
        let mut input = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire.iter() {
            input.extend_from_slice(&[*byte]);
            while let Some(frame) = decoder.decode(&mut input).expect("valid") {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].request_id, 7);
        assert_eq!(
            frames[0].request(decoder.limits()).expect("get"),
            get(b"alpha")
        );
        assert_eq!(
            frames[1].request(decoder.limits()).expect("ping"),
            Request::Ping
        );
        assert!(input.is_empty());
    }

    #[test]
    fn too_large_frame_is_refused_from_its_header() {
        let limits = Limits {
            frame_bytes_max: 1024,
            ..Limits::default()
        };
        let header = Header {
            version: 1,
            opcode: Opcode::PUT.0,
            request_id: 1,
            flags: 0,
            body_len: 5000,
        };
        let mut input = BytesMut::from(&header.to_bytes()[..]);
        let error = Decoder::new(limits)
            .decode(&mut input)
            .expect_err("too large");
        assert_eq!(error.code(), crate::ErrorCode::FrameTooLarge);
        assert!(
            input.capacity() < 5000,
            "must not reserve for a refused frame"
        );
    }

    #[test]
    fn decoded_value_is_a_slice_of_the_input() {
        let value = Bytes::from(vec![9u8; 100]);
        let response = Response::Value(VersionedValue {
            version: Version { hlc: 5, origin: 6 },
            value,
        });
        let mut wire = BytesMut::new();
        Encoder::default()
            .encode(1, &response, &mut wire)
            .expect("encode");
        let range = wire.as_ptr_range();
        let frame = Decoder::default()
            .decode(&mut wire)
            .expect("ok")
            .expect("frame");
        let Response::Value(entry) = frame.response(&Limits::default()).expect("value") else {
            panic!("not a value");
        };
        assert!(range.contains(&entry.value.as_ptr()), "value was copied");
    }

    #[test]
    fn encode_reserves_exactly_once_and_fails_cleanly() {
        let response = Response::Value(VersionedValue {
            version: Version { hlc: 1, origin: 2 },
            value: Bytes::from(vec![1u8; 100]),
        });
        let mut buf = BytesMut::new();
        let len = Encoder::default()
            .encode(3, &response, &mut buf)
            .expect("encode");
        assert_eq!(len, HEADER_LEN + 12 + 4 + 100);
        assert_eq!(buf.capacity(), len, "one exact reservation");

        let limits = Limits {
            key_bytes_max: 4,
            ..Limits::default()
        };
        let mut out = BytesMut::new();
        let error = Encoder::new(limits)
            .encode(1, &get(b"too long"), &mut out)
            .expect_err("limit");
        assert!(matches!(error, EncodeError::KeyTooLarge { len: 8, max: 4 }));
        assert!(out.is_empty());
    }
}
