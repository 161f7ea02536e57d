//! Torn and corrupt files, damaged from outside with `std::fs` in a copy of
//! a closed log — as a crash leaves it (no clean-shutdown marker) and, where
//! it makes sense, as damage after a clean close: every reopen must recover
//! exactly the good prefix, serve it, and keep appending from there.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use shards::batch::{Header, Record};
use shards::epoch_cache::LEADER_EPOCH_FILE;
use shards::log::{LogConfig, PartitionLog, RecoveryReport, CLEAN_SHUTDOWN_FILE};
use shards::testing::run_on_executor;
use shards::types::{Offset, TimestampMs};

use common::{
    batch_layout, fill, release_closed_files, segment_files, synced_config, Rng,
    PREALLOCATE_STEP_BYTES,
};
use shards::testing::read_all;

const TS_BASE: i64 = 1_700_000_000_000;
/// Batches written by every fixture.
const BATCHES: usize = 60;

fn record(i: u64) -> Record {
    Record {
        timestamp: TimestampMs(TS_BASE + 10 * i as i64),
        key: (i % 7 != 6).then(|| Bytes::from(format!("key-{i}"))),
        value: Some(Bytes::from(fill(i, 50 + (i as usize * 37) % 400))),
        headers: vec![Header {
            key: Bytes::from_static(b"n"),
            value: Some(Bytes::from(i.to_string())),
        }],
    }
}

/// Batch `j` holds `1 + j % 3` records; offsets are dense from 0.
fn batches() -> Vec<Vec<Record>> {
    let mut next = 0;
    (0..BATCHES)
        .map(|j| {
            let count = 1 + j as u64 % 3;
            let batch = (next..next + count).map(record).collect();
            next += count;
            batch
        })
        .collect()
}

/// How the damaged log was left before its reopen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    /// Closed cleanly, damaged afterwards (the clean-shutdown marker stays:
    /// recovery may trust the indexes).
    Clean,
    /// A crash: no clean-shutdown marker (recovery rescans the active
    /// segment). Torn tails come from crashes.
    Crash,
}

const SHUTDOWNS: [Shutdown; 2] = [Shutdown::Clean, Shutdown::Crash];

/// A closed log of [`BATCHES`] batches; each scenario damages a copy.
struct Fixture {
    root: tempfile::TempDir,
    pristine: PathBuf,
    segment_bytes: u64,
    index_interval_bytes: u64,
}

impl Fixture {
    fn new(segment_bytes: u64, index_interval_bytes: u64) -> Fixture {
        let root = tempfile::tempdir().expect("tempdir");
        let pristine = root.path().join("pristine");
        let log_config = synced_config(&pristine, segment_bytes, index_interval_bytes);
        run_on_executor(async move {
            let (log, _) = PartitionLog::open(log_config).await.expect("open");
            for batch in batches() {
                log.append_records(&batch).await.expect("append");
            }
            log.close().await.expect("close");
            release_closed_files().await;
        });
        Fixture {
            root,
            pristine,
            segment_bytes,
            index_interval_bytes,
        }
    }

    /// A fresh copy of the pristine log to damage.
    fn copy(&self, name: &str, shutdown: Shutdown) -> PathBuf {
        let dir = self.root.path().join(format!("{name}-{shutdown:?}"));
        std::fs::create_dir(&dir).expect("create copy");
        for entry in std::fs::read_dir(&self.pristine).expect("list") {
            let from = entry.expect("entry").path();
            let to = dir.join(from.file_name().expect("file name"));
            std::fs::copy(&from, &to).expect("copy file");
        }
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        assert!(
            marker.exists(),
            "a clean close leaves {CLEAN_SHUTDOWN_FILE}"
        );
        if shutdown == Shutdown::Crash {
            std::fs::remove_file(marker).expect("remove the clean-shutdown marker");
        }
        dir
    }

