//! Writing hint files for sealed segments.
//!
//! A hint vouches that its segment was durable and whole when written, so
//! recovery trusts it instead of reading values. Hints are written in
//! segment order and only after the segment's bytes are synced; every
//! segment before a hinted one is therefore hinted or known durable.

use crate::error::{Error, Result};
use crate::format::{self, HintEntry};
use crate::fsutil::replace_file;
use crate::segment::{hint_path, Segment};
use crate::store::Store;

/// The hint entries of a segment, from a verifying scan of its records.
pub(crate) fn hint_entries(segment: &Segment) -> Result<Vec<HintEntry>> {
    let mut entries = Vec::new();
    let end = segment.scan(|offset, header| {
        let key = segment.key_bytes(offset, header);
        entries.push(HintEntry {
            hash_high: format::hash_high(key),
            offset,
            record_len: header.record_len() as u32,
            kind: header.kind,
            version: header.version,
            expires_at: header.expires_at,
            digest: format::entry_digest(key, header.version),
        });
    });
    if let Some((offset, reason)) = end.damage {
        return Err(Error::corrupt(
            &segment.path,
            offset as u64,
            reason.to_string(),
        ));
    }
    if !end.sealed || end.data_end != segment.data_end {
        return Err(Error::corrupt(
            &segment.path,
            end.data_end as u64,
            "segment does not end where it was sealed",
        ));
    }
    Ok(entries)
}

impl Store {
    /// Writes the hint of the oldest sealed segment that has none, syncing
    /// the segment first if needed. Returns false when none was missing.
    pub(crate) fn write_next_hint(&mut self) -> Result<bool> {
        let Some(slot) = self.by_id.values().copied().find(|&slot| {
            let segment = self.segment(slot);
            segment.sealed && !segment.hinted
        }) else {
            return Ok(false);
        };
        let segment = self.segment(slot);
        if segment.synced < segment.written {
            if let Err(error) = segment.file.sync_data() {
                let path = segment.path.clone();
                self.sync_failed(&error);
                return Err(Error::io("fdatasync sealed segment", path, error));
            }
            let segment = self.segment_mut(slot);
            segment.synced = segment.written;
        }
        let segment = self.segment(slot);
        let entries = hint_entries(segment)?;
        let bytes = format::encode_hint_file(
            segment.id,
            segment.header_checksum,
            segment.data_end,
            &entries,
        );
        replace_file(&hint_path(&self.directory, segment.id), &bytes)?;
        self.segment_mut(slot).hinted = true;
        Ok(true)
    }
}
