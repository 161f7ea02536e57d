use std::path::Path;
use std::time::Duration;

use super::*;
use crate::batch::encode_batch;
use crate::batch::{BatchIter, Header, Record};
use crate::epoch_cache::EpochCache;
use crate::segment::segment_file_name;
use crate::testing::run_on_executor;
use crate::types::LeaderEpoch;
use crate::types::TimestampMs;
use bytes::Bytes;

fn record(i: u64, size: usize) -> Record {
    Record {
        timestamp: TimestampMs(1_000 + i as i64),
        key: Some(Bytes::from(format!("key-{i}"))),
        value: Some(Bytes::from(vec![(i % 251) as u8; size])),
        headers: vec![Header {
            key: Bytes::from_static(b"h"),
            value: Some(Bytes::from(i.to_string())),
        }],
    }
}

/// [`crate::testing::small_config`] with 16 KiB segments: the records of
/// these tests are larger.
pub(super) fn small_config_16k(dir: &Path) -> LogConfig {
    let mut config = crate::testing::small_config(dir);
    config.segment_bytes = 16 * 1024;
    config
}

/// Every committed record as (offset, value), read `max_bytes` at a time.
pub(super) async fn read_values(log: &PartitionLog, max_bytes: u64) -> Vec<(Offset, Bytes)> {
    crate::testing::read_records(log, max_bytes)
        .await
        .into_iter()
        .map(|r| (r.offset, r.value.unwrap_or_default()))
        .collect()
}

#[test]
fn append_assigns_dense_offsets_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, report) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        assert_eq!(report.log_end, Offset(0));
        let mut expected = Vec::new();
        for i in 0..50u64 {
            let records: Vec<Record> = (0..3).map(|j| record(i * 3 + j, 100)).collect();
            let appended = log.append_records(&records).await.expect("append");
            assert_eq!(appended.base_offset, Offset(i * 3));
            assert_eq!(appended.last_offset, Offset(i * 3 + 2));
            for r in records {
                expected.push(r.value.expect("value"));
            }
        }
        assert_eq!(log.high_watermark(), Offset(150));
        assert!(log.segments().len() > 1, "small segments must roll");
        let got = read_values(&log, 4096).await;
        assert_eq!(got.len(), 150);
        for (i, (offset, value)) in got.iter().enumerate() {
            assert_eq!(*offset, Offset(i as u64));
            assert_eq!(value, &expected[i]);
        }
        log.close().await.expect("close");
    });
}

#[test]
fn reopen_recovers_everything_and_continues_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        {
            let (log, _) = PartitionLog::open(small_config_16k(&path))
                .await
                .expect("open");
            for i in 0..40 {
                log.append_records(&[record(i, 300)]).await.expect("append");
            }
            log.close().await.expect("close");
        }
        let (log, report) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("reopen");
        assert_eq!(report.log_end, Offset(40));
        assert!(!report.mid_log_corruption);
        let appended = log.append_records(&[record(40, 10)]).await.expect("append");
        assert_eq!(appended.base_offset, Offset(40));
        assert_eq!(read_values(&log, 4096).await.len(), 41);
        log.close().await.expect("close");
    });
}

#[test]
fn torn_tail_is_truncated_to_last_good_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let path2 = path.clone();
    run_on_executor(async move {
        let mut config = small_config_16k(&path);
        config.segment_bytes = 1 << 20;
        let (log, _) = PartitionLog::open(config).await.expect("open");
        for i in 0..10 {
            log.append_records(&[record(i, 200)]).await.expect("append");
        }
        log.close().await.expect("close");
    });
    // Garble the last 20 bytes of the last batch.
    let seg = path2.join(format!("{:020}.log", 0));
    let data = std::fs::read(&seg).expect("read");
    let end = data.iter().rposition(|&b| b != 0).expect("data") + 1;
    let mut garbled = data.clone();
    for b in &mut garbled[end - 20..end] {
        *b ^= 0xA5;
    }
    std::fs::write(&seg, &garbled).expect("write");
    let path3 = path2.clone();
    run_on_executor(async move {
        let (log, report) = PartitionLog::open(small_config_16k(&path3))
            .await
            .expect("reopen");
        assert_eq!(report.log_end, Offset(9));
        assert_eq!(report.repaired.len(), 1);
        assert!(report.repaired[0].1.truncated_bytes > 0);
        assert_eq!(read_values(&log, 4096).await.len(), 9);
        let appended = log.append_records(&[record(9, 5)]).await.expect("append");
        assert_eq!(appended.base_offset, Offset(9));
        log.close().await.expect("close");
    });
}

