//! The background task that keeps a partition log within its retention
//! limits and compacted (docs/design.md §11): every interval it runs
//! [`enforce_retention`] then, if asked, [`compact`], in a low-priority
//! glommio task queue so appends and fetches keep the core.
//!
//! The caller creates the queue once per shard and shares it between logs:
//!
//! ```text
//! let queue = glommio::executor().create_task_queue(
//!     Shares::Static(MAINTENANCE_SHARES_DEFAULT),
//!     Latency::NotImportant,
//!     "maintenance",
//! );
//! let task = spawn_maintenance(log.clone(), policy, queue);
//! ```
//!
//! **Lifetime.** The task keeps only a weak reference to the log between
//! rounds, so it never keeps a log alive: it ends at its next wake-up once
//! the log is closed, fail-stopped or dropped. During a round it holds a
//! strong one; to close a log at once, `cancel()` the handle and await it
//! first. Cancelling is safe at any point: an interrupted compaction leaves
//! only `*.cleaned` files (removed by the next compaction or by open), and
//! its swap, once started, finishes in its own task.
//!
//! Errors are logged and retried at the next round (one attempt per
//! interval, so never a hot loop); the task never panics.

use std::rc::{Rc, Weak};
use std::time::Duration;

use glommio::task::JoinHandle;
use glommio::TaskQueueHandle;

use crate::compaction::compact;
use crate::constants::{MAINTENANCE_INTERVAL_MS_DEFAULT, MAINTENANCE_INTERVAL_MS_MIN};
use crate::error::LogError;
use crate::log::PartitionLog;
use crate::retention::{enforce_retention, RetentionPolicy};
use crate::types::TimestampMs;

/// What the maintenance task does to one log, and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenancePolicy {
    /// The limits enforced every interval.
    pub retention: RetentionPolicy,
    /// Run key compaction after retention.
    pub compact: bool,
    /// Time between the end of one round and the start of the next (at
    /// least `MAINTENANCE_INTERVAL_MS_MIN`).
    pub interval: Duration,
}

impl Default for MaintenancePolicy {
    /// Keeps everything, does not compact, wakes every
    /// `MAINTENANCE_INTERVAL_MS_DEFAULT`.
    fn default() -> Self {
        MaintenancePolicy {
            retention: RetentionPolicy::UNLIMITED,
            compact: false,
            interval: Duration::from_millis(MAINTENANCE_INTERVAL_MS_DEFAULT),
        }
    }
}

/// Starts the maintenance task of `log` in `queue` (see the module docs).
/// Must be called on the log's executor. If `queue` is not a queue of this
/// executor the task runs in the caller's queue instead, with a warning.
pub fn spawn_maintenance(
    log: Rc<PartitionLog>,
    policy: MaintenancePolicy,
    queue: TaskQueueHandle,
) -> JoinHandle<()> {
    let weak = Rc::downgrade(&log);
    drop(log);
    match glommio::spawn_local_into(maintenance_loop(weak.clone(), policy.clone()), queue) {
        Ok(task) => task.detach(),
        Err(err) => {
            tracing::warn!(error = %err, "maintenance queue unusable; using the current queue");
            glommio::spawn_local(maintenance_loop(weak, policy)).detach()
        }
    }
}

async fn maintenance_loop(log: Weak<PartitionLog>, policy: MaintenancePolicy) {
    let interval = policy
        .interval
        .max(Duration::from_millis(MAINTENANCE_INTERVAL_MS_MIN));
    loop {
        glommio::timer::sleep(interval).await;
        let Some(log) = log.upgrade() else {
            return;
        };
        if log.is_closed() || log.is_failed() || !run_round(&log, &policy).await {
            tracing::debug!(dir = %log.dir().display(), "maintenance stopped");
            return;
        }
    }
}

