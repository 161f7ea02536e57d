//! Segment recovery on arbitrary files: the input becomes a partition
//! directory (a segment file, optionally an offset index, a time index and a
//! clean-shutdown marker) and `PartitionLog::open` must turn it into a
//! consistent log.
//!
//! Properties: open never panics and succeeds (garbage is a torn tail to cut,
//! not a reason to refuse to start); afterwards the watermarks agree
//! (`log_start ≤ hw = stable = log_end`), every readable batch validates
//! with increasing offsets below `log_end`, the next append gets offset
//! `log_end`, and a reopen finds exactly the same log plus that append.
//!
//! Input layout: `flags | index_entries | time_entries | index bytes | time
//! index bytes | segment bytes`. Flag bit 0 patches correct CRCs into every
//! batch found by walking the length fields (so the fuzzer gets past the
//! checksum); bit 1 writes the clean-shutdown marker (recovery then trusts
//! the indexes and scans only from their last entry).
//!
//! One glommio executor lives for the whole run on its own thread; inputs go
//! to it over a channel (an executor per input would dominate the cost).
//!
//! glommio 0.9 can park that executor for good with a task still runnable:
//! when its 100 ms preempt timer fires between being armed and the
//! scheduler's first preemption check (the thread descheduled that long, as
//! on a loaded machine), `run_task_queues` reports "nothing ran", the loop
//! parks, and without a timer or I/O pending nothing wakes it (upstream fix:
//! glommio/glommio#53). A 150 ms stop of the executor thread at that point
//! reproduces it; one 600 s run hung that way after 17,014 inputs. (A
//! heartbeat timer does not help: a shorter one has fired too and its task
//! is the runnable one, so no timer is left to end the park.) This executor
//! has one task queue and nothing to preempt for, so its preempt timer is
//! set to an hour; a per-input watchdog turns any hang into a failure
//! naming the step it was in.
#![no_main]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shards::batch::{decode_batch, BatchIter, Record};
use shards::constants::IO_MEMORY_BYTES_DEFAULT;
use shards::log::{LogConfig, PartitionLog, CLEAN_SHUTDOWN_FILE};
use shards::types::{Offset, TimestampMs};

const CRC_AT: usize = 17;
const CRC_COVERED_FROM: usize = 21;
const LENGTH_AT: usize = 8;
const PREFIX_BYTES: usize = 12;
/// Small segments keep each run fast; the input is the first segment.
const SEGMENT_BYTES: u64 = 64 * 1024;
/// Far beyond any deschedule (see the module comment).
const PREEMPT_TIMER: Duration = Duration::from_secs(3600);
/// An input takes milliseconds; this long means a hang.
const INPUT_DEADLINE: Duration = Duration::from_secs(60);

/// Steps of `check`, for the watchdog's message.
const STEPS: [&str; 9] = [
    "receiving the input (the executor never got to the worker task)",
    "writing the partition directory",
    "open",
    "reading the recovered log",
    "append_records",
    "close",
    "reopen",
    "reading the reopened log",
    "second close",
];
static STEP: AtomicUsize = AtomicUsize::new(0);

fn step(index: usize) {
    STEP.store(index, Ordering::Relaxed);
}

type Job = (Vec<u8>, mpsc::Sender<()>);

fn worker() -> &'static Mutex<mpsc::Sender<Job>> {
    static WORKER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    WORKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(IO_MEMORY_BYTES_DEFAULT)
                .preempt_timer(PREEMPT_TIMER)
                .make()
                .expect("glommio executor");
            executor.run(async move {
                // Blocking on the channel is fine: between inputs this
                // executor has nothing else to run.
                while let Ok((input, done)) = rx.recv() {
                    check(&input).await;
                    step(0);
                    let _ = done.send(());
                }
            });
        });
        Mutex::new(tx)
    })
}

fuzz_target!(|data: &[u8]| {
    let (done_tx, done_rx) = mpsc::channel();
    worker()
        .lock()
        .expect("worker")
        .send((data.to_vec(), done_tx))
        .expect("worker alive");
    // A panic on the worker aborts the process (libFuzzer's panic hook), so
    // this only returns once the input was fully checked.
    match done_rx.recv_timeout(INPUT_DEADLINE) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "input not checked after {INPUT_DEADLINE:?}: stuck in step `{}`",
            STEPS[STEP.load(Ordering::Relaxed)]
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("worker gone"),
    }
});