#[test]
fn truncate_to_drops_tail_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        for i in 0..100 {
            log.append_records(&[record(i, 400)]).await.expect("append");
        }
        let segments_before = log.segments().len();
        assert!(segments_before > 2);
        let end = log.truncate_to(Offset(37)).await.expect("truncate");
        assert_eq!(end, Offset(37));
        assert_eq!(log.log_end_offset(), Offset(37));
        assert!(log.segments().len() < segments_before);
        assert_eq!(read_values(&log, 4096).await.len(), 37);
        let appended = log.append_records(&[record(37, 1)]).await.expect("append");
        assert_eq!(appended.base_offset, Offset(37));
        log.close().await.expect("close");
        let (log, report) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("reopen");
        assert_eq!(report.log_end, Offset(38));
        assert_eq!(read_values(&log, 4096).await.len(), 38);
        log.close().await.expect("close");
    });
}

#[test]
fn reads_stop_at_high_watermark_in_replicated_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let mut config = small_config_16k(&path);
        config.commit = CommitMode::Replicated;
        let (log, _) = PartitionLog::open(config.clone()).await.expect("open");
        for i in 0..10 {
            log.append_records(&[record(i, 50)]).await.expect("append");
        }
        assert_eq!(log.stable_offset(), Offset(10));
        assert_eq!(log.high_watermark(), Offset(0));
        assert!(log.read(Offset(0), 1 << 20).expect("read").is_none());
        log.advance_high_watermark(Offset(4));
        assert_eq!(read_values(&log, 4096).await.len(), 4);
        log.advance_high_watermark(Offset(100));
        assert_eq!(log.high_watermark(), Offset(10), "clamped to stable");
        log.checkpoint_high_watermark().await.expect("checkpoint");
        log.close().await.expect("close");
        let (log, _) = PartitionLog::open(config).await.expect("reopen");
        assert_eq!(log.high_watermark(), Offset(10));
        log.close().await.expect("close");
    });
}

/// A leader serves its followers past the high watermark, up to the log
/// end, in whole batches; consumers still stop at the high watermark.
#[test]
fn replica_reads_go_to_the_log_end_and_long_poll_on_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let mut config = small_config_16k(&path);
        config.commit = CommitMode::Replicated;
        let (log, _) = PartitionLog::open(config).await.expect("open");
        let log = Rc::new(log);
        for i in 0..6 {
            log.append_records(&[record(2 * i, 40), record(2 * i + 1, 40)])
                .await
                .expect("append");
        }
        log.advance_high_watermark(Offset(4));
        assert!(log.read(Offset(4), 1 << 20).expect("read").is_none());
        let slice = log
            .read_for_replica(Offset(4), 1 << 20)
            .expect("replica read")
            .expect("data past the high watermark");
        assert_eq!(slice.first_batch_offset, Offset(4));
        assert_eq!(slice.high_watermark, Offset(4), "reports the real HW");
        let bytes = slice.read_bytes().await.expect("bytes");
        let headers: Vec<_> = BatchIter::new(&bytes)
            .map(|b| b.expect("whole batch").0)
            .collect();
        assert_eq!(headers.len(), 4);
        assert_eq!(headers.last().map(|h| h.next_offset()), Some(Offset(12)));
        assert!(log
            .read_for_replica(Offset(12), 1 << 20)
            .expect("at the end")
            .is_none());
        assert!(log.read_for_replica(Offset(13), 1 << 20).is_err());

        // A follower waiting at the log end wakes on the next append (not
        // on a commit: the high watermark does not move).
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move {
                log.wait_for_log_end(Offset(12)).await;
                log.log_end_offset()
            })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        log.append_records(&[record(12, 1)]).await.expect("append");
        assert_eq!(waiter.await, Offset(13));
        assert_eq!(log.high_watermark(), Offset(4));
    });
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        for i in 0..200 {
            log.append_records(&[record(i, 100)]).await.expect("append");
        }
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(0)).await.expect("ts"),
            Some(Offset(0))
        );
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(1_150))
                .await
                .expect("ts"),
            Some(Offset(150))
        );
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(9_999))
                .await
                .expect("ts"),
            None
        );
        log.close().await.expect("close");
    });
}

