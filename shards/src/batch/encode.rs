//! The encoder: whole batches from [`Record`]s, or from decoded records
//! keeping their offsets (compaction), and the size a batch will take.

use bytes::Bytes;

use super::compression::compress;
use super::header::{CRC_AT, CRC_COVERED_FROM, MAGIC_V2};
use super::{decode_batch, Compression, DecodedRecord, Header, Record};
use crate::constants::{
    BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES, BATCH_RECORDS_MAX,
    DECOMPRESSED_BATCH_BYTES_MAX, RECORD_HEADERS_MAX,
};
use crate::error::EncodeError;
use crate::types::{LeaderEpoch, Offset};

/// Kafka's sentinels for "no idempotent producer" and "no timestamp".
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
const NO_SEQUENCE: i32 = -1;
const NO_TIMESTAMP: i64 = -1;

/// Encodes `records` as one batch appended to `out`: base offset
/// `base_offset`, offset deltas 0..n, base timestamp the first record's (later
/// deltas may be negative), max timestamp the largest, leader epoch -1 (the
/// log stamps it with [`set_leader_epoch`](super::set_leader_epoch)).
///
/// Preconditions (bugs if violated, checked by `debug_assert!`): `records` is
/// not empty, holds at most `BATCH_RECORDS_MAX` records of at most
/// `RECORD_HEADERS_MAX` headers each, and `encoded_len(records)` is at most
/// `BATCH_BYTES_MAX` — callers check the limits on untrusted input first.
pub fn encode_batch(base_offset: Offset, records: &[Record], out: &mut Vec<u8>) {
    debug_assert!(
        !records.is_empty(),
        "encode_batch needs at least one record"
    );
    let last_offset_delta = records.len().saturating_sub(1) as i32;
    let refs = records.iter().enumerate().map(|(i, r)| RecordRef {
        offset_delta: i as i32,
        timestamp: r.timestamp.0,
        key: r.key.as_deref(),
        value: r.value.as_deref(),
        headers: &r.headers,
    });
    encode_refs(base_offset, last_offset_delta, refs, out);
}

/// Encodes records that already carry offsets (e.g. the survivors of
/// compaction), keeping each offset, with the given base offset and
/// `last_offset_delta`, so a compacted batch still covers its original offset
/// range. `records` may be empty (every record was removed); the batch then
/// has both timestamps -1, as in Kafka.
///
/// Preconditions (`debug_assert!`): offsets strictly increasing within
/// `[base_offset, base_offset + last_offset_delta]`, plus the limits of
/// [`encode_batch`].
pub fn encode_batch_preserving_offsets(
    base_offset: Offset,
    last_offset_delta: i32,
    records: &[DecodedRecord],
    out: &mut Vec<u8>,
) {
    debug_assert!(last_offset_delta >= 0);
    debug_assert!(records.windows(2).all(|w| w[0].offset < w[1].offset));
    debug_assert!(
        records
            .iter()
            .all(|r| r.offset >= base_offset
                && r.offset.0 - base_offset.0 <= last_offset_delta as u64)
    );
    let refs = records.iter().map(|r| RecordRef {
        offset_delta: r.offset.0.wrapping_sub(base_offset.0) as i32,
        timestamp: r.timestamp.0,
        key: r.key.as_deref(),
        value: r.value.as_deref(),
        headers: &r.headers,
    });
    encode_refs(base_offset, last_offset_delta, refs, out);
}

