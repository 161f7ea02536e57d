//! Unit tests of `segment/`.

use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::*;
use crate::batch::{encode_batch, validate_batch, Record};
use crate::testing::run_on_executor;

const STEP: u64 = 64 << 10;

fn config() -> SegmentConfig {
    SegmentConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 256,
        preallocate: true,
        preallocate_step_bytes: STEP,
        first_step_required: false,
    }
}

/// A batch of `records` records at `base`, with timestamps from `ts`.
fn batch(base: u64, records: u64, ts: i64) -> (Vec<u8>, BatchHeader) {
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            timestamp: TimestampMs(ts + i as i64),
            key: None,
            value: Some(Bytes::from(vec![(base + i) as u8 | 1; 100])),
            headers: Vec::new(),
        })
        .collect();
    let mut out = Vec::new();
    encode_batch(Offset(base), &records, &mut out);
    let header = validate_batch(&out).expect("valid batch");
    (out, header)
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join(segment_file_name(Offset(0), "log"))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

/// Appends batches at the given (base offset, timestamp) pairs, three
/// records each; returns each batch's location and bytes.
fn append_all(segment: &mut Segment, batches: &[(u64, i64)]) -> Vec<(BatchLocation, Vec<u8>)> {
    batches
        .iter()
        .map(|&(base, ts)| {
            let (bytes, header) = batch(base, 3, ts);
            let position = segment.append(&bytes, &header).expect("append");
            (BatchLocation { position, header }, bytes)
        })
        .collect()
}

fn dense(count: u64) -> Vec<(u64, i64)> {
    (0..count).map(|i| (i * 3, 1_000 + i as i64 * 10)).collect()
}

#[test]
fn appends_read_back_and_sealing_leaves_the_exact_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_path = dir.path().to_path_buf();
    run_on_executor(async move {
        let config = config();
        let mut segment = Segment::create(&dir_path, Offset(0), &config)
            .await
            .expect("create");
        assert!(segment.is_empty());
        // A new segment takes its first preallocation step, not more.
        assert_eq!(file_len(&log_path(&dir_path)), STEP);
        let written = append_all(&mut segment, &dense(10));
        let mut end = 0;
        for (location, bytes) in &written {
            assert_eq!(location.position, Position(end), "batches are contiguous");
            end += bytes.len() as u64;
            let read = segment
                .file()
                .read_exact_at(location.position, bytes.len())
                .await
                .expect("read");
            assert_eq!(&read, bytes);
        }
        assert_eq!(segment.size(), end);
        assert_eq!(segment.next_offset(), Offset(30));
        assert!(
            !segment.offset_index.entries().is_empty(),
            "appends past the index interval add index entries"
        );
        assert_eq!(file_len(&log_path(&dir_path)), STEP, "still preallocated");

        segment.seal().await.expect("seal");
        assert_eq!(
            file_len(&log_path(&dir_path)),
            end,
            "sealed at its exact size"
        );
        assert_eq!(segment.preallocated_bytes, 0);
        drop(segment);

        let (segment, recovery) =
            Segment::open(&dir_path, Offset(0), &config, false, RecoveryScan::Full)
                .await
                .expect("reopen");
        assert_eq!(segment.size(), end);
        assert_eq!(segment.next_offset(), Offset(30));
        assert_eq!(recovery.batches_scanned, 10);
        assert_eq!(recovery.truncated_bytes, 0);
        assert_eq!(recovery.stop_reason, None);
        assert_eq!(file_len(&log_path(&dir_path)), end);
    });
}

#[test]
fn locate_finds_the_batch_holding_each_offset_or_the_next_after_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_path = dir.path().to_path_buf();
    run_on_executor(async move {
        let mut segment = Segment::create(&dir_path, Offset(0), &config())
            .await
            .expect("create");
        // Offsets 0..30 dense, then (as compaction leaves them) a gap
        // to 100..103.
        let mut bases = dense(10);
        bases.push((100, 2_000));
        let written = append_all(&mut segment, &bases);
        assert!(
            segment.offset_index.entries().len() > 2,
            "lookups use the index"
        );
        for offset in 0..30 {
            let found = segment
                .locate(Offset(offset))
                .expect("locate")
                .expect("found");
            let want = written[(offset / 3) as usize].0;
            assert_eq!(found, want, "offset {offset}");
        }
        for offset in [30, 50, 99, 100, 102] {
            let found = segment
                .locate(Offset(offset))
                .expect("locate")
                .expect("found");
            assert_eq!(found, written[10].0, "offset {offset}");
        }
        assert_eq!(segment.locate(Offset(103)).expect("locate"), None);
        assert_eq!(segment.locate(Offset(10_000)).expect("locate"), None);
    });
}