#[test]
fn concurrent_appends_share_fsyncs_and_all_become_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(LogConfig::new(&path))
            .await
            .expect("open");
        let log = Rc::new(log);
        let mut tasks = Vec::new();
        for producer in 0..32u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut offsets = Vec::new();
                for i in 0..20 {
                    let appended = log
                        .append_records(&[record(producer * 100 + i, 64)])
                        .await
                        .expect("append");
                    offsets.push(appended.base_offset);
                }
                offsets
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await);
        }
        all.sort();
        assert_eq!(all, (0..640).map(Offset).collect::<Vec<_>>());
        assert_eq!(log.stable_offset(), Offset(640));
    });
}

#[test]
fn rejects_corrupt_client_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        let mut batch = Vec::new();
        encode_batch(Offset(0), &[record(0, 10)], &mut batch);
        let last = batch.len() - 1;
        batch[last] ^= 1;
        assert!(matches!(
            log.append(batch).await,
            Err(LogError::InvalidBatch(_))
        ));
        assert!(matches!(
            log.append(vec![1, 2, 3]).await,
            Err(LogError::InvalidBatch(_))
        ));
        assert_eq!(log.log_end_offset(), Offset(0));
        log.close().await.expect("close");
    });
}

#[test]
fn long_poll_wakes_on_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        let log = Rc::new(log);
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move {
                log.wait_for_data(Offset(0)).await;
                log.high_watermark()
            })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        log.append_records(&[record(0, 1)]).await.expect("append");
        assert_eq!(waiter.await, Offset(1));
    });
}

/// An append resolves only after an `fdatasync` that covers it: with a sync
/// interval of 300 ms the append is still pending at 100 ms, resolves after
/// the sync, and the sync count shows it happened.
#[test]
fn append_resolves_only_after_a_covering_fdatasync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let mut config = small_config_16k(&path);
        config.sync = SyncPolicy::Interval(Duration::from_millis(300));
        let (log, _) = PartitionLog::open(config).await.expect("open");
        let log = Rc::new(log);
        let syncs_before = log.fsync_stats().count;
        let done = Rc::new(std::cell::Cell::new(false));
        let task = {
            let (log, done) = (log.clone(), done.clone());
            glommio::spawn_local(async move {
                let appended = log.append_records(&[record(0, 10)]).await.expect("append");
                done.set(true);
                appended
            })
        };
        glommio::timer::sleep(Duration::from_millis(100)).await;
        assert!(!done.get(), "append resolved before any fdatasync");
        assert_eq!(log.stable_offset(), Offset(0));
        assert_eq!(
            log.high_watermark(),
            Offset(0),
            "nothing readable before the sync"
        );
        assert!(log.read(Offset(0), 1 << 20).expect("read").is_none());
        let appended = task.await;
        assert_eq!(appended.base_offset, Offset(0));
        assert!(log.fsync_stats().count > syncs_before, "no fdatasync ran");
        assert_eq!(log.stable_offset(), Offset(1));
    });
}

/// A follower whose next offset the leader's retention deleted restarts its
/// log empty at the leader's log start and replicates from there.
#[test]
fn reset_to_restarts_an_empty_log_at_a_later_offset_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let mut config = small_config_16k(&path);
        config.commit = CommitMode::Replicated;
        let (log, _) = PartitionLog::open(config.clone()).await.expect("open");
        log.set_leader_epoch(LeaderEpoch(3));
        for i in 0..60 {
            log.append_records(&[record(i, 400)]).await.expect("append");
        }
        log.advance_high_watermark(Offset(60));
        assert!(log.segments().len() > 1);
        let below = log.reset_to(Offset(59)).await;
        assert!(
            matches!(below, Err(LogError::OffsetOutOfRange { .. })),
            "{below:?}"
        );

        log.reset_to(Offset(1_000)).await.expect("reset");
        assert_eq!(log.log_start_offset(), Offset(1_000));
        assert_eq!(log.log_end_offset(), Offset(1_000));
        assert_eq!(log.high_watermark(), Offset(1_000));
        assert_eq!(log.segments().len(), 1);
        assert!(log
            .read_for_replica(Offset(1_000), 4096)
            .expect("read")
            .is_none());
        assert!(log.read(Offset(5), 4096).is_err(), "old offsets are gone");
        assert!(log.epoch_entries().is_empty(), "epochs cleared");

        // The leader's batches continue from its log start.
        let mut wire = Vec::new();
        let records: Vec<Record> = (0..3).map(|j| record(1_000 + j, 50)).collect();
        crate::batch::encode_batch(Offset(1_000), &records, &mut wire);
        let end = log
            .append_replicated(&wire)
            .await
            .expect("replicated append");
        assert_eq!(end, Offset(1_003));
        log.advance_high_watermark(Offset(1_003));
        let got: Vec<Offset> = read_values(&log, 4096)
            .await
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(got, vec![Offset(1_000), Offset(1_001), Offset(1_002)]);
        log.close().await.expect("close");

        let (log, report) = PartitionLog::open(config.clone()).await.expect("reopen");
        assert_eq!(
            (log.log_start_offset(), report.log_end),
            (Offset(1_000), Offset(1_003))
        );
        assert!(!report.needs_refetch(), "{report:?}");
        assert_eq!(read_values(&log, 4096).await.len(), 3);
        // Reset again, then crash (no close): the reset was durable.
        log.reset_to(Offset(5_000)).await.expect("second reset");
        drop(log);
        let (log, report) = PartitionLog::open(config).await.expect("reopen after drop");
        assert_eq!(
            (log.log_start_offset(), report.log_end),
            (Offset(5_000), Offset(5_000))
        );
        assert!(!report.needs_refetch(), "{report:?}");
        log.close().await.expect("close");
    });
}

