//! Storage bench (storage-engine acceptance item 4): the partition log's
//! write and read paths against raw syscalls on the same disk, in one run.
//!
//! ```text
//! cargo bench -p shards --bench log
//! ```
//!
//! The VM's page cache and disk are erratic (docs/design.md §14), so every engine
//! number is printed next to a raw baseline measured in the same run, on the
//! same file system, interleaved with it: an append row alternates short
//! engine and raw slices on a log and a raw file that both stay open for the
//! whole row, and prints the ratio of the totals and the spread of the
//! per-slice ratios. The ratio is what to quote.
//!
//! * **append** (`SyncPolicy::EveryBatch`): P producers, each appending one
//!   pre-encoded batch at a time and awaiting its durability. Raw baseline: a
//!   loop of P `pwrite`s of the same size into a `fallocate`d file and one
//!   `fdatasync` — for P = 1 the same sync pattern as one sequential
//!   producer, for P > 1 what perfect group commit could reach. Both sides
//!   copy the batch into a fresh `Vec` before each write (a server gets each
//!   batch in a new buffer; `append` takes ownership of one).
//! * **append, no sync** (`SyncPolicy::Never`, diagnostic): the engine's CPU
//!   path against a bare `pwrite` loop, both capped at `SLUICE_BENCH_BYTES`.
//! * **read**: a log filled with `SLUICE_BENCH_BYTES`, read end to end with
//!   `PartitionLog::read(max_bytes = 1 MiB)` + `ReadSlice::read_bytes`, and
//!   with `read()` alone (the lookup, no bytes copied), against sequential
//!   1 MiB `pread`s of the same segment files; page cache warm. Also shows
//!   how long reopening the filled log (recovery) took.
//!
//! Settings (environment):
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `SLUICE_BENCH_DIR` | `$CARGO_TARGET_TMPDIR` | where the scratch directory goes (must not be tmpfs) |
//! | `SLUICE_BENCH_SECONDS` | 3 | measured seconds per side per append row |
//! | `SLUICE_BENCH_SLICE_MS` | 250 | append rows alternate engine and raw slices this long |
//! | `SLUICE_BENCH_SIZES` | `1k,64k` | batch sizes (bytes; `k`/`m` suffixes) |
//! | `SLUICE_BENCH_PRODUCERS` | `1,16,64` | concurrent producers per append row |
//! | `SLUICE_BENCH_BYTES` | `256m` | read fill size, and the cap of the no-sync rows |
//! | `SLUICE_BENCH_READ_PASSES` | 5 | timed read passes per side |
//! | `SLUICE_BENCH_SEGMENT_BYTES` | 1 GiB | segment size (engine and raw files) |
//! | `SLUICE_BENCH_ONLY` | `append,nosync,read` | sections to run, comma-separated; also (not run by default) `uring`: the raw loop with its `fdatasync` through glommio's io_uring, and `cpu`: the CPU cost per batch of the checks `append` runs |
//! | `SLUICE_BENCH_ROLLS` | 0 | 1: let the log (and raw file) roll segments during append rows |
//! | `SLUICE_BENCH_RAW_CHECKS` | `none` | what-if: the raw loop also runs `one` CRC check per batch, or the `engine`'s checks (2 × `validate_batch` + `decode_batch`) |
//!
//! By default an append row switches both sides to fresh files between
//! slices before either could fill a segment, so no slice measures a roll:
//! the steady-state write path is what is compared.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use shards::batch::{decode_batch, encode_batch, encoded_len, validate_batch, Header, Record};
use shards::constants::SEGMENT_BYTES_DEFAULT;
use shards::log::{LogConfig, PartitionLog, SyncPolicy};
use shards::testing::run_on_executor;
use shards::types::{Offset, TimestampMs};

const READ_MAX_BYTES: u64 = 1 << 20;
const RECORD_BYTES: usize = 1024;

struct Settings {
    base_dir: PathBuf,
    seconds: f64,
    slice_ms: u64,
    sizes: Vec<usize>,
    producers: Vec<usize>,
    bytes: u64,
    read_passes: usize,
    segment_bytes: u64,
    only: Vec<String>,
    rolls: bool,
    raw_checks: RawChecks,
}