#[test]
fn locate_by_timestamp_finds_the_first_batch_reaching_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_path = dir.path().to_path_buf();
    run_on_executor(async move {
        let mut segment = Segment::create(&dir_path, Offset(0), &config())
            .await
            .expect("create");
        // Timestamps are not monotonic across batches: a lookup must
        // return the *first* batch whose max reaches the target.
        let timestamps = [1_000, 1_100, 1_050, 1_300, 1_200, 1_500, 1_400, 1_600];
        let bases: Vec<(u64, i64)> = timestamps
            .iter()
            .enumerate()
            .map(|(i, &ts)| (i as u64 * 3, ts))
            .collect();
        let written = append_all(&mut segment, &bases);
        for target in [0, 1_000, 1_001, 1_002, 1_003, 1_101, 1_250, 1_450, 1_602] {
            let want = written
                .iter()
                .map(|(location, _)| *location)
                .find(|location| location.header.max_timestamp >= TimestampMs(target));
            let found = segment
                .locate_by_timestamp(TimestampMs(target))
                .expect("locate");
            assert_eq!(found, want, "target {target}");
        }
        assert_eq!(
            segment
                .locate_by_timestamp(TimestampMs(1_603))
                .expect("locate"),
            None
        );
    });
}

#[test]
fn batch_boundaries_never_split_a_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_path = dir.path().to_path_buf();
    run_on_executor(async move {
        let mut segment = Segment::create(&dir_path, Offset(0), &config())
            .await
            .expect("create");
        let written = append_all(&mut segment, &dense(12));
        let ends: Vec<Position> = written.iter().map(|(l, _)| l.end()).collect();
        let start = Position(0);
        // Shorter than the first batch: nothing fits.
        assert_eq!(
            segment
                .batch_boundary_at_or_before(start, Position(ends[0].0 - 1))
                .expect("boundary"),
            start
        );
        for k in 1..ends.len() {
            let inside = Position(ends[k].0 - 1);
            assert_eq!(
                segment
                    .batch_boundary_at_or_before(start, inside)
                    .expect("boundary"),
                ends[k - 1],
                "limit inside batch {k}"
            );
            assert_eq!(
                segment
                    .batch_boundary_at_or_before(start, ends[k])
                    .expect("boundary"),
                ends[k],
                "limit at the end of batch {k}"
            );
            // From a later batch start, too.
            assert_eq!(
                segment
                    .batch_boundary_at_or_before(ends[0], inside)
                    .expect("boundary"),
                ends[k - 1].max(ends[0])
            );
        }
        assert_eq!(
            segment
                .batch_boundary_at_or_before(start, Position(u64::MAX))
                .expect("boundary"),
            Position(segment.size())
        );
    });
}

#[test]
fn for_each_header_visits_every_batch_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_path = dir.path().to_path_buf();
    run_on_executor(async move {
        let mut segment = Segment::create(&dir_path, Offset(0), &config())
            .await
            .expect("create");
        let written = append_all(&mut segment, &dense(7));
        let mut seen = Vec::new();
        segment
            .for_each_header(|header| seen.push(*header))
            .expect("scan");
        let want: Vec<BatchHeader> = written.iter().map(|(l, _)| l.header).collect();
        assert_eq!(seen, want);
    });
}

/// What follows the last good batch of a crashed active segment.
#[derive(Clone, Copy, Debug)]
enum Tail {
    /// Only preallocated zeros: a clean end.
    Zeros,
    /// The first bytes of a batch that was being written.
    Torn,
    /// A whole batch with a flipped byte (fails its CRC).
    BadCrc,
    /// A length prefix claiming more bytes than the file has.
    TooLong,
}

