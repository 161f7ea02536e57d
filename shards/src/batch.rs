//! The RecordBatch v2 codec: Kafka's batch format, which is also the format of
//! Sluice's segment files (docs/design.md §5). Storing the wire format means a fetch
//! is a `sendfile` of a file range and any Kafka-aware decoder reads our logs.
//!
//! # Byte layout (all integers big-endian)
//!
//! ```text
//! at  size  field                 written as
//!  0   8    baseOffset       i64  assigned by the log (patched in place)   ┐ not covered
//!  8   4    batchLength      i32  bytes after this field                   │ by the CRC
//! 12   4    partitionLeaderEpoch  assigned by the log (patched in place)   │
//! 16   1    magic            i8   2                                        │
//! 17   4    crc              u32  CRC-32C of bytes 21..end                 ┘
//! 21   2    attributes       i16  0: uncompressed, CreateTime, non-transactional
//! 23   4    lastOffsetDelta  i32  offset of the last record - baseOffset
//! 27   8    baseTimestamp    i64  timestamp of the first record
//! 35   8    maxTimestamp     i64  largest record timestamp
//! 43   8    producerId       i64  -1
//! 51   2    producerEpoch    i16  -1
//! 53   4    baseSequence     i32  -1
//! 57   4    recordsCount     i32
//! 61   ..   records
//!
//! record: length varint          bytes of the record after this field
//!         attributes i8          unused by v2, written 0, ignored on read
//!         timestampDelta varlong record timestamp - baseTimestamp (may be < 0)
//!         offsetDelta varint     record offset - baseOffset
//!         keyLength varint       -1 = null key
//!         key bytes
//!         valueLength varint     -1 = null value
//!         value bytes
//!         headerCount varint
//!         headers: keyLength varint (never null), key bytes,
//!                  valueLength varint (-1 = null), value bytes
//! ```
//!
//! A varint (varlong) is a zigzag-encoded i32 (i64) in LEB128, at most 5 (10)
//! bytes. Timestamps are added and subtracted with wrapping arithmetic, as in
//! Kafka's Java code, so every pair of i64 timestamps round-trips.
//!
//! `baseOffset` and `partitionLeaderEpoch` lie outside the CRC so the log can
//! stamp them into an already-encoded batch without recomputing it. A corrupt
//! `batchLength` is not covered either, but it moves the CRC range, so it
//! still fails the CRC check (or the length check) in practice.
//!
//! # What the decoder enforces beyond the field layout
//!
//! Decoding takes untrusted bytes (client produce requests, files after a
//! crash) and is total: it never panics and allocates at most in proportion to
//! the input. It rejects: any attribute bit (compression, timestamp type,
//! transactions, control batches are not supported); a negative base offset or
//! a last offset beyond `i64::MAX`; more records than `lastOffsetDelta + 1`;
//! offset deltas that are not strictly increasing within
//! `[0, lastOffsetDelta]` (the offset index relies on it); record lengths that
//! differ from the bytes the record used; trailing bytes.

use std::ops::Range;

use bytes::Bytes;

use crate::constants::{
    BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES, BATCH_RECORDS_MAX,
    RECORD_HEADERS_MAX,
};
use crate::error::DecodeError;
use crate::types::{LeaderEpoch, Offset, TimestampMs};

/// Header field positions, from the layout above.
const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

/// The CRC covers everything from `attributes` to the end of the batch.
const CRC_COVERED_FROM: usize = ATTRIBUTES_AT;

const _: () = assert!(RECORDS_COUNT_AT + 4 == BATCH_HEADER_BYTES);
const _: () = assert!(BATCH_LENGTH_AT + 4 == BATCH_LENGTH_PREFIX_BYTES);

const MAGIC_V2: i8 = 2;

/// Kafka's sentinels for "no idempotent producer" and "no timestamp".
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
const NO_SEQUENCE: i32 = -1;
const NO_TIMESTAMP: i64 = -1;

/// `batchLength` of a batch with no records: the header after the prefix.
const BATCH_LENGTH_MIN: usize = BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES;
/// `batchLength` of the largest batch the engine accepts.
const BATCH_LENGTH_MAX: usize = BATCH_BYTES_MAX - BATCH_LENGTH_PREFIX_BYTES;

