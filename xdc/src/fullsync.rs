//! Fullsync: bringing two datacenters level by comparing digests instead
//! of shipping everything — the bodies two sides exchange, and the
//! comparison of one bucket's entries.
//!
//! Buckets are the top 16 bits of xxh3(key), the same in every datacenter
//! whatever its ring size (a bucket lies inside exactly one partition of
//! any ring of at most 65536 partitions), so two datacenters compare
//! bucket digests directly. The initiator asks for the digests of a range
//! of buckets, then for the entries — (key, version, kind), no values — of
//! each bucket whose digest differs, then ships the records it has newer
//! (as ordinary BATCHes) and fetches those the other side has newer.
//!
//! The entries of a differing bucket are compared by fingerprint first:
//! the asker sends a 48-bit fingerprint of each of its entries (key and
//! version), the answerer returns only its entries whose fingerprint the
//! asker did not send, and which of the asker's it does not hold. A bucket
//! of fifteen keys with one changed costs ~150 bytes instead of ~600. A
//! changed entry is missed only if its fingerprint equals one of the
//! other side's in the same bucket: with fifteen keys a bucket, about one
//! chance in 2^44 per changed entry; the bucket digests, compared again by
//! the next fullsync, would still differ.
//!
//! Bodies (little-endian):
//!
//! ```text
//! DIGESTS request   first_bucket u16 | count u32
//! DIGESTS reply     count u32 | count × digest u64
//! ENTRIES request   bucket u16 | count u32 | count × fingerprint (6 bytes)
//! ENTRIES reply     missing: ceil(count / 8) bytes (bit i = no entry there
//!                   has the asker's fingerprint i) | entries
//! entries           count u32 | count × (kind u8 | hlc u64 | origin u32 | key_len u16 | key)
//! FETCH request     count u32 | count × (key_len u16 | key)
//! FETCH reply       a BATCH body (see `format`)
//! ```
//!
//! Invariants: decoders check every count against its limit and the bytes
//! left before allocating; never panic; a bucket range never passes the
//! 16-bit bucket space.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use meridian_engine::{RecordKind, Version};

use crate::error::{Error, Result};

/// Buckets in the digest space.
pub const BUCKETS: u32 = 1 << 16;
/// Keys per ENTRIES reply or FETCH request, at most.
pub const ENTRIES_MAX: u32 = 1 << 20;

/// One key of a bucket, as the comparison sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub key: Bytes,
    pub version: Version,
    pub kind: RecordKind,
}

struct Cursor<'a> {
    body: &'a [u8],
    at: usize,
    what: &'static str,
}

impl Cursor<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8]> {
        if self.body.len() - self.at < len {
            return Err(Error::Truncated {
                what: self.what,
                needed: (self.at + len) as u64,
                available: self.body.len() as u64,
            });
        }
        let slice = &self.body[self.at..self.at + len];
        self.at += len;
        Ok(slice)
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(b);
        Ok(u64::from_le_bytes(raw))
    }
    fn count(&mut self, max: u32, each: usize) -> Result<u32> {
        let count = self.u32()?;
        if count > max {
            return Err(Error::Limit {
                name: "fullsync count",
                found: u64::from(count),
                max: u64::from(max),
            });
        }
        if (count as usize).saturating_mul(each) > self.body.len() - self.at {
            return Err(Error::Truncated {
                what: self.what,
                needed: (self.at + count as usize * each) as u64,
                available: self.body.len() as u64,
            });
        }
        Ok(count)
    }
    fn finish(&self) -> Result<()> {
        if self.at != self.body.len() {
            return Err(Error::Corrupt {
                what: self.what,
                offset: self.at as u64,
                reason: format!("{} bytes after the end", self.body.len() - self.at),
            });
        }
        Ok(())
    }
}

