//! The bytes XDC puts on the wire: the BATCH body and the ACK body.
//!
//! Both are the bodies of `net` frames (opcodes `XDC_BATCH` 0x40 and
//! `XDC_ACK` 0x41); framing, lengths of whole frames and authentication are
//! the frame layer's. All integers are little-endian and fixed width.
//!
//! BATCH body:
//!
//! ```text
//! offset size field
//!  0      1   format version (FORMAT_VERSION = 1)
//!  1      1   flags: bit 0 = records are lz4-compressed (lz4_flex block);
//!             other bits zero
//!  2      2   reserved, zero
//!  4      4   link id
//!  8      8   sequence number (per link, never reused: see shipper.rs)
//! 16      4   record count
//! 20      4   uncompressed length of the records section
//! 24      8   checksum: xxh3-64 of the uncompressed records section
//! 32      …   records section, compressed when bit 0 of flags is set
//!             (then it runs to the end of the body)
//! ```
//!
//! Each record of the records section:
//!
//! ```text
//! offset size field
//!  0      1   kind: 1 put, 2 tombstone (a tombstone has value_len 0)
//!  1      2   key_len
//!  3      4   value_len
//!  7      8   hlc
//! 15      4   origin (datacenter: top 8 bits)
//! 19      4   expires_at (Unix seconds, 0 = never)
//! 23      4   partition (the vnode the record was read from)
//! 27      …   key, then value
//! ```
//!
//! ACK body (24 bytes):
//!
//! ```text
//! offset size field
//!  0      1   format version (1)
//!  1      1   flags: bit 0 = duplicate (the batch had been applied before
//!             and was acknowledged again without applying)
//!  2      2   reserved, zero
//!  4      4   link id
//!  8      8   sequence number of the acknowledged batch
//! 16      4   records applied (written: newer than what the receiver held)
//! 20      4   records stale (not newer: nothing written)
//! ```
//!
//! The link id in the ACK is not strictly needed (an ACK travels on its
//! link) but lets the shipper refuse an ACK routed to the wrong link.
//!
//! Invariants:
//! - decoding never panics and never allocates more than the limits allow:
//!   every count and length is checked against [`BatchLimits`] first, and a
//!   compressed section is refused before decompression when it could not
//!   expand to the length it claims (lz4 expands at most ~255×);
//! - the checksum is verified over the uncompressed records, after
//!   decompression, before any record is parsed;
//! - the records section is consumed exactly: count and length agree;
//! - `decode_batch(encode_batch(b)) == b` for every batch within limits.

use bytes::{BufMut, Bytes, BytesMut};
use meridian_engine::{RecordKind, Version};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};

/// The version byte written into every body.
pub const FORMAT_VERSION: u8 = 1;

/// Batch flag: the records section is an lz4 block.
pub const FLAG_COMPRESSED: u8 = 0b0000_0001;
/// Ack flag: a duplicate batch, acknowledged again without applying.
pub const FLAG_DUPLICATE: u8 = 0b0000_0001;

// BATCH header offsets.
const VERSION_AT: usize = 0;
const FLAGS_AT: usize = 1;
const RESERVED_AT: usize = 2;
const LINK_AT: usize = 4;
const SEQUENCE_AT: usize = 8;
const COUNT_AT: usize = 16;
const UNCOMPRESSED_AT: usize = 20;
const CHECKSUM_AT: usize = 24;
/// Bytes of the BATCH header.
pub const BATCH_HEADER_LEN: usize = 32;
const _: () = assert!(CHECKSUM_AT + 8 == BATCH_HEADER_LEN);

// Record offsets.
const KIND_AT: usize = 0;
const KEY_LEN_AT: usize = 1;
const VALUE_LEN_AT: usize = 3;
const HLC_AT: usize = 7;
const ORIGIN_AT: usize = 15;
const EXPIRES_AT: usize = 19;
const PARTITION_AT: usize = 23;
/// Bytes of a record's fixed part.
pub const RECORD_HEADER_LEN: usize = 27;
const _: () = assert!(PARTITION_AT + 4 == RECORD_HEADER_LEN);

// ACK offsets.
const ACK_SEQUENCE_AT: usize = 8;
const ACK_APPLIED_AT: usize = 16;
const ACK_STALE_AT: usize = 20;
/// Bytes of an ACK body.
pub const ACK_LEN: usize = 24;
const _: () = assert!(ACK_STALE_AT + 4 == ACK_LEN);

