//! The RecordBatch v2 decoders on arbitrary bytes (published batches and
//! every byte read back from disk go through them).
//!
//! Properties: never panics; `validate_records` (what the log runs on every
//! client batch) gives exactly the result of `decode_batch` (what readers and
//! compaction run) — same header on success, same error on failure; a decoded
//! batch's records have strictly increasing offsets inside the batch's range
//! and re-encode (offsets kept) to a batch that decodes to the same records;
//! the per-record report of `validate_records_with` (what the server's
//! header limits are checked on) matches the decoded records' header counts
//! and bytes, and a visitor that stops the walk stops it at that record.
//!
//! Compressed batches (gzip, snappy, lz4, zstd) go through the same
//! properties: the decompressed records are walked like uncompressed ones,
//! and re-encoding keeps the codec. The seeds include one batch per codec.
//!
//! Half the inputs get a correct CRC-32C patched in, so the fuzzer reaches
//! the record decoder instead of stopping at the checksum.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shards::batch::{
    decode_batch, encode_batch_preserving_offsets, encode_batch_preserving_offsets_compressed,
    validate_batch, validate_records, validate_records_with, BatchIter, Compression, RecordShape,
};
use shards::error::DecodeError;

/// A visitor's own reason to stop the walk.
#[derive(Debug, PartialEq)]
enum Stopped {
    At(usize),
    Invalid(DecodeError),
}

impl From<DecodeError> for Stopped {
    fn from(error: DecodeError) -> Self {
        Stopped::Invalid(error)
    }
}

/// Where the CRC sits in a batch and where the bytes it covers start.
const CRC_AT: usize = 17;
const CRC_COVERED_FROM: usize = 21;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut buf = body.to_vec();
    if mode & 1 == 1 && buf.len() > CRC_COVERED_FROM {
        let crc = crc32c::crc32c(&buf[CRC_COVERED_FROM..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    let bytes = Bytes::from(buf);

    let validated = validate_records(&bytes);
    let decoded = decode_batch(&bytes);
    assert_eq!(
        validated,
        decoded.as_ref().map(|(header, _)| *header).map_err(Clone::clone),
        "validate_records and decode_batch must agree"
    );
    // The walk's report, record by record. Bounded: a batch holds at most
    // BATCH_RECORDS_MAX records and the fuzzer's inputs are small.
    let mut shapes: Vec<RecordShape> = Vec::new();
    let reported = validate_records_with(&bytes, |shape| {
        shapes.push(shape);
        Ok::<(), DecodeError>(())
    });
    assert_eq!(reported, validated, "the visitor does not change the verdict");
    if let Ok((_, records)) = &decoded {
        let expected: Vec<RecordShape> = records
            .iter()
            .enumerate()
            .map(|(index, record)| RecordShape {
                index,
                headers: record.headers.len(),
                header_bytes: record
                    .headers
                    .iter()
                    .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
                    .sum(),
            })
            .collect();
        assert_eq!(shapes, expected, "the report matches the decoded headers");
        // A visitor that refuses record `stop` ends the walk there, with
        // its own error, having seen exactly the records before it.
        if !records.is_empty() {
            let stop = usize::from(mode >> 1) % records.len();
            let mut seen = 0;
            let stopped = validate_records_with(&bytes, |shape| {
                seen += 1;
                if shape.index == stop {
                    Err(Stopped::At(shape.index))
                } else {
                    Ok(())
                }
            });
            assert_eq!(stopped, Err(Stopped::At(stop)));
            assert_eq!(seen, stop + 1);
        }
    }
    if let Ok((header, records)) = &decoded {
        assert_eq!(validate_batch(&bytes).as_ref(), Ok(header));
        assert_eq!(records.len(), header.records_count as usize);
        let mut previous = None;
        for record in records {
            assert!(record.offset >= header.base_offset && record.offset <= header.last_offset());
            assert!(previous.is_none_or(|p| record.offset > p), "offsets must increase");
            previous = Some(record.offset);
        }
        if !records.is_empty() && header.compression == Compression::None {
            let mut again = Vec::new();
            encode_batch_preserving_offsets(
                header.base_offset,
                header.last_offset_delta,
                records,
                &mut again,
            );
            let (_, round_trip) = decode_batch(&Bytes::from(again)).expect("re-encoded batch");
            assert_eq!(&round_trip, records, "records round trip");
        } else if !records.is_empty() {
            // Compressed (as compaction re-encodes it): the records may
            // have decompressed to more than a batch holds, which the
            // encoder refuses; whatever it writes decodes to the records.
            let mut again = Vec::new();
            if encode_batch_preserving_offsets_compressed(
                header.base_offset,
                header.last_offset_delta,
                records,
                header.compression,
                &mut again,
            )
            .is_ok()
            {
                let (again_header, round_trip) =
                    decode_batch(&Bytes::from(again)).expect("re-encoded batch");
                assert_eq!(again_header.compression, header.compression);
                assert_eq!(&round_trip, records, "records round trip");
            }
        }
    }
    // A stream of batches, as a fetch response carries them.
    for item in BatchIter::new(&bytes).take(1024) {
        if item.is_err() {
            break;
        }
    }
});
