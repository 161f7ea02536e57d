//! Error types, one per boundary. Operating errors (bad input, full disk,
//! torn writes) are values; bugs are `debug_assert!`s.

use std::path::PathBuf;

use crate::batch::Compression;
use crate::types::{LeaderEpoch, Offset, Position};

/// Why bytes are not a valid RecordBatch v2. Decoding untrusted bytes
/// returns one of these; it never panics and never allocates past a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the structure being read does.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the structure needs from where it starts.
        needed: usize,
        /// Bytes the input still has from there.
        available: usize,
    },
    /// The batch is not RecordBatch v2.
    #[error("unsupported magic {magic} (only RecordBatch v2, magic 2)")]
    BadMagic {
        /// The magic byte found.
        magic: i8,
    },
    /// The batch length field is below the fixed header or above the limit.
    #[error("batch length {length} outside [{min}, {max}]")]
    BadBatchLength {
        /// The length the batch declares.
        length: i64,
        /// Smallest valid length (the fixed header).
        min: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// The CRC-32C over `attributes..end` does not match the stored one.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC written in the batch header.
        stored: u32,
        /// The CRC of the bytes as read.
        computed: u32,
    },
    /// LogAppendTime, transactional, control or unknown attribute bits:
    /// not stored by Sluice (compression bits are accepted).
    #[error(
        "unsupported attributes {attributes:#06x} (LogAppendTime, transactions and control batches are not supported)"
    )]
    UnsupportedAttributes {
        /// The batch's attribute bits.
        attributes: i16,
    },
    /// Attribute bits 0-2 name no codec Kafka defines (5, 6 or 7).
    #[error("unknown compression codec {codec} (known: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)")]
    UnknownCompression {
        /// The value of bits 0-2.
        codec: u8,
    },
    /// The records of a compressed batch do not decompress: a corrupt or
    /// truncated stream, as the codec's decoder reports it.
    #[error("{codec} records do not decompress: {reason}")]
    BadCompressedRecords {
        /// The batch's codec.
        codec: Compression,
        /// The decoder's message.
        reason: String,
    },
    /// The records of a compressed batch decompress to more than
    /// `DECOMPRESSED_BATCH_BYTES_MAX` bytes (a decompression bomb, or a
    /// batch too large to read): decoding stopped at the limit.
    #[error("{codec} records decompress to more than {max} bytes")]
    DecompressedTooLarge {
        /// The batch's codec.
        codec: Compression,
        /// The limit.
        max: usize,
    },
    /// The batch declares more records than the limit allows.
    #[error("record count {count} exceeds limit {max}")]
    TooManyRecords {
        /// The declared record count.
        count: i64,
        /// The limit.
        max: usize,
    },
    /// A record inside the batch does not parse.
    #[error("record {index}: {reason}")]
    BadRecord {
        /// The record's position in the batch, from 0.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A record declares more headers than the limit allows.
    #[error("record {index}: header count {count} exceeds limit {max}")]
    TooManyHeaders {
        /// The record's position in the batch, from 0.
        index: usize,
        /// The declared header count.
        count: i64,
        /// The limit.
        max: usize,
    },
    /// The records in the batch's bytes are fewer than its header says.
    #[error("batch declares {declared} records but {found} were decoded")]
    RecordCountMismatch {
        /// The count in the batch header.
        declared: usize,
        /// Records actually decoded.
        found: usize,
    },
    /// Bytes are left inside the batch after its last declared record.
    #[error("{trailing} trailing bytes after the last record")]
    TrailingBytes {
        /// How many.
        trailing: usize,
    },
    /// A varint runs past ten bytes or past the input.
    #[error("invalid varint")]
    BadVarint,
}

/// Why [`encode_batch_preserving_offsets_compressed`](crate::batch::encode_batch_preserving_offsets_compressed)
/// wrote no batch.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The records (before compression) or the batch (after) exceed a limit.
    #[error("{bytes} bytes exceed the limit of {max}")]
    TooLarge {
        /// The size found.
        bytes: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// The compressor failed.
    #[error("{compression} compression failed: {source}")]
    Compress {
        /// The codec.
        compression: Compression,
        /// What it reported.
        #[source]
        source: std::io::Error,
    },
}

/// Errors of the partition log and the files under it.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A system call on a file of the log failed (not for lack of space).
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. `"pwrite"`.
        op: &'static str,
        /// The file it was applied to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes that do not decode.
    #[error("corrupt data in {path} at position {position}: {source}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where in the file the bad batch starts.
        position: Position,
        /// What is wrong with it.
        #[source]
        source: DecodeError,
    },
    /// A batch offered for append does not validate; nothing was written.
    #[error("rejected batch: {0}")]
    InvalidBatch(#[source] DecodeError),
    /// A batch larger than a whole segment cannot be stored.
    #[error("batch of {bytes} bytes exceeds the segment size {segment_bytes}")]
    BatchTooLarge {
        /// The batch's size.
        bytes: usize,
        /// The log's configured segment size.
        segment_bytes: u64,
    },
    /// A read or truncation asked for an offset the log does not hold.
    #[error("offset {requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The first offset the log holds.
        log_start: Offset,
        /// The offset the next append gets.
        log_end: Offset,
    },
    /// A replicated batch that would leave a gap or overlap in the log.
    #[error("replicated batch at offset {got} does not follow the log end {expected}")]
    NonContiguous {
        /// The log end the batch had to start at.
        expected: Offset,
        /// The batch's base offset.
        got: Offset,
    },
    /// A batch stamped with a leader epoch below one the log already holds:
    /// a stale leader writing (or a leader sending batches out of order).
    #[error("batch of leader epoch {epoch} after data of epoch {latest}: the writer is stale")]
    EpochRegression {
        /// The batch's leader epoch.
        epoch: LeaderEpoch,
        /// The latest epoch already in the log.
        latest: LeaderEpoch,
    },
    /// An `fdatasync` failed earlier: the partition refuses everything until
    /// it is reopened (docs/design.md §7 says why a sync is never retried).
    #[error(
        "partition {path} stopped after a failed fdatasync; it must be recovered by reopening"
    )]
    FailStopped {
        /// The partition directory.
        path: PathBuf,
    },
    /// `ENOSPC` or `EDQUOT`: the operation stored nothing; retry once space
    /// is freed.
    #[error("no space left on device: {op} {path}")]
    NoSpace {
        /// The operation, e.g. `"pwrite"`.
        op: &'static str,
        /// The file it was applied to.
        path: PathBuf,
    },
    /// The log was closed (shutdown or partition deleted).
    #[error("the log is closed")]
    Closed,
    /// A [`crate::log::LogConfig`] value outside what the engine supports.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl LogError {
    /// An I/O error of `op` on `path`; `ENOSPC`/`EDQUOT` become [`LogError::NoSpace`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            return LogError::NoSpace {
                op,
                path: path.into(),
            };
        }
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn glommio(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: glommio::GlommioError<()>,
    ) -> Self {
        // glommio's own conversion of an "enhanced" I/O error keeps only the
        // error kind; keep the errno, which tells a full disk from a dead one.
        let source = match source {
            glommio::GlommioError::EnhancedIoError { source, .. } => source,
            other => std::io::Error::from(other),
        };
        LogError::io(op, path, source)
    }
}

/// The result of a partition-log operation.
pub type LogResult<T> = Result<T, LogError>;
