//! Compaction: rewriting sealed segments whose dead fraction passed the
//! threshold, in bounded slices so a core keeps serving between them.
//!
//! A run picks sealed, hinted segments older than every cursor's position
//! (whose live bytes fit one segment), copies their live records into one
//! output segment and then replaces them. The output takes the id of the
//! newest input, so for every key the log's segment order stays its version
//! order: an older version of a key never sits in a later segment. That is
//! what makes dropping a tombstone safe when every segment before it is part
//! of the run (no older version can survive elsewhere to resurrect).
//!
//! Commit order, each step crash-safe: output sealed and synced; its hint
//! written as `.hint.compact` and synced; output renamed over the newest
//! input; hint renamed; directory synced; other inputs removed; directory
//! synced. Recovery deletes `.compact` leftovers; a hint that names another
//! generation of its segment is ignored; duplicate copies of a record
//! (inputs not yet removed) carry equal versions and replay as one.
//!
//! Tombstones are dropped `tombstone_grace_s` after their write (the hlc's
//! millisecond part); expired values become tombstones at once (the value
//! bytes go) and are dropped `tombstone_grace_s` after they expired.

use std::fs::{self, OpenOptions};
use std::io::Write;

use crate::error::{Error, Result};
use crate::format::{
    self, RecordFields, RecordHeader, RecordKind, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::fsutil::{sync_directory, Preallocation};
use crate::hints::hint_entries;
use crate::keydir::Entry;
use crate::segment::{hint_path, segment_path, Segment};
use crate::store::Store;

#[derive(Debug)]
pub(crate) struct CompactionRun {
    /// Input slots, ascending by segment id.
    inputs: Vec<u32>,
    /// `inputs[..droppable_inputs]` are the oldest segments of the store:
    /// tombstones in them may be dropped.
    droppable_inputs: usize,
    output_slot: u32,
    output_id: u32,
    next_input: usize,
    next_offset: u32,
}

/// What one call to [`Store::compact_step`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionProgress {
    /// Bytes of input records examined.
    pub bytes_processed: u64,
    /// A run finished (its inputs are gone) during this call.
    pub finished_run: bool,
    /// Nothing to compact.
    pub idle: bool,
}

impl Store {
    /// Does about `budget_bytes` of compaction work (hint files first, then
    /// records copied), starting or finishing runs as needed.
    pub fn compact_step(&mut self, budget_bytes: u64) -> Result<CompactionProgress> {
        let mut progress = CompactionProgress::default();
        if self.write_next_hint()? {
            progress.bytes_processed += self.options.segment_bytes as u64 / 8;
            return Ok(progress);
        }
        if self.compaction.is_none() {
            self.compaction = self.plan_compaction()?;
            if self.compaction.is_none() {
                progress.idle = true;
                return Ok(progress);
            }
        }
        let Some(mut run) = self.compaction.take() else {
            return Ok(progress);
        };
        let outcome = self.advance_run(&mut run, budget_bytes, &mut progress);
        match outcome {
            Ok(true) => {
                self.finish_run(run)?;
                progress.finished_run = true;
            }
            Ok(false) => self.compaction = Some(run),
            Err(error) => {
                self.compaction = Some(run);
                return Err(error);
            }
        }
        Ok(progress)
    }

    fn plan_compaction(&mut self) -> Result<Option<CompactionRun>> {
        let protected_from = self.protected_from();
        let active_id = self.segment(self.active).id;
        let room =
            self.options.segment_bytes as u64 - (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN) as u64;
        let mut inputs = Vec::new();
        let mut live_total = 0u64;
        for (&id, &slot) in &self.by_id {
            let segment = self.segment(slot);
            if id >= active_id || id >= protected_from || !segment.sealed || !segment.hinted {
                break;
            }
            let data = (segment.data_end as u64).saturating_sub(SEGMENT_HEADER_LEN as u64);
            let dead_fraction = if data == 0 {
                1.0
            } else {
                1.0 - segment.live_bytes as f64 / data as f64
            };
            if dead_fraction < self.options.compaction_dead_fraction {
                continue;
            }
            if live_total + segment.live_bytes > room {
                break;
            }
            live_total += segment.live_bytes;
            inputs.push(slot);
        }
        if inputs.is_empty() {
            return Ok(None);
        }
        let droppable_inputs = inputs
            .iter()
            .zip(self.by_id.values())
            .take_while(|(input, committed)| input == committed)
            .count();
        let output_id = self.segment(*inputs.last().expect("inputs not empty")).id;
        let path = segment_path(&self.directory, output_id).with_extension("seg.compact");
        let len =
            ((SEGMENT_HEADER_LEN + RECORD_HEADER_LEN) as u64 + live_total).div_ceil(4096) * 4096;
        let now_ms = self.options.clock.now_ms();
        let output = Segment::create(
            path,
            output_id,
            len as u32,
            Preallocation::Reserve,
            now_ms,
            len as u32,
        )?;
        let output_slot = self.add_segment(output);
        Ok(Some(CompactionRun {
            inputs,
            droppable_inputs,
            output_slot,
            output_id,
            next_input: 0,
            next_offset: SEGMENT_HEADER_LEN as u32,
        }))
    }