#[test]
fn segment_named_past_the_offset_range_is_refused_not_a_panic() {
    // A file named like a segment whose base offset is beyond any Kafka
    // offset (i64): its index entries used to overflow `base + relative`
    // on open, and a log ending there overflowed on the next append.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    std::fs::create_dir_all(&path).expect("mkdir");
    let base = Offset(u64::MAX);
    std::fs::write(path.join(segment_file_name(base, "log")), [0u8; 128]).expect("log");
    let entry = [0, 0, 0, 1, 0, 0, 0, 0];
    std::fs::write(path.join(segment_file_name(base, "index")), entry).expect("index");
    run_on_executor(async move {
        match PartitionLog::open(small_config_16k(&path)).await {
            Err(err) => assert!(err.to_string().contains("offset"), "{err}"),
            Ok(_) => panic!("a segment based at u64::MAX must not open"),
        }
    });
}

#[test]
fn oversized_index_files_are_read_only_as_far_as_the_segment_allows() {
    // An index file claiming 1 TiB (sparse, or a damaged inode) used to be
    // read whole on open: one allocation of its size, an abort.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let reopen = path.clone();
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        for i in 0..40 {
            log.append_records(&[record(i, 100)]).await.expect("append");
        }
        log.close().await.expect("close");
    });
    for ext in ["index", "timeindex"] {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(reopen.join(segment_file_name(Offset::ZERO, ext)))
            .expect("index file");
        file.set_len(1 << 40).expect("grow sparse");
    }
    run_on_executor(async move {
        let (log, report) = PartitionLog::open(small_config_16k(&reopen))
            .await
            .expect("reopen");
        assert_eq!(report.log_end, Offset(40));
        assert_eq!(read_values(&log, 4096).await.len(), 40);
        for ext in ["index", "timeindex"] {
            let len = std::fs::metadata(reopen.join(segment_file_name(Offset::ZERO, ext)))
                .expect("index file")
                .len();
            assert!(len < 1 << 20, "{ext} left at {len} bytes");
        }
        log.close().await.expect("close");
    });
}

/// `check_invariants` (run after every state change in debug builds) finds
/// each broken invariant; a healthy log passes it.
#[cfg(debug_assertions)]
#[test]
fn check_invariants_finds_each_broken_invariant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        log.set_leader_epoch(LeaderEpoch(3));
        for i in 0..80u64 {
            log.append_records(&[record(i, 300)]).await.expect("append");
        }
        assert!(log.segments().len() > 1, "small segments must roll");
        let mut state = log.state.borrow_mut();
        assert_eq!(state.check_invariants(), Ok(()));

        let hw = state.high_watermark;
        state.high_watermark = state.stable.next();
        assert!(
            state.check_invariants().is_err(),
            "high watermark above stable"
        );
        state.high_watermark = hw;

        let end = state.log_end;
        state.log_end = end.next();
        let broken = state
            .check_invariants()
            .expect_err("log end past the active segment");
        assert!(broken.contains("active segment"), "{broken}");
        state.log_end = end;

        let start = state.log_start;
        state.log_start = start.next();
        assert!(
            state.check_invariants().is_err(),
            "log start not at the first segment"
        );
        state.log_start = start;

        let epochs = state.epochs.clone();
        state.epochs = EpochCache::from_entries(&[(3, end.0 + 1), (4, end.0 + 2)]);
        let broken = state
            .check_invariants()
            .expect_err("epoch past the log end");
        assert!(broken.contains("epoch 3"), "{broken}");
        state.epochs = epochs;

        assert_eq!(state.check_invariants(), Ok(()));
    });
}
