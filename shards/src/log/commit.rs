//! Group commit and the watermarks: the sync task, durability waiters,
//! the fail-stop, the high watermark and its checkpoint file.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use glommio::io::BufferedFile;

use crate::error::{LogError, LogResult};
use crate::event::{LocalEvent, WakerList};
use crate::io::pread_full;
use crate::io::replace::{replace_file, ReplaceError};
use crate::types::{Offset, TimestampMs};

use super::{CommitMode, LogState, PartitionLog, SyncPolicy, HIGH_WATERMARK_FILE};

/// Upper bounds (µs) of the fsync latency buckets in [`FsyncStats`]; one
/// more bucket counts everything slower.
pub const FSYNC_BUCKET_BOUNDS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// Latency of this log's `fdatasync` calls since it was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsyncStats {
    /// Syncs completed.
    pub count: u64,
    /// Their total duration in microseconds.
    pub sum_us: u64,
    /// Counts per bucket of [`FSYNC_BUCKET_BOUNDS_US`], overflow last.
    pub buckets: [u64; FSYNC_BUCKET_BOUNDS_US.len() + 1],
}

impl FsyncStats {
    fn record(&mut self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        let bucket = FSYNC_BUCKET_BOUNDS_US.partition_point(|bound| *bound < us);
        self.buckets[bucket] += 1;
    }
}

/// Why and when a log fail-stopped, for operators (`/metrics`, `describe`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailStop {
    /// The operation and errno, e.g. `fdatasync EIO`.
    pub cause: String,
    /// Wall-clock time of the failure.
    pub at: TimestampMs,
}

impl FailStop {
    fn new(err: &LogError) -> FailStop {
        let cause = match err {
            LogError::Io { op, source, .. } => {
                let errno = source.raw_os_error();
                match errno.and_then(crate::io::errno_name) {
                    Some(name) => format!("{op} {name}"),
                    None => format!("{op}: {source}"),
                }
            }
            LogError::NoSpace { op, .. } => format!("{op} ENOSPC"),
            other => other.to_string(),
        };
        FailStop {
            cause,
            at: TimestampMs::now(),
        }
    }
}

#[derive(Debug)]
pub(super) enum CommitOutcome {
    Durable,
    Failed,
    Truncated,
}

impl PartitionLog {
    pub(super) async fn after_write(
        &self,
        durable: Option<oneshot::Receiver<CommitOutcome>>,
    ) -> LogResult<()> {
        let Some(durable) = durable else {
            self.high_watermark_moved.wake_all();
            return Ok(());
        };
        match durable.await {
            Ok(CommitOutcome::Durable) => Ok(()),
            Ok(CommitOutcome::Truncated) => Err(LogError::Closed),
            Ok(CommitOutcome::Failed) | Err(_) => Err(self.state.borrow().fail_stopped_error()),
        }
    }

    /// Makes `offset` the high watermark (replicated logs; clamped to the
    /// locally durable end) and wakes waiting fetches.
    pub fn advance_high_watermark(&self, offset: Offset) {
        let moved = {
            let mut state = self.state.borrow_mut();
            // Clamped, not asserted: `offset` comes from the replication
            // layer and may legitimately be ahead of this log's `stable` (a
            // follower takes the leader's high watermark, capped only by
            // its own log end, which may not be synced yet) or behind the
            // current high watermark (a stale fetch answer).
            let target = offset.min(state.stable);
            let moved = target > state.high_watermark;
            if moved {
                state.high_watermark = target;
            }
            state.debug_check_invariants();
            moved
        };
        if moved {
            self.high_watermark_moved.wake_all();
        }
    }

    /// Writes the high watermark durably to `high-watermark` (temp file,
    /// fsync, rename, directory fsync), for replicated logs to resume from.
    pub async fn checkpoint_high_watermark(&self) -> LogResult<()> {
        let (dir, hw) = {
            let state = self.state.borrow();
            (state.config.dir.clone(), state.high_watermark)
        };
        write_high_watermark(&dir, hw).await
    }
}