    /// Copies records until the budget is spent; true when every input is done.
    fn advance_run(
        &mut self,
        run: &mut CompactionRun,
        budget: u64,
        progress: &mut CompactionProgress,
    ) -> Result<bool> {
        while progress.bytes_processed < budget.max(1) {
            let Some(&input) = run.inputs.get(run.next_input) else {
                return Ok(true);
            };
            let segment = self.segment(input);
            if run.next_offset >= segment.data_end {
                run.next_input += 1;
                run.next_offset = SEGMENT_HEADER_LEN as u32;
                continue;
            }
            let offset = run.next_offset;
            let header = segment.record_at(offset)?;
            run.next_offset += header.record_len() as u32;
            progress.bytes_processed += header.record_len() as u64;
            let droppable = run.next_input < run.droppable_inputs;
            self.compact_record(run.output_slot, input, offset, &header, droppable);
        }
        Ok(run.next_input >= run.inputs.len())
    }

    /// Moves one input record to the output if it is still some key's newest.
    fn compact_record(
        &mut self,
        output: u32,
        input: u32,
        offset: u32,
        header: &RecordHeader,
        droppable: bool,
    ) {
        let segment = self.segment(input);
        let key = segment.key_shared(offset, header);
        let value = segment.value_bytes(offset, header);
        let hash_high = format::hash_high(&key);
        let Some(slot) = self.find(hash_high, &key) else {
            return;
        };
        let entry = *self.keydir.get(slot);
        if entry.segment != input || entry.offset != offset {
            return;
        }
        let now_s = self.options.clock.now_s() as u64;
        let grace = self.options.tombstone_grace_s as u64;
        let expired = header.kind == RecordKind::Put
            && header.expires_at != 0
            && now_s >= header.expires_at as u64;
        let absent_since = match header.kind {
            // An expired value compacted into a tombstone keeps its
            // `expires_at`: its grace still runs from the expiry.
            RecordKind::Tombstone => {
                Some(((header.version.hlc >> 16) / 1000).max(header.expires_at as u64))
            }
            _ if expired => Some(header.expires_at as u64),
            _ => None,
        };
        if let Some(since) = absent_since {
            if droppable && now_s >= since + grace {
                self.keydir.remove(slot);
                self.digests.toggle(
                    format::bucket_of_hash_high(hash_high),
                    format::entry_digest(&key, header.version),
                );
                self.stats.tombstones_dropped += 1;
                return;
            }
        }
        let kind = if expired {
            RecordKind::Tombstone
        } else {
            header.kind
        };
        let value: &[u8] = if kind == RecordKind::Tombstone {
            &[]
        } else {
            &value
        };
        let fields = RecordFields {
            kind,
            key: &key,
            value,
            version: header.version,
            expires_at: header.expires_at,
        };
        let out = self.segment_mut(output);
        let new_offset = out.append(&fields);
        out.live_bytes += fields.record_len() as u64;
        let moved = Entry::new(
            hash_high,
            output,
            new_offset,
            fields.record_len() as u32,
            kind == RecordKind::Tombstone,
            header.version,
            header.expires_at,
        );
        self.keydir.set(slot, moved);
    }

    /// Seals, syncs and installs the output; removes the inputs.
    fn finish_run(&mut self, run: CompactionRun) -> Result<()> {
        let output = self.segment_mut(run.output_slot);
        if !output.sealed {
            output.seal();
        }
        let temporary = output.path.clone();
        output
            .file
            .sync_data()
            .map_err(|e| Error::io("fdatasync compaction output", &temporary, e))?;
        output.synced = output.written;
        let output = self.segment(run.output_slot);
        let hint = format::encode_hint_file(
            run.output_id,
            output.header_checksum,
            output.data_end,
            &hint_entries(output)?,
        );
        let final_hint = hint_path(&self.directory, run.output_id);
        let temporary_hint = final_hint.with_extension("hint.compact");
        write_synced(&temporary_hint, &hint)?;
        let final_segment = segment_path(&self.directory, run.output_id);
        fs::rename(&temporary, &final_segment)
            .map_err(|e| Error::io("install compaction output", &final_segment, e))?;
        fs::rename(&temporary_hint, &final_hint)
            .map_err(|e| Error::io("install compaction hint", &final_hint, e))?;
        sync_directory(&self.directory)?;
        let mut reclaimed = 0u64;
        for &input in &run.inputs {
            let segment = self.remove_segment(input);
            reclaimed += segment.capacity() as u64;
            if segment.id != run.output_id {
                self.by_id.remove(&segment.id);
                fs::remove_file(&segment.path)
                    .map_err(|e| Error::io("remove compacted segment", &segment.path, e))?;
                let _ = fs::remove_file(hint_path(&self.directory, segment.id));
            }
        }
        sync_directory(&self.directory)?;
        let output = self.segment_mut(run.output_slot);
        output.path = final_segment;
        output.hinted = true;
        reclaimed = reclaimed.saturating_sub(output.capacity() as u64);
        self.by_id.insert(run.output_id, run.output_slot);
        self.stats.compactions_completed += 1;
        self.stats.compaction_bytes_reclaimed += reclaimed;
        debug_assert!(self
            .keydir
            .iter()
            .all(|(_, e)| !run.inputs.contains(&e.segment) || e.segment == run.output_slot));
        Ok(())
    }
}

fn write_synced(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io("create hint", path, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("write hint", path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync hint", path, e))
}