/// Smallest encoded record: length, attributes, timestampDelta, offsetDelta,
/// keyLength, valueLength and headerCount at one byte each. Divides the input
/// length to bound the `Vec` a decode reserves before reading the records.
const RECORD_BYTES_MIN: usize = 7;

const VARINT_BYTES_MAX: usize = 5;
const VARLONG_BYTES_MAX: usize = 10;

/// One record header. Kafka allows repeated keys; order is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header name (bytes; Kafka does not require UTF-8).
    pub key: Bytes,
    /// The header value; `None` is Kafka's null value, distinct from empty.
    pub value: Option<Bytes>,
}

/// A record to be encoded; the batch assigns its offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Create time in milliseconds since the epoch.
    pub timestamp: TimestampMs,
    /// The record key (compaction keeps the last record per key); `None`
    /// for no key.
    pub key: Option<Bytes>,
    /// The payload; `None` is a null value (a tombstone under compaction).
    pub value: Option<Bytes>,
    /// Headers in the order given.
    pub headers: Vec<Header>,
}

/// A record read back from a batch. `key`, `value` and header bytes are
/// slices of the decoded buffer, not copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    /// The record's offset in its partition (base offset + delta).
    pub offset: Offset,
    /// Create time (base timestamp + delta).
    pub timestamp: TimestampMs,
    /// The record key, if any.
    pub key: Option<Bytes>,
    /// The payload, or `None` for a null value.
    pub value: Option<Bytes>,
    /// Headers in stored order.
    pub headers: Vec<Header>,
}

/// The fixed 61-byte batch header. Values returned by [`BatchHeader::parse`]
/// satisfy the checks documented there; the methods rely on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Bytes after this field (the whole batch is `batch_length + 12`).
    pub batch_length: i32,
    /// Epoch of the leader that assigned the offsets (KIP-101).
    pub leader_epoch: LeaderEpoch,
    /// CRC-32C of the bytes from `attributes` to the end of the batch.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits; always 0
    /// in Sluice.
    pub attributes: i16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record; record timestamps are deltas from it.
    pub base_timestamp: TimestampMs,
    /// The largest record timestamp (the time index is built from it).
    pub max_timestamp: TimestampMs,
    /// Kafka idempotent-producer id; -1 (none) in batches Sluice writes.
    pub producer_id: i64,
    /// Kafka idempotent-producer epoch; -1 in batches Sluice writes.
    pub producer_epoch: i16,
    /// Kafka idempotent-producer sequence; -1 in batches Sluice writes.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the fixed 61-byte header from the start of `buf`. Checks magic
    /// == 2, `batch_length` in [49, `BATCH_BYTES_MAX` - 12], attributes == 0
    /// (no compression, CreateTime, not transactional, not control),
    /// `records_count` in [0, min(`BATCH_RECORDS_MAX`, `last_offset_delta` +
    /// 1)], `last_offset_delta` >= 0, and `base_offset` >= 0 with the last
    /// offset fitting in an i64. Does not check the CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, DecodeError> {
        let Some(h) = buf.first_chunk::<BATCH_HEADER_BYTES>() else {
            return Err(DecodeError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: buf.len(),
            });
        };
        let magic = h[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(DecodeError::BadMagic { magic });
        }
        let batch_length = i32_at(h, BATCH_LENGTH_AT);
        check_batch_length(batch_length)?;
        let attributes = i16_at(h, ATTRIBUTES_AT);
        if attributes != 0 {
            return Err(DecodeError::UnsupportedAttributes { attributes });
        }
        let last_offset_delta = i32_at(h, LAST_OFFSET_DELTA_AT);
        let records_count = i32_at(h, RECORDS_COUNT_AT);
        let base_offset = i64_at(h, BASE_OFFSET_AT);
        check_counts(base_offset, last_offset_delta, records_count)?;
        Ok(BatchHeader {
            // check_counts rejected negative base offsets.
            base_offset: Offset(base_offset as u64),
            batch_length,
            leader_epoch: LeaderEpoch(i32_at(h, LEADER_EPOCH_AT)),
            crc: i32_at(h, CRC_AT) as u32,
            attributes,
            last_offset_delta,
            base_timestamp: TimestampMs(i64_at(h, BASE_TIMESTAMP_AT)),
            max_timestamp: TimestampMs(i64_at(h, MAX_TIMESTAMP_AT)),
            producer_id: i64_at(h, PRODUCER_ID_AT),
            producer_epoch: i16_at(h, PRODUCER_EPOCH_AT),
            base_sequence: i32_at(h, BASE_SEQUENCE_AT),
            records_count,
        })
    }

    /// Bytes the whole batch occupies: `batch_length` plus the 12-byte prefix.
    pub fn total_bytes(&self) -> usize {
        debug_assert!(self.batch_length >= 0);
        self.batch_length.max(0) as usize + BATCH_LENGTH_PREFIX_BYTES
    }

    /// Offset of the last record the batch covers (compaction may have
    /// removed that record, but the batch still spans it).
    pub fn last_offset(&self) -> Offset {
        debug_assert!(self.last_offset_delta >= 0);
        self.base_offset.plus(self.last_offset_delta.max(0) as u64)
    }

    /// Offset the batch after this one starts at.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().next()
    }
}

