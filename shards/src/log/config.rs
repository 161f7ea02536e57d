//! How a partition log is configured: where, how large its segments grow,
//! how it preallocates, when it syncs and who commits.

use std::path::PathBuf;
use std::time::Duration;

use crate::constants::{
    INDEX_INTERVAL_BYTES_DEFAULT, SEGMENT_AGE_MS_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT, SEGMENT_PREALLOCATE_STEP_BYTES_MIN,
};
use crate::error::{LogError, LogResult};
use crate::segment::SegmentConfig;

/// When appended data is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` as soon as anything is unsynced; appends resolve once
    /// durable. The default, and the only policy that loses nothing acked.
    EveryBatch,
    /// `fdatasync` at most once per interval; appends still resolve only once
    /// durable, so latency rises by up to the interval and fsyncs are fewer.
    Interval(Duration),
    /// Never `fdatasync`; appends resolve once in the page cache. **Loses
    /// acknowledged data on power failure or kernel crash.** For benchmarks
    /// that say so, never for production.
    Never,
}

/// Who decides that data is committed (readable by consumers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// Single copy: committed once durable on this disk.
    Local,
    /// Replicated: committed once the replication layer says the in-sync
    /// replicas have it ([`super::PartitionLog::advance_high_watermark`]).
    Replicated,
}

/// How one partition log is laid out and made durable.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The partition directory (created on open if missing).
    pub dir: PathBuf,
    /// A segment rolls once appending would take it past this size.
    pub segment_bytes: u64,
    /// A non-empty active segment older than this rolls at the next append.
    pub segment_age: Duration,
    /// Bytes of batches between two offset-index entries.
    pub index_interval_bytes: u64,
    /// Preallocate the active segment with `fallocate`, a step ahead of its
    /// end, so appends rarely extend the file (cheaper `fdatasync`, less
    /// fragmentation).
    pub preallocate: bool,
    /// Largest preallocation step (see
    /// [`SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT`]).
    pub preallocate_step_bytes: u64,
    /// A new log (a directory without segments) fails to open with
    /// [`LogError::NoSpace`] when its first segment's first preallocation
    /// step does not fit, leaving no segment behind; otherwise it opens
    /// without preallocation. Never applies to a log that has segments: a
    /// full disk must not keep stored data from opening.
    pub require_first_preallocation: bool,
    /// When appends are made durable.
    pub sync: SyncPolicy,
    /// Who decides that appended data is committed.
    pub commit: CommitMode,
}

impl LogConfig {
    /// The defaults of [`crate::constants`] for a log in `dir`: preallocated
    /// segments, a sync per batch, committed once fsynced locally.
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_age: Duration::from_millis(SEGMENT_AGE_MS_DEFAULT),
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            preallocate: true,
            preallocate_step_bytes: SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT,
            require_first_preallocation: false,
            sync: SyncPolicy::EveryBatch,
            commit: CommitMode::Local,
        }
    }

    pub(super) fn validate(&self) -> LogResult<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(LogError::Config(format!(
                "segment_bytes {} outside [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]",
                self.segment_bytes
            )));
        }
        if !(SEGMENT_PREALLOCATE_STEP_BYTES_MIN..=SEGMENT_BYTES_MAX)
            .contains(&self.preallocate_step_bytes)
        {
            return Err(LogError::Config(format!(
                "preallocate_step_bytes {} outside [{SEGMENT_PREALLOCATE_STEP_BYTES_MIN}, {SEGMENT_BYTES_MAX}]",
                self.preallocate_step_bytes
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(LogError::Config("index_interval_bytes must be > 0".into()));
        }
        Ok(())
    }

    /// Bytes a new segment preallocates first: what a new log needs free
    /// under [`Self::require_first_preallocation`] (0 without preallocation).
    pub fn first_preallocation_bytes(&self) -> u64 {
        if self.preallocate {
            self.segment_config().first_preallocation_bytes()
        } else {
            0
        }
    }

    pub(super) fn segment_config(&self) -> SegmentConfig {
        SegmentConfig {
            segment_bytes: self.segment_bytes,
            index_interval_bytes: self.index_interval_bytes,
            preallocate: self.preallocate,
            preallocate_step_bytes: self.preallocate_step_bytes,
            first_step_required: false,
        }
    }
}
