//! The record walker: one parser of the records of a batch, behind both
//! [`decode_batch`] (which builds [`DecodedRecord`]s from the spans it
//! finds) and [`validate_records`] (which only checks them), so the two
//! accept exactly the same input.
//!
//! The walker reads a records section: the bytes after the header, or, in
//! a compressed batch, those bytes decompressed (bounded by
//! `DECOMPRESSED_BATCH_BYTES_MAX`). Everything after decompression is the
//! same walk with the same checks.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;

use super::compression::decompress;
use super::{validate_batch, BatchHeader, Compression, DecodedRecord, Header};
use crate::constants::{BATCH_HEADER_BYTES, RECORD_HEADERS_MAX};
use crate::error::DecodeError;
use crate::types::TimestampMs;

/// Smallest encoded record: length, attributes, timestampDelta, offsetDelta,
/// keyLength, valueLength and headerCount at one byte each. Divides the input
/// length to bound the `Vec` a decode reserves before reading the records.
const RECORD_BYTES_MIN: usize = 7;

const VARINT_BYTES_MAX: usize = 5;
const VARLONG_BYTES_MAX: usize = 10;

/// Fully decodes one batch occupying exactly `buf`: validates it, then every
/// record. Offsets are `base + offsetDelta`, timestamps `base + delta`; key,
/// value and header bytes are zero-copy slices of `buf`, or, in a
/// compressed batch, of the one buffer its records were decompressed into.
pub fn decode_batch(buf: &Bytes) -> Result<(BatchHeader, Vec<DecodedRecord>), DecodeError> {
    let header = validate_batch(buf)?;
    let section = match header.compression {
        Compression::None => buf.slice(BATCH_HEADER_BYTES..),
        codec => Bytes::from(decompress(codec, &buf[BATCH_HEADER_BYTES..])?),
    };
    // parse() bounded the count to [0, BATCH_RECORDS_MAX].
    let declared = header.records_count as usize;
    // The declared count is untrusted: reserve no more than the bytes allow.
    let mut records = Vec::with_capacity(declared.min(section.len() / RECORD_BYTES_MIN));
    walk_records(&section, &header, |cursor, index, prev_offset_delta| {
        let record = decode_record(cursor, &section, &header, index, prev_offset_delta)?;
        let offset_delta = record.offset.0 - header.base_offset.0;
        records.push(record);
        Ok::<_, DecodeError>(offset_delta)
    })?;
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
    let records = &buf[BATCH_HEADER_BYTES..];
    let section = match header.compression {
        Compression::None => Cow::Borrowed(records),
        codec => Cow::Owned(decompress(codec, records)?),
    };
    walk_records(
        &section,
        &header,
        |cursor, index, prev_offset_delta| -> Result<u64, E> {
            let mut headers = 0usize;
            let mut header_bytes = 0usize;
            let spans = walk_record(cursor, &header, index, prev_offset_delta, |key, value| {
                headers += 1;
                // Both spans lie inside a batch of at most BATCH_BYTES_MAX
                // bytes, so the sum cannot overflow; saturate anyway.
                let value_len = value.map_or(0, |v| v.len());
                header_bytes = header_bytes.saturating_add(key.len() + value_len);
            })?;
            visit(RecordShape {
                index,
                headers,
                header_bytes,
            })?;
            Ok(spans.offset_delta)
        },
    )?;
    Ok(header)
}

/// Steps through `section`, the (decompressed) records of the batch whose
/// header `header` has been validated: `step(cursor, index, previous
/// offset delta)` checks the record at the cursor, moves the cursor past
/// it and returns its offset delta. Then checks that the section held the
/// declared number of records and nothing after them.
fn walk_records<E: From<DecodeError>>(
    section: &[u8],
    header: &BatchHeader,
    mut step: impl FnMut(&mut Cursor<'_>, usize, Option<u64>) -> Result<u64, E>,
) -> Result<(), E> {
    let declared = header.records_count as usize;
    let mut cursor = Cursor {
        buf: section,
        pos: 0,
        end: section.len(),
    };
    let mut found = 0;
    let mut prev_offset_delta = None;
    while found < declared && cursor.remaining() > 0 {
        prev_offset_delta = Some(step(&mut cursor, found, prev_offset_delta)?);
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
    Ok(())
}

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
    section: &Bytes,
    header: &BatchHeader,
    index: usize,
    prev_offset_delta: Option<u64>,
) -> Result<DecodedRecord, DecodeError> {
    let mut headers = Vec::new();
    let spans = walk_record(cursor, header, index, prev_offset_delta, |key, value| {
        headers.push(Header {
            key: section.slice(key),
            value: value.map(|v| section.slice(v)),
        });
    })?;
    Ok(DecodedRecord {
        // parse() guaranteed base + lastOffsetDelta fits; the delta is within it.
        offset: header.base_offset.plus(spans.offset_delta),
        timestamp: TimestampMs(header.base_timestamp.0.wrapping_add(spans.timestamp_delta)),
        key: spans.key.map(|k| section.slice(k)),
        value: spans.value.map(|v| section.slice(v)),
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
