//! Unit tests of `compaction.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::batch::Record;
use crate::log::{CommitMode, SegmentInfo};
use crate::segment::CLEANED_SUFFIX;
use crate::testing::{run_on_executor, small_config, try_read_batches_from};
use crate::types::TimestampMs;

/// A record as the tests model it: offset, key, value.
type Row = (Offset, Option<Bytes>, Option<Bytes>);

fn record(key: Option<&str>, value: Option<String>) -> Record {
    Record {
        timestamp: TimestampMs(1_700_000_000_000),
        key: key.map(|k| Bytes::from(k.to_owned())),
        value: value.map(|v| Bytes::from(format!("{v:-<120}"))),
        headers: Vec::new(),
    }
}

/// Deterministic pseudo-random numbers (no extra dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// Appends `batches` batches of 1–3 records: keys from a set of 12,
/// one record in five keyless, one keyed record in ten a tombstone.
/// Returns the model of everything appended.
async fn append_workload(log: &PartitionLog, batches: u64, seed: u64) -> Vec<Row> {
    let mut rng = Lcg(seed);
    let mut model = Vec::new();
    for i in 0..batches {
        let records: Vec<Record> = (0..1 + rng.next(3))
            .map(|j| {
                let key = (rng.next(5) != 0).then(|| format!("k{}", rng.next(12)));
                let tombstone = key.is_some() && rng.next(10) == 0;
                let value = (!tombstone).then(|| format!("v{seed}-{i}-{j}"));
                record(key.as_deref(), value)
            })
            .collect();
        let appended = log.append_records(&records).await.expect("append");
        for (n, r) in records.into_iter().enumerate() {
            let offset = appended.base_offset.plus(n as u64);
            let value = r.value.map(|v| Bytes::from(v.to_vec()));
            model.push((offset, r.key, value));
        }
    }
    model
}

/// What compaction must leave: everything at or after `boundary` (the
/// first offset not in a cleanable segment), and below it the keyless
/// records and the last record of each key among those below
/// `committed`.
fn expected(model: &[Row], boundary: Offset, committed: Offset) -> Vec<Row> {
    let mut last: HashMap<Bytes, Offset> = HashMap::new();
    for (offset, key, _) in model.iter().filter(|r| r.0 < committed) {
        if let Some(key) = key {
            last.insert(key.clone(), *offset);
        }
    }
    model
        .iter()
        .filter(|(offset, key, _)| {
            *offset >= boundary || key.as_ref().is_none_or(|k| last.get(k) == Some(offset))
        })
        .cloned()
        .collect()
}

/// Every committed record from `from`, stepping over empty batches.
async fn read_from(log: &PartitionLog, from: Offset) -> Vec<Row> {
    try_read_batches_from(log, from, 8 * 1024)
        .await
        .expect("read")
        .into_iter()
        .flat_map(|(_, records)| records)
        .map(|r| (r.offset, r.key, r.value))
        .collect()
}

async fn read_all(log: &PartitionLog) -> Vec<Row> {
    read_from(log, log.log_start_offset()).await
}

fn active_base(log: &PartitionLog) -> Offset {
    log.segments()
        .iter()
        .find(|s| s.active)
        .map(|s| s.base_offset)
        .expect("active segment")
}

fn ranges(segments: &[SegmentInfo]) -> Vec<(Offset, Offset)> {
    segments
        .iter()
        .map(|s| (s.base_offset, s.next_offset))
        .collect()
}

fn cleaned_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(CLEANED_SUFFIX))
        .collect()
}

