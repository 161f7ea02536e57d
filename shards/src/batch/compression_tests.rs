//! Tests of compressed batches: kafka-protocol (0.18, with its gzip, snappy,
//! lz4 and zstd features) as the independent encoder, bounded
//! decompression, corrupt streams, and the log storing such a batch as it
//! arrived.

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KCompression, Record as KRecord, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use proptest::prelude::*;

use super::compression::{compress, decompress_with_limit};
use super::*;
use crate::constants::{BATCH_HEADER_BYTES, DECOMPRESSED_BATCH_BYTES_MAX};
use crate::error::DecodeError;
use crate::types::{LeaderEpoch, Offset, TimestampMs};

const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn kafka_codec(codec: Compression) -> KCompression {
    match codec {
        Compression::None => KCompression::None,
        Compression::Gzip => KCompression::Gzip,
        Compression::Snappy => KCompression::Snappy,
        Compression::Lz4 => KCompression::Lz4,
        Compression::Zstd => KCompression::Zstd,
    }
}

const PRODUCER_ID: i64 = 4_242;
const PRODUCER_EPOCH: i16 = 7;
const BASE_SEQUENCE: i32 = 100;

/// `count` records as an idempotent Kafka producer sends them: offsets from
/// 0, sequence numbers from `BASE_SEQUENCE`, keys, values (some null,
/// some compressible, some not) and headers (one with a null value).
fn kafka_records(count: i64) -> Vec<KRecord> {
    (0..count)
        .map(|i| {
            let mut headers = IndexMap::new();
            headers.insert(
                StrBytes::from_string(format!("trace-{i}")),
                Some(Bytes::from(format!("span {i}"))),
            );
            headers.insert(StrBytes::from_static_str("null"), None);
            let value = match i % 4 {
                0 => None,
                1 => Some(Bytes::from(vec![b'a'; 200 + i as usize])),
                // Not compressible: a byte pattern with a long period.
                2 => Some(Bytes::from(
                    (0..300u32)
                        .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i as u8)
                        .collect::<Vec<u8>>(),
                )),
                _ => Some(Bytes::from(format!("{{\"n\":{i},\"text\":\"hello\"}}"))),
            };
            KRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: PRODUCER_ID,
                producer_epoch: PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: BASE_SEQUENCE + i as i32,
                timestamp: 1_700_000_000_000 + (i % 5) * 10 - 20,
                key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                value,
                headers,
            }
        })
        .collect()
}

/// One batch of `records`, encoded by kafka-protocol with `codec`.
fn kafka_batch(records: &[KRecord], codec: Compression) -> Vec<u8> {
    let options = RecordEncodeOptions {
        version: 2,
        compression: kafka_codec(codec),
    };
    let mut buf = Vec::new();
    RecordBatchEncoder::encode(&mut buf, records, &options).expect("kafka-protocol encodes");
    buf
}

fn headers_of(record: &KRecord) -> Vec<Header> {
    record
        .headers
        .iter()
        .map(|(k, v)| Header {
            key: Bytes::from(k.clone()),
            value: v.clone(),
        })
        .collect()
}

/// Validates and decodes `batch` with our codec and compares every record
/// with what kafka-protocol was given.
fn assert_matches_kafka(batch: &[u8], records: &[KRecord], codec: Compression) {
    let header = validate_records(batch).expect("we validate kafka-protocol's batch");
    assert_eq!(header.compression, codec);
    assert_eq!(header.attributes, i16::from(codec.code()));
    assert_eq!(header.producer_id, PRODUCER_ID);
    assert_eq!(header.producer_epoch, PRODUCER_EPOCH);
    assert_eq!(header.base_sequence, BASE_SEQUENCE);
    assert_eq!(header.records_count as usize, records.len());
    let mut shapes = Vec::new();
    let walked = validate_records_with(batch, |shape| {
        shapes.push(shape);
        Ok::<(), DecodeError>(())
    })
    .expect("the walk with a visitor agrees");
    assert_eq!(walked, header);
    let (decoded_header, decoded) =
        decode_batch(&Bytes::copy_from_slice(batch)).expect("we decode kafka-protocol's batch");
    assert_eq!(decoded_header, header);
    assert_eq!(decoded.len(), records.len());
    assert_eq!(shapes.len(), records.len());
    for ((d, k), shape) in decoded.iter().zip(records).zip(&shapes) {
        assert_eq!(d.offset, Offset(k.offset as u64));
        assert_eq!(d.timestamp, TimestampMs(k.timestamp));
        assert_eq!(d.key, k.key);
        assert_eq!(d.value, k.value);
        assert_eq!(d.headers, headers_of(k));
        // The visitor sees the decompressed records' headers.
        assert_eq!(shape.headers, d.headers.len());
        let bytes: usize = d
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum();
        assert_eq!(shape.header_bytes, bytes);
    }
}

