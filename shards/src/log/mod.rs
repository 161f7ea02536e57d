//! The partition log: an ordered set of segments, one active, with group
//! commit and the three watermarks that say how safe each byte is.
//!
//! ```text
//!  log_start            high_watermark      stable          log_end (dirty)
//!     |  committed: readable  |  durable here,  |  written to the |
//!     |  by consumers         |  not yet on ISR |  page cache only|
//! ```
//!
//! * `log_end` — next offset to assign; everything below is in the page cache.
//! * `stable` — everything below has been `fdatasync`ed.
//! * `high_watermark` — everything below is committed and may be read. With
//!   [`CommitMode::Local`] it follows `stable`; with
//!   [`CommitMode::Replicated`] the replication layer advances it (never past
//!   `stable`).
//!
//! **Group commit.** `append` writes its batch with `pwrite` right away and
//! then waits. One sync task per log runs `fdatasync` (through io_uring) on
//! the active segment whenever `log_end > stable`; everything appended while
//! a sync is in flight forms the next commit. So one `fdatasync` covers all
//! batches appended since the previous one, and `append` resolves only when
//! its batch is durable (under [`SyncPolicy::EveryBatch`] or
//! [`SyncPolicy::Interval`]).
//!
//! **Fail-stop.** A failed `fdatasync` (EIO) is never retried: the kernel may
//! already have dropped the dirty pages, so a second "success" would be a
//! lie. The log stops accepting writes, fails every waiter, and must be
//! reopened, which rescans it from disk. [`PartitionLog::failure`] says what
//! failed and when.
//!
//! **A full disk is not a failure.** `ENOSPC` (or `EDQUOT`) wherever an
//! append needs space — the `pwrite` of the batch, an index entry, creating
//! or preallocating the next segment on a roll, the leader-epoch checkpoint
//! a new epoch's first batch needs — rejects that append with
//! [`LogError::NoSpace`] and leaves the log exactly as before it: a partial
//! write is cut off again, a half-created segment removed, offsets stay
//! dense, and the next append after space is freed succeeds. Preallocation
//! is best effort (a segment that could not be preallocated is extended by
//! its appends), and a skipped index entry only costs lookup speed. Only a
//! failed sync, or a failed write whose partial bytes cannot be removed,
//! fail-stops. The one exception is a brand-new log under
//! [`LogConfig::require_first_preallocation`]: it does not open at all when
//! its first preallocation step does not fit, so a partition that could
//! never hold a step's worth of data is refused when it is created rather
//! than accepted and then refusing appends.
//!
//! **Preallocation grows with the segment.** A new segment preallocates
//! [`SEGMENT_PREALLOCATE_FIRST_BYTES`](crate::constants::SEGMENT_PREALLOCATE_FIRST_BYTES); an append that would pass the
//! preallocated end first extends it (under the write gate, before the
//! `pwrite`), doubling while that is within one step
//! ([`LogConfig::preallocate_step_bytes`]), then a step at a time; a sealed
//! segment is cut to its logical end. So an active segment holds no more
//! unwritten space than it holds data, or one step.
//!
//! All state lives in one `RefCell` on the owning shard; no borrow is held
//! across an `.await`.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;
use glommio::sync::Semaphore;

use crate::epoch_cache::{EpochCache, EpochEntry};
use crate::error::{LogError, LogResult};
use crate::event::{LocalEvent, WakerList};
use crate::segment::Segment;
use crate::types::{LeaderEpoch, Offset};

mod append;
mod commit;
mod config;
mod install;
mod prealloc;
mod read;
mod recovery;
mod truncate;

/// Re-exported where it has always been named: the log hands these out.
pub use crate::segment::SegmentInfo;
pub use append::Appended;
pub use commit::{FailStop, FsyncStats, FSYNC_BUCKET_BOUNDS_US};
pub use config::{CommitMode, LogConfig, SyncPolicy};
pub(crate) use install::{CompactionView, SegmentSnapshot};
pub use read::ReadSlice;
pub use recovery::RecoveryReport;

use commit::{write_high_watermark, CommitOutcome};
use recovery::write_clean_shutdown_marker;

/// Written (and fsynced) by `close` after the final sync; its absence on
/// open means a crash, and the active segment is then checked in full.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// Name of the high-watermark checkpoint file in a partition directory.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";

