//! The write path: leader appends and replicated appends, the first batch
//! of a new leader epoch, and rolling to a new segment.

use std::time::Instant;

use crate::batch::{
    encode_batch, set_base_offset, set_leader_epoch, BatchHeader, Record, ValidBatch,
};
use crate::epoch_cache::write_checkpoint;
use crate::error::{LogError, LogResult};
use crate::io::replace::ReplaceError;
use crate::io::sync_directory;
use crate::segment::{Segment, SegmentAppendError, SegmentFile};
use crate::types::{LeaderEpoch, Offset};

use super::PartitionLog;

/// Offsets given to an appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
}

impl PartitionLog {
    /// Appends a client batch (RecordBatch v2, any base offset): the log
    /// checks it fully, assigns its offsets and the current leader epoch, and
    /// resolves once it is durable per the sync policy. Dropping the future
    /// after its first poll does not undo the write.
    pub async fn append(&self, batch: Vec<u8>) -> LogResult<Appended> {
        // One full check (header, CRC, every record) before the write gate.
        let batch = ValidBatch::check(batch).map_err(LogError::InvalidBatch)?;
        self.append_valid(batch).await
    }

    /// [`Self::append`] for a batch already validated by
    /// [`ValidBatch::check`] (e.g. by a caller that checked its own limits
    /// in the same walk): the records are not walked again. Only the
    /// validator builds a `ValidBatch` and its bytes cannot be changed
    /// outside this crate, so nothing unchecked reaches a segment.
    pub async fn append_valid(&self, batch: ValidBatch) -> LogResult<Appended> {
        // Base offset and epoch are stamped below, outside the CRC, so the
        // validated bytes stay valid.
        let (mut batch, header) = batch.into_parts();
        if header.last_offset_delta.checked_add(1) != Some(header.records_count) {
            return Err(LogError::InvalidBatch(
                crate::error::DecodeError::RecordCountMismatch {
                    declared: header.records_count.max(0) as usize,
                    found: header.last_offset_delta.saturating_add(1).max(0) as usize,
                },
            ));
        }
        let (appended, durable) = {
            let _permit = self.enter_write_phase().await?;
            self.roll_if_needed(batch.len()).await?;
            let (epoch, base) = {
                let state = self.state.borrow();
                (state.leader_epoch, state.log_end)
            };
            let new_epoch = self.begin_epoch_if_new(epoch, base).await?;
            let mut state = self.state.borrow_mut();
            state.check_writable()?;
            debug_assert_eq!(state.log_end, base);
            set_base_offset(&mut batch, base);
            set_leader_epoch(&mut batch, epoch);
            let header = BatchHeader {
                base_offset: base,
                leader_epoch: epoch,
                ..header
            };
            debug_assert_eq!(BatchHeader::parse(&batch).ok(), Some(header));
            if let Err(err) = state.active_mut().append(&batch, &header) {
                drop(state);
                return Err(self.segment_append_failed(new_epoch, err));
            }
            state.log_end = header.next_offset();
            let durable = state.register_commit_waiter(header.last_offset());
            state.debug_check_invariants();
            self.unsynced.signal();
            let appended = Appended {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
            };
            (appended, durable)
        };
        self.log_end_moved.wake_all();
        self.after_write(durable).await?;
        Ok(appended)
    }

    /// Encodes `records` as one batch and appends it (see [`Self::append`]).
    pub async fn append_records(&self, records: &[Record]) -> LogResult<Appended> {
        if records.is_empty() {
            return Err(LogError::InvalidBatch(
                crate::error::DecodeError::RecordCountMismatch {
                    declared: 0,
                    found: 0,
                },
            ));
        }
        let mut batch = Vec::with_capacity(crate::batch::encoded_len(records));
        encode_batch(Offset::ZERO, records, &mut batch);
        self.append(batch).await
    }