    fn config(&self, dir: &Path) -> LogConfig {
        synced_config(dir, self.segment_bytes, self.index_interval_bytes)
    }
}

/// Offset at which batch `j` starts.
fn batch_base(j: usize) -> u64 {
    batches()[..j].iter().map(|b| b.len() as u64).sum()
}

/// `(position, len)` of every batch in a segment file.
fn layout(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).expect("read segment");
    batch_layout(&bytes)
        .into_iter()
        .map(|(position, len, _)| (position, len))
        .collect()
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().expect("a segment").1
}

fn write_at(path: &Path, bytes: &[u8], position: usize) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for damage");
    file.write_all_at(bytes, position as u64).expect("damage");
}

fn xor_at(path: &Path, position: usize, len: usize) {
    let file = std::fs::File::open(path).expect("open");
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, position as u64)
        .expect("read");
    for b in &mut bytes {
        *b ^= 0xA5;
    }
    write_at(path, &bytes, position);
}

fn set_len(path: &Path, len: usize) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for truncate");
    file.set_len(len as u64).expect("truncate");
}

/// Reopens a damaged log and checks it holds exactly the first
/// `good_batches` batches: served by sequential and random reads and by
/// `offset_for_timestamp`, extended by a new append, and clean on the
/// reopen after that. Returns the first reopen's report.
fn expect_recovered(config: LogConfig, good_batches: usize) -> RecoveryReport {
    run_on_executor(async move {
        let all = batches();
        let good: Vec<Record> = all[..good_batches].iter().flatten().cloned().collect();
        let end = good.len() as u64;
        let (log, report) = PartitionLog::open(config.clone()).await.expect("reopen");
        assert_eq!(report.log_end, Offset(end), "{report:?}");
        assert_eq!(log.high_watermark(), Offset(end));
        check_contents(&log, &good).await;
        let extra = record(10_000);
        let appended = log
            .append_records(std::slice::from_ref(&extra))
            .await
            .expect("append after recovery");
        assert_eq!(appended.base_offset, Offset(end));
        log.close().await.expect("close");

        let (log, again) = PartitionLog::open(config).await.expect("second reopen");
        assert_eq!(again.log_end, Offset(end + 1));
        assert!(!again.mid_log_corruption, "{again:?}");
        assert!(
            again.repaired.iter().all(|(_, r)| r.truncated_bytes == 0),
            "recovery did not stick: {again:?}"
        );
        let mut expected = good;
        expected.push(extra);
        check_contents(&log, &expected).await;
        log.close().await.expect("close");
        release_closed_files().await;
        report
    })
}

async fn check_contents(log: &PartitionLog, expected: &[Record]) {
    let end = expected.len() as u64;
    for max_bytes in [1, 4096, 1 << 20] {
        let read: Vec<_> = read_all(log, max_bytes)
            .await
            .into_iter()
            .flat_map(|(_, records)| records)
            .collect();
        assert_eq!(read.len(), expected.len(), "max_bytes {max_bytes}");
        for (i, (got, want)) in read.iter().zip(expected).enumerate() {
            assert_eq!(got.offset, Offset(i as u64));
            assert_eq!(got.timestamp, want.timestamp, "offset {i}");
            assert_eq!(got.key, want.key, "offset {i}");
            assert_eq!(got.value, want.value, "offset {i}");
            assert_eq!(got.headers, want.headers, "offset {i}");
        }
    }
    // Every offset found through the index, and every timestamp.
    for offset in 0..end {
        let slice = log
            .read(Offset(offset), 1)
            .expect("read")
            .expect("committed data");
        let bytes = slice.read_bytes().await.expect("read bytes");
        let batches = shards::testing::decode_all(&bytes);
        assert_eq!(batches.len(), 1);
        let (header, _) = &batches[0];
        assert!(header.base_offset.0 <= offset && offset <= header.last_offset().0);
    }
    assert!(log.read(Offset(end), 1).expect("read at end").is_none());
    for (i, want) in expected.iter().enumerate() {
        let found = log
            .offset_for_timestamp(want.timestamp)
            .await
            .expect("offset_for_timestamp");
        let first = expected
            .iter()
            .position(|r| r.timestamp >= want.timestamp)
            .map(|o| Offset(o as u64));
        assert_eq!(found, first, "timestamp of offset {i}");
    }
}

