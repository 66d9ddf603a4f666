//! One segment file: its header, its map, appending and reading records.
//!
//! Invariants:
//! - `data_end <= written <= map.len()`; bytes in `32..written` are records
//!   and never change; bytes from `written` on are zero until appended;
//! - a sealed segment ends with a seal record at `data_end` and takes no
//!   more appends; `written == data_end + RECORD_HEADER_LEN` then;
//! - `synced <= written`: bytes below `synced` are known durable.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::{
    self, RecordError, RecordFields, RecordHeader, RecordKind, SEGMENT_HEADER_LEN,
};
use crate::fsutil::{preallocate, Preallocation};
use crate::mapped::MappedFile;

/// Blocks are allocated ahead of the appender this many bytes at a time, so
/// a store's disk use follows its data, not its segment size.
const ALLOCATION_CHUNK_BYTES: u32 = 4 << 20;

/// Bytes faulted in ahead of the appender at a time.
const POPULATE_AHEAD_BYTES: u32 = 2 << 20;

pub(crate) fn segment_path(directory: &Path, id: u32) -> PathBuf {
    directory.join(format!("{id:08}.seg"))
}

pub(crate) fn hint_path(directory: &Path, id: u32) -> PathBuf {
    directory.join(format!("{id:08}.hint"))
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u32,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub map: MappedFile,
    pub header_checksum: u64,
    pub written: u32,
    pub data_end: u32,
    pub sealed: bool,
    pub synced: u32,
    /// Bytes of records that are some key's newest version.
    pub live_bytes: u64,
    pub hinted: bool,
    populated_to: u32,
    /// Bytes from the start that have disk blocks; appends stay below it.
    allocated: u32,
    pub preallocation: Preallocation,
    /// Where a `pwrite` append encodes its record first.
    scratch: Vec<u8>,
}

/// What a scan of a segment's records found.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Offset just past the last good data record.
    pub data_end: u32,
    /// Whether a seal record closed the segment.
    pub sealed: bool,
    /// The first bad record, if the scan stopped on one (not on zeros).
    pub damage: Option<(u32, RecordError)>,
}

impl Segment {
    /// Creates segment `id` at `path`, `len` bytes long and mapped, with the
    /// first `initial_allocation` bytes given disk blocks (more come with
    /// [`Segment::reserve`]).
    pub(crate) fn create(
        path: PathBuf,
        id: u32,
        len: u32,
        how: Preallocation,
        now_ms: u64,
        initial_allocation: u32,
    ) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create segment", &path, e))?;
        let allocated = initial_allocation.clamp(SEGMENT_HEADER_LEN as u32, len);
        let sized = file
            .set_len(len as u64)
            .map_err(|e| Error::io("size segment", &path, e));
        if let Err(error) = sized.and_then(|()| preallocate(&file, &path, 0, allocated as u64, how))
        {
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        let mut map = MappedFile::map_writable(&file, len as usize)
            .map_err(|e| Error::io("map segment", &path, e))?;
        let header = format::encode_segment_header(id, now_ms);
        map.write_at(0, &header);
        let mut segment = Segment::fresh(id, path, file, map, &header, allocated, how);
        segment.populate_ahead();
        Ok(segment)
    }

    /// A segment whose records are not known yet: nothing past the header
    /// written or synced (`create` then appends; `open` then calls
    /// `set_extent`).
    fn fresh(
        id: u32,
        path: PathBuf,
        file: File,
        map: MappedFile,
        header: &[u8; SEGMENT_HEADER_LEN],
        allocated: u32,
        preallocation: Preallocation,
    ) -> Segment {
        Segment {
            id,
            path,
            file: Arc::new(file),
            map,
            header_checksum: format::segment_header_checksum(header),
            written: SEGMENT_HEADER_LEN as u32,
            data_end: SEGMENT_HEADER_LEN as u32,
            sealed: false,
            synced: 0,
            live_bytes: 0,
            hinted: false,
            populated_to: 0,
            allocated,
            preallocation,
            scratch: Vec::new(),
        }
    }

