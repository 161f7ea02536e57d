//! Model-based test of the partition log: random operation sequences run
//! against a real [`PartitionLog`] (tiny segments, so rolls are constant)
//! and against an in-memory model (a list of batches), which must agree
//! after every step.
//!
//! The model also predicts the leader-epoch cache (the fold of "a batch of a
//! higher epoch starts an entry" over its batches), Kafka's
//! `end_offset_for_epoch` answers computed straight from the batches, and
//! which appends a stale epoch makes the log refuse; the epoch checkpoint is
//! removed or damaged between runs and must come back identical.
//!
//! `PROPTEST_CASES` raises the case count (default [`CASES_DEFAULT`]).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use shards::batch::{encode_batch, encoded_len, set_leader_epoch, DecodedRecord, Header, Record};
use shards::epoch_cache::LEADER_EPOCH_FILE;
use shards::error::LogError;
use shards::log::{CommitMode, LogConfig, PartitionLog, SyncPolicy};
use shards::testing::run_on_executor;
use shards::types::{LeaderEpoch, Offset, TimestampMs};

use common::{fill, mix, release_closed_files};
use shards::testing::{decode_all, read_all};

/// Cases per run unless `PROPTEST_CASES` says otherwise: enough to hit
/// rolls, truncations across segments and reopen in every run, small enough
/// for well under a minute in debug builds.
const CASES_DEFAULT: u32 = 64;
/// Operations per case, at most.
const OPS_MAX: usize = 60;
/// Records per appended batch, at most.
const BATCH_RECORDS_MAX: usize = 8;
/// Timestamps are `TS_BASE + [0, TS_SPREAD)`, in no particular order.
const TS_BASE: i64 = 1_700_000_000_000;
const TS_SPREAD: i64 = 10_000;

type CaseResult = Result<(), TestCaseError>;

// ---------------------------------------------------------------- inputs

#[derive(Clone, Debug)]
struct RecordSpec {
    ts_delta: i64,
    key_len: Option<usize>,
    value_len: Option<usize>,
    /// `(key length, value length)` per header.
    headers: Vec<(usize, Option<usize>)>,
    seed: u64,
}

impl RecordSpec {
    fn build(&self) -> Record {
        let part = |tag: u64, len: usize| Bytes::from(fill(mix(&[self.seed, tag]), len));
        Record {
            timestamp: TimestampMs(TS_BASE + self.ts_delta),
            key: self.key_len.map(|len| part(1, len)),
            value: self.value_len.map(|len| part(2, len)),
            headers: self
                .headers
                .iter()
                .enumerate()
                .map(|(i, &(key_len, value_len))| Header {
                    key: part(10 + 2 * i as u64, key_len),
                    value: value_len.map(|len| part(11 + 2 * i as u64, len)),
                })
                .collect(),
        }
    }
}

#[derive(Clone, Debug)]
struct ConfigSpec {
    segment_bytes: u64,
    index_interval_bytes: u64,
    preallocate: bool,
    sync: SyncPolicy,
    commit: CommitMode,
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<RecordSpec>),
    /// Batches as a leader would send them; `stale` makes the first one
    /// overlap the log end (must be refused).
    AppendReplicated {
        batches: Vec<Vec<RecordSpec>>,
        epoch: i32,
        stale: bool,
    },
    Read {
        at: u64,
        max_bytes: u64,
    },
    Truncate {
        at: u64,
    },
    /// To a batch boundary (what a replication layer does) or anywhere.
    AdvanceHw {
        at: u64,
        boundary: bool,
    },
    CheckpointHw,
    SetLeaderEpoch(i32),
    OffsetForTimestamp(i64),
    /// `close` then `open`.
    Reopen,
    /// Drop without `close` (no final sync, no checkpoint), then `open`.
    DropReopen,
    /// `close`, then remove (`remove`) or damage `leader-epoch-checkpoint`
    /// (flip a byte at `at`, or cut it to `at` bytes), then `open`: the
    /// cache must be rebuilt from the batch headers.
    DamageEpochCheckpoint {
        remove: bool,
        flip: bool,
        at: usize,
    },
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    let value_len = prop_oneof![3 => 0usize..64, 2 => 0usize..512, 1 => 0usize..3000];
    (
        0..TS_SPREAD,
        proptest::option::weighted(0.8, 0usize..32),
        proptest::option::weighted(0.95, value_len),
        proptest::collection::vec(
            (0usize..8, proptest::option::weighted(0.8, 0usize..16)),
            0..3,
        ),
        any::<u64>(),
    )
        .prop_map(|(ts_delta, key_len, value_len, headers, seed)| RecordSpec {
            ts_delta,
            key_len,
            value_len,
            headers,
            seed,
        })
}

