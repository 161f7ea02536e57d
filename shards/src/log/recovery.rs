//! Opening a log: listing and recovering its segments, cutting a torn or
//! corrupt tail, and fitting the leader-epoch cache and the high watermark
//! to what survived.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use glommio::io::{BufferedFile, Directory, OpenOptions};
use glommio::sync::Semaphore;

use crate::epoch_cache::{read_checkpoint, write_checkpoint, EpochCache};
use crate::error::{LogError, LogResult};
use crate::event::{LocalEvent, WakerList};
use crate::io::sync_directory;
use crate::segment::{
    is_cleaned_file_name, parse_segment_file_name, RecoveryScan, Segment, SegmentConfig,
    SegmentRecovery,
};
use crate::types::{LeaderEpoch, Offset};

use super::{
    commit::{read_high_watermark, sync_loop},
    remove_segments, CommitMode, FsyncStats, LogConfig, LogState, PartitionLog, SyncPolicy,
    CLEAN_SHUTDOWN_FILE,
};

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
                // Clamped, not asserted: the checkpoint is read from disk
                // and may name an offset this log no longer has (a lost
                // tail, reported above) or one retention already removed.
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
        state.debug_check_invariants();
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

/// Records, durably, that every byte of the log was synced at close.
pub(super) async fn write_clean_shutdown_marker(dir: &Path) -> LogResult<()> {
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
