//! Reading committed batches for consumers and replicas, long polls on the
//! watermarks, and lookups by timestamp.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use crate::batch::decode_batch;
use crate::error::{LogError, LogResult};
use crate::event::WakerList;
use crate::segment::SegmentFile;
use crate::types::{Offset, Position, TimestampMs};

use super::{LogState, PartitionLog};

/// Whole committed batches of one segment, ready for `sendfile`: the file
/// stays open (even if retention deletes it) for as long as this lives.
pub struct ReadSlice {
    /// The segment file, held open.
    pub file: Rc<SegmentFile>,
    /// Where the first batch starts in the file.
    pub position: Position,
    /// Bytes of whole batches from `position`.
    pub len: u64,
    /// Base offset of the first batch (may be below the requested offset:
    /// batches are never split, consumers skip records they did not ask for).
    pub first_batch_offset: Offset,
    /// The high watermark when the slice was taken (it never reaches past).
    pub high_watermark: Offset,
    /// The log start offset when the slice was taken.
    pub log_start: Offset,
}

impl ReadSlice {
    /// Copies the slice into memory (replication, tests, tools) with one
    /// `pread` from the page cache (may briefly block the shard on a cold
    /// read). Servers `sendfile` from [`SegmentFile::raw_fd`] instead.
    pub async fn read_bytes(&self) -> LogResult<Vec<u8>> {
        crate::io::pread_to_vec(self.file.raw_fd(), self.len as usize, self.position.0)
            .map_err(|e| LogError::io("read segment", self.file.path(), e))
    }
}

impl PartitionLog {
    /// Whole committed batches starting with the one that holds `start`, up
    /// to `max_bytes` (but always at least one batch), within one segment.
    /// `None` when `start` is at the high watermark (nothing to read yet).
    ///
    /// Reads a few KiB of batch headers with `pread`; they are almost always
    /// in the page cache.
    pub fn read(&self, start: Offset, max_bytes: u64) -> LogResult<Option<ReadSlice>> {
        let hw = self.state.borrow().high_watermark;
        self.read_below(start, max_bytes, hw)
    }

    /// Like [`Self::read`] but up to the log end, committed or not: what a
    /// partition leader sends its followers (they need the data before it
    /// can commit). Never for consumers.
    pub fn read_for_replica(&self, start: Offset, max_bytes: u64) -> LogResult<Option<ReadSlice>> {
        let log_end = self.state.borrow().log_end;
        self.read_below(start, max_bytes, log_end)
    }

    /// Whole batches from the one holding `start`, none reaching `limit`.
    fn read_below(
        &self,
        start: Offset,
        max_bytes: u64,
        limit: Offset,
    ) -> LogResult<Option<ReadSlice>> {
        let state = self.state.borrow();
        if start < state.log_start || start > state.log_end {
            return Err(LogError::OffsetOutOfRange {
                requested: start,
                log_start: state.log_start,
                log_end: state.log_end,
            });
        }
        debug_assert!(limit <= state.log_end);
        // `hw` names the bound for the scan below: the high watermark for
        // consumers, the log end for replicas.
        let hw = limit;
        if start >= hw {
            return Ok(None);
        }
        for (_, segment) in state
            .segments
            .range(..=start)
            .next_back()
            .into_iter()
            .chain(
                state
                    .segments
                    .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded)),
            )
        {
            let Some(first) = segment.locate(start.max(segment.base()))? else {
                continue;
            };
            if first.header.base_offset >= hw {
                return Ok(None);
            }
            let committed_end = if hw >= segment.next_offset() {
                Position(segment.size())
            } else {
                segment
                    .locate(hw)?
                    .map_or(Position(segment.size()), |loc| loc.position)
            };
            if first.end() > committed_end {
                return Ok(None);
            }
            let limit = Position(
                first
                    .position
                    .0
                    .saturating_add(max_bytes)
                    .min(committed_end.0),
            );
            let end = if limit <= first.end() {
                first.end()
            } else {
                segment.batch_boundary_at_or_before(first.position, limit)?
            };
            debug_assert!(end > first.position && end <= committed_end);
            return Ok(Some(ReadSlice {
                file: segment.file().clone(),
                position: first.position,
                len: end.0 - first.position.0,
                first_batch_offset: first.header.base_offset,
                high_watermark: state.high_watermark,
                log_start: state.log_start,
            }));
        }
        Ok(None)
    }

    /// Resolves once the high watermark is above `offset` (there is
    /// something to read at `offset`), or the log is closed or failed.
    /// Callers race it with their max-wait timer.
    pub async fn wait_for_data(&self, offset: Offset) {
        self.wait_until(&self.high_watermark_moved, |state| {
            state.high_watermark > offset
        })
        .await
    }

    /// Resolves once the log end is above `offset` (a follower fetching at
    /// `offset` has something to copy), or the log is closed or failed.
    /// Callers race it with their max-wait timer.
    pub async fn wait_for_log_end(&self, offset: Offset) {
        self.wait_until(&self.log_end_moved, |state| state.log_end > offset)
            .await
    }

    /// Resolves once `reached` holds, or the log is closed or failed;
    /// registers with `moved`, the wakers of what `reached` looks at.
    async fn wait_until(&self, moved: &WakerList, reached: impl Fn(&LogState) -> bool) {
        poll_fn(|cx| {
            let state = self.state.borrow();
            if reached(&state) || state.closed || state.failure.is_some() {
                return Poll::Ready(());
            }
            moved.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Offset of the first committed record with timestamp ≥ `target`, or
    /// `None` when there is none yet.
    pub async fn offset_for_timestamp(&self, target: TimestampMs) -> LogResult<Option<Offset>> {
        Ok(self
            .record_at_or_after(target)
            .await?
            .map(|(offset, _)| offset))
    }

    /// Offset and timestamp of the first committed record with timestamp ≥
    /// `target`, or `None` when there is none yet.
    pub async fn record_at_or_after(
        &self,
        target: TimestampMs,
    ) -> LogResult<Option<(Offset, TimestampMs)>> {
        let found = {
            let state = self.state.borrow();
            let mut found = None;
            for segment in state.segments.values() {
                if let Some(location) = segment.locate_by_timestamp(target)? {
                    found = Some((segment.file().clone(), location));
                    break;
                }
            }
            found.map(|(file, location)| (file, location, state.high_watermark))
        };
        let Some((file, location, hw)) = found else {
            return Ok(None);
        };
        if location.header.base_offset >= hw {
            return Ok(None);
        }
        let bytes = bytes::Bytes::from(
            file.read_exact_at(location.position, location.header.total_bytes())
                .await?,
        );
        let (_, records) = decode_batch(&bytes).map_err(|source| LogError::Corrupt {
            path: file.path().to_path_buf(),
            position: location.position,
            source,
        })?;
        Ok(records
            .iter()
            .find(|r| r.timestamp >= target && r.offset < hw)
            .map(|r| (r.offset, r.timestamp)))
    }
}
