//! Opening a store: rebuilding the key directory and cutting a torn tail.
//!
//! The segments up to the newest one with a valid hint file are *sealed*:
//! they were synced before their hint was written, so any bad byte in them is
//! corruption and opening fails with the file and offset (run `salvage`).
//! The segments after it are the *tail*: they may hold writes that never
//! reached the disk whole. The tail is scanned and cut at its first bad
//! record; everything after the cut (including later tail segments) is
//! removed, counted and logged. Nothing acknowledged can be after the cut,
//! because a sync always covers every earlier byte of the log.
//!
//! Hints are trusted only when their checksum holds and they name the
//! segment's header checksum; otherwise the segment is scanned.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use crate::digest::DigestTable;
use crate::error::{Error, Result};
use crate::format::{self, HintEntry, RecordKind, Version, SEGMENT_HEADER_LEN};
use crate::fsutil::{sync_directory, DirectoryLock, Preallocation};
use crate::keydir::{Entry, KeyDir};
use crate::options::{Durability, Options};
use crate::segment::{hint_path, segment_path, ScanEnd, Segment};
use crate::store::{LogPosition, Stats, Store};

/// What recovery learns of one record, from a hint or from a scan.
struct Replayed {
    offset: u32,
    hash_high: u32,
    record_len: u32,
    kind: RecordKind,
    version: Version,
    expires_at: u32,
    digest: u64,
}

pub(crate) fn open(directory: &Path, options: Options) -> Result<Store> {
    options.validate()?;
    fs::create_dir_all(directory).map_err(|e| Error::io("create directory", directory, e))?;
    let lock = DirectoryLock::acquire(directory)?;
    let ids = list_segments(directory)?;
    let directory_handle =
        File::open(directory).map_err(|e| Error::io("open directory", directory, e))?;
    let preallocation = match options.durability {
        Durability::None => Preallocation::Reserve,
        Durability::Periodic { .. } | Durability::Sync => Preallocation::ZeroFill,
    };
    let mut store = Store {
        directory: directory.to_path_buf(),
        keydir: KeyDir::with_capacity(options.expected_keys),
        options,
        preallocation,
        segments: Vec::new(),
        free_slots: Vec::new(),
        by_id: BTreeMap::new(),
        active: 0,
        next_segment_id: ids.last().map_or(1, |id| id + 1),
        digests: DigestTable::new(),
        durable: LogPosition::default(),
        directory_handle: Arc::new(directory_handle),
        directory_generation: 0,
        directory_synced_generation: 0,
        write_failure: None,
        cursors: BTreeMap::new(),
        compaction: None,
        stats: Stats::default(),
        last_sync_ms: 0,
        _lock: lock,
    };
    let mut digests_by_slot = Vec::new();
    let sealed_through = newest_hinted(directory, &ids);
    let mut tail_cut = false;
    for &id in &ids {
        if tail_cut {
            remove_cut_segment(&mut store, id)?;
        } else if Some(id) <= sealed_through {
            load_sealed(&mut store, id, &mut digests_by_slot)?;
        } else {
            tail_cut = load_tail(&mut store, id, &mut digests_by_slot)?;
        }
    }
    finish_digests(&mut store, &digests_by_slot);
    choose_active(&mut store)?;
    // The names of the segments kept may not be durable yet either.
    sync_directory(directory)?;
    store.durable = store.written_position();
    store.last_sync_ms = store.options.clock.now_ms();
    Ok(store)
}