fn batch_spec() -> impl Strategy<Value = Vec<RecordSpec>> {
    proptest::collection::vec(record_spec(), 1..=BATCH_RECORDS_MAX)
}

fn op() -> impl Strategy<Value = Op> {
    let max_bytes = prop_oneof![Just(0u64), 1u64..256, 0u64..16_384, Just(u64::MAX)];
    prop_oneof![
        10 => batch_spec().prop_map(Op::Append),
        2 => (proptest::collection::vec(batch_spec(), 1..4), -1i32..5, proptest::bool::weighted(0.15))
            .prop_map(|(batches, epoch, stale)| Op::AppendReplicated { batches, epoch, stale }),
        8 => (any::<u64>(), max_bytes).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        2 => any::<u64>().prop_map(|at| Op::Truncate { at }),
        3 => (any::<u64>(), proptest::bool::weighted(0.8))
            .prop_map(|(at, boundary)| Op::AdvanceHw { at, boundary }),
        1 => Just(Op::CheckpointHw),
        2 => (-1i32..6).prop_map(Op::SetLeaderEpoch),
        2 => (-10..TS_SPREAD + 10).prop_map(Op::OffsetForTimestamp),
        1 => Just(Op::Reopen),
        1 => Just(Op::DropReopen),
        1 => (any::<bool>(), any::<bool>(), any::<usize>())
            .prop_map(|(remove, flip, at)| Op::DamageEpochCheckpoint { remove, flip, at }),
    ]
}

fn config_spec() -> impl Strategy<Value = ConfigSpec> {
    let sync = prop_oneof![
        6 => Just(SyncPolicy::EveryBatch),
        1 => Just(SyncPolicy::Interval(Duration::from_millis(1))),
        2 => Just(SyncPolicy::Never),
    ];
    let commit = prop_oneof![Just(CommitMode::Local), Just(CommitMode::Replicated)];
    (4096u64..=32_768, 64u64..=2048, any::<bool>(), sync, commit).prop_map(
        |(segment_bytes, index_interval_bytes, preallocate, sync, commit)| ConfigSpec {
            segment_bytes,
            index_interval_bytes,
            preallocate,
            sync,
            commit,
        },
    )
}

// ----------------------------------------------------------------- model

#[derive(Debug)]
struct ModelBatch {
    base: u64,
    records: Vec<Record>,
    bytes: u64,
    epoch: i32,
}

impl ModelBatch {
    fn next(&self) -> u64 {
        self.base + self.records.len() as u64
    }
    fn max_timestamp(&self) -> i64 {
        self.records
            .iter()
            .map(|r| r.timestamp.0)
            .max()
            .unwrap_or(-1)
    }
}

#[derive(Debug)]
struct Model {
    commit: CommitMode,
    sync: SyncPolicy,
    batches: Vec<ModelBatch>,
    hw: u64,
    /// Last high watermark written to the checkpoint file.
    checkpoint: Option<u64>,
    /// Since `checkpoint` was written: the lowest truncation point and the
    /// high watermark right after the latest truncation (see
    /// [`replicated_hw_after_an_unclean_restart_stays_committed`]).
    truncated_since_checkpoint: Option<(u64, u64)>,
    leader_epoch: i32,
}

impl Model {
    fn end(&self) -> u64 {
        self.batches.last().map_or(0, ModelBatch::next)
    }

    /// Index of the batch holding `offset`.
    fn holding(&self, offset: u64) -> Option<usize> {
        let at = self.batches.partition_point(|b| b.next() <= offset);
        (at < self.batches.len()).then_some(at)
    }

    /// The leader-epoch cache the log must hold: `(epoch, start)` for each
    /// batch whose epoch (≥ 0) is above every epoch before it.
    fn epochs(&self) -> Vec<(i32, u64)> {
        let mut out: Vec<(i32, u64)> = Vec::new();
        for batch in &self.batches {
            if batch.epoch >= 0 && out.last().is_none_or(|(e, _)| *e < batch.epoch) {
                out.push((batch.epoch, batch.base));
            }
        }
        out
    }

    fn latest_epoch(&self) -> Option<i32> {
        self.epochs().last().map(|(e, _)| *e)
    }

    /// Whether the log must refuse a batch of `epoch` as stale.
    fn refuses_epoch(&self, epoch: i32) -> bool {
        epoch >= 0 && self.latest_epoch().is_some_and(|latest| epoch < latest)
    }

