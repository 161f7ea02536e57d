//! Unit tests of the RecordBatch v2 codec.

use proptest::prelude::*;

use super::*;
use crate::constants::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX, RECORD_HEADERS_MAX};
use crate::types::LeaderEpoch;

// -- helpers ----------------------------------------------------------

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn rec(
    ts: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) -> Record {
    Record {
        timestamp: TimestampMs(ts),
        key: key.map(b),
        value: value.map(b),
        headers: headers
            .iter()
            .map(|(k, v)| Header {
                key: b(k),
                value: v.map(b),
            })
            .collect(),
    }
}

fn encode(base: Offset, records: &[Record]) -> Bytes {
    let mut out = Vec::new();
    encode_batch(base, records, &mut out);
    Bytes::from(out)
}

/// Encodes, checks the size prediction and the header, decodes and
/// compares every record; returns the encoded batch.
fn assert_round_trip(base: Offset, records: &[Record]) -> Bytes {
    let batch = encode(base, records);
    assert_eq!(batch.len(), encoded_len(records));
    let (header, decoded) = decode_batch(&batch).expect("decode our own batch");
    assert_eq!(header, validate_batch(&batch).expect("validate"));
    assert_eq!(header.base_offset, base);
    assert_eq!(header.total_bytes(), batch.len());
    assert_eq!(header.records_count as usize, records.len());
    assert_eq!(header.last_offset_delta as usize, records.len() - 1);
    assert_eq!(
        header.last_offset(),
        Offset(base.0 + records.len() as u64 - 1)
    );
    assert_eq!(header.next_offset(), Offset(base.0 + records.len() as u64));
    assert_eq!(header.base_timestamp, records[0].timestamp);
    assert_eq!(
        header.max_timestamp,
        records.iter().map(|r| r.timestamp).max().unwrap()
    );
    assert_eq!(decoded.len(), records.len());
    for (i, (d, r)) in decoded.iter().zip(records).enumerate() {
        assert_eq!(d.offset, Offset(base.0 + i as u64), "record {i}");
        assert_eq!(d.timestamp, r.timestamp, "record {i}");
        assert_eq!(d.key, r.key, "record {i}");
        assert_eq!(d.value, r.value, "record {i}");
        assert_eq!(d.headers, r.headers, "record {i}");
    }
    batch
}

/// Test-only varint writer, independent of the codec's.
fn zz(v: i64) -> Vec<u8> {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        if n < 0x80 {
            out.push(n as u8);
            return out;
        }
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
}

/// A record body (everything after `length`) from raw field bytes.
fn raw_body(fields: &[&[u8]]) -> Vec<u8> {
    fields.concat()
}

/// `length` + body, with `length` as given (so tests can lie).
fn raw_record_with_length(length: i64, body: &[u8]) -> Vec<u8> {
    [zz(length), body.to_vec()].concat()
}

fn raw_record(body: &[u8]) -> Vec<u8> {
    raw_record_with_length(body.len() as i64, body)
}

/// A well-formed (plain null-key, value "v", no headers) record body.
fn good_body(offset_delta: i64) -> Vec<u8> {
    raw_body(&[
        &[0],
        &zz(0),
        &zz(offset_delta),
        &zz(-1),
        &zz(1),
        b"v",
        &zz(0),
    ])
}

fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A batch header written field by field around raw record bytes, with a
/// correct length and CRC.
fn raw_batch(count: i32, last_offset_delta: i32, records: &[u8]) -> Vec<u8> {
    let mut batch = Vec::new();
    batch.extend(0i64.to_be_bytes());
    batch.extend(((49 + records.len()) as i32).to_be_bytes());
    batch.extend((-1i32).to_be_bytes());
    batch.push(2);
    batch.extend([0u8; 4]);
    batch.extend(0i16.to_be_bytes());
    batch.extend(last_offset_delta.to_be_bytes());
    batch.extend(1_000i64.to_be_bytes());
    batch.extend(1_000i64.to_be_bytes());
    batch.extend((-1i64).to_be_bytes());
    batch.extend((-1i16).to_be_bytes());
    batch.extend((-1i32).to_be_bytes());
    batch.extend(count.to_be_bytes());
    batch.extend_from_slice(records);
    fix_crc(&mut batch);
    batch
}

fn decode_err(batch: Vec<u8>) -> DecodeError {
    decode_batch(&Bytes::from(batch)).expect_err("batch must be rejected")
}

fn sample_records() -> Vec<Record> {
    vec![
        rec(
            1_700_000_000_000,
            Some(b"k1"),
            Some(b"v1"),
            &[(b"h", Some(b"x"))],
        ),
        rec(1_700_000_000_005, None, Some(b""), &[]),
        rec(
            1_699_999_999_000,
            Some(b""),
            None,
            &[(b"", None), (b"h", Some(b""))],
        ),
    ]
}