fn truncated_bytes(report: &RecoveryReport) -> u64 {
    report.repaired.iter().map(|(_, r)| r.truncated_bytes).sum()
}

// ----------------------------------------------------------- the active segment

/// One active segment, sparse index entries (the last ones point into the
/// tail, so recovery has to drop stale entries too).
fn single_segment_fixture() -> Fixture {
    Fixture::new(1 << 20, 4096)
}

#[test]
fn a_active_segment_cut_mid_batch_recovers_to_the_last_whole_batch() {
    let fixture = single_segment_fixture();
    let batches = layout(&last_segment(&fixture.pristine));
    assert_eq!(batches.len(), BATCHES);
    let (last_position, last_len) = batches[BATCHES - 1];
    let (previous_position, previous_len) = batches[BATCHES - 2];
    // (cut position, batches that survive)
    let cuts = [
        (last_position, BATCHES - 1),
        (last_position + 1, BATCHES - 1),
        (last_position + 11, BATCHES - 1),
        (last_position + 12, BATCHES - 1),
        (last_position + 20, BATCHES - 1),
        (last_position + 61, BATCHES - 1),
        (last_position + last_len / 2, BATCHES - 1),
        (last_position + last_len - 1, BATCHES - 1),
        (previous_position + previous_len / 2, BATCHES - 2),
        (batches[BATCHES / 2].0 + 30, BATCHES / 2),
        (7, 0),
    ];
    for (i, &(cut, good)) in cuts.iter().enumerate() {
        let dir = fixture.copy(&format!("cut-{i}"), Shutdown::Crash);
        let segment = last_segment(&dir);
        set_len(&segment, cut);
        let torn = cut - batches.get(good).map_or(cut, |b| b.0);
        let report = expect_recovered(fixture.config(&dir), good);
        assert!(!report.mid_log_corruption);
        assert!(
            truncated_bytes(&report) <= torn as u64,
            "cut at {cut}: {report:?}"
        );
        // The file is usable again: preallocated, whole batches, then zeros.
        assert_eq!(layout(&segment).len(), good + 1);
    }
}

#[test]
fn b_garbled_last_bytes_are_cut_off() {
    let fixture = single_segment_fixture();
    let batches = layout(&last_segment(&fixture.pristine));
    let (last_position, last_len) = batches[BATCHES - 1];
    let last_end = last_position + last_len;
    // (first garbled byte, garbled length)
    let damage = [
        (last_end - 1, 1),
        (last_end - 4, 4),
        (last_end - 20, 20),
        (last_position + 8, 4),  // batchLength
        (last_position + 16, 1), // magic
        (last_position + 17, 4), // crc
        (last_position + 21, 2), // attributes
        (last_position + 57, 4), // recordsCount
    ];
    for (i, &(at, len)) in damage.iter().enumerate() {
        for shutdown in SHUTDOWNS {
            let dir = fixture.copy(&format!("garble-{i}"), shutdown);
            xor_at(&last_segment(&dir), at, len);
            let report = expect_recovered(fixture.config(&dir), BATCHES - 1);
            assert!(!report.mid_log_corruption);
            assert!(
                truncated_bytes(&report) > 0,
                "garbled {at}+{len}, {shutdown:?}: {report:?}"
            );
        }
    }
}