/// Batch checks the raw loop runs before each write (a what-if knob).
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawChecks {
    /// None: the raw ceiling.
    None,
    /// One `validate_batch` (CRC) pass: what `append` would cost with the
    /// checks done once and without decoding records.
    One,
    /// What `append` runs today: `validate_batch` twice and `decode_batch`.
    Engine,
}

impl Settings {
    fn from_env() -> Settings {
        let base_dir = std::env::var_os("SLUICE_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        Settings {
            base_dir,
            seconds: env_parse("SLUICE_BENCH_SECONDS", 3.0),
            slice_ms: env_parse::<u64>("SLUICE_BENCH_SLICE_MS", 250).max(1),
            sizes: env_list("SLUICE_BENCH_SIZES", "1k,64k"),
            producers: env_list("SLUICE_BENCH_PRODUCERS", "1,16,64"),
            bytes: env_list("SLUICE_BENCH_BYTES", "256m")[0] as u64,
            read_passes: env_parse::<usize>("SLUICE_BENCH_READ_PASSES", 5).max(1),
            segment_bytes: env_list("SLUICE_BENCH_SEGMENT_BYTES", "0")[0] as u64,
            rolls: env_parse::<u8>("SLUICE_BENCH_ROLLS", 0) != 0,
            raw_checks: match std::env::var("SLUICE_BENCH_RAW_CHECKS").as_deref() {
                Ok("one") => RawChecks::One,
                Ok("engine") => RawChecks::Engine,
                Ok("none") | Err(_) => RawChecks::None,
                Ok(other) => panic!("SLUICE_BENCH_RAW_CHECKS={other:?}: none, one or engine"),
            },
            only: std::env::var("SLUICE_BENCH_ONLY")
                .unwrap_or_else(|_| "append,nosync,read".into())
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
        }
    }

    fn runs(&self, part: &str) -> bool {
        self.only.iter().any(|p| p == part)
    }

    fn segment_bytes(&self) -> u64 {
        if self.segment_bytes == 0 {
            SEGMENT_BYTES_DEFAULT
        } else {
            self.segment_bytes
        }
    }

    /// Measured time of one slice of an append row, per side.
    fn slice(&self) -> Duration {
        Duration::from_millis(self.slice_ms).min(Duration::from_secs_f64(self.seconds))
    }

    /// Slices per side in an append row.
    fn rounds(&self) -> usize {
        ((self.seconds / self.slice().as_secs_f64()).round() as usize).max(1)
    }
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// Comma-separated sizes with optional `k`/`m`/`g` (binary) suffixes.
fn env_list(name: &str, default: &str) -> Vec<usize> {
    let raw = std::env::var(name).unwrap_or_else(|_| default.to_string());
    let list: Vec<usize> = raw
        .split(',')
        .map(|item| {
            let item = item.trim().to_ascii_lowercase();
            let item = item.trim_end_matches("ib").trim_end_matches('b');
            let (digits, shift) = match item.chars().last() {
                Some('k') => (&item[..item.len() - 1], 10),
                Some('m') => (&item[..item.len() - 1], 20),
                Some('g') => (&item[..item.len() - 1], 30),
                _ => (item, 0),
            };
            let n: usize = digits
                .parse()
                .unwrap_or_else(|_| panic!("{name}: {item:?} is not a size"));
            n << shift
        })
        .collect();
    assert!(!list.is_empty(), "{name} is empty");
    list
}

fn main() {
    let settings = Settings::from_env();
    std::fs::create_dir_all(&settings.base_dir).expect("create bench base dir");
    let (fs_type, device) = file_system_of(&settings.base_dir);
    if fs_type == "tmpfs" || fs_type == "ramfs" {
        eprintln!(
            "{} is on {fs_type}: disk numbers would be meaningless; set SLUICE_BENCH_DIR to a directory on a real disk",
            settings.base_dir.display()
        );
        std::process::exit(2);
    }
    let scratch = tempfile::Builder::new()
        .prefix("sluice-log-bench-")
        .tempdir_in(&settings.base_dir)
        .expect("create scratch dir");
    println!(
        "Sluice storage bench: {} ({fs_type} on {device}), segment {}, {:.1} s per side per append row in {} alternating slices of {} ms",
        scratch.path().display(),
        human_bytes(settings.segment_bytes()),
        settings.seconds,
        settings.rounds(),
        settings.slice().as_millis(),
    );
    let dir = scratch.path().to_path_buf();
    run_on_executor(async move {
        if settings.runs("append") {
            append_section(&settings, &dir, SyncPolicy::EveryBatch, Left::Engine).await;
        }
        if settings.runs("nosync") {
            append_section(&settings, &dir, SyncPolicy::Never, Left::Engine).await;
        }
        if settings.runs("uring") {
            append_section(&settings, &dir, SyncPolicy::EveryBatch, Left::RawUring).await;
        }
        if settings.runs("read") {
            read_section(&settings, &dir).await;
        }
        if settings.runs("cpu") {
            cpu_section(&settings);
        }
    });
    drop(scratch);
}

/// File system type and source of the mount holding `path`, from
/// `/proc/self/mountinfo` (longest matching mount point).
fn file_system_of(path: &Path) -> (String, String) {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fs_type), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        if path.starts_with(mount_point) && best.as_ref().is_none_or(|b| mount_point.len() >= b.0) {
            best = Some((mount_point.len(), fs_type.to_string(), source.to_string()));
        }
    }
    best.map_or(("unknown".into(), "unknown".into()), |(_, t, s)| (t, s))
}

