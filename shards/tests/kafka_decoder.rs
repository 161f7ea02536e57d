//! Acceptance: an independent implementation of RecordBatch v2 — the
//! `kafka-protocol` crate — agrees with ours about the bytes on disk.
//!
//! 1. Its decoder reads every `*.log` segment file straight from disk (up
//!    to the preallocated zeros of the active segment) and finds every
//!    record with the right offset, timestamp, key, value, headers and
//!    leader epoch.
//! 2. Its encoder, given the same records, produces byte for byte the
//!    batches we stored (this also covers null header values, which its
//!    0.15 decoder cannot read: it compares the header value length with -2
//!    instead of -1 and then fails with "Not enough bytes remaining").

mod common;

use std::path::Path;

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use shards::batch::{Header, Record};
use shards::log::{LogConfig, PartitionLog};
use shards::testing::run_on_executor;
use shards::types::{LeaderEpoch, TimestampMs};

use common::{batch_layout, fill, release_closed_files, segment_files, Rng};

const TS_BASE: i64 = 1_700_000_000_000;
const SEGMENT_BYTES: u64 = 64 << 10;
/// Records in the test log, at least.
const RECORDS_MIN: usize = 3000;

struct Batch {
    epoch: i32,
    records: Vec<Record>,
}

/// Header keys are distinct UTF-8 strings (Kafka allows repeats and any
/// bytes, but `kafka-protocol` maps headers by `String` key).
fn dataset(seed: u64, null_header_values: bool, monotonic_timestamps: bool) -> Vec<Batch> {
    let mut rng = Rng::new(seed);
    let mut batches = Vec::new();
    let mut count = 0;
    let mut epoch = -1;
    let mut ts = TS_BASE;
    while count < RECORDS_MIN {
        if rng.chance(5) {
            // Leader epochs only grow along a log (the log refuses a stale one).
            epoch += 1 + rng.range(0, 50) as i32;
        }
        let records: Vec<Record> = (0..rng.range(1, 11))
            .map(|_| {
                ts = if monotonic_timestamps {
                    ts + rng.range(0, 50) as i64
                } else {
                    TS_BASE + rng.range(0, 200_000) as i64 - 100_000
                };
                let value_len = match rng.range(0, 4) {
                    0 => 0,
                    1 => rng.range(0, 64),
                    2 => rng.range(0, 1024),
                    _ => rng.range(0, 5000),
                } as usize;
                let headers = (0..rng.range(0, 4))
                    .map(|j| Header {
                        key: Bytes::from(format!("h{j}-{}", rng.range(0, 1000))),
                        value: (!null_header_values || rng.chance(70))
                            .then(|| Bytes::from(fill(rng.next_u64(), rng.range(0, 20) as usize))),
                    })
                    .collect();
                Record {
                    timestamp: TimestampMs(ts),
                    key: rng
                        .chance(80)
                        .then(|| Bytes::from(fill(rng.next_u64(), rng.range(0, 50) as usize))),
                    value: rng
                        .chance(95)
                        .then(|| Bytes::from(fill(rng.next_u64(), value_len))),
                    headers,
                }
            })
            .collect();
        count += records.len();
        batches.push(Batch { epoch, records });
    }
    batches
}