#[test]
fn c_garbage_after_the_last_batch_is_cut_off() {
    let fixture = single_segment_fixture();
    let batches = layout(&last_segment(&fixture.pristine));
    let (last_position, last_len) = batches[BATCHES - 1];
    let end = last_position + last_len;
    let segment_bytes = std::fs::read(last_segment(&fixture.pristine)).expect("read");
    let last_batch = segment_bytes[last_position..end].to_vec();
    let mut rng = Rng::new(7);
    let random: Vec<u8> = (0..300).map(|_| rng.next_u64() as u8 | 1).collect();
    // A plausible header: offset = next, length 1000, then noise.
    let mut plausible = Vec::new();
    plausible.extend_from_slice(&batch_base(BATCHES).to_be_bytes());
    plausible.extend_from_slice(&1000i32.to_be_bytes());
    plausible.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 2]);
    plausible.extend_from_slice(&random[..200]);
    // An absurd length.
    let mut huge = vec![0u8; 8];
    huge.extend_from_slice(&i32::MAX.to_be_bytes());
    huge.extend_from_slice(&random[..40]);
    // Right after the last batch: every scan stops there, whatever the
    // shutdown, and reports what it cut.
    let garbage: [(&str, Vec<u8>); 4] = [
        ("random", random.clone()),
        ("plausible header", plausible),
        ("huge length", huge),
        // A valid batch whose offsets go backwards (a stale duplicate).
        ("duplicate of the last batch", last_batch),
    ];
    for (i, (what, bytes)) in garbage.iter().enumerate() {
        for shutdown in SHUTDOWNS {
            let dir = fixture.copy(&format!("garbage-{i}"), shutdown);
            write_at(&last_segment(&dir), bytes, end);
            let report = expect_recovered(fixture.config(&dir), BATCHES);
            assert!(!report.mid_log_corruption, "{what}");
            assert!(
                truncated_bytes(&report) > 0,
                "{what}, {shutdown:?}: {report:?}"
            );
            if i == 0 {
                assert_eq!(truncated_bytes(&report), random.len() as u64, "{what}");
            }
        }
    }
    // Beyond zeros (a torn write whose later page reached the disk, or
    // garbage past the preallocated size): after a crash the whole tail is
    // cleared, so the next append can never end next to stale bytes
    // (`expect_recovered` appends and checks that the second reopen finds
    // nothing to cut). A clean close leaves only zeros there, so this is
    // checked after a crash only.
    let mut zeros_then_garbage = vec![0u8; 64];
    zeros_then_garbage.extend_from_slice(&random[..100]);
    let dir = fixture.copy("zeros-then-garbage", Shutdown::Crash);
    write_at(&last_segment(&dir), &zeros_then_garbage, end);
    let report = expect_recovered(fixture.config(&dir), BATCHES);
    assert!(!report.mid_log_corruption, "{report:?}");
    let dir = fixture.copy("garbage-past-preallocation", Shutdown::Crash);
    let segment = last_segment(&dir);
    let file_len = std::fs::metadata(&segment).expect("stat").len() as usize;
    write_at(&segment, &random, file_len);
    let report = expect_recovered(fixture.config(&dir), BATCHES);
    assert!(!report.mid_log_corruption, "{report:?}");
}