#[test]
fn kafka_protocol_batches_of_every_codec_validate_and_decode() {
    for count in [1, 3, 250] {
        let records = kafka_records(count);
        for codec in CODECS {
            let batch = kafka_batch(&records, codec);
            let header = BatchHeader::parse(&batch).expect("header");
            assert_eq!(header.compression, codec, "{codec}: {count} records");
            assert_matches_kafka(&batch, &records, codec);
            let valid = ValidBatch::check(batch.clone()).expect("the log's check accepts it");
            assert_eq!(valid.as_bytes(), &batch[..], "validation keeps the bytes");
        }
    }
}

#[test]
fn compressed_batches_are_smaller_and_decode_to_the_uncompressed_records() {
    let records = kafka_records(250);
    let plain = kafka_batch(&records, Compression::None);
    let (_, expected) = decode_batch(&Bytes::from(plain.clone())).expect("plain");
    for codec in CODECS {
        let batch = kafka_batch(&records, codec);
        assert!(batch.len() < plain.len(), "{codec} did not compress");
        let (_, decoded) = decode_batch(&Bytes::from(batch)).expect("decode");
        assert_eq!(decoded, expected, "{codec}");
    }
}

/// A batch with the header fields of `plain` (an uncompressed batch) but
/// `codec` in its attributes and `section` as its records, with length
/// and CRC fixed: how a test builds compressed batches kafka-protocol
/// would not write (raw snappy, bombs, corrupt streams).
fn with_section(plain: &[u8], codec: Compression, section: &[u8]) -> Vec<u8> {
    let mut batch = plain[..BATCH_HEADER_BYTES].to_vec();
    batch.extend_from_slice(section);
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[21..23].copy_from_slice(&i16::from(codec.code()).to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

fn plain_and_section(records: &[KRecord]) -> (Vec<u8>, Vec<u8>) {
    let plain = kafka_batch(records, Compression::None);
    let section = plain[BATCH_HEADER_BYTES..].to_vec();
    (plain, section)
}

#[test]
fn raw_snappy_as_librdkafka_writes_it_decodes() {
    let records = kafka_records(40);
    let (plain, section) = plain_and_section(&records);
    let raw = snap::raw::Encoder::new()
        .compress_vec(&section)
        .expect("snappy");
    assert!(!raw.starts_with(b"\x82SNAPPY\x00"));
    assert_matches_kafka(
        &with_section(&plain, Compression::Snappy, &raw),
        &records,
        Compression::Snappy,
    );
}

#[test]
fn our_compressor_writes_what_we_and_kafka_protocol_read() {
    let records = kafka_records(100);
    let (plain, section) = plain_and_section(&records);
    for codec in CODECS {
        let mut compressed = Vec::new();
        compress(codec, &section, &mut compressed).expect("compress");
        let batch = with_section(&plain, codec, &compressed);
        assert_matches_kafka(&batch, &records, codec);
        let mut buf = Bytes::from(batch);
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf)
            .expect("kafka-protocol decodes our compressed batch");
        assert_eq!(sets[0].compression, kafka_codec(codec));
        assert_eq!(sets[0].records.len(), records.len());
    }
}

#[test]
fn gzip_of_several_members_decodes_as_one_stream() {
    let records = kafka_records(20);
    let (plain, section) = plain_and_section(&records);
    let (first, second) = section.split_at(section.len() / 2);
    let mut compressed = Vec::new();
    compress(Compression::Gzip, first, &mut compressed).expect("gzip");
    compress(Compression::Gzip, second, &mut compressed).expect("gzip");
    assert_matches_kafka(
        &with_section(&plain, Compression::Gzip, &compressed),
        &records,
        Compression::Gzip,
    );
}

#[test]
fn encoding_survivors_compressed_keeps_codec_offsets_and_range() {
    let records = kafka_records(60);
    for codec in CODECS {
        let (header, decoded) =
            decode_batch(&Bytes::from(kafka_batch(&records, codec))).expect("decode");
        let survivors: Vec<DecodedRecord> = decoded.into_iter().step_by(3).collect();
        let mut out = Vec::new();
        encode_batch_preserving_offsets_compressed(
            header.base_offset,
            header.last_offset_delta,
            &survivors,
            codec,
            &mut out,
        )
        .expect("encode");
        let (again_header, again) = decode_batch(&Bytes::from(out)).expect("decode again");
        assert_eq!(again_header.compression, codec);
        assert_eq!(again_header.last_offset(), header.last_offset());
        assert_eq!(again, survivors);
    }
}

// -- what stays refused ---------------------------------------------------

#[test]
fn unknown_codecs_are_a_typed_error() {
    let records = kafka_records(2);
    let (plain, section) = plain_and_section(&records);
    for code in 5u8..=7 {
        let mut batch = with_section(&plain, Compression::None, &section);
        batch[22] = code;
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate_records(&batch),
            Err(DecodeError::UnknownCompression { codec: code })
        );
        assert_eq!(
            BatchHeader::parse(&batch),
            Err(DecodeError::UnknownCompression { codec: code })
        );
    }
}

