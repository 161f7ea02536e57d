//! Compressed batches through a real server: a batch compressed with each
//! Kafka codec, published over the native TCP protocol, is stored as sent
//! and read back with the right records by the Rust client and by
//! `sluice consume`; a decompression bomb is refused as an invalid batch
//! and the connection keeps being served.

mod common;
// Only its raw publish is used here.
#[allow(dead_code)]
#[path = "common/replicas.rs"]
mod replicas;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{NatsServer, Sluice};
use replicas::{raw_publish_batch, RawPublish};
use shards::batch::{
    decode_batch, encode_batch, encode_batch_preserving_offsets_compressed, Compression,
    DecodedRecord, Header, Record,
};
use shards::types::{Offset, TimestampMs};
use sluice::client::{Client, FetchStart, StreamConfig};
use sluice::protocol::envelope::AckPolicy;
use sluice::protocol::error_code::ErrorCode;

const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn records(codec: Compression, count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            timestamp: TimestampMs(1_700_000_000_000 + i as i64),
            key: (i % 2 == 0).then(|| Bytes::from(format!("{codec}-key-{i}"))),
            value: Some(Bytes::from(format!("{codec} value {i} {:x<200}", ""))),
            headers: vec![
                Header {
                    key: Bytes::from_static(b"codec"),
                    value: Some(Bytes::from(codec.name())),
                },
                Header {
                    key: Bytes::from_static(b"none"),
                    value: None,
                },
            ],
        })
        .collect()
}

/// `records` as one batch compressed with `codec`, as a Kafka producer
/// would send it.
fn compressed_batch(codec: Compression, records: &[Record]) -> Vec<u8> {
    let mut plain = Vec::new();
    encode_batch(Offset::ZERO, records, &mut plain);
    let (header, decoded) = decode_batch(&Bytes::from(plain)).expect("valid");
    let mut out = Vec::new();
    encode_batch_preserving_offsets_compressed(
        header.base_offset,
        header.last_offset_delta,
        &decoded,
        codec,
        &mut out,
    )
    .expect("compress");
    out
}

fn connect(addr: SocketAddr) -> TcpStream {
    let socket = TcpStream::connect(addr).expect("connect");
    socket.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    socket
}

fn fetch_all(client: &mut Client, stream: &str, count: usize) -> Vec<DecodedRecord> {
    let mut out = Vec::new();
    let mut next = FetchStart::Earliest;
    for _ in 0..100 {
        if out.len() >= count {
            break;
        }
        let result = client
            .fetch(stream, 0, next, 1 << 20, Duration::from_millis(200))
            .expect("fetch");
        out.extend(result.records);
        next = FetchStart::Offset(result.next_offset);
    }
    out
}

/// The first segment file of partition 0 of `stream` (preallocated: zeros
/// follow the batches).
fn segment_bytes(node: &Sluice, stream: &str) -> Vec<u8> {
    let root = node.data_dir.join("partitions");
    let dir = std::fs::read_dir(&root)
        .expect("partitions dir")
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{stream}-"))
        })
        .expect("the stream's directory")
        .path();
    std::fs::read(dir.join("0").join("00000000000000000000.log")).expect("segment file")
}

#[test]
fn compressed_batches_published_over_tcp_read_back_with_their_records() {
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 1);
    let mut client = Client::connect(&node.listen.to_string()).expect("connect");
    client
        .create_stream(&StreamConfig::new("zipped", "zipped"))
        .expect("create stream");

    let mut socket = connect(node.listen);
    let mut sent: Vec<(Offset, Record)> = Vec::new();
    let mut batches: Vec<(Offset, Vec<u8>)> = Vec::new();
    for codec in CODECS {
        let records = records(codec, 25);
        let batch = compressed_batch(codec, &records);
        match raw_publish_batch(&mut socket, "zipped", &batch, AckPolicy::Leader) {
            RawPublish::Acked { base, last } => {
                assert_eq!(last.0 - base.0 + 1, records.len() as u64, "{codec}");
                sent.extend(
                    records
                        .into_iter()
                        .enumerate()
                        .map(|(i, r)| (base.plus(i as u64), r)),
                );
                batches.push((base, batch));
            }
            RawPublish::Refused(code) => panic!("{codec} batch refused: {code:?}"),
        }
    }

    // The Rust client decodes every codec.
    let got = fetch_all(&mut client, "zipped", sent.len());
    assert_eq!(got.len(), sent.len());
    for (g, (offset, r)) in got.iter().zip(&sent) {
        assert_eq!(g.offset, *offset);
        assert_eq!(g.timestamp, r.timestamp);
        assert_eq!(g.key, r.key);
        assert_eq!(g.value, r.value);
        assert_eq!(g.headers, r.headers);
    }

    // The bytes stored are the bytes sent, but for the stamped base offset
    // and leader epoch (outside the CRC).
    let raw = segment_bytes(&node, "zipped");
    let mut at = 0;
    for (base, batch) in &batches {
        let stored = &raw[at..at + batch.len()];
        assert_eq!(&stored[..8], &base.0.to_be_bytes());
        assert_eq!(&stored[8..12], &batch[8..12]);
        assert_eq!(&stored[16..], &batch[16..]);
        at += batch.len();
    }

    // `sluice consume` prints the records of compressed batches too.
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--server")
        .arg(node.listen.to_string())
        .args(["consume", "zipped", "--count", &sent.len().to_string()])
        .args(["--format", "json"])
        .output()
        .expect("run sluice consume");
    assert!(
        output.status.success(),
        "sluice consume: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.lines().count(), sent.len(), "{text}");
    for codec in CODECS {
        assert!(
            text.contains(&format!("{codec} value 24")),
            "{codec} missing: {text}"
        );
    }
}

#[test]
fn a_decompression_bomb_is_refused_and_the_connection_keeps_working() {
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 1);
    let mut client = Client::connect(&node.listen.to_string()).expect("connect");
    client
        .create_stream(&StreamConfig::new("bombs", "bombs"))
        .expect("create stream");

    // One record header, then 80 MiB of zeros as gzip: ~80 KiB on the wire.
    let template = compressed_batch(Compression::None, &records(Compression::None, 1));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..80 {
        encoder.write_all(&zeros).expect("gzip");
    }
    let bomb = encoder.finish().expect("gzip");
    let mut batch = template[..61].to_vec();
    batch.extend_from_slice(&bomb);
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[21..23].copy_from_slice(&1i16.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());

    let mut socket = connect(node.listen);
    match raw_publish_batch(&mut socket, "bombs", &batch, AckPolicy::Leader) {
        RawPublish::Refused(code) => assert_eq!(code, ErrorCode::InvalidBatch),
        RawPublish::Acked { .. } => panic!("a bomb was stored"),
    }
    // The same connection is served on.
    let good = compressed_batch(Compression::Zstd, &records(Compression::Zstd, 3));
    assert!(matches!(
        raw_publish_batch(&mut socket, "bombs", &good, AckPolicy::Leader),
        RawPublish::Acked {
            base: Offset(0),
            last: Offset(2)
        }
    ));
    assert_eq!(fetch_all(&mut client, "bombs", 3).len(), 3);
}