/// A crash in the middle of extending the active segment's preallocation,
/// for a batch that crosses a step boundary: whatever of the extension and
/// of the batch reached the disk, recovery keeps exactly the batches before
/// it, gives the segment one step past its end again, and appends go on.
#[test]
fn h_a_crash_during_a_preallocation_extension_keeps_the_batches_before_it() {
    let fixture = single_segment_fixture();
    let pristine = last_segment(&fixture.pristine);
    let batches = layout(&pristine);
    let step = PREALLOCATE_STEP_BYTES as usize;
    let pristine_len = std::fs::metadata(&pristine).expect("stat").len() as usize;
    assert_eq!(pristine_len % step, 0, "the fixture's segment is in steps");
    assert!(
        pristine_len < fixture.segment_bytes as usize,
        "not preallocated whole"
    );
    // Batches that cross a step boundary: the append that wrote each one
    // extended the preallocation first.
    let crossing: Vec<(usize, usize, usize)> = batches
        .iter()
        .enumerate()
        .filter(|(_, (position, len))| position / step != (position + len - 1) / step)
        .map(|(j, (position, len))| (j, *position, *len))
        .collect();
    assert!(crossing.len() >= 3, "{crossing:?}");
    for &(j, position, len) in crossing.iter().take(4) {
        let boundary = (position / step + 1) * step;
        // (what reached the disk, file length, bytes zeroed from)
        let states: [(&str, usize, Option<usize>); 5] = [
            // The size change of the extension was lost: the batch is cut
            // at the old end of the file.
            ("extension lost", boundary, None),
            // Only part of the extension reached the disk.
            (
                "extension partial",
                boundary + (position + len - boundary) / 2,
                None,
            ),
            // The extension reached the disk, the batch's pages past the
            // old end did not (they read as zeros).
            ("batch torn at the old end", boundary + step, Some(boundary)),
            // The extension reached the disk, none of the batch did.
            ("batch lost", boundary + step, Some(position)),
            // Extended twice (the next append's extension too), both batches
            // lost: zeros over more than a step.
            (
                "two extensions, batches lost",
                boundary + 2 * step,
                Some(position),
            ),
        ];
        for (what, file_len, zero_from) in states {
            let dir = fixture.copy(&format!("extension-{j}-{what}"), Shutdown::Crash);
            let segment = last_segment(&dir);
            if let Some(from) = zero_from {
                set_len(&segment, from);
            }
            set_len(&segment, file_len);
            let report = expect_recovered(fixture.config(&dir), j);
            assert!(!report.mid_log_corruption, "batch {j}, {what}: {report:?}");
            assert_eq!(layout(&segment).len(), j + 1, "batch {j}, {what}");
            let len_now = std::fs::metadata(&segment).expect("stat").len() as usize;
            assert_eq!(len_now % step, 0, "batch {j}, {what}: length {len_now}");
        }
    }
}

fn zero_crc(path: &Path, batch_position: usize) {
    write_at(path, &[0, 0, 0, 0], batch_position + 17);
}

#[test]
fn d_zeroed_crc_in_the_middle_of_the_last_segment_ends_the_log_there() {
    // No index entry after the damaged batch: recovery scans all of it.
    let fixture = Fixture::new(1 << 20, 1 << 20);
    let batches = layout(&last_segment(&fixture.pristine));
    for victim in [BATCHES / 2, BATCHES - 3, 0] {
        for shutdown in SHUTDOWNS {
            let dir = fixture.copy(&format!("crc-{victim}"), shutdown);
            zero_crc(&last_segment(&dir), batches[victim].0);
            let report = expect_recovered(fixture.config(&dir), victim);
            assert!(!report.mid_log_corruption);
            let repaired = &report.repaired[0].1;
            assert!(repaired.truncated_bytes > 0, "{shutdown:?}: {report:?}");
            assert!(repaired.stop_reason.is_some(), "{shutdown:?}: {report:?}");
        }
    }
}

/// After a clean shutdown recovery scans the last segment only from its last
/// indexed position. After a crash (no `clean-shutdown` marker) an indexed,
/// intact later batch does not prove that the unsynced batches before it
/// reached the disk (the index is never fsynced), so the whole active
/// segment is checked. Here a CRC is zeroed in the middle of the last
/// segment, with index entries after it, in a log that did not close.
#[test]
fn d_zeroed_crc_before_the_last_index_entry_ends_the_log_there() {
    let fixture = Fixture::new(1 << 20, 512);
    let batches = layout(&last_segment(&fixture.pristine));
    let victim = BATCHES / 2;
    let dir = fixture.copy("crc-indexed", Shutdown::Crash);
    zero_crc(&last_segment(&dir), batches[victim].0);
    let report = expect_recovered(fixture.config(&dir), victim);
    assert!(truncated_bytes(&report) > 0, "{report:?}");
}