    /// Appends batches copied from a leader, keeping their offsets and
    /// epochs; resolves once durable. Returns the new log end.
    pub async fn append_replicated(&self, batches: &[u8]) -> LogResult<Offset> {
        let mut located = Vec::new();
        for item in crate::batch::BatchIter::new(batches) {
            let (header, bytes) = item.map_err(LogError::InvalidBatch)?;
            located.push((header, bytes));
        }
        let Some(last) = located.last().map(|(h, _)| h.last_offset()) else {
            return Ok(self.log_end_offset());
        };
        let durable = {
            let _permit = self.enter_write_phase().await?;
            self.check_replicated(&located)?;
            for (header, bytes) in &located {
                self.roll_if_needed(bytes.len()).await?;
                let new_epoch = self
                    .begin_epoch_if_new(header.leader_epoch, header.base_offset)
                    .await?;
                let mut state = self.state.borrow_mut();
                state.check_writable()?;
                if let Err(err) = state.active_mut().append(bytes, header) {
                    drop(state);
                    return Err(self.segment_append_failed(new_epoch, err));
                }
                state.log_end = header.next_offset();
                state.debug_check_invariants();
            }
            let durable = {
                let mut state = self.state.borrow_mut();
                let durable = state.register_commit_waiter(last);
                state.debug_check_invariants();
                durable
            };
            self.unsynced.signal();
            durable
        };
        self.log_end_moved.wake_all();
        self.after_write(durable).await?;
        Ok(self.log_end_offset())
    }

    /// Refuses a replicated append before any byte is written: each batch
    /// must start at or after the end of the one before it (the log end for
    /// the first), and no epoch may fall below one already in the log or
    /// earlier in the same append. Caller holds the write gate.
    fn check_replicated(&self, located: &[(BatchHeader, &[u8])]) -> LogResult<()> {
        let state = self.state.borrow();
        state.check_writable()?;
        let mut expected = state.log_end;
        let mut epochs = state.epochs.clone();
        for (header, _) in located {
            if header.base_offset < expected {
                return Err(LogError::NonContiguous {
                    expected,
                    got: header.base_offset,
                });
            }
            if !epochs.admits(header.leader_epoch) {
                return Err(LogError::EpochRegression {
                    epoch: header.leader_epoch,
                    latest: epochs.latest_epoch().unwrap_or(LeaderEpoch::NONE),
                });
            }
            epochs.assign(header.leader_epoch, header.base_offset);
            expected = header.next_offset();
        }
        Ok(())
    }

    /// When a batch stamped `epoch` at `base` starts a new leader epoch,
    /// records it and writes `leader-epoch-checkpoint` durably *before* the
    /// batch is written, so a crash can leave an entry past the log end
    /// (dropped on open) but never a batch of an unrecorded epoch. Returns
    /// whether an epoch began. A stale epoch is refused. Caller holds the
    /// write gate. A checkpoint that could not be written at all (a full
    /// disk) refuses this append and leaves the epoch to begin with the next
    /// one; one whose rename or directory sync failed fail-stops the
    /// partition.
    async fn begin_epoch_if_new(&self, epoch: LeaderEpoch, base: Offset) -> LogResult<bool> {
        let (dir, epochs) = {
            let mut state = self.state.borrow_mut();
            state.check_writable()?;
            if !state.epochs.admits(epoch) {
                return Err(LogError::EpochRegression {
                    epoch,
                    latest: state.epochs.latest_epoch().unwrap_or(LeaderEpoch::NONE),
                });
            }
            if !state.epochs.assign(epoch, base) {
                return Ok(false);
            }
            state.debug_check_invariants();
            (state.config.dir.clone(), state.epochs.clone())
        };
        match write_checkpoint(&dir, &epochs).await {
            Ok(()) => {}
            Err(ReplaceError::NotWritten(err @ LogError::NoSpace { .. })) => {
                let mut state = self.state.borrow_mut();
                state.epochs.truncate_from_end(base);
                state.debug_check_invariants();
                return Err(err);
            }
            Err(err) => {
                let mut state = self.state.borrow_mut();
                state.epochs.truncate_from_end(base);
                state.debug_check_invariants();
                drop(state);
                return Err(self.fail_stop(err.into_inner()));
            }
        }
        tracing::info!(dir = %dir.display(), epoch = epoch.0, start_offset = base.0,
            "leader epoch begins");
        Ok(true)
    }