#[test]
fn compressed_batches_with_refused_bits_stay_refused() {
    // A compressed batch is still refused with LogAppendTime,
    // transactional, control or delete-horizon bits.
    let batch = kafka_batch(&kafka_records(3), Compression::Zstd);
    for bit in [1i16 << 3, 1 << 4, 1 << 5, 1 << 6, i16::MIN] {
        let attributes = i16::from(Compression::Zstd.code()) | bit;
        let mut bad = batch.clone();
        bad[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate_records(&bad),
            Err(DecodeError::UnsupportedAttributes { attributes })
        );
    }
}

// -- bombs and bounded output ---------------------------------------------

/// `len` zero bytes compressed with `codec`, without holding `len` bytes:
/// gzip and zstd stream their input.
fn compressed_zeros(codec: Compression, len: usize) -> Vec<u8> {
    use std::io::Write;
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    match codec {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            while left > 0 {
                let n = left.min(zeros.len());
                e.write_all(&zeros[..n]).expect("gzip");
                left -= n;
            }
            e.finish().expect("gzip")
        }
        Compression::Zstd => {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
            while left > 0 {
                let n = left.min(zeros.len());
                e.write_all(&zeros[..n]).expect("zstd");
                left -= n;
            }
            e.finish().expect("zstd")
        }
        other => {
            let mut out = Vec::new();
            compress(other, &vec![0u8; len], &mut out).expect("compress");
            out
        }
    }
}

#[test]
fn gzip_and_zstd_bombs_past_the_limit_are_refused() {
    let plain = kafka_batch(&kafka_records(1), Compression::None);
    for codec in [Compression::Gzip, Compression::Zstd] {
        let bomb = compressed_zeros(codec, DECOMPRESSED_BATCH_BYTES_MAX + 1);
        assert!(
            bomb.len() < DECOMPRESSED_BATCH_BYTES_MAX / 100,
            "{codec}: a bomb is small"
        );
        let batch = with_section(&plain, codec, &bomb);
        let expected = DecodeError::DecompressedTooLarge {
            codec,
            max: DECOMPRESSED_BATCH_BYTES_MAX,
        };
        assert_eq!(validate_records(&batch), Err(expected.clone()), "{codec}");
        assert_eq!(
            decode_batch(&Bytes::from(batch)).err(),
            Some(expected),
            "{codec}"
        );
    }
}

#[test]
fn every_codec_stops_at_the_limit_and_accepts_exactly_the_limit() {
    let limit = 100_000;
    for codec in CODECS {
        let over = compressed_zeros(codec, limit + 1);
        assert_eq!(
            decompress_with_limit(codec, &over, limit),
            Err(DecodeError::DecompressedTooLarge { codec, max: limit }),
            "{codec}"
        );
        let exact = compressed_zeros(codec, limit);
        let out = decompress_with_limit(codec, &exact, limit).expect("exactly the limit");
        assert_eq!(out.len(), limit, "{codec}");
        assert!(
            out.capacity() <= limit,
            "{codec}: buffer grew past the limit"
        );
    }
}