#[test]
fn keeps_the_last_record_per_key_and_every_keyless_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
        // "solo" is written once at the start and once in the active
        // segment: the later write makes the first removable.
        let first = log
            .append_records(&[record(Some("solo"), Some("first".into()))])
            .await
            .expect("append");
        let mut model = vec![(
            first.base_offset,
            Some(Bytes::from_static(b"solo")),
            record(None, Some("first".into())).value,
        )];
        model.extend(append_workload(&log, 300, 1).await);
        let last = log
            .append_records(&[record(Some("solo"), Some("last".into()))])
            .await
            .expect("append");
        model.push((
            last.base_offset,
            Some(Bytes::from_static(b"solo")),
            record(None, Some("last".into())).value,
        ));
        let before = log.segments();
        assert!(before.len() > 10, "need many segments");
        let boundary = active_base(&log);
        assert!(
            last.base_offset >= boundary,
            "last write is in the active segment"
        );
        let want = expected(&model, boundary, log.high_watermark());
        assert!(want.len() < model.len());
        assert!(!want.iter().any(|r| r.0 == first.base_offset));

        let outcome = compact(&log).await.expect("compact");
        assert!(outcome.segments_rewritten > 0);
        assert_eq!(outcome.records_removed, (model.len() - want.len()) as u64);
        assert!(outcome.bytes_after < outcome.bytes_before);
        assert_eq!(read_all(&log).await, want);
        // Offsets are preserved: same segment ranges, no segment grew,
        // the log end did not move.
        let after = log.segments();
        assert_eq!(ranges(&after), ranges(&before));
        assert!(after
            .iter()
            .zip(&before)
            .all(|(a, b)| a.size_bytes <= b.size_bytes));
        assert_eq!(log.log_end_offset(), model.last().expect("rows").0.next());
        // Reads starting inside gaps find the next surviving record.
        for from in (0..log.log_end_offset().0).step_by(7).map(Offset) {
            let tail: Vec<Row> = want.iter().filter(|r| r.0 >= from).cloned().collect();
            assert_eq!(read_from(&log, from).await, tail, "reading from {from}");
        }
        // A second run has nothing left to do.
        let again = compact(&log).await.expect("compact again");
        assert_eq!(again, CompactionOutcome::default());
        // Appends carry on at the same offsets.
        let next = log
            .append_records(&[record(Some("k1"), Some("after".into()))])
            .await
            .expect("append");
        assert_eq!(next.base_offset, last.base_offset.next());
        assert!(cleaned_files(&path).is_empty());
        log.close().await.expect("close");
    });
}

#[test]
fn compacted_log_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
        let model = append_workload(&log, 250, 2).await;
        let want = expected(&model, active_base(&log), log.high_watermark());
        let outcome = compact(&log).await.expect("compact");
        assert!(outcome.segments_rewritten > 0);
        let segments = log.segments();
        log.close().await.expect("close");

        let (log, report) = PartitionLog::open(small_config(&path))
            .await
            .expect("reopen");
        assert!(!report.mid_log_corruption);
        assert_eq!(report.log_end, model.last().expect("rows").0.next());
        assert_eq!(log.segments(), segments);
        assert_eq!(read_all(&log).await, want);
        assert_eq!(
            compact(&log).await.expect("compact"),
            CompactionOutcome::default()
        );
        log.close().await.expect("close");
    });
}

#[test]
fn missing_indexes_of_a_compacted_segment_are_rebuilt() {
    // A crash between the steps of the swap leaves the cleaned log
    // without indexes: open must rebuild them from the log.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let path2 = path.clone();
    let want = run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
        let model = append_workload(&log, 250, 3).await;
        let want = expected(&model, active_base(&log), log.high_watermark());
        compact(&log).await.expect("compact");
        log.close().await.expect("close");
        want
    });
    for entry in std::fs::read_dir(&path2).expect("list") {
        let entry_path = entry.expect("entry").path();
        let ext = entry_path.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("index" | "timeindex")) {
            std::fs::remove_file(&entry_path).expect("remove index");
        }
    }
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config(&path2))
            .await
            .expect("reopen");
        assert_eq!(read_all(&log).await, want);
        for from in (0..log.log_end_offset().0).step_by(11).map(Offset) {
            let tail: Vec<Row> = want.iter().filter(|r| r.0 >= from).cloned().collect();
            assert_eq!(read_from(&log, from).await, tail, "reading from {from}");
        }
        log.close().await.expect("close");
    });
}

#[test]
fn leftover_cleaned_files_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let path2 = path.clone();
    let want = run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
        append_workload(&log, 100, 4).await;
        let rows = read_all(&log).await;
        log.close().await.expect("close");
        rows
    });
    // A compaction that crashed before its swap.
    for name in [
        "00000000000000000000.log.cleaned",
        "00000000000000000000.index.cleaned",
        "00000000000000000000.timeindex.cleaned",
    ] {
        std::fs::write(path2.join(name), [0xA5u8; 100]).expect("write leftover");
    }
    assert_eq!(cleaned_files(&path2).len(), 3);
    let path3 = path2.clone();
    run_on_executor(async move {
        let (log, report) = PartitionLog::open(small_config(&path3))
            .await
            .expect("reopen");
        assert!(!report.mid_log_corruption);
        assert!(cleaned_files(&path3).is_empty());
        assert_eq!(read_all(&log).await, want);
        log.close().await.expect("close");
    });
}

