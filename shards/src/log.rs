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
//! [`SEGMENT_PREALLOCATE_FIRST_BYTES`]; an append that would pass the
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
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use glommio::io::{BufferedFile, Directory, OpenOptions};
use glommio::sync::Semaphore;

use crate::batch::{
    decode_batch, encode_batch, set_base_offset, set_leader_epoch, validate_records, BatchHeader,
    Record,
};
#[cfg(doc)]
use crate::constants::SEGMENT_PREALLOCATE_FIRST_BYTES;
use crate::constants::{
    INDEX_INTERVAL_BYTES_DEFAULT, SEGMENT_AGE_MS_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT, SEGMENT_PREALLOCATE_STEP_BYTES_MIN,
};
use crate::epoch_cache::{read_checkpoint, write_checkpoint, EpochCache, EpochEntry};
use crate::error::{LogError, LogResult};
use crate::event::{LocalEvent, WakerList};
use crate::io::replace::{replace_file, ReplaceError};
use crate::io::{pread_full, remove_if_exists, sync_directory};
/// Re-exported where it has always been named: the log hands these out.
pub use crate::segment::SegmentInfo;
use crate::segment::{
    cleaned_file_name, is_cleaned_file_name, parse_segment_file_name, segment_file_name,
    RecoveryScan, Segment, SegmentAppendError, SegmentConfig, SegmentFile, SegmentRecovery,
};
use crate::types::{LeaderEpoch, Offset, Position, TimestampMs};

/// Written (and fsynced) by `close` after the final sync; its absence on
/// open means a crash, and the active segment is then checked in full.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// Name of the high-watermark checkpoint file in a partition directory.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";

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
    /// replicas have it ([`PartitionLog::advance_high_watermark`]).
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

    fn validate(&self) -> LogResult<()> {
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

    fn segment_config(&self) -> SegmentConfig {
        SegmentConfig {
            segment_bytes: self.segment_bytes,
            index_interval_bytes: self.index_interval_bytes,
            preallocate: self.preallocate,
            preallocate_step_bytes: self.preallocate_step_bytes,
            first_step_required: false,
        }
    }
}

/// What opening the log found on disk.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Segments the log has after recovery.
    pub segments: usize,
    /// Recovery of each segment that needed any.
    pub repaired: Vec<(Offset, SegmentRecovery)>,
    /// A batch failed its checks before the last segment: the log was cut
    /// there and the later segments removed. A replica in this state must
    /// re-fetch from a healthy peer before it may lead or count in the ISR.
    pub mid_log_corruption: bool,
    /// The offset the next append gets, after any cut.
    pub log_end: Offset,
    /// The high watermark the `high-watermark` checkpoint named (replicated
    /// logs), before it was clamped to the log.
    pub high_watermark_checkpoint: Option<Offset>,
    /// The log ends below its checkpointed high watermark: committed data
    /// this replica once had is gone (lost writes, a cut corrupt tail).
    pub lost_tail: bool,
    /// The `leader-epoch-checkpoint` was missing or damaged and the epoch
    /// cache was rebuilt from the batch headers.
    pub epoch_cache_rebuilt: bool,
}

impl RecoveryReport {
    /// This replica must not lead or count in the ISR until it has
    /// re-fetched from a healthy peer: its log lost data it acknowledged.
    pub fn needs_refetch(&self) -> bool {
        self.mid_log_corruption || self.lost_tail
    }
}

/// Offsets given to an appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
}

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

/// A segment as compaction reads it: the file is held open, so a segment
/// deleted or replaced meanwhile still reads as it was.
pub(crate) struct SegmentSnapshot {
    pub(crate) base: Offset,
    pub(crate) next_offset: Offset,
    /// Bytes of whole batches when the snapshot was taken.
    pub(crate) size: u64,
    pub(crate) file: Rc<SegmentFile>,
    pub(crate) active: bool,
}