/// Writes the batches to a log in `dir` and closes it.
fn write_log(dir: &Path, batches: &[Batch]) {
    let dir = dir.to_path_buf();
    let batches: Vec<(i32, Vec<Record>)> = batches
        .iter()
        .map(|b| (b.epoch, b.records.clone()))
        .collect();
    run_on_executor(async move {
        let mut config = LogConfig::new(&dir);
        config.segment_bytes = SEGMENT_BYTES;
        let (log, _) = PartitionLog::open(config).await.expect("open");
        let mut next = 0u64;
        for (epoch, records) in &batches {
            log.set_leader_epoch(LeaderEpoch(*epoch));
            let appended = log.append_records(records).await.expect("append");
            assert_eq!(appended.base_offset.0, next);
            next += records.len() as u64;
        }
        assert!(
            log.segments().len() >= 4,
            "the log must span several segments"
        );
        log.close().await.expect("close");
        release_closed_files().await;
    });
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

#[test]
fn kafka_protocol_decodes_every_segment_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("p0");
    let expected = dataset(1, false, false);
    write_log(&dir, &expected);

    let files = segment_files(&dir);
    assert!(files.len() >= 4, "{} segments", files.len());
    let mut batches = expected.iter();
    let mut next_offset = 0i64;
    for (i, (base, path)) in files.iter().enumerate() {
        let active = i + 1 == files.len();
        assert_eq!(
            *base as i64,
            next_offset,
            "{} starts elsewhere",
            path.display()
        );
        let mut buf = Bytes::from(std::fs::read(path).expect("read segment file"));
        // Bounded: every iteration consumes one batch of at least 61 bytes.
        for _ in 0..=buf.len() / 61 {
            if buf.len() < 12 || is_zero(&buf[8..12]) {
                break;
            }
            let set = match RecordBatchDecoder::decode(&mut buf) {
                Ok(set) => set,
                Err(err) => panic!("kafka-protocol rejects {}: {err}", path.display()),
            };
            let Some(batch) = batches.next() else {
                panic!("{} holds more batches than were written", path.display());
            };
            assert_eq!(set.version, 2);
            assert_eq!(set.compression, Compression::None);
            assert_eq!(set.records.len(), batch.records.len());
            for (got, want) in set.records.iter().zip(&batch.records) {
                assert_eq!(got.offset, next_offset);
                assert_eq!(got.timestamp, want.timestamp.0, "offset {next_offset}");
                assert_eq!(got.key, want.key, "offset {next_offset}");
                assert_eq!(got.value, want.value, "offset {next_offset}");
                let want_headers: Vec<(String, Option<Bytes>)> = want
                    .headers
                    .iter()
                    .map(|h| {
                        let key = std::str::from_utf8(&h.key).expect("UTF-8 header key");
                        (key.to_string(), h.value.clone())
                    })
                    .collect();
                let got_headers: Vec<(String, Option<Bytes>)> = got
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                    .collect();
                assert_eq!(got_headers, want_headers, "offset {next_offset}");
                assert_eq!(
                    got.partition_leader_epoch, batch.epoch,
                    "offset {next_offset}"
                );
                assert_eq!(got.producer_id, -1);
                assert_eq!(got.producer_epoch, -1);
                assert!(!got.transactional && !got.control);
                assert_eq!(got.timestamp_type, TimestampType::Creation);
                next_offset += 1;
            }
        }
        if active {
            assert!(!buf.is_empty(), "the active segment is preallocated");
            assert!(
                is_zero(&buf),
                "bytes after the last batch of the active segment"
            );
        } else {
            assert!(
                buf.is_empty(),
                "{} is not sealed to its exact size",
                path.display()
            );
        }
    }
    assert!(batches.next().is_none(), "batches missing from the files");
    let total: usize = expected.iter().map(|b| b.records.len()).sum();
    assert_eq!(next_offset as usize, total);
}

#[test]
fn kafka_protocol_encoder_produces_our_bytes() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("p0");
    // Kafka's base timestamp is the batch's first; kafka-protocol's encoder
    // takes the smallest, so the two agree when timestamps do not decrease.
    let expected = dataset(2, true, true);
    assert!(expected
        .iter()
        .flat_map(|b| &b.records)
        .flat_map(|r| &r.headers)
        .any(|h| h.value.is_none()));
    write_log(&dir, &expected);

    let mut batches = expected.iter();
    let mut next_offset = 0i64;
    for (_, path) in segment_files(&dir) {
        let bytes = std::fs::read(&path).expect("read segment file");
        for (position, len, _) in batch_layout(&bytes) {
            let ours = &bytes[position..position + len];
            let Some(batch) = batches.next() else {
                panic!("{} holds more batches than were written", path.display());
            };
            let theirs_records: Vec<kafka_protocol::records::Record> = batch
                .records
                .iter()
                .enumerate()
                .map(|(i, r)| kafka_protocol::records::Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: batch.epoch,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: next_offset + i as i64,
                    // Base sequence -1: the encoder derives it from these.
                    sequence: i as i32 - 1,
                    timestamp: r.timestamp.0,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| {
                            let key = StrBytes::try_from(h.key.clone()).expect("UTF-8 key");
                            (key, h.value.clone())
                        })
                        .collect(),
                })
                .collect();
            let mut theirs = bytes::BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            };
            RecordBatchEncoder::encode(&mut theirs, &theirs_records, &options)
                .expect("kafka-protocol encodes");
            assert_eq!(
                ours,
                &theirs[..],
                "batch at offset {next_offset} differs from kafka-protocol's encoding"
            );
            next_offset += batch.records.len() as i64;
        }
    }
    assert!(batches.next().is_none(), "batches missing from the files");
}