    /// Kafka's OffsetForLeaderEpoch answer, straight from the batches: the
    /// leader's own (not yet written) epoch counts as starting at the end.
    fn end_offset_for_epoch(&self, requested: i32) -> Option<(i32, u64)> {
        if requested < 0 {
            return None;
        }
        let end = self.end();
        let stamped: Vec<(i32, u64)> = self
            .batches
            .iter()
            .filter(|b| b.epoch >= 0)
            .map(|b| (b.epoch, b.base))
            .collect();
        let current = (self.leader_epoch >= 0).then_some(self.leader_epoch);
        let latest = stamped.last().map(|(e, _)| *e).max(current)?;
        if requested == latest {
            return Some((requested, end));
        }
        if requested > latest {
            return None;
        }
        let next_start = stamped
            .iter()
            .find(|(e, _)| *e > requested)
            .map_or(end, |(_, base)| *base);
        let floor = stamped
            .iter()
            .map(|(e, _)| *e)
            .filter(|e| *e <= requested)
            .max();
        Some((floor.unwrap_or(requested), next_start))
    }

    /// End of the committed prefix of whole batches (what reads can reach).
    fn readable_end(&self) -> u64 {
        let whole = self.batches.partition_point(|b| b.next() <= self.hw);
        if whole == 0 {
            0
        } else {
            self.batches[whole - 1].next()
        }
    }

    fn push(&mut self, base: u64, records: Vec<Record>, bytes: u64, epoch: i32) {
        self.batches.push(ModelBatch {
            base,
            records,
            bytes,
            epoch,
        });
        if self.commit == CommitMode::Local {
            self.hw = self.end();
        }
    }

    fn checkpointed(&mut self) {
        self.checkpoint = Some(self.hw);
        self.truncated_since_checkpoint = None;
    }

    fn truncated(&mut self, new_end: u64) {
        self.batches
            .truncate(self.batches.partition_point(|b| b.base < new_end));
        self.hw = self.hw.min(new_end);
        let lowest = self
            .truncated_since_checkpoint
            .map_or(new_end, |(cut, _)| cut.min(new_end));
        self.truncated_since_checkpoint = Some((lowest, self.hw));
    }

    /// The range of high watermarks `open` may recover after a close
    /// (`clean`) or a drop. Exact unless a truncation happened since the
    /// last checkpoint: today's engine then resumes from that (stale)
    /// checkpoint; a fixed one from a checkpoint lowered to the truncation
    /// point or rewritten with the high watermark of the truncation.
    fn reopened(&mut self, clean: bool) -> (u64, u64) {
        if clean && self.commit == CommitMode::Replicated && self.sync != SyncPolicy::Never {
            self.checkpointed();
        }
        self.leader_epoch = LeaderEpoch::NONE.0;
        if self.commit == CommitMode::Local {
            return (self.end(), self.end());
        }
        let end = self.end();
        let stale = self.checkpoint.unwrap_or(0).min(end);
        let Some((cut, hw_after)) = self.truncated_since_checkpoint else {
            return (stale, stale);
        };
        let candidates = [stale, stale.min(cut), hw_after.min(end)];
        let low = candidates.iter().copied().min().unwrap_or(stale);
        let high = candidates.iter().copied().max().unwrap_or(stale);
        (low, high)
    }
}

// ------------------------------------------------------------- the runner

fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES_DEFAULT);
    ProptestConfig {
        cases,
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn partition_log_agrees_with_model(
        spec in config_spec(),
        ops in proptest::collection::vec(op(), 1..=OPS_MAX),
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("p0");
        run_on_executor(run_case(path, spec, ops))?;
    }
}

fn log_config(path: &PathBuf, spec: &ConfigSpec) -> LogConfig {
    let mut config = LogConfig::new(path);
    config.segment_bytes = spec.segment_bytes;
    config.index_interval_bytes = spec.index_interval_bytes;
    config.preallocate = spec.preallocate;
    config.sync = spec.sync;
    config.commit = spec.commit;
    config
}

fn fail(context: &str, err: LogError) -> TestCaseError {
    TestCaseError::fail(format!("{context}: {err}"))
}

/// Opens the log; `clean` when the previous instance was closed with a
/// final sync (it left a clean-shutdown marker, so recovery may trust the
/// indexes; after a drop it rescans the active segment and rebuilds them).
async fn open(
    path: &PathBuf,
    spec: &ConfigSpec,
    model: &Model,
    clean: bool,
    epochs_rebuilt: bool,
) -> Result<PartitionLog, TestCaseError> {
    let (log, report) = PartitionLog::open(log_config(path, spec))
        .await
        .map_err(|e| fail("open", e))?;
    prop_assert_eq!(report.log_end, Offset(model.end()));
    prop_assert!(!report.mid_log_corruption);
    prop_assert!(!report.lost_tail, "{:?}", report);
    prop_assert_eq!(report.epoch_cache_rebuilt, epochs_rebuilt);
    for (base, recovery) in &report.repaired {
        // Every write completed before the reopen: nothing may be torn.
        prop_assert_eq!(
            recovery.truncated_bytes,
            0,
            "segment {} {:?}",
            base,
            recovery
        );
        prop_assert!(
            !clean || !recovery.index_rebuilt,
            "segment {} {:?}",
            base,
            recovery
        );
    }
    Ok(log)
}