/// lz4 cannot expand a block by more than this factor (plus a little).
const LZ4_EXPANSION_MAX: u64 = 255;

/// One record as XDC carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdcRecord {
    /// `Put` or `Tombstone`, never `Seal`.
    pub kind: RecordKind,
    pub key: Bytes,
    /// Empty for a tombstone.
    pub value: Bytes,
    pub version: Version,
    /// Unix seconds; 0 = never.
    pub expires_at: u32,
    /// The vnode (partition) the record was read from on the sending side.
    pub partition: u32,
}

impl XdcRecord {
    /// Bytes this record takes in the records section.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.key.len() + self.value.len()
    }
}

/// A decoded batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub link_id: u32,
    pub sequence: u64,
    pub records: Vec<XdcRecord>,
}

/// Limits a decoder enforces (and an encoder respects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub batch_records_max: u32,
    /// Cap on the records section once uncompressed.
    pub batch_bytes_max: u32,
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
}

impl Default for BatchLimits {
    fn default() -> BatchLimits {
        BatchLimits {
            batch_records_max: 1 << 16,
            // One largest value (16 MiB) and room besides.
            batch_bytes_max: 32 << 20,
            key_bytes_max: meridian_engine::format::KEY_BYTES_MAX as u32,
            value_bytes_max: meridian_engine::format::VALUE_BYTES_MAX as u32,
        }
    }
}

/// Whether the encoder may compress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Never compress.
    None,
    /// lz4 when the compressed section is smaller.
    Lz4,
}

/// An ACK body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub link_id: u32,
    pub sequence: u64,
    pub applied: u32,
    pub stale: u32,
    /// The batch had been applied before; acknowledged without applying.
    pub duplicate: bool,
}

fn check_limit(name: &'static str, found: u64, max: u64) -> Result<()> {
    if found > max {
        return Err(Error::Limit { name, found, max });
    }
    Ok(())
}

/// Encodes a batch. Refuses records outside `limits` (the engine's own
/// limits keep them inside, so an error here is a configuration mismatch).
pub fn encode_batch(
    link_id: u32,
    sequence: u64,
    records: &[XdcRecord],
    compression: Compression,
    limits: &BatchLimits,
) -> Result<Bytes> {
    check_limit(
        "batch_records",
        records.len() as u64,
        limits.batch_records_max as u64,
    )?;
    let section_len: usize = records.iter().map(XdcRecord::encoded_len).sum();
    check_limit(
        "batch_bytes",
        section_len as u64,
        limits.batch_bytes_max as u64,
    )?;
    let mut section = Vec::with_capacity(section_len);
    for record in records {
        check_limit(
            "key_bytes",
            record.key.len() as u64,
            limits.key_bytes_max as u64,
        )?;
        check_limit(
            "value_bytes",
            record.value.len() as u64,
            limits.value_bytes_max as u64,
        )?;
        if record.kind == RecordKind::Seal {
            return Err(Error::Corrupt {
                what: "batch record",
                offset: section.len() as u64,
                reason: "seal records are internal to the engine".to_string(),
            });
        }
        section.push(record.kind as u8);
        section.extend_from_slice(&(record.key.len() as u16).to_le_bytes());
        section.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
        section.extend_from_slice(&record.version.hlc.to_le_bytes());
        section.extend_from_slice(&record.version.origin.to_le_bytes());
        section.extend_from_slice(&record.expires_at.to_le_bytes());
        section.extend_from_slice(&record.partition.to_le_bytes());
        section.extend_from_slice(&record.key);
        section.extend_from_slice(&record.value);
    }
    assert_eq!(section.len(), section_len);
    let checksum = xxh3_64(&section);
    let compressed = match compression {
        Compression::None => None,
        Compression::Lz4 => {
            let packed = lz4_flex::block::compress(&section);
            (packed.len() < section.len()).then_some(packed)
        }
    };
    let payload = compressed.as_deref().unwrap_or(&section);
    let mut body = BytesMut::with_capacity(BATCH_HEADER_LEN + payload.len());
    body.put_u8(FORMAT_VERSION);
    body.put_u8(if compressed.is_some() {
        FLAG_COMPRESSED
    } else {
        0
    });
    body.put_u16_le(0);
    body.put_u32_le(link_id);
    body.put_u64_le(sequence);
    body.put_u32_le(records.len() as u32);
    body.put_u32_le(section_len as u32);
    body.put_u64_le(checksum);
    assert_eq!(body.len(), BATCH_HEADER_LEN);
    body.extend_from_slice(payload);
    Ok(body.freeze())
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The fixed part of a BATCH body, readable without touching the records
/// (a receiver checks the sequence for duplicates before decompressing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub link_id: u32,
    pub sequence: u64,
    pub compressed: bool,
    pub record_count: u32,
    pub uncompressed_len: u32,
    pub checksum: u64,
}