pub fn encode_digests_request(first_bucket: u16, count: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(6);
    out.extend_from_slice(&first_bucket.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out
}

/// `(first_bucket, count)`, checked to stay inside the bucket space.
pub fn decode_digests_request(body: &[u8]) -> Result<(u16, u32)> {
    let mut cursor = Cursor {
        body,
        at: 0,
        what: "fullsync digests request",
    };
    let first = cursor.u16()?;
    let count = cursor.u32()?;
    cursor.finish()?;
    if u64::from(first) + u64::from(count) > u64::from(BUCKETS) {
        return Err(Error::Limit {
            name: "bucket range end",
            found: u64::from(first) + u64::from(count),
            max: u64::from(BUCKETS),
        });
    }
    Ok((first, count))
}

pub fn encode_digests(digests: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 8 * digests.len());
    out.extend_from_slice(&(digests.len() as u32).to_le_bytes());
    for digest in digests {
        out.extend_from_slice(&digest.to_le_bytes());
    }
    out
}

pub fn decode_digests(body: &[u8]) -> Result<Vec<u64>> {
    let mut cursor = Cursor {
        body,
        at: 0,
        what: "fullsync digests",
    };
    let count = cursor.count(BUCKETS, 8)?;
    let digests = (0..count)
        .map(|_| cursor.u64())
        .collect::<Result<Vec<_>>>()?;
    cursor.finish()?;
    Ok(digests)
}

fn kind_byte(kind: RecordKind) -> u8 {
    match kind {
        RecordKind::Put => 1,
        _ => 2,
    }
}

pub fn encode_entries(entries: &[Summary]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u32_le(entries.len() as u32);
    for entry in entries {
        out.put_u8(kind_byte(entry.kind));
        out.put_u64_le(entry.version.hlc);
        out.put_u32_le(entry.version.origin);
        out.put_u16_le(entry.key.len() as u16);
        out.put_slice(&entry.key);
    }
    out.freeze()
}

pub fn decode_entries(body: &[u8]) -> Result<Vec<Summary>> {
    let mut cursor = Cursor {
        body,
        at: 0,
        what: "fullsync entries",
    };
    let count = cursor.count(ENTRIES_MAX, 15)?;
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let kind = match cursor.take(1)?[0] {
            1 => RecordKind::Put,
            2 => RecordKind::Tombstone,
            other => {
                return Err(Error::Corrupt {
                    what: "fullsync entries",
                    offset: cursor.at as u64 - 1,
                    reason: format!("unknown kind {other}"),
                })
            }
        };
        let hlc = cursor.u64()?;
        let origin = cursor.u32()?;
        let len = cursor.u16()? as usize;
        let key = Bytes::copy_from_slice(cursor.take(len)?);
        entries.push(Summary {
            key,
            version: Version::new(hlc, origin),
            kind,
        });
    }
    cursor.finish()?;
    Ok(entries)
}

pub fn encode_fetch(keys: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for key in keys {
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
    }
    out
}

pub fn decode_fetch(body: &[u8]) -> Result<Vec<Bytes>> {
    let mut cursor = Cursor {
        body,
        at: 0,
        what: "fullsync fetch",
    };
    let count = cursor.count(ENTRIES_MAX, 2)?;
    let mut keys = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = cursor.u16()? as usize;
        keys.push(Bytes::copy_from_slice(cursor.take(len)?));
    }
    cursor.finish()?;
    Ok(keys)
}

/// Bytes of a fingerprint on the wire.
const FINGERPRINT_LEN: usize = 6;

/// The fingerprint of an entry: the low 48 bits of xxh3 of its key, hlc
/// and origin.
pub fn fingerprint(entry: &Summary) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&entry.key);
    hasher.update(&entry.version.hlc.to_le_bytes());
    hasher.update(&entry.version.origin.to_le_bytes());
    hasher.digest() & ((1 << 48) - 1)
}

pub fn encode_entries_request(bucket: u16, fingerprints: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + FINGERPRINT_LEN * fingerprints.len());
    out.extend_from_slice(&bucket.to_le_bytes());
    out.extend_from_slice(&(fingerprints.len() as u32).to_le_bytes());
    for fingerprint in fingerprints {
        out.extend_from_slice(&fingerprint.to_le_bytes()[..FINGERPRINT_LEN]);
    }
    out
}