/// What compaction needs from the log at the start of a run.
pub(crate) struct CompactionView {
    /// Every segment, oldest first; the active one last.
    pub(crate) segments: Vec<SegmentSnapshot>,
    pub(crate) high_watermark: Offset,
    /// [`PartitionLog::truncation_generation`] at snapshot time.
    pub(crate) truncation_generation: u64,
    pub(crate) dir: PathBuf,
    pub(crate) index_interval_bytes: u64,
}

/// A consistent listing of the log for retention.
pub(crate) struct SettledSegments {
    pub(crate) segments: Vec<SegmentInfo>,
    pub(crate) high_watermark: Offset,
    pub(crate) log_end: Offset,
    pub(crate) log_start: Offset,
}

/// Held by the one compaction running on a log; clears the flag when
/// dropped, also when the compaction future is dropped half-way.
pub(crate) struct CompactionGuard {
    state: Rc<RefCell<LogState>>,
}

impl Drop for CompactionGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.compacting = false;
        }
    }
}

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
enum CommitOutcome {
    Durable,
    Failed,
    Truncated,
}

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
    /// Opens (or creates) the log in `config.dir`, recovering its tail.
    pub async fn open(config: LogConfig) -> LogResult<(PartitionLog, RecoveryReport)> {
        config.validate()?;
        let directory = Directory::create(&config.dir)
            .await
            .map_err(|e| LogError::glommio("create partition directory", &config.dir, e))?;
        let (bases, leftovers) = list_segment_bases(&directory, &config.dir)?;
        // A compaction crashed before its swap: its copies are incomplete or
        // unneeded; the originals are intact (the swap renames over them).
        for leftover in leftovers {
            tracing::warn!(path = %leftover.display(), "removing leftover of an interrupted compaction");
            glommio::io::remove(&leftover)
                .await
                .map_err(|e| LogError::glommio("remove compaction leftover", &leftover, e))?;
        }
        let segment_config = config.segment_config();
        let clean_marker = config.dir.join(CLEAN_SHUTDOWN_FILE);
        let clean_shutdown = BufferedFile::open(&clean_marker).await.is_ok();
        let mut report = RecoveryReport::default();
        let mut segments = recover_segments(
            &config.dir,
            &bases,
            &segment_config,
            clean_shutdown,
            false,
            config.require_first_preallocation,
            &mut report,
        )
        .await?;
        // The epoch cache comes from the checkpoint or, when that is missing
        // or damaged, from a scan of every batch header. That scan also
        // reads the bytes recovery trusted without checking (before the last
        // index entry); if one is damaged, trust nothing and check every
        // batch of every segment, cutting the log at the first bad one.
        let checkpointed_epochs = read_checkpoint(&config.dir).await?;
        let mut rebuilt_epochs = None;
        if checkpointed_epochs.is_none() {
            match rebuild_epoch_cache(&segments) {
                Ok(epochs) => rebuilt_epochs = Some(epochs),
                Err(damage @ LogError::Corrupt { .. }) => {
                    tracing::error!(dir = %config.dir.display(), error = %damage,
                        "a batch recovery trusted is damaged; checking every batch of every segment");
                    drop(segments);
                    let (bases, _) = list_segment_bases(&directory, &config.dir)?;
                    report = RecoveryReport {
                        mid_log_corruption: true,
                        ..RecoveryReport::default()
                    };
                    segments = recover_segments(
                        &config.dir,
                        &bases,
                        &segment_config,
                        clean_shutdown,
                        true,
                        false,
                        &mut report,
                    )
                    .await?;
                    rebuilt_epochs = Some(rebuild_epoch_cache(&segments)?);
                }
                Err(err) => return Err(err),
            }
        }
        if clean_shutdown {
            // From here on the log changes again; a crash must not find a
            // stale marker.
            glommio::io::remove(&clean_marker)
                .await
                .map_err(|e| LogError::glommio("remove clean-shutdown marker", &clean_marker, e))?;
        }
        directory
            .sync()
            .await
            .map_err(|e| LogError::glommio("sync partition directory", &config.dir, e))?;

        let log_start = *segments.keys().next().unwrap_or(&Offset::ZERO);
        let Some(active) = segments.values().next_back() else {
            return Err(LogError::Closed);
        };
        let (log_end, active_file) = (active.next_offset(), active.file().clone());
        // Whatever survived in the page cache is on disk once this returns,
        // so all of it can count as stable.
        if config.sync != SyncPolicy::Never {
            active_file.fdatasync().await?;
        }
        let high_watermark = match config.commit {
            CommitMode::Local => log_end,
            CommitMode::Replicated => {
                let checkpoint = read_high_watermark(&config.dir).await?;
                report.high_watermark_checkpoint = checkpoint;
                report.lost_tail = checkpoint.is_some_and(|hw| hw > log_end);
                if report.lost_tail {
                    tracing::error!(dir = %config.dir.display(), log_end = log_end.0,
                        high_watermark = checkpoint.map_or(0, |hw| hw.0),
                        "log ends below its checkpointed high watermark: committed data was lost");
                }
                checkpoint.map_or(log_start, |hw| hw.clamp(log_start, log_end))
            }
        };
        report.epoch_cache_rebuilt = rebuilt_epochs.is_some();
        let epochs = fit_epoch_cache(
            &config.dir,
            checkpointed_epochs,
            rebuilt_epochs,
            log_start,
            log_end,
        )
        .await?;
        report.segments = segments.len();
        report.log_end = log_end;
        let state = LogState {
            config,
            segments,
            active_since: Instant::now(),
            log_start,
            log_end,
            stable: log_end,
            high_watermark,
            leader_epoch: LeaderEpoch::NONE,
            epochs,
            commit_waiters: VecDeque::new(),
            truncation_generation: 0,
            failure: None,
            closed: false,
            fsync_stats: FsyncStats::default(),
            truncation_snapshot: None,
            compacting: false,
        };
        let mut log = PartitionLog {
            state: Rc::new(RefCell::new(state)),
            write_gate: Rc::new(Semaphore::new(1)),
            unsynced: Rc::new(LocalEvent::default()),
            high_watermark_moved: Rc::new(WakerList::default()),
            log_end_moved: Rc::new(WakerList::default()),
            sync_task: None,
        };
        log.sync_task = Some(
            glommio::spawn_local(sync_loop(
                log.state.clone(),
                log.unsynced.clone(),
                log.high_watermark_moved.clone(),
            ))
            .detach(),
        );
        Ok((log, report))
    }

    /// Appends a client batch (RecordBatch v2, any base offset): the log
    /// checks it fully, assigns its offsets and the current leader epoch, and
    /// resolves once it is durable per the sync policy. Dropping the future
    /// after its first poll does not undo the write.
    pub async fn append(&self, mut batch: Vec<u8>) -> LogResult<Appended> {
        // One full check (header, CRC, every record) before the write gate;
        // base offset and epoch are stamped later, outside the CRC.
        let header = validate_records(&batch).map_err(LogError::InvalidBatch)?;
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
            }
            let durable = self.state.borrow_mut().register_commit_waiter(last);
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
            (state.config.dir.clone(), state.epochs.clone())
        };
        match write_checkpoint(&dir, &epochs).await {
            Ok(()) => {}
            Err(ReplaceError::NotWritten(err @ LogError::NoSpace { .. })) => {
                self.state.borrow_mut().epochs.truncate_from_end(base);
                return Err(err);
            }
            Err(err) => {
                self.state.borrow_mut().epochs.truncate_from_end(base);
                return Err(self.fail_stop(err.into_inner()));
            }
        }
        tracing::info!(dir = %dir.display(), epoch = epoch.0, start_offset = base.0,
            "leader epoch begins");
        Ok(true)
    }

    async fn enter_write_phase(&self) -> LogResult<glommio::sync::Permit<'_>> {
        let permit = self
            .write_gate
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        self.state.borrow().check_writable()?;
        Ok(permit)
    }

    async fn after_write(
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

    /// Grows the active segment's preallocation to the next step boundary
    /// when `next_batch_bytes` would pass its preallocated end. Best effort
    /// on a full disk (the append then extends the file itself, or fails
    /// cleanly); any other failure refuses the append, having written
    /// nothing (a failed `fallocate` leaves at most zeros past the logical
    /// end, which recovery skips). Caller holds the write gate, so the
    /// active segment cannot change across the await.
    async fn extend_preallocation(&self, next_batch_bytes: usize) -> LogResult<()> {
        let (file, base, target) = {
            let state = self.state.borrow();
            let active = state.active();
            let config = state.config.segment_config();
            match active.preallocation_needed(next_batch_bytes as u64, &config) {
                Some(target) => (active.file().clone(), active.base(), target),
                None => return Ok(()),
            }
        };
        let reached = file.preallocate(target).await?;
        let mut state = self.state.borrow_mut();
        if state.active().base() == base {
            state.active_mut().note_preallocated(reached);
        }
        Ok(())
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

    fn fail_stop(&self, err: LogError) -> LogError {
        let mut state = self.state.borrow_mut();
        tracing::error!(dir = %state.config.dir.display(), error = %err, "partition fail-stopped");
        state.fail(&err);
        err
    }

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
        poll_fn(|cx| {
            let state = self.state.borrow();
            if state.high_watermark > offset || state.closed || state.failure.is_some() {
                return Poll::Ready(());
            }
            self.high_watermark_moved.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Resolves once the log end is above `offset` (a follower fetching at
    /// `offset` has something to copy), or the log is closed or failed.
    /// Callers race it with their max-wait timer.
    pub async fn wait_for_log_end(&self, offset: Offset) {
        poll_fn(|cx| {
            let state = self.state.borrow();
            if state.log_end > offset || state.closed || state.failure.is_some() {
                return Poll::Ready(());
            }
            self.log_end_moved.register(cx.waker());
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

    /// Makes `offset` the high watermark (replicated logs; clamped to the
    /// locally durable end) and wakes waiting fetches.
    pub fn advance_high_watermark(&self, offset: Offset) {
        let moved = {
            let mut state = self.state.borrow_mut();
            let target = offset.min(state.stable);
            if target > state.high_watermark {
                state.high_watermark = target;
                true
            } else {
                false
            }
        };
        if moved {
            self.high_watermark_moved.wake_all();
        }
    }

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
        let failed = {
            let mut state = self.state.borrow_mut();
            state.segments.insert(tail_base, tail);
            state.truncation_snapshot = None;
            match truncated {
                Err(err) => Some(err),
                Ok(_) => {
                    state.apply_truncation(new_end);
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
        // Epochs that began in the removed tail must not be reported to a
        // follower; before new data of any epoch is appended here.
        let trimmed = {
            let mut state = self.state.borrow_mut();
            state
                .epochs
                .truncate_from_end(new_end)
                .then(|| state.epochs.clone())
        };
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

    /// Writes the high watermark durably to `high-watermark` (temp file,
    /// fsync, rename, directory fsync), for replicated logs to resume from.
    pub async fn checkpoint_high_watermark(&self) -> LogResult<()> {
        let (dir, hw) = {
            let state = self.state.borrow();
            (state.config.dir.clone(), state.high_watermark)
        };
        write_high_watermark(&dir, hw).await
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
        let first = *state.segments.keys().next().unwrap_or(&active_base);
        state.log_start = state.log_start.max(first);
        let log_start = state.log_start;
        let collapsed = state
            .epochs
            .truncate_from_start(log_start)
            .then(|| (state.config.dir.clone(), state.epochs.clone()));
        (doomed, collapsed)
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

    /// Bumped by every [`Self::truncate_to`]: compaction refuses to swap in a
    /// segment built from a key map that a truncation may have invalidated.
    pub(crate) fn truncation_generation(&self) -> u64 {
        self.state.borrow().truncation_generation
    }

    /// Claims the log for one compaction; `None` when one is running.
    pub(crate) fn try_begin_compaction(&self) -> Option<CompactionGuard> {
        let mut state = self.state.borrow_mut();
        if state.compacting {
            return None;
        }
        state.compacting = true;
        Some(CompactionGuard {
            state: self.state.clone(),
        })
    }

    /// Segments, high watermark and log end, read between writes: a roll
    /// takes the active segment out of the map while it seals it, so a
    /// snapshot taken then would miss it (or, for a one-segment log, find no
    /// segment at all). Holds the write gate only while copying.
    pub(crate) async fn settled_segments(&self) -> LogResult<SettledSegments> {
        let _permit = self.enter_write_phase().await?;
        let state = self.state.borrow();
        Ok(SettledSegments {
            segments: self.segments(),
            high_watermark: state.high_watermark,
            log_end: state.log_end,
            log_start: state.log_start,
        })
    }

    /// What compaction reads at the start of a run, taken between writes
    /// (see [`Self::settled_segments`]).
    pub(crate) async fn compaction_view(&self) -> LogResult<CompactionView> {
        let _permit = self.enter_write_phase().await?;
        let state = self.state.borrow();
        let active_base = state.active().base();
        Ok(CompactionView {
            segments: state
                .segments
                .values()
                .map(|s| SegmentSnapshot {
                    base: s.base(),
                    next_offset: s.next_offset(),
                    size: s.size(),
                    file: s.file().clone(),
                    active: s.base() == active_base,
                })
                .collect(),
            high_watermark: state.high_watermark,
            truncation_generation: state.truncation_generation,
            dir: state.config.dir.clone(),
            index_interval_bytes: state.config.index_interval_bytes,
        })
    }

    /// Compaction's commit point: replaces sealed segment `base` by the
    /// cleaned copy written next to it (`*.cleaned`, complete and fsynced)
    /// and returns the installed segment. Returns `None`, touching nothing,
    /// when the segment is no longer the one compaction read (`read_from`:
    /// deleted, replaced or truncated since) or the log is closing; the
    /// caller then removes its copy.
    ///
    /// Runs as a detached task that finishes even if the caller's future is
    /// dropped, so the swap is never left half-done in memory. It holds the
    /// write gate for the swap only (two directory fsyncs and a reopen that
    /// reads the fresh index and at most one index interval of log).
    pub(crate) async fn install_cleaned_segment(
        &self,
        base: Offset,
        read_from: &Rc<SegmentFile>,
        truncation_generation: u64,
    ) -> LogResult<Option<SegmentSnapshot>> {
        let task = glommio::spawn_local(install_cleaned(
            self.state.clone(),
            self.write_gate.clone(),
            base,
            read_from.clone(),
            truncation_generation,
        ))
        .detach();
        task.await.unwrap_or(Err(LogError::Closed))
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

    fn fail_stopped_error(&self) -> LogError {
        LogError::FailStopped {
            path: self.config.dir.clone(),
        }
    }

    /// Registers interest in `last` becoming durable; `None` when it already
    /// counts as durable (sync policy `Never`).
    fn register_commit_waiter(&mut self, last: Offset) -> Option<oneshot::Receiver<CommitOutcome>> {
        if self.config.sync == SyncPolicy::Never {
            self.mark_stable(self.log_end);
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.commit_waiters.push_back((last, tx));
        Some(rx)
    }

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

    fn mark_stable(&mut self, target: Offset) {
        let target = target.min(self.log_end);
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
    }

    /// Fail-stops the log because of `err` (the first cause is kept).
    fn fail(&mut self, err: &LogError) {
        if self.failure.is_none() {
            self.failure = Some(FailStop::new(err));
        }
        for (_, tx) in self.commit_waiters.drain(..) {
            let _ = tx.send(CommitOutcome::Failed);
        }
    }
}

/// See [`PartitionLog::install_cleaned_segment`]. The on-disk sequence is
/// safe to crash at any step, because open deletes `*.cleaned` files and
/// rebuilds missing indexes:
///
/// 1. unlink the old `.index` and `.timeindex`, fsync the directory — the
///    new log can never meet the old indexes (their positions would lie);
/// 2. rename `.log.cleaned` over `.log` (atomic), fsync the directory;
/// 3. rename the cleaned indexes into place (not fsynced: indexes are a
///    cache; if the renames are lost the indexes are rebuilt);
/// 4. reopen the segment and put it in the map. Readers holding the old
///    `Rc<SegmentFile>` keep reading the old inode until they drop it.
///
/// An I/O error between steps 1 and 4 fail-stops the partition: memory no
/// longer matches the directory, and reopening recovers from any step.
async fn install_cleaned(
    state: Rc<RefCell<LogState>>,
    write_gate: Rc<Semaphore>,
    base: Offset,
    read_from: Rc<SegmentFile>,
    truncation_generation: u64,
) -> LogResult<Option<SegmentSnapshot>> {
    let _permit = write_gate
        .acquire_permit(1)
        .await
        .map_err(|_| LogError::Closed)?;
    let (dir, segment_config) = {
        let state = state.borrow();
        if state.closed {
            return Ok(None);
        }
        state.check_writable()?;
        let unchanged = state.truncation_generation == truncation_generation
            && state.active().base() != base
            && state
                .segments
                .get(&base)
                .is_some_and(|s| Rc::ptr_eq(s.file(), &read_from));
        if !unchanged {
            return Ok(None);
        }
        (state.config.dir.clone(), state.config.segment_config())
    };
    let swapped = swap_cleaned_files(&dir, base).await;
    let reopened = match swapped {
        Ok(()) => {
            Segment::open(
                &dir,
                base,
                &segment_config,
                false,
                RecoveryScan::FromLastIndexEntry,
            )
            .await
        }
        Err(err) => Err(err),
    };
    let mut state = state.borrow_mut();
    match reopened {
        Ok((segment, recovery)) => {
            if recovery.truncated_bytes > 0 {
                tracing::warn!(dir = %dir.display(), segment = base.0, ?recovery,
                    "compacted segment needed recovery on reopen");
            }
            let installed = SegmentSnapshot {
                base,
                next_offset: segment.next_offset(),
                size: segment.size(),
                file: segment.file().clone(),
                active: false,
            };
            state.segments.insert(base, segment);
            Ok(Some(installed))
        }
        Err(err) => {
            tracing::error!(dir = %dir.display(), segment = base.0, error = %err,
                "compaction swap failed; partition fail-stopped");
            state.fail(&err);
            Err(err)
        }
    }
}

/// Steps 1–3 of [`install_cleaned`].
/// The old segment's index files are unlinked by path; its open handles go
/// when the old segment is dropped.
async fn swap_cleaned_files(dir: &Path, base: Offset) -> LogResult<()> {
    let index_paths = ["index", "timeindex"].map(|ext| dir.join(segment_file_name(base, ext)));
    for path in &index_paths {
        remove_if_exists(path).await?;
    }
    sync_directory(dir).await?;
    let log_path = dir.join(segment_file_name(base, "log"));
    glommio::io::rename(dir.join(cleaned_file_name(base, "log")), &log_path)
        .await
        .map_err(|e| LogError::glommio("rename cleaned segment", &log_path, e))?;
    sync_directory(dir).await?;
    for (ext, path) in ["index", "timeindex"].iter().zip(&index_paths) {
        glommio::io::rename(dir.join(cleaned_file_name(base, ext)), path)
            .await
            .map_err(|e| LogError::glommio("rename cleaned index", path, e))?;
    }
    Ok(())
}

/// The group-commit loop: one `fdatasync` at a time per log, covering every
/// batch appended before it started.
async fn sync_loop(
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

/// Opens the segments named by `bases`, oldest first, recovering each
/// (see [`RecoveryScan`]): the active one is checked batch by batch after a
/// crash, the others from their last index entry, every one of them when
/// `check_every_batch`. Corruption before the last segment cuts the log
/// there (`mid_log_corruption`) and removes the later segments. Always
/// returns at least one segment, the last one writable.
async fn recover_segments(
    dir: &Path,
    bases: &[Offset],
    segment_config: &SegmentConfig,
    clean_shutdown: bool,
    check_every_batch: bool,
    first_step_required: bool,
    report: &mut RecoveryReport,
) -> LogResult<BTreeMap<Offset, Segment>> {
    let mut segments = BTreeMap::new();
    let last_base = bases.last().copied();
    let mut previous_end: Option<Offset> = None;
    let mut cut = false;
    for (i, &base) in bases.iter().enumerate() {
        let active = Some(base) == last_base;
        let scan = if check_every_batch || (active && !clean_shutdown) {
            RecoveryScan::Full
        } else {
            RecoveryScan::FromLastIndexEntry
        };
        let (segment, recovery) = Segment::open(dir, base, segment_config, active, scan).await?;
        let gap_backwards = previous_end.is_some_and(|end| base < end);
        let cut_short = recovery.truncated_bytes > 0 && !active;
        if recovery.truncated_bytes > 0 || recovery.index_rebuilt || recovery.stop_reason.is_some()
        {
            report.repaired.push((base, recovery));
        }
        if gap_backwards {
            // Overlapping segments: the newer one cannot be trusted.
            remove_segments(&[segment]).await?;
            cut = true;
            remove_later(dir, &bases[i + 1..], segment_config).await?;
            break;
        }
        previous_end = Some(segment.next_offset());
        segments.insert(base, segment);
        if cut_short {
            tracing::error!(dir = %dir.display(), segment = base.0,
                "corruption before the end of the log; later segments removed");
            cut = true;
            remove_later(dir, &bases[i + 1..], segment_config).await?;
            break;
        }
    }
    report.mid_log_corruption |= cut;
    if segments.is_empty() {
        // A new log (or one whose every segment was removed: nothing stored).
        let first = SegmentConfig {
            first_step_required,
            ..segment_config.clone()
        };
        let segment = Segment::create(dir, Offset::ZERO, &first).await?;
        segments.insert(Offset::ZERO, segment);
    } else if let Some(mut last) = segments.last_entry() {
        // A sealed segment became the last one (later ones were removed):
        // make it writable again.
        if last.get().size() > 0 && cut {
            let next = last.get().next_offset();
            last.get_mut().truncate_to(next, segment_config).await?;
        }
    }
    Ok(segments)
}

/// Largest base offset a segment file may name: one past `i64::MAX`, the
/// last offset a batch may hold.
const SEGMENT_BASE_MAX: Offset = Offset(i64::MAX as u64 + 1);

/// Segment base offsets in the directory, sorted, and the paths of
/// compaction leftovers (`*.cleaned`) to delete.
fn list_segment_bases(directory: &Directory, dir: &Path) -> LogResult<(Vec<Offset>, Vec<PathBuf>)> {
    let entries = directory
        .sync_read_dir()
        .map_err(|e| LogError::glommio("list partition directory", dir, e))?;
    let mut bases = Vec::new();
    let mut leftovers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("list partition directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if let Some(base) = parse_segment_file_name(name) {
            // Batch offsets are i64 and a segment starts at most one past
            // the last of them: a larger base is not ours, and offsets
            // computed from it (index entries, the log end) would overflow.
            if base > SEGMENT_BASE_MAX {
                return Err(LogError::io(
                    "list partition directory",
                    entry.path(),
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "segment base offset {base} is beyond the largest offset {SEGMENT_BASE_MAX}"
                        ),
                    ),
                ));
            }
            bases.push(base);
        } else if is_cleaned_file_name(name) {
            leftovers.push(entry.path());
        }
    }
    bases.sort();
    Ok((bases, leftovers))
}

/// Records, durably, that every byte of the log was synced at close.
async fn write_clean_shutdown_marker(dir: &Path) -> LogResult<()> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(&path)
        .await
        .map_err(|e| LogError::glommio("create clean-shutdown marker", &path, e))?;
    file.fdatasync()
        .await
        .map_err(|e| LogError::glommio("sync clean-shutdown marker", &path, e))?;
    let _ = file.close().await;
    sync_directory(dir).await
}

/// Truncates a segment file to its logical end and makes that durable.
async fn seal_file(file: &SegmentFile, logical_size: u64) -> LogResult<()> {
    file.truncate(logical_size).await?;
    file.fdatasync().await
}

async fn remove_segments(segments: &[Segment]) -> LogResult<()> {
    for segment in segments {
        segment.remove_files().await?;
    }
    Ok(())
}

async fn remove_later(dir: &Path, bases: &[Offset], config: &SegmentConfig) -> LogResult<()> {
    for &base in bases {
        let (segment, _) =
            Segment::open(dir, base, config, false, RecoveryScan::FromLastIndexEntry).await?;
        segment.remove_files().await?;
    }
    Ok(())
}

/// The leader-epoch cache on open: the checkpoint when it read back intact,
/// otherwise the one rebuilt from every batch header (the one full header
/// scan, paid once: the rebuilt cache is written back). Either way fitted to
/// the log as recovered: entries at or past its end dropped, entries before
/// its start collapsed.
async fn fit_epoch_cache(
    dir: &Path,
    checkpointed: Option<EpochCache>,
    rebuilt: Option<EpochCache>,
    log_start: Offset,
    log_end: Offset,
) -> LogResult<EpochCache> {
    debug_assert!(checkpointed.is_some() != rebuilt.is_some());
    let was_rebuilt = rebuilt.is_some();
    let mut epochs = checkpointed.or(rebuilt).unwrap_or_default();
    let changed = epochs.fit_to_log(log_start, log_end);
    if changed && !was_rebuilt {
        tracing::warn!(dir = %dir.display(), log_end = log_end.0,
            "leader-epoch checkpoint named offsets outside the log; trimmed");
    }
    if was_rebuilt || changed {
        write_checkpoint(dir, &epochs).await?;
    }
    Ok(epochs)
}

/// Folds [`EpochCache::assign`] over every batch header, oldest first.
fn rebuild_epoch_cache(segments: &BTreeMap<Offset, Segment>) -> LogResult<EpochCache> {
    let mut epochs = EpochCache::default();
    for segment in segments.values() {
        segment.for_each_header(|header| {
            epochs.assign(header.leader_epoch, header.base_offset);
        })?;
    }
    Ok(epochs)
}

const HIGH_WATERMARK_CHECKPOINT_BYTES: usize = 12;

/// Writes the checkpoint durably (see [`replace_file`]). On failure (a full
/// disk) the previous checkpoint stays: it is older, so lower, which is
/// always safe to resume from.
async fn write_high_watermark(dir: &Path, hw: Offset) -> LogResult<()> {
    let mut bytes = [0u8; HIGH_WATERMARK_CHECKPOINT_BYTES];
    bytes[..8].copy_from_slice(&hw.0.to_be_bytes());
    bytes[8..].copy_from_slice(&crc32c::crc32c(&hw.0.to_be_bytes()).to_be_bytes());
    replace_file(dir, HIGH_WATERMARK_FILE, &bytes)
        .await
        .map_err(ReplaceError::into_inner)
}

async fn read_high_watermark(dir: &Path) -> LogResult<Option<Offset>> {
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

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "log_fault_tests.rs"]
mod fault_tests;

#[cfg(test)]
#[path = "log_prealloc_tests.rs"]
mod prealloc_tests;