/// Decodes and checks a BATCH header against `limits`.
pub fn decode_batch_header(body: &[u8], limits: &BatchLimits) -> Result<BatchHeader> {
    if body.len() < BATCH_HEADER_LEN {
        return Err(Error::Truncated {
            what: "batch header",
            needed: BATCH_HEADER_LEN as u64,
            available: body.len() as u64,
        });
    }
    if body[VERSION_AT] != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "batch",
            found: body[VERSION_AT],
        });
    }
    let flags = body[FLAGS_AT];
    if flags & !FLAG_COMPRESSED != 0 || read_u16(body, RESERVED_AT) != 0 {
        return Err(Error::Corrupt {
            what: "batch header",
            offset: FLAGS_AT as u64,
            reason: format!("unknown flags {flags:#04x} or reserved bits set"),
        });
    }
    let header = BatchHeader {
        link_id: read_u32(body, LINK_AT),
        sequence: read_u64(body, SEQUENCE_AT),
        compressed: flags & FLAG_COMPRESSED != 0,
        record_count: read_u32(body, COUNT_AT),
        uncompressed_len: read_u32(body, UNCOMPRESSED_AT),
        checksum: read_u64(body, CHECKSUM_AT),
    };
    check_limit(
        "batch_records",
        header.record_count as u64,
        limits.batch_records_max as u64,
    )?;
    check_limit(
        "batch_bytes",
        header.uncompressed_len as u64,
        limits.batch_bytes_max as u64,
    )?;
    let least = header.record_count as u64 * RECORD_HEADER_LEN as u64;
    if least > header.uncompressed_len as u64 {
        return Err(Error::Corrupt {
            what: "batch header",
            offset: COUNT_AT as u64,
            reason: format!(
                "{} records cannot fit in {} bytes",
                header.record_count, header.uncompressed_len
            ),
        });
    }
    Ok(header)
}

/// Returns the uncompressed records section, checked against its checksum.
fn records_section(body: &[u8], header: &BatchHeader) -> Result<Bytes> {
    let payload = &body[BATCH_HEADER_LEN..];
    let expected = header.uncompressed_len as usize;
    let section = if header.compressed {
        // Refuse before allocating when the payload cannot expand that far.
        let reachable = (payload.len() as u64).saturating_mul(LZ4_EXPANSION_MAX) + 16;
        if expected as u64 > reachable {
            return Err(Error::Corrupt {
                what: "batch records",
                offset: BATCH_HEADER_LEN as u64,
                reason: format!(
                    "{} compressed bytes cannot expand to {expected}",
                    payload.len()
                ),
            });
        }
        let mut output = vec![0u8; expected];
        let written =
            lz4_flex::block::decompress_into(payload, &mut output).map_err(|e| Error::Corrupt {
                what: "batch records",
                offset: BATCH_HEADER_LEN as u64,
                reason: format!("lz4: {e}"),
            })?;
        if written != expected {
            return Err(Error::Corrupt {
                what: "batch records",
                offset: BATCH_HEADER_LEN as u64,
                reason: format!("decompressed to {written} bytes, header says {expected}"),
            });
        }
        Bytes::from(output)
    } else {
        if payload.len() != expected {
            return Err(Error::Corrupt {
                what: "batch records",
                offset: BATCH_HEADER_LEN as u64,
                reason: format!("{} bytes, header says {expected}", payload.len()),
            });
        }
        Bytes::copy_from_slice(payload)
    };
    let computed = xxh3_64(&section);
    if computed != header.checksum {
        return Err(Error::ChecksumMismatch {
            what: "batch records",
            stored: header.checksum,
            computed,
        });
    }
    Ok(section)
}

