//! Disk faults: a full disk rejects appends cleanly and the log resumes; a
//! failed sync fail-stops. Faults are injected with `io::fault` (matched on
//! each test's own temporary directory, so parallel tests stay apart), and
//! one test fills a real size-capped tmpfs when run as root.

use std::path::Path;
use std::time::Duration;

use super::tests::{read_values, small_config_16k};
use super::*;
use crate::batch::Record;
use crate::io::fault::{self, FaultPoint};
use crate::testing::{run_on_executor, SmallTmpfs};
use crate::types::TimestampMs;
use bytes::Bytes;

fn record(i: u64, size: usize) -> Record {
    Record {
        timestamp: TimestampMs(1_000 + i as i64),
        key: Some(Bytes::from(format!("key-{i}"))),
        value: Some(Bytes::from(format!("{i:08}-{}", "v".repeat(size)))),
        headers: Vec::new(),
    }
}

/// The value `record(i, _)` starts with, to recognise records after reopen.
fn id_of(value: &Bytes) -> u64 {
    std::str::from_utf8(&value[..8])
        .expect("utf8")
        .parse()
        .expect("id")
}

/// Offsets are dense from 0 and every acked id is present exactly where the
/// append said.
fn assert_dense_and_has(records: &[(Offset, Bytes)], acked: &[(Offset, u64)]) {
    for (i, (offset, _)) in records.iter().enumerate() {
        assert_eq!(*offset, Offset(i as u64), "offsets must stay dense");
    }
    for (offset, id) in acked {
        let found = records
            .get(offset.0 as usize)
            .unwrap_or_else(|| panic!("acked offset {offset} missing"));
        assert_eq!(id_of(&found.1), *id, "acked record at {offset} changed");
    }
}

/// A unique path fragment for one test's rules.
fn scope(dir: &Path) -> String {
    dir.to_string_lossy().into_owned()
}

#[test]
fn enospc_on_batch_write_rejects_the_append_and_the_log_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let rules = scope(dir.path());
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        let mut acked = Vec::new();
        for i in 0..5 {
            let a = log.append_records(&[record(i, 100)]).await.expect("append");
            acked.push((a.base_offset, i));
        }
        fault::inject(FaultPoint::Write, format!("{rules}/p0/0"), libc::ENOSPC);
        for i in 5..8 {
            let err = log
                .append_records(&[record(i, 100)])
                .await
                .expect_err("full");
            assert!(matches!(err, LogError::NoSpace { .. }), "{err}");
        }
        assert!(!log.is_failed(), "ENOSPC must not fail-stop");
        assert_eq!(log.log_end_offset(), Offset(5));
        assert_eq!(log.high_watermark(), Offset(5));
        fault::clear(&format!("{rules}/p0/0"));
        for i in 8..12 {
            let a = log.append_records(&[record(i, 100)]).await.expect("append");
            acked.push((a.base_offset, i));
        }
        assert_eq!(acked.last().map(|a| a.0), Some(Offset(8)));
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        log.close().await.expect("close");
        let (log, report) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("reopen");
        assert_eq!(report.log_end, Offset(9));
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        log.close().await.expect("close");
    });
}