/// Segment ids present, ascending; leftovers of interrupted work removed.
fn list_segments(directory: &Path) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    let listing = fs::read_dir(directory).map_err(|e| Error::io("list directory", directory, e))?;
    for item in listing {
        let item = item.map_err(|e| Error::io("list directory", directory, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.ends_with(".compact") || name.ends_with(".tmp") {
            let path = item.path();
            fs::remove_file(&path).map_err(|e| Error::io("remove leftover", &path, e))?;
            continue;
        }
        if let Some(stem) = name.strip_suffix(".seg") {
            if let Ok(id) = stem.parse::<u32>() {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Reads and checks the hint of segment `id` against the segment's header.
fn read_hint(directory: &Path, id: u32) -> Option<format::HintFile> {
    let bytes = fs::read(hint_path(directory, id)).ok()?;
    let hint = format::decode_hint_file(&bytes).ok()?;
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    let file = File::open(segment_path(directory, id)).ok()?;
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0).ok()?;
    let valid = hint.segment_id == id
        && format::decode_segment_header(&header) == Ok(id)
        && format::segment_header_checksum(&header) == hint.segment_checksum;
    valid.then_some(hint)
}

fn newest_hinted(directory: &Path, ids: &[u32]) -> Option<u32> {
    ids.iter()
        .rev()
        .copied()
        .find(|&id| read_hint(directory, id).is_some())
}

/// How many hint entries ahead of the one being replayed the index bucket
/// is prefetched.
const REPLAY_PREFETCH_DISTANCE: usize = 16;

/// Loads a sealed segment from its hint, or scans it strictly.
fn load_sealed(store: &mut Store, id: u32, digests: &mut Vec<u64>) -> Result<()> {
    let path = segment_path(&store.directory, id);
    let segment = Segment::open(path.clone(), id, false)?;
    let slot = store.add_segment(segment);
    store.by_id.insert(id, slot);
    if let Some(hint) = read_hint(&store.directory, id) {
        let capacity = store.segment(slot).capacity();
        let fits = |e: &HintEntry| e.offset as u64 + e.record_len as u64 <= hint.data_end as u64;
        if hint.data_end < capacity && hint.entries.iter().all(fits) {
            store.segment_mut(slot).set_extent(hint.data_end, true);
            store.segment_mut(slot).hinted = true;
            // Within one segment a key's records have distinct versions and
            // replay keeps the newest, so the order inside it is free: take
            // the one that sweeps the key directory's index.
            let entries = store
                .keydir
                .in_insertion_order(&hint.entries, |e| e.hash_high);
            for (i, e) in entries.iter().enumerate() {
                // The probes sweep the index in order but sparsely (a
                // segment holds a few keys per region): hint the bucket a
                // few entries ahead so its miss overlaps this one's work.
                if let Some(ahead) = entries.get(i + REPLAY_PREFETCH_DISTANCE) {
                    store.keydir.prefetch_bucket(ahead.hash_high);
                }
                let record = Replayed {
                    offset: e.offset,
                    hash_high: e.hash_high,
                    record_len: e.record_len,
                    kind: e.kind,
                    version: e.version,
                    expires_at: e.expires_at,
                    digest: e.digest,
                };
                replay(store, slot, record, digests);
            }
            store.stats.segments_loaded_from_hints += 1;
            return Ok(());
        }
    }
    let (records, end) = scan_records(store, slot);
    if let Some((offset, reason)) = end.damage {
        return Err(Error::corrupt(
            &path,
            offset as u64,
            format!("sealed segment: {reason}"),
        ));
    }
    if !end.sealed {
        return Err(Error::corrupt(
            &path,
            end.data_end as u64,
            "sealed segment has no seal record",
        ));
    }
    store.segment_mut(slot).set_extent(end.data_end, true);
    for record in records {
        replay(store, slot, record, digests);
    }
    store.stats.segments_scanned += 1;
    Ok(())
}

/// The good data records of a segment, read from its bytes, and where the
/// scan stopped.
fn scan_records(store: &Store, slot: u32) -> (Vec<Replayed>, ScanEnd) {
    let segment = store.segment(slot);
    let mut records = Vec::new();
    let end = segment.scan(|offset, header| {
        let key = segment.key_bytes(offset, header);
        records.push(Replayed {
            offset,
            hash_high: format::hash_high(key),
            record_len: header.record_len() as u32,
            kind: header.kind,
            version: header.version,
            expires_at: header.expires_at,
            digest: format::entry_digest(key, header.version),
        });
    });
    (records, end)
}

/// Scans a tail segment and cuts it at its first bad record. Returns true
/// when it was cut (every later segment must then go).
fn load_tail(store: &mut Store, id: u32, digests: &mut Vec<u64>) -> Result<bool> {
    let path = segment_path(&store.directory, id);
    let segment = match Segment::open(path.clone(), id, true) {
        Ok(segment) => segment,
        Err(error) if error.is_corruption() => {
            tracing::warn!(path = %path.display(), %error, "tail segment unreadable; removing it and what follows");
            remove_cut_segment(store, id)?;
            return Ok(true);
        }
        Err(error) => return Err(error),
    };
    let slot = store.add_segment(segment);
    store.by_id.insert(id, slot);
    let (records, end) = scan_records(store, slot);
    store.stats.segments_scanned += 1;
    // A tail segment the scan cannot follow to its seal ends the log: a sync
    // covers every earlier byte, seal included, so nothing in a later
    // segment was acknowledged. Bytes past the stop (records after a page
    // that never reached the disk) are zeroed, so appends cannot make them
    // readable again.
    let cut = !end.sealed;
    // The writer keeps room for a seal after every record; a file too short
    // for it was cut short from outside, and rolling over would fail.
    let seal_end = end.data_end as u64 + format::RECORD_HEADER_LEN as u64;
    if cut && (store.segment(slot).capacity() as u64) < seal_end {
        return Err(Error::corrupt(
            &path,
            end.data_end as u64,
            "tail segment ends before the room of its seal record",
        ));
    }
    if let Some((offset, reason)) = end.damage {
        let lost = store.segment(slot).capacity() - offset;
        tracing::warn!(path = %path.display(), offset, %reason, "torn tail cut");
        store.stats.torn_bytes_cut += lost as u64;
    }
    let segment = store.segment_mut(slot);
    if cut {
        segment.zero_tail(end.data_end)?;
    }
    // What recovery keeps counts as durable (`durable_position` starts at
    // the written end), which holds only once it is on the disk: after a
    // process crash it may still sit in the page cache.
    segment
        .file
        .sync_data()
        .map_err(|e| Error::io("fdatasync recovered segment", &path, e))?;
    store.segment_mut(slot).set_extent(end.data_end, end.sealed);
    for record in records {
        replay(store, slot, record, digests);
    }
    Ok(cut)
}

/// Removes a tail segment that lies after a cut: nothing in it was ever
/// acknowledged as durable.
fn remove_cut_segment(store: &mut Store, id: u32) -> Result<()> {
    let path = segment_path(&store.directory, id);
    let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    tracing::warn!(path = %path.display(), bytes, "removing segment after a torn tail");
    store.stats.torn_bytes_cut += bytes;
    fs::remove_file(&path).map_err(|e| Error::io("remove segment", &path, e))?;
    let _ = fs::remove_file(hint_path(&store.directory, id));
    sync_directory(&store.directory)
}

/// Applies one recovered record to the key directory: newest version wins.
fn replay(store: &mut Store, slot: u32, record: Replayed, digests: &mut Vec<u64>) {
    let segments = &store.segments;
    let key_of = |segment: u32, offset: u32| {
        segments[segment as usize]
            .as_ref()
            .and_then(|s| s.key_at(offset))
    };
    let entry = Entry::new(
        record.hash_high,
        slot,
        record.offset,
        record.record_len,
        record.kind == RecordKind::Tombstone,
        record.version,
        record.expires_at,
    );
    // The record's own key is read from the log only when an entry with the
    // same hash turns up: a hinted segment's values and keys stay untouched.
    let existing = store.keydir.find_or_insert(entry, |other| {
        key_of(other.segment, other.offset) == key_of(slot, record.offset)
    });
    match existing {
        Err(index) => {
            let old = *store.keydir.get(index);
            if old.version() >= record.version {
                return;
            }
            store.segment_mut(old.segment).live_bytes -= old.record_len() as u64;
            store.keydir.set(index, entry);
            digests[index as usize] = record.digest;
        }
        Ok(index) => {
            let index = index as usize;
            if digests.len() <= index {
                digests.resize(index + 1, 0);
            }
            digests[index] = record.digest;
        }
    }
    store.segment_mut(slot).live_bytes += record.record_len as u64;
}

fn finish_digests(store: &mut Store, digests: &[u64]) {
    for (slot, entry) in store.keydir.iter() {
        store.digests.toggle(
            format::bucket_of_hash_high(entry.hash_high),
            digests[slot as usize],
        );
    }
}

/// Makes the newest segment the active one, or creates one.
fn choose_active(store: &mut Store) -> Result<()> {
    // An unsealed newest segment is a tail segment, opened writable; a
    // segment of the sealed range always ends with a seal (load_sealed).
    if let Some((_, &slot)) = store.by_id.iter().next_back() {
        if !store.segment(slot).sealed {
            let preallocation = store.preallocation;
            store.segment_mut(slot).preallocation = preallocation;
            store.active = slot;
            return Ok(());
        }
    }
    let id = store.next_segment_id;
    let now_ms = store.options.clock.now_ms();
    let segment = Segment::create(
        segment_path(&store.directory, id),
        id,
        store.options.segment_bytes,
        store.preallocation,
        now_ms,
        0,
    )?;
    store.next_segment_id += 1;
    let slot = store.add_segment(segment);
    store.by_id.insert(id, slot);
    store.active = slot;
    store.segment_mut(slot).synced = 0;
    sync_directory(&store.directory)?;
    Ok(())
}
