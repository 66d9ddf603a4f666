//! Log tailing: reading the records appended after a position, in order.
//!
//! The log is replication's durable queue. A reader keeps a [`LogPosition`]
//! and asks for the records after it; named cursors also protect the
//! segments they still need from compaction, up to
//! `Options::cursor_retention_bytes`, after which the cursor is marked as
//! fallen behind (its reader must fall back to a full sync).
//!
//! Cursor positions are not persisted here: the reader persists the position
//! it has acknowledged and registers it again after a restart.
//!
//! Invariant: `read_log` returns records in log order, never a seal record,
//! and `next` is the position just after the last record returned.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::{RecordKind, Version, SEGMENT_HEADER_LEN};
use crate::store::{LogPosition, Store};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CursorState {
    pub position: LogPosition,
    pub fell_behind: bool,
}

/// What a named cursor knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorStatus {
    pub position: LogPosition,
    pub fell_behind: bool,
    /// Bytes of log between the cursor and the written end.
    pub bytes_behind: u64,
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub position: LogPosition,
    pub kind: RecordKind,
    pub key: Bytes,
    pub value: Bytes,
    pub version: Version,
    pub expires_at: u32,
}

/// Records read from the log and where to continue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogBatch {
    pub records: Vec<LogRecord>,
    pub next: LogPosition,
}

impl Store {
    /// The oldest position still in the log.
    pub fn log_start(&self) -> LogPosition {
        let first = self.by_id.keys().next().copied().unwrap_or(0);
        LogPosition {
            segment: first,
            offset: SEGMENT_HEADER_LEN as u32,
        }
    }

    /// Reads up to `max_records` records (and about `max_bytes` of keys and
    /// values, at least one record) after `from`; segment 0 (the default
    /// position) means the oldest retained record. Segment ids start at 1.
    ///
    /// Reads up to `max_records` records (and about `max_bytes` of keys and
    /// values, at least one record) after `from`.
    pub fn read_log(
        &self,
        from: LogPosition,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<LogBatch> {
        let from = if from.segment == 0 {
            self.log_start()
        } else {
            from
        };
        let mut position = LogPosition {
            segment: from.segment,
            offset: from.offset.max(SEGMENT_HEADER_LEN as u32),
        };
        let active_id = self.segment(self.active).id;
        let mut batch = LogBatch::default();
        let mut bytes = 0usize;
        let Some(mut slot) = self.by_id.get(&position.segment).copied() else {
            if position.segment > active_id {
                return Err(Error::InvalidPosition {
                    segment: from.segment,
                    offset: from.offset,
                    reason: "beyond the end of the log".to_string(),
                });
            }
            return Err(Error::CursorFellBehind {
                name: String::new(),
                segment: from.segment,
                offset: from.offset,
            });
        };
        while batch.records.len() < max_records && (bytes < max_bytes || batch.records.is_empty()) {
            let segment = self.segment(slot);
            if position.offset > segment.written {
                return Err(Error::InvalidPosition {
                    segment: position.segment,
                    offset: position.offset,
                    reason: format!("past the written end {}", segment.written),
                });
            }
            if position.offset >= segment.data_end {
                if !segment.sealed {
                    break;
                }
                let Some((&next_id, &next_slot)) = self.by_id.range(position.segment + 1..).next()
                else {
                    break;
                };
                position = LogPosition {
                    segment: next_id,
                    offset: SEGMENT_HEADER_LEN as u32,
                };
                slot = next_slot;
                continue;
            }
            let header = segment.record_at(position.offset)?;
            let key = segment.key_shared(position.offset, &header);
            let value = segment.value_bytes(position.offset, &header);
            bytes += key.len() + value.len();
            batch.records.push(LogRecord {
                position,
                kind: header.kind,
                key,
                value,
                version: header.version,
                expires_at: header.expires_at,
            });
            position.offset += header.record_len() as u32;
        }
        batch.next = position;
        Ok(batch)
    }

    /// Registers (or moves) a named cursor that protects the log after `position`.
    pub fn register_cursor(&mut self, name: &str, position: LogPosition) {
        self.cursors.insert(
            name.to_string(),
            super::cursor::CursorState {
                position,
                fell_behind: false,
            },
        );
    }

    /// Moves a named cursor forward, typically after the reader's records
    /// were acknowledged downstream.
    pub fn advance_cursor(&mut self, name: &str, position: LogPosition) -> Result<()> {
        let Some(cursor) = self.cursors.get_mut(name) else {
            return Err(Error::InvalidOption {
                name: "cursor",
                reason: format!("no cursor named {name:?}"),
            });
        };
        cursor.position = cursor.position.max(position);
        Ok(())
    }

    pub fn remove_cursor(&mut self, name: &str) {
        self.cursors.remove(name);
    }

    pub fn cursor_status(&self, name: &str) -> Option<CursorStatus> {
        let cursor = self.cursors.get(name)?;
        Some(CursorStatus {
            position: cursor.position,
            fell_behind: cursor.fell_behind,
            bytes_behind: self.bytes_after(cursor.position),
        })
    }

    /// Reads after a named cursor's position.
    pub fn read_cursor(
        &self,
        name: &str,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<LogBatch> {
        let Some(cursor) = self.cursors.get(name) else {
            return Err(Error::InvalidOption {
                name: "cursor",
                reason: format!("no cursor named {name:?}"),
            });
        };
        let fell_behind = || Error::CursorFellBehind {
            name: name.to_string(),
            segment: cursor.position.segment,
            offset: cursor.position.offset,
        };
        if cursor.fell_behind {
            return Err(fell_behind());
        }
        self.read_log(cursor.position, max_records, max_bytes)
            .map_err(|error| match error {
                Error::CursorFellBehind { .. } => fell_behind(),
                other => other,
            })
    }

    /// Bytes of log written after `position`.
    pub fn bytes_after(&self, position: LogPosition) -> u64 {
        self.by_id
            .range(position.segment..)
            .map(|(&id, &slot)| {
                let segment = self.segment(slot);
                let start = if id == position.segment {
                    position.offset.min(segment.data_end)
                } else {
                    SEGMENT_HEADER_LEN as u32
                };
                segment.data_end.saturating_sub(start) as u64
            })
            .sum()
    }

    /// The lowest segment id a cursor still needs; marks cursors that hold
    /// more than the retention cap as fallen behind.
    pub(crate) fn protected_from(&mut self) -> u32 {
        let retention = self.options.cursor_retention_bytes;
        let mut lowest = u32::MAX;
        let names: Vec<String> = self.cursors.keys().cloned().collect();
        for name in names {
            let position = self.cursors[&name].position;
            if self.cursors[&name].fell_behind {
                continue;
            }
            let held: u64 = self
                .by_id
                .range(position.segment..)
                .map(|(_, &slot)| self.segment(slot).capacity() as u64)
                .sum();
            if held > retention {
                tracing::warn!(cursor = %name, held, retention, "log cursor fell behind the retention cap");
                if let Some(cursor) = self.cursors.get_mut(&name) {
                    cursor.fell_behind = true;
                }
                continue;
            }
            lowest = lowest.min(position.segment);
        }
        lowest
    }
}
