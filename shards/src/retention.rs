//! Retention: deleting whole segments from the start of a partition log, by
//! age, by total size or by message count (docs/design.md §11).
//!
//! Only whole sealed segments are deleted, always a prefix of the log, and
//! never the active segment or a segment holding anything at or above the
//! high watermark (the log enforces the last two again in
//! [`PartitionLog::delete_segments`]). The log start moves to the first
//! remaining segment; reads below it fail with `OffsetOutOfRange`.
//!
//! # The rules (Kafka's, applied in one pass)
//!
//! Segments are considered oldest first. A segment goes when **any** limit
//! says so; the pass stops at the first segment every limit keeps, so the
//! log never gets holes:
//!
//! * **Age** (`max_age`): the segment's largest record timestamp is more than
//!   `max_age` before `now` (`now - max_timestamp > max_age`, Kafka's
//!   `retention.ms` test). A segment with no records (max timestamp -1, left
//!   by compaction) is always old enough. Timestamps are producer-supplied:
//!   one in the future pins its segment, and the pass stops there.
//! * **Bytes** (`max_bytes`): the log (all segments, the active one
//!   included) would still hold at least `max_bytes` without the segment
//!   (`total - segment_size >= max_bytes`, Kafka's `retention.bytes`). So
//!   retention never takes the log below the limit; it stays within one
//!   segment above it.
//! * **Messages** (`max_messages`): the log would still span at least
//!   `max_messages` offsets without the segment (`log_end - next_base >=
//!   max_messages`, `next_base` being the following segment's base offset).
//!   Offsets are counted, not surviving records: offsets removed by
//!   compaction still count.
//!
//! Deleting is safe with readers in flight: a [`crate::log::ReadSlice`] holds
//! the segment file open, so the unlinked inode stays readable until the
//! slice is dropped.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::error::LogResult;
use crate::log::{PartitionLog, SegmentInfo};
use crate::types::{Offset, TimestampMs};

/// Limits on how much of a partition is kept. `None` means no limit of that
/// kind; all `None` keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete a sealed segment once its newest record is older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest sealed segments while the log is above this size.
    pub max_bytes: Option<u64>,
    /// Delete the oldest sealed segments while the log holds more records.
    pub max_messages: Option<u64>,
}

impl RetentionPolicy {
    /// Keeps everything (a compacted-only stream, for example).
    pub const UNLIMITED: RetentionPolicy = RetentionPolicy {
        max_age: None,
        max_bytes: None,
        max_messages: None,
    };

    /// Whether no limit is set (retention never deletes anything).
    pub fn is_unlimited(&self) -> bool {
        self.max_age.is_none() && self.max_bytes.is_none() && self.max_messages.is_none()
    }
}

/// What one [`enforce_retention`] pass removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Sealed segments deleted.
    pub segments_deleted: usize,
    /// Their total size.
    pub bytes_deleted: u64,
    /// The log start after the pass (unchanged when nothing was deleted).
    pub new_log_start: Offset,
}

/// Deletes the segments `policy` no longer keeps (see the module docs for
/// the exact rules). `now` is a parameter so callers and tests control the
/// clock. Cheap when there is nothing to do: it looks at segment metadata
/// only.
pub async fn enforce_retention(
    log: &PartitionLog,
    policy: &RetentionPolicy,
    now: TimestampMs,
) -> LogResult<RetentionOutcome> {
    let before = log.settled_segments().await?;
    let doomed = select_expired(
        &before.segments,
        before.high_watermark,
        before.log_end,
        policy,
        now,
    );
    if doomed.is_empty() {
        return Ok(RetentionOutcome {
            new_log_start: before.log_start,
            ..RetentionOutcome::default()
        });
    }
    let bases: Vec<Offset> = doomed.iter().map(|s| s.base_offset).collect();
    log.delete_segments(&bases).await?;
    // The log re-checks every base; count what it actually removed.
    let after = log.settled_segments().await?;
    let remaining: BTreeSet<Offset> = after.segments.iter().map(|s| s.base_offset).collect();
    let deleted = doomed
        .iter()
        .filter(|s| !remaining.contains(&s.base_offset));
    Ok(RetentionOutcome {
        segments_deleted: deleted.clone().count(),
        bytes_deleted: deleted.map(|s| s.size_bytes).sum(),
        new_log_start: after.log_start,
    })
}

