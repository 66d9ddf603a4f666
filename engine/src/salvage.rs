//! Salvage: copying every readable record of a damaged store into a fresh one.
//!
//! An operator's tool for a store that refuses to open because a sealed
//! segment is corrupt. It reads every segment file as plain bytes (no map,
//! no hints), keeps each record whose checksum holds, and past a bad record
//! searches forward byte by byte for the next record that checks out. The
//! records are applied to the target store by the usual newest-wins rule, so
//! the order of segments does not matter. The source is never modified.

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{self, RecordError, RecordKind, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::options::Options;
use crate::store::Store;

/// What a salvage found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SalvageReport {
    pub segments_read: usize,
    pub records_recovered: u64,
    /// Runs of bytes that held no valid record.
    pub damaged_regions: u64,
    pub bytes_skipped: u64,
}

/// Copies every record of the store in `source` that checks out into a new
/// store in `target` (which must not hold a store yet).
pub fn salvage(source: &Path, target: &Path, options: Options) -> Result<SalvageReport> {
    if source == target {
        return Err(Error::InvalidOption {
            name: "target",
            reason: "must differ from the source".to_string(),
        });
    }
    if target.join("LOCK").exists() {
        return Err(Error::InvalidOption {
            name: "target",
            reason: format!("{} already holds a store", target.display()),
        });
    }
    let mut names: Vec<_> = fs::read_dir(source)
        .map_err(|e| Error::io("list directory", source, e))?
        .filter_map(|item| item.ok().map(|item| item.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    names.sort();
    let mut store = Store::open(target, options)?;
    let mut report = SalvageReport::default();
    for path in names {
        let bytes = fs::read(&path).map_err(|e| Error::io("read segment", &path, e))?;
        report.segments_read += 1;
        salvage_segment(&mut store, &bytes, &mut report)?;
    }
    store.close()?;
    Ok(report)
}

fn salvage_segment(store: &mut Store, bytes: &[u8], report: &mut SalvageReport) -> Result<()> {
    let mut offset = SEGMENT_HEADER_LEN.min(bytes.len());
    let mut damaged_from: Option<usize> = None;
    while offset + RECORD_HEADER_LEN <= bytes.len() {
        match format::decode_record(&bytes[offset..]) {
            Ok(header) => {
                if let Some(start) = damaged_from.take() {
                    report.damaged_regions += 1;
                    report.bytes_skipped += (offset - start) as u64;
                }
                if header.kind == RecordKind::Seal {
                    return Ok(());
                }
                let key_start = offset + RECORD_HEADER_LEN;
                let value_start = key_start + header.key_len as usize;
                let key = &bytes[key_start..value_start];
                let value = &bytes[value_start..value_start + header.value_len as usize];
                store.apply(header.kind, key, value, header.version, header.expires_at)?;
                report.records_recovered += 1;
                offset += header.record_len();
            }
            Err(RecordError::EndOfData) if damaged_from.is_none() => break,
            Err(_) => {
                damaged_from.get_or_insert(offset);
                offset += 1;
            }
        }
    }
    if let Some(start) = damaged_from {
        report.damaged_regions += 1;
        report.bytes_skipped += (offset - start) as u64;
    }
    Ok(())
}