/// Decodes one record at `at` of `section`; returns it and its length.
fn decode_record(section: &Bytes, at: usize, limits: &BatchLimits) -> Result<(XdcRecord, usize)> {
    let available = section.len() - at;
    if available < RECORD_HEADER_LEN {
        return Err(Error::Truncated {
            what: "batch record header",
            needed: RECORD_HEADER_LEN as u64,
            available: available as u64,
        });
    }
    let fixed = &section[at..at + RECORD_HEADER_LEN];
    let kind = match RecordKind::from_byte(fixed[KIND_AT]) {
        Some(kind @ (RecordKind::Put | RecordKind::Tombstone)) => kind,
        _ => {
            return Err(Error::Corrupt {
                what: "batch record",
                offset: at as u64,
                reason: format!("kind {} is not put or tombstone", fixed[KIND_AT]),
            })
        }
    };
    let key_len = read_u16(fixed, KEY_LEN_AT) as usize;
    let value_len = read_u32(fixed, VALUE_LEN_AT) as usize;
    check_limit("key_bytes", key_len as u64, limits.key_bytes_max as u64)?;
    check_limit(
        "value_bytes",
        value_len as u64,
        limits.value_bytes_max as u64,
    )?;
    if kind == RecordKind::Tombstone && value_len != 0 {
        return Err(Error::Corrupt {
            what: "batch record",
            offset: at as u64,
            reason: "a tombstone with a value".to_string(),
        });
    }
    let len = RECORD_HEADER_LEN + key_len + value_len;
    if len > available {
        return Err(Error::Truncated {
            what: "batch record",
            needed: len as u64,
            available: available as u64,
        });
    }
    let key_at = at + RECORD_HEADER_LEN;
    let record = XdcRecord {
        kind,
        key: section.slice(key_at..key_at + key_len),
        value: section.slice(key_at + key_len..key_at + key_len + value_len),
        version: Version::new(read_u64(fixed, HLC_AT), read_u32(fixed, ORIGIN_AT)),
        expires_at: read_u32(fixed, EXPIRES_AT),
        partition: read_u32(fixed, PARTITION_AT),
    };
    Ok((record, len))
}

/// Decodes a BATCH body: header, decompression, checksum, records.
pub fn decode_batch(body: &[u8], limits: &BatchLimits) -> Result<Batch> {
    let header = decode_batch_header(body, limits)?;
    let section = records_section(body, &header)?;
    let mut records = Vec::with_capacity(header.record_count as usize);
    let mut at = 0usize;
    for _ in 0..header.record_count {
        let (record, len) = decode_record(&section, at, limits)?;
        records.push(record);
        at += len;
    }
    if at != section.len() {
        return Err(Error::Corrupt {
            what: "batch records",
            offset: at as u64,
            reason: format!("{} bytes after the last record", section.len() - at),
        });
    }
    Ok(Batch {
        link_id: header.link_id,
        sequence: header.sequence,
        records,
    })
}

/// Encodes an ACK body.
pub fn encode_ack(ack: &Ack) -> [u8; ACK_LEN] {
    let mut body = [0u8; ACK_LEN];
    body[VERSION_AT] = FORMAT_VERSION;
    body[FLAGS_AT] = if ack.duplicate { FLAG_DUPLICATE } else { 0 };
    body[LINK_AT..LINK_AT + 4].copy_from_slice(&ack.link_id.to_le_bytes());
    body[ACK_SEQUENCE_AT..ACK_SEQUENCE_AT + 8].copy_from_slice(&ack.sequence.to_le_bytes());
    body[ACK_APPLIED_AT..ACK_APPLIED_AT + 4].copy_from_slice(&ack.applied.to_le_bytes());
    body[ACK_STALE_AT..ACK_STALE_AT + 4].copy_from_slice(&ack.stale.to_le_bytes());
    body
}