impl LogState {
    /// Registers interest in `last` becoming durable; `None` when it already
    /// counts as durable (sync policy `Never`).
    pub(super) fn register_commit_waiter(
        &mut self,
        last: Offset,
    ) -> Option<oneshot::Receiver<CommitOutcome>> {
        if self.config.sync == SyncPolicy::Never {
            self.mark_stable(self.log_end);
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.commit_waiters.push_back((last, tx));
        Some(rx)
    }

    /// Everything below `target` is durable: moves `stable` (and, for a
    /// local log, the high watermark) and resolves the appends it covers.
    /// `target` is never past the log end: it is the log end when the sync
    /// began, and a truncation since then (the only thing that lowers the
    /// log end) bumps the truncation generation, which keeps the sync task
    /// from calling this (checked by [`LogState::debug_check_invariants`]).
    pub(super) fn mark_stable(&mut self, target: Offset) {
        if target <= self.stable {
            return;
        }
        self.stable = target;
        if self.config.commit == CommitMode::Local {
            self.high_watermark = target;
        }
        while let Some((last, _)) = self.commit_waiters.front() {
            if *last >= target {
                break;
            }
            if let Some((_, tx)) = self.commit_waiters.pop_front() {
                let _ = tx.send(CommitOutcome::Durable);
            }
        }
        self.debug_check_invariants();
    }

    /// Fail-stops the log because of `err` (the first cause is kept).
    pub(super) fn fail(&mut self, err: &LogError) {
        if self.failure.is_none() {
            self.failure = Some(FailStop::new(err));
        }
        for (_, tx) in self.commit_waiters.drain(..) {
            let _ = tx.send(CommitOutcome::Failed);
        }
    }
}

/// The group-commit loop: one `fdatasync` at a time per log, covering every
/// batch appended before it started.
pub(super) async fn sync_loop(
    state: Rc<RefCell<LogState>>,
    unsynced: Rc<LocalEvent>,
    hw_moved: Rc<WakerList>,
) {
    loop {
        let (policy, dirty) = {
            let state = state.borrow();
            let dirty = state.log_end > state.stable;
            if state.failure.is_some() || (state.closed && !dirty) {
                return;
            }
            (state.config.sync, dirty)
        };
        match policy {
            SyncPolicy::Never => {
                unsynced.wait().await;
                continue;
            }
            SyncPolicy::Interval(interval) => glommio::timer::sleep(interval).await,
            SyncPolicy::EveryBatch if !dirty => {
                unsynced.wait().await;
                continue;
            }
            SyncPolicy::EveryBatch => {}
        }
        let next = {
            let state = state.borrow();
            if state.failure.is_some() || state.log_end <= state.stable {
                continue;
            }
            // While `truncate_to` has the tail out of the map there is nothing
            // to sync (it syncs the tail itself) and it signals when done.
            if state.truncation_snapshot.is_some() {
                None
            } else {
                state.segments.values().next_back().map(|active| {
                    (
                        state.log_end,
                        active.file().clone(),
                        state.truncation_generation,
                    )
                })
            }
        };
        let Some((target, file, generation)) = next else {
            unsynced.wait().await;
            continue;
        };
        let started = Instant::now();
        let result = file.fdatasync().await;
        let mut state_ref = state.borrow_mut();
        state_ref.fsync_stats.record(started.elapsed());
        match result {
            Ok(()) if state_ref.truncation_generation == generation => {
                state_ref.mark_stable(target);
                drop(state_ref);
                hw_moved.wake_all();
            }
            // A truncation ran during the sync: the next round syncs again.
            Ok(()) => {}
            Err(err) => {
                tracing::error!(error = %err, "fdatasync failed; partition fail-stopped");
                state_ref.fail(&err);
                drop(state_ref);
                hw_moved.wake_all();
                return;
            }
        }
    }
}

const HIGH_WATERMARK_CHECKPOINT_BYTES: usize = 12;

/// Writes the checkpoint durably (see [`replace_file`]). On failure (a full
/// disk) the previous checkpoint stays: it is older, so lower, which is
/// always safe to resume from.
pub(super) async fn write_high_watermark(dir: &Path, hw: Offset) -> LogResult<()> {
    let mut bytes = [0u8; HIGH_WATERMARK_CHECKPOINT_BYTES];
    bytes[..8].copy_from_slice(&hw.0.to_be_bytes());
    bytes[8..].copy_from_slice(&crc32c::crc32c(&hw.0.to_be_bytes()).to_be_bytes());
    replace_file(dir, HIGH_WATERMARK_FILE, &bytes)
        .await
        .map_err(ReplaceError::into_inner)
}

pub(super) async fn read_high_watermark(dir: &Path) -> LogResult<Option<Offset>> {
    let path = dir.join(HIGH_WATERMARK_FILE);
    let file = match BufferedFile::open(&path).await {
        Ok(file) => file,
        Err(_) => return Ok(None),
    };
    let mut bytes = [0u8; HIGH_WATERMARK_CHECKPOINT_BYTES];
    let read = pread_full(std::os::unix::io::AsRawFd::as_raw_fd(&file), &mut bytes, 0)
        .map_err(|e| LogError::io("read checkpoint", &path, e))?;
    let _ = file.close().await;
    if read != HIGH_WATERMARK_CHECKPOINT_BYTES {
        tracing::warn!(path = %path.display(), "short high-watermark checkpoint ignored");
        return Ok(None);
    }
    let (value, crc) = bytes.split_at(8);
    let stored_crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(value) != stored_crc {
        tracing::warn!(path = %path.display(), "corrupt high-watermark checkpoint ignored");
        return Ok(None);
    }
    let mut raw = [0u8; 8];
    raw.copy_from_slice(value);
    Ok(Some(Offset(u64::from_be_bytes(raw))))
}