#[test]
fn a_slice_taken_before_compaction_still_reads_the_old_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
        append_workload(&log, 200, 5).await;
        let slice = log.read(Offset(0), 1 << 20).expect("read").expect("data");
        let before = slice.read_bytes().await.expect("bytes");
        let outcome = compact(&log).await.expect("compact");
        assert!(outcome.segments_rewritten > 0);
        let now = log.read(Offset(0), 1 << 20).expect("read").expect("data");
        assert!(
            !Rc::ptr_eq(&now.file, &slice.file),
            "segment 0 was replaced"
        );
        assert_eq!(slice.read_bytes().await.expect("old bytes"), before);
        log.close().await.expect("close");
    });
}

#[test]
fn only_committed_records_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let mut config = small_config(&path);
        config.commit = CommitMode::Replicated;
        let (log, _) = PartitionLog::open(config).await.expect("open");
        let model = append_workload(&log, 300, 6).await;
        let segments = log.segments();
        // Committed up to the middle of segment 8: segments 0..=7 may be
        // rewritten, and only records below the watermark supersede.
        let hw = Offset((segments[8].base_offset.0 + segments[8].next_offset.0) / 2);
        log.advance_high_watermark(hw);
        let want: Vec<Row> = expected(&model, segments[8].base_offset, hw)
            .into_iter()
            .filter(|r| r.0 < hw)
            .collect();
        let outcome = compact(&log).await.expect("compact");
        assert!(outcome.segments_rewritten > 0);
        assert_eq!(read_all(&log).await, want);
        let after = log.segments();
        assert_eq!(
            after[8..],
            segments[8..],
            "segments from the watermark on untouched"
        );
        log.close().await.expect("close");
    });
}

#[test]
fn a_small_key_map_compacts_in_several_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
        let model = append_workload(&log, 150, 7).await;
        let want = expected(&model, active_base(&log), log.high_watermark());
        // Room for about three of the twelve keys.
        let config = CompactionConfig {
            key_map_bytes_max: 3 * (COMPACTION_KEY_ENTRY_OVERHEAD_BYTES + 3),
        };
        let outcome = compact_with(&log, &config).await.expect("compact");
        assert_eq!(outcome.records_removed, (model.len() - want.len()) as u64);
        assert_eq!(read_all(&log).await, want);
        assert_eq!(
            compact(&log).await.expect("compact"),
            CompactionOutcome::default()
        );
        log.close().await.expect("close");
    });
}

#[test]
fn a_second_concurrent_compaction_returns_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
        let log = Rc::new(log);
        append_workload(&log, 200, 8).await;
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let log = log.clone();
                glommio::spawn_local(async move { compact(&log).await.expect("compact") })
            })
            .collect();
        let mut outcomes = Vec::new();
        for run in runs {
            outcomes.push(run.await);
        }
        let busy = outcomes
            .iter()
            .filter(|o| **o == CompactionOutcome::default())
            .count();
        assert_eq!(busy, 1, "{outcomes:?}");
    });
}

#[test]
fn appends_run_and_complete_during_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(small_config(&path)).await.expect("open");
        let log = Rc::new(log);
        let mut model = append_workload(&log, 150, 9).await;
        let done = Rc::new(std::cell::Cell::new(false));
        let producer = {
            let (log, done) = (log.clone(), done.clone());
            glommio::spawn_local(async move {
                let mut rows = Vec::new();
                for round in 0..20 {
                    rows.extend(append_workload(&log, 15, 100 + round).await);
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                done.set(true);
                rows
            })
            .detach()
        };
        let mut rewritten = 0;
        let mut runs = 0;
        while !done.get() {
            rewritten += compact(&log).await.expect("compact").segments_rewritten;
            runs += 1;
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        let rows = producer.await.expect("producer finished");
        assert!(runs > 1, "compaction ran while appending");
        assert!(rewritten > 0, "compaction rewrote segments while appending");
        // Every append completed, at dense offsets.
        model.extend(rows);
        let offsets: Vec<u64> = model.iter().map(|r| r.0 .0).collect();
        assert_eq!(offsets, (0..model.len() as u64).collect::<Vec<_>>());
        assert_eq!(log.log_end_offset(), Offset(model.len() as u64));
        // Whatever earlier runs removed was superseded; one last run
        // brings the log to the model exactly.
        compact(&log).await.expect("final compact");
        let want = expected(&model, active_base(&log), log.high_watermark());
        assert_eq!(read_all(&log).await, want);
        match Rc::try_unwrap(log) {
            Ok(log) => log.close().await.expect("close"),
            Err(_) => panic!("log still shared"),
        }
    });
}
