//! A segment file's memory map: the only `unsafe` code of the engine.
//!
//! A segment is mapped once, shared, for its whole preallocated length. The
//! writer copies records into the map through a raw pointer; readers get
//! slices of bytes that were written before they asked, either as `&[u8]`
//! or as [`Bytes`] that keep the map alive after the store drops it.
//!
//! Invariants (they make the `unsafe` blocks sound):
//! - bytes below `written` (tracked by the owner of the [`MappedFile`]) are
//!   never written again while the map lives: the log is append-only, and
//!   recovery zeroes a cut tail before the map is handed to readers;
//! - the writer only writes at or above `written`, and only from the thread
//!   that owns the store (`&mut` access);
//! - the file is preallocated to the map's length before it is mapped, and
//!   nothing in this process truncates a mapped file. Another process
//!   truncating it would fault readers (SIGBUS): the store's lock file and
//!   the data directory's permissions are what guard against that.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

/// Keeps a map alive for as long as any [`Bytes`] handed out of it.
struct MapOwner(Arc<MmapRaw>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the map is valid for `len()` bytes while `self.0` lives.
        // `Bytes::from_owner` calls this once, at creation, to learn the
        // pointer and length; it never holds the reference across writes.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.0.len()) }
    }
}

/// A shared memory map of a whole segment file.
pub(crate) struct MappedFile {
    map: Arc<MmapRaw>,
    whole: Bytes,
    writable: bool,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("len", &self.map.len())
            .field("writable", &self.writable)
            .finish()
    }
}

impl MappedFile {
    /// Maps `len` bytes of `file` for reading and writing.
    pub(crate) fn map_writable(file: &File, len: usize) -> io::Result<MappedFile> {
        let map = MmapOptions::new().len(len).map_raw(file)?;
        Ok(Self::from_raw(map, true))
    }

    /// Maps `len` bytes of `file` for reading only.
    pub(crate) fn map_read_only(file: &File, len: usize) -> io::Result<MappedFile> {
        let map = MmapOptions::new().len(len).map_raw_read_only(file)?;
        Ok(Self::from_raw(map, false))
    }

    fn from_raw(map: MmapRaw, writable: bool) -> MappedFile {
        let map = Arc::new(map);
        let whole = Bytes::from_owner(MapOwner(Arc::clone(&map)));
        MappedFile {
            map,
            whole,
            writable,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The bytes `start..end`, which the caller guarantees are written.
    pub(crate) fn slice(&self, start: usize, end: usize) -> &[u8] {
        assert!(
            start <= end && end <= self.map.len(),
            "slice {start}..{end} outside map"
        );
        // SAFETY: in bounds (asserted); the range is below `written` (the
        // caller's invariant), so no write aliases it while the borrow of
        // `self` lives.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), end - start) }
    }

    /// The bytes `start..end` as [`Bytes`] sharing the map, without a copy.
    pub(crate) fn bytes(&self, start: usize, end: usize) -> Bytes {
        assert!(
            start <= end && end <= self.map.len(),
            "bytes {start}..{end} outside map"
        );
        self.whole.slice(start..end)
    }

    /// Copies `data` into the map at `offset`, which the caller guarantees is
    /// at or above the written end.
    pub(crate) fn write_at(&mut self, offset: usize, data: &[u8]) {
        self.region_mut(offset, data.len()).copy_from_slice(data);
    }

    /// Mutable access to the unwritten region `offset..offset + len`.
    pub(crate) fn region_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(self.writable, "write into a read-only map");
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.map.len()),
            "write outside map"
        );
        // SAFETY: in bounds (asserted), the map is writable, and the region
        // lies at or above `written`, which no reader has been handed; the
        // `&mut self` borrow keeps this the only writer.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset), len) }
    }

    /// Asks the kernel to fault in `offset..offset + len` for writing now, so
    /// the appender does not take one page fault per page. Best effort.
    pub(crate) fn populate_for_write(&self, offset: usize, len: usize) {
        if !self.writable || offset >= self.map.len() {
            return;
        }
        let page = 4096;
        let start = offset / page * page;
        let end = (offset + len).min(self.map.len());
        const MADV_POPULATE_WRITE: i32 = 23;
        // SAFETY: the range lies inside the mapping; madvise does not move or
        // unmap it, and POPULATE_WRITE only pre-faults pages (zeroed file
        // pages stay zero), so no byte a reader can see changes.
        unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(start).cast(),
                end - start,
                MADV_POPULATE_WRITE,
            );
        }
    }
}