/// Reads only the first 12 bytes: the total length of the batch starting at
/// `buf[0]`. Err if fewer than 12 bytes or the length is out of range. Lets
/// scanners step from batch to batch without reading whole headers.
pub fn peek_total_bytes(buf: &[u8]) -> Result<usize, DecodeError> {
    let Some(prefix) = buf.first_chunk::<BATCH_LENGTH_PREFIX_BYTES>() else {
        return Err(DecodeError::Truncated {
            needed: BATCH_LENGTH_PREFIX_BYTES,
            available: buf.len(),
        });
    };
    let batch_length = i32_at(prefix, BATCH_LENGTH_AT);
    check_batch_length(batch_length)?;
    Ok(batch_length as usize + BATCH_LENGTH_PREFIX_BYTES)
}

/// Validates one whole batch occupying exactly `buf`: the header checks of
/// [`BatchHeader::parse`], the length, and the CRC-32C over `buf[21..]`.
/// Cheap: the records are not decoded.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, DecodeError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_bytes();
    if buf.len() < total {
        return Err(DecodeError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    if buf.len() > total {
        return Err(DecodeError::TrailingBytes {
            trailing: buf.len() - total,
        });
    }
    let computed = crc32c::crc32c(&buf[CRC_COVERED_FROM..]);
    if computed != header.crc {
        return Err(DecodeError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Fully decodes one batch occupying exactly `buf`: validates it, then every
/// record. Offsets are `base + offsetDelta`, timestamps `base + delta`; key,
/// value and header bytes are zero-copy slices of `buf`.
pub fn decode_batch(buf: &Bytes) -> Result<(BatchHeader, Vec<DecodedRecord>), DecodeError> {
    let header = validate_batch(buf)?;
    // parse() bounded the count to [0, BATCH_RECORDS_MAX].
    let declared = header.records_count as usize;
    let mut cursor = Cursor {
        buf,
        pos: BATCH_HEADER_BYTES,
        end: buf.len(),
    };
    // The declared count is untrusted: reserve no more than the bytes allow.
    let mut records = Vec::with_capacity(declared.min(cursor.remaining() / RECORD_BYTES_MIN));
    let mut prev_offset_delta = None;
    while records.len() < declared && cursor.remaining() > 0 {
        let record = decode_record(&mut cursor, buf, &header, records.len(), prev_offset_delta)?;
        prev_offset_delta = Some(record.offset.0 - header.base_offset.0);
        records.push(record);
    }
    if records.len() < declared {
        return Err(DecodeError::RecordCountMismatch {
            declared,
            found: records.len(),
        });
    }
    if cursor.remaining() > 0 {
        return Err(DecodeError::TrailingBytes {
            trailing: cursor.remaining(),
        });
    }
    Ok((header, records))
}

/// Checks one whole batch occupying exactly `buf` as strictly as
/// [`decode_batch`] (header, CRC, every record) without building anything:
/// what the log runs on every client batch before it is written.
pub fn validate_records(buf: &[u8]) -> Result<BatchHeader, DecodeError> {
    validate_records_with(buf, |_| Ok::<(), DecodeError>(()))
}

/// What the walk saw of one record: the figures the server's per-record
/// limits are checked against. Computed from the spans the walker already
/// has, so reporting it costs nothing and allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordShape {
    /// Position of the record in its batch (0 for the first).
    pub index: usize,
    /// How many headers the record has.
    pub headers: usize,
    /// Bytes of header keys plus header values (a null value counts 0).
    pub header_bytes: usize,
}

/// [`validate_records`] that also hands each record's [`RecordShape`] to
/// `visit`, in order, as soon as that record has been checked. The first
/// `Err` from `visit` stops the walk and is returned as is, so a caller
/// can refuse a batch on its own limits in the same pass that validates
/// it (one walker, not a second looser parser). A record is visited only
/// once it is known to be well formed; a malformed one ends the walk with
/// its `DecodeError` (converted into `E`).
pub fn validate_records_with<E: From<DecodeError>>(
    buf: &[u8],
    mut visit: impl FnMut(RecordShape) -> Result<(), E>,
) -> Result<BatchHeader, E> {
    let header = validate_batch(buf)?;
    let declared = header.records_count as usize;
    let mut cursor = Cursor {
        buf,
        pos: BATCH_HEADER_BYTES,
        end: buf.len(),
    };
    let mut found = 0;
    let mut prev_offset_delta = None;
    while found < declared && cursor.remaining() > 0 {
        let mut headers = 0usize;
        let mut header_bytes = 0usize;
        let spans = walk_record(
            &mut cursor,
            &header,
            found,
            prev_offset_delta,
            |key, value| {
                headers += 1;
                // Both spans lie inside a batch of at most BATCH_BYTES_MAX
                // bytes, so the sum cannot overflow; saturate anyway.
                let value_len = value.map_or(0, |v| v.len());
                header_bytes = header_bytes.saturating_add(key.len() + value_len);
            },
        )?;
        visit(RecordShape {
            index: found,
            headers,
            header_bytes,
        })?;
        prev_offset_delta = Some(spans.offset_delta);
        found += 1;
    }
    if found < declared {
        return Err(DecodeError::RecordCountMismatch { declared, found }.into());
    }
    if cursor.remaining() > 0 {
        return Err(DecodeError::TrailingBytes {
            trailing: cursor.remaining(),
        }
        .into());
    }
    Ok(header)
}

/// A client batch that passed [`validate_records`], holding its bytes so
/// they cannot change after the check. The only way to build one is
/// [`ValidBatch::check`] or [`ValidBatch::check_with`], so the log can
/// append it without walking its records a second time and still never
/// write a batch nobody validated.
#[derive(Debug)]
pub struct ValidBatch {
    bytes: Vec<u8>,
    header: BatchHeader,
}

impl ValidBatch {
    /// Validates `bytes` as one whole batch ([`validate_records`]).
    pub fn check(bytes: Vec<u8>) -> Result<ValidBatch, DecodeError> {
        Self::check_with(bytes, |_| Ok::<(), DecodeError>(()))
    }

    /// Validates `bytes` as one whole batch, reporting each record's shape
    /// to `visit` on the way ([`validate_records_with`]).
    pub fn check_with<E: From<DecodeError>>(
        bytes: Vec<u8>,
        visit: impl FnMut(RecordShape) -> Result<(), E>,
    ) -> Result<ValidBatch, E> {
        let header = validate_records_with(&bytes, visit)?;
        Ok(ValidBatch { bytes, header })
    }

    /// The batch header, as validated.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch bytes, as validated.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes and header, for the log to stamp offsets and epoch into (both
    /// outside the CRC). Crate-private so a caller outside the engine cannot
    /// change the bytes and then present them as validated.
    pub(crate) fn into_parts(self) -> (Vec<u8>, BatchHeader) {
        (self.bytes, self.header)
    }
}

/// Encodes `records` as one batch appended to `out`: base offset
/// `base_offset`, offset deltas 0..n, base timestamp the first record's (later
/// deltas may be negative), max timestamp the largest, leader epoch -1 (the
/// log stamps it with [`set_leader_epoch`]).
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

/// Stamps the base offset into an encoded batch (bytes 0..8). The field is
/// outside the CRC, so the batch stays valid.
pub fn set_base_offset(batch: &mut [u8], base: Offset) {
    debug_assert!(base.0 <= i64::MAX as u64, "Kafka offsets are i64");
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base.0.to_be_bytes());
}

/// Stamps the partition leader epoch into an encoded batch (bytes 12..16).
/// The field is outside the CRC, so the batch stays valid.
pub fn set_leader_epoch(batch: &mut [u8], epoch: LeaderEpoch) {
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.0.to_be_bytes());
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

/// Iterates over a buffer of concatenated whole batches (e.g. a fetched file
/// range or a segment tail during recovery), validating each one's header,
/// length and CRC. Yields `Err` once, on the first bad batch, then stops;
/// [`BatchIter::position`] then tells where the valid prefix ends.
#[derive(Clone, Debug)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    /// Iterates over the batches at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter {
            buf,
            position: 0,
            failed: false,
        }
    }

    /// Bytes of `buf` covered by the batches yielded so far: the start of the
    /// next (or of the bad) batch, where a recovery scan would truncate.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.buf.get(self.position..).unwrap_or_default();
        if rest.is_empty() {
            return None;
        }
        match next_batch(rest) {
            Ok((header, batch)) => {
                self.position += batch.len();
                Some(Ok((header, batch)))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

impl std::iter::FusedIterator for BatchIter<'_> {}

/// The whole, valid batch at the start of `rest`.
fn next_batch(rest: &[u8]) -> Result<(BatchHeader, &[u8]), DecodeError> {
    let total = peek_total_bytes(rest)?;
    let Some(batch) = rest.get(..total) else {
        return Err(DecodeError::Truncated {
            needed: total,
            available: rest.len(),
        });
    };
    let header = validate_batch(batch)?;
    Ok((header, batch))
}

fn check_batch_length(batch_length: i32) -> Result<(), DecodeError> {
    let in_range = usize::try_from(batch_length)
        .is_ok_and(|length| (BATCH_LENGTH_MIN..=BATCH_LENGTH_MAX).contains(&length));
    if !in_range {
        return Err(DecodeError::BadBatchLength {
            length: i64::from(batch_length),
            min: BATCH_LENGTH_MIN,
            max: BATCH_LENGTH_MAX,
        });
    }
    Ok(())
}

/// The header checks on offsets and counts. `DecodeError` has no variant for
/// a bad header offset field, so those report as record 0 with a reason that
/// names the header.
fn check_counts(
    base_offset: i64,
    last_offset_delta: i32,
    records_count: i32,
) -> Result<(), DecodeError> {
    if records_count < 0 || records_count as usize > BATCH_RECORDS_MAX {
        return Err(DecodeError::TooManyRecords {
            count: i64::from(records_count),
            max: BATCH_RECORDS_MAX,
        });
    }
    if last_offset_delta < 0 {
        return Err(DecodeError::BadRecord {
            index: 0,
            reason: "batch header: negative lastOffsetDelta",
        });
    }
    // Offset deltas are distinct and within [0, lastOffsetDelta].
    if i64::from(records_count) > i64::from(last_offset_delta) + 1 {
        return Err(DecodeError::TooManyRecords {
            count: i64::from(records_count),
            max: last_offset_delta as usize + 1,
        });
    }
    // Kafka offsets are i64; the last offset must be one too.
    if base_offset < 0 || base_offset > i64::MAX - i64::from(last_offset_delta) {
        return Err(DecodeError::BadRecord {
            index: 0,
            reason: "batch header: negative baseOffset or last offset beyond i64::MAX",
        });
    }
    Ok(())
}

fn i16_at<const N: usize>(h: &[u8; N], at: usize) -> i16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&h[at..at + 2]);
    i16::from_be_bytes(b)
}