struct LogState {
    config: LogConfig,
    /// Sealed segments and, last, the active one; keyed by base offset.
    segments: BTreeMap<Offset, Segment>,
    active_since: Instant,
    log_start: Offset,
    log_end: Offset,
    stable: Offset,
    high_watermark: Offset,
    leader_epoch: LeaderEpoch,
    /// Where each leader epoch starts; mirrored in `leader-epoch-checkpoint`
    /// (rewritten under the write gate whenever it changes).
    epochs: EpochCache,
    /// Appends waiting for durability, in offset order.
    commit_waiters: VecDeque<(Offset, oneshot::Sender<CommitOutcome>)>,
    /// Bumped by truncation so a sync that started before it cannot mark
    /// rewritten offsets durable.
    truncation_generation: u64,
    /// Set once, by the fail-stop; never cleared (the log must be reopened).
    failure: Option<FailStop>,
    closed: bool,
    fsync_stats: FsyncStats,
    /// The segments as they were when `truncate_to` began, while it has
    /// segments out of the map: `segments()` reports these and the sync task
    /// waits (the truncation makes its own result durable).
    truncation_snapshot: Option<Vec<SegmentInfo>>,
    /// A compaction is running (at most one per log: its `*.cleaned` files
    /// have fixed names).
    compacting: bool,
}

/// A partition's log. Lives on, and only on, the shard that owns the
/// partition (it is `!Send`).
pub struct PartitionLog {
    state: Rc<RefCell<LogState>>,
    /// Serialises the write phase of appends, rolls and truncations; held
    /// only while bytes are written, never while waiting for a sync.
    write_gate: Rc<Semaphore>,
    unsynced: Rc<LocalEvent>,
    high_watermark_moved: Rc<WakerList>,
    /// Woken when `log_end` moves (appends, truncation) or the log stops:
    /// a leader's replica fetches long-poll on it.
    log_end_moved: Rc<WakerList>,
    sync_task: Option<glommio::task::JoinHandle<()>>,
}