/// Writes three batches to an active segment, "crashes" (drops it
/// unsealed), puts `tail` after them and reopens it with `scan`.
fn recover_with(tail: Tail, scan: RecoveryScan) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_path = dir.path().to_path_buf();
    run_on_executor(async move {
        let config = config();
        let mut segment = Segment::create(&dir_path, Offset(0), &config)
            .await
            .expect("create");
        append_all(&mut segment, &dense(3));
        let good_end = segment.size();
        drop(segment);

        let (next, _) = batch(9, 3, 2_000);
        let tail_bytes: Vec<u8> = match tail {
            Tail::Zeros => Vec::new(),
            Tail::Torn => next[..next.len() / 2].to_vec(),
            Tail::BadCrc => {
                let mut bad = next.clone();
                let at = bad.len() - 10;
                bad[at] ^= 0x40;
                bad
            }
            Tail::TooLong => {
                let mut long = next.clone();
                long[8..12].copy_from_slice(&(STEP as i32).to_be_bytes());
                long
            }
        };
        let path = log_path(&dir_path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open log");
        file.write_all_at(&tail_bytes, good_end)
            .expect("write tail");
        drop(file);
        let non_zero = tail_bytes
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |at| at as u64 + 1);

        let (mut segment, recovery) = Segment::open(&dir_path, Offset(0), &config, true, scan)
            .await
            .expect("reopen");
        let case = format!("{tail:?} {scan:?}");
        assert_eq!(segment.size(), good_end, "{case}");
        assert_eq!(segment.next_offset(), Offset(9), "{case}");
        assert_eq!(recovery.truncated_bytes, non_zero, "{case}");
        assert_eq!(recovery.stop_reason.is_some(), non_zero > 0, "{case}");
        // Nothing but zeros may follow the logical end now, and the
        // active segment has its preallocation back.
        let on_disk = std::fs::read(&path).expect("read log");
        assert_eq!(on_disk.len() as u64, STEP, "{case}");
        assert!(
            on_disk[good_end as usize..].iter().all(|&b| b == 0),
            "{case}: stale bytes after the end"
        );

        // The log goes on: a new batch lands at the end and survives a
        // full rescan.
        let (again, header) = batch(9, 2, 3_000);
        let position = segment.append(&again, &header).expect("append");
        assert_eq!(position, Position(good_end));
        drop(segment);
        let (segment, recovery) =
            Segment::open(&dir_path, Offset(0), &config, true, RecoveryScan::Full)
                .await
                .expect("reopen");
        assert_eq!(segment.next_offset(), Offset(11), "{case}");
        assert_eq!(recovery.batches_scanned, 4, "{case}");
        assert_eq!(recovery.truncated_bytes, 0, "{case}");
    });
}

#[test]
fn recovery_cuts_a_torn_or_corrupt_tail_and_keeps_every_good_batch() {
    for tail in [Tail::Zeros, Tail::Torn, Tail::BadCrc, Tail::TooLong] {
        for scan in [RecoveryScan::Full, RecoveryScan::FromLastIndexEntry] {
            recover_with(tail, scan);
        }
    }
}

#[test]
fn a_damaged_index_entry_costs_speed_never_a_wrong_lookup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_path = dir.path().to_path_buf();
    run_on_executor(async move {
        let config = config();
        let mut segment = Segment::create(&dir_path, Offset(0), &config)
            .await
            .expect("create");
        let written = append_all(&mut segment, &dense(12));
        let entries = segment.offset_index.entries().to_vec();
        assert!(entries.len() >= 3, "{entries:?}");
        segment.seal().await.expect("seal");
        drop(segment);

        // Point the first entry into the middle of its batch: still
        // increasing, so opening the index keeps it.
        let index_path = dir_path.join(segment_file_name(Offset(0), "index"));
        let damaged = (entries[0].position.0 + 7) as u32;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&index_path)
            .expect("open index");
        file.write_all_at(&damaged.to_be_bytes(), 4)
            .expect("damage index");
        drop(file);

        let (segment, _) = Segment::open(
            &dir_path,
            Offset(0),
            &config,
            false,
            RecoveryScan::FromLastIndexEntry,
        )
        .await
        .expect("reopen");
        assert_eq!(
            segment.offset_index.entries()[0].position.0,
            u64::from(damaged),
            "the damaged entry is still there to be tripped over"
        );
        for offset in 0..36 {
            let found = segment
                .locate(Offset(offset))
                .expect("locate")
                .expect("found");
            assert_eq!(found, written[(offset / 3) as usize].0, "offset {offset}");
        }
    });
}

#[test]
fn segment_file_names_round_trip_and_reject_lookalikes() {
    let name = segment_file_name(Offset(42), "log");
    assert_eq!(name, "00000000000000000042.log");
    assert_eq!(parse_segment_file_name(&name), Some(Offset(42)));
    for bad in [
        "0000000000000000042.log",
        "000000000000000000042.log",
        "0000000000000000004x.log",
        "00000000000000000042.index",
        "+0000000000000000042.log",
        "99999999999999999999.log",
    ] {
        assert_eq!(parse_segment_file_name(bad), None, "{bad}");
    }
    assert!(is_cleaned_file_name(&cleaned_file_name(
        Offset(42),
        "index"
    )));
    assert!(!is_cleaned_file_name("00000000000000000042.index"));
    assert!(!is_cleaned_file_name("x.log.cleaned"));
}