#[test]
fn enospc_creating_the_next_segment_leaves_the_active_one_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let rules = scope(dir.path());
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        let mut acked = Vec::new();
        let mut i = 0;
        // Fill the first segment to just below its size.
        while log.segments()[0].size_bytes + 2_000 < 16 * 1024 {
            let a = log.append_records(&[record(i, 900)]).await.expect("append");
            acked.push((a.base_offset, i));
            i += 1;
        }
        assert_eq!(log.segments().len(), 1);
        let before = log.segments();
        fault::inject(FaultPoint::Create, format!("{rules}/p0/"), libc::ENOSPC);
        let err = log
            .append_records(&[record(i, 3_000)])
            .await
            .expect_err("roll needs a new segment");
        assert!(matches!(err, LogError::NoSpace { .. }), "{err}");
        assert!(!log.is_failed());
        assert_eq!(log.segments(), before, "a failed roll changes nothing");
        let files: Vec<String> = std::fs::read_dir(&path)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{:020}", log.log_end_offset().0)))
            .collect();
        assert!(files.is_empty(), "half-made segment left behind: {files:?}");
        // A small append still fits in the untouched active segment.
        let a = log.append_records(&[record(i, 10)]).await.expect("fits");
        acked.push((a.base_offset, i));
        i += 1;
        fault::clear(&format!("{rules}/p0/"));
        let a = log
            .append_records(&[record(i, 3_000)])
            .await
            .expect("rolls now");
        acked.push((a.base_offset, i));
        assert_eq!(log.segments().len(), 2);
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        log.close().await.expect("close");
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("reopen");
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        log.close().await.expect("close");
    });
}

#[test]
fn enospc_preallocating_is_best_effort_on_open_and_roll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let rules = scope(dir.path());
    run_on_executor(async move {
        fault::inject(
            FaultPoint::Preallocate,
            format!("{rules}/p0/"),
            libc::ENOSPC,
        );
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("a full disk must not stop a log from opening");
        let mut acked = Vec::new();
        for i in 0..60 {
            let a = log.append_records(&[record(i, 700)]).await.expect("append");
            acked.push((a.base_offset, i));
        }
        assert!(log.segments().len() > 2, "rolled without preallocation");
        log.close().await.expect("close");
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("reopen");
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        drop(log);
        fault::clear(&format!("{rules}/p0/"));
        // Crash-style reopen (no clean-shutdown marker: the log was dropped).
        let (log, report) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("reopen");
        assert!(!report.mid_log_corruption);
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        log.close().await.expect("close");
    });
}

#[test]
fn enospc_on_an_index_entry_skips_it_and_keeps_the_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let rules = scope(dir.path());
    run_on_executor(async move {
        let mut config = small_config_16k(&path);
        config.segment_bytes = 1 << 20;
        let (log, _) = PartitionLog::open(config.clone()).await.expect("open");
        let index = format!("{rules}/p0/{:020}.timeindex", 0);
        fault::inject(FaultPoint::Write, index.clone(), libc::ENOSPC);
        let mut acked = Vec::new();
        for i in 0..40 {
            let a = log.append_records(&[record(i, 300)]).await.expect("append");
            acked.push((a.base_offset, i));
        }
        fault::clear(&index);
        for i in 40..80 {
            let a = log.append_records(&[record(i, 300)]).await.expect("append");
            acked.push((a.base_offset, i));
        }
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(1_010))
                .await
                .expect("ts"),
            Some(Offset(10))
        );
        log.close().await.expect("close");
        // The two index files still agree, so a clean reopen trusts them.
        let offsets = std::fs::metadata(path.join(format!("{:020}.index", 0))).expect("index");
        let times = std::fs::metadata(path.join(format!("{:020}.timeindex", 0))).expect("tindex");
        assert_eq!(offsets.len() / 8, times.len() / 12);
        let (log, report) = PartitionLog::open(config).await.expect("reopen");
        assert!(report.repaired.is_empty(), "{report:?}");
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        log.close().await.expect("close");
    });
}

