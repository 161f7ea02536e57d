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
use crate::index::{IndexEntries, IndexEntry};
use crate::types::{Offset, TimestampMs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeIndexEntry {
    pub(crate) max_timestamp_before: TimestampMs,
    pub(crate) offset: Offset,
}

impl IndexEntry for TimeIndexEntry {
    const BYTES: usize = TIME_INDEX_ENTRY_BYTES;
    type Encoded = [u8; TIME_INDEX_ENTRY_BYTES];

    fn decode(chunk: &[u8], base: Offset) -> TimeIndexEntry {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&chunk[..8]);
        let relative = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
        TimeIndexEntry {
            max_timestamp_before: TimestampMs(i64::from_be_bytes(ts)),
            offset: base.plus(u64::from(relative)),
        }
    }

    fn encode(&self, base: Offset) -> Self::Encoded {
        let relative = u32::try_from(self.offset.0 - base.0).unwrap_or(u32::MAX);
        let mut bytes = [0u8; TIME_INDEX_ENTRY_BYTES];
        bytes[..8].copy_from_slice(&self.max_timestamp_before.0.to_be_bytes());
        bytes[8..].copy_from_slice(&relative.to_be_bytes());
        bytes
    }

    fn follows(&self, previous: &TimeIndexEntry) -> bool {
        self.offset > previous.offset && self.max_timestamp_before >= previous.max_timestamp_before
    }
}

pub(crate) struct TimeIndex {
    entries: IndexEntries<TimeIndexEntry>,
}

impl TimeIndex {
    /// Opens the file, keeping the longest well-formed monotonic prefix of
    /// entries; reads at most as many entries as a segment file of
    /// `file_bytes` can have batches. Entries past the log's end are not
    /// checked here: recovery compares the last entry with the offset index.
    pub(crate) async fn open(path: &Path, base: Offset, file_bytes: u64) -> LogResult<TimeIndex> {
        let entries = IndexEntries::open(path, base, file_bytes, |_: &TimeIndexEntry| true).await?;
        Ok(TimeIndex { entries })
    }

    /// Where a scan for the first record with timestamp ≥ `target` starts.
    pub(crate) fn scan_start(&self, target: TimestampMs) -> Offset {
        let entries = self.entries.as_slice();
        let at = entries.partition_point(|e| e.max_timestamp_before < target);
        if at == 0 {
            return self.entries.base();
        }
        entries[at - 1].offset
    }

    pub(crate) fn last(&self) -> Option<TimeIndexEntry> {
        self.entries.last()
    }

    /// Entries in file order.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[TimeIndexEntry] {
        self.entries.as_slice()
    }

    pub(crate) fn append(
        &mut self,
        max_timestamp_before: TimestampMs,
        offset: Offset,
    ) -> LogResult<()> {
        if let Some(last) = self.last() {
            if offset <= last.offset {
                return Ok(());
            }
        }
        let max_timestamp_before = self.last().map_or(max_timestamp_before, |last| {
            max_timestamp_before.max(last.max_timestamp_before)
        });
        self.entries.push(TimeIndexEntry {
            max_timestamp_before,
            offset,
        })
    }

    /// Drops entries at or after `offset`.
    pub(crate) async fn truncate_to_offset(&mut self, offset: Offset) -> LogResult<()> {
        let keep = self
            .entries
            .as_slice()
            .partition_point(|e| e.offset < offset);
        self.entries.truncate(keep).await
    }

    pub(crate) async fn remove(&self) -> LogResult<()> {
        self.entries.remove().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::index_entries_max;
    use crate::testing::run_on_executor;

    const BASE: Offset = Offset(100);

    fn raw(entries: &[(i64, u32)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|(ts, relative)| {
                let mut bytes = ts.to_be_bytes().to_vec();
                bytes.extend_from_slice(&relative.to_be_bytes());
                bytes
            })
            .collect()
    }

    fn entry(ts: i64, offset: u64) -> TimeIndexEntry {
        TimeIndexEntry {
            max_timestamp_before: TimestampMs(ts),
            offset: Offset(offset),
        }
    }

    #[test]
    fn scan_start_is_the_last_entry_strictly_before_the_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.timeindex");
        run_on_executor(async move {
            let mut index = TimeIndex::open(&path, BASE, 0).await.expect("open");
            index.append(TimestampMs(50), Offset(110)).expect("append");
            index.append(TimestampMs(80), Offset(120)).expect("append");
            // A smaller timestamp keeps the running maximum: records before
            // offset 130 include one at 80.
            index.append(TimestampMs(60), Offset(130)).expect("append");
            assert_eq!(index.last(), Some(entry(80, 130)));
            assert_eq!(index.scan_start(TimestampMs(10)), BASE);
            assert_eq!(index.scan_start(TimestampMs(50)), BASE);
            assert_eq!(index.scan_start(TimestampMs(51)), Offset(110));
            // Records up to 130 may hold 80: a scan for 80 must start
            // before the first entry that reached it.
            assert_eq!(index.scan_start(TimestampMs(80)), Offset(110));
            assert_eq!(index.scan_start(TimestampMs(81)), Offset(130));
        });
    }

    #[test]
    fn an_append_that_does_not_move_the_offset_forward_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.timeindex");
        run_on_executor(async move {
            let mut index = TimeIndex::open(&path, BASE, 0).await.expect("open");
            index.append(TimestampMs(50), Offset(110)).expect("append");
            index.append(TimestampMs(90), Offset(110)).expect("same");
            index.append(TimestampMs(90), Offset(105)).expect("back");
            assert_eq!(index.last(), Some(entry(50, 110)));
            drop(index);
            let index = TimeIndex::open(&path, BASE, 1000).await.expect("reopen");
            assert_eq!(index.entries(), [entry(50, 110)]);
        });
    }

    #[test]
    fn open_cuts_at_the_first_non_monotonic_entry_and_truncation_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.timeindex");
        // Timestamp going back at the third entry.
        std::fs::write(&path, raw(&[(50, 10), (80, 20), (70, 30), (90, 40)])).expect("write");
        run_on_executor(async move {
            let mut index = TimeIndex::open(&path, BASE, 1000).await.expect("open");
            assert_eq!(index.entries(), [entry(50, 110), entry(80, 120)]);
            let len = std::fs::metadata(&path).expect("stat").len();
            assert_eq!(len, 2 * TIME_INDEX_ENTRY_BYTES as u64);
            index.truncate_to_offset(Offset(120)).await.expect("cut");
            assert_eq!(index.entries(), [entry(50, 110)]);
            drop(index);
            let index = TimeIndex::open(&path, BASE, 1000).await.expect("reopen");
            assert_eq!(index.entries(), [entry(50, 110)]);
            // Offset repeated (equal timestamps are fine, equal offsets not).
            std::fs::write(&path, raw(&[(50, 10), (50, 20), (60, 20)])).expect("write");
            let index = TimeIndex::open(&path, BASE, 1000).await.expect("open");
            assert_eq!(index.entries(), [entry(50, 110), entry(50, 120)]);
        });
    }

    #[test]
    fn open_reads_no_more_entries_than_the_segment_can_have_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.timeindex");
        let claimed: Vec<(i64, u32)> = (1..=40).map(|i| (i64::from(i), i)).collect();
        std::fs::write(&path, raw(&claimed)).expect("write");
        let file_bytes = 10 * crate::constants::BATCH_HEADER_BYTES as u64;
        run_on_executor(async move {
            let index = TimeIndex::open(&path, BASE, file_bytes)
                .await
                .expect("open");
            assert_eq!(index.entries().len() as u64, index_entries_max(file_bytes));
        });
    }
}