/// One round of retention then compaction; `false` when the log is gone
/// (closed or fail-stopped) and the task should end.
async fn run_round(log: &PartitionLog, policy: &MaintenancePolicy) -> bool {
    if let Err(err) = log.roll_if_due().await {
        if !retry_next_round(log, "roll", &err) {
            return false;
        }
    }
    if !policy.retention.is_unlimited() {
        match enforce_retention(log, &policy.retention, TimestampMs::now()).await {
            Ok(outcome) if outcome.segments_deleted > 0 => {
                tracing::info!(dir = %log.dir().display(), segments = outcome.segments_deleted,
                    bytes = outcome.bytes_deleted, log_start = outcome.new_log_start.0,
                    "retention deleted segments");
            }
            Ok(_) => {}
            Err(err) => {
                if !retry_next_round(log, "retention", &err) {
                    return false;
                }
            }
        }
    }
    if policy.compact {
        match compact(log).await {
            Ok(outcome) if outcome.segments_rewritten > 0 => {
                tracing::info!(dir = %log.dir().display(), segments = outcome.segments_rewritten,
                    records_removed = outcome.records_removed, bytes_before = outcome.bytes_before,
                    bytes_after = outcome.bytes_after, "compaction rewrote segments");
            }
            Ok(_) => {}
            Err(err) => {
                if !retry_next_round(log, "compaction", &err) {
                    return false;
                }
            }
        }
    }
    true
}