// ---------------------------------------------------------------------------
// Batches

/// One pre-encoded batch of `size` bytes (as close as varints allow) made of
/// ~1 KiB records, each with a 16-byte key and one header, as a producer
/// would send it.
struct Template {
    bytes: Vec<u8>,
    records: u64,
}

fn template(size: usize) -> Template {
    let count = (size / RECORD_BYTES).max(1);
    let now = TimestampMs::now();
    let record = |i: usize, value_len: usize| Record {
        timestamp: now,
        key: Some(Bytes::from(format!("key-{i:012}"))),
        value: Some(Bytes::from(vec![(i % 251) as u8; value_len])),
        headers: vec![Header {
            key: Bytes::from_static(b"nats-msg-id"),
            value: Some(Bytes::from(format!("{i:016x}"))),
        }],
    };
    let mut records: Vec<Record> = (0..count).map(|i| record(i, 1)).collect();
    let overhead = encoded_len(&records);
    let per_record = size.saturating_sub(overhead) / count;
    records = (0..count).map(|i| record(i, 1 + per_record)).collect();
    // Grow the last value until the batch is as close to `size` as varint
    // widths allow.
    for _ in 0..8 {
        let len = encoded_len(&records);
        if len >= size {
            break;
        }
        let last = count - 1;
        let value_len = records[last].value.as_ref().map_or(0, |v| v.len()) + (size - len);
        records[last] = record(last, value_len);
    }
    while encoded_len(&records) > size {
        let last = count - 1;
        let value_len = records[last].value.as_ref().map_or(1, |v| v.len()) - 1;
        records[last] = record(last, value_len);
    }
    let mut bytes = Vec::with_capacity(size);
    encode_batch(Offset::ZERO, &records, &mut bytes);
    Template {
        bytes,
        records: count as u64,
    }
}

// ---------------------------------------------------------------------------
// Append

struct Measured {
    bytes: u64,
    batches: u64,
    elapsed: Duration,
    latency_ns: Histogram<u64>,
}

impl Measured {
    fn new() -> Measured {
        Measured {
            bytes: 0,
            batches: 0,
            elapsed: Duration::ZERO,
            latency_ns: new_histogram(),
        }
    }