#[test]
fn a_snappy_block_claiming_a_huge_length_is_refused_before_allocating() {
    // Varint 0xffffffff: the block claims 4 GiB.
    let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    assert_eq!(
        decompress_with_limit(Compression::Snappy, &claim, DECOMPRESSED_BATCH_BYTES_MAX),
        Err(DecodeError::DecompressedTooLarge {
            codec: Compression::Snappy,
            max: DECOMPRESSED_BATCH_BYTES_MAX
        })
    );
    // The same inside xerial framing, spread over two blocks.
    let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    let block = snap::raw::Encoder::new()
        .compress_vec(&[0u8; 60_000])
        .expect("snappy");
    for _ in 0..2 {
        xerial.extend_from_slice(&(block.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&block);
    }
    assert!(matches!(
        decompress_with_limit(Compression::Snappy, &xerial, 100_000),
        Err(DecodeError::DecompressedTooLarge { .. })
    ));
}

#[test]
fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
    // Window log 31 (2 GiB) through a long-distance-matching encoder.
    use std::io::Write;
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
    e.set_parameter(zstd::zstd_safe::CParameter::WindowLog(31))
        .expect("window log");
    e.write_all(&[7u8; 10_000]).expect("zstd");
    let frame = e.finish().expect("zstd");
    let result = decompress_with_limit(Compression::Zstd, &frame, DECOMPRESSED_BATCH_BYTES_MAX);
    assert!(
        matches!(result, Err(DecodeError::BadCompressedRecords { .. })),
        "{result:?}"
    );
}

// -- corrupt streams --------------------------------------------------------

#[test]
fn corrupt_and_truncated_streams_are_refused_with_typed_errors() {
    let records = kafka_records(50);
    let (plain, section) = plain_and_section(&records);
    for codec in CODECS {
        let mut compressed = Vec::new();
        compress(codec, &section, &mut compressed).expect("compress");
        // Truncated: every codec notices a stream cut short.
        for cut in [1, compressed.len() / 2, compressed.len() - 1] {
            let batch = with_section(&plain, codec, &compressed[..cut]);
            let err = validate_records(&batch).expect_err("a truncated stream");
            assert!(
                matches!(err, DecodeError::BadCompressedRecords { codec: c, .. } if c == codec),
                "{codec} cut at {cut}: {err:?}"
            );
            assert_eq!(decode_batch(&Bytes::from(batch)).err(), Some(err));
        }
        // Flipped bytes (CRC fixed, so the decoder sees them): refused,
        // by the decoder's own checks or by the record walk after it.
        for at in (0..compressed.len()).step_by(7) {
            let mut bad = compressed.clone();
            bad[at] ^= 0x5a;
            let batch = with_section(&plain, codec, &bad);
            let validated = validate_records(&batch);
            let decoded = decode_batch(&Bytes::from(batch));
            assert_eq!(validated.clone().err(), decoded.clone().err());
            if let Ok((_, decoded)) = decoded {
                // Snappy has no checksum; a flip inside a literal leaves
                // a valid stream with other bytes.
                assert_eq!(decoded.len(), records.len());
            }
        }
    }
}

#[test]
fn gzip_checks_its_crc() {
    let records = kafka_records(5);
    let (plain, section) = plain_and_section(&records);
    let mut compressed = Vec::new();
    compress(Compression::Gzip, &section, &mut compressed).expect("gzip");
    // The gzip trailer: CRC-32 of the data, then its length.
    let crc_at = compressed.len() - 8;
    compressed[crc_at] ^= 1;
    let batch = with_section(&plain, Compression::Gzip, &compressed);
    assert!(matches!(
        validate_records(&batch),
        Err(DecodeError::BadCompressedRecords {
            codec: Compression::Gzip,
            ..
        })
    ));
}

#[test]
fn an_empty_compressed_section_is_refused() {
    let plain = kafka_batch(&kafka_records(1), Compression::None);
    for codec in CODECS {
        let batch = with_section(&plain, codec, &[]);
        let err = validate_records(&batch).expect_err("no stream");
        assert!(
            matches!(
                err,
                DecodeError::BadCompressedRecords { .. } | DecodeError::RecordCountMismatch { .. }
            ),
            "{codec}: {err:?}"
        );
    }
}

// -- the log stores what arrived --------------------------------------------