async fn run_case(path: PathBuf, spec: ConfigSpec, ops: Vec<Op>) -> CaseResult {
    let mut model = Model {
        commit: spec.commit,
        sync: spec.sync,
        batches: Vec::new(),
        hw: 0,
        checkpoint: None,
        truncated_since_checkpoint: None,
        leader_epoch: LeaderEpoch::NONE.0,
    };
    let mut log = Some(open(&path, &spec, &model, false, true).await?);
    for (step, op) in ops.iter().enumerate() {
        let Some(current) = log.as_ref() else {
            return Err(TestCaseError::fail("log lost"));
        };
        let result = match op {
            Op::Reopen | Op::DropReopen | Op::DamageEpochCheckpoint { .. } => {
                let clean = !matches!(op, Op::DropReopen);
                let Some(old) = log.take() else {
                    return Err(TestCaseError::fail("log lost"));
                };
                if clean {
                    old.close().await.map_err(|e| fail("close", e))?;
                } else {
                    drop(old);
                }
                let rebuilt = match op {
                    Op::DamageEpochCheckpoint { remove, flip, at } => {
                        damage_epoch_checkpoint(&path, *remove, *flip, *at)?
                    }
                    _ => false,
                };
                let (low, high) = model.reopened(clean);
                let marked = clean && spec.sync != SyncPolicy::Never;
                let reopened = open(&path, &spec, &model, marked, rebuilt).await?;
                let hw = reopened.high_watermark().0;
                prop_assert!(
                    low <= hw && hw <= high,
                    "HW {} outside [{}, {}]",
                    hw,
                    low,
                    high
                );
                model.hw = hw;
                let scanned = check_full_scan(&reopened, &model, 1 << 20).await;
                log = Some(reopened);
                scanned
            }
            _ => apply(current, &spec, &mut model, op).await,
        };
        let Some(current) = log.as_ref() else {
            return Err(TestCaseError::fail("log lost"));
        };
        result
            .and_then(|()| check_invariants(current, &spec, &model))
            .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: {e}")))?;
    }
    let Some(log) = log.take() else {
        return Err(TestCaseError::fail("log lost"));
    };
    check_full_scan(&log, &model, 4096).await?;
    log.close().await.map_err(|e| fail("close", e))?;
    release_closed_files().await;
    Ok(())
}

async fn apply(log: &PartitionLog, spec: &ConfigSpec, model: &mut Model, op: &Op) -> CaseResult {
    match op {
        Op::Append(specs) => append(log, spec, model, specs).await,
        Op::AppendReplicated {
            batches,
            epoch,
            stale,
        } => append_replicated(log, spec, model, batches, *epoch, *stale).await,
        Op::Read { at, max_bytes } => check_read(log, model, *at, *max_bytes).await,
        Op::Truncate { at } => truncate(log, model, *at).await,
        Op::AdvanceHw { at, boundary } => {
            let end = model.end();
            let target = if *boundary {
                let i = (*at % (model.batches.len() as u64 + 3)) as usize;
                match model.batches.get(i) {
                    Some(batch) => batch.base,
                    None => end + (i - model.batches.len()) as u64,
                }
            } else {
                *at % (end + 2)
            };
            log.advance_high_watermark(Offset(target));
            model.hw = model.hw.max(target.min(end));
            Ok(())
        }
        Op::CheckpointHw => {
            log.checkpoint_high_watermark()
                .await
                .map_err(|e| fail("checkpoint", e))?;
            model.checkpointed();
            Ok(())
        }
        Op::SetLeaderEpoch(epoch) => {
            log.set_leader_epoch(LeaderEpoch(*epoch));
            model.leader_epoch = *epoch;
            Ok(())
        }
        Op::OffsetForTimestamp(delta) => {
            let target = TS_BASE + delta;
            let got = log
                .offset_for_timestamp(TimestampMs(target))
                .await
                .map_err(|e| fail("offset_for_timestamp", e))?;
            let first = model.batches.iter().find_map(|b| {
                b.records
                    .iter()
                    .position(|r| r.timestamp.0 >= target)
                    .map(|i| b.base + i as u64)
            });
            let expected = first.filter(|&o| o < model.hw).map(Offset);
            prop_assert_eq!(got, expected, "target {}", target);
            Ok(())
        }
        Op::Reopen | Op::DropReopen | Op::DamageEpochCheckpoint { .. } => {
            Err(TestCaseError::fail("handled by the runner"))
        }
    }
}