    /// Opens an existing segment file and checks its header. Its records are
    /// not read: the caller scans or loads a hint, then calls `set_extent`.
    pub(crate) fn open(path: PathBuf, expected_id: u32, writable: bool) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat segment", &path, e))?
            .len();
        if len > u32::MAX as u64 {
            return Err(Error::corrupt(
                &path,
                0,
                format!("segment of {len} bytes exceeds 4 GiB"),
            ));
        }
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        (&file)
            .read_exact(&mut header)
            .map_err(|_| Error::corrupt(&path, 0, "segment shorter than its header"))?;
        let id = format::decode_segment_header(&header)
            .map_err(|reason| Error::corrupt(&path, 0, reason))?;
        if id != expected_id {
            return Err(Error::corrupt(
                &path,
                12,
                format!("header names segment {id}, file name {expected_id}"),
            ));
        }
        let map = if writable {
            MappedFile::map_writable(&file, len as usize)
        } else {
            MappedFile::map_read_only(&file, len as usize)
        }
        .map_err(|e| Error::io("map segment", &path, e))?;
        let allocated = SEGMENT_HEADER_LEN as u32;
        Ok(Segment::fresh(
            id,
            path,
            file,
            map,
            &header,
            allocated,
            Preallocation::Reserve,
        ))
    }

    /// Records what recovery learned of the segment's contents; everything
    /// it finds on disk counts as synced.
    pub(crate) fn set_extent(&mut self, data_end: u32, sealed: bool) {
        assert!(data_end as usize >= SEGMENT_HEADER_LEN);
        self.data_end = data_end;
        self.sealed = sealed;
        self.written = if sealed {
            data_end + format::RECORD_HEADER_LEN as u32
        } else {
            data_end
        };
        assert!(self.written as usize <= self.map.len());
        self.synced = self.written;
        self.populated_to = self.written;
        // Blocks past the written end are unknown after a restart, except the
        // room of a seal record, which every append reserved with its record.
        // The next `reserve` allocates the rest again (harmless where it exists).
        self.allocated = (self.written + format::RECORD_HEADER_LEN as u32).min(self.capacity());
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.map.len() as u32
    }

    /// True when a record of `record_len` bytes and a seal after it still fit.
    pub(crate) fn fits(&self, record_len: usize) -> bool {
        !self.sealed
            && self.written as usize + record_len + format::RECORD_HEADER_LEN <= self.map.len()
    }

    /// Gives disk blocks to the room a record of `record_len` bytes and a
    /// seal after it need, ahead of the appender in chunks. Fails cleanly
    /// (nothing written) when the disk is full.
    pub(crate) fn reserve(&mut self, record_len: usize) -> Result<()> {
        let needed = self.written as u64 + record_len as u64 + format::RECORD_HEADER_LEN as u64;
        if needed <= self.allocated as u64 {
            return Ok(());
        }
        let target = needed
            .max(self.allocated as u64 + ALLOCATION_CHUNK_BYTES as u64)
            .min(self.map.len() as u64);
        let start = self.allocated as u64;
        preallocate(
            &self.file,
            &self.path,
            start,
            target - start,
            self.preallocation,
        )?;
        self.allocated = target as u32;
        Ok(())
    }

    /// Whether appends `pwrite` each record instead of storing it through
    /// the map: yes for zero-filled segments, i.e. stores that sync as they
    /// go (`Durability::Sync`, `Periodic`).
    ///
    /// Measured on this ext4 VM, 64 records (9.5 KB) then fdatasync, 500
    /// times: 0.13-0.15 ms median per group after `pwrite`, 0.43-1.86 ms
    /// after stores through a shared map (a store into a page the last sync
    /// cleaned faults, and the inode's next datasync then commits the
    /// journal). Readers still read through the map: `pwrite` and a shared
    /// map share the page cache.
    pub(crate) fn appends_by_pwrite(&self) -> bool {
        self.preallocation == Preallocation::ZeroFill
    }

    /// Appends a record through the map; returns its offset. The caller
    /// checked `fits` and `reserve`; a `pwrite` segment uses `try_append`.
    pub(crate) fn append(&mut self, fields: &RecordFields<'_>) -> u32 {
        assert!(
            !self.appends_by_pwrite(),
            "a pwrite segment appends with try_append"
        );
        self.try_append(fields)
            .expect("an append through the map does no I/O")
    }

    /// Appends a record; returns its offset. The caller checked `fits` and
    /// `reserve` (a seal record takes the room every earlier `fits` kept
    /// for it).
    ///
    /// Fails only on a `pwrite` segment whose write failed: the bytes at
    /// `written` may then be half written, so the caller must append
    /// nothing more (the store refuses writes from then on).
    pub(crate) fn try_append(&mut self, fields: &RecordFields<'_>) -> Result<u32> {
        let room_needed = if fields.kind == RecordKind::Seal {
            fields.record_len()
        } else {
            fields.record_len() + format::RECORD_HEADER_LEN
        };
        assert!(
            !self.sealed && self.written as usize + room_needed <= self.allocated as usize,
            "append past the end of segment {}",
            self.id
        );
        let offset = self.written;
        let len = fields.record_len();
        if self.appends_by_pwrite() {
            self.scratch.clear();
            self.scratch.resize(len, 0);
            format::encode_record(fields, &mut self.scratch);
            std::os::unix::fs::FileExt::write_all_at(&*self.file, &self.scratch, offset as u64)
                .map_err(|e| Error::io("write record", &self.path, e))?;
        } else {
            format::encode_record(fields, self.map.region_mut(offset as usize, len));
        }
        self.written += len as u32;
        self.data_end = self.written;
        if !self.appends_by_pwrite() && self.written + POPULATE_AHEAD_BYTES / 2 > self.populated_to
        {
            self.populate_ahead();
        }
        Ok(offset)
    }

    fn populate_ahead(&mut self) {
        let start = self.populated_to.max(self.written);
        let end = start
            .saturating_add(POPULATE_AHEAD_BYTES)
            .min(self.allocated);
        if end > start {
            self.map
                .populate_for_write(start as usize, (end - start) as usize);
        }
        self.populated_to = end.max(start);
    }

    /// Closes the segment with a seal record (through the map).
    pub(crate) fn seal(&mut self) {
        assert!(
            !self.appends_by_pwrite(),
            "a pwrite segment seals with try_seal"
        );
        self.try_seal().expect("a seal through the map does no I/O");
    }

    /// Closes the segment with a seal record; fails as `try_append` does.
    pub(crate) fn try_seal(&mut self) -> Result<()> {
        assert!(!self.sealed);
        let fields = RecordFields {
            kind: RecordKind::Seal,
            key: &[],
            value: &[],
            version: crate::Version::default(),
            expires_at: 0,
        };
        let data_end = self.written;
        self.try_append(&fields)?;
        self.data_end = data_end;
        self.sealed = true;
        Ok(())
    }

    /// Decodes and verifies the record at `offset`.
    pub(crate) fn record_at(&self, offset: u32) -> Result<RecordHeader> {
        if offset < SEGMENT_HEADER_LEN as u32 || offset >= self.written {
            return Err(Error::corrupt(
                &self.path,
                offset as u64,
                "record offset outside written data",
            ));
        }
        let bytes = self.map.slice(offset as usize, self.written as usize);
        format::decode_record(bytes)
            .map_err(|reason| Error::corrupt(&self.path, offset as u64, reason.to_string()))
    }

    /// Hints the cache lines of the `len` bytes at `offset` (a record a
    /// lookup will read); nothing past `written`.
    pub(crate) fn prefetch(&self, offset: u32, len: u32) {
        let end = offset.saturating_add(len).min(self.written);
        if offset < end {
            crate::prefetch::prefetch_bytes(self.map.slice(offset as usize, end as usize));
        }
    }

    /// The key of the record at `offset`, read without checking the record's
    /// checksum (for comparisons only; a wrong key just fails to match).
    pub(crate) fn key_at(&self, offset: u32) -> Option<&[u8]> {
        if offset >= self.written {
            return None;
        }
        let bytes = self.map.slice(offset as usize, self.written as usize);
        let header = format::decode_header(bytes).ok()?;
        let start = format::RECORD_HEADER_LEN;
        Some(&bytes[start..start + header.key_len as usize])
    }

    pub(crate) fn key_bytes(&self, offset: u32, header: &RecordHeader) -> &[u8] {
        let start = offset as usize + format::RECORD_HEADER_LEN;
        self.map.slice(start, start + header.key_len as usize)
    }

    /// The value of a verified record, sharing the map.
    pub(crate) fn value_bytes(&self, offset: u32, header: &RecordHeader) -> Bytes {
        let start = offset as usize + format::RECORD_HEADER_LEN + header.key_len as usize;
        self.map.bytes(start, start + header.value_len as usize)
    }

    pub(crate) fn key_shared(&self, offset: u32, header: &RecordHeader) -> Bytes {
        let start = offset as usize + format::RECORD_HEADER_LEN;
        self.map.bytes(start, start + header.key_len as usize)
    }

    /// Walks the records from the header on, calling `visit` for each good
    /// data record, until zeros, a seal, a bad record or the end of the map.
    pub(crate) fn scan(&self, mut visit: impl FnMut(u32, &RecordHeader)) -> ScanEnd {
        let mut offset = SEGMENT_HEADER_LEN as u32;
        let end = self.map.len();
        loop {
            let bytes = self.map.slice(offset as usize, end);
            match format::decode_record(bytes) {
                Ok(header) if header.kind == RecordKind::Seal => {
                    return ScanEnd {
                        data_end: offset,
                        sealed: true,
                        damage: None,
                    };
                }
                Ok(header) => {
                    visit(offset, &header);
                    offset += header.record_len() as u32;
                }
                Err(RecordError::EndOfData) => {
                    return ScanEnd {
                        data_end: offset,
                        sealed: false,
                        damage: None,
                    }
                }
                Err(RecordError::Truncated) if bytes.iter().all(|&b| b == 0) => {
                    return ScanEnd {
                        data_end: offset,
                        sealed: false,
                        damage: None,
                    };
                }
                Err(error) => {
                    return ScanEnd {
                        data_end: offset,
                        sealed: false,
                        damage: Some((offset, error)),
                    }
                }
            }
        }
    }

    /// Zeroes `from..` to the end of the map and syncs it: recovery's cut of a
    /// torn tail, so no stale record can ever reappear after new appends.
    pub(crate) fn zero_tail(&mut self, from: u32) -> Result<()> {
        let len = self.map.len() - from as usize;
        let region = self.map.region_mut(from as usize, len);
        let mut dirty = false;
        // Page by page, so the holes of a sparse segment stay holes.
        for page in region.chunks_mut(4096) {
            if page.iter().any(|&b| b != 0) {
                page.fill(0);
                dirty = true;
            }
        }
        if dirty {
            self.file
                .sync_data()
                .map_err(|e| Error::io("fdatasync cut segment", &self.path, e))?;
        }
        Ok(())
    }
}
