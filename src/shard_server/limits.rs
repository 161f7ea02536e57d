//! Enforcing the node's resource limits (`crate::limits`) on a shard: the
//! error a client gets when one trips, the checks on a published batch, and
//! the read buffer policy that keeps idle connections cheap.

use shards::batch::BatchHeader;
use shards::constants::BATCH_HEADER_BYTES;

use crate::limits::{LimitCounters, LimitKind, Limits};
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::limits::FRAME_HEADER_BYTES;

/// Read buffer of a connection between frames. An idle connection holds
/// only this much (the frame header, then just what the announced frame
/// needs, up to [`READ_CHUNK_BYTES_MAX`] per read), so thousands of idle
/// sockets cost little memory.
pub const READ_BUFFER_IDLE_BYTES: usize = 512;
/// Largest read from a socket at once.
pub const READ_CHUNK_BYTES_MAX: usize = 64 << 10;
/// A read buffer grown past this for one large frame is released once it
/// is empty again.
pub const READ_BUFFER_KEEP_BYTES: usize = 64 << 10;

/// The answer to a request that tripped `kind` (counted in
/// `sluice_limit_exceeded_total`): `LimitExceeded`, message
/// `"<limit name>: <detail>"`.
pub fn exceeded(counters: &LimitCounters, kind: LimitKind, detail: &str) -> ErrorResponse {
    counters.record(kind);
    ErrorResponse::new(
        ErrorCode::LimitExceeded,
        format!("{}: {detail}", kind.name()),
    )
}

/// How many bytes the next socket read may bring, given what is buffered:
/// the rest of the frame header, then the rest of the announced frame (the
/// length was already checked against the frame limit by the decoder's
/// first look), capped at [`READ_CHUNK_BYTES_MAX`].
pub fn next_read_bytes(buffered: &[u8]) -> usize {
    if buffered.len() < FRAME_HEADER_BYTES {
        return READ_BUFFER_IDLE_BYTES.max(FRAME_HEADER_BYTES)
            - buffered.len().min(FRAME_HEADER_BYTES);
    }
    let length = u32::from_be_bytes([buffered[0], buffered[1], buffered[2], buffered[3]]) as usize;
    let frame_bytes = 4 + length;
    frame_bytes
        .saturating_sub(buffered.len())
        .clamp(READ_BUFFER_IDLE_BYTES, READ_CHUNK_BYTES_MAX)
}

/// Checks a published batch against the batch limits before it is
/// appended: bytes, records, headers per record and header bytes per
/// record. A batch too malformed to walk passes here and is refused by the
/// log's full validation (`InvalidBatch`).
pub fn check_publish_batch(limits: &Limits, batch: &[u8]) -> Result<(), (LimitKind, String)> {
    if batch.len() > limits.batch_bytes_max {
        return Err((
            LimitKind::BatchBytes,
            format!(
                "the batch is {} bytes, the limit is {}",
                batch.len(),
                limits.batch_bytes_max
            ),
        ));
    }
    let Ok(header) = BatchHeader::parse(batch) else {
        return Ok(());
    };
    let records = header.records_count.max(0) as usize;
    if records > limits.batch_records_max {
        return Err((
            LimitKind::BatchRecords,
            format!(
                "the batch has {records} records, the limit is {}",
                limits.batch_records_max
            ),
        ));
    }
    let body = batch.get(BATCH_HEADER_BYTES..).unwrap_or_default();
    for (index, headers) in RecordHeaders::new(body).take(records).enumerate() {
        let (count, bytes) = headers;
        if count > limits.record_headers_max {
            return Err((
                LimitKind::RecordHeaders,
                format!(
                    "record {index} has {count} headers, the limit is {}",
                    limits.record_headers_max
                ),
            ));
        }
        if bytes > limits.record_header_bytes_max {
            return Err((
                LimitKind::RecordHeaderBytes,
                format!(
                    "record {index} has {bytes} bytes of headers, the limit is {}",
                    limits.record_header_bytes_max
                ),
            ));
        }
    }
    Ok(())
}

/// Walks the records of a batch body (no allocation) yielding each record's
/// header count and header bytes (keys + values); stops at the first thing
/// that does not parse.
struct RecordHeaders<'a> {
    rest: &'a [u8],
}