impl PartitionLog {
    async fn enter_write_phase(&self) -> LogResult<glommio::sync::Permit<'_>> {
        let permit = self
            .write_gate
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        self.state.borrow().check_writable()?;
        Ok(permit)
    }

    fn fail_stop(&self, err: LogError) -> LogError {
        let mut state = self.state.borrow_mut();
        tracing::error!(dir = %state.config.dir.display(), error = %err, "partition fail-stopped");
        state.fail(&err);
        err
    }

    /// Sets the epoch stamped on batches appended from now on. The first
    /// such batch records the epoch's start in `leader-epoch-checkpoint`;
    /// an epoch below the latest one in the log makes appends fail with
    /// [`LogError::EpochRegression`].
    pub fn set_leader_epoch(&self, epoch: LeaderEpoch) {
        self.state.borrow_mut().leader_epoch = epoch;
    }

    /// The epoch batches are stamped with from now on (see
    /// [`Self::set_leader_epoch`]); [`LeaderEpoch::NONE`] after open.
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.state.borrow().leader_epoch
    }

    /// The epoch of the newest data in the log, `None` when no batch in it
    /// carries an epoch. What a returning follower asks the leader about.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.state.borrow().epochs.latest_epoch()
    }

    /// The leader-epoch cache: each epoch and the offset of its first batch,
    /// oldest first.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.state.borrow().epochs.entries().to_vec()
    }

    /// Kafka's `OffsetForLeaderEpoch` on this log: the largest epoch ≤
    /// `epoch` and the offset where it ended here (the start of the next
    /// larger epoch, or the log end for the latest one, counting the epoch
    /// set by [`Self::set_leader_epoch`] as starting at the log end until it
    /// writes); `None` when `epoch` is negative or newer than everything
    /// here. See [`EpochCache::end_offset_for_epoch`].
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let state = self.state.borrow();
        state
            .epochs
            .end_offset_for_epoch(epoch, state.log_end, state.leader_epoch)
    }

    /// The first offset the log still holds (retention moves it up).
    pub fn log_start_offset(&self) -> Offset {
        self.state.borrow().log_start
    }

    /// The offset the next append gets: everything below is written.
    pub fn log_end_offset(&self) -> Offset {
        self.state.borrow().log_end
    }

    /// Everything below this offset is fsynced.
    pub fn stable_offset(&self) -> Offset {
        self.state.borrow().stable
    }

    /// Everything below this offset is committed: the only part consumers
    /// may read.
    pub fn high_watermark(&self) -> Offset {
        self.state.borrow().high_watermark
    }

    /// Whether a failed `fdatasync` fail-stopped the log.
    pub fn is_failed(&self) -> bool {
        self.state.borrow().failure.is_some()
    }

    /// What fail-stopped this log and when; `None` while it is healthy.
    pub fn failure(&self) -> Option<FailStop> {
        self.state.borrow().failure.clone()
    }

    /// The partition directory.
    pub fn dir(&self) -> PathBuf {
        self.state.borrow().config.dir.clone()
    }

    /// Every segment, oldest first; during a truncation, the view from
    /// before it (so readers never see a half-cut log).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let state = self.state.borrow();
        match &state.truncation_snapshot {
            Some(snapshot) => snapshot.clone(),
            None => state.segment_infos(),
        }
    }

    /// Latency of the group-commit `fdatasync`s so far.
    pub fn fsync_stats(&self) -> FsyncStats {
        self.state.borrow().fsync_stats.clone()
    }

    /// Whether [`Self::close`] has begun (or the log was dropped): background
    /// tasks such as maintenance stop when they see it.
    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    /// Refuses new appends and ends every long poll at once, ahead of
    /// [`Self::close`]: appends already written still become durable (the
    /// sync task runs until nothing is dirty).
    pub fn stop_accepting(&self) {
        self.state.borrow_mut().closed = true;
        self.unsynced.signal();
        self.high_watermark_moved.wake_all();
        self.log_end_moved.wake_all();
    }

    /// Stops the sync task after a final sync; waits for in-flight appends.
    pub async fn close(mut self) -> LogResult<()> {
        let permit = self
            .write_gate
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let (file, sync_on_close) = {
            let mut state = self.state.borrow_mut();
            state.closed = true;
            // A fail-stopped log is never synced again (a second fdatasync
            // could "succeed" over lost pages) and gets no clean-shutdown
            // marker, so the next open scans it in full. (It may also have
            // no segment left: a truncation or reset that failed part way.)
            let active = state
                .segments
                .values()
                .next_back()
                .map(|s| s.file().clone());
            let sync = state.config.sync != SyncPolicy::Never && state.failure.is_none();
            (active, sync)
        };
        self.unsynced.signal();
        if let Some(task) = self.sync_task.take() {
            task.await;
        }
        drop(permit);
        self.write_gate.close();
        self.high_watermark_moved.wake_all();
        self.log_end_moved.wake_all();
        if let (true, Some(file)) = (sync_on_close, file) {
            file.fdatasync().await?;
            // Without the marker the next open scans the active segment in
            // full: slower, never wrong, so a full disk only costs that.
            if let Err(err) = write_clean_shutdown_marker(&self.dir()).await {
                tracing::warn!(dir = %self.dir().display(), error = %err,
                    "cannot write the clean-shutdown marker; the next open rescans");
            }
            let (commit, dir, hw) = {
                let state = self.state.borrow();
                (
                    state.config.commit,
                    state.config.dir.clone(),
                    state.high_watermark,
                )
            };
            if commit == CommitMode::Replicated {
                write_high_watermark(&dir, hw).await?;
            }
        }
        Ok(())
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        let mut state = self.state.borrow_mut();
        state.closed = true;
        drop(state);
        self.unsynced.signal();
        self.high_watermark_moved.wake_all();
        self.log_end_moved.wake_all();
    }
}

impl LogState {
    /// Every segment's summary, oldest first, the last one marked active.
    fn segment_infos(&self) -> Vec<SegmentInfo> {
        let active_base = self.segments.keys().next_back().copied();
        self.segments
            .values()
            .map(|s| s.info(Some(s.base()) == active_base))
            .collect()
    }

    fn active(&self) -> &Segment {
        match self.segments.values().next_back() {
            Some(active) => active,
            None => unreachable!("a log always has an active segment"),
        }
    }

    fn active_mut(&mut self) -> &mut Segment {
        match self.segments.values_mut().next_back() {
            Some(active) => active,
            None => unreachable!("a log always has an active segment"),
        }
    }