async fn append(
    log: &PartitionLog,
    spec: &ConfigSpec,
    model: &mut Model,
    specs: &[RecordSpec],
) -> CaseResult {
    let records: Vec<Record> = specs.iter().map(RecordSpec::build).collect();
    let bytes = encoded_len(&records) as u64;
    let result = log.append_records(&records).await;
    if bytes > spec.segment_bytes {
        prop_assert!(
            matches!(result, Err(LogError::BatchTooLarge { .. })),
            "{} byte batch in {} byte segments: {:?}",
            bytes,
            spec.segment_bytes,
            result.map(|_| ())
        );
        return Ok(());
    }
    if model.refuses_epoch(model.leader_epoch) {
        prop_assert!(
            matches!(result, Err(LogError::EpochRegression { .. })),
            "append at stale epoch {} after {:?}: {:?}",
            model.leader_epoch,
            model.latest_epoch(),
            result.map(|_| ())
        );
        return Ok(());
    }
    let appended = result.map_err(|e| fail("append", e))?;
    let base = model.end();
    prop_assert_eq!(appended.base_offset, Offset(base));
    prop_assert_eq!(
        appended.last_offset,
        Offset(base + records.len() as u64 - 1)
    );
    let epoch = model.leader_epoch;
    model.push(base, records, bytes, epoch);
    Ok(())
}

async fn append_replicated(
    log: &PartitionLog,
    spec: &ConfigSpec,
    model: &mut Model,
    batches: &[Vec<RecordSpec>],
    epoch: i32,
    stale: bool,
) -> CaseResult {
    let stale = stale && model.end() > 0;
    let mut wire = Vec::new();
    let mut pending = Vec::new();
    let mut base = if stale { model.end() - 1 } else { model.end() };
    for specs in batches {
        let records: Vec<Record> = specs.iter().map(RecordSpec::build).collect();
        let bytes = encoded_len(&records) as u64;
        if bytes > spec.segment_bytes {
            continue; // a leader never has a batch larger than a segment
        }
        let mut one = Vec::new();
        encode_batch(Offset(base), &records, &mut one);
        set_leader_epoch(&mut one, LeaderEpoch(epoch));
        wire.extend_from_slice(&one);
        let next = base + records.len() as u64;
        pending.push((base, records, bytes));
        base = next;
    }
    let result = log.append_replicated(&wire).await;
    if pending.is_empty() {
        // Nothing to send (every batch was too large): a no-op.
        let new_end = result.map_err(|e| fail("append_replicated", e))?;
        prop_assert_eq!(new_end, Offset(model.end()));
        return Ok(());
    }
    if stale {
        prop_assert!(
            matches!(result, Err(LogError::NonContiguous { .. })),
            "overlapping replicated batch accepted: {:?}",
            result
        );
        return Ok(());
    }
    if model.refuses_epoch(epoch) {
        prop_assert!(
            matches!(result, Err(LogError::EpochRegression { .. })),
            "replicated batches of stale epoch {} after {:?}: {:?}",
            epoch,
            model.latest_epoch(),
            result
        );
        return Ok(());
    }
    let new_end = result.map_err(|e| fail("append_replicated", e))?;
    prop_assert_eq!(new_end, Offset(base));
    for (base, records, bytes) in pending {
        model.push(base, records, bytes, epoch);
    }
    Ok(())
}

async fn truncate(log: &PartitionLog, model: &mut Model, at: u64) -> CaseResult {
    let end = model.end();
    let target = at % (end + 2);
    let got = log
        .truncate_to(Offset(target))
        .await
        .map_err(|e| fail("truncate_to", e))?;
    let (expected, keep) = match model.holding(target) {
        Some(i) => (model.batches[i].base, i),
        None => (end, model.batches.len()),
    };
    prop_assert_eq!(
        got,
        Offset(expected),
        "truncate_to({}) with end {}",
        target,
        end
    );
    prop_assert!(got.0 <= target.max(end));
    model.truncated(expected);
    prop_assert_eq!(model.batches.len(), keep);
    check_full_scan(log, model, 8192).await
}

// ------------------------------------------------------------ the checks

fn same_record(got: &DecodedRecord, offset: u64, want: &Record) -> CaseResult {
    prop_assert_eq!(got.offset, Offset(offset));
    prop_assert_eq!(got.timestamp, want.timestamp, "offset {}", offset);
    prop_assert_eq!(&got.key, &want.key, "offset {}", offset);
    prop_assert_eq!(&got.value, &want.value, "offset {}", offset);
    prop_assert_eq!(&got.headers, &want.headers, "offset {}", offset);
    Ok(())
}

fn same_batch(
    header: &shards::batch::BatchHeader,
    records: &[DecodedRecord],
    want: &ModelBatch,
) -> CaseResult {
    prop_assert_eq!(header.base_offset, Offset(want.base));
    prop_assert_eq!(
        header.total_bytes() as u64,
        want.bytes,
        "batch {}",
        want.base
    );
    prop_assert_eq!(
        header.leader_epoch,
        LeaderEpoch(want.epoch),
        "batch {}",
        want.base
    );
    prop_assert_eq!(
        header.max_timestamp.0,
        want.max_timestamp(),
        "batch {}",
        want.base
    );
    prop_assert_eq!(records.len(), want.records.len(), "batch {}", want.base);
    for (i, (got, expected)) in records.iter().zip(&want.records).enumerate() {
        same_record(got, want.base + i as u64, expected)?;
    }
    Ok(())
}