#[test]
fn the_log_stores_kafka_compressed_batches_byte_for_byte() {
    use crate::log::{LogConfig, PartitionLog};
    use crate::testing::run_on_executor;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let (log, _) = PartitionLog::open(LogConfig::new(&path))
            .await
            .expect("open");
        // An uncompressed batch first, so the compressed ones get base
        // offsets other than 0.
        log.append_records(&[Record {
            timestamp: TimestampMs(1),
            key: None,
            value: Some(Bytes::from_static(b"first")),
            headers: vec![],
        }])
        .await
        .expect("append");
        let records = kafka_records(30);
        let mut sent = Vec::new();
        for codec in CODECS {
            let batch = kafka_batch(&records, codec);
            let appended = log.append(batch.clone()).await.expect("append compressed");
            assert_eq!(
                appended.last_offset.0 - appended.base_offset.0 + 1,
                records.len() as u64
            );
            sent.push((codec, appended.base_offset, batch));
        }
        let start = sent[0].1;
        let slice = log.read(start, 1 << 20).expect("read").expect("data");
        let bytes = slice.read_bytes().await.expect("bytes");
        let stored: Vec<&[u8]> = BatchIter::new(&bytes)
            .map(|item| item.expect("valid").1)
            .collect();
        assert_eq!(stored.len(), sent.len());
        for ((codec, base, batch), stored) in sent.iter().zip(stored) {
            // Only baseOffset (0..8) and partitionLeaderEpoch (12..16) changed.
            assert_eq!(stored.len(), batch.len(), "{codec}");
            assert_eq!(&stored[8..12], &batch[8..12], "{codec}");
            assert_eq!(&stored[16..], &batch[16..], "{codec}: bytes changed");
            assert_eq!(&stored[..8], &base.0.to_be_bytes(), "{codec}");
            let (header, decoded) =
                decode_batch(&Bytes::copy_from_slice(stored)).expect("decode stored");
            assert_eq!(header.compression, *codec);
            assert_eq!(header.producer_id, PRODUCER_ID);
            assert_eq!(header.base_sequence, BASE_SEQUENCE);
            for (d, k) in decoded.iter().zip(&records) {
                assert_eq!(d.offset, Offset(base.0 + k.offset as u64));
                assert_eq!(d.key, k.key);
                assert_eq!(d.value, k.value);
                assert_eq!(d.headers, headers_of(k));
            }
        }
        assert!(header_epoch_is_stamped(&bytes, log.leader_epoch()));
        log.close().await.expect("close");
    });
}

fn header_epoch_is_stamped(bytes: &[u8], epoch: LeaderEpoch) -> bool {
    BatchIter::new(bytes).all(|item| item.is_ok_and(|(h, _)| h.leader_epoch == epoch))
}

// -- property tests -----------------------------------------------------------

fn codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(CODECS.to_vec())
}

proptest! {
    /// Arbitrary bytes as the records section of each codec: no panic,
    /// and validation and decoding agree.
    #[test]
    fn prop_arbitrary_sections_never_panic(
        codec in codec(),
        section in prop::collection::vec(any::<u8>(), 0..400),
        count in 0i32..4,
    ) {
        let plain = kafka_batch(&kafka_records(1), Compression::None);
        let mut batch = with_section(&plain, codec, &section);
        batch[57..61].copy_from_slice(&count.to_be_bytes());
        batch[23..27].copy_from_slice(&count.max(1).saturating_sub(1).to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let validated = validate_records(&batch);
        let decoded = decode_batch(&Bytes::from(batch));
        prop_assert_eq!(validated.err(), decoded.err());
    }

    /// Arbitrary bytes behind each codec's own framing (a gzip header, the
    /// xerial magic, an LZ4 frame magic, a zstd frame magic), so the
    /// decoders get past their first check.
    #[test]
    fn prop_framed_garbage_never_panics(
        codec in codec(),
        tail in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let magic: &[u8] = match codec {
            Compression::Gzip => b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff",
            Compression::Snappy => b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01",
            Compression::Lz4 => b"\x04\x22\x4d\x18",
            _ => b"\x28\xb5\x2f\xfd",
        };
        let section = [magic, &tail[..]].concat();
        let _ = decompress_with_limit(codec, &section, 4096);
        let plain = kafka_batch(&kafka_records(1), Compression::None);
        let batch = with_section(&plain, codec, &section);
        let validated = validate_records(&batch);
        let decoded = decode_batch(&Bytes::from(batch));
        prop_assert_eq!(validated.err(), decoded.err());
    }

    /// Mutated compressed batches from kafka-protocol: no panic, and
    /// validation and decoding agree.
    #[test]
    fn prop_mutated_compressed_batches_never_panic(
        codec in codec(),
        count in 1i64..20,
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut batch = kafka_batch(&kafka_records(count), codec);
        for (at, xor) in &mutations {
            let at = BATCH_HEADER_BYTES + at.index(batch.len() - BATCH_HEADER_BYTES);
            batch[at] ^= xor;
        }
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let validated = validate_records(&batch);
        let decoded = decode_batch(&Bytes::from(batch));
        prop_assert_eq!(validated.err(), decoded.err());
    }

    /// kafka-protocol's batches of arbitrary records, every codec.
    #[test]
    fn prop_kafka_protocol_compressed_batches_decode(
        codec in codec(),
        values in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..100)), 1..30),
    ) {
        let mut records = kafka_records(values.len() as i64);
        for (r, v) in records.iter_mut().zip(values) {
            r.value = v.map(Bytes::from);
        }
        assert_matches_kafka(&kafka_batch(&records, codec), &records, codec);
    }
}