async fn check(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&index_entries, rest)) = rest.split_first() else {
        return;
    };
    let Some((&time_entries, rest)) = rest.split_first() else {
        return;
    };
    let (index, rest) = rest.split_at((usize::from(index_entries) * 8).min(rest.len()));
    let (time_index, segment) = rest.split_at((usize::from(time_entries) * 12).min(rest.len()));
    let mut segment = segment.to_vec();
    if flags & 1 == 1 {
        patch_crcs(&mut segment);
    }
    step(1);
    let temp = scratch_dir();
    let dir = temp.path().join("p");
    std::fs::create_dir(&dir).expect("mkdir");
    let name = format!("{:020}", 0);
    std::fs::write(dir.join(format!("{name}.log")), &segment).expect("segment");
    if index_entries > 0 {
        std::fs::write(dir.join(format!("{name}.index")), index).expect("index");
    }
    if time_entries > 0 {
        std::fs::write(dir.join(format!("{name}.timeindex")), time_index).expect("timeindex");
    }
    if flags & 2 == 2 {
        std::fs::write(dir.join(CLEAN_SHUTDOWN_FILE), b"").expect("marker");
    }

    // After a crash (no marker) every batch is checked, so everything served
    // must be valid. After a clean shutdown recovery trusts the bytes before
    // the last index entry (they were checked when written): a fuzzed file
    // may then serve garbage there, which readers reject as corrupt.
    let strict = flags & 2 == 0;
    step(2);
    let (log, report) = PartitionLog::open(config(&dir)).await.expect("open must recover");
    step(3);
    let before = consistent(&log, strict).await;
    assert_eq!(report.log_end, log.log_end_offset());
    step(4);
    let appended = log
        .append_records(&[Record {
            timestamp: TimestampMs(42),
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"after recovery")),
            headers: Vec::new(),
        }])
        .await
        .expect("append after recovery");
    assert_eq!(appended.base_offset, before.log_end, "the next offset is log_end");
    step(5);
    log.close().await.expect("close");

    step(6);
    let (log, _) = PartitionLog::open(config(&dir)).await.expect("reopen");
    step(7);
    let after = consistent(&log, strict).await;
    assert_eq!(after.log_end, before.log_end.next());
    if strict {
        assert_eq!(after.offsets.len(), before.offsets.len() + 1);
        assert_eq!(after.offsets[..before.offsets.len()], before.offsets[..]);
        assert_eq!(after.offsets.last(), Some(&before.log_end));
    }
    step(8);
    log.close().await.expect("close");
}

/// On tmpfs when there is one: every input opens, syncs and closes a log
/// twice, and on a real disk those fsyncs, not the code under test, would
/// set the pace (about 10 inputs a second instead of hundreds).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

fn config(dir: &Path) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes = SEGMENT_BYTES;
    config.index_interval_bytes = 256;
    config
}

struct Snapshot {
    log_end: Offset,
    offsets: Vec<Offset>,
}

/// Checks the watermarks and reads the whole log back (`strict`: every
/// served batch must be valid; otherwise reading stops at the first bad one).
async fn consistent(log: &PartitionLog, strict: bool) -> Snapshot {
    let (start, hw, stable, end) = (
        log.log_start_offset(),
        log.high_watermark(),
        log.stable_offset(),
        log.log_end_offset(),
    );
    assert!(start <= hw && hw == stable && stable == end, "{start} {hw} {stable} {end}");
    let mut offsets = Vec::new();
    let mut next = start;
    let mut reads = 0;
    'reading: loop {
        let slice = match log.read(next, 16 * 1024) {
            Ok(Some(slice)) => slice,
            Ok(None) => break,
            Err(err) if !strict => {
                std::hint::black_box(err);
                break;
            }
            Err(err) => panic!("read at {next}: {err}"),
        };
        reads += 1;
        assert!(reads < 100_000, "read loop does not advance");
        let bytes = slice.read_bytes().await.expect("read bytes");
        let mut advanced = false;
        for item in BatchIter::new(&bytes) {
            let decoded = item.map_err(|e| e.to_string()).and_then(|(_, raw)| {
                decode_batch(&Bytes::copy_from_slice(raw)).map_err(|e| e.to_string())
            });
            let (header, records) = match decoded {
                Ok(decoded) => decoded,
                Err(_) if !strict => break 'reading,
                Err(err) => panic!("served an invalid batch at {next}: {err}"),
            };
            if strict {
                assert!(header.last_offset() < end, "batch past log_end");
            }
            for record in records {
                if record.offset >= next {
                    if strict {
                        assert!(offsets.last().is_none_or(|last| record.offset > *last));
                    }
                    offsets.push(record.offset);
                }
            }
            if header.next_offset() > next {
                next = header.next_offset();
                advanced = true;
            }
        }
        if !advanced && !strict {
            break;
        }
        assert!(advanced, "a read must make progress");
    }
    let _ = log.offset_for_timestamp(TimestampMs(0)).await;
    Snapshot { log_end: end, offsets }
}

/// Walks the length fields from the start and writes a correct CRC into each
/// batch that fits, so mutations reach the checks after the checksum.
fn patch_crcs(segment: &mut [u8]) {
    let mut position = 0usize;
    while position + PREFIX_BYTES <= segment.len() {
        let length = i32::from_be_bytes(
            segment[position + LENGTH_AT..position + PREFIX_BYTES]
                .try_into()
                .expect("4 bytes"),
        );
        let Ok(length) = usize::try_from(length) else {
            return;
        };
        let end = position + PREFIX_BYTES + length;
        if PREFIX_BYTES + length <= CRC_COVERED_FROM || end > segment.len() {
            return;
        }
        let crc = crc32c::crc32c(&segment[position + CRC_COVERED_FROM..end]);
        segment[position + CRC_AT..position + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        position = end;
    }
}