async fn check_read(log: &PartitionLog, model: &Model, at: u64, max_bytes: u64) -> CaseResult {
    let end = model.end();
    let start = at % (end + 2);
    let result = log.read(Offset(start), max_bytes);
    if start > end {
        prop_assert!(
            matches!(result, Err(LogError::OffsetOutOfRange { .. })),
            "read past the end"
        );
        return Ok(());
    }
    let slice = result.map_err(|e| fail("read", e))?;
    let holding = model.holding(start);
    let readable = holding.filter(|&i| model.batches[i].next() <= model.hw);
    let (slice, first) = match (slice, readable) {
        (None, None) => return Ok(()),
        (Some(_), None) => {
            return Err(TestCaseError::fail(format!(
                "read({start}) returned data at or past the high watermark {}",
                model.hw
            )))
        }
        (None, Some(_)) => {
            return Err(TestCaseError::fail(format!(
                "read({start}) returned nothing below the high watermark {}",
                model.hw
            )))
        }
        (Some(slice), Some(first)) => (slice, first),
    };
    prop_assert_eq!(slice.high_watermark, Offset(model.hw));
    prop_assert_eq!(slice.log_start, Offset(0));
    prop_assert_eq!(slice.first_batch_offset, Offset(model.batches[first].base));
    let bytes = slice
        .read_bytes()
        .await
        .map_err(|e| fail("read_bytes", e))?;
    prop_assert_eq!(bytes.len() as u64, slice.len);
    let batches = decode_all(&bytes);
    prop_assert!(!batches.is_empty());
    if batches.len() > 1 {
        prop_assert!(
            slice.len <= max_bytes,
            "{} bytes > max {}",
            slice.len,
            max_bytes
        );
    }
    for (k, (header, records)) in batches.iter().enumerate() {
        let Some(want) = model.batches.get(first + k) else {
            return Err(TestCaseError::fail("read returned batches past the end"));
        };
        prop_assert!(want.next() <= model.hw, "batch {} past the HW", want.base);
        same_batch(header, records, want)?;
    }
    // Maximal: the next batch would have fitted in the same segment.
    let segments = log.segments();
    let base = model.batches[first].base;
    let Some(segment) = segments
        .iter()
        .find(|s| s.base_offset.0 <= base && base < s.next_offset.0)
    else {
        return Err(TestCaseError::fail(format!("no segment holds {base}")));
    };
    if let Some(next) = model.batches.get(first + batches.len()) {
        let fits = slice.len.saturating_add(next.bytes) <= max_bytes;
        let same_segment = next.base < segment.next_offset.0;
        prop_assert!(
            !(fits && same_segment && next.next() <= model.hw),
            "read({}) stopped before batch {} that fits",
            start,
            next.base
        );
    }
    Ok(())
}

async fn check_full_scan(log: &PartitionLog, model: &Model, max_bytes: u64) -> CaseResult {
    let batches = read_all(log, max_bytes).await;
    let readable = model.batches.partition_point(|b| b.next() <= model.hw);
    prop_assert_eq!(
        batches.len(),
        readable,
        "readable end {}",
        model.readable_end()
    );
    for ((header, records), want) in batches.iter().zip(&model.batches) {
        same_batch(header, records, want)?;
    }
    Ok(())
}

fn check_invariants(log: &PartitionLog, spec: &ConfigSpec, model: &Model) -> CaseResult {
    let end = model.end();
    prop_assert!(!log.is_failed());
    prop_assert_eq!(log.log_start_offset(), Offset(0));
    prop_assert_eq!(log.log_end_offset(), Offset(end));
    prop_assert_eq!(log.stable_offset(), Offset(end));
    prop_assert_eq!(log.high_watermark(), Offset(model.hw));
    let segments = log.segments();
    prop_assert!(!segments.is_empty());
    prop_assert_eq!(segments[0].base_offset, Offset(0));
    let mut expected_base = 0;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        prop_assert_eq!(segment.base_offset, Offset(expected_base), "{:?}", segments);
        prop_assert_eq!(segment.active, last, "{:?}", segments);
        prop_assert!(segment.size_bytes <= spec.segment_bytes, "{:?}", segment);
        let inside: Vec<&ModelBatch> = model
            .batches
            .iter()
            .filter(|b| b.base >= segment.base_offset.0 && b.base < segment.next_offset.0)
            .collect();
        let starts_at_batch = inside.first().map_or(segment.base_offset.0 == end, |b| {
            b.base == segment.base_offset.0
        });
        prop_assert!(
            starts_at_batch,
            "segment {:?} not at a batch boundary",
            segment
        );
        let ends_at_batch = inside
            .last()
            .is_none_or(|b| b.next() == segment.next_offset.0);
        prop_assert!(ends_at_batch, "segment {:?} splits a batch", segment);
        let bytes: u64 = inside.iter().map(|b| b.bytes).sum();
        prop_assert_eq!(segment.size_bytes, bytes, "{:?}", segment);
        let max_ts = inside.iter().map(|b| b.max_timestamp()).max().unwrap_or(-1);
        prop_assert_eq!(segment.max_timestamp.0, max_ts, "{:?}", segment);
        expected_base = segment.next_offset.0;
    }
    prop_assert_eq!(expected_base, end);
    check_epochs(log, model)
}

