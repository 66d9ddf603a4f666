//! Every byte the engine writes to disk, in one place.
//!
//! All integers are little-endian and fixed width. Each file starts with a
//! header carrying a magic and [`FORMAT_VERSION`]; a reader refuses a version
//! it does not know.
//!
//! ## Segment file `NNNNNNNN.seg`
//!
//! ```text
//! offset 0   magic "MRDNSEG\0" [8]
//!        8   format_version u8 | reserved [3]
//!        12  segment_id u32
//!        16  created_at_ms u64
//!        24  header_checksum u64      xxh3-64 of bytes 0..24
//!        32  records …, then zero bytes up to the preallocated length
//! ```
//!
//! ## Record
//!
//! ```text
//! offset 0   checksum u64     xxh3-64 of bytes 8 .. 32 + key_len + value_len
//!        8   kind u8          1 put, 2 tombstone, 3 seal (end of segment)
//!        9   flags u8         0 (reserved)
//!        10  key_len u16
//!        12  value_len u32
//!        16  hlc u64
//!        24  origin u32
//!        28  expires_at u32   unix seconds, 0 = never
//!        32  key [key_len] | value [value_len]
//! ```
//!
//! A header of 32 zero bytes marks the end of the written data of a
//! preallocated segment: its checksum field (0) never matches the xxh3 of
//! its bytes, and kind 0 is not a record kind.
//!
//! ## Hint file `NNNNNNNN.hint`
//!
//! Written once a segment is sealed and synced, so start-up rebuilds the key
//! directory without reading values.
//!
//! ```text
//! offset 0   magic "MRDNHINT" [8]
//!        8   format_version u8 | reserved [3]
//!        12  segment_id u32
//!        16  entry_count u32
//!        20  data_end u32       offset of the segment's seal record
//!        24  segment_checksum u64  the header checksum of the segment it
//!                                  describes: a hint never vouches for
//!                                  another generation of the same file
//!        32  entries: entry_count × 40 bytes
//!            hash_high u32 | offset u32 | record_len u32 | kind u8 | reserved [3]
//!            | hlc u64 | origin u32 | expires_at u32 | digest u64
//!        end checksum u64        xxh3-64 of every byte before it
//! ```
//!
//! ## Digest of an entry (anti-entropy)
//!
//! `xxh3_64_with_seed(key, hlc ^ origin * 0x9E3779B97F4A7C15)`; a bucket's
//! digest is the XOR of its entries' digests.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Version of every on-disk format in this module.
pub const FORMAT_VERSION: u8 = 1;

pub const SEGMENT_MAGIC: [u8; 8] = *b"MRDNSEG\0";
pub const HINT_MAGIC: [u8; 8] = *b"MRDNHINT";

pub const SEGMENT_HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 32;
pub const HINT_HEADER_LEN: usize = 32;
pub const HINT_ENTRY_LEN: usize = 40;
pub const HINT_TRAILER_LEN: usize = 8;

const _: () = assert!(SEGMENT_HEADER_LEN == 8 + 4 + 4 + 8 + 8);
const _: () = assert!(RECORD_HEADER_LEN == 8 + 1 + 1 + 2 + 4 + 8 + 4 + 4);
const _: () = assert!(HINT_ENTRY_LEN == 4 + 4 + 4 + 4 + 8 + 4 + 4 + 8);

// Record header field offsets.
const RECORD_CHECKSUM: usize = 0;
const RECORD_KIND: usize = 8;
const RECORD_FLAGS: usize = 9;
const RECORD_KEY_LEN: usize = 10;
const RECORD_VALUE_LEN: usize = 12;
const RECORD_HLC: usize = 16;
const RECORD_ORIGIN: usize = 24;
const RECORD_EXPIRES_AT: usize = 28;

// Segment header field offsets.
const SEGMENT_VERSION: usize = 8;
const SEGMENT_ID: usize = 12;
const SEGMENT_CREATED_AT: usize = 16;
const SEGMENT_CHECKSUM: usize = 24;

// Hint header field offsets.
const HINT_VERSION: usize = 8;
const HINT_SEGMENT_ID: usize = 12;
const HINT_ENTRY_COUNT: usize = 16;
const HINT_DATA_END: usize = 20;
const HINT_SEGMENT_CHECKSUM: usize = 24;

/// Largest key the format can hold (`key_len` is a u16).
pub const KEY_BYTES_MAX: usize = u16::MAX as usize;
/// Largest value the engine accepts at all (16 MiB); options may lower it.
pub const VALUE_BYTES_MAX: usize = 16 << 20;

const DIGEST_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// What a record says about its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    Put = 1,
    Tombstone = 2,
    /// Closes a segment: nothing follows it.
    Seal = 3,
}

