//! Sparse time index of one segment (`<base_offset:020>.timeindex`).
//!
//! Layout: a flat array of 12-byte entries, `timestamp_ms: i64 BE |
//! relative_offset: u32 BE`. An entry `(t, o)` promises that every record of
//! the segment below offset `o` has a timestamp ≤ `t` (`t` is the running
//! maximum). To find the first record at or after time `T`, start scanning at
//! the last entry with `t < T`: nothing before it can match. Timestamps are
//! non-decreasing and offsets strictly increasing across entries.
//!
//! Like the offset index it is a rebuildable cache: written with `pwrite`,
//! never fsynced, validated and repaired by recovery.

use std::path::Path;

use crate::constants::TIME_INDEX_ENTRY_BYTES;
use crate::error::LogResult;
use crate::index::{index_entries_max, IndexFile};
use crate::types::{Offset, TimestampMs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeIndexEntry {
    pub(crate) max_timestamp_before: TimestampMs,
    pub(crate) offset: Offset,
}

pub(crate) struct TimeIndex {
    base: Offset,
    entries: Vec<TimeIndexEntry>,
    file: IndexFile,
}

impl TimeIndex {
    /// Opens the file, keeping the longest well-formed monotonic prefix of
    /// entries below `next_offset`; reads at most as many entries as a
    /// segment file of `file_bytes` can have batches.
    pub(crate) async fn open(path: &Path, base: Offset, file_bytes: u64) -> LogResult<TimeIndex> {
        let bytes_max = index_entries_max(file_bytes).saturating_mul(TIME_INDEX_ENTRY_BYTES as u64);
        let (file, bytes) = IndexFile::open(path, bytes_max).await?;
        let mut entries: Vec<TimeIndexEntry> =
            Vec::with_capacity(bytes.len() / TIME_INDEX_ENTRY_BYTES);
        for chunk in bytes.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let relative = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            let entry = TimeIndexEntry {
                max_timestamp_before: TimestampMs(i64::from_be_bytes(ts)),
                offset: base.plus(u64::from(relative)),
            };
            let monotonic = entries.last().is_none_or(|last| {
                entry.offset > last.offset
                    && entry.max_timestamp_before >= last.max_timestamp_before
            });
            if !monotonic {
                break;
            }
            entries.push(entry);
        }
        let mut index = TimeIndex {
            base,
            entries,
            file,
        };
        index.persist_truncation().await?;
        Ok(index)
    }

    /// Where a scan for the first record with timestamp ≥ `target` starts.
    pub(crate) fn scan_start(&self, target: TimestampMs) -> Offset {
        let at = self
            .entries
            .partition_point(|e| e.max_timestamp_before < target);
        if at == 0 {
            return self.base;
        }
        self.entries[at - 1].offset
    }

    pub(crate) fn last(&self) -> Option<TimeIndexEntry> {
        self.entries.last().copied()
    }

    pub(crate) fn append(
        &mut self,
        max_timestamp_before: TimestampMs,
        offset: Offset,
    ) -> LogResult<()> {
        if let Some(last) = self.entries.last() {
            if offset <= last.offset {
                return Ok(());
            }
        }
        let max_timestamp_before = self.entries.last().map_or(max_timestamp_before, |last| {
            max_timestamp_before.max(last.max_timestamp_before)
        });
        let relative = u32::try_from(offset.0 - self.base.0).unwrap_or(u32::MAX);
        let mut bytes = [0u8; TIME_INDEX_ENTRY_BYTES];
        bytes[..8].copy_from_slice(&max_timestamp_before.0.to_be_bytes());
        bytes[8..].copy_from_slice(&relative.to_be_bytes());
        let file_position = (self.entries.len() * TIME_INDEX_ENTRY_BYTES) as u64;
        self.file.write_at(&bytes, file_position)?;
        self.entries.push(TimeIndexEntry {
            max_timestamp_before,
            offset,
        });
        Ok(())
    }

    /// Drops entries at or after `offset`.
    pub(crate) async fn truncate_to_offset(&mut self, offset: Offset) -> LogResult<()> {
        let keep = self.entries.partition_point(|e| e.offset < offset);
        self.entries.truncate(keep);
        self.persist_truncation().await
    }

    async fn persist_truncation(&mut self) -> LogResult<()> {
        self.file
            .truncate((self.entries.len() * TIME_INDEX_ENTRY_BYTES) as u64)
            .await
    }

    pub(crate) async fn remove(&self) -> LogResult<()> {
        self.file.remove().await
    }
}
