//! XDC messages: the frames two datacenters exchange on a link.
//!
//! The bodies are drawn by the `xdc` crate (BATCH and ACK in
//! `meridian_xdc::format`, introductions and proofs in
//! `meridian_xdc::handshake`); this module names the opcodes, bounds the
//! bodies and carries them as opaque bytes, so the wire layer knows nothing
//! of replication and the replication core nothing of sockets.
//!
//! ```text
//! 0x40 XDC_BATCH      BATCH body                  -> 0xC0 XDC_BATCH_ACK  ACK body
//! 0x41 XDC_OPEN       introduction                -> 0xC1 XDC_CHALLENGE  proof [32] | introduction
//! 0x43 XDC_PROVE      proof [32]                  -> 0xC3 XDC_PROVEN     (empty)
//! 0x42 XDC_DIGESTS    bucket range                -> 0xC2 XDC_DIGESTS_REPLY   digests
//! 0x44 XDC_ENTRIES    bucket                      -> 0xC4 XDC_ENTRIES_REPLY   (key, version) list
//! 0x45 XDC_FETCH      keys                        -> 0xC5 XDC_FETCHED         BATCH body
//! ```
//!
//! The last three serve fullsync (`meridian_xdc::fullsync` draws them).
//!
//! A link starts with HELLO (role `xdc`), then OPEN / CHALLENGE / PROVE /
//! PROVEN (see `meridian_xdc::handshake`); a server answers BATCH only on a
//! connection that completed that exchange. Failures are ordinary ERROR
//! frames (0xFF).
//!
//! Invariants: every response opcode is its request's + 0x80, inside the
//! XDC ranges (checked at compile time); an XDC body is bounded by the
//! frame limit, which the [`crate::Encoder`] and [`crate::Decoder`] check.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::Encode;
use crate::{EncodeError, Encoder, Limits, Opcode};

/// Request: a batch of records.
pub const XDC_BATCH: Opcode = Opcode(0x40);
/// Request: the opener's introduction.
pub const XDC_OPEN: Opcode = Opcode(0x41);
/// Request: the opener's proof of the secret.
pub const XDC_PROVE: Opcode = Opcode(0x43);
/// Request: bucket digests (fullsync).
pub const XDC_DIGESTS: Opcode = Opcode(0x42);
/// Request: one bucket's (key, version) list (fullsync).
pub const XDC_ENTRIES: Opcode = Opcode(0x44);
/// Request: the records of some keys (fullsync).
pub const XDC_FETCH: Opcode = Opcode(0x45);
/// Response to [`XDC_DIGESTS`].
pub const XDC_DIGESTS_REPLY: Opcode = Opcode(0xC2);
/// Response to [`XDC_ENTRIES`].
pub const XDC_ENTRIES_REPLY: Opcode = Opcode(0xC4);
/// Response to [`XDC_FETCH`].
pub const XDC_FETCHED: Opcode = Opcode(0xC5);
/// Response to [`XDC_BATCH`].
pub const XDC_BATCH_ACK: Opcode = Opcode(0xC0);
/// Response to [`XDC_OPEN`]: the answerer's proof and introduction.
pub const XDC_CHALLENGE: Opcode = Opcode(0xC1);
/// Response to [`XDC_PROVE`]: the link is open.
pub const XDC_PROVEN: Opcode = Opcode(0xC3);

const REQUESTS: [Opcode; 6] = [
    XDC_BATCH,
    XDC_OPEN,
    XDC_PROVE,
    XDC_DIGESTS,
    XDC_ENTRIES,
    XDC_FETCH,
];
const RESPONSES: [Opcode; 6] = [
    XDC_BATCH_ACK,
    XDC_CHALLENGE,
    XDC_PROVEN,
    XDC_DIGESTS_REPLY,
    XDC_ENTRIES_REPLY,
    XDC_FETCHED,
];

const _: () = {
    let mut index = 0;
    while index < REQUESTS.len() {
        let request = REQUESTS[index].0;
        assert!(request >= 0x40 && request <= 0x5F);
        assert!(RESPONSES[index].0 == request + 0x80);
        index += 1;
    }
};

/// True when `opcode` is one of the XDC requests above.
pub fn is_xdc_request(opcode: Opcode) -> bool {
    REQUESTS.contains(&opcode)
}

/// One XDC frame: an opcode from this module and its opaque body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdcMessage {
    /// One of the opcodes above.
    pub opcode: Opcode,
    /// The body, drawn by the `xdc` crate.
    pub body: Bytes,
}

impl XdcMessage {
    /// A message with this opcode and body.
    pub fn new(opcode: Opcode, body: impl Into<Bytes>) -> XdcMessage {
        XdcMessage {
            opcode,
            body: body.into(),
        }
    }

    /// Appends the whole frame to `buf`; on error (a body over the frame
    /// limit) `buf` is left as it was.
    pub fn encode(
        &self,
        request_id: u32,
        limits: &Limits,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        Encoder::new(*limits).encode(request_id, self, buf)?;
        Ok(())
    }
}

impl Encode for XdcMessage {
    fn opcode(&self) -> Opcode {
        self.opcode
    }

    fn body_len(&self, _limits: &Limits) -> Result<u64, EncodeError> {
        Ok(self.body.len() as u64)
    }

    fn write_body(&self, buf: &mut BytesMut) {
        buf.put_slice(&self.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Decoder;

    #[test]
    fn an_xdc_frame_round_trips_through_the_codec() {
        let limits = Limits::default();
        let mut buf = BytesMut::new();
        XdcMessage::new(XDC_BATCH, vec![7u8; 100])
            .encode(9, &limits, &mut buf)
            .expect("encodes");
        let mut decoder = Decoder::new(limits);
        let frame = decoder
            .decode(&mut buf)
            .expect("decodes")
            .expect("a whole frame");
        assert_eq!(frame.opcode, XDC_BATCH);
        assert_eq!(frame.request_id, 9);
        assert_eq!(&frame.body[..], &[7u8; 100][..]);
        assert!(is_xdc_request(frame.opcode));
        assert!(!is_xdc_request(XDC_BATCH_ACK));
    }

    #[test]
    fn a_body_over_the_frame_limit_is_refused_before_writing() {
        let limits = Limits {
            frame_bytes_max: 64,
            ..Limits::default()
        };
        let mut buf = BytesMut::new();
        let refused = XdcMessage::new(XDC_BATCH, vec![0u8; 100]).encode(1, &limits, &mut buf);
        assert!(refused.is_err());
        assert!(buf.is_empty());
    }
}
