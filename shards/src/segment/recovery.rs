//! Opening a segment: finding its logical end from a trusted index entry
//! (or from byte 0), checking every batch after it, and discarding a torn
//! or corrupt tail.

use super::Segment;
use crate::batch::{peek_total_bytes, validate_batch, validate_records, BatchHeader};
use crate::constants::{BATCH_LENGTH_PREFIX_BYTES, RECOVERY_READ_CHUNK_BYTES};
use crate::error::{LogError, LogResult};
use crate::io::pread_full;
use crate::types::{Offset, Position, TimestampMs};

/// What opening a segment found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentRecovery {
    /// Bytes after the last valid batch that were not preallocated zeros
    /// (a torn or corrupt tail), now discarded.
    pub truncated_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stop_reason: Option<String>,
    /// Batches validated by the scan.
    pub batches_scanned: u64,
    /// Whether the indexes had to be rebuilt from scratch.
    pub index_rebuilt: bool,
}

/// How much of a segment recovery checks batch by batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecoveryScan {
    /// From the last index entry that points at a valid batch: after a clean
    /// shutdown everything before it was fsynced and checked when written.
    FromLastIndexEntry,
    /// Every batch, rebuilding the indexes: after a crash, an intact later
    /// batch does not prove that unsynced earlier ones reached the disk.
    Full,
}

impl Segment {
    /// Finds the logical end: picks a trusted starting point from the
    /// indexes, then validates every batch from there to the end.
    pub(super) async fn recover(
        &mut self,
        file_bytes: u64,
        scan: RecoveryScan,
    ) -> LogResult<SegmentRecovery> {
        let mut report = SegmentRecovery::default();
        let start = match scan {
            RecoveryScan::FromLastIndexEntry => self.trusted_scan_start(file_bytes).await?,
            RecoveryScan::Full => None,
        };
        let (start_position, start_offset, max_ts_before) = match start {
            Some(start) => start,
            None => {
                report.index_rebuilt = !self.offset_index.entries().is_empty();
                self.offset_index.truncate_entries(0).await?;
                self.time_index.truncate_to_offset(self.base).await?;
                (Position(0), self.base, TimestampMs(-1))
            }
        };
        self.size = start_position.0;
        self.next_offset = start_offset;
        self.max_timestamp = max_ts_before;
        self.bytes_since_index_entry = 0;

        let mut position = start_position.0;
        let mut buffer: Vec<u8> = Vec::new();
        let mut buffer_start = position;
        loop {
            let available = file_bytes.saturating_sub(position);
            if available < BATCH_LENGTH_PREFIX_BYTES as u64 {
                break;
            }
            // Make sure the length prefix is buffered.
            if position + BATCH_LENGTH_PREFIX_BYTES as u64 > buffer_start + buffer.len() as u64 {
                buffer_start = position;
                let want = available.min(RECOVERY_READ_CHUNK_BYTES as u64) as usize;
                buffer = self.file.read_exact_at(Position(position), want).await?;
            }
            let at = (position - buffer_start) as usize;
            if buffer[at..at + BATCH_LENGTH_PREFIX_BYTES]
                .iter()
                .all(|&b| b == 0)
            {
                break; // preallocated zeros: the clean end of the log
            }
            let total = match peek_total_bytes(&buffer[at..]) {
                Ok(total) => total,
                Err(err) => {
                    report.stop_reason = Some(err.to_string());
                    break;
                }
            };
            if total as u64 > available {
                report.stop_reason = Some(format!(
                    "batch of {total} bytes at position {position} runs past the end of the file"
                ));
                break;
            }
            if at + total > buffer.len() {
                buffer_start = position;
                let want = available.min(total.max(RECOVERY_READ_CHUNK_BYTES) as u64) as usize;
                buffer = self.file.read_exact_at(Position(position), want).await?;
            }
            let at = (position - buffer_start) as usize;
            // Every record too, not just the CRC: what recovery keeps is
            // served to consumers and compacted, which decode each record
            // (a walk that allocates nothing, cheap next to the read).
            let header = match validate_records(&buffer[at..at + total]) {
                Ok(header) => header,
                Err(err) => {
                    report.stop_reason = Some(format!("position {position}: {err}"));
                    break;
                }
            };
            // Compaction leaves gaps, so offsets may skip but never go back
            // (as in Kafka). baseOffset lies outside the CRC: a flipped bit
            // there that moves it forward is not detected here.
            if header.base_offset < self.next_offset {
                report.stop_reason = Some(format!(
                    "position {position}: batch offset {} does not follow {}",
                    header.base_offset, self.next_offset
                ));
                break;
            }
            self.note_appended(&header, Position(position), total as u64);
            report.batches_scanned += 1;
            position += total as u64;
        }
        if self.size < file_bytes && report.stop_reason.is_none() && scan == RecoveryScan::Full {
            // The scan ended on zeros. After a crash a torn write may still
            // have left stale batches further on (a later page reached the
            // disk, an earlier one did not); zero them so a future append of
            // the same size can never line up with one.
            self.discard_tail().await?;
        } else if self.size < file_bytes && report.stop_reason.is_some() {
            let tail = self.count_non_zero_tail(file_bytes).await?;
            if tail > 0 {
                report.truncated_bytes = tail;
                tracing::warn!(
                    segment = %self.file.path.display(),
                    valid_bytes = self.size,
                    discarded_bytes = tail,
                    reason = report.stop_reason.as_deref().unwrap_or(""),
                    "truncating torn or corrupt segment tail"
                );
                self.discard_tail().await?;
            }
        }
        Ok(report)
    }

