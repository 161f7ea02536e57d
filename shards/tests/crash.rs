//! Crash test with a real process and `SIGKILL`.
//!
//! The parent test re-executes this test binary to run only
//! [`crash_writer_child`], which (when `SLUICE_CRASH_DIR` is set) opens a log
//! with 64 KiB segments and `SyncPolicy::EveryBatch`, appends batches from
//! several concurrent glommio tasks and prints `ACK <base> <last> <cycle>
//! <task> <seq>` once each append has resolved. The parent kills it a random
//! few milliseconds after its first ack, reopens the log in-process and
//! checks that every acknowledged record is there, byte for byte, that
//! offsets are dense from 0 and that no read returns a corrupt batch; then
//! the next cycle's child continues on the same directory.
//!
//! Every record carries an `id` header naming `(cycle, task, seq, index)`;
//! its timestamp, key, value and other headers are derived from that, so
//! any record found on disk — acknowledged or not — can be checked.
//!
//! `SLUICE_CRASH_CYCLES` sets the number of cycles (default
//! [`CYCLES_DEFAULT`]), `SLUICE_CRASH_SEED` the seed of the kill delays.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shards::batch::{DecodedRecord, Header, Record};
use shards::log::{LogConfig, PartitionLog};
use shards::testing::run_on_executor;
use shards::types::TimestampMs;

use common::{fill, mix, release_closed_files, synced_config, Rng};
use shards::testing::read_all;

const CHILD_DIR_ENV: &str = "SLUICE_CRASH_DIR";
const CHILD_CYCLE_ENV: &str = "SLUICE_CRASH_CYCLE";
const CYCLES_ENV: &str = "SLUICE_CRASH_CYCLES";
const SEED_ENV: &str = "SLUICE_CRASH_SEED";

/// Kill/recover cycles per run by default.
const CYCLES_DEFAULT: u64 = 50;
const SEED_DEFAULT: u64 = 0x5EED_C0DE;
/// Small segments so that kills land during rolls too.
const SEGMENT_BYTES: u64 = 64 << 10;
const INDEX_INTERVAL_BYTES: u64 = 1024;
/// Concurrent appending tasks in the child.
const WRITER_TASKS: u64 = 4;
/// Appends per task at most: bounds the child even if nobody kills it.
const APPENDS_PER_TASK_MAX: u64 = 100_000;
/// The child gives up on its own after this long (an orphan never lingers).
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(60);
/// Kill the child this long after its first ack: `[min, max)` ms.
const KILL_DELAY_MS: (u64, u64) = (5, 80);
/// Bounds on every wait of the parent, so a hang fails instead of blocking.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Records per batch at most, and value bytes at most.
const BATCH_RECORDS_MAX: u64 = 4;
const VALUE_BYTES_MAX: u64 = 1500;
const TS_BASE: i64 = 1_700_000_000_000;

/// Which record this is: enough to re-derive all of its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RecordId {
    cycle: u64,
    task: u64,
    seq: u64,
    index: u64,
}

impl RecordId {
    fn header_value(&self) -> String {
        format!("{} {} {} {}", self.cycle, self.task, self.seq, self.index)
    }

    fn parse(text: &[u8]) -> Option<RecordId> {
        let text = std::str::from_utf8(text).ok()?;
        let mut fields = text.split(' ').map(str::parse::<u64>);
        let id = RecordId {
            cycle: fields.next()?.ok()?,
            task: fields.next()?.ok()?,
            seq: fields.next()?.ok()?,
            index: fields.next()?.ok()?,
        };
        fields.next().is_none().then_some(id)
    }

    fn record(&self) -> Record {
        let h = mix(&[self.cycle, self.task, self.seq, self.index]);
        let value_len = (h >> 8) % VALUE_BYTES_MAX;
        let mut headers = vec![Header {
            key: Bytes::from_static(b"id"),
            value: Some(Bytes::from(self.header_value())),
        }];
        if h & 3 == 0 {
            headers.push(Header {
                key: Bytes::from(fill(h ^ 3, (h % 7) as usize)),
                value: (h & 16 == 0).then(|| Bytes::from(fill(h ^ 4, (h % 11) as usize))),
            });
        }
        Record {
            timestamp: TimestampMs(TS_BASE + (self.cycle * 1_000_000 + self.seq) as i64),
            key: (h % 100 >= 20).then(|| Bytes::from(fill(h ^ 1, (h % 40) as usize))),
            value: Some(Bytes::from(fill(h ^ 2, value_len as usize))),
            headers,
        }
    }
}