#[test]
fn the_walk_reports_each_records_headers() {
    let records = sample_records();
    let mut batch = Vec::new();
    encode_batch(Offset(0), &records, &mut batch);
    let mut shapes = Vec::new();
    let header = validate_records_with(&batch, |shape| {
        shapes.push(shape);
        Ok::<(), DecodeError>(())
    })
    .expect("valid");
    assert_eq!(Ok(header), validate_records(&batch));
    // Header bytes are key plus value; a null value counts 0.
    let expected = [(1, 2), (0, 0), (2, 1)];
    let found: Vec<(usize, usize)> = shapes.iter().map(|s| (s.headers, s.header_bytes)).collect();
    assert_eq!(found, expected);
    assert_eq!(
        shapes.iter().map(|s| s.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );

    // The visitor's error stops the walk at once and comes back as is.
    let mut seen = 0;
    let stopped = validate_records_with(&batch, |shape| {
        seen += 1;
        if shape.index == 1 {
            Err(DecodeError::BadVarint)
        } else {
            Ok(())
        }
    });
    assert_eq!(stopped, Err(DecodeError::BadVarint));
    assert_eq!(seen, 2);

    // The proof token holds the bytes it validated, and only valid ones.
    let valid = ValidBatch::check(batch.clone()).expect("valid");
    assert_eq!(valid.as_bytes(), &batch[..]);
    assert_eq!(*valid.header(), header);
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    assert!(matches!(
        ValidBatch::check(batch),
        Err(DecodeError::CrcMismatch { .. })
    ));
}

/// Runs every entry point on `bytes`; they must return, never panic.
fn exercise_all(bytes: &[u8]) {
    let _ = peek_total_bytes(bytes);
    let _ = BatchHeader::parse(bytes);
    let validated = validate_batch(bytes);
    let decoded = decode_batch(&Bytes::copy_from_slice(bytes));
    if decoded.is_ok() {
        assert!(validated.is_ok(), "decode accepted what validate rejected");
    }
    // The log's check and the decoder accept exactly the same batches.
    assert_eq!(
        validate_records(bytes).err(),
        decoded.err(),
        "validate_records and decode_batch disagree"
    );
    let mut iter = BatchIter::new(bytes);
    let mut errors = 0;
    for item in iter.by_ref() {
        if item.is_err() {
            errors += 1;
        }
    }
    assert!(errors <= 1, "BatchIter yielded more than one error");
    assert!(iter.position() <= bytes.len());
    assert!(iter.next().is_none(), "BatchIter resumed after the end");
}

// -- round trips ----------------------------------------------------------

#[test]
fn round_trip_single_record() {
    assert_round_trip(Offset(0), &[rec(42, Some(b"key"), Some(b"value"), &[])]);
}

#[test]
fn round_trip_null_and_empty_keys_and_values_stay_distinct() {
    let records = vec![
        rec(1, None, None, &[]),
        rec(2, Some(b""), Some(b""), &[]),
        rec(3, None, Some(b"v"), &[]),
        rec(4, Some(b"k"), None, &[]),
    ];
    let batch = assert_round_trip(Offset(7), &records);
    let (_, decoded) = decode_batch(&batch).unwrap();
    assert_eq!(decoded[0].key, None);
    assert_eq!(decoded[1].key, Some(Bytes::new()));
}

#[test]
fn round_trip_headers_keep_order_duplicates_and_nulls() {
    let records = vec![rec(
        5,
        Some(b"k"),
        Some(b"v"),
        &[
            (b"a", Some(b"1")),
            (b"a", Some(b"2")),
            (b"", None),
            (b"z", Some(b"")),
        ],
    )];
    assert_round_trip(Offset(0), &records);
    let many: Vec<(&[u8], Option<&[u8]>)> =
        (0..RECORD_HEADERS_MAX).map(|_| (&b"h"[..], None)).collect();
    assert_round_trip(Offset(0), &[rec(0, None, None, &many)]);
}

#[test]
fn round_trip_negative_timestamp_deltas() {
    let records = vec![
        rec(10_000, None, Some(b"a"), &[]),
        rec(9_000, None, Some(b"b"), &[]),
        rec(11_000, None, Some(b"c"), &[]),
        rec(-5, None, Some(b"d"), &[]),
    ];
    let batch = assert_round_trip(Offset(100), &records);
    let header = validate_batch(&batch).unwrap();
    assert_eq!(header.base_timestamp, TimestampMs(10_000));
    assert_eq!(header.max_timestamp, TimestampMs(11_000));
}

#[test]
fn round_trip_extreme_timestamps_wrap_like_kafka() {
    let records = vec![
        rec(i64::MAX, None, None, &[]),
        rec(i64::MIN, None, None, &[]),
        rec(0, None, None, &[]),
        rec(-1, None, None, &[]),
    ];
    assert_round_trip(Offset(0), &records);
}

#[test]
fn round_trip_many_records() {
    let records: Vec<Record> = (0..20_000)
        .map(|i| {
            let key = format!("key-{i}");
            let value = vec![i as u8; i % 300];
            rec(
                1_000_000 + (i as i64 % 97) * 13,
                Some(key.as_bytes()),
                Some(&value),
                &[],
            )
        })
        .collect();
    assert_round_trip(Offset(1 << 40), &records);
}

#[test]
fn round_trip_largest_offsets() {
    let records = vec![rec(0, None, None, &[]), rec(0, None, None, &[])];
    assert_round_trip(Offset(i64::MAX as u64 - 1), &records);
}

#[test]
fn encoded_header_fields_are_as_specified() {
    let batch = encode(Offset(3), &sample_records());
    let header = BatchHeader::parse(&batch).unwrap();
    assert_eq!(batch[16], 2, "magic");
    assert_eq!(header.leader_epoch, LeaderEpoch::NONE);
    assert_eq!(header.attributes, 0);
    assert_eq!(header.producer_id, -1);
    assert_eq!(header.producer_epoch, -1);
    assert_eq!(header.base_sequence, -1);
    assert_eq!(header.batch_length as usize, batch.len() - 12);
    assert_eq!(header.crc, crc32c::crc32c(&batch[21..]));
}

#[test]
fn decoded_bytes_are_slices_of_the_input() {
    let batch = encode(Offset(0), &sample_records());
    let (_, decoded) = decode_batch(&batch).unwrap();
    let range = batch.as_ptr_range();
    let inside = |bytes: &Bytes| range.contains(&bytes.as_ptr()) || bytes.is_empty();
    for record in &decoded {
        assert!(record.key.iter().all(inside));
        assert!(record.value.iter().all(inside));
        assert!(record
            .headers
            .iter()
            .all(|h| inside(&h.key) && h.value.iter().all(inside)));
    }
}

#[test]
fn encode_appends_after_existing_bytes() {
    let mut out = b"prefix".to_vec();
    encode_batch(Offset(0), &sample_records(), &mut out);
    assert_eq!(&out[..6], b"prefix");
    assert!(validate_batch(&out[6..]).is_ok());
}

#[test]
fn preserving_offsets_keeps_gaps_and_the_original_range() {
    let records: Vec<Record> = (0..10)
        .map(|i| rec(100 + i, Some(&[i as u8]), Some(b"v"), &[]))
        .collect();
    let batch = encode(Offset(50), &records);
    let (header, decoded) = decode_batch(&batch).unwrap();
    let survivors: Vec<DecodedRecord> = decoded
        .into_iter()
        .filter(|r| r.offset.0 % 3 == 1)
        .collect();
    let mut out = Vec::new();
    encode_batch_preserving_offsets(
        header.base_offset,
        header.last_offset_delta,
        &survivors,
        &mut out,
    );
    let (compacted, again) = decode_batch(&Bytes::from(out)).unwrap();
    assert_eq!(again, survivors);
    assert_eq!(compacted.base_offset, header.base_offset);
    assert_eq!(compacted.last_offset(), header.last_offset());
    assert_eq!(compacted.records_count as usize, survivors.len());
    assert_eq!(compacted.base_timestamp, survivors[0].timestamp);
}

#[test]
fn preserving_offsets_allows_an_empty_batch() {
    let mut out = Vec::new();
    encode_batch_preserving_offsets(Offset(10), 4, &[], &mut out);
    let (header, records) = decode_batch(&Bytes::from(out)).unwrap();
    assert!(records.is_empty());
    assert_eq!(header.records_count, 0);
    assert_eq!(header.next_offset(), Offset(15));
    assert_eq!(header.base_timestamp, TimestampMs(-1));
    assert_eq!(header.max_timestamp, TimestampMs(-1));
}

#[test]
fn set_base_offset_and_leader_epoch_keep_the_crc_valid() {
    let mut batch = encode(Offset(0), &sample_records()).to_vec();
    set_base_offset(&mut batch, Offset(123_456_789));
    set_leader_epoch(&mut batch, LeaderEpoch(7));
    let header = validate_batch(&batch).expect("patching must not invalidate the CRC");
    assert_eq!(header.base_offset, Offset(123_456_789));
    assert_eq!(header.leader_epoch, LeaderEpoch(7));
    let (_, decoded) = decode_batch(&Bytes::from(batch)).unwrap();
    assert_eq!(decoded[2].offset, Offset(123_456_791));
}

// -- peek and iteration -------------------------------------------------

#[test]
fn peek_total_bytes_reads_only_the_prefix() {
    let batch = encode(Offset(0), &sample_records());
    assert_eq!(peek_total_bytes(&batch[..12]), Ok(batch.len()));
    assert!(matches!(
        peek_total_bytes(&batch[..11]),
        Err(DecodeError::Truncated {
            needed: 12,
            available: 11
        })
    ));
    let mut prefix = [0u8; 12];
    prefix[8..].copy_from_slice(&((BATCH_BYTES_MAX - 12) as i32).to_be_bytes());
    assert_eq!(peek_total_bytes(&prefix), Ok(BATCH_BYTES_MAX));
    for bad in [BATCH_BYTES_MAX as i32 - 11, 48, 0, -1, i32::MIN, i32::MAX] {
        prefix[8..].copy_from_slice(&bad.to_be_bytes());
        assert!(
            matches!(
                peek_total_bytes(&prefix),
                Err(DecodeError::BadBatchLength { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn batch_iter_walks_concatenated_batches() {
    let mut buf = Vec::new();
    encode_batch(Offset(0), &sample_records(), &mut buf);
    let first_len = buf.len();
    encode_batch(Offset(3), &sample_records()[..1], &mut buf);
    let items: Vec<_> = BatchIter::new(&buf).collect::<Result<_, _>>().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].0.base_offset, Offset(0));
    assert_eq!(items[0].1.len(), first_len);
    assert_eq!(items[1].0.base_offset, Offset(3));
    assert_eq!(BatchIter::new(&[]).count(), 0);
}

#[test]
fn batch_iter_stops_after_the_first_bad_batch() {
    let mut buf = Vec::new();
    encode_batch(Offset(0), &sample_records(), &mut buf);
    let good_len = buf.len();
    encode_batch(Offset(3), &sample_records(), &mut buf);
    encode_batch(Offset(6), &sample_records(), &mut buf);
    buf[good_len + 30] ^= 0xff; // corrupt the second batch
    let mut iter = BatchIter::new(&buf);
    assert!(iter.next().unwrap().is_ok());
    assert!(matches!(
        iter.next(),
        Some(Err(DecodeError::CrcMismatch { .. }))
    ));
    assert!(iter.next().is_none());
    assert_eq!(iter.position(), good_len);
}

#[test]
fn batch_iter_reports_a_torn_tail() {
    let mut buf = Vec::new();
    encode_batch(Offset(0), &sample_records(), &mut buf);
    let good_len = buf.len();
    encode_batch(Offset(3), &sample_records(), &mut buf);
    for cut in good_len + 1..buf.len() {
        let mut iter = BatchIter::new(&buf[..cut]);
        assert!(iter.next().unwrap().is_ok());
        assert!(
            matches!(iter.next(), Some(Err(DecodeError::Truncated { .. }))),
            "cut at {cut}"
        );
        assert!(iter.next().is_none());
        assert_eq!(iter.position(), good_len);
    }
}

// -- rejection: header and CRC --------------------------------------------

#[test]
fn every_truncation_is_rejected() {
    let batch = encode(Offset(0), &sample_records());
    for len in 0..batch.len() {
        let prefix = batch.slice(..len);
        assert!(
            matches!(decode_batch(&prefix), Err(DecodeError::Truncated { .. })),
            "len {len}"
        );
        assert!(
            matches!(validate_batch(&prefix), Err(DecodeError::Truncated { .. })),
            "len {len}"
        );
        exercise_all(&prefix);
    }
}

#[test]
fn extra_bytes_after_the_batch_are_rejected() {
    let mut batch = encode(Offset(0), &sample_records()).to_vec();
    batch.push(0);
    assert_eq!(
        validate_batch(&batch),
        Err(DecodeError::TrailingBytes { trailing: 1 })
    );
}

#[test]
fn every_flipped_bit_in_the_crc_range_is_a_crc_mismatch() {
    let batch = encode(Offset(0), &sample_records()).to_vec();
    for at in 17..batch.len() {
        for bit in 0..8 {
            let mut bad = batch.clone();
            bad[at] ^= 1 << bit;
            let err = validate_batch(&bad).err();
            // Bits of the attributes or counts may trip a header check
            // first; everything else must reach the CRC.
            let header_field = (21..27).contains(&at) || (57..61).contains(&at);
            match err {
                Some(DecodeError::CrcMismatch { .. }) => {}
                Some(_) if header_field => {}
                other => panic!("byte {at} bit {bit}: {other:?}"),
            }
            assert!(decode_batch(&Bytes::from(bad)).is_err());
        }
    }
}

#[test]
fn wrong_magic_is_rejected() {
    for magic in [0u8, 1, 3, 0xff] {
        let mut batch = encode(Offset(0), &sample_records()).to_vec();
        batch[16] = magic;
        assert_eq!(
            decode_err(batch),
            DecodeError::BadMagic { magic: magic as i8 }
        );
    }
}

#[test]
fn out_of_range_batch_lengths_are_rejected() {
    for length in [i32::MAX, (BATCH_BYTES_MAX - 11) as i32, 48, 0, -1, i32::MIN] {
        let mut batch = encode(Offset(0), &sample_records()).to_vec();
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        assert!(
            matches!(decode_err(batch), DecodeError::BadBatchLength { .. }),
            "{length}"
        );
    }
}

#[test]
fn out_of_range_record_counts_are_rejected() {
    for count in [i32::MAX, BATCH_RECORDS_MAX as i32 + 1, -1, i32::MIN] {
        let mut batch = raw_batch(count, i32::MAX, &[]);
        batch[57..61].copy_from_slice(&count.to_be_bytes());
        fix_crc(&mut batch);
        assert!(
            matches!(decode_err(batch), DecodeError::TooManyRecords { .. }),
            "{count}"
        );
    }
    // More records than the offset range can hold.
    let records = [raw_record(&good_body(0)), raw_record(&good_body(1))].concat();
    assert!(matches!(
        decode_err(raw_batch(2, 0, &records)),
        DecodeError::TooManyRecords { count: 2, max: 1 }
    ));
}

#[test]
fn unsupported_attributes_are_rejected() {
    // LogAppendTime, transactional, control, delete horizon, the unused
    // bits (compression bits are accepted: compression_tests.rs)
    for attributes in [
        1i16 << 3,
        1 << 4,
        1 << 5,
        1 << 6,
        1 << 7,
        i16::MIN,
        1 | 1 << 4,
    ] {
        let mut batch = raw_batch(0, 0, &[]);
        batch[21..23].copy_from_slice(&attributes.to_be_bytes());
        fix_crc(&mut batch);
        assert_eq!(
            decode_err(batch),
            DecodeError::UnsupportedAttributes { attributes }
        );
    }
}

#[test]
fn bad_header_offsets_are_rejected() {
    let mut batch = raw_batch(0, -1, &[]);
    assert!(matches!(
        decode_err(batch.clone()),
        DecodeError::BadRecord { index: 0, .. }
    ));
    batch = raw_batch(0, 0, &[]);
    batch[0..8].copy_from_slice(&(-1i64).to_be_bytes());
    assert!(matches!(
        decode_err(batch.clone()),
        DecodeError::BadRecord { index: 0, .. }
    ));
    batch = raw_batch(0, 2, &[]);
    batch[0..8].copy_from_slice(&(i64::MAX - 1).to_be_bytes());
    assert!(matches!(
        decode_err(batch),
        DecodeError::BadRecord { index: 0, .. }
    ));
}

// -- rejection: records ---------------------------------------------------

#[test]
fn hand_built_batch_decodes() {
    // Guards the helpers the rejection tests below rely on.
    let records = [raw_record(&good_body(0)), raw_record(&good_body(2))].concat();
    let (header, decoded) = decode_batch(&Bytes::from(raw_batch(2, 2, &records))).unwrap();
    assert_eq!(header.next_offset(), Offset(3));
    assert_eq!(decoded[1].offset, Offset(2));
    assert_eq!(decoded[1].timestamp, TimestampMs(1_000));
    assert_eq!(decoded[1].value, Some(b(b"v")));
    assert_eq!(
        decode_batch(&Bytes::from(raw_batch(0, 0, &[]))).unwrap().1,
        vec![]
    );
}

#[test]
fn bad_varints_are_rejected() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0x80],                               // unterminated at the batch end
        vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01], // varint longer than 5 bytes
        vec![0xff, 0xff, 0xff, 0xff, 0x1f],       // 5th byte carries bits past 32
    ];
    for records in cases {
        assert_eq!(
            decode_err(raw_batch(1, 0, &records)),
            DecodeError::BadVarint,
            "{records:x?}"
        );
    }
    // timestampDelta varlong: 11 bytes, then a 10th byte with bits past 64.
    let long = raw_body(&[&[0], &[0x80; 10], &[0x01], &zz(0), &zz(-1), &zz(-1), &zz(0)]);
    assert_eq!(
        decode_err(raw_batch(1, 0, &raw_record(&long))),
        DecodeError::BadVarint
    );
    let wide = raw_body(&[&[0], &[0xff; 9], &[0x02], &zz(0), &zz(-1), &zz(-1), &zz(0)]);
    assert_eq!(
        decode_err(raw_batch(1, 0, &raw_record(&wide))),
        DecodeError::BadVarint
    );
    // A varint cut by the record's own length, though bytes follow.
    let cut = [
        raw_record_with_length(2, &[0, 0x80]),
        vec![0x01, 0, 0, 0, 0],
    ]
    .concat();
    assert_eq!(decode_err(raw_batch(1, 0, &cut)), DecodeError::BadVarint);
}

#[test]
fn widest_valid_varlong_is_accepted() {
    // zigzag(i64::MIN) = u64::MAX: ten bytes, the last carrying one bit.
    let body = raw_body(&[&[0], &zz(i64::MIN), &zz(0), &zz(-1), &zz(-1), &zz(0)]);
    let (_, decoded) = decode_batch(&Bytes::from(raw_batch(1, 0, &raw_record(&body)))).unwrap();
    assert_eq!(
        decoded[0].timestamp,
        TimestampMs(1_000i64.wrapping_add(i64::MIN))
    );
}

#[test]
fn bad_record_lengths_are_rejected() {
    let body = good_body(0);
    let cases = [
        raw_record_with_length(-2, &body),  // negative
        raw_record_with_length(100, &body), // past the batch end
        raw_record_with_length(body.len() as i64 + 1, &[body.clone(), vec![0]].concat()), // unused byte
    ];
    for records in cases {
        assert!(matches!(
            decode_err(raw_batch(1, 0, &records)),
            DecodeError::BadRecord { index: 0, .. }
        ));
    }
    // Too short: the record's last field is cut off.
    let short = [
        raw_record_with_length(body.len() as i64 - 1, &body[..body.len() - 1]),
        vec![0],
    ]
    .concat();
    assert_eq!(decode_err(raw_batch(1, 0, &short)), DecodeError::BadVarint);
}

#[test]
fn bad_key_and_value_lengths_are_rejected() {
    let cases: Vec<Vec<u8>> = vec![
        raw_body(&[&[0], &zz(0), &zz(0), &zz(-2), &zz(-1), &zz(0)]),
        raw_body(&[&[0], &zz(0), &zz(0), &zz(50), b"short", &zz(-1), &zz(0)]),
        raw_body(&[&[0], &zz(0), &zz(0), &zz(-1), &zz(-7), &zz(0)]),
        raw_body(&[&[0], &zz(0), &zz(0), &zz(-1), &zz(4), b"ab"]),
    ];
    for body in cases {
        let err = decode_err(raw_batch(1, 0, &raw_record(&body)));
        assert!(
            matches!(err, DecodeError::BadRecord { index: 0, .. }),
            "{body:x?}: {err:?}"
        );
    }
}

#[test]
fn bad_headers_are_rejected() {
    let prefix = raw_body(&[&[0], &zz(0), &zz(0), &zz(-1), &zz(-1)]);
    type Expected = fn(&DecodeError) -> bool;
    let cases: Vec<(Vec<u8>, Expected)> = vec![
        ([prefix.clone(), zz(-1)].concat(), |e| {
            matches!(e, DecodeError::BadRecord { .. })
        }),
        (
            [prefix.clone(), zz(RECORD_HEADERS_MAX as i64 + 1)].concat(),
            |e| {
                matches!(
                    e,
                    DecodeError::TooManyHeaders {
                        index: 0,
                        count: 1025,
                        ..
                    }
                )
            },
        ),
        ([prefix.clone(), zz(1), zz(-1), zz(-1)].concat(), |e| {
            matches!(e, DecodeError::BadRecord { .. })
        }),
        (
            [prefix.clone(), zz(1), zz(9), b"k".to_vec()].concat(),
            |e| matches!(e, DecodeError::BadRecord { .. }),
        ),
        (
            [prefix.clone(), zz(1), zz(1), b"k".to_vec(), zz(-2)].concat(),
            |e| matches!(e, DecodeError::BadRecord { .. }),
        ),
        (
            [
                prefix.clone(),
                zz(1),
                zz(1),
                b"k".to_vec(),
                zz(3),
                b"v".to_vec(),
            ]
            .concat(),
            |e| matches!(e, DecodeError::BadRecord { .. }),
        ),
        // Declares two headers, holds one.
        (
            [prefix.clone(), zz(2), zz(1), b"k".to_vec(), zz(-1)].concat(),
            |e| *e == DecodeError::BadVarint,
        ),
    ];
    for (body, expected) in cases {
        let err = decode_err(raw_batch(1, 0, &raw_record(&body)));
        assert!(expected(&err), "{body:x?}: {err:?}");
    }
}

#[test]
fn bad_offset_deltas_are_rejected() {
    let cases: Vec<(i32, Vec<Vec<u8>>)> = vec![
        (3, vec![good_body(-1)]),              // negative
        (3, vec![good_body(4)]),               // past lastOffsetDelta
        (3, vec![good_body(2), good_body(1)]), // decreasing
        (3, vec![good_body(1), good_body(1)]), // repeated
    ];
    for (last, bodies) in cases {
        let records: Vec<u8> = bodies.iter().flat_map(|b| raw_record(b)).collect();
        let err = decode_err(raw_batch(bodies.len() as i32, last, &records));
        assert!(matches!(err, DecodeError::BadRecord { .. }), "{err:?}");
    }
}

#[test]
fn record_count_must_match() {
    let one = raw_record(&good_body(0));
    assert_eq!(
        decode_err(raw_batch(2, 1, &one)),
        DecodeError::RecordCountMismatch {
            declared: 2,
            found: 1
        }
    );
    let two = [raw_record(&good_body(0)), raw_record(&good_body(1))].concat();
    assert_eq!(
        decode_err(raw_batch(1, 1, &two)),
        DecodeError::TrailingBytes {
            trailing: one.len()
        }
    );
    assert_eq!(
        decode_err(raw_batch(1, 0, &[one, vec![0]].concat())),
        DecodeError::TrailingBytes { trailing: 1 }
    );
}

#[test]
fn huge_declared_count_does_not_preallocate() {
    // A count at the limit with no record bytes fails fast, having
    // reserved capacity for zero records.
    let batch = raw_batch(BATCH_RECORDS_MAX as i32, i32::MAX, &[]);
    assert_eq!(
        decode_err(batch),
        DecodeError::RecordCountMismatch {
            declared: BATCH_RECORDS_MAX,
            found: 0
        }
    );
}

// -- independent decoder: the kafka-protocol crate ------------------------

mod kafka {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder,
        RecordEncodeOptions, TimestampType,
    };

    // kafka-protocol keeps headers in an IndexMap of UTF-8 keys, so
    // records compared through it need unique UTF-8 header keys. Its
    // 0.15 decoder misread a null header value (length -1; it tested for
    // -2, kafka-protocol-rs issue #133, fixed by PR #134, in the 0.18 used
    // now); the batches it decodes here still carry no null header
    // values. The other direction (we decode its batches) includes them,
    // and compression_tests.rs covers them in both.

    /// The headers of a kafka-protocol record, in order.
    fn kafka_headers(headers: &IndexMap<StrBytes, Option<Bytes>>) -> Vec<Header> {
        headers
            .iter()
            .map(|(k, v)| Header {
                key: Bytes::from(k.clone()),
                value: v.clone(),
            })
            .collect()
    }

    pub(super) fn assert_kafka_decodes(base: Offset, epoch: LeaderEpoch, records: &[Record]) {
        let mut batch = encode(base, records).to_vec();
        set_leader_epoch(&mut batch, epoch);
        let mut buf = Bytes::from(batch);
        let sets =
            RecordBatchDecoder::decode_all(&mut buf).expect("kafka-protocol decodes our batch");
        assert_eq!(sets.len(), 1);
        let decoded = &sets[0].records;
        assert_eq!(decoded.len(), records.len());
        for (i, (k, r)) in decoded.iter().zip(records).enumerate() {
            assert_eq!(k.offset, (base.0 + i as u64) as i64, "record {i}");
            assert_eq!(k.timestamp, r.timestamp.0, "record {i}");
            assert_eq!(k.key, r.key, "record {i}");
            assert_eq!(k.value, r.value, "record {i}");
            assert_eq!(kafka_headers(&k.headers), r.headers, "record {i}");
            assert_eq!(k.partition_leader_epoch, epoch.0);
            assert_eq!(k.timestamp_type, TimestampType::Creation);
            assert!(!k.transactional && !k.control);
            assert_eq!(k.producer_id, -1);
        }
    }

    #[test]
    fn kafka_protocol_decodes_our_batches() {
        let sample = vec![
            rec(
                1_700_000_000_000,
                Some(b"k1"),
                Some(b"v1"),
                &[(b"h", Some(b"x"))],
            ),
            rec(1_700_000_000_005, None, Some(b""), &[]),
            rec(
                1_699_999_999_000,
                Some(b""),
                None,
                &[(b"", Some(b"")), (b"h", Some(b"y"))],
            ),
        ];
        assert_kafka_decodes(Offset(0), LeaderEpoch::NONE, &sample);
        let many: Vec<Record> = (0..500)
            .map(|i| {
                let key = format!("k{i}");
                let headers: Vec<(&[u8], Option<&[u8]>)> =
                    vec![(b"trace", Some(key.as_bytes())), (b"n", Some(b""))];
                rec(
                    1_700_000_000_000 - i as i64 * 3,
                    Some(key.as_bytes()),
                    Some(&vec![7; i]),
                    &headers,
                )
            })
            .collect();
        assert_kafka_decodes(Offset(987_654_321), LeaderEpoch(12), &many);
    }

    #[test]
    fn we_decode_kafka_protocol_batches() {
        let records: Vec<KRecord> = (0..300)
            .map(|i| {
                let mut headers = IndexMap::new();
                headers.insert(StrBytes::from_string(format!("h{i}")), Some(b(b"x")));
                headers.insert(StrBytes::from_static_str("null"), None);
                KRecord {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 5,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: 1_000 + i,
                    // Keeps offset - sequence constant, so the encoder
                    // writes one batch.
                    sequence: i as i32,
                    timestamp: 1_700_000_000_000 + (i % 7) * 1_000,
                    key: (i % 3 != 0).then(|| Bytes::from(format!("key{i}"))),
                    value: (i % 5 != 0).then(|| Bytes::from(vec![i as u8; i as usize])),
                    headers,
                }
            })
            .collect();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        let mut buf = Vec::new();
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("kafka-protocol encodes");
        let (header, decoded) =
            decode_batch(&Bytes::from(buf)).expect("we decode kafka-protocol's batch");
        assert_eq!(header.base_offset, Offset(1_000));
        assert_eq!(header.leader_epoch, LeaderEpoch(5));
        assert_eq!(header.next_offset(), Offset(1_300));
        assert_eq!(decoded.len(), records.len());
        for (d, k) in decoded.iter().zip(&records) {
            assert_eq!(d.offset, Offset(k.offset as u64));
            assert_eq!(d.timestamp, TimestampMs(k.timestamp));
            assert_eq!(d.key, k.key);
            assert_eq!(d.value, k.value);
            assert_eq!(d.headers, kafka_headers(&k.headers));
        }
    }
}