/// `(bucket, the asker's fingerprints)`.
pub fn decode_entries_request(body: &[u8]) -> Result<(u16, Vec<u64>)> {
    let mut cursor = Cursor {
        body,
        at: 0,
        what: "fullsync entries request",
    };
    let bucket = cursor.u16()?;
    let count = cursor.count(ENTRIES_MAX, FINGERPRINT_LEN)?;
    let fingerprints = (0..count)
        .map(|_| {
            let mut raw = [0u8; 8];
            raw[..FINGERPRINT_LEN].copy_from_slice(cursor.take(FINGERPRINT_LEN)?);
            Ok(u64::from_le_bytes(raw))
        })
        .collect::<Result<Vec<_>>>()?;
    cursor.finish()?;
    Ok((bucket, fingerprints))
}

/// The answer to an ENTRIES request: which of the asker's fingerprints
/// are missing here, and the entries here the asker did not fingerprint.
pub fn answer_entries(asked: &[u64], held: &[Summary]) -> (Vec<bool>, Vec<Summary>) {
    let held_prints: std::collections::HashSet<u64> = held.iter().map(fingerprint).collect();
    let asked_prints: std::collections::HashSet<u64> = asked.iter().copied().collect();
    let missing = asked
        .iter()
        .map(|print| !held_prints.contains(print))
        .collect();
    let differing = held
        .iter()
        .filter(|entry| !asked_prints.contains(&fingerprint(entry)))
        .cloned()
        .collect();
    (missing, differing)
}

pub fn encode_entries_reply(missing: &[bool], differing: &[Summary]) -> Bytes {
    let mut out = BytesMut::new();
    let mut bits = vec![0u8; missing.len().div_ceil(8)];
    for (index, &gone) in missing.iter().enumerate() {
        if gone {
            bits[index / 8] |= 1 << (index % 8);
        }
    }
    out.put_slice(&bits);
    out.put_slice(&encode_entries(differing));
    out.freeze()
}

/// `(missing, differing)` for a request that sent `asked` fingerprints.
pub fn decode_entries_reply(body: &[u8], asked: usize) -> Result<(Vec<bool>, Vec<Summary>)> {
    let bitmap_len = asked.div_ceil(8);
    if body.len() < bitmap_len {
        return Err(Error::Truncated {
            what: "fullsync entries reply",
            needed: bitmap_len as u64,
            available: body.len() as u64,
        });
    }
    let missing = (0..asked)
        .map(|index| body[index / 8] & (1 << (index % 8)) != 0)
        .collect();
    Ok((missing, decode_entries(&body[bitmap_len..])?))
}

/// Compares one bucket from an ENTRIES exchange: `local` (in the order
/// fingerprinted), which of them the other side lacks, and the other
/// side's entries that `local` did not fingerprint.
pub fn diff_fingerprinted(
    local: &[Summary],
    missing: &[bool],
    differing: &[Summary],
) -> BucketDiff {
    let mut theirs: HashMap<&[u8], Version> = HashMap::new();
    for entry in differing {
        theirs.insert(&entry.key[..], entry.version);
    }
    let ours: HashMap<&[u8], Version> = local.iter().map(|e| (&e.key[..], e.version)).collect();
    let mut diff = BucketDiff::default();
    for (entry, &gone) in local.iter().zip(missing) {
        if gone
            && theirs
                .get(&entry.key[..])
                .is_none_or(|version| *version < entry.version)
        {
            diff.push.push(entry.key.clone());
        }
    }
    for entry in differing {
        if ours
            .get(&entry.key[..])
            .is_none_or(|version| *version < entry.version)
        {
            diff.pull.push(entry.key.clone());
        }
    }
    diff
}

