//! The persisted (and gossiped) ring document.
//!
//! ```text
//! header (HEADER_LEN = 20 bytes):
//!   magic u32 "MRNG" | format_version u8 | reserved [u8; 3] (zero)
//!   | body_len u32 | checksum u64 (xxh3-64 of the body)
//! body:
//!   epoch u64 | partitions u32 | replicas u8
//!   | cluster_len u8 | cluster bytes
//!   | member_count u16
//!   | member_count × (id u16 | status u8 | has_rack u8 | address_len u8
//!                     | address | rack_len u8 | rack)
//!   | partitions × owner u16
//!   | transfer_count u32 | transfer_count × (partition u32 | source u16 | target u16)
//! ```
//!
//! All integers little-endian. Strings are UTF-8 of at most 255 bytes.
//!
//! Invariants:
//! - the decoder checks the header, the body length and the checksum before
//!   it reads the body, checks every length against the bytes left before it
//!   slices, checks every count against its limit before it allocates, and
//!   returns an error, never panics, on any input;
//! - a decoded document passes [`Ring::validate`];
//! - `decode(encode(r)) == r` for every valid ring `r`.

use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::ring::{Member, Ring, Status, Transfer, MEMBERS_MAX, PARTITIONS_MAX};

pub const MAGIC: u32 = u32::from_le_bytes(*b"MRNG");
pub const FORMAT_VERSION: u8 = 1;
pub const MAGIC_OFFSET: usize = 0;
pub const VERSION_OFFSET: usize = 4;
pub const BODY_LEN_OFFSET: usize = 8;
pub const CHECKSUM_OFFSET: usize = 12;
pub const HEADER_LEN: usize = 20;
const _: () = assert!(CHECKSUM_OFFSET + 8 == HEADER_LEN);
/// Bound on a body: every string at its limit and a transfer per partition.
pub const BODY_BYTES_MAX: usize =
    8 + 4 + 1 + 1 + 255 + 2 + MEMBERS_MAX * (6 + 2 * 255) + PARTITIONS_MAX as usize * (2 + 8) + 4;

/// The document's bytes.
pub fn encode(ring: &Ring) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + ring.owners.len() * 2);
    body.extend_from_slice(&ring.epoch.to_le_bytes());
    body.extend_from_slice(&ring.partitions.to_le_bytes());
    body.push(ring.replicas);
    put_string(&mut body, &ring.cluster);
    body.extend_from_slice(&(ring.members.len() as u16).to_le_bytes());
    for member in &ring.members {
        body.extend_from_slice(&member.id.to_le_bytes());
        body.push(member.status.code());
        body.push(u8::from(member.rack.is_some()));
        put_string(&mut body, &member.address);
        put_string(&mut body, member.rack.as_deref().unwrap_or(""));
    }
    for owner in &ring.owners {
        body.extend_from_slice(&owner.to_le_bytes());
    }
    body.extend_from_slice(&(ring.transfers.len() as u32).to_le_bytes());
    for transfer in &ring.transfers {
        body.extend_from_slice(&transfer.partition.to_le_bytes());
        body.extend_from_slice(&transfer.source.to_le_bytes());
        body.extend_from_slice(&transfer.target.to_le_bytes());
    }
    assert!(body.len() <= BODY_BYTES_MAX);
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(&MAGIC.to_le_bytes());
    bytes.push(FORMAT_VERSION);
    bytes.extend_from_slice(&[0; 3]);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&xxh3_64(&body).to_le_bytes());
    debug_assert_eq!(bytes.len(), HEADER_LEN);
    bytes.extend_from_slice(&body);
    bytes
}

/// Strings are validated by `Ring::validate` to fit a u8 length.
fn put_string(body: &mut Vec<u8>, text: &str) {
    let length = u8::try_from(text.len()).expect("validated: strings fit 255 bytes");
    body.push(length);
    body.extend_from_slice(text.as_bytes());
}