// -- compaction ---------------------------------------------------------------

#[test]
fn compaction_cleans_compressed_batches_and_keeps_their_codec() {
    use std::collections::HashMap;

    use crate::compaction::compact;
    use crate::log::{LogConfig, PartitionLog};
    use crate::testing::run_on_executor;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    run_on_executor(async move {
        let mut config = LogConfig::new(&path);
        config.segment_bytes = 4096;
        config.index_interval_bytes = 512;
        let (log, _) = PartitionLog::open(config).await.expect("open");
        let mut codecs = HashMap::new();
        let mut model: Vec<(Offset, Bytes, Bytes)> = Vec::new();
        for i in 0..80i64 {
            let codec = CODECS[i as usize % CODECS.len()];
            let mut records = kafka_records(5);
            for (j, r) in records.iter_mut().enumerate() {
                r.key = Some(Bytes::from(format!("k{}", (i as usize * 5 + j) % 7)));
                r.value = Some(Bytes::from(format!("value {i}-{j} {:-<80}", "")));
            }
            let appended = log
                .append(kafka_batch(&records, codec))
                .await
                .expect("append");
            codecs.insert(appended.base_offset, codec);
            for (j, r) in records.iter().enumerate() {
                model.push((
                    appended.base_offset.plus(j as u64),
                    r.key.clone().expect("key"),
                    r.value.clone().expect("value"),
                ));
            }
        }
        let boundary = log
            .segments()
            .iter()
            .find(|s| s.active)
            .map(|s| s.base_offset)
            .expect("active");
        let mut last = HashMap::new();
        for (offset, key, _) in &model {
            last.insert(key.clone(), *offset);
        }
        let want: Vec<(Offset, Bytes, Bytes)> = model
            .iter()
            .filter(|(o, k, _)| *o >= boundary || last.get(k) == Some(o))
            .cloned()
            .collect();
        let outcome = compact(&log).await.expect("compact");
        assert!(outcome.segments_rewritten > 0);
        assert!(outcome.records_removed > 0);
        assert!(outcome.bytes_after < outcome.bytes_before);

        let mut got = Vec::new();
        let mut next = log.log_start_offset();
        while let Some(slice) = log.read(next, 64 * 1024).expect("read") {
            let bytes = slice.read_bytes().await.expect("bytes");
            for item in BatchIter::new(&bytes) {
                let (header, raw) = item.expect("valid");
                if header.base_offset < next {
                    continue;
                }
                assert_eq!(
                    Some(&header.compression),
                    codecs.get(&header.base_offset),
                    "a cleaned batch keeps its codec"
                );
                let (_, records) = decode_batch(&Bytes::copy_from_slice(raw)).expect("decode");
                for r in records {
                    got.push((r.offset, r.key.expect("key"), r.value.expect("value")));
                }
                next = header.next_offset();
            }
        }
        assert_eq!(got, want);
        log.close().await.expect("close");
    });
}

// -- fuzz seeds -----------------------------------------------------------------

/// One small batch per codec, from kafka-protocol's encoder: the compressed
/// seeds of the `record_batch` fuzz target (`fuzz/corpus/record_batch/
/// compressed-<codec>`, a mode byte then the batch). Checked here on every
/// run; written with `SLUICE_WRITE_FUZZ_SEEDS=1`.
#[test]
fn compressed_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/record_batch");
    let write = std::env::var("SLUICE_WRITE_FUZZ_SEEDS").is_ok_and(|v| v == "1");
    for codec in CODECS {
        let batch = kafka_batch(&kafka_records(4), codec);
        assert_matches_kafka(&batch, &kafka_records(4), codec);
        let seed = [&[0u8][..], &batch].concat();
        let path = dir.join(format!("compressed-{codec}"));
        if write {
            std::fs::write(&path, &seed).expect("write seed");
        }
        if let Ok(stored) = std::fs::read(&path) {
            let header = validate_records(&stored[1..]).expect("the stored seed validates");
            assert_eq!(header.compression, codec);
        }
    }
}