    /// Rolls the active segment if it is older than the segment age (and
    /// not empty), even with no append arriving: retention and compaction
    /// only touch sealed segments, so an idle partition must roll too.
    pub async fn roll_if_due(&self) -> LogResult<()> {
        let _permit = self.enter_write_phase().await?;
        self.roll_if_needed(0).await
    }

    /// Seals the active segment and starts a new one when the next batch
    /// would not fit, the segment is too old, or its relative offsets would
    /// overflow the index; then makes sure the next batch lies within the
    /// active segment's preallocation. Caller holds the write gate.
    async fn roll_if_needed(&self, next_batch_bytes: usize) -> LogResult<()> {
        let (must_roll, segment_bytes) = {
            let state = self.state.borrow();
            let active = state.active();
            let config = &state.config;
            let full = active.size() + next_batch_bytes as u64 > config.segment_bytes;
            let old = state.active_since.elapsed() >= config.segment_age;
            let offsets_exhausted = state.log_end.0 - active.base().0
                > u64::from(u32::MAX) - crate::constants::BATCH_RECORDS_MAX as u64;
            (
                !active.is_empty() && (full || old || offsets_exhausted),
                config.segment_bytes,
            )
        };
        if next_batch_bytes as u64 > segment_bytes {
            return Err(LogError::BatchTooLarge {
                bytes: next_batch_bytes,
                segment_bytes,
            });
        }
        if must_roll {
            self.roll().await?;
        }
        self.extend_preallocation(next_batch_bytes).await
    }

    /// Seals the active segment (durably) and creates the next one. Caller
    /// holds the write gate.
    async fn roll(&self) -> LogResult<()> {
        let (dir, base, segment_config) = {
            let state = self.state.borrow();
            (
                state.config.dir.clone(),
                state.log_end,
                state.config.segment_config(),
            )
        };
        // The next segment first: if the disk is full this fails (and
        // removes what it made) while the active segment is still untouched
        // and preallocated, so the append is rejected and nothing else
        // changes.
        let segment = Segment::create(&dir, base, &segment_config).await?;
        // Seal through the shared file handle so the segment stays in the map
        // (readers and `segments()` keep seeing it) and no borrow is held
        // across the awaits; the write gate keeps appenders out meanwhile.
        let (file, logical_size) = {
            let state = self.state.borrow();
            let active = state.active();
            (active.file().clone(), active.size())
        };
        if let Err(err) = seal_file(&file, logical_size).await {
            return Err(self.fail_stop(err));
        }
        self.state.borrow_mut().active_mut().mark_sealed();
        // A failed directory sync is a failed sync: fail-stop, never retry
        // it and believe the next one.
        if let Err(err) = sync_directory(&dir).await {
            return Err(self.fail_stop(err));
        }
        let mut state = self.state.borrow_mut();
        state.segments.insert(base, segment);
        state.active_since = Instant::now();
        state.debug_check_invariants();
        tracing::debug!(dir = %dir.display(), base = base.0, "rolled segment");
        Ok(())
    }

    /// A segment write that failed: a clean rejection (e.g. a full disk)
    /// leaves the log as it was; a write whose partial bytes stayed behind
    /// fail-stops it (reopening cuts them off). So does any failed write of
    /// the first batch of a new epoch (`new_epoch`): memory and the epoch
    /// checkpoint then name an epoch the log does not hold (a reopen drops
    /// the entry, or finds the batch and keeps it).
    fn segment_append_failed(&self, new_epoch: bool, err: SegmentAppendError) -> LogError {
        match err {
            SegmentAppendError::Rejected(err) if new_epoch => self.fail_stop(err),
            SegmentAppendError::Rejected(err) => {
                if matches!(err, LogError::NoSpace { .. }) {
                    tracing::warn!(dir = %self.dir().display(), error = %err,
                        "append rejected: no space left on device");
                }
                err
            }
            SegmentAppendError::TailUnclean(err) => self.fail_stop(err),
        }
    }
}

/// Truncates a segment file to its logical end and makes that durable.
async fn seal_file(file: &SegmentFile, logical_size: u64) -> LogResult<()> {
    file.truncate(logical_size).await?;
    file.fdatasync().await
}