/// What one bucket's comparison found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketDiff {
    /// Keys held newer here (or only here): ship them.
    pub push: Vec<Bytes>,
    /// Keys held newer there (or only there): fetch them.
    pub pull: Vec<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The comparison with every entry of both sides: the oracle the
    /// fingerprinted comparison must agree with.
    fn diff_bucket(local: &[Summary], remote: &[Summary]) -> BucketDiff {
        let theirs: HashMap<&[u8], Version> =
            remote.iter().map(|e| (&e.key[..], e.version)).collect();
        let ours: HashMap<&[u8], Version> = local.iter().map(|e| (&e.key[..], e.version)).collect();
        let mut diff = BucketDiff::default();
        for entry in local {
            if theirs
                .get(&entry.key[..])
                .is_none_or(|version| *version < entry.version)
            {
                diff.push.push(entry.key.clone());
            }
        }
        for entry in remote {
            if ours
                .get(&entry.key[..])
                .is_none_or(|version| *version < entry.version)
            {
                diff.pull.push(entry.key.clone());
            }
        }
        diff
    }

    fn summary(key: &str, hlc: u64) -> Summary {
        Summary {
            key: Bytes::copy_from_slice(key.as_bytes()),
            version: Version::new(hlc, 1 << 24),
            kind: RecordKind::Put,
        }
    }

    #[test]
    fn bodies_round_trip_and_damage_is_refused() {
        let entries = vec![summary("a", 5), summary("bb", 7)];
        let body = encode_entries(&entries);
        assert_eq!(decode_entries(&body).expect("decodes"), entries);
        for cut in 0..body.len() {
            assert!(decode_entries(&body[..cut]).is_err(), "prefix {cut}");
        }
        assert_eq!(
            decode_digests(&encode_digests(&[1, 2, 3])).expect("digests"),
            vec![1, 2, 3]
        );
        assert_eq!(
            decode_digests_request(&encode_digests_request(65535, 1)).expect("range"),
            (65535, 1)
        );
        assert!(decode_digests_request(&encode_digests_request(65535, 2)).is_err());
        let keys = vec![Bytes::from_static(b"k1"), Bytes::from_static(b"")];
        assert_eq!(decode_fetch(&encode_fetch(&keys)).expect("fetch"), keys);
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_fetch(&huge).is_err());
        assert!(decode_digests(&huge).is_err());
    }

    #[test]
    fn fingerprinted_comparison_agrees_with_the_full_one() {
        let local = vec![
            summary("same", 5),
            summary("newer-here", 9),
            summary("only-here", 1),
            summary("older-here", 2),
        ];
        let remote = vec![
            summary("same", 5),
            summary("newer-here", 3),
            summary("only-there", 4),
            summary("older-here", 8),
        ];
        let prints: Vec<u64> = local.iter().map(fingerprint).collect();
        let request = encode_entries_request(7, &prints);
        let (bucket, asked) = decode_entries_request(&request).expect("request");
        assert_eq!((bucket, &asked), (7, &prints));
        let (missing, differing) = answer_entries(&asked, &remote);
        assert_eq!(missing, [false, true, true, true]);
        assert_eq!(differing.len(), 3, "'same' is not sent back");
        let reply = encode_entries_reply(&missing, &differing);
        let (missing, differing) = decode_entries_reply(&reply, asked.len()).expect("reply");
        assert_eq!(
            diff_fingerprinted(&local, &missing, &differing),
            diff_bucket(&local, &remote)
        );
        assert!(decode_entries_reply(&reply[..0], asked.len()).is_err());
    }

    #[test]
    fn a_bucket_diff_pushes_what_is_newer_here_and_pulls_what_is_newer_there() {
        let local = vec![
            summary("same", 5),
            summary("newer-here", 9),
            summary("only-here", 1),
            summary("older-here", 2),
        ];
        let remote = vec![
            summary("same", 5),
            summary("newer-here", 3),
            summary("only-there", 4),
            summary("older-here", 8),
        ];
        let diff = diff_bucket(&local, &remote);
        let names = |keys: &[Bytes]| {
            keys.iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&diff.push), ["newer-here", "only-here"]);
        assert_eq!(names(&diff.pull), ["only-there", "older-here"]);
    }
}
