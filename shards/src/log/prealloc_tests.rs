//! Step-wise preallocation: a partition costs disk in proportion to what it
//! stores (one step ahead of its end, never a whole segment), the steps
//! grow with the active segment, sealed segments keep their exact size, and
//! a new log under `require_first_preallocation` does not open without room
//! for its first step.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::tests::{read_values, small_config_16k};
use super::*;
use crate::batch::Record;
use crate::constants::SEGMENT_PREALLOCATE_FIRST_BYTES;
use crate::io::fault::{self, FaultPoint};
use crate::segment::segment_file_name;
use crate::testing::{run_on_executor, SmallTmpfs};
use crate::types::TimestampMs;
use bytes::Bytes;

const STEP: u64 = 8 * 1024;
const SEGMENT: u64 = 64 * 1024;

fn record(i: u64, size: usize) -> Record {
    Record {
        timestamp: TimestampMs(1_000 + i as i64),
        key: Some(Bytes::from(format!("key-{i}"))),
        value: Some(Bytes::from(vec![(i % 251) as u8; size])),
        headers: Vec::new(),
    }
}

fn step_config(dir: &Path) -> LogConfig {
    let mut config = small_config_16k(dir);
    config.segment_bytes = SEGMENT;
    config.preallocate_step_bytes = STEP;
    config
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(segment_file_name(Offset(base), "log"))
}

/// (apparent size, bytes of blocks allocated) of a file.
fn sizes(path: &Path) -> (u64, u64) {
    let meta = std::fs::metadata(path).expect("stat segment");
    (meta.len(), meta.blocks() * 512)
}

#[test]
fn a_new_log_preallocates_its_first_size_not_a_whole_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let mut config = LogConfig::new(&path);
        assert_eq!(config.segment_bytes, 1 << 30);
        config.index_interval_bytes = 4096;
        let (log, _) = PartitionLog::open(config.clone()).await.expect("open");
        let (len, allocated) = sizes(&segment_path(&path, 0));
        assert_eq!(
            len, SEGMENT_PREALLOCATE_FIRST_BYTES,
            "not the 1 GiB segment"
        );
        assert!(
            allocated <= SEGMENT_PREALLOCATE_FIRST_BYTES,
            "{allocated} bytes allocated"
        );
        assert_eq!(
            config.first_preallocation_bytes(),
            SEGMENT_PREALLOCATE_FIRST_BYTES
        );
        log.close().await.expect("close");
    });
}

#[test]
fn the_preallocation_target_doubles_while_small_then_takes_steps() {
    use crate::segment::SegmentConfig;
    let config = SegmentConfig {
        segment_bytes: 40 << 20,
        index_interval_bytes: 4096,
        preallocate: true,
        preallocate_step_bytes: 4 << 20,
        first_step_required: false,
    };
    const K: u64 = 1024;
    const M: u64 = 1 << 20;
    let first = SEGMENT_PREALLOCATE_FIRST_BYTES;
    assert_eq!(first, 256 * K);
    let cases = [
        (0, first),
        (1, first),
        (first, first),
        (first + 1, 2 * first),
        (600 * K, M),
        (M + 1, 2 * M),
        (3 * M, 4 * M),
        (4 * M, 4 * M),
        (4 * M + 1, 8 * M),
        (9 * M, 12 * M),
        (39 * M, 40 * M),
        (40 * M, 40 * M),
    ];
    for (end, target) in cases {
        assert_eq!(config.preallocation_target(end), target, "end {end}");
    }
    // A step below the first size: whole steps from the start.
    let small = SegmentConfig {
        preallocate_step_bytes: 8 * K,
        ..config.clone()
    };
    assert_eq!(small.first_preallocation_bytes(), 8 * K);
    assert_eq!(small.preallocation_target(8 * K + 1), 16 * K);
    assert_eq!(small.preallocation_target(100 * K), 104 * K);
    // A segment smaller than the first size: the segment.
    let tiny = SegmentConfig {
        segment_bytes: 16 * K,
        ..config
    };
    assert_eq!(tiny.first_preallocation_bytes(), 16 * K);
    assert_eq!(tiny.preallocation_target(10 * K), 16 * K);
}

#[test]
fn preallocation_grows_by_steps_with_the_active_segment_and_seals_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(step_config(&path)).await.expect("open");
        let active = segment_path(&path, 0);
        assert_eq!(sizes(&active).0, STEP);
        let mut lens = vec![STEP];
        let mut i = 0;
        while log.segments().len() == 1 {
            log.append_records(&[record(i, 900)]).await.expect("append");
            i += 1;
            let size = log.segments()[0].size_bytes;
            let (len, _) = sizes(&active);
            if log.segments().len() == 1 {
                // One step ahead at most, on a step boundary, never short.
                assert!(len >= size, "file {len} shorter than the log {size}");
                assert_eq!(len % STEP, 0, "file {len} not on a step boundary");
                assert!(
                    len - size <= STEP,
                    "more than a step ahead: {len} vs {size}"
                );
                if lens.last() != Some(&len) {
                    lens.push(len);
                }
            }
        }
        assert!(lens.len() >= 6, "grew in steps: {lens:?}");
        let sealed = &log.segments()[0];
        assert_eq!(
            sizes(&active).0,
            sealed.size_bytes,
            "sealed at its exact size"
        );
        let next = segment_path(&path, sealed.next_offset.0);
        assert_eq!(
            sizes(&next).0,
            STEP,
            "the next segment starts with one step"
        );
        let expected = i;
        log.close().await.expect("close");
        let (log, report) = PartitionLog::open(step_config(&path))
            .await
            .expect("reopen");
        assert_eq!(report.log_end, Offset(expected));
        assert_eq!(read_values(&log, 4096).await.len() as u64, expected);
        log.close().await.expect("close");
    });
}

