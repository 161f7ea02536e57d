//! The fixed 61-byte batch header: its field positions, parsing and checks,
//! the length and CRC check of a whole batch, and the two fields the log
//! stamps into an encoded batch.

use super::compression::{Compression, COMPRESSION_MASK};
use crate::constants::{
    BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES, BATCH_RECORDS_MAX,
};
use crate::error::DecodeError;
use crate::types::{LeaderEpoch, Offset, TimestampMs};

/// Header field positions, from the layout in the module docs.
const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
pub(super) const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

/// The CRC covers everything from `attributes` to the end of the batch.
pub(super) const CRC_COVERED_FROM: usize = ATTRIBUTES_AT;

const _: () = assert!(RECORDS_COUNT_AT + 4 == BATCH_HEADER_BYTES);
const _: () = assert!(BATCH_LENGTH_AT + 4 == BATCH_LENGTH_PREFIX_BYTES);

pub(super) const MAGIC_V2: i8 = 2;

/// `batchLength` of a batch with no records: the header after the prefix.
const BATCH_LENGTH_MIN: usize = BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES;
/// `batchLength` of the largest batch the engine accepts.
const BATCH_LENGTH_MAX: usize = BATCH_BYTES_MAX - BATCH_LENGTH_PREFIX_BYTES;

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
    /// Compression, timestamp type, transactional and control bits. Only
    /// the compression bits (0–2) may be set; batches Sluice encodes
    /// itself have none.
    pub attributes: i16,
    /// The codec in the attributes' bits 0–2.
    pub compression: Compression,
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
    /// == 2, `batch_length` in [49, `BATCH_BYTES_MAX` - 12], attributes
    /// with no bit but the compression codec's (CreateTime, not
    /// transactional, not control) and a known codec (0–4),
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
        let compression = check_attributes(attributes)?;
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
            compression,
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

/// Attribute bits 3–15 that Sluice refuses, all of them: bit 3
/// (LogAppendTime: a broker sets it on its own copy, producers send
/// CreateTime), bit 4 (transactional) and bit 5 (control: transaction
/// markers), since Sluice has no transactions; bit 6 (KIP-534's delete
/// horizon, which only a Kafka log cleaner writes) and the unused rest.
/// Bits 0–2 are the codec, checked separately.
const ATTRIBUTES_REFUSED: i16 = !COMPRESSION_MASK;

/// The codec of a batch whose attributes Sluice accepts.
fn check_attributes(attributes: i16) -> Result<Compression, DecodeError> {
    if attributes & ATTRIBUTES_REFUSED != 0 {
        return Err(DecodeError::UnsupportedAttributes { attributes });
    }
    // Masked to bits 0-2, so the value fits a u8.
    Compression::from_code((attributes & COMPRESSION_MASK) as u8)
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
