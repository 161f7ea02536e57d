//! Removing data: a divergent suffix (`truncate_to`), the whole log
//! (`reset_to`), and whole sealed segments from the start (retention).

use std::path::PathBuf;
use std::time::Instant;

use crate::epoch_cache::{write_checkpoint, EpochCache};
use crate::error::{LogError, LogResult};
use crate::io::sync_directory;
use crate::segment::Segment;
use crate::types::Offset;

use super::{
    commit::{write_high_watermark, CommitOutcome},
    remove_segments, CommitMode, LogState, PartitionLog,
};

impl PartitionLog {
    /// Removes every batch at or after the one holding `offset` (a follower
    /// dropping a divergent tail). Returns the new log end (≤ `offset`);
    /// durable when it returns. Appends waiting on removed offsets fail.
    pub async fn truncate_to(&self, offset: Offset) -> LogResult<Offset> {
        let _permit = self.enter_write_phase().await?;
        let (dir, segment_config, doomed) = {
            let mut state = self.state.borrow_mut();
            if offset >= state.log_end {
                return Ok(state.log_end);
            }
            state.truncation_snapshot = Some(state.segment_infos());
            let keep_from = state.segments.range(..=offset).next_back().map(|(b, _)| *b);
            let doomed_keys: Vec<Offset> = state
                .segments
                .keys()
                .copied()
                .filter(|b| Some(*b) != keep_from && *b >= offset)
                .collect();
            let doomed: Vec<Segment> = doomed_keys
                .iter()
                .filter_map(|b| state.segments.remove(b))
                .collect();
            (
                state.config.dir.clone(),
                state.config.segment_config(),
                doomed,
            )
        };
        if let Err(err) = remove_segments(&doomed).await {
            self.state.borrow_mut().truncation_snapshot = None;
            return Err(self.fail_stop(err));
        }
        let popped = self.state.borrow_mut().segments.pop_last();
        let mut tail = match popped {
            Some((_, tail)) => tail,
            None => match Segment::create(&dir, offset, &segment_config).await {
                Ok(segment) => segment,
                // Without a segment the log cannot go on: fail-stop (appends
                // check that before touching the map).
                Err(err) => {
                    self.state.borrow_mut().truncation_snapshot = None;
                    return Err(self.fail_stop(err));
                }
            },
        };
        let truncated = tail.truncate_to(offset, &segment_config).await;
        let new_end = tail.next_offset();
        let tail_base = tail.base();
        let mut trimmed = false;
        let failed = {
            let mut state = self.state.borrow_mut();
            state.segments.insert(tail_base, tail);
            state.truncation_snapshot = None;
            match truncated {
                Err(err) => Some(err),
                Ok(_) => {
                    state.apply_truncation(new_end);
                    // Epochs that began in the removed tail must not be
                    // reported to a follower; dropped here, in the same
                    // step as the offsets they start at (the checkpoint
                    // file follows below).
                    trimmed = state.epochs.truncate_from_end(new_end);
                    state.debug_check_invariants();
                    None
                }
            }
        };
        if let Some(err) = failed {
            return Err(self.fail_stop(err));
        }
        self.log_end_moved.wake_all();
        self.unsynced.signal();
        sync_directory(&dir).await?;
        // The checkpoint may name offsets that no longer exist (or will be
        // rewritten with uncommitted data): lower it before anything else.
        let (commit, hw) = {
            let state = self.state.borrow();
            (state.config.commit, state.high_watermark)
        };
        if commit == CommitMode::Replicated {
            write_high_watermark(&dir, hw).await?;
        }
        // The checkpoint loses the epochs trimmed above before new data of
        // any epoch is appended here (the caller holds the write gate).
        let trimmed = trimmed.then(|| self.state.borrow().epochs.clone());
        if let Some(epochs) = trimmed {
            if let Err(err) = write_checkpoint(&dir, &epochs).await {
                return Err(self.fail_stop(err.into()));
            }
        }
        Ok(new_end)
    }