impl RecordKind {
    pub fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::Put),
            2 => Some(RecordKind::Tombstone),
            3 => Some(RecordKind::Seal),
            _ => None,
        }
    }
}

/// The version of an entry: hybrid logical clock and the clock that stamped it.
///
/// Ordered by `(hlc, origin)`: a total order, so last-writer-wins converges
/// whatever order versions arrive in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub hlc: u64,
    pub origin: u32,
}

impl Version {
    pub const fn new(hlc: u64, origin: u32) -> Version {
        Version { hlc, origin }
    }
}

/// The decoded fixed part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub checksum: u64,
    pub kind: RecordKind,
    pub key_len: u16,
    pub value_len: u32,
    pub version: Version,
    pub expires_at: u32,
}

impl RecordHeader {
    /// Bytes the whole record takes: header, key and value.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.key_len as usize + self.value_len as usize
    }
}

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than a header, or than the lengths in the header claim.
    Truncated,
    /// 32 zero bytes: the end of a preallocated segment's written data.
    EndOfData,
    UnknownKind(u8),
    NonZeroFlags(u8),
    /// A value longer than the format's maximum.
    ValueTooLong(u32),
    ChecksumMismatch {
        stored: u64,
        computed: u64,
    },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Truncated => write!(f, "record truncated"),
            RecordError::EndOfData => write!(f, "end of written data"),
            RecordError::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
            RecordError::NonZeroFlags(flags) => write!(f, "reserved flags set ({flags:#04x})"),
            RecordError::ValueTooLong(len) => write!(f, "value length {len} exceeds 16 MiB"),
            RecordError::ChecksumMismatch { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"
                )
            }
        }
    }
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Decodes and checks the header at the start of `bytes`, without the checksum.
///
/// `bytes` is everything from the record's start to the end of the written
/// data; the header's lengths are checked against it before anything else
/// reads past the header.
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader, RecordError> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Truncated);
    }
    let header = &bytes[..RECORD_HEADER_LEN];
    if header.iter().all(|&byte| byte == 0) {
        return Err(RecordError::EndOfData);
    }
    let kind_byte = header[RECORD_KIND];
    let kind = RecordKind::from_byte(kind_byte).ok_or(RecordError::UnknownKind(kind_byte))?;
    if header[RECORD_FLAGS] != 0 {
        return Err(RecordError::NonZeroFlags(header[RECORD_FLAGS]));
    }
    let value_len = read_u32(header, RECORD_VALUE_LEN);
    if value_len as usize > VALUE_BYTES_MAX {
        return Err(RecordError::ValueTooLong(value_len));
    }
    let decoded = RecordHeader {
        checksum: read_u64(header, RECORD_CHECKSUM),
        kind,
        key_len: read_u16(header, RECORD_KEY_LEN),
        value_len,
        version: Version::new(
            read_u64(header, RECORD_HLC),
            read_u32(header, RECORD_ORIGIN),
        ),
        expires_at: read_u32(header, RECORD_EXPIRES_AT),
    };
    if bytes.len() < decoded.record_len() {
        return Err(RecordError::Truncated);
    }
    Ok(decoded)
}

/// Decodes the record at the start of `bytes` and verifies its checksum.
pub fn decode_record(bytes: &[u8]) -> Result<RecordHeader, RecordError> {
    let header = decode_header(bytes)?;
    let computed = xxh3_64(&bytes[RECORD_CHECKSUM + 8..header.record_len()]);
    if computed != header.checksum {
        return Err(RecordError::ChecksumMismatch {
            stored: header.checksum,
            computed,
        });
    }
    Ok(header)
}

/// The fields a writer chooses for a record.
#[derive(Clone, Copy, Debug)]
pub struct RecordFields<'a> {
    pub kind: RecordKind,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub version: Version,
    pub expires_at: u32,
}

impl RecordFields<'_> {
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.key.len() + self.value.len()
    }
}