/// Where a batch's first record starts (after the 61-byte batch header).
const FIRST_RECORD_AT: usize = 61;

/// Found by the `segment_recovery` fuzz target: a batch whose CRC matches
/// but whose records do not parse (damage the CRC cannot see, or a batch
/// written that way) was kept by recovery and served to consumers, who
/// could not decode it. Recovery now checks every record of the batches it
/// scans.
#[test]
fn d_a_batch_with_a_matching_crc_but_broken_records_ends_the_log_there() {
    let fixture = Fixture::new(1 << 20, 1 << 20);
    let batches = layout(&last_segment(&fixture.pristine));
    for victim in [BATCHES / 2, BATCHES - 1] {
        let dir = fixture.copy(&format!("records-{victim}"), Shutdown::Crash);
        let segment = last_segment(&dir);
        let (position, len) = batches[victim];
        // The first record's length varint becomes -1 (zigzag 0x01).
        write_at(&segment, &[0x01], position + FIRST_RECORD_AT);
        let bytes = std::fs::read(&segment).expect("read segment");
        let crc = crc32c::crc32c(&bytes[position + ATTRIBUTES_AT..position + len]);
        write_at(&segment, &crc.to_be_bytes(), position + 17);
        let report = expect_recovered(fixture.config(&dir), victim);
        assert!(truncated_bytes(&report) > 0, "{report:?}");
    }
}

// ------------------------------------------------------------- sealed segments

#[test]
fn e_corruption_in_a_sealed_segment_cuts_the_log_there() {
    let fixture = Fixture::new(4096, 512);
    let segments = segment_files(&fixture.pristine);
    assert!(segments.len() >= 4, "{} segments", segments.len());
    for (case, seg) in [(0, 1), (1, segments.len() - 2), (2, 0)] {
        let dir = fixture.copy(&format!("sealed-{case}"), Shutdown::Crash);
        let (base, path) = &segment_files(&dir)[seg];
        let batches = layout(path);
        let (position, len) = *batches.last().expect("batches");
        xor_at(path, position + len - 10, 10);
        // Batches that survive: all before this one.
        let good = (0..BATCHES)
            .position(|j| batch_base(j) == *base)
            .expect("segment base at a batch")
            + batches.len()
            - 1;
        let report = expect_recovered(fixture.config(&dir), good);
        assert!(report.mid_log_corruption, "{report:?}");
        assert_eq!(report.log_end, Offset(batch_base(good)));
        // The later segments are gone, with their indexes.
        for entry in std::fs::read_dir(&dir).expect("list") {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.split('.').next().filter(|s| s.len() == 20) {
                let file_base: u64 = stem.parse().expect("segment file name");
                assert!(
                    file_base <= batch_base(good),
                    "{name} survived a cut at {good}"
                );
            }
        }
    }
}

/// Where a batch header keeps its attributes (after base offset, length,
/// leader epoch, magic and CRC).
const ATTRIBUTES_AT: usize = 21;

/// Damage the attributes of the batch at `position` so its header no longer
/// parses, and drop the leader-epoch checkpoint so that open must rebuild it
/// from every header (as after a lost or damaged checkpoint).
fn garble_header_and_lose_epoch_checkpoint(dir: &Path, segment: &Path, position: usize) {
    write_at(segment, &[0x7f, 0x7f], position + ATTRIBUTES_AT);
    std::fs::remove_file(dir.join(LEADER_EPOCH_FILE)).expect("remove the epoch checkpoint");
}

