//! What compaction needs from the log: consistent snapshots, the one-run
//! claim, and the install of a cleaned segment (its commit point).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::sync::Semaphore;

use crate::error::{LogError, LogResult};
use crate::io::{remove_if_exists, sync_directory};
use crate::segment::{cleaned_file_name, segment_file_name, RecoveryScan, Segment, SegmentFile};
use crate::types::Offset;

use super::{LogState, PartitionLog, SegmentInfo};

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

impl PartitionLog {
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
            state.debug_check_invariants();
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
