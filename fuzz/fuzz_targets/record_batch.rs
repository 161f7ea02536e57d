//! The RecordBatch v2 decoders on arbitrary bytes (published batches and
//! every byte read back from disk go through them).
//!
//! Properties: never panics; `validate_records` (what the log runs on every
//! client batch) gives exactly the result of `decode_batch` (what readers and
//! compaction run) — same header on success, same error on failure; a decoded
//! batch's records have strictly increasing offsets inside the batch's range
//! and re-encode (offsets kept) to a batch that decodes to the same records.
//!
//! Half the inputs get a correct CRC-32C patched in, so the fuzzer reaches
//! the record decoder instead of stopping at the checksum.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shards::batch::{
    decode_batch, encode_batch_preserving_offsets, validate_batch, validate_records, BatchIter,
};

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
    if let Ok((header, records)) = &decoded {
        assert_eq!(validate_batch(&bytes).as_ref(), Ok(header));
        assert_eq!(records.len(), header.records_count as usize);
        let mut previous = None;
        for record in records {
            assert!(record.offset >= header.base_offset && record.offset <= header.last_offset());
            assert!(previous.is_none_or(|p| record.offset > p), "offsets must increase");
            previous = Some(record.offset);
        }
        if !records.is_empty() {
            let mut again = Vec::new();
            encode_batch_preserving_offsets(
                header.base_offset,
                header.last_offset_delta,
                records,
                &mut again,
            );
            let (_, round_trip) = decode_batch(&Bytes::from(again)).expect("re-encoded batch");
            assert_eq!(&round_trip, records, "records round trip");
        }
    }
    // A stream of batches, as a fetch response carries them.
    for item in BatchIter::new(&bytes).take(1024) {
        if item.is_err() {
            break;
        }
    }
});