    fn check_writable(&self) -> LogResult<()> {
        if self.failure.is_some() {
            return Err(self.fail_stopped_error());
        }
        if self.closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    /// Checks the log's invariants; `Err` names the first one broken. They
    /// hold between any two state changes (every `borrow_mut` that changes
    /// the state ends with [`Self::debug_check_invariants`]):
    ///
    /// * `log_start ≤ high_watermark ≤ stable ≤ log_end`;
    /// * segments are keyed by their base offset, ordered, and do not
    ///   overlap (`next_offset` of one ≤ `base` of the next; a gap is
    ///   possible after a crash in the middle of a roll, where the sealed
    ///   segment lost an unsynced tail after the next one was created);
    /// * the log starts at the first segment and ends in the last one, the
    ///   active segment (appends only ever go to the last);
    /// * the leader-epoch entries are ordered (epochs and start offsets
    ///   strictly increasing), none starts before `log_start`, and all but
    ///   the latest start before `log_end`. The latest may start at or past
    ///   `log_end`: a new epoch is recorded (and checkpointed) before its
    ///   first batch is written, and a replicated batch may start past the
    ///   log end (the leader's offsets are kept, gaps included).
    ///
    /// The segment checks are skipped while `truncate_to` or `reset_to` has
    /// segments out of the map (`truncation_snapshot`) and once the log is
    /// fail-stopped (a failed truncation may leave it without segments; it
    /// must be reopened, which recovers from disk).
    #[cfg(debug_assertions)]
    fn check_invariants(&self) -> Result<(), String> {
        let (start, hw, stable, end) = (
            self.log_start,
            self.high_watermark,
            self.stable,
            self.log_end,
        );
        if !(start <= hw && hw <= stable && stable <= end) {
            return Err(format!(
                "watermarks out of order: log_start {start} high_watermark {hw} stable {stable} log_end {end}"
            ));
        }
        if self.truncation_snapshot.is_none() && self.failure.is_none() {
            let (Some(first), Some(last)) = (
                self.segments.values().next(),
                self.segments.values().next_back(),
            ) else {
                return Err("no active segment".into());
            };
            if first.base() != start {
                return Err(format!(
                    "log_start {start} is not the first segment's base {}",
                    first.base()
                ));
            }
            if last.next_offset() != end {
                return Err(format!(
                    "log_end {end} is not the active segment's end {}",
                    last.next_offset()
                ));
            }
            let mut previous_end: Option<Offset> = None;
            for (key, segment) in &self.segments {
                if *key != segment.base() || segment.next_offset() < segment.base() {
                    return Err(format!(
                        "segment keyed {key} has base {} and end {}",
                        segment.base(),
                        segment.next_offset()
                    ));
                }
                if previous_end.is_some_and(|prev| prev > segment.base()) {
                    return Err(format!(
                        "segment {key} overlaps the one before it (ending at {})",
                        previous_end.unwrap_or(Offset::ZERO)
                    ));
                }
                previous_end = Some(segment.next_offset());
            }
        }
        let mut previous: Option<EpochEntry> = None;
        let entries = self.epochs.entries();
        for (i, entry) in entries.iter().enumerate() {
            let latest = i + 1 == entries.len();
            if entry.start_offset < start || (!latest && entry.start_offset >= end) {
                return Err(format!(
                    "epoch {} starts at {}, outside the log [{start}, {end}]",
                    entry.epoch.0, entry.start_offset
                ));
            }
            if previous
                .is_some_and(|p| p.epoch >= entry.epoch || p.start_offset >= entry.start_offset)
            {
                return Err(format!(
                    "epoch entries out of order at epoch {}",
                    entry.epoch.0
                ));
            }
            previous = Some(*entry);
        }
        Ok(())
    }

    /// In debug builds and tests: panics when [`Self::check_invariants`]
    /// finds one broken. A broken invariant is a bug in this module, never
    /// bad input (recovery fits whatever it reads from disk to the log
    /// before the first check), so release builds skip the cost.
    fn debug_check_invariants(&self) {
        #[cfg(debug_assertions)]
        if let Err(broken) = self.check_invariants() {
            panic!(
                "partition log {} broke an invariant: {broken}",
                self.config.dir.display()
            );
        }
    }

    fn fail_stopped_error(&self) -> LogError {
        LogError::FailStopped {
            path: self.config.dir.clone(),
        }
    }
}

async fn remove_segments(segments: &[Segment]) -> LogResult<()> {
    for segment in segments {
        segment.remove_files().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fault_tests;

#[cfg(test)]
mod prealloc_tests;