// -- property tests -------------------------------------------------------

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn arb_record() -> impl Strategy<Value = Record> {
    let header =
        (arb_bytes(), prop::option::of(arb_bytes())).prop_map(|(key, value)| Header { key, value });
    (
        any::<i64>(),
        prop::option::of(arb_bytes()),
        prop::option::of(arb_bytes()),
        prop::collection::vec(header, 0..5),
    )
        .prop_map(|(ts, key, value, headers)| Record {
            timestamp: TimestampMs(ts),
            key,
            value,
            headers,
        })
}

/// Records kafka-protocol 0.15 can decode: unique UTF-8 header keys, no
/// null header values (see `mod kafka`) and timestamp deltas within i32
/// (it reads timestampDelta as a varint).
fn arb_kafka_record() -> impl Strategy<Value = Record> {
    (
        -(1i64 << 30)..(1i64 << 30),
        prop::option::of(arb_bytes()),
        prop::option::of(arb_bytes()),
        prop::collection::btree_map("[a-z0-9._-]{0,10}", arb_bytes(), 0..5),
    )
        .prop_map(|(ts, key, value, headers)| Record {
            timestamp: TimestampMs(1_700_000_000_000 + ts),
            key,
            value,
            headers: headers
                .into_iter()
                .map(|(k, value)| Header {
                    key: Bytes::from(k),
                    value: Some(value),
                })
                .collect(),
        })
}