/// The segments `policy` deletes from `segments` (oldest first, as
/// [`PartitionLog::segments`] lists them): the longest prefix of sealed
/// segments wholly below `high_watermark` in which each segment is expired
/// by at least one limit.
pub fn select_expired(
    segments: &[SegmentInfo],
    high_watermark: Offset,
    log_end: Offset,
    policy: &RetentionPolicy,
    now: TimestampMs,
) -> Vec<SegmentInfo> {
    let mut total_bytes: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let mut doomed = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        // The active segment is last, so `next` exists for every sealed one.
        let Some(next) = segments.get(i + 1) else {
            break;
        };
        if segment.active || segment.next_offset > high_watermark {
            break;
        }
        let too_old = policy.max_age.is_some_and(|max_age| {
            let age_ms = i128::from(now.0) - i128::from(segment.max_timestamp.0);
            age_ms > max_age.as_millis() as i128
        });
        let too_big = policy
            .max_bytes
            .is_some_and(|max| total_bytes - segment.size_bytes >= max);
        let too_many = policy
            .max_messages
            .is_some_and(|max| log_end.0.saturating_sub(next.base_offset.0) >= max);
        if !(too_old || too_big || too_many) {
            break;
        }
        total_bytes -= segment.size_bytes;
        doomed.push(segment.clone());
    }
    doomed
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use bytes::Bytes;

    use super::*;
    use crate::batch::Record;
    use crate::error::LogError;
    use crate::log::{CommitMode, LogConfig};
    use crate::testing::{decode_all, read_records, run_on_executor, small_config};

    /// Record `i`: timestamp `1_000 * i`, a 300-byte value, so about ten
    /// one-record batches fill a 4 KiB segment.
    fn record(i: u64) -> Record {
        Record {
            timestamp: TimestampMs(1_000 * i as i64),
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![(i % 251) as u8; 300])),
            headers: Vec::new(),
        }
    }

    async fn filled_log(config: LogConfig, records: u64) -> PartitionLog {
        let (log, _) = PartitionLog::open(config).await.expect("open");
        for i in 0..records {
            log.append_records(&[record(i)]).await.expect("append");
        }
        log
    }

    /// Offsets and values of every committed record from the log start.
    async fn read_values(log: &PartitionLog) -> Vec<(Offset, Bytes)> {
        read_records(log, 64 * 1024)
            .await
            .into_iter()
            .map(|r| (r.offset, r.value.unwrap_or_default()))
            .collect()
    }

    fn bases(segments: &[SegmentInfo]) -> Vec<Offset> {
        segments.iter().map(|s| s.base_offset).collect()
    }

    #[test]
    fn by_age_deletes_exactly_the_expired_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let log = filled_log(small_config(&path), 100).await;
            let before = log.segments();
            assert!(before.len() >= 6, "need several segments: {before:?}");
            // Segments 0..=2 end before the cut-off, segment 3 after it.
            let max_age = Duration::from_secs(3_600);
            let cutoff_ms = before[2].max_timestamp.0 + 1;
            let now = TimestampMs(cutoff_ms + max_age.as_millis() as i64);
            let policy = RetentionPolicy {
                max_age: Some(max_age),
                ..RetentionPolicy::UNLIMITED
            };
            let outcome = enforce_retention(&log, &policy, now)
                .await
                .expect("retention");
            assert_eq!(outcome.segments_deleted, 3);
            let expected_bytes: u64 = before[..3].iter().map(|s| s.size_bytes).sum();
            assert_eq!(outcome.bytes_deleted, expected_bytes);
            assert_eq!(outcome.new_log_start, before[3].base_offset);
            assert_eq!(bases(&log.segments()), bases(&before[3..]));
            assert_eq!(log.log_start_offset(), before[3].base_offset);
            // A second pass at the same time finds nothing more.
            let again = enforce_retention(&log, &policy, now).await.expect("again");
            assert_eq!(again.segments_deleted, 0);
            log.close().await.expect("close");
        });
    }

    #[test]
    fn by_age_never_deletes_the_active_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let log = filled_log(small_config(&path), 50).await;
            let before = log.segments();
            let active = before.last().cloned().expect("active");
            assert!(active.active && active.size_bytes > 0);
            let policy = RetentionPolicy {
                max_age: Some(Duration::from_millis(1)),
                ..RetentionPolicy::UNLIMITED
            };
            let far_future = TimestampMs(i64::MAX);
            let outcome = enforce_retention(&log, &policy, far_future)
                .await
                .expect("retention");
            assert_eq!(outcome.segments_deleted, before.len() - 1);
            assert_eq!(log.segments(), vec![active.clone()]);
            assert_eq!(log.log_start_offset(), active.base_offset);
            // The active segment's records are all still there.
            let values = read_values(&log).await;
            assert_eq!(values.len() as u64, 50 - active.base_offset.0);
            log.close().await.expect("close");
        });
    }

    #[test]
    fn by_age_stops_at_a_segment_with_a_newer_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
            for i in 0..60u64 {
                let mut r = record(i);
                // Offsets 12..=14 carry a timestamp far in the future.
                if (12..15).contains(&i) {
                    r.timestamp = TimestampMs(1 << 50);
                }
                log.append_records(&[r]).await.expect("append");
            }
            let before = log.segments();
            let pinned = before
                .iter()
                .position(|s| s.base_offset <= Offset(12) && Offset(12) < s.next_offset)
                .expect("segment holding offset 12");
            assert!(pinned > 0 && pinned + 1 < before.len());
            let policy = RetentionPolicy {
                max_age: Some(Duration::from_secs(1)),
                ..RetentionPolicy::UNLIMITED
            };
            let now = TimestampMs(1_000 * 1_000);
            let outcome = enforce_retention(&log, &policy, now)
                .await
                .expect("retention");
            assert_eq!(outcome.segments_deleted, pinned);
            assert_eq!(log.log_start_offset(), before[pinned].base_offset);
            log.close().await.expect("close");
        });
    }

    #[test]
    fn by_bytes_keeps_the_log_at_or_above_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let log = filled_log(small_config(&path), 100).await;
            let before = log.segments();
            let total: u64 = before.iter().map(|s| s.size_bytes).sum();
            let first_two = before[0].size_bytes + before[1].size_bytes;
            // One byte more than what is left without segments 0 and 1: only
            // segment 0 may go.
            let policy = RetentionPolicy {
                max_bytes: Some(total - first_two + 1),
                ..RetentionPolicy::UNLIMITED
            };
            let outcome = enforce_retention(&log, &policy, TimestampMs(0))
                .await
                .expect("retention");
            assert_eq!(outcome.segments_deleted, 1);
            assert_eq!(outcome.bytes_deleted, before[0].size_bytes);
            // Exactly what is left without segments 1 and 2... after 0 went:
            // the limit is met with equality, so both go.
            let after: u64 = log.segments().iter().map(|s| s.size_bytes).sum();
            let policy = RetentionPolicy {
                max_bytes: Some(after - before[1].size_bytes - before[2].size_bytes),
                ..RetentionPolicy::UNLIMITED
            };
            let outcome = enforce_retention(&log, &policy, TimestampMs(0))
                .await
                .expect("retention");
            assert_eq!(outcome.segments_deleted, 2);
            assert_eq!(bases(&log.segments()), bases(&before[3..]));
            let left: u64 = log.segments().iter().map(|s| s.size_bytes).sum();
            assert!(left >= policy.max_bytes.unwrap_or_default());
            log.close().await.expect("close");
        });
    }

    #[test]
    fn by_bytes_zero_keeps_only_the_active_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let log = filled_log(small_config(&path), 100).await;
            let policy = RetentionPolicy {
                max_bytes: Some(0),
                ..RetentionPolicy::UNLIMITED
            };
            enforce_retention(&log, &policy, TimestampMs(0))
                .await
                .expect("retention");
            let left = log.segments();
            assert_eq!(left.len(), 1);
            assert!(left[0].active);
            // Appends and reads carry on.
            let appended = log.append_records(&[record(100)]).await.expect("append");
            assert_eq!(appended.base_offset, Offset(100));
            let values = read_values(&log).await;
            assert_eq!(values.last().map(|(o, _)| *o), Some(Offset(100)));
            log.close().await.expect("close");
        });
    }

    #[test]
    fn by_messages_counts_offsets_from_the_next_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let log = filled_log(small_config(&path), 100).await;
            let before = log.segments();
            let log_end = log.log_end_offset();
            // Without segments 0..=2 the log spans exactly max_messages.
            let max_messages = log_end.0 - before[3].base_offset.0;
            let policy = RetentionPolicy {
                max_messages: Some(max_messages),
                ..RetentionPolicy::UNLIMITED
            };
            let outcome = enforce_retention(&log, &policy, TimestampMs(0))
                .await
                .expect("retention");
            assert_eq!(outcome.segments_deleted, 3);
            assert_eq!(outcome.new_log_start, before[3].base_offset);
            assert!(log_end.0 - log.log_start_offset().0 >= max_messages);
            // One more message required: nothing else goes.
            let policy = RetentionPolicy {
                max_messages: Some(max_messages + 1),
                ..RetentionPolicy::UNLIMITED
            };
            let outcome = enforce_retention(&log, &policy, TimestampMs(0))
                .await
                .expect("retention");
            assert_eq!(outcome.segments_deleted, 0);
            assert_eq!(outcome.new_log_start, before[3].base_offset);
            log.close().await.expect("close");
        });
    }

    #[test]
    fn reads_below_the_new_log_start_are_out_of_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        let path2 = path.clone();
        run_on_executor(async move {
            let log = filled_log(small_config(&path), 100).await;
            let before = log.segments();
            let policy = RetentionPolicy {
                max_messages: Some(100 - before[2].base_offset.0),
                ..RetentionPolicy::UNLIMITED
            };
            enforce_retention(&log, &policy, TimestampMs(0))
                .await
                .expect("retention");
            let start = log.log_start_offset();
            assert_eq!(start, before[2].base_offset);
            for offset in [Offset(0), Offset(start.0 - 1)] {
                assert!(matches!(
                    log.read(offset, 4096),
                    Err(LogError::OffsetOutOfRange { requested, log_start, .. })
                        if requested == offset && log_start == start
                ));
            }
            let values = read_values(&log).await;
            assert_eq!(values.first().map(|(o, _)| *o), Some(start));
            assert_eq!(values.len() as u64, 100 - start.0);
            log.close().await.expect("close");
            // The deletion is on disk: a reopened log starts there too.
            let (log, report) = PartitionLog::open(small_config(&path2))
                .await
                .expect("reopen");
            assert_eq!(log.log_start_offset(), start);
            assert_eq!(report.log_end, Offset(100));
            log.close().await.expect("close");
        });
    }

    #[test]
    fn nothing_at_or_above_the_high_watermark_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let mut config = small_config(&path);
            config.commit = CommitMode::Replicated;
            let log = filled_log(config, 100).await;
            let before = log.segments();
            // Committed up to the middle of segment 3.
            let hw = Offset((before[3].base_offset.0 + before[3].next_offset.0) / 2);
            log.advance_high_watermark(hw);
            let policy = RetentionPolicy {
                max_bytes: Some(0),
                ..RetentionPolicy::UNLIMITED
            };
            let outcome = enforce_retention(&log, &policy, TimestampMs(0))
                .await
                .expect("retention");
            assert_eq!(outcome.segments_deleted, 3);
            assert_eq!(log.log_start_offset(), before[3].base_offset);
            log.close().await.expect("close");
        });
    }

    #[test]
    fn a_slice_taken_before_deletion_still_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let log = Rc::new(filled_log(small_config(&path), 100).await);
            let slice = log.read(Offset(0), 1 << 20).expect("read").expect("data");
            let expected = slice.read_bytes().await.expect("bytes before");
            let policy = RetentionPolicy {
                max_bytes: Some(0),
                ..RetentionPolicy::UNLIMITED
            };
            let outcome = enforce_retention(&log, &policy, TimestampMs(0))
                .await
                .expect("retention");
            assert!(outcome.segments_deleted > 0);
            assert!(!slice.file.path().exists(), "segment file was unlinked");
            assert!(log.read(Offset(0), 1 << 20).is_err());
            // The unlinked inode is still open through the slice.
            let got = slice.read_bytes().await.expect("bytes after deletion");
            assert_eq!(got, expected);
            let mut offsets = Vec::new();
            for (_, records) in decode_all(&got) {
                offsets.extend(records.iter().map(|r| r.offset.0));
                assert!(records.iter().all(|r| r.value == record(r.offset.0).value));
            }
            assert_eq!(offsets.first(), Some(&0));
            drop(slice);
            match Rc::try_unwrap(log) {
                Ok(log) => log.close().await.expect("close"),
                Err(_) => panic!("log still shared"),
            }
        });
    }

    #[test]
    fn unlimited_policy_deletes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let log = filled_log(small_config(&path), 60).await;
            let before = log.segments();
            assert!(RetentionPolicy::UNLIMITED.is_unlimited());
            let outcome = enforce_retention(&log, &RetentionPolicy::UNLIMITED, TimestampMs::now())
                .await
                .expect("retention");
            assert_eq!(outcome, RetentionOutcome::default());
            assert_eq!(log.segments(), before);
            log.close().await.expect("close");
        });
    }
}