/// Writes a record into `target`, which must be exactly `record_len()` long.
///
/// The caller has checked the key and value lengths against the format's
/// limits; this asserts them, since a wrong length here would corrupt the log.
pub fn encode_record(fields: &RecordFields<'_>, target: &mut [u8]) {
    assert!(fields.key.len() <= KEY_BYTES_MAX);
    assert!(fields.value.len() <= VALUE_BYTES_MAX);
    assert_eq!(target.len(), fields.record_len());
    let key_end = RECORD_HEADER_LEN + fields.key.len();
    target[RECORD_KIND] = fields.kind as u8;
    target[RECORD_FLAGS] = 0;
    target[RECORD_KEY_LEN..RECORD_KEY_LEN + 2]
        .copy_from_slice(&(fields.key.len() as u16).to_le_bytes());
    target[RECORD_VALUE_LEN..RECORD_VALUE_LEN + 4]
        .copy_from_slice(&(fields.value.len() as u32).to_le_bytes());
    target[RECORD_HLC..RECORD_HLC + 8].copy_from_slice(&fields.version.hlc.to_le_bytes());
    target[RECORD_ORIGIN..RECORD_ORIGIN + 4].copy_from_slice(&fields.version.origin.to_le_bytes());
    target[RECORD_EXPIRES_AT..RECORD_EXPIRES_AT + 4]
        .copy_from_slice(&fields.expires_at.to_le_bytes());
    target[RECORD_HEADER_LEN..key_end].copy_from_slice(fields.key);
    target[key_end..].copy_from_slice(fields.value);
    let checksum = xxh3_64(&target[RECORD_CHECKSUM + 8..]);
    target[RECORD_CHECKSUM..RECORD_CHECKSUM + 8].copy_from_slice(&checksum.to_le_bytes());
}

/// Builds a segment header.
pub fn encode_segment_header(segment_id: u32, created_at_ms: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[SEGMENT_VERSION] = FORMAT_VERSION;
    header[SEGMENT_ID..SEGMENT_ID + 4].copy_from_slice(&segment_id.to_le_bytes());
    header[SEGMENT_CREATED_AT..SEGMENT_CREATED_AT + 8]
        .copy_from_slice(&created_at_ms.to_le_bytes());
    let checksum = xxh3_64(&header[..SEGMENT_CHECKSUM]);
    header[SEGMENT_CHECKSUM..].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// The checksum stored in a segment header (bytes 24..32), which names
/// this generation of the file.
pub fn segment_header_checksum(header: &[u8; SEGMENT_HEADER_LEN]) -> u64 {
    read_u64(header, SEGMENT_CHECKSUM)
}

/// Checks a segment header; returns its segment id.
pub fn decode_segment_header(bytes: &[u8]) -> Result<u32, String> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(format!(
            "segment shorter than its {SEGMENT_HEADER_LEN}-byte header"
        ));
    }
    if bytes[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".to_string());
    }
    let computed = xxh3_64(&bytes[..SEGMENT_CHECKSUM]);
    if computed != read_u64(bytes, SEGMENT_CHECKSUM) {
        return Err("segment header checksum mismatch".to_string());
    }
    if bytes[SEGMENT_VERSION] != FORMAT_VERSION {
        return Err(format!(
            "unsupported segment format version {}",
            bytes[SEGMENT_VERSION]
        ));
    }
    Ok(read_u32(bytes, SEGMENT_ID))
}

/// One entry of a hint file: where a record is and what it says, without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintEntry {
    pub hash_high: u32,
    pub offset: u32,
    pub record_len: u32,
    pub kind: RecordKind,
    pub version: Version,
    pub expires_at: u32,
    /// [`entry_digest`] of the record's key and version.
    pub digest: u64,
}

/// Serialises a whole hint file.
pub fn encode_hint_file(
    segment_id: u32,
    segment_checksum: u64,
    data_end: u32,
    entries: &[HintEntry],
) -> Vec<u8> {
    let total = HINT_HEADER_LEN + entries.len() * HINT_ENTRY_LEN + HINT_TRAILER_LEN;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&HINT_MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&[0u8; 3]);
    out.extend_from_slice(&segment_id.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&data_end.to_le_bytes());
    out.extend_from_slice(&segment_checksum.to_le_bytes());
    debug_assert_eq!(out.len(), HINT_HEADER_LEN);
    for entry in entries {
        out.extend_from_slice(&entry.hash_high.to_le_bytes());
        out.extend_from_slice(&entry.offset.to_le_bytes());
        out.extend_from_slice(&entry.record_len.to_le_bytes());
        out.push(entry.kind as u8);
        out.extend_from_slice(&[0u8; 3]);
        out.extend_from_slice(&entry.version.hlc.to_le_bytes());
        out.extend_from_slice(&entry.version.origin.to_le_bytes());
        out.extend_from_slice(&entry.expires_at.to_le_bytes());
        out.extend_from_slice(&entry.digest.to_le_bytes());
    }
    let checksum = xxh3_64(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    assert_eq!(out.len(), total);
    out
}

/// A decoded hint file.
#[derive(Debug)]
pub struct HintFile {
    pub segment_id: u32,
    pub segment_checksum: u64,
    pub data_end: u32,
    pub entries: Vec<HintEntry>,
}