fn check_epochs(log: &PartitionLog, model: &Model) -> CaseResult {
    let entries: Vec<(i32, u64)> = log
        .epoch_entries()
        .iter()
        .map(|e| (e.epoch.0, e.start_offset.0))
        .collect();
    prop_assert_eq!(entries, model.epochs());
    prop_assert_eq!(log.latest_epoch().map(|e| e.0), model.latest_epoch());
    for requested in -1..8 {
        let got = log
            .end_offset_for_epoch(LeaderEpoch(requested))
            .map(|(e, o)| (e.0, o.0));
        prop_assert_eq!(
            got,
            model.end_offset_for_epoch(requested),
            "end_offset_for_epoch({}) with leader epoch {}",
            requested,
            model.leader_epoch
        );
    }
    Ok(())
}

/// Removes or damages the (closed) log's epoch checkpoint; returns whether
/// the next open must rebuild the cache (a flip of a byte always breaks the
/// CRC or the header; a cut to the full length changes nothing).
fn damage_epoch_checkpoint(
    path: &std::path::Path,
    remove: bool,
    flip: bool,
    at: usize,
) -> Result<bool, TestCaseError> {
    let file = path.join(LEADER_EPOCH_FILE);
    let io = |e: std::io::Error| TestCaseError::fail(format!("{}: {e}", file.display()));
    if remove {
        std::fs::remove_file(&file).map_err(io)?;
        return Ok(true);
    }
    let mut bytes = std::fs::read(&file).map_err(io)?;
    if flip {
        let at = at % bytes.len();
        bytes[at] ^= 0x01;
    } else {
        let at = at % (bytes.len() + 1);
        if at == bytes.len() {
            return Ok(false);
        }
        bytes.truncate(at);
    }
    std::fs::write(&file, &bytes).map_err(io)?;
    Ok(true)
}

// ------------------------------------------- focused regression tests

fn record_of(i: u64, value_bytes: usize) -> Record {
    Record {
        timestamp: TimestampMs(TS_BASE + i as i64),
        key: Some(Bytes::from(format!("key-{i}"))),
        value: Some(Bytes::from(fill(i, value_bytes))),
        headers: Vec::new(),
    }
}

/// Checks, every 200 µs until `stop`, what any reader of the log may rely
/// on: the segments cover `[log_start, log_end)` without a hole (the tail
/// may briefly reach past the end while a truncation runs), and the last
/// one is the active one. Returns how many checks ran.
fn spawn_observer(
    log: std::rc::Rc<PartitionLog>,
    stop: std::rc::Rc<std::cell::Cell<bool>>,
) -> glommio::Task<u64> {
    glommio::spawn_local(async move {
        let mut checks = 0;
        while !stop.get() {
            let end = log.log_end_offset();
            let segments = log.segments();
            let last = segments.last().expect("a log always has a segment");
            assert!(last.active, "last segment not active: {segments:?}");
            assert!(last.next_offset >= end, "hole below {end}: {segments:?}");
            for pair in segments.windows(2) {
                assert_eq!(pair[0].next_offset, pair[1].base_offset, "{segments:?}");
            }
            checks += 1;
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
        checks
    })
}

/// Found by the model: `roll` takes the active segment out of the segment
/// map while it seals it (log.rs `roll`, "take the segment out, seal, put it
/// back"), and `truncate_to` does the same with `pop_last`. Meanwhile the
/// sync task calls `LogState::active()`, which panics when that was the only
/// segment and otherwise returns the previous, sealed segment (the sync then
/// covers the wrong file but marks the new offsets stable); `segments()`,
/// `read` and `offset_for_timestamp` see a hole. Here a replicated append of
/// three batches rolls between the second and third while a 1 ms interval
/// sync is due, and an observer looks at the log during every seal.
#[test]
fn interval_sync_during_a_roll_finds_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let mut config = LogConfig::new(&path);
        config.segment_bytes = 4096;
        config.sync = SyncPolicy::Interval(Duration::from_millis(1));
        let (log, _) = PartitionLog::open(config).await.expect("open");
        let log = std::rc::Rc::new(log);
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let observer = spawn_observer(log.clone(), stop.clone());
        for round in 0..20u64 {
            let mut wire = Vec::new();
            let mut base = log.log_end_offset().0;
            for i in 0..3 {
                encode_batch(Offset(base), &[record_of(round * 3 + i, 1500)], &mut wire);
                base += 1;
            }
            let end = log.append_replicated(&wire).await.expect("append");
            assert_eq!(end, Offset(base));
        }
        stop.set(true);
        assert!(observer.await > 0);
        assert_eq!(read_all(&log, 1 << 20).await.len(), 60);
    });
}