    /// Empties the log and restarts it at `start`, which must not be below
    /// the log end: a follower whose next offset the leader's retention has
    /// already deleted continues from the leader's log start (offsets are
    /// never renumbered, so the range in between is skipped). Durable when it
    /// returns: a crash part way leaves either the old log or an empty one,
    /// and both fetch again from the leader.
    pub async fn reset_to(&self, start: Offset) -> LogResult<()> {
        let _permit = self.enter_write_phase().await?;
        let (dir, segment_config, doomed) = {
            let mut state = self.state.borrow_mut();
            if start < state.log_end {
                return Err(LogError::OffsetOutOfRange {
                    requested: start,
                    log_start: state.log_end,
                    log_end: Offset(u64::MAX),
                });
            }
            state.truncation_snapshot = Some(state.segment_infos());
            let doomed: Vec<Segment> = std::mem::take(&mut state.segments).into_values().collect();
            (
                state.config.dir.clone(),
                state.config.segment_config(),
                doomed,
            )
        };
        // Old segments go first: a crash before the new one exists leaves an
        // empty directory, which opens as an empty log.
        let created = match remove_segments(&doomed).await {
            Ok(()) => Segment::create(&dir, start, &segment_config).await,
            Err(err) => Err(err),
        };
        let segment = match created {
            Ok(segment) => segment,
            Err(err) => {
                self.state.borrow_mut().truncation_snapshot = None;
                return Err(self.fail_stop(err));
            }
        };
        {
            let mut state = self.state.borrow_mut();
            state.segments.insert(start, segment);
            state.truncation_snapshot = None;
            state.apply_truncation(start);
            state.stable = start;
            state.high_watermark = start;
            state.epochs = EpochCache::default();
            debug_assert_eq!(state.log_start, start);
            state.debug_check_invariants();
        }
        self.log_end_moved.wake_all();
        self.high_watermark_moved.wake_all();
        if let Err(err) = sync_directory(&dir).await {
            return Err(self.fail_stop(err));
        }
        let commit = self.state.borrow().config.commit;
        if commit == CommitMode::Replicated {
            write_high_watermark(&dir, start).await?;
        }
        if let Err(err) = write_checkpoint(&dir, &EpochCache::default()).await {
            return Err(self.fail_stop(err.into()));
        }
        Ok(())
    }

    /// Deletes the sealed segments whose base offsets are listed (retention).
    /// The active segment and anything at or above the high watermark are
    /// never deleted; the log start moves to the first remaining segment.
    pub async fn delete_segments(&self, bases: &[Offset]) -> LogResult<usize> {
        let doomed = {
            // Under the write gate (released before the files are unlinked)
            // so a compaction swap never races the removal of the segment it
            // replaces: see `install_cleaned`.
            let _permit = self.enter_write_phase().await?;
            let (doomed, collapsed) = self.take_deletable_segments(bases);
            // Rare (a retention round), so written under the gate like every
            // other checkpoint change. Losing it is harmless: open collapses
            // the entries before the log start again.
            if let Some((dir, epochs)) = collapsed {
                if let Err(err) = write_checkpoint(&dir, &epochs).await {
                    tracing::warn!(dir = %dir.display(), error = %err,
                        "cannot rewrite the leader-epoch checkpoint after retention");
                }
            }
            doomed
        };
        let count = doomed.len();
        remove_segments(&doomed).await?;
        Ok(count)
    }

    /// Takes the deletable ones of `bases` out of the map, moves the log
    /// start and collapses the epoch entries below it; returns the segments
    /// and, when the epoch cache changed, what to checkpoint. Caller holds
    /// the write gate.
    fn take_deletable_segments(
        &self,
        bases: &[Offset],
    ) -> (Vec<Segment>, Option<(PathBuf, EpochCache)>) {
        let mut state = self.state.borrow_mut();
        let active_base = state.active().base();
        let hw = state.high_watermark;
        let mut doomed = Vec::new();
        for base in bases {
            let deletable = state
                .segments
                .get(base)
                .is_some_and(|s| s.base() != active_base && s.next_offset() <= hw);
            if deletable {
                if let Some(segment) = state.segments.remove(base) {
                    doomed.push(segment);
                }
            }
        }
        // The active segment is never removed, so a first segment remains;
        // segments are ordered and the log starts at the first, so it only
        // moves up (no clamp: `check_invariants` holds it to that).
        let first = *state.segments.keys().next().unwrap_or(&active_base);
        state.log_start = first;
        let collapsed = state
            .epochs
            .truncate_from_start(first)
            .then(|| (state.config.dir.clone(), state.epochs.clone()));
        state.debug_check_invariants();
        (doomed, collapsed)
    }
}

impl LogState {
    /// Moves every watermark down to `new_end` after a truncation and fails
    /// the appends waiting on removed offsets.
    fn apply_truncation(&mut self, new_end: Offset) {
        self.log_start = *self.segments.keys().next().unwrap_or(&new_end);
        self.log_end = new_end;
        self.stable = self.stable.min(new_end);
        self.high_watermark = self.high_watermark.min(new_end);
        self.truncation_generation += 1;
        self.active_since = Instant::now();
        while let Some((last, _)) = self.commit_waiters.back() {
            if *last < new_end {
                break;
            }
            if let Some((_, tx)) = self.commit_waiters.pop_back() {
                let _ = tx.send(CommitOutcome::Truncated);
            }
        }
    }
}