#[test]
fn a_failed_checkpoint_keeps_the_previous_one_and_the_log_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let rules = scope(dir.path());
    run_on_executor(async move {
        let mut config = small_config_16k(&path);
        config.commit = CommitMode::Replicated;
        let (log, _) = PartitionLog::open(config.clone()).await.expect("open");
        for i in 0..10 {
            log.append_records(&[record(i, 50)]).await.expect("append");
        }
        log.advance_high_watermark(Offset(4));
        log.checkpoint_high_watermark().await.expect("checkpoint");
        log.advance_high_watermark(Offset(10));
        let tmp = format!("{rules}/p0/{HIGH_WATERMARK_FILE}.tmp");
        fault::inject(FaultPoint::Write, tmp.clone(), libc::ENOSPC);
        let err = log.checkpoint_high_watermark().await.expect_err("full");
        assert!(matches!(err, LogError::NoSpace { .. }), "{err}");
        assert!(!path.join(format!("{HIGH_WATERMARK_FILE}.tmp")).exists());
        assert!(!log.is_failed());
        log.append_records(&[record(10, 50)]).await.expect("append");
        drop(log);
        fault::clear(&tmp);
        let (log, _) = PartitionLog::open(config).await.expect("reopen");
        assert_eq!(log.high_watermark(), Offset(4), "previous checkpoint kept");
        log.close().await.expect("close");
    });
}

#[test]
fn fdatasync_eio_fail_stops_nacks_in_flight_appends_and_keeps_acked_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let rules = scope(dir.path());
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        let log = Rc::new(log);
        let mut acked = Vec::new();
        for i in 0..20 {
            let a = log.append_records(&[record(i, 200)]).await.expect("append");
            acked.push((a.base_offset, i));
        }
        let syncs_before = log.fsync_stats().count;
        fault::inject(FaultPoint::Fdatasync, format!("{rules}/p0/"), libc::EIO);
        let in_flight: Vec<_> = (20..28)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move { log.append_records(&[record(i, 200)]).await })
            })
            .collect();
        for task in in_flight {
            let err = task.await.expect_err("the sync failed");
            assert!(matches!(err, LogError::FailStopped { .. }), "{err}");
        }
        assert!(log.is_failed());
        let failure = log.failure().expect("failure recorded");
        assert_eq!(failure.cause, "fdatasync EIO");
        assert!(failure.at.0 > 0);
        assert_eq!(
            log.high_watermark(),
            Offset(20),
            "nothing unsynced is committed"
        );
        assert!(log.fsync_stats().count > syncs_before);
        // Fail-stop: refused at once, and the sync is never retried.
        fault::clear(&format!("{rules}/p0/"));
        let err = log
            .append_records(&[record(99, 1)])
            .await
            .expect_err("stopped");
        assert!(matches!(err, LogError::FailStopped { .. }), "{err}");
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            log.stable_offset(),
            Offset(20),
            "a failed sync is never retried"
        );
        // Committed data stays readable.
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        let log = Rc::try_unwrap(log).unwrap_or_else(|_| panic!("log still shared"));
        log.close().await.expect("close");
        assert!(
            !path.join(CLEAN_SHUTDOWN_FILE).exists(),
            "a fail-stopped log must not claim a clean shutdown"
        );
        let (log, report) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("reopen");
        assert!(report.log_end >= Offset(20));
        assert!(!log.is_failed());
        let records = read_values(&log, 64 * 1024).await;
        assert_dense_and_has(&records, &acked);
        let a = log
            .append_records(&[record(100, 1)])
            .await
            .expect("healthy again");
        assert_eq!(a.base_offset, report.log_end);
        log.close().await.expect("close");
    });
}