/// Found by the `segment_recovery` fuzz target: after a clean shutdown
/// recovery trusts the bytes before the last index entry, and a header there
/// that no longer parses made the epoch-cache rebuild fail the whole open.
/// Now the log is cut at that batch and reported as mid-log corruption.
#[test]
fn e_a_damaged_header_the_index_vouched_for_cuts_the_log_when_epochs_are_rebuilt() {
    let fixture = Fixture::new(1 << 20, 512);
    let batches = layout(&last_segment(&fixture.pristine));
    for victim in [1, BATCHES / 3, BATCHES / 2] {
        for shutdown in SHUTDOWNS {
            let dir = fixture.copy(&format!("header-{victim}"), shutdown);
            garble_header_and_lose_epoch_checkpoint(&dir, &last_segment(&dir), batches[victim].0);
            let report = expect_recovered(fixture.config(&dir), victim);
            assert!(report.epoch_cache_rebuilt, "{report:?}");
            if shutdown == Shutdown::Clean {
                // Synced and vouched for, then lost: the replica must re-fetch.
                assert!(report.mid_log_corruption, "{report:?}");
                assert!(report.needs_refetch());
            }
            assert!(
                dir.join(LEADER_EPOCH_FILE).exists(),
                "rebuilt checkpoint written back"
            );
        }
    }
}

#[test]
fn e_a_damaged_header_inside_a_sealed_segment_cuts_the_log_when_epochs_are_rebuilt() {
    let fixture = Fixture::new(4096, 512);
    let segments = segment_files(&fixture.pristine);
    assert!(segments.len() >= 4, "{} segments", segments.len());
    for shutdown in SHUTDOWNS {
        let dir = fixture.copy("sealed-header", shutdown);
        let (base, path) = &segment_files(&dir)[1];
        let index = std::fs::metadata(path.with_extension("index")).expect("index");
        assert!(
            index.len() > 0,
            "the damaged batch lies before an index entry"
        );
        garble_header_and_lose_epoch_checkpoint(&dir, path, 0);
        let good = (0..BATCHES)
            .position(|j| batch_base(j) == *base)
            .expect("segment base at a batch");
        let report = expect_recovered(fixture.config(&dir), good);
        assert!(report.mid_log_corruption, "{report:?}");
        assert_eq!(segment_files(&dir).len(), 2, "later segments removed");
    }
}

// ------------------------------------------------------------------ indexes

fn index_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        let is_index = path
            .extension()
            .is_some_and(|e| e == "index" || e == "timeindex");
        if is_index {
            let bytes = std::fs::read(&path).expect("read index");
            out.push((path, bytes));
        }
    }
    out.sort();
    out
}

/// Several segments with dense indexes, so lookups depend on them.
fn indexed_fixture() -> Fixture {
    Fixture::new(8192, 256)
}

fn rebuilt_like_the_originals(original: &[(PathBuf, Vec<u8>)], dir: &Path) {
    // The extra record of `expect_recovered` may add entries at the end of
    // the active segment's indexes; everything before must be identical.
    let rebuilt = index_files(dir);
    assert_eq!(rebuilt.len(), original.len());
    for ((path, want), (_, got)) in original.iter().zip(&rebuilt) {
        assert!(
            got.starts_with(want),
            "{} rebuilt differently ({} vs {} bytes)",
            path.display(),
            got.len(),
            want.len()
        );
    }
}

#[test]
fn f_deleted_indexes_are_rebuilt() {
    let fixture = indexed_fixture();
    let original = index_files(&fixture.pristine);
    assert!(segment_files(&fixture.pristine).len() >= 3);
    assert!(original.iter().any(|(_, bytes)| !bytes.is_empty()));
    for shutdown in SHUTDOWNS {
        let dir = fixture.copy("deleted", shutdown);
        for (path, _) in index_files(&dir) {
            std::fs::remove_file(path).expect("delete index");
        }
        let report = expect_recovered(fixture.config(&dir), BATCHES);
        assert!(!report.mid_log_corruption);
        assert_eq!(truncated_bytes(&report), 0);
        rebuilt_like_the_originals(&original, &dir);
    }
}