/// Decodes and validates a document.
pub fn decode(bytes: &[u8]) -> Result<Ring> {
    let mut header = Reader { bytes, offset: 0 };
    if header.u32()? != MAGIC {
        return Err(corrupt(MAGIC_OFFSET, "bad magic"));
    }
    let version = header.u8()?;
    if version != FORMAT_VERSION {
        return Err(corrupt(
            VERSION_OFFSET,
            &format!("unknown format version {version}"),
        ));
    }
    // Reserved: zero in version 1. The checksum covers the body only, so
    // these bytes are checked here (a flipped bit must not decode).
    if header.take(3)? != [0u8; 3] {
        return Err(corrupt(
            VERSION_OFFSET + 1,
            "reserved header bytes are not zero",
        ));
    }
    let body_len = header.u32()? as usize;
    let checksum = header.u64()?;
    if body_len > BODY_BYTES_MAX || bytes.len() - HEADER_LEN != body_len {
        return Err(corrupt(
            BODY_LEN_OFFSET,
            &format!("body length {body_len} for {} bytes", bytes.len()),
        ));
    }
    let body = &bytes[HEADER_LEN..];
    if xxh3_64(body) != checksum {
        return Err(corrupt(CHECKSUM_OFFSET, "checksum mismatch"));
    }
    let mut reader = Reader {
        bytes,
        offset: HEADER_LEN,
    };
    let ring = decode_body(&mut reader)?;
    if reader.offset != bytes.len() {
        return Err(corrupt(reader.offset, "trailing bytes"));
    }
    ring.validate()?;
    Ok(ring)
}

fn decode_body(reader: &mut Reader<'_>) -> Result<Ring> {
    let epoch = reader.u64()?;
    let partitions = reader.u32()?;
    let replicas = reader.u8()?;
    crate::ring::check_settings(partitions, replicas)
        .map_err(|e| corrupt(reader.offset, &e.to_string()))?;
    let cluster = reader.string()?;
    let member_count = usize::from(reader.u16()?);
    if member_count > MEMBERS_MAX {
        return Err(corrupt(reader.offset, "too many members"));
    }
    let mut members = Vec::with_capacity(member_count);
    for _ in 0..member_count {
        let id = reader.u16()?;
        let status_at = reader.offset;
        let status =
            Status::from_code(reader.u8()?).ok_or_else(|| corrupt(status_at, "unknown status"))?;
        let has_rack = reader.u8()?;
        let address = reader.string()?;
        let rack = reader.string()?;
        let rack = match has_rack {
            0 if rack.is_empty() => None,
            1 => Some(rack),
            _ => return Err(corrupt(status_at + 1, "bad rack flag")),
        };
        members.push(Member {
            id,
            address,
            rack,
            status,
        });
    }
    let mut owners = Vec::with_capacity(partitions as usize);
    reader.ensure(partitions as usize * 2)?;
    for _ in 0..partitions {
        owners.push(reader.u16()?);
    }
    let transfer_count = reader.u32()?;
    if transfer_count > partitions {
        return Err(corrupt(reader.offset, "more transfers than partitions"));
    }
    reader.ensure(transfer_count as usize * 8)?;
    let mut transfers = Vec::with_capacity(transfer_count as usize);
    for _ in 0..transfer_count {
        let partition = reader.u32()?;
        let source = reader.u16()?;
        let target = reader.u16()?;
        transfers.push(Transfer {
            partition,
            source,
            target,
        });
    }
    Ok(Ring {
        cluster,
        epoch,
        partitions,
        replicas,
        members,
        owners,
        transfers,
    })
}

fn corrupt(offset: usize, reason: &str) -> Error {
    Error::Corrupt {
        offset,
        reason: reason.to_owned(),
    }
}

/// A cursor that checks every length before it slices.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn ensure(&self, length: usize) -> Result<()> {
        if self.bytes.len() - self.offset < length {
            return Err(corrupt(
                self.offset,
                &format!(
                    "{length} bytes wanted, {} left",
                    self.bytes.len() - self.offset
                ),
            ));
        }
        Ok(())
    }
    fn take(&mut self, length: usize) -> Result<&'a [u8]> {
        self.ensure(length)?;
        let slice = &self.bytes[self.offset..self.offset + length];
        self.offset += length;
        Ok(slice)
    }
    fn array<const LEN: usize>(&mut self) -> Result<[u8; LEN]> {
        let mut array = [0; LEN];
        array.copy_from_slice(self.take(LEN)?);
        Ok(array)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String> {
        let length = usize::from(self.u8()?);
        let at = self.offset;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(at, "string is not UTF-8"))
    }
}

/// Persists `ring` at `path`, replacing the previous copy crash-safely
/// (write a temporary file, fdatasync, rename, fsync the directory).
pub fn save(path: &Path, ring: &Ring) -> Result<()> {
    ring.validate()?;
    meridian_engine::replace_file(path, &encode(ring))?;
    Ok(())
}

/// Reads and decodes the ring persisted at `path`; `Ok(None)` when there is
/// no file yet.
pub fn load(path: &Path) -> Result<Option<Ring>> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            operation: "read ring",
            path: path.to_owned(),
            source,
        }),
    }
}