proptest! {
    #[test]
    fn prop_round_trip(records in prop::collection::vec(arb_record(), 1..40), base in 0u64..(1 << 62)) {
        assert_round_trip(Offset(base), &records);
    }

    #[test]
    fn prop_preserving_offsets_round_trip(
        records in prop::collection::vec(arb_record(), 1..40),
        keep in prop::collection::vec(any::<bool>(), 40),
        base in 0u64..(1 << 62),
    ) {
        let (header, decoded) = decode_batch(&encode(Offset(base), &records)).unwrap();
        let survivors: Vec<DecodedRecord> =
            decoded.into_iter().zip(&keep).filter(|(_, k)| **k).map(|(r, _)| r).collect();
        let mut out = Vec::new();
        encode_batch_preserving_offsets(header.base_offset, header.last_offset_delta, &survivors, &mut out);
        let (compacted, again) = decode_batch(&Bytes::from(out)).unwrap();
        prop_assert_eq!(again, survivors);
        prop_assert_eq!(compacted.last_offset(), header.last_offset());
    }

    #[test]
    fn prop_kafka_protocol_decodes_our_batches(
        records in prop::collection::vec(arb_kafka_record(), 1..30),
        base in 0u64..(1 << 62),
        epoch in any::<i32>(),
    ) {
        kafka::assert_kafka_decodes(Offset(base), LeaderEpoch(epoch), &records);
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise_all(&bytes);
    }

    #[test]
    fn prop_arbitrary_records_behind_a_valid_header_never_panic(
        records in prop::collection::vec(any::<u8>(), 0..300),
        count in -2i32..8,
        last_offset_delta in -1i32..8,
    ) {
        exercise_all(&raw_batch(count, last_offset_delta, &records));
    }

    #[test]
    fn prop_mutated_batches_never_panic(
        records in prop::collection::vec(arb_record(), 1..6),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        recompute_crc in any::<bool>(),
        cut in prop::option::of(any::<prop::sample::Index>()),
        extra in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut batch = encode(Offset(0), &records).to_vec();
        for (at, xor) in &mutations {
            let at = at.index(batch.len());
            batch[at] ^= xor;
        }
        if recompute_crc {
            // Lets the mutation reach the record decoder.
            fix_crc(&mut batch);
        }
        if let Some(cut) = cut {
            batch.truncate(cut.index(batch.len() + 1));
        }
        batch.extend_from_slice(&extra);
        exercise_all(&batch);
        // Several batches in a row, the middle one mutated.
        let good = encode(Offset(0), &records);
        exercise_all(&[&good[..], &batch, &good[..]].concat());
    }
}
