//! Enforcing the node's resource limits (`crate::limits`) on a shard: the
//! error a client gets when one trips, the checks on a published batch, and
//! the read buffer policy that keeps idle connections cheap.

use shards::batch::{BatchHeader, RecordShape, ValidBatch};
use shards::error::DecodeError;

use super::services::ServiceError;
use crate::limits::{LimitCounters, LimitKind, Limits};
use crate::protocol::error_code::ErrorCode;
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
pub fn exceeded(counters: &LimitCounters, kind: LimitKind, detail: &str) -> ServiceError {
    counters.record(kind);
    ServiceError::new(
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

/// A published batch that fit the batch limits: validated and ready for
/// the log's [`append_valid`](shards::log::PartitionLog::append_valid), or
/// the reason it is malformed. The log's error for a malformed batch is
/// given only after the append is admitted (a follower answers `NotLeader`
/// first, as before), so it travels with the batch instead of being sent
/// here.
pub type Admitted = Result<ValidBatch, DecodeError>;

/// Why the walk of a published batch stopped: a limit tripped, or the batch
/// is malformed.
enum Stop {
    Limit(LimitKind, String),
    Invalid(DecodeError),
}

impl From<DecodeError> for Stop {
    fn from(error: DecodeError) -> Self {
        Stop::Invalid(error)
    }
}

/// Checks a published batch against the batch limits before it is
/// appended: bytes, records, headers per record and header bytes per
/// record. The per-record limits are checked in the one validating walk of
/// the batch (`ValidBatch::check_with`), which the log then trusts instead
/// of walking it again. A batch too malformed to walk passes the limits and
/// comes back as `Err` inside the `Ok`, for the log's `InvalidBatch`.
pub fn admit_publish_batch(
    limits: &Limits,
    batch: Vec<u8>,
) -> Result<Admitted, (LimitKind, String)> {
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
    // The record count is in the fixed header: refuse on it before the
    // CRC and the walk, as a batch that is over the limit need not be read.
    if let Ok(header) = BatchHeader::parse(&batch) {
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
    }
    let checked = ValidBatch::check_with(batch, |record| check_record(limits, record));
    match checked {
        Ok(valid) => Ok(Ok(valid)),
        Err(Stop::Limit(kind, detail)) => Err((kind, detail)),
        // More headers than the engine's ceiling stop the walk before the
        // record is visited; the configured limit is at most that ceiling,
        // so this is the same limit the client would hit with fewer.
        Err(Stop::Invalid(DecodeError::TooManyHeaders { index, count, .. }))
            if usize::try_from(count).is_ok_and(|c| c > limits.record_headers_max) =>
        {
            Err(record_headers_exceeded(limits, index, count))
        }
        Err(Stop::Invalid(error)) => Ok(Err(error)),
    }
}

/// [`admit_publish_batch`] on a borrowed batch, keeping only the limit
/// verdict: `Ok` also for a malformed batch (the log refuses that one).
#[cfg(test)]
pub fn check_publish_batch(limits: &Limits, batch: &[u8]) -> Result<(), (LimitKind, String)> {
    admit_publish_batch(limits, batch.to_vec()).map(|_| ())
}

/// The per-record limits, on one record the validating walk has checked.
fn check_record(limits: &Limits, record: RecordShape) -> Result<(), Stop> {
    let RecordShape {
        index,
        headers,
        header_bytes,
    } = record;
    if headers > limits.record_headers_max {
        let (kind, detail) = record_headers_exceeded(limits, index, headers);
        return Err(Stop::Limit(kind, detail));
    }
    if header_bytes > limits.record_header_bytes_max {
        return Err(Stop::Limit(
            LimitKind::RecordHeaderBytes,
            format!(
                "record {index} has {header_bytes} bytes of headers, the limit is {}",
                limits.record_header_bytes_max
            ),
        ));
    }
    Ok(())
}

fn record_headers_exceeded(
    limits: &Limits,
    index: usize,
    count: impl std::fmt::Display,
) -> (LimitKind, String) {
    (
        LimitKind::RecordHeaders,
        format!(
            "record {index} has {count} headers, the limit is {}",
            limits.record_headers_max
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use shards::batch::{encode_batch, Compression, Header, Record};
    use shards::types::{Offset, TimestampMs};

    fn batch(records: usize, headers: usize, header_value: usize) -> Vec<u8> {
        let record = record_with(headers, header_value);
        let mut out = Vec::new();
        encode_batch(Offset(0), &vec![record; records], &mut out);
        out
    }

    fn record_with(headers: usize, header_value: usize) -> Record {
        Record {
            timestamp: TimestampMs(1),
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"value")),
            headers: (0..headers)
                .map(|i| Header {
                    key: Bytes::from(format!("h{i}")),
                    value: Some(Bytes::from(vec![b'x'; header_value])),
                })
                .collect(),
        }
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
    fn the_walk_reports_each_record_and_survives_garbage() {
        let b = batch(3, 2, 7);
        let mut found = Vec::new();
        let header = shards::batch::validate_records_with(&b, |record| {
            found.push(record);
            Ok::<(), DecodeError>(())
        })
        .expect("an encoded batch is valid");
        assert_eq!(header.records_count, 3);
        let expected: Vec<RecordShape> = (0..3)
            .map(|index| RecordShape {
                index,
                headers: 2,
                header_bytes: 2 * (2 + 7),
            })
            .collect();
        assert_eq!(found, expected);
        for cut in 0..b.len() {
            let _ = check_publish_batch(&Limits::default(), &b[..cut]);
            let _ = check_publish_batch(&Limits::default(), &b[cut..]);
        }
        let _ = check_publish_batch(&Limits::default(), &[0xff; 64]);
    }

    #[test]
    fn a_batch_within_the_limits_comes_back_validated() {
        let b = batch(2, 1, 3);
        let admitted = admit_publish_batch(&Limits::default(), b.clone());
        let valid = admitted.expect("within limits").expect("valid");
        assert_eq!(valid.as_bytes(), &b[..]);
        assert_eq!(valid.header().records_count, 2);
        // A malformed batch passes the limits and carries the log's reason.
        let mut corrupt = b;
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let admitted = admit_publish_batch(&Limits::default(), corrupt);
        assert!(matches!(admitted, Ok(Err(DecodeError::CrcMismatch { .. }))));
    }

    #[test]
    fn limits_trip_on_the_first_record_over_them() {
        let limits = Limits {
            record_headers_max: 2,
            ..Limits::default()
        };
        let mut b = Vec::new();
        let records = [
            record_with(1, 1),
            record_with(1, 1),
            record_with(3, 1),
            record_with(4, 1),
        ];
        encode_batch(Offset(0), &records, &mut b);
        assert_eq!(
            check_publish_batch(&limits, &b),
            Err((
                LimitKind::RecordHeaders,
                "record 2 has 3 headers, the limit is 2".to_string()
            ))
        );
    }

    /// `batch(records, headers, header_value)` with its records compressed
    /// by `codec`, as a Kafka producer would send it.
    fn compressed(codec: Compression, records: usize, headers: usize, value: usize) -> Vec<u8> {
        let plain = Bytes::from(batch(records, headers, value));
        let (header, decoded) = shards::batch::decode_batch(&plain).expect("valid");
        let mut out = Vec::new();
        shards::batch::encode_batch_preserving_offsets_compressed(
            header.base_offset,
            header.last_offset_delta,
            &decoded,
            codec,
            &mut out,
        )
        .expect("compress");
        out
    }

    #[test]
    fn compressed_batches_are_held_to_the_same_limits() {
        let limits = Limits {
            batch_records_max: 5,
            record_headers_max: 2,
            record_header_bytes_max: 50,
            ..Limits::default()
        };
        let kind = |b: &[u8]| check_publish_batch(&limits, b).map_err(|(k, _)| k);
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert_eq!(kind(&compressed(codec, 5, 2, 10)), Ok(()), "{codec}");
            assert_eq!(
                kind(&compressed(codec, 6, 0, 0)),
                Err(LimitKind::BatchRecords)
            );
            // The per-record limits are checked on the decompressed records.
            assert_eq!(
                kind(&compressed(codec, 1, 3, 1)),
                Err(LimitKind::RecordHeaders)
            );
            assert_eq!(
                kind(&compressed(codec, 1, 1, 60)),
                Err(LimitKind::RecordHeaderBytes)
            );
            // The batch-size limit is on the bytes as sent (and stored).
            let b = compressed(codec, 4, 2, 10);
            let admitted = admit_publish_batch(&limits, b.clone());
            let valid = admitted.expect("within limits").expect("valid");
            assert_eq!(valid.as_bytes(), &b[..]);
            assert_eq!(valid.header().compression, codec);
        }
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