/// Decodes and verifies a hint file; any defect is reported as a reason string.
pub fn decode_hint_file(bytes: &[u8]) -> Result<HintFile, String> {
    if bytes.len() < HINT_HEADER_LEN + HINT_TRAILER_LEN {
        return Err("hint file shorter than header and trailer".to_string());
    }
    if bytes[..8] != HINT_MAGIC {
        return Err("bad hint magic".to_string());
    }
    if bytes[HINT_VERSION] != FORMAT_VERSION {
        return Err(format!(
            "unsupported hint format version {}",
            bytes[HINT_VERSION]
        ));
    }
    let entry_count = read_u32(bytes, HINT_ENTRY_COUNT) as usize;
    let expected = entry_count
        .checked_mul(HINT_ENTRY_LEN)
        .and_then(|len| len.checked_add(HINT_HEADER_LEN + HINT_TRAILER_LEN));
    if expected != Some(bytes.len()) {
        return Err(format!(
            "hint file length {} does not match {entry_count} entries",
            bytes.len()
        ));
    }
    let body_end = bytes.len() - HINT_TRAILER_LEN;
    if xxh3_64(&bytes[..body_end]) != read_u64(bytes, body_end) {
        return Err("hint file checksum mismatch".to_string());
    }
    let mut entries = Vec::with_capacity(entry_count);
    for raw in bytes[HINT_HEADER_LEN..body_end].chunks_exact(HINT_ENTRY_LEN) {
        let kind = RecordKind::from_byte(raw[12]).ok_or_else(|| format!("bad kind {}", raw[12]))?;
        entries.push(HintEntry {
            hash_high: read_u32(raw, 0),
            offset: read_u32(raw, 4),
            record_len: read_u32(raw, 8),
            kind,
            version: Version::new(read_u64(raw, 16), read_u32(raw, 24)),
            expires_at: read_u32(raw, 28),
            digest: read_u64(raw, 32),
        });
    }
    Ok(HintFile {
        segment_id: read_u32(bytes, HINT_SEGMENT_ID),
        segment_checksum: read_u64(bytes, HINT_SEGMENT_CHECKSUM),
        data_end: read_u32(bytes, HINT_DATA_END),
        entries,
    })
}

/// The 64-bit hash of a key that partitions, buckets and indexes it.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The top 32 bits of [`key_hash`]: what the key directory and hints keep.
pub fn hash_high(key: &[u8]) -> u32 {
    (key_hash(key) >> 32) as u32
}

/// The anti-entropy bucket of a key: the top 16 bits of its hash.
pub fn bucket_of_hash_high(hash_high: u32) -> u16 {
    (hash_high >> 16) as u16
}

/// The digest contribution of one entry.
pub fn entry_digest(key: &[u8], version: Version) -> u64 {
    xxh3_64_with_seed(
        key,
        version.hlc ^ (version.origin as u64).wrapping_mul(DIGEST_MIX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: RecordKind) -> Vec<u8> {
        let fields = RecordFields {
            kind,
            key: b"key-1",
            value: b"value-one",
            version: Version::new(42, 7),
            expires_at: 99,
        };
        let mut buffer = vec![0u8; fields.record_len()];
        encode_record(&fields, &mut buffer);
        buffer
    }

    #[test]
    fn record_round_trips() {
        let bytes = sample(RecordKind::Put);
        let header = decode_record(&bytes).expect("valid record");
        assert_eq!(header.kind, RecordKind::Put);
        assert_eq!(header.key_len, 5);
        assert_eq!(header.value_len, 9);
        assert_eq!(header.version, Version::new(42, 7));
        assert_eq!(header.expires_at, 99);
    }

    #[test]
    fn zero_header_is_end_of_data() {
        assert_eq!(decode_record(&[0u8; 64]), Err(RecordError::EndOfData));
    }

    #[test]
    fn lengths_past_the_buffer_are_truncated() {
        let bytes = sample(RecordKind::Put);
        assert_eq!(
            decode_record(&bytes[..bytes.len() - 1]),
            Err(RecordError::Truncated)
        );
    }

    #[test]
    fn hint_round_trips_and_detects_damage() {
        let entries = vec![HintEntry {
            hash_high: 5,
            offset: 32,
            record_len: 70,
            kind: RecordKind::Tombstone,
            version: Version::new(1, 2),
            expires_at: 0,
            digest: 0xfeed,
        }];
        let mut bytes = encode_hint_file(3, 77, 400, &entries);
        let decoded = decode_hint_file(&bytes).expect("valid hint");
        assert_eq!(decoded.entries, entries);
        assert_eq!(
            (
                decoded.segment_id,
                decoded.segment_checksum,
                decoded.data_end
            ),
            (3, 77, 400)
        );
        bytes[40] ^= 1;
        assert!(decode_hint_file(&bytes).is_err());
    }

    #[test]
    fn segment_header_round_trips() {
        let header = encode_segment_header(17, 1234);
        assert_eq!(decode_segment_header(&header), Ok(17));
        let mut bad = header;
        bad[13] ^= 0x10;
        assert!(decode_segment_header(&bad).is_err());
    }
}
