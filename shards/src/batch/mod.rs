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
//! 21   2    attributes       i16  bits 0-2 codec (0 none, 1 gzip, 2 snappy,
//!                                 3 lz4, 4 zstd); every other bit 0:
//!                                 CreateTime, non-transactional, not control
//! 23   4    lastOffsetDelta  i32  offset of the last record - baseOffset
//! 27   8    baseTimestamp    i64  timestamp of the first record
//! 35   8    maxTimestamp     i64  largest record timestamp
//! 43   8    producerId       i64  -1, or a Kafka idempotent producer's id
//! 51   2    producerEpoch    i16  -1, or that producer's epoch
//! 53   4    baseSequence     i32  -1, or the first record's sequence number
//! 57   4    recordsCount     i32
//! 61   ..   records               compressed as one stream when the codec
//!                                 is not 0 (the CRC covers the compressed bytes)
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
//! the input (a compressed batch's records: in proportion to the input, up
//! to `DECOMPRESSED_BATCH_BYTES_MAX` in all). It rejects: any attribute bit
//! but the codec's (LogAppendTime, transactions, control batches are not
//! supported) and codecs 5–7; records that do not decompress or decompress
//! past the limit; a negative base offset or
//! a last offset beyond `i64::MAX`; more records than `lastOffsetDelta + 1`;
//! offset deltas that are not strictly increasing within
//! `[0, lastOffsetDelta]` (the offset index relies on it); record lengths that
//! differ from the bytes the record used; trailing bytes.
//!
//! # Files
//!
//! `header.rs` the fixed 61-byte header (parse, length and CRC checks, the
//! fields the log stamps in place); `compression.rs` the codecs and the
//! bounded decompression of a records section; `records.rs` the one record
//! walker behind decoding and validation (after decompression, the same
//! walk for every codec); `encode.rs` the encoder; this file the record
//! types, [`ValidBatch`] and [`BatchIter`]. The public API is flat:
//! everything is `shards::batch::*`.
//!
//! # Compressed batches
//!
//! Kafka producers compress (attribute bits 0–2). The log stores such a
//! batch byte for byte as it arrived, with only `baseOffset` and
//! `partitionLeaderEpoch` stamped (outside the CRC), and serves it so; the
//! idempotent-producer fields are stored as sent. Readers of records
//! ([`decode_batch`], [`validate_records_with`], so the log's validation,
//! recovery, compaction and every client) decompress the records section
//! into one buffer of at most `DECOMPRESSED_BATCH_BYTES_MAX` bytes and
//! walk it as they walk an uncompressed one. The codec never changes what
//! a record is: offsets, counts and every limit are those of the
//! decompressed records.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::types::{Offset, TimestampMs};

mod compression;
mod encode;
mod header;
mod records;

pub use compression::Compression;
pub use encode::{
    encode_batch, encode_batch_preserving_offsets, encode_batch_preserving_offsets_compressed,
    encoded_len,
};
pub use header::{
    peek_total_bytes, set_base_offset, set_leader_epoch, validate_batch, BatchHeader,
};
pub use records::{decode_batch, validate_records, validate_records_with, RecordShape};

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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod compression_tests;