#[test]
fn reopening_a_wholly_preallocated_active_segment_gives_the_excess_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(step_config(&path)).await.expect("open");
        for i in 0..12 {
            log.append_records(&[record(i, 1000)])
                .await
                .expect("append");
        }
        let size = log.segments()[0].size_bytes;
        log.close().await.expect("close");
        // As an older version left it: preallocated to the whole segment.
        let active = segment_path(&path, 0);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&active)
            .expect("open segment");
        file.set_len(SEGMENT).expect("extend");
        drop(file);
        let (log, report) = PartitionLog::open(step_config(&path))
            .await
            .expect("reopen");
        assert_eq!(report.log_end, Offset(12));
        assert_eq!(sizes(&active).0, size.div_ceil(STEP) * STEP);
        let appended = log.append_records(&[record(12, 10)]).await.expect("append");
        assert_eq!(appended.base_offset, Offset(12));
        log.close().await.expect("close");
    });
}

#[test]
fn an_extension_that_fails_with_eio_refuses_the_append_without_fail_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let rule = format!("{}/p0/", dir.path().display());
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(step_config(&path)).await.expect("open");
        let mut acked = 0;
        // Fill the first step.
        while log.segments()[0].size_bytes + 1100 <= STEP {
            log.append_records(&[record(acked, 1000)])
                .await
                .expect("append");
            acked += 1;
        }
        fault::inject(FaultPoint::Preallocate, rule.clone(), libc::EIO);
        let err = log
            .append_records(&[record(acked, 1000)])
            .await
            .expect_err("the extension failed");
        assert!(matches!(err, LogError::Io { .. }), "{err}");
        assert!(!log.is_failed(), "a failed fallocate wrote nothing");
        assert_eq!(log.log_end_offset(), Offset(acked));
        fault::clear(&rule);
        log.append_records(&[record(acked, 1000)])
            .await
            .expect("append");
        assert_eq!(sizes(&segment_path(&path, 0)).0, 2 * STEP);
        log.close().await.expect("close");
    });
}

#[test]
fn a_full_disk_at_an_extension_is_best_effort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let rule = format!("{}/p0/", dir.path().display());
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(step_config(&path)).await.expect("open");
        fault::inject(FaultPoint::Preallocate, rule.clone(), libc::ENOSPC);
        // Past the first step without any extension: appends extend the file.
        for i in 0..20 {
            log.append_records(&[record(i, 1000)])
                .await
                .expect("append");
        }
        let size = log.segments()[0].size_bytes;
        assert!(size > STEP);
        assert_eq!(sizes(&segment_path(&path, 0)).0, size);
        fault::clear(&rule);
        log.append_records(&[record(20, 1000)])
            .await
            .expect("append");
        let len = sizes(&segment_path(&path, 0)).0;
        assert_eq!(len % STEP, 0, "steps resume once there is space: {len}");
        log.close().await.expect("close");
    });
}

#[test]
fn a_new_log_that_requires_its_first_step_does_not_open_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let rule = format!("{}/p0/", dir.path().display());
    run_on_executor(async move {
        let mut config = step_config(&path);
        config.require_first_preallocation = true;
        fault::inject(FaultPoint::Preallocate, rule.clone(), libc::ENOSPC);
        let err = PartitionLog::open(config.clone())
            .await
            .err()
            .expect("no room for the first step");
        assert!(matches!(err, LogError::NoSpace { .. }), "{err}");
        let left: Vec<_> = std::fs::read_dir(&path)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "half-made segment left: {left:?}");
        fault::clear(&rule);
        let (log, _) = PartitionLog::open(config.clone()).await.expect("room now");
        log.append_records(&[record(0, 100)]).await.expect("append");
        log.close().await.expect("close");
        // A log with data opens on a full disk all the same.
        fault::inject(FaultPoint::Preallocate, rule.clone(), libc::ENOSPC);
        let (log, report) = PartitionLog::open(config).await.expect("stored data opens");
        assert_eq!(report.log_end, Offset(1));
        log.close().await.expect("close");
        fault::clear(&rule);
    });
}

/// Needs root (README, Privileged tests): a real 1 MiB tmpfs, 896 KiB of it taken, has no
/// room for a new segment's first 256 KiB.
#[test]
fn a_real_tmpfs_too_small_for_the_first_step_refuses_a_new_log() {
    let mount = match SmallTmpfs::mount(1) {
        Ok(mount) => mount,
        Err(reason) => {
            crate::testing::privileged_unavailable(
                "a_real_tmpfs_too_small_for_the_first_step",
                &reason,
            );
            return;
        }
    };
    std::fs::write(mount.dir().join("filler"), vec![1u8; 896 << 10]).expect("filler");
    let path = mount.dir().join("p0");
    run_on_executor(async move {
        let mut config = small_config_16k(&path);
        config.segment_bytes = 64 << 20;
        config.preallocate_step_bytes = 4 << 20;
        config.require_first_preallocation = true;
        let err = PartitionLog::open(config.clone())
            .await
            .err()
            .expect("no room for the first 256 KiB");
        assert!(matches!(err, LogError::NoSpace { .. }), "{err}");
        assert_eq!(std::fs::read_dir(&path).expect("list").count(), 0);
        // Without the requirement it opens and appends what fits.
        config.require_first_preallocation = false;
        let (log, _) = PartitionLog::open(config).await.expect("best effort");
        log.append_records(&[record(0, 100)]).await.expect("append");
        log.close().await.expect("close");
    });
    drop(mount);
}