/// [`encode_batch_preserving_offsets`] with the records section compressed
/// by `compression` (attribute bits 0–2 set to its code), as Kafka
/// clients write it: what compaction writes for a cleaned batch that was
/// compressed. Unlike the uncompressed encoders this takes survivors of
/// any size and checks the limits itself: records over
/// `DECOMPRESSED_BATCH_BYTES_MAX` or a compressed batch over
/// `BATCH_BYTES_MAX` is `EncodeError::TooLarge`, and `out` is left as it
/// was on any error.
pub fn encode_batch_preserving_offsets_compressed(
    base_offset: Offset,
    last_offset_delta: i32,
    records: &[DecodedRecord],
    compression: Compression,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    debug_assert!(last_offset_delta >= 0);
    debug_assert!(records.windows(2).all(|w| w[0].offset < w[1].offset));
    let refs = records.iter().map(|r| RecordRef {
        offset_delta: r.offset.0.wrapping_sub(base_offset.0) as i32,
        timestamp: r.timestamp.0,
        key: r.key.as_deref(),
        value: r.value.as_deref(),
        headers: &r.headers,
    });
    let start = out.len();
    let written = encode_refs_with(base_offset, last_offset_delta, refs, compression, out);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// Size in bytes [`encode_batch`] produces for `records`, for pre-sizing
/// buffers and checking `BATCH_BYTES_MAX` before encoding.
pub fn encoded_len(records: &[Record]) -> usize {
    let base_timestamp = records.first().map_or(NO_TIMESTAMP, |r| r.timestamp.0);
    let records_bytes: usize = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let body = record_body_len(
                &RecordRef {
                    offset_delta: i as i32,
                    timestamp: r.timestamp.0,
                    key: r.key.as_deref(),
                    value: r.value.as_deref(),
                    headers: &r.headers,
                },
                base_timestamp,
            );
            varint_len(body as i32) + body
        })
        .sum();
    BATCH_HEADER_BYTES + records_bytes
}

/// What the encoder needs of one record, whichever struct it came from.
#[derive(Clone, Copy)]
struct RecordRef<'r> {
    offset_delta: i32,
    timestamp: i64,
    key: Option<&'r [u8]>,
    value: Option<&'r [u8]>,
    headers: &'r [Header],
}

/// Writes the header, the records and then the length and CRC, which depend
/// on what was written. The iterator is walked three times (timestamps,
/// size, bytes), which is cheaper than growing `out` or moving bytes.
fn encode_refs<'r, I>(base_offset: Offset, last_offset_delta: i32, records: I, out: &mut Vec<u8>)
where
    I: Iterator<Item = RecordRef<'r>> + Clone,
{
    let written = encode_refs_with(
        base_offset,
        last_offset_delta,
        records,
        Compression::None,
        out,
    );
    // Uncompressed, only the size can fail, and the callers' preconditions
    // exclude that.
    debug_assert!(written.is_ok(), "{written:?}");
}

/// [`encode_refs`] with a codec: the records go to a scratch buffer first
/// and `out` gets them compressed. Checks the size limits itself (callers
/// of the uncompressed encoders check them beforehand, see
/// [`encode_batch`]); on `Err`, `out` may hold a partial batch.
fn encode_refs_with<'r, I>(
    base_offset: Offset,
    last_offset_delta: i32,
    records: I,
    compression: Compression,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError>