    /// The last index entry that points at a valid batch, as (position,
    /// offset, max timestamp of everything before it). Stale trailing
    /// entries (pointing past what survived a crash) are dropped.
    async fn trusted_scan_start(
        &mut self,
        file_bytes: u64,
    ) -> LogResult<Option<(Position, Offset, TimestampMs)>> {
        while let Some(entry) = self.offset_index.last() {
            // The two indexes are written together; if they disagree,
            // rebuild both rather than guess.
            let Some(time_entry) = self.time_index.last().filter(|t| t.offset == entry.offset)
            else {
                return Ok(None);
            };
            let found = self.batch_at(entry.position, file_bytes).await?;
            if found.map(|h| h.base_offset) == Some(entry.offset) {
                return Ok(Some((
                    entry.position,
                    entry.offset,
                    time_entry.max_timestamp_before,
                )));
            }
            let keep = self.offset_index.entries().len() - 1;
            self.offset_index.truncate_entries(keep).await?;
            self.time_index.truncate_to_offset(entry.offset).await?;
        }
        Ok(None)
    }

    /// The valid batch starting at `position`, if there is one.
    async fn batch_at(
        &self,
        position: Position,
        file_bytes: u64,
    ) -> LogResult<Option<BatchHeader>> {
        let mut prefix = [0u8; BATCH_LENGTH_PREFIX_BYTES];
        let read = pread_full(self.file.raw_fd(), &mut prefix, position.0)
            .map_err(|e| LogError::io("read segment", &self.file.path, e))?;
        if read < prefix.len() {
            return Ok(None);
        }
        let Ok(total) = peek_total_bytes(&prefix) else {
            return Ok(None);
        };
        if position.0 + total as u64 > file_bytes {
            return Ok(None);
        }
        let bytes = self.file.read_exact_at(position, total).await?;
        Ok(validate_batch(&bytes).ok())
    }

    async fn count_non_zero_tail(&self, file_bytes: u64) -> LogResult<u64> {
        let mut position = self.size;
        let mut last_non_zero_end = self.size;
        while position < file_bytes {
            let want = (file_bytes - position).min(RECOVERY_READ_CHUNK_BYTES as u64) as usize;
            let chunk = self.file.read_exact_at(Position(position), want).await?;
            if let Some(last) = chunk.iter().rposition(|&b| b != 0) {
                last_non_zero_end = position + last as u64 + 1;
            }
            position += want as u64;
        }
        Ok(last_non_zero_end - self.size)
    }

    /// Cuts everything after the logical end off the file, durably, so a
    /// later append can never end up next to stale bytes. The preallocation
    /// goes with it; an active segment gets its step back from the caller
    /// ([`Self::fit_preallocation`]), a sealed one needs none.
    pub(super) async fn discard_tail(&mut self) -> LogResult<()> {
        self.truncate_file(self.size).await?;
        self.preallocated_bytes = self.size;
        self.file.fdatasync().await
    }
}