/// The same race with the default policy: concurrent producers keep a sync
/// in flight while one of them rolls the segment.
#[test]
fn concurrent_appends_across_rolls_stay_durable_and_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let mut config = LogConfig::new(&path);
        config.segment_bytes = 4096;
        let (log, _) = PartitionLog::open(config).await.expect("open");
        let log = std::rc::Rc::new(log);
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let observer = spawn_observer(log.clone(), stop.clone());
        let mut tasks = Vec::new();
        for producer in 0..8u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0..25 {
                    log.append_records(&[record_of(producer * 100 + i, 900)])
                        .await
                        .expect("append");
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        stop.set(true);
        assert!(observer.await > 0);
        assert_eq!(log.stable_offset(), Offset(200));
        assert_eq!(read_all(&log, 1 << 20).await.len(), 200);
    });
}

/// The same hole during `truncate_to`, which pops the tail segment out of
/// the map while it truncates it: appends keep a sync due meanwhile.
#[test]
fn truncation_during_concurrent_appends_keeps_an_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let mut config = LogConfig::new(&path);
        config.segment_bytes = 8192;
        let (log, _) = PartitionLog::open(config).await.expect("open");
        let log = std::rc::Rc::new(log);
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let observer = spawn_observer(log.clone(), stop.clone());
        let mut tasks = Vec::new();
        for producer in 0..4u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0..40 {
                    match log
                        .append_records(&[record_of(producer * 100 + i, 300)])
                        .await
                    {
                        // Truncated away before it became durable.
                        Ok(_) | Err(LogError::Closed) => {}
                        Err(err) => panic!("append: {err}"),
                    }
                }
            }));
        }
        for _ in 0..6 {
            glommio::timer::sleep(Duration::from_millis(15)).await;
            let end = log.log_end_offset().0;
            log.truncate_to(Offset(end / 2)).await.expect("truncate");
        }
        for task in tasks {
            task.await;
        }
        stop.set(true);
        assert!(observer.await > 0);
        let end = log.log_end_offset();
        assert_eq!(log.stable_offset(), end);
        let read: Vec<_> = read_all(&log, 1 << 20)
            .await
            .into_iter()
            .flat_map(|(_, records)| records)
            .collect();
        assert_eq!(read.len() as u64, end.0);
        for (i, record) in read.iter().enumerate() {
            assert_eq!(record.offset, Offset(i as u64));
        }
    });
}

/// A replicated log's high watermark comes back from the checkpoint file on
/// open. `truncate_to` lowers the in-memory HW but leaves the file alone, so
/// after a truncation below the checkpointed HW, new (uncommitted) appends
/// and an unclean restart, the log resumes from the stale checkpoint and
/// serves offsets that were never committed.
#[test]
fn replicated_hw_after_an_unclean_restart_stays_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    let config = move || {
        let mut config = LogConfig::new(&path);
        config.commit = CommitMode::Replicated;
        config
    };
    let first = config();
    let hw_before = run_on_executor(async move {
        let (log, _) = PartitionLog::open(first).await.expect("open");
        for i in 0..50 {
            log.append_records(&[record_of(i, 10)])
                .await
                .expect("append");
        }
        log.advance_high_watermark(Offset(50));
        log.checkpoint_high_watermark().await.expect("checkpoint");
        // A follower drops a divergent tail, then takes new data that the
        // leader has not committed yet.
        assert_eq!(
            log.truncate_to(Offset(30)).await.expect("truncate"),
            Offset(30)
        );
        for i in 0..30 {
            log.append_records(&[record_of(100 + i, 10)])
                .await
                .expect("append");
        }
        let hw = log.high_watermark();
        drop(log); // crash: no close, no checkpoint
        hw
    });
    assert_eq!(hw_before, Offset(30));
    let second = config();
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(second).await.expect("reopen");
        assert!(
            log.high_watermark() <= hw_before,
            "HW {} after restart, {} before: offsets {}..{} were never committed",
            log.high_watermark(),
            hw_before,
            hw_before,
            log.high_watermark()
        );
        log.close().await.expect("close");
    });
}
