//! A cursor over a message body that checks before it slices: the one
//! decoding primitive the client and peer codecs share.
//!
//! Invariant: every read checks the remaining length first and returns
//! `DecodeError::Truncated` rather than slicing past the end; keys and values
//! are checked against their limits before they are taken, and come out as
//! slices of the body (no copy).

use bytes::Bytes;

use crate::error::DecodeError;
use crate::format::Limits;
use crate::message::Opcode;

pub(crate) struct Reader<'a> {
    pub(crate) body: Bytes,
    pub(crate) limits: &'a Limits,
}

impl Reader<'_> {
    pub(crate) fn need(&self, field: &'static str, needed: u64) -> Result<(), DecodeError> {
        if needed > self.body.len() as u64 {
            return Err(DecodeError::Truncated {
                field,
                needed,
                remaining: self.body.len(),
            });
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, field: &'static str, len: u64) -> Result<Bytes, DecodeError> {
        self.need(field, len)?;
        // `need` proved len <= body.len(), so the cast and split are in range.
        Ok(self.body.split_to(len as usize))
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        self.need(field, N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.body[..N]);
        bytes::Buf::advance(&mut self.body, N);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn options(&mut self, known: u8) -> Result<u8, DecodeError> {
        let options = self.u8("options")?;
        if options & !known != 0 {
            return Err(DecodeError::InvalidValue {
                field: "options",
                value: u64::from(options),
            });
        }
        Ok(options)
    }

    pub(crate) fn key(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16("key length")?;
        if u32::from(len) > self.limits.key_bytes_max {
            return Err(DecodeError::KeyTooLarge {
                len: u64::from(len),
                max: self.limits.key_bytes_max,
            });
        }
        self.take("key", u64::from(len))
    }

    pub(crate) fn value(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32("value length")?;
        if len > self.limits.value_bytes_max {
            return Err(DecodeError::ValueTooLarge {
                len: u64::from(len),
                max: self.limits.value_bytes_max,
            });
        }
        self.take("value", u64::from(len))
    }

    /// Checks that the whole body was read.
    pub(crate) fn finish(self, opcode: Opcode) -> Result<(), DecodeError> {
        if !self.body.is_empty() {
            return Err(DecodeError::TrailingBytes {
                opcode: opcode.0,
                extra: self.body.len(),
            });
        }
        Ok(())
    }
}
