//! Error types, one per boundary. Operating errors (bad input, full disk,
//! torn writes) are values; bugs are `debug_assert!`s.

use std::path::PathBuf;

use crate::types::{LeaderEpoch, Offset, Position};

/// Why bytes are not a valid RecordBatch v2. Decoding untrusted bytes
/// returns one of these; it never panics and never allocates past a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported magic {magic} (only RecordBatch v2, magic 2)")]
    BadMagic { magic: i8 },
    #[error("batch length {length} outside [{min}, {max}]")]
    BadBatchLength { length: i64, min: usize, max: usize },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error(
        "unsupported attributes {attributes:#06x} (compression and transactions are not supported)"
    )]
    UnsupportedAttributes { attributes: i16 },
    #[error("record count {count} exceeds limit {max}")]
    TooManyRecords { count: i64, max: usize },
    #[error("record {index}: {reason}")]
    BadRecord { index: usize, reason: &'static str },
    #[error("record {index}: header count {count} exceeds limit {max}")]
    TooManyHeaders {
        index: usize,
        count: i64,
        max: usize,
    },
    #[error("batch declares {declared} records but {found} were decoded")]
    RecordCountMismatch { declared: usize, found: usize },
    #[error("{trailing} trailing bytes after the last record")]
    TrailingBytes { trailing: usize },
    #[error("invalid varint")]
    BadVarint,
}

/// Errors of the partition log and the files under it.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt data in {path} at position {position}: {source}")]
    Corrupt {
        path: PathBuf,
        position: Position,
        #[source]
        source: DecodeError,
    },
    #[error("rejected batch: {0}")]
    InvalidBatch(#[source] DecodeError),
    #[error("batch of {bytes} bytes exceeds the segment size {segment_bytes}")]
    BatchTooLarge { bytes: usize, segment_bytes: u64 },
    #[error("offset {requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("replicated batch at offset {got} does not follow the log end {expected}")]
    NonContiguous { expected: Offset, got: Offset },
    /// A batch stamped with a leader epoch below one the log already holds:
    /// a stale leader writing (or a leader sending batches out of order).
    #[error("batch of leader epoch {epoch} after data of epoch {latest}: the writer is stale")]
    EpochRegression {
        epoch: LeaderEpoch,
        latest: LeaderEpoch,
    },
    #[error(
        "partition {path} stopped after a failed fdatasync; it must be recovered by reopening"
    )]
    FailStopped { path: PathBuf },
    /// `ENOSPC` or `EDQUOT`: the operation stored nothing; retry once space
    /// is freed.
    #[error("no space left on device: {op} {path}")]
    NoSpace { op: &'static str, path: PathBuf },
    #[error("the log is closed")]
    Closed,
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

pub type LogResult<T> = Result<T, LogError>;