/// After `job` failed with `err`: `false` when the log is gone (closed or
/// fail-stopped) and maintenance should end; otherwise logs the failure
/// and returns `true`, the job is tried again next round.
fn retry_next_round(log: &PartitionLog, job: &str, err: &LogError) -> bool {
    if matches!(err, LogError::Closed | LogError::FailStopped { .. }) {
        return false;
    }
    tracing::warn!(dir = %log.dir().display(), error = %err, "{job} failed; retrying next round");
    true
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;
    use futures::future::{select, Either};
    use glommio::{Latency, Shares};

    use super::*;
    use crate::batch::Record;
    use crate::constants::MAINTENANCE_SHARES_DEFAULT;
    use crate::testing::{run_on_executor, small_config, try_read_batches_from};
    use crate::types::Offset;

    fn maintenance_queue() -> TaskQueueHandle {
        glommio::executor().create_task_queue(
            Shares::Static(MAINTENANCE_SHARES_DEFAULT),
            Latency::NotImportant,
            "maintenance",
        )
    }

    fn record(i: u64) -> Record {
        Record {
            timestamp: TimestampMs::now(),
            key: Some(Bytes::from(format!("key-{}", i % 20))),
            value: Some(Bytes::from(format!("{i:-<100}"))),
            headers: Vec::new(),
        }
    }

    /// (offset, key, value) of every committed record, stepping over the
    /// empty batches compaction may leave.
    async fn read_all(log: &PartitionLog) -> Vec<(Offset, Bytes, Bytes)> {
        for _ in 0..=100 {
            match try_read_batches_from(log, log.log_start_offset(), 64 * 1024).await {
                Ok(batches) => {
                    return batches
                        .into_iter()
                        .flat_map(|(_, records)| records)
                        .map(|r| {
                            (
                                r.offset,
                                r.key.unwrap_or_default(),
                                r.value.unwrap_or_default(),
                            )
                        })
                        .collect()
                }
                // Retention moved the log start past us mid-read (correct
                // behaviour): start over from the new start.
                Err(crate::error::LogError::OffsetOutOfRange { .. }) => continue,
                Err(err) => panic!("read: {err}"),
            }
        }
        panic!("read: the log start kept moving");
    }

    /// Records below the active segment whose key appears again later.
    fn duplicates_below_active(log: &PartitionLog, rows: &[(Offset, Bytes, Bytes)]) -> usize {
        let active_base = log.segments().last().map_or(Offset(0), |s| s.base_offset);
        let mut last: HashMap<&Bytes, Offset> = HashMap::new();
        for (offset, key, _) in rows {
            last.insert(key, *offset);
        }
        rows.iter()
            .filter(|(offset, key, _)| *offset < active_base && last.get(key) != Some(offset))
            .count()
    }

    /// Awaits `handle` for at most `limit`; whether it finished.
    async fn finishes_within(handle: JoinHandle<()>, limit: Duration) -> bool {
        let timer = Box::pin(glommio::timer::sleep(limit));
        matches!(select(handle, timer).await, Either::Left(_))
    }

    async fn close(log: Rc<PartitionLog>) {
        let mut log = log;
        // The task holds a strong reference only during a round.
        for _ in 0..1_000 {
            match Rc::try_unwrap(log) {
                Ok(owned) => {
                    owned.close().await.expect("close");
                    return;
                }
                Err(shared) => log = shared,
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        panic!("the log stayed shared");
    }

    #[test]
    fn deletes_and_compacts_while_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
            let log = Rc::new(log);
            let policy = MaintenancePolicy {
                retention: RetentionPolicy {
                    max_messages: Some(600),
                    ..RetentionPolicy::UNLIMITED
                },
                compact: true,
                interval: Duration::from_millis(10),
            };
            let task = spawn_maintenance(log.clone(), policy, maintenance_queue());
            let total = 2_000u64;
            for first in (0..total).step_by(4) {
                let records: Vec<Record> = (first..first + 4).map(record).collect();
                let appended = log.append_records(&records).await.expect("append");
                assert_eq!(appended.base_offset, Offset(first));
                if first % 100 == 0 {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            }
            // Rounds keep running after the last append; wait (bounded) for
            // one that has seen every sealed segment.
            let mut rows = Vec::new();
            for _ in 0..1_000 {
                glommio::timer::sleep(Duration::from_millis(5)).await;
                rows = read_all(&log).await;
                if log.log_start_offset() > Offset(0) && duplicates_below_active(&log, &rows) == 0 {
                    break;
                }
            }
            assert!(log.log_start_offset() > Offset(0), "retention ran");
            assert!(log.log_end_offset().0 - log.log_start_offset().0 >= 600);
            assert_eq!(duplicates_below_active(&log, &rows), 0, "compaction ran");
            let span = log.log_end_offset().0 - log.log_start_offset().0;
            assert!((rows.len() as u64) < span / 2);
            // The latest value of every key is there.
            let mut latest: HashMap<Bytes, (Offset, Bytes)> = HashMap::new();
            for (offset, key, value) in &rows {
                latest.insert(key.clone(), (*offset, value.clone()));
            }
            for k in 0..20 {
                let last = (0..total).rev().find(|i| i % 20 == k).unwrap_or_default();
                let key = Bytes::from(format!("key-{k}"));
                let value = record(last).value.unwrap_or_default();
                assert_eq!(latest.get(&key), Some(&(Offset(last), value)), "key {k}");
            }
            task.cancel();
            assert!(finishes_within(task, Duration::from_secs(5)).await);
            close(log).await;
        });
    }

    #[test]
    fn stops_when_the_log_is_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        run_on_executor(async move {
            let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
            let log = Rc::new(log);
            for i in 0..100 {
                log.append_records(&[record(i)]).await.expect("append");
            }
            let policy = MaintenancePolicy {
                retention: RetentionPolicy {
                    max_bytes: Some(8 * 1024),
                    ..RetentionPolicy::UNLIMITED
                },
                compact: true,
                interval: Duration::from_millis(2),
            };
            let task = spawn_maintenance(log.clone(), policy, maintenance_queue());
            glommio::timer::sleep(Duration::from_millis(30)).await;
            assert!(log.log_start_offset() > Offset(0), "retention ran");
            close(log).await;
            assert!(finishes_within(task, Duration::from_secs(5)).await);
        });
    }

    #[test]
    fn default_policy_keeps_everything() {
        let policy = MaintenancePolicy::default();
        assert!(policy.retention.is_unlimited());
        assert!(!policy.compact);
        assert_eq!(
            policy.interval,
            Duration::from_millis(MAINTENANCE_INTERVAL_MS_DEFAULT)
        );
    }
}