/// Runs only as root: mounts a 3 MiB tmpfs, fills it with appends of mixed
/// sizes until the disk is full (which also exercises partial `pwrite`s and
/// rolls that cannot preallocate), frees space, appends again, and checks
/// after a reopen that every acked record is there and offsets are dense.
#[test]
fn a_real_full_tmpfs_rejects_appends_cleanly_and_resumes_after_space_is_freed() {
    let mount = match mount_with_filler(3) {
        Ok(mount) => mount,
        Err(reason) => {
            crate::testing::privileged_unavailable("a_real_full_tmpfs_rejects_appends", &reason);
            return;
        }
    };
    let path = mount.dir().join("p0");
    let filler = mount.dir().join("filler");
    run_on_executor(async move {
        let mut config = small_config_16k(&path);
        config.segment_bytes = 256 * 1024;
        config.index_interval_bytes = 4096;
        let (log, _) = PartitionLog::open(config.clone()).await.expect("open");
        let mut acked = Vec::new();
        let mut rejected = 0;
        let mut i = 0u64;
        while rejected < 20 && i < 100_000 {
            let size = [50, 3_000, 700, 20_000, 9_000][(i % 5) as usize];
            match log.append_records(&[record(i, size)]).await {
                Ok(a) => acked.push((a.base_offset, i)),
                Err(LogError::NoSpace { .. }) => rejected += 1,
                Err(other) => panic!("unexpected error on a full disk: {other}"),
            }
            i += 1;
        }
        assert_eq!(rejected, 20, "the disk never filled");
        assert!(!log.is_failed());
        assert_eq!(log.log_end_offset(), Offset(acked.len() as u64));
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        // Free space: the filler was written before the log.
        std::fs::remove_file(&filler).expect("free space");
        for _ in 0..20 {
            let a = log
                .append_records(&[record(i, 20_000)])
                .await
                .expect("space again");
            acked.push((a.base_offset, i));
            i += 1;
        }
        log.close().await.expect("close");
        let (log, report) = PartitionLog::open(config.clone()).await.expect("reopen");
        assert!(!report.mid_log_corruption);
        assert_dense_and_has(&read_values(&log, 64 * 1024).await, &acked);
        assert_eq!(read_values(&log, 64 * 1024).await.len(), acked.len());
        log.close().await.expect("close");
    });
}

/// A tmpfs of `mib` MiB with a 1 MiB `filler` file in it, to free later.
fn mount_with_filler(mib: u64) -> Result<SmallTmpfs, String> {
    let mounted = SmallTmpfs::mount(mib)?;
    std::fs::write(mounted.dir().join("filler"), vec![7u8; 1 << 20])
        .map_err(|e| format!("writing the filler file: {e}"))?;
    Ok(mounted)
}

#[test]
fn enospc_on_the_epoch_checkpoint_rejects_the_epochs_first_batch_and_the_log_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let rules = format!(
        "{}/p0/{}",
        scope(dir.path()),
        crate::epoch_cache::LEADER_EPOCH_FILE
    );
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("open");
        log.set_leader_epoch(LeaderEpoch(1));
        for i in 0..3 {
            log.append_records(&[record(i, 100)]).await.expect("append");
        }
        let first_epoch = vec![EpochEntry {
            epoch: LeaderEpoch(1),
            start_offset: Offset(0),
        }];
        assert_eq!(log.epoch_entries(), first_epoch);

        // A new leader's first batch needs the checkpoint on disk first.
        log.set_leader_epoch(LeaderEpoch(2));
        fault::inject(FaultPoint::Write, rules.clone(), libc::ENOSPC);
        let err = log
            .append_records(&[record(3, 100)])
            .await
            .expect_err("full");
        assert!(matches!(err, LogError::NoSpace { .. }), "{err}");
        assert!(!log.is_failed(), "ENOSPC must not fail-stop");
        assert_eq!(log.log_end_offset(), Offset(3));
        assert_eq!(log.epoch_entries(), first_epoch, "the epoch did not begin");
        let leftovers: Vec<_> = std::fs::read_dir(&path)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        fault::clear(&rules);
        let appended = log.append_records(&[record(4, 100)]).await.expect("append");
        assert_eq!(appended.base_offset, Offset(3));
        let both = vec![
            first_epoch[0],
            EpochEntry {
                epoch: LeaderEpoch(2),
                start_offset: Offset(3),
            },
        ];
        assert_eq!(log.epoch_entries(), both);
        log.close().await.expect("close");
        let (log, report) = PartitionLog::open(small_config_16k(&path))
            .await
            .expect("reopen");
        assert!(!report.epoch_cache_rebuilt, "{report:?}");
        assert_eq!(log.epoch_entries(), both);
        log.close().await.expect("close");
    });
}