impl<'a> RecordHeaders<'a> {
    fn new(body: &'a [u8]) -> Self {
        RecordHeaders { rest: body }
    }
}

impl Iterator for RecordHeaders<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        let mut cursor = Cursor { buf: self.rest };
        let length = usize::try_from(cursor.varint()?).ok()?;
        let record = cursor.take(length)?;
        self.rest = cursor.buf;
        let mut r = Cursor { buf: record };
        r.take(1)?; // attributes
        r.varint()?; // timestamp delta (varlong)
        r.varint()?; // offset delta
        for _ in 0..2 {
            // key, then value: length (-1 = null) and bytes
            let len = r.varint()?;
            if len > 0 {
                r.take(usize::try_from(len).ok()?)?;
            }
        }
        let count = usize::try_from(r.varint()?).ok()?;
        let mut bytes = 0usize;
        for _ in 0..count {
            let key = usize::try_from(r.varint()?).ok()?;
            r.take(key)?;
            let value = r.varint()?;
            let value = usize::try_from(value.max(0)).ok()?;
            r.take(value)?;
            bytes = bytes.saturating_add(key + value);
        }
        Some((count, bytes))
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    /// A zigzag LEB128 varint or varlong (at most 10 bytes).
    fn varint(&mut self) -> Option<i64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.take(1)?.first()?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use shards::batch::{encode_batch, Header, Record};
    use shards::types::{Offset, TimestampMs};

    fn batch(records: usize, headers: usize, header_value: usize) -> Vec<u8> {
        let record = Record {
            timestamp: TimestampMs(1),
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"value")),
            headers: (0..headers)
                .map(|i| Header {
                    key: Bytes::from(format!("h{i}")),
                    value: Some(Bytes::from(vec![b'x'; header_value])),
                })
                .collect(),
        };
        let mut out = Vec::new();
        encode_batch(Offset(0), &vec![record; records], &mut out);
        out
    }

    #[test]
    fn batches_within_limits_pass() {
        assert_eq!(
            check_publish_batch(&Limits::default(), &batch(10, 3, 10)),
            Ok(())
        );
    }

    #[test]
    fn each_batch_limit_trips_with_its_name() {
        let limits = Limits {
            batch_bytes_max: 1000,
            batch_records_max: 5,
            record_headers_max: 2,
            record_header_bytes_max: 50,
            ..Limits::default()
        };
        let kind = |b: &[u8]| check_publish_batch(&limits, b).map_err(|(k, _)| k);
        assert_eq!(kind(&batch(1, 0, 0)), Ok(()));
        assert_eq!(kind(&batch(100, 0, 0)), Err(LimitKind::BatchBytes));
        assert_eq!(kind(&batch(6, 0, 0)), Err(LimitKind::BatchRecords));
        assert_eq!(kind(&batch(1, 3, 1)), Err(LimitKind::RecordHeaders));
        assert_eq!(kind(&batch(1, 1, 60)), Err(LimitKind::RecordHeaderBytes));
    }

    #[test]
    fn header_walk_matches_the_encoder_and_survives_garbage() {
        let b = batch(3, 2, 7);
        let found: Vec<(usize, usize)> = RecordHeaders::new(&b[BATCH_HEADER_BYTES..]).collect();
        assert_eq!(found, vec![(2, 2 * (2 + 7)); 3]);
        for cut in 0..b.len() {
            let _ = check_publish_batch(&Limits::default(), &b[..cut]);
            let _ = RecordHeaders::new(&b[cut..]).count();
        }
        let _ = RecordHeaders::new(&[0xff; 64]).count();
    }

    #[test]
    fn reads_are_sized_by_the_announced_frame() {
        assert_eq!(next_read_bytes(&[]), READ_BUFFER_IDLE_BYTES);
        let mut header = 20u32.to_be_bytes().to_vec();
        header.extend_from_slice(&[4, 0, 0, 0, 1]);
        assert_eq!(next_read_bytes(&header), READ_BUFFER_IDLE_BYTES);
        let big = (1u32 << 20).to_be_bytes();
        let mut header = big.to_vec();
        header.extend_from_slice(&[4, 0, 0, 0, 1]);
        assert_eq!(next_read_bytes(&header), READ_CHUNK_BYTES_MAX);
    }
}
