//! Writes the small seed corpora under `fuzz/corpus/<target>/` from real
//! encoded data (run once; the output is committed):
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use shards::batch::{encode_batch, Header, Record};
use shards::log::{LogConfig, PartitionLog, CLEAN_SHUTDOWN_FILE};
use shards::types::{Offset, TimestampMs};
use sluice::protocol::envelope::{
    encode_envelope, AckPolicy, Envelope, Header as EnvelopeHeader, ENVELOPE_COOKIE,
};
use sluice::protocol::frame::{encode_frame, FrameKind};
use sluice::protocol::fetch::{FetchRequest, FetchStart};
use sluice::protocol::metadata::MetadataRequest;
use sluice::protocol::publish::PublishRequest;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    frames(&root.join("frame_decoder"));
    envelopes(&root.join("envelope"));
    batches(&root.join("record_batch"));
    segments(&root.join("segment_recovery"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed");
}

fn record(i: i64, key: Option<&'static str>, value: &str, headers: usize) -> Record {
    Record {
        timestamp: TimestampMs(1_700_000_000_000 + i * 7),
        key: key.map(|k| Bytes::from_static(k.as_bytes())),
        value: Some(Bytes::from(value.to_string())),
        headers: (0..headers)
            .map(|h| Header {
                key: Bytes::from(format!("h{h}")),
                value: (h % 2 == 0).then(|| Bytes::from(format!("v{h}"))),
            })
            .collect(),
    }
}

fn batch(base: u64, records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_batch(Offset(base), records, &mut out);
    out
}

fn frames(dir: &Path) {
    let mut stream = BytesMut::new();
    let metadata = MetadataRequest {
        streams: vec!["orders".into()],
    }
    .encode();
    encode_frame(FrameKind::MetadataRequest, 1, &metadata, &mut stream).expect("frame");

    let payload = batch(0, &[record(0, Some("k"), "hello", 1), record(1, None, "world", 0)]);
    let publish = PublishRequest {
        stream: "orders",
        partition: 0,
        ack_policy: None,
        batch: Some(&payload),
    }
    .encode();
    encode_frame(FrameKind::PublishRequest, 2, &publish, &mut stream).expect("frame");

    let fetch = FetchRequest::consumer("orders", 0, FetchStart::Earliest, 1 << 20, 100).encode();
    encode_frame(FrameKind::FetchRequest, 3, &fetch, &mut stream).expect("frame");

    for (i, selector) in [3u8, 2, 6].into_iter().enumerate() {
        write(dir, &format!("stream-{i}"), &[&[selector][..], &stream[..]].concat());
    }
    write(dir, "unknown-kind", &[3, 0, 0, 0, 5, 0x7e, 0, 0, 0, 9]);
}

fn envelopes(dir: &Path) {
    let full = Envelope {
        key: Some(Bytes::from_static(b"customer-42")),
        headers: vec![EnvelopeHeader {
            key: "trace".into(),
            value: Some(Bytes::from_static(b"abc")),
        }],
        value: Some(Bytes::from_static(b"{\"amount\": 12}")),
        ack_inbox: Some("_INBOX.acks".into()),
        correlation_id: Some("c-1".into()),
        ack_policy: Some(AckPolicy::All),
        partition: Some(3),
    };
    let minimal = Envelope {
        key: None,
        headers: Vec::new(),
        value: None,
        ack_inbox: None,
        correlation_id: None,
        ack_policy: None,
        partition: None,
    };
    for (i, envelope) in [full, minimal].iter().enumerate() {
        let encoded = encode_envelope(envelope).expect("envelope");
        let body = &encoded[ENVELOPE_COOKIE.len()..];
        write(dir, &format!("envelope-{i}"), &[&[1u8][..], body].concat());
    }
    write(dir, "plain", b"\x10plain NATS payload");
}

fn batches(dir: &Path) {
    write(dir, "one-record", &[&[0u8][..], &batch(0, &[record(0, Some("k"), "v", 0)])].concat());
    let many: Vec<Record> = (0..5).map(|i| record(i, None, "value", (i % 3) as usize)).collect();
    write(dir, "five-records", &[&[0u8][..], &batch(100, &many)].concat());
}

fn segments(dir: &Path) {
    // Plain concatenated batches, as after a crash (no indexes, no marker).
    let mut log = Vec::new();
    for i in 0..4 {
        log.extend(batch(i * 2, &[record(i as i64, Some("k"), "segment", 1), record(0, None, "x", 0)]));
    }
    write(dir, "batches", &[&[0u8, 0, 0][..], &log].concat());
    // A real partition directory written by the log and closed cleanly.
    let temp = std::env::temp_dir().join(format!("sluice-seeds-{}", std::process::id()));
    let log_dir = temp.join("p");
    std::fs::create_dir_all(&temp).expect("temp dir");
    let dir_for_log = log_dir.clone();
    shards::testing::run_on_executor(async move {
        let mut config = LogConfig::new(&dir_for_log);
        config.segment_bytes = 64 * 1024;
        config.index_interval_bytes = 256;
        let (log, _) = PartitionLog::open(config).await.expect("open");
        for i in 0..12 {
            log.append_records(&[record(i, Some("key"), &"v".repeat(40), 1)])
                .await
                .expect("append");
        }
        log.close().await.expect("close");
    });
    let name = format!("{:020}", 0);
    let read = |ext: &str| std::fs::read(log_dir.join(format!("{name}.{ext}"))).unwrap_or_default();
    let (segment, index, time_index) = (read("log"), read("index"), read("timeindex"));
    let end = segment.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let clean = log_dir.join(CLEAN_SHUTDOWN_FILE).exists();
    let flags = if clean { 2u8 } else { 0 };
    let seed = [
        &[flags, (index.len() / 8) as u8, (time_index.len() / 12) as u8][..],
        &index,
        &time_index,
        &segment[..end],
    ]
    .concat();
    write(dir, "closed-log", &seed);
    // The same files as found after a crash (no marker: a full scan).
    let mut crashed = seed.clone();
    crashed[0] = 0;
    write(dir, "crashed-log", &crashed);
    let _ = std::fs::remove_dir_all(temp);
}