where
    I: Iterator<Item = RecordRef<'r>> + Clone,
{
    debug_assert!(base_offset.0 <= i64::MAX as u64);
    let mut timestamps = records.clone().map(|r| r.timestamp);
    let base_timestamp = timestamps.next().unwrap_or(NO_TIMESTAMP);
    let max_timestamp = timestamps.fold(base_timestamp, i64::max);
    let records_count = records.clone().count();
    debug_assert!(records_count <= BATCH_RECORDS_MAX);
    let records_bytes: usize = records
        .clone()
        .map(|r| {
            let body = record_body_len(&r, base_timestamp);
            varint_len(body as i32) + body
        })
        .sum::<usize>();
    let compressed = compression != Compression::None;
    debug_assert!(
        compressed || BATCH_HEADER_BYTES + records_bytes <= BATCH_BYTES_MAX,
        "batch of {} bytes exceeds BATCH_BYTES_MAX",
        BATCH_HEADER_BYTES + records_bytes
    );
    if compressed && records_bytes > DECOMPRESSED_BATCH_BYTES_MAX {
        return Err(EncodeError::TooLarge {
            bytes: records_bytes,
            max: DECOMPRESSED_BATCH_BYTES_MAX,
        });
    }

    let start = out.len();
    let attributes = i16::from(compression.code());
    out.reserve(BATCH_HEADER_BYTES + records_bytes);
    out.extend_from_slice(&base_offset.0.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // batchLength, filled in below
    out.extend_from_slice(&LeaderEpoch::NONE.0.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&[0; 4]); // CRC, filled in below
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&last_offset_delta.to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&NO_PRODUCER_ID.to_be_bytes());
    out.extend_from_slice(&NO_PRODUCER_EPOCH.to_be_bytes());
    out.extend_from_slice(&NO_SEQUENCE.to_be_bytes());
    out.extend_from_slice(&(records_count as i32).to_be_bytes());
    if !compressed {
        for record in records {
            put_record(out, &record, base_timestamp);
        }
        debug_assert_eq!(
            out.len() - start,
            BATCH_HEADER_BYTES + records_bytes,
            "record_body_len disagrees with put_record"
        );
    } else {
        let mut raw = Vec::with_capacity(records_bytes);
        for record in records {
            put_record(&mut raw, &record, base_timestamp);
        }
        debug_assert_eq!(raw.len(), records_bytes);
        compress(compression, &raw, out).map_err(|source| EncodeError::Compress {
            compression,
            source,
        })?;
    }
    let total = out.len() - start;
    if compressed && total > BATCH_BYTES_MAX {
        return Err(EncodeError::TooLarge {
            bytes: total,
            max: BATCH_BYTES_MAX,
        });
    }
    let batch_length = (total - BATCH_LENGTH_PREFIX_BYTES) as i32;
    out[start + BATCH_LENGTH_PREFIX_BYTES - 4..start + BATCH_LENGTH_PREFIX_BYTES]
        .copy_from_slice(&batch_length.to_be_bytes());

    let crc = crc32c::crc32c(&out[start + CRC_COVERED_FROM..]);
    out[start + CRC_AT..start + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    // Verify right after writing, as we verify right after reading.
    debug_assert!(decode_batch(&Bytes::copy_from_slice(&out[start..])).is_ok());
    Ok(())
}

fn put_record(out: &mut Vec<u8>, r: &RecordRef<'_>, base_timestamp: i64) {
    debug_assert!(r.headers.len() <= RECORD_HEADERS_MAX);
    put_varint(out, record_body_len(r, base_timestamp) as i32);
    out.push(0); // attributes
    put_varlong(out, r.timestamp.wrapping_sub(base_timestamp));
    put_varint(out, r.offset_delta);
    put_nullable(out, r.key);
    put_nullable(out, r.value);
    put_varint(out, r.headers.len() as i32);
    for header in r.headers {
        put_varint(out, header.key.len() as i32);
        out.extend_from_slice(&header.key);
        put_nullable(out, header.value.as_deref());
    }
}

/// Bytes of a record after its `length` field, i.e. the value of that field.
fn record_body_len(r: &RecordRef<'_>, base_timestamp: i64) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|h| varint_len(h.key.len() as i32) + h.key.len() + nullable_len(h.value.as_deref()))
        .sum();
    1 + varlong_len(r.timestamp.wrapping_sub(base_timestamp))
        + varint_len(r.offset_delta)
        + nullable_len(r.key)
        + nullable_len(r.value)
        + varint_len(r.headers.len() as i32)
        + headers
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

fn zigzag32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn put_leb128(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn leb128_len(n: u64) -> usize {
    // ceil(significant bits / 7), at least one byte.
    let bits = 64 - (n | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_leb128(out, zigzag32(v));
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_leb128(out, zigzag64(v));
}

fn varint_len(v: i32) -> usize {
    leb128_len(zigzag32(v))
}

fn varlong_len(v: i64) -> usize {
    leb128_len(zigzag64(v))
}