/// Decodes an ACK body.
pub fn decode_ack(body: &[u8]) -> Result<Ack> {
    if body.len() != ACK_LEN {
        return Err(Error::Truncated {
            what: "ack",
            needed: ACK_LEN as u64,
            available: body.len() as u64,
        });
    }
    if body[VERSION_AT] != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "ack",
            found: body[VERSION_AT],
        });
    }
    let flags = body[FLAGS_AT];
    if flags & !FLAG_DUPLICATE != 0 || read_u16(body, RESERVED_AT) != 0 {
        return Err(Error::Corrupt {
            what: "ack",
            offset: FLAGS_AT as u64,
            reason: format!("unknown flags {flags:#04x} or reserved bits set"),
        });
    }
    Ok(Ack {
        link_id: read_u32(body, LINK_AT),
        sequence: read_u64(body, ACK_SEQUENCE_AT),
        applied: read_u32(body, ACK_APPLIED_AT),
        stale: read_u32(body, ACK_STALE_AT),
        duplicate: flags & FLAG_DUPLICATE != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &str, hlc: u64) -> XdcRecord {
        XdcRecord {
            kind: RecordKind::Put,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            version: Version::new(hlc, 0x0100_0001),
            expires_at: 7,
            partition: 3,
        }
    }

    #[test]
    fn round_trip_plain_and_compressed() {
        let limits = BatchLimits::default();
        let records: Vec<_> = (0..50)
            .map(|i| record(&format!("key-{i}"), &"v".repeat(100), i))
            .collect();
        for compression in [Compression::None, Compression::Lz4] {
            let body = encode_batch(9, 42, &records, compression, &limits).expect("encode");
            assert_eq!(
                body[FLAGS_AT] == FLAG_COMPRESSED,
                compression == Compression::Lz4
            );
            let batch = decode_batch(&body, &limits).expect("decode");
            assert_eq!(batch.link_id, 9);
            assert_eq!(batch.sequence, 42);
            assert_eq!(batch.records, records);
        }
    }

    #[test]
    fn compressed_only_when_smaller() {
        let limits = BatchLimits::default();
        for records in [
            vec![],
            vec![record("k", "x", 1)],
            vec![record("key", &"v".repeat(500), 2)],
        ] {
            let packed = encode_batch(1, 1, &records, Compression::Lz4, &limits).expect("encode");
            let plain = encode_batch(1, 1, &records, Compression::None, &limits).expect("encode");
            if packed[FLAGS_AT] == FLAG_COMPRESSED {
                assert!(packed.len() < plain.len());
            } else {
                assert_eq!(packed, plain);
            }
            assert_eq!(
                decode_batch(&packed, &limits).expect("decode").records,
                records
            );
        }
        let empty = encode_batch(1, 1, &[], Compression::Lz4, &limits).expect("encode");
        assert_eq!(empty.len(), BATCH_HEADER_LEN);
    }

    #[test]
    fn flipped_bit_is_a_checksum_mismatch() {
        let limits = BatchLimits::default();
        let body = encode_batch(
            1,
            1,
            &[record("key", "value", 5)],
            Compression::None,
            &limits,
        )
        .expect("encode");
        let mut bad = body.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            decode_batch(&bad, &limits),
            Err(Error::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn lengths_above_limits_are_refused_before_allocating() {
        let limits = BatchLimits::default();
        let mut body = encode_batch(1, 1, &[], Compression::None, &limits)
            .expect("encode")
            .to_vec();
        body[UNCOMPRESSED_AT..UNCOMPRESSED_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_batch(&body, &limits),
            Err(Error::Limit {
                name: "batch_bytes",
                ..
            })
        ));
        // A tiny compressed payload claiming a large section.
        body[FLAGS_AT] = FLAG_COMPRESSED;
        body[UNCOMPRESSED_AT..UNCOMPRESSED_AT + 4].copy_from_slice(&(1u32 << 20).to_le_bytes());
        body.extend_from_slice(&[0u8; 8]);
        assert!(matches!(
            decode_batch(&body, &limits),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn ack_round_trip_and_bad_version() {
        let ack = Ack {
            link_id: 4,
            sequence: u64::MAX - 1,
            applied: 10,
            stale: 3,
            duplicate: true,
        };
        let body = encode_ack(&ack);
        assert_eq!(decode_ack(&body).expect("decode"), ack);
        let mut bad = body;
        bad[VERSION_AT] = 2;
        assert!(matches!(
            decode_ack(&bad),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        assert!(decode_ack(&body[..ACK_LEN - 1]).is_err());
    }
}