fn i32_at<const N: usize>(h: &[u8; N], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&h[at..at + 4]);
    i32::from_be_bytes(b)
}

fn i64_at<const N: usize>(h: &[u8; N], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    i64::from_be_bytes(b)
}

// ---------------------------------------------------------------------------
// Record decoding

/// A read position in `buf[..end]`; every read stays below `end`, so a record
/// cannot read past its own declared length.
struct Cursor<'b> {
    buf: &'b [u8],
    pos: usize,
    end: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn byte(&mut self) -> Option<u8> {
        if self.pos >= self.end {
            return None;
        }
        let byte = self.buf.get(self.pos).copied();
        self.pos += 1;
        byte
    }

    /// The next `len` bytes as a range of `buf`, or None past `end`.
    fn take(&mut self, len: usize) -> Option<Range<usize>> {
        if len > self.remaining() {
            return None;
        }
        let range = self.pos..self.pos + len;
        self.pos += len;
        Some(range)
    }

    /// Unsigned LEB128 of at most `bytes_max` bytes for a `bits`-wide value;
    /// the last permitted byte may carry only the bits that remain.
    fn leb128(&mut self, bytes_max: usize, bits: u32) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..bytes_max {
            let byte = self.byte().ok_or(DecodeError::BadVarint)?;
            let shift = 7 * i as u32;
            if i == bytes_max - 1 && u32::from(byte) >> (bits - shift) != 0 {
                return Err(DecodeError::BadVarint);
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::BadVarint)
    }

    fn varint(&mut self) -> Result<i32, DecodeError> {
        let n = self.leb128(VARINT_BYTES_MAX, 32)? as u32;
        Ok((n >> 1) as i32 ^ -((n & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, DecodeError> {
        let n = self.leb128(VARLONG_BYTES_MAX, 64)?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    /// A length-prefixed byte string where -1 means null, as a range.
    fn nullable_range(
        &mut self,
        index: usize,
        negative: &'static str,
        too_long: &'static str,
    ) -> Result<Option<Range<usize>>, DecodeError> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        self.range(len, index, negative, too_long).map(Some)
    }

    /// A length-prefixed byte string that may not be null, `len` already read.
    fn range(
        &mut self,
        len: i32,
        index: usize,
        negative: &'static str,
        too_long: &'static str,
    ) -> Result<Range<usize>, DecodeError> {
        let len = usize::try_from(len).map_err(|_| bad_record(index, negative))?;
        self.take(len).ok_or(bad_record(index, too_long))
    }
}

fn bad_record(index: usize, reason: &'static str) -> DecodeError {
    DecodeError::BadRecord { index, reason }
}

/// Where the parts of one record lie in the batch.
struct RecordSpans {
    offset_delta: u64,
    timestamp_delta: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// Checks record number `index` at the cursor, reports each header's key and
/// value ranges to `on_header`, and moves the cursor past the record. The one
/// record parser: decoding builds `Bytes` from the spans, validation drops
/// them, so both accept exactly the same input.
fn walk_record(
    cursor: &mut Cursor<'_>,
    header: &BatchHeader,
    index: usize,
    prev_offset_delta: Option<u64>,
    mut on_header: impl FnMut(Range<usize>, Option<Range<usize>>),
) -> Result<RecordSpans, DecodeError> {
    let length = cursor.varint()?;
    let length =
        usize::try_from(length).map_err(|_| bad_record(index, "negative record length"))?;
    if length > cursor.remaining() {
        return Err(bad_record(index, "record length runs past the batch end"));
    }
    let mut rec = Cursor {
        buf: cursor.buf,
        pos: cursor.pos,
        end: cursor.pos + length,
    };
    // Record attributes are unused in v2; Kafka ignores them too.
    rec.byte()
        .ok_or(bad_record(index, "record ends before its attributes"))?;
    let timestamp_delta = rec.varlong()?;
    let offset_delta = check_offset_delta(rec.varint()?, header, index, prev_offset_delta)?;
    let key = rec.nullable_range(index, "negative key length", "key runs past the record end")?;
    let value = rec.nullable_range(
        index,
        "negative value length",
        "value runs past the record end",
    )?;
    let count = rec.varint()?;
    let count = usize::try_from(count).map_err(|_| bad_record(index, "negative header count"))?;
    if count > RECORD_HEADERS_MAX {
        return Err(DecodeError::TooManyHeaders {
            index,
            count: count as i64,
            max: RECORD_HEADERS_MAX,
        });
    }
    for _ in 0..count {
        let key_len = rec.varint()?;
        let key = rec.range(
            key_len,
            index,
            "negative header key length",
            "header key runs past the record end",
        )?;
        let value = rec.nullable_range(
            index,
            "negative header value length",
            "header value runs past the record end",
        )?;
        on_header(key, value);
    }
    if rec.remaining() != 0 {
        return Err(bad_record(
            index,
            "record length exceeds the bytes the record uses",
        ));
    }
    cursor.pos = rec.end;
    Ok(RecordSpans {
        offset_delta,
        timestamp_delta,
        key,
        value,
    })
}

/// Decodes record number `index` at the cursor and moves the cursor past it.
fn decode_record(
    cursor: &mut Cursor<'_>,
    batch: &Bytes,
    header: &BatchHeader,
    index: usize,
    prev_offset_delta: Option<u64>,
) -> Result<DecodedRecord, DecodeError> {
    let mut headers = Vec::new();
    let spans = walk_record(cursor, header, index, prev_offset_delta, |key, value| {
        headers.push(Header {
            key: batch.slice(key),
            value: value.map(|v| batch.slice(v)),
        });
    })?;
    Ok(DecodedRecord {
        // parse() guaranteed base + lastOffsetDelta fits; the delta is within it.
        offset: header.base_offset.plus(spans.offset_delta),
        timestamp: TimestampMs(header.base_timestamp.0.wrapping_add(spans.timestamp_delta)),
        key: spans.key.map(|k| batch.slice(k)),
        value: spans.value.map(|v| batch.slice(v)),
        headers,
    })
}

/// Offset deltas must increase strictly and stay within the batch's range.
fn check_offset_delta(
    delta: i32,
    header: &BatchHeader,
    index: usize,
    prev: Option<u64>,
) -> Result<u64, DecodeError> {
    if delta < 0 || delta > header.last_offset_delta {
        return Err(bad_record(
            index,
            "offset delta outside [0, lastOffsetDelta]",
        ));
    }
    let delta = delta as u64;
    if prev.is_some_and(|prev| delta <= prev) {
        return Err(bad_record(
            index,
            "offset delta not above the previous record's",
        ));
    }
    Ok(delta)
}

// ---------------------------------------------------------------------------
// Encoding

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
    debug_assert!(base_offset.0 <= i64::MAX as u64);
    let mut timestamps = records.clone().map(|r| r.timestamp);
    let base_timestamp = timestamps.next().unwrap_or(NO_TIMESTAMP);
    let max_timestamp = timestamps.fold(base_timestamp, i64::max);
    let records_count = records.clone().count();
    debug_assert!(records_count <= BATCH_RECORDS_MAX);
    let total: usize = BATCH_HEADER_BYTES
        + records
            .clone()
            .map(|r| {
                let body = record_body_len(&r, base_timestamp);
                varint_len(body as i32) + body
            })
            .sum::<usize>();
    debug_assert!(
        total <= BATCH_BYTES_MAX,
        "batch of {total} bytes exceeds BATCH_BYTES_MAX"
    );

    let start = out.len();
    out.reserve(total);
    out.extend_from_slice(&base_offset.0.to_be_bytes());
    out.extend_from_slice(&((total - BATCH_LENGTH_PREFIX_BYTES) as i32).to_be_bytes());
    out.extend_from_slice(&LeaderEpoch::NONE.0.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&[0; 4]); // CRC, filled in below
    out.extend_from_slice(&0i16.to_be_bytes()); // attributes
    out.extend_from_slice(&last_offset_delta.to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&NO_PRODUCER_ID.to_be_bytes());
    out.extend_from_slice(&NO_PRODUCER_EPOCH.to_be_bytes());
    out.extend_from_slice(&NO_SEQUENCE.to_be_bytes());
    out.extend_from_slice(&(records_count as i32).to_be_bytes());
    for record in records {
        put_record(out, &record, base_timestamp);
    }
    debug_assert_eq!(
        out.len() - start,
        total,
        "record_body_len disagrees with put_record"
    );

    let crc = crc32c::crc32c(&out[start + CRC_COVERED_FROM..]);
    out[start + CRC_AT..start + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    // Verify right after writing, as we verify right after reading.
    debug_assert!(decode_batch(&Bytes::copy_from_slice(&out[start..])).is_ok());
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let found: Vec<(usize, usize)> =
            shapes.iter().map(|s| (s.headers, s.header_bytes)).collect();
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
        // gzip, zstd, LogAppendTime, transactional, control, delete horizon
        for attributes in [1i16, 4, 1 << 3, 1 << 4, 1 << 5, 1 << 6] {
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
        // 0.15 decoder also misreads a null header value (length -1; it
        // tests for -2, kafka-protocol-rs issue #133, fixed upstream by PR
        // #134), so batches it decodes carry no null header values. The
        // other direction (we decode its batches) does include them.

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
            RecordBatchEncoder::encode(&mut buf, &records, &options)
                .expect("kafka-protocol encodes");
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
        let header = (arb_bytes(), prop::option::of(arb_bytes()))
            .prop_map(|(key, value)| Header { key, value });
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
}