fn batch_ids(cycle: u64, task: u64, seq: u64) -> Vec<RecordId> {
    let count = 1 + mix(&[cycle, task, seq]) % BATCH_RECORDS_MAX;
    (0..count)
        .map(|index| RecordId {
            cycle,
            task,
            seq,
            index,
        })
        .collect()
}

fn log_config(dir: &Path) -> LogConfig {
    synced_config(dir, SEGMENT_BYTES, INDEX_INTERVAL_BYTES)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ------------------------------------------------------------- the child

/// The writer run in the child process; does nothing in a normal test run.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let cycle = env_u64(CHILD_CYCLE_ENV, 0);
    run_on_executor(write_until_killed(PathBuf::from(dir), cycle));
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{line}").and_then(|()| out.flush());
    if written.is_err() {
        std::process::exit(3); // the parent is gone
    }
}

async fn write_until_killed(dir: PathBuf, cycle: u64) {
    let (log, report) = match PartitionLog::open(log_config(&dir)).await {
        Ok(opened) => opened,
        Err(err) => {
            eprintln!("child: open failed: {err}");
            std::process::exit(2);
        }
    };
    say(&format!("OPEN {}", report.log_end.0));
    let log = std::rc::Rc::new(log);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..WRITER_TASKS {
        let log = log.clone();
        tasks.push(glommio::spawn_local(async move {
            for seq in 0..APPENDS_PER_TASK_MAX {
                if started.elapsed() > CHILD_LIFETIME_MAX {
                    return;
                }
                let ids = batch_ids(cycle, task, seq);
                let records: Vec<Record> = ids.iter().map(RecordId::record).collect();
                match log.append_records(&records).await {
                    Ok(appended) => say(&format!(
                        "ACK {} {} {cycle} {task} {seq}",
                        appended.base_offset.0, appended.last_offset.0
                    )),
                    Err(err) => {
                        eprintln!("child: append failed: {err}");
                        std::process::exit(2);
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await;
    }
}

// ------------------------------------------------------------ the parent

#[derive(Debug)]
struct Ack {
    base: u64,
    last: u64,
    cycle: u64,
    task: u64,
    seq: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut fields = line.strip_prefix("ACK ")?.split(' ').map(str::parse::<u64>);
    let mut next = || fields.next()?.ok();
    Some(Ack {
        base: next()?,
        last: next()?,
        cycle: next()?,
        task: next()?,
        seq: next()?,
    })
}

/// What one child run said before it died.
struct ChildRun {
    opened_at: Option<u64>,
    acks: Vec<Ack>,
}

/// Lines of the child's stdout; a line cut by the kill (no newline) is
/// dropped: the child never finished saying it.
fn spawn_reader(child: &mut Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.ends_with('\n') => {
                    if tx.send(line.trim_end().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => return,
            }
        }
    });
    (rx, reader)
}

fn child_failure(stderr_path: &Path, what: &str) -> ! {
    let stderr = std::fs::read_to_string(stderr_path).unwrap_or_default();
    let tail: String = stderr
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    panic!("{what}; child stderr (tail):\n{tail}");
}

fn run_child(dir: &Path, cycle: u64, kill_delay: Duration, stderr_path: &Path) -> ChildRun {
    let exe = std::env::current_exe().expect("current test binary");
    let stderr = std::fs::File::create(stderr_path).expect("child stderr file");
    let mut child = Command::new(exe)
        .args([
            "crash_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_CYCLE_ENV, cycle.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn the writer child");
    let (lines, reader) = spawn_reader(&mut child);
    let mut run = ChildRun {
        opened_at: None,
        acks: Vec::new(),
    };
    // libtest may print "test crash_writer_child ... " before the first line.
    let take = |line: String, run: &mut ChildRun| {
        if let Some(at) = line.find("ACK ") {
            run.acks.extend(parse_ack(&line[at..]));
        } else if let Some(at) = line.find("OPEN ") {
            run.opened_at = line[at + "OPEN ".len()..].parse().ok();
        }
    };
    let deadline = Instant::now() + FIRST_ACK_TIMEOUT;
    while run.acks.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => take(line, &mut run),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                child_failure(stderr_path, "no ack from the child in time")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                child_failure(stderr_path, "the child exited before its first ack")
            }
        }
    }
    std::thread::sleep(kill_delay);
    child.kill().expect("SIGKILL the child");
    let status = wait_with_timeout(&mut child);
    if status.signal() != Some(libc::SIGKILL) {
        child_failure(stderr_path, &format!("the child ended by itself: {status}"));
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => take(line, &mut run),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("child stdout still open after kill"),
        }
    }
    reader.join().expect("stdout reader");
    run
}

fn wait_with_timeout(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        assert!(Instant::now() < deadline, "killed child did not exit");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the parent found after reopening the log.
struct Recovered {
    ids: Vec<RecordId>,
    high_watermark: u64,
    truncated_bytes: u64,
    mid_log_corruption: bool,
    segments: usize,
}

fn check_record(offset: u64, record: &DecodedRecord) -> RecordId {
    assert_eq!(record.offset.0, offset, "offsets are not dense");
    let id = record
        .headers
        .first()
        .filter(|h| h.key.as_ref() == b"id")
        .and_then(|h| h.value.as_ref())
        .and_then(|v| RecordId::parse(v));
    let Some(id) = id else {
        panic!("record {offset} has no valid id header: {record:?}");
    };
    let want = id.record();
    assert_eq!(record.timestamp, want.timestamp, "offset {offset} {id:?}");
    assert_eq!(record.key, want.key, "offset {offset} {id:?}");
    assert_eq!(record.value, want.value, "offset {offset} {id:?}");
    assert_eq!(record.headers, want.headers, "offset {offset} {id:?}");
    id
}

async fn recover_and_read(dir: PathBuf) -> Recovered {
    let (log, report) = PartitionLog::open(log_config(&dir))
        .await
        .expect("reopen after the kill");
    let mut ids = Vec::new();
    for (header, records) in read_all(&log, 256 << 10).await {
        assert_eq!(header.records_count as usize, records.len());
        for record in &records {
            ids.push(check_record(ids.len() as u64, record));
        }
    }
    assert_eq!(
        ids.len() as u64,
        log.log_end_offset().0,
        "read stopped short"
    );
    let recovered = Recovered {
        ids,
        high_watermark: log.high_watermark().0,
        truncated_bytes: report.repaired.iter().map(|(_, r)| r.truncated_bytes).sum(),
        mid_log_corruption: report.mid_log_corruption,
        segments: report.segments,
    };
    log.close().await.expect("close");
    release_closed_files().await;
    recovered
}

#[test]
fn sigkill_during_appends_loses_nothing_acknowledged() {
    let cycles = env_u64(CYCLES_ENV, CYCLES_DEFAULT);
    let seed = env_u64(SEED_ENV, SEED_DEFAULT);
    let mut rng = Rng::new(seed);
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("p0");
    let stderr_path = root.path().join("child-stderr.txt");
    let started = Instant::now();
    // Every offset ever acknowledged, with the record it must hold.
    let mut acked: BTreeMap<u64, RecordId> = BTreeMap::new();
    let mut recovered_end = 0u64;
    let mut truncated_total = 0u64;
    let mut segments = 0;
    for cycle in 0..cycles {
        let delay = Duration::from_millis(rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1));
        let run = run_child(&dir, cycle, delay, &stderr_path);
        assert_eq!(
            run.opened_at,
            Some(recovered_end),
            "cycle {cycle}: child opened elsewhere"
        );
        for ack in &run.acks {
            assert_eq!(ack.cycle, cycle);
            let ids = batch_ids(ack.cycle, ack.task, ack.seq);
            assert_eq!(ack.last + 1 - ack.base, ids.len() as u64, "{ack:?}");
            assert!(
                ack.base >= recovered_end,
                "cycle {cycle} reused an offset: {ack:?}"
            );
            for (offset, id) in (ack.base..=ack.last).zip(ids) {
                let previous = acked.insert(offset, id);
                assert!(previous.is_none(), "offset {offset} acked twice");
            }
        }
        let recovered = run_on_executor(recover_and_read(dir.clone()));
        assert!(
            !recovered.mid_log_corruption,
            "cycle {cycle}: mid-log corruption"
        );
        let end = recovered.ids.len() as u64;
        if let Some((&max_acked, _)) = acked.last_key_value() {
            assert!(
                end > max_acked,
                "cycle {cycle}: acked {max_acked} lost, end {end}"
            );
            assert!(
                recovered.high_watermark > max_acked,
                "cycle {cycle}: HW below an ack"
            );
        }
        for (&offset, id) in &acked {
            assert_eq!(
                recovered.ids[offset as usize], *id,
                "cycle {cycle}: offset {offset}"
            );
        }
        assert!(
            end >= recovered_end,
            "cycle {cycle}: the log shrank below its last end"
        );
        recovered_end = end;
        truncated_total += recovered.truncated_bytes;
        segments = recovered.segments;
    }
    println!(
        "crash: {cycles} cycles (seed {seed:#x}), {} acked records verified, {recovered_end} \
         records in {segments} segments, {truncated_total} bytes truncated by recovery, {:.1?}",
        acked.len(),
        started.elapsed()
    );
    assert!(!acked.is_empty() || cycles == 0);
}