#[test]
fn g_garbage_in_the_offset_index_is_rebuilt() {
    let fixture = indexed_fixture();
    let original = index_files(&fixture.pristine);
    let mut rng = Rng::new(11);
    // (what, how to damage one `.index` file of `len` bytes)
    type Damage = fn(&mut Rng, &Path, usize);
    let damages: [(&str, Damage); 4] = [
        ("random bytes over the whole file", |rng, path, len| {
            let bytes: Vec<u8> = (0..len.max(64)).map(|_| rng.next_u64() as u8).collect();
            write_at(path, &bytes, 0);
        }),
        ("random bytes over the second half", |rng, path, len| {
            let bytes: Vec<u8> = (0..len / 2).map(|_| rng.next_u64() as u8).collect();
            write_at(path, &bytes, len - len / 2);
        }),
        ("a partial trailing entry", |_, path, len| {
            write_at(path, &[0xFF, 0xFF, 0xFF], len);
        }),
        ("positions shifted off batch starts", |_, path, len| {
            let file = std::fs::File::open(path).expect("open");
            let mut bytes = vec![0u8; len];
            file.read_exact_at(&mut bytes, 0).expect("read");
            for entry in bytes.chunks_exact_mut(8) {
                let position = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
                entry[4..].copy_from_slice(&(position + 3).to_be_bytes());
            }
            write_at(path, &bytes, 0);
        }),
    ];
    for (i, (what, damage)) in damages.iter().enumerate() {
        for shutdown in SHUTDOWNS {
            let dir = fixture.copy(&format!("index-garbage-{i}"), shutdown);
            for (path, bytes) in index_files(&dir) {
                if path.extension().is_some_and(|e| e == "index") {
                    damage(&mut rng, &path, bytes.len());
                }
            }
            let report = expect_recovered(fixture.config(&dir), BATCHES);
            assert!(!report.mid_log_corruption, "{what}");
            assert_eq!(truncated_bytes(&report), 0, "{what}: {report:?}");
            rebuilt_like_the_originals(&original, &dir);
        }
    }
}

/// Recovery after a clean shutdown checks only the last offset-index entry;
/// lookups check the entry they use and fall back to a scan from the
/// segment start when it does not point at its batch. One wrong entry in the
/// middle (pointing 3 bytes into a batch, still increasing) with an intact
/// last entry: every read must still be right (expect_recovered reads every
/// offset), and after a crash the active segment's index is rebuilt.
#[test]
fn g_a_wrong_index_entry_before_a_good_last_one_is_not_trusted() {
    let fixture = indexed_fixture();
    let original = index_files(&fixture.pristine);
    let dir = fixture.copy("index-middle-entry", Shutdown::Clean);
    let mut damaged = 0;
    for (path, bytes) in index_files(&dir) {
        let entries = bytes.len() / 8;
        if path.extension().is_some_and(|e| e == "index") && entries >= 3 {
            let at = (entries / 2) * 8;
            let position =
                u32::from_be_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
            write_at(&path, &(position + 3).to_be_bytes(), at + 4);
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no index with 3 entries to damage");
    let report = expect_recovered(fixture.config(&dir), BATCHES);
    assert!(!report.mid_log_corruption);
    // After a crash the active segment's index is rebuilt like the original.
    let dir2 = fixture.copy("index-middle-entry", Shutdown::Crash);
    for (path, bytes) in index_files(&dir2) {
        let entries = bytes.len() / 8;
        if path.extension().is_some_and(|e| e == "index") && entries >= 3 {
            let at = (entries / 2) * 8;
            write_at(&path, &[0xFF, 0xFF, 0xFF, 0xF0], at + 4);
        }
    }
    expect_recovered(fixture.config(&dir2), BATCHES);
    let active_original = original.last().expect("indexes");
    let active_rebuilt = index_files(&dir2).into_iter().last().expect("indexes");
    assert!(
        active_rebuilt.1.starts_with(&active_original.1),
        "active index not rebuilt"
    );
}