    fn merge(&mut self, other: &Measured) {
        self.bytes += other.bytes;
        self.batches += other.batches;
        self.elapsed += other.elapsed;
        self.latency_ns
            .add(&other.latency_ns)
            .expect("histograms with equal bounds");
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    fn batches_per_s(&self) -> f64 {
        self.batches as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile_us(&self, q: f64) -> f64 {
        self.latency_ns.value_at_quantile(q) as f64 / 1e3
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("histogram bounds")
}

/// What an append row compares with the raw `fdatasync` loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Left {
    /// The partition log.
    Engine,
    /// The raw loop itself, but with `fdatasync` through glommio's io_uring
    /// (diagnostic: the cost of the async sync path alone).
    RawUring,
}

async fn append_section(settings: &Settings, dir: &Path, sync: SyncPolicy, left: Left) {
    let durable = sync != SyncPolicy::Never;
    let label = match left {
        Left::Engine => "eng",
        Left::RawUring => "uring",
    };
    println!();
    if left == Left::RawUring {
        println!(
            "diagnostic: raw loop with fdatasync through glommio's io_uring (uring) vs the same loop with the fdatasync syscall (raw)"
        );
    } else if durable {
        println!(
            "append, SyncPolicy::EveryBatch (each append awaits durability; raw = P x pwrite + 1 fdatasync into a fallocate'd file)"
        );
    } else {
        println!(
            "append, SyncPolicy::Never (diagnostic: CPU path only; raw = pwrite loop, no fdatasync; capped at {} per side)",
            human_bytes(settings.bytes)
        );
    }
    match settings.raw_checks {
        RawChecks::None => {}
        RawChecks::One => println!("what-if: the raw loop runs one validate_batch (CRC) per batch"),
        RawChecks::Engine => println!(
            "what-if: the raw loop runs append's checks per batch (validate_batch x2 + decode_batch)"
        ),
    }
    let left_mb_s = format!("{label} MB/s");
    let ratio = format!("{label}/raw");
    let per_slice = format!("per-slice {label}/raw: median [min, max]");
    println!(
        "{:>7} {:>4} | {:>10} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9} | {:>9} | {}",
        "batch",
        "prod",
        left_mb_s,
        "batch/s",
        "p50 us",
        "p99 us",
        "raw MB/s",
        "batch/s",
        "p50 us",
        "p99 us",
        ratio,
        per_slice
    );
    let producers: &[usize] = if durable { &settings.producers } else { &[1] };
    let cap = if durable { u64::MAX } else { settings.bytes };
    let mut files = 0u64;
    for &size in &settings.sizes {
        let template = Rc::new(template(size));
        for &p in producers {
            let mut pair = Files::open(settings, dir, &mut files, sync, left).await;
            let mut engine = Measured::new();
            let mut raw = Measured::new();
            let mut slice_ratios = Vec::new();
            let mut largest_slice = 0u64;
            for round in 0..settings.rounds() {
                if engine.bytes >= cap && raw.bytes >= cap {
                    break;
                }
                if !settings.rolls && pair.fullest() + 2 * largest_slice > settings.segment_bytes()
                {
                    // Fresh files before either would roll (see `rolls`).
                    pair.close().await;
                    pair = Files::open(settings, dir, &mut files, sync, left).await;
                }
                let slice = settings.slice();
                // Spread a capped row over all its slices so they alternate.
                let slice_cap = cap.div_ceil(settings.rounds() as u64);
                let engine_cap = (cap - engine.bytes).min(slice_cap);
                let raw_cap = (cap - raw.bytes).min(slice_cap);
                // Alternate who goes first so neither always follows the other.
                let (engine_slice, raw_slice) = if round % 2 == 0 {
                    let e = pair.left(&template, p, durable, slice, engine_cap).await;
                    let r = pair
                        .raw
                        .append(&template.bytes, p, durable, slice, raw_cap)
                        .await;
                    (e, r)
                } else {
                    let r = pair
                        .raw
                        .append(&template.bytes, p, durable, slice, raw_cap)
                        .await;
                    let e = pair.left(&template, p, durable, slice, engine_cap).await;
                    (e, r)
                };
                if engine_slice.bytes > 0 && raw_slice.bytes > 0 {
                    slice_ratios.push(engine_slice.mb_per_s() / raw_slice.mb_per_s());
                }
                pair.engine_bytes += engine_slice.bytes;
                largest_slice = largest_slice.max(engine_slice.bytes).max(raw_slice.bytes);
                engine.merge(&engine_slice);
                raw.merge(&raw_slice);
            }
            pair.close().await;
            slice_ratios.sort_by(f64::total_cmp);
            let (lo, hi) = match (slice_ratios.first(), slice_ratios.last()) {
                (Some(lo), Some(hi)) => (*lo, *hi),
                _ => (f64::NAN, f64::NAN),
            };
            println!(
                "{:>7} {:>4} | {:>10.1} {:>9.0} {:>9.1} {:>9.1} | {:>9.1} {:>9.0} {:>9.1} {:>9.1} | {:>8.0}% | {:.0}% [{:.0}%, {:.0}%] of {}",
                human_bytes(template.bytes.len() as u64),
                p,
                engine.mb_per_s(),
                engine.batches_per_s(),
                engine.quantile_us(0.5),
                engine.quantile_us(0.99),
                raw.mb_per_s(),
                raw.batches_per_s(),
                raw.quantile_us(0.5),
                raw.quantile_us(0.99),
                100.0 * engine.mb_per_s() / raw.mb_per_s(),
                100.0 * median(&slice_ratios),
                100.0 * lo,
                100.0 * hi,
                slice_ratios.len(),
            );
        }
    }
}

/// Median of a sorted slice (NaN when empty).
fn median(sorted: &[f64]) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// The engine log (or the io_uring raw file) and the raw file an append row
/// writes, in their own directories under the scratch directory.
struct Files {
    log: Option<Rc<PartitionLog>>,
    uring: Option<RawWriter>,
    left_dir: PathBuf,
    engine_bytes: u64,
    raw: RawWriter,
    raw_dir: PathBuf,
}

impl Files {
    async fn open(
        settings: &Settings,
        dir: &Path,
        counter: &mut u64,
        sync: SyncPolicy,
        left: Left,
    ) -> Files {
        let left_dir = dir.join(format!("left-{counter}"));
        let raw_dir = dir.join(format!("raw-{counter}"));
        *counter += 1;
        let (log, uring) = match left {
            Left::Engine => {
                let mut config = LogConfig::new(&left_dir);
                config.segment_bytes = settings.segment_bytes();
                config.sync = sync;
                let (log, _) = PartitionLog::open(config).await.expect("open log");
                (Some(Rc::new(log)), None)
            }
            Left::RawUring => (
                None,
                Some(
                    RawWriter::create(&left_dir, settings.segment_bytes(), true, RawChecks::None)
                        .await,
                ),
            ),
        };
        Files {
            log,
            uring,
            left_dir,
            engine_bytes: 0,
            raw: RawWriter::create(
                &raw_dir,
                settings.segment_bytes(),
                false,
                settings.raw_checks,
            )
            .await,
            raw_dir,
        }
    }

    /// One slice of the left-hand side.
    async fn left(
        &mut self,
        template: &Rc<Template>,
        producers: usize,
        durable: bool,
        slice: Duration,
        cap: u64,
    ) -> Measured {
        match (&self.log, &mut self.uring) {
            (Some(log), _) => engine_append(log, template, producers, slice, cap).await,
            (None, Some(uring)) => {
                uring
                    .append(&template.bytes, producers, durable, slice, cap)
                    .await
            }
            (None, None) => unreachable!("a row has a left-hand side"),
        }
    }

    /// Bytes in the fullest of the active files.
    fn fullest(&self) -> u64 {
        self.engine_bytes.max(self.raw.position)
    }

    async fn close(self) {
        if let Some(log) = self.log {
            let log =
                Rc::try_unwrap(log).unwrap_or_else(|_| panic!("producers still hold the log"));
            log.close().await.expect("close log");
        }
        drop(self.uring);
        drop(self.raw);
        let _ = std::fs::remove_dir_all(&self.left_dir);
        let _ = std::fs::remove_dir_all(&self.raw_dir);
    }
}

/// One slice of engine appends: `producers` tasks on this executor, each
/// appending a copy of the template and awaiting it, until the slice is over
/// (or `cap` bytes are appended). Elapsed time runs until the last append of
/// the slice resolved.
async fn engine_append(
    log: &Rc<PartitionLog>,
    template: &Rc<Template>,
    producers: usize,
    slice: Duration,
    cap: u64,
) -> Measured {
    // Shared by the producers and allocated before the clock starts (a
    // histogram is ~0.5 MB to zero).
    let total = Rc::new(RefCell::new(Measured::new()));
    let appended = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let deadline = start + slice;
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let log = log.clone();
            let template = template.clone();
            let appended = appended.clone();
            let total = total.clone();
            glommio::spawn_local(async move {
                let size = template.bytes.len() as u64;
                while Instant::now() < deadline && appended.get() < cap {
                    appended.set(appended.get() + size);
                    // A freshly received batch, as the raw loop gets too.
                    let batch = template.bytes.clone();
                    let t0 = Instant::now();
                    log.append(batch).await.expect("append");
                    let latency = t0.elapsed().as_nanos() as u64;
                    let mut total = total.borrow_mut();
                    total.latency_ns.saturating_record(latency);
                    total.bytes += size;
                    total.batches += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let elapsed = start.elapsed();
    let mut total = Rc::try_unwrap(total)
        .unwrap_or_else(|_| panic!("producers still hold the totals"))
        .into_inner();
    total.elapsed = elapsed;
    total
}

/// The raw ceiling's file: preallocated segments written with `pwrite`,
/// rolled (trim, sync, new file, directory sync) like the log's when full.
struct RawWriter {
    checks: RawChecks,
    dir: PathBuf,
    segment_bytes: u64,
    segment: u64,
    file: File,
    /// The same file opened by glommio, when `fdatasync` goes through
    /// io_uring instead of the syscall.
    uring: Option<glommio::io::BufferedFile>,
    position: u64,
}

impl RawWriter {
    async fn create(dir: &Path, segment_bytes: u64, uring: bool, checks: RawChecks) -> RawWriter {
        std::fs::create_dir_all(dir).expect("create raw dir");
        let mut writer = RawWriter {
            checks,
            dir: dir.to_path_buf(),
            segment_bytes,
            segment: 0,
            file: raw_segment(dir, 0, segment_bytes),
            uring: None,
            position: 0,
        };
        if uring {
            writer.uring = Some(writer.open_uring().await);
        }
        writer
    }

    async fn open_uring(&self) -> glommio::io::BufferedFile {
        glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(self.dir.join(format!("{:020}.raw", self.segment)))
            .await
            .expect("open raw file with glommio")
    }

    async fn fdatasync(&self) {
        match &self.uring {
            Some(file) => file.fdatasync().await.expect("fdatasync (io_uring)"),
            None => self.file.sync_data().expect("fdatasync"),
        }
    }

    /// One slice: `group` `pwrite`s of `batch` then one `fdatasync` (when
    /// `durable`), repeated. Each batch's latency is its group's (first
    /// write to sync done).
    async fn append(
        &mut self,
        batch: &[u8],
        group: usize,
        durable: bool,
        slice: Duration,
        cap: u64,
    ) -> Measured {
        let size = batch.len() as u64;
        let mut measured = Measured::new();
        let start = Instant::now();
        let deadline = start + slice;
        while Instant::now() < deadline && measured.bytes < cap {
            let t0 = Instant::now();
            for _ in 0..group {
                if self.position + size > self.segment_bytes {
                    self.roll().await;
                }
                // A freshly received batch, as each engine append gets.
                let mut received = batch.to_vec();
                match self.checks {
                    RawChecks::None => {}
                    RawChecks::One => {
                        validate_batch(&received).expect("valid batch");
                    }
                    RawChecks::Engine => {
                        validate_batch(&received).expect("valid batch");
                        let bytes = Bytes::from(received);
                        decode_batch(&bytes).expect("valid batch");
                        received = bytes.into();
                        validate_batch(&received).expect("valid batch");
                    }
                }
                self.file
                    .write_all_at(&received, self.position)
                    .expect("pwrite");
                self.position += size;
            }
            if durable {
                self.fdatasync().await;
            }
            let latency = t0.elapsed().as_nanos() as u64;
            measured
                .latency_ns
                .saturating_record_n(latency, group as u64);
            measured.bytes += size * group as u64;
            measured.batches += group as u64;
        }
        measured.elapsed = start.elapsed();
        measured
    }

    async fn roll(&mut self) {
        self.file.set_len(self.position).expect("trim raw file");
        self.fdatasync().await;
        self.segment += 1;
        self.file = raw_segment(&self.dir, self.segment, self.segment_bytes);
        if self.uring.is_some() {
            self.uring = Some(self.open_uring().await);
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .expect("sync raw dir");
        self.position = 0;
    }
}

#[allow(unsafe_code)] // fallocate
fn raw_segment(dir: &Path, n: u64, bytes: u64) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(format!("{n:020}.raw")))
        .expect("create raw file");
    // SAFETY: fallocate takes a valid open descriptor and plain integers.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    file
}

// ---------------------------------------------------------------------------
// CPU cost of the checks `PartitionLog::append` runs on every batch

/// Per-batch cost of what `append` does besides the `pwrite`: today it runs
/// `check_batch_bytes` (= `validate_batch`, one CRC-32C pass) twice and
/// `decode_batch` (a third CRC pass plus a full record decode) once.
fn cpu_section(settings: &Settings) {
    println!();
    println!(
        "diagnostic: CPU per batch of the append-path checks (ns; median of 5 runs of ~0.2 s)"
    );
    println!(
        "{:>7} {:>7} | {:>14} {:>14} {:>14} {:>14}",
        "batch", "records", "validate_batch", "decode_batch", "Bytes+decode", "Vec clone"
    );
    for &size in &settings.sizes {
        let template = template(size);
        let bytes = Bytes::from(template.bytes.clone());
        let validate = time_per_op(|| {
            std::hint::black_box(validate_batch(std::hint::black_box(&template.bytes)).is_ok());
        });
        let decode = time_per_op(|| {
            std::hint::black_box(decode_batch(std::hint::black_box(&bytes)).is_ok());
        });
        // What `append` does: Vec -> Bytes, decode, Bytes -> Vec.
        let mut owned = Some(template.bytes.clone());
        let round_trip = time_per_op(|| {
            let b = Bytes::from(owned.take().unwrap_or_default());
            std::hint::black_box(decode_batch(&b).is_ok());
            owned = Some(b.into());
        });
        let clone = time_per_op(|| {
            std::hint::black_box(template.bytes.clone());
        });
        println!(
            "{:>7} {:>7} | {:>14.0} {:>14.0} {:>14.0} {:>14.0}",
            human_bytes(template.bytes.len() as u64),
            template.records,
            validate,
            decode,
            round_trip,
            clone
        );
    }
}

/// Median ns per call of `op` over 5 timed runs of ~0.2 s each.
fn time_per_op(mut op: impl FnMut()) -> f64 {
    let mut calls = 1u64;
    loop {
        let t0 = Instant::now();
        for _ in 0..calls {
            op();
        }
        if t0.elapsed() >= Duration::from_millis(20) {
            break;
        }
        calls *= 2;
    }
    calls *= 10;
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..calls {
                op();
            }
            t0.elapsed().as_nanos() as f64 / calls as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

// ---------------------------------------------------------------------------
// Read

struct ReadMeasured {
    bytes: u64,
    calls: u64,
    elapsed: Duration,
}

impl ReadMeasured {
    fn new() -> ReadMeasured {
        ReadMeasured {
            bytes: 0,
            calls: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn add(&mut self, other: ReadMeasured) {
        self.bytes += other.bytes;
        self.calls += other.calls;
        self.elapsed += other.elapsed;
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    fn us_per_call(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.calls as f64
    }
}

async fn read_section(settings: &Settings, dir: &Path) {
    println!();
    println!(
        "read {} end to end, page cache warm, {} pass(es) per side: engine = read(max_bytes 1 MiB) + read_bytes; lookup = read() only; raw = sequential 1 MiB pread",
        human_bytes(settings.bytes),
        settings.read_passes
    );
    println!(
        "{:>7} {:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>7} {:>7} | {:>8}",
        "batch",
        "segs",
        "eng MB/s",
        "us/read",
        "look MB/s",
        "us/read",
        "raw MB/s",
        "us/pread",
        "eng/raw",
        "look/raw",
        "reopen ms"
    );
    for &size in &settings.sizes {
        let template = template(size);
        let log_dir = dir.join(format!("read-{size}"));
        let (log, reopen) = fill_log(settings, &log_dir, &template).await;
        let segments = log.segments();
        let files: Vec<(File, u64)> = segments
            .iter()
            .map(|s| {
                let path = log_dir.join(format!("{:020}.log", s.base_offset.0));
                (File::open(&path).expect("open segment"), s.size_bytes)
            })
            .collect();
        let total: u64 = files.iter().map(|(_, len)| len).sum();
        // Warm the page cache (and the allocator) once before timing.
        raw_read(&files);
        let mut engine = ReadMeasured::new();
        let mut lookup = ReadMeasured::new();
        let mut raw = ReadMeasured::new();
        for pass in 0..settings.read_passes {
            let order = [pass % 3, (pass + 1) % 3, (pass + 2) % 3];
            for which in order {
                match which {
                    0 => engine.add(engine_read(&log, &template, true).await),
                    1 => lookup.add(engine_read(&log, &template, false).await),
                    _ => raw.add(raw_read(&files)),
                }
            }
        }
        assert_eq!(engine.bytes, total * settings.read_passes as u64);
        assert_eq!(lookup.bytes, engine.bytes);
        println!(
            "{:>7} {:>6} | {:>9.0} {:>9.1} | {:>9.0} {:>9.1} | {:>9.0} {:>9.1} | {:>6.0}% {:>6.0}% | {:>8.0}",
            human_bytes(template.bytes.len() as u64),
            segments.len(),
            engine.mb_per_s(),
            engine.us_per_call(),
            lookup.mb_per_s(),
            lookup.us_per_call(),
            raw.mb_per_s(),
            raw.us_per_call(),
            100.0 * engine.mb_per_s() / raw.mb_per_s(),
            100.0 * lookup.mb_per_s() / raw.mb_per_s(),
            reopen.as_secs_f64() * 1e3,
        );
        drop(files);
        log.close().await.expect("close log");
        let _ = std::fs::remove_dir_all(&log_dir);
    }
}

/// Fills a fresh log with `settings.bytes` of template batches (no sync while
/// filling), flushes it to disk so the pages are clean but resident, and
/// reopens it as a normal `EveryBatch` log.
async fn fill_log(
    settings: &Settings,
    dir: &Path,
    template: &Template,
) -> (PartitionLog, Duration) {
    let mut config = LogConfig::new(dir);
    config.segment_bytes = settings.segment_bytes();
    config.sync = SyncPolicy::Never;
    let (log, _) = PartitionLog::open(config.clone()).await.expect("open log");
    let batches = settings.bytes.div_ceil(template.bytes.len() as u64);
    for _ in 0..batches {
        log.append(template.bytes.clone()).await.expect("append");
    }
    log.close().await.expect("close log");
    for entry in std::fs::read_dir(dir).expect("list log dir") {
        let path = entry.expect("dir entry").path();
        File::open(&path)
            .and_then(|f| f.sync_data())
            .expect("sync log file");
    }
    config.sync = SyncPolicy::EveryBatch;
    let t0 = Instant::now();
    let (log, report) = PartitionLog::open(config).await.expect("reopen log");
    let reopen = t0.elapsed();
    assert_eq!(report.log_end, Offset(batches * template.records));
    (log, reopen)
}

/// Reads the whole log: `copy` = `read()` + `read_bytes()` per slice, else
/// `read()` only. Every batch has the template's size and record count, so
/// the next offset follows from the slice length.
async fn engine_read(log: &PartitionLog, template: &Template, copy: bool) -> ReadMeasured {
    let size = template.bytes.len() as u64;
    let mut measured = ReadMeasured::new();
    let mut next = log.log_start_offset();
    let start = Instant::now();
    while let Some(slice) = log.read(next, READ_MAX_BYTES).expect("read") {
        assert_eq!(slice.first_batch_offset, next);
        assert_eq!(slice.len % size, 0);
        if copy {
            let bytes = slice.read_bytes().await.expect("read bytes");
            assert_eq!(bytes.len() as u64, slice.len);
            std::hint::black_box(&bytes);
        }
        measured.bytes += slice.len;
        measured.calls += 1;
        next = Offset(next.0 + slice.len / size * template.records);
    }
    measured.elapsed = start.elapsed();
    measured
}

fn raw_read(files: &[(File, u64)]) -> ReadMeasured {
    let mut buf = vec![0u8; READ_MAX_BYTES as usize];
    let mut measured = ReadMeasured::new();
    let start = Instant::now();
    for (file, len) in files {
        let mut position = 0;
        while position < *len {
            let want = (len - position).min(READ_MAX_BYTES) as usize;
            file.read_exact_at(&mut buf[..want], position)
                .expect("pread");
            std::hint::black_box(&buf);
            position += want as u64;
            measured.bytes += want as u64;
            measured.calls += 1;
        }
    }
    measured.elapsed = start.elapsed();
    measured
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}
