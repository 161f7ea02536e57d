//! Wire error codes: a stable numbered table.
//!
//! The numbers travel in `ErrorResponse.code`, `FetchResponse.error_code`,
//! `StreamMetadata.error_code` and `Ack.error_code`. Code 0 ([`NO_ERROR`]) means
//! success and is not an [`ErrorCode`].
//!
//! Rules: a number, once published, keeps its meaning forever. A code that is
//! retired stays in this file as a comment and its number is never reused; new
//! codes take the next free number. `docs/protocol.md` carries the same table.

use std::fmt;

/// The wire value that means "no error".
pub const NO_ERROR: u16 = 0;

/// Why a request (or a NATS publish) failed.
///
/// "Client action" in each doc says what a well-behaved client does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// An error the server did not classify (a bug, or a code newer than this
    /// client). Client action: report it; retrying may or may not help.
    Unknown = 1,
    /// The frame could not be parsed (length field below the header size).
    /// The server closes the connection after answering.
    BadFrame = 2,
    /// The frame's length field exceeds the receiver's frame limit. The server
    /// closes the connection after answering.
    FrameTooLarge = 3,
    /// The frame kind is not one the receiver knows (or is a response kind
    /// sent to the server). The connection stays usable.
    UnknownKind = 4,
    /// The client's protocol version (in `AuthenticateRequest`) is not one the
    /// server speaks.
    UnsupportedVersion = 5,
    /// The server requires `Authenticate` before this request.
    AuthRequired = 6,
    /// The credentials were rejected. The server closes the connection.
    AuthFailed = 7,
    /// The authenticated principal lacks the ACL for this stream and operation.
    NotAuthorized = 8,
    /// No stream has this name.
    StreamNotFound = 9,
    /// A stream with this name exists with different settings (creating it
    /// again with the same settings succeeds with `created = false`).
    StreamExists = 10,
    /// The stream has no partition with this id.
    PartitionNotFound = 11,
    /// The partition is owned by another shard of this node;
    /// `ErrorResponse.right_port` names that shard's port. Client action:
    /// reconnect there and resend.
    WrongShard = 12,
    /// The fetch offset is below the log start offset or above the high
    /// watermark. `FetchResponse` carries both watermarks. Client action:
    /// restart from one of them.
    OffsetOutOfRange = 13,
    /// This node does not lead the partition (leadership moved). Client
    /// action: refresh Metadata and retry on the new leader.
    NotLeader = 14,
    /// Ack policy `All` cannot be met: fewer in-sync replicas than
    /// `min_insync_replicas`. The data was not committed. Retriable.
    NotEnoughReplicas = 15,
    /// The request body does not verify as its kind's table, or a field is
    /// missing or out of range. `message` says which.
    InvalidRequest = 16,
    /// A published RecordBatch failed validation (CRC, layout, magic,
    /// attributes, records that do not decompress or decompress past the
    /// limit, counts).
    InvalidBatch = 17,
    /// The partition's disk is full; the data was not stored. Retriable later.
    DiskFull = 18,
    /// The partition stopped after an I/O error (e.g. a failed fsync, which is
    /// fail-stop) and is recovering. Client action: refresh Metadata, retry.
    PartitionFailed = 19,
    /// A named limit was exceeded (connections, in-flight fetch bytes,
    /// streams, partitions, batch size). `message` names the limit.
    LimitExceeded = 20,
    /// The operation did not finish in time. For a publish this means the
    /// outcome is unknown: the data may or may not be committed.
    Timeout = 21,
    /// The server is shutting down. Client action: reconnect elsewhere or later.
    ShuttingDown = 22,
    /// A replica fetch (or epoch query) names a leader epoch older than the
    /// partition's current one: the sender is a stale replica. Client
    /// action: refresh Metadata; a replica re-truncates by epoch.
    FencedLeaderEpoch = 23,
    /// A replica fetch names a leader epoch newer than this node knows: its
    /// metadata has not caught up yet. Retriable shortly.
    UnknownLeaderEpoch = 24,
    /// A replica fetch comes from a node that is not a replica of the
    /// partition in the current assignment.
    NotReplica = 25,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 25] = [
        ErrorCode::Unknown,
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownKind,
        ErrorCode::UnsupportedVersion,
        ErrorCode::AuthRequired,
        ErrorCode::AuthFailed,
        ErrorCode::NotAuthorized,
        ErrorCode::StreamNotFound,
        ErrorCode::StreamExists,
        ErrorCode::PartitionNotFound,
        ErrorCode::WrongShard,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::NotLeader,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidBatch,
        ErrorCode::DiskFull,
        ErrorCode::PartitionFailed,
        ErrorCode::LimitExceeded,
        ErrorCode::Timeout,
        ErrorCode::ShuttingDown,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::NotReplica,
    ];

    /// The number on the wire.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// Reads a wire value leniently: `None` for [`NO_ERROR`], the code when
    /// known, and [`ErrorCode::Unknown`] for a number this build does not know
    /// (a newer peer). Use [`ErrorCode::try_from`] to keep the number.
    pub fn from_wire(code: u16) -> Option<ErrorCode> {
        if code == NO_ERROR {
            return None;
        }
        Some(ErrorCode::try_from(code).unwrap_or(ErrorCode::Unknown))
    }

    /// The stable name, as written in `docs/protocol.md`.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Unknown => "Unknown",
            ErrorCode::BadFrame => "BadFrame",
            ErrorCode::FrameTooLarge => "FrameTooLarge",
            ErrorCode::UnknownKind => "UnknownKind",
            ErrorCode::UnsupportedVersion => "UnsupportedVersion",
            ErrorCode::AuthRequired => "AuthRequired",
            ErrorCode::AuthFailed => "AuthFailed",
            ErrorCode::NotAuthorized => "NotAuthorized",
            ErrorCode::StreamNotFound => "StreamNotFound",
            ErrorCode::StreamExists => "StreamExists",
            ErrorCode::PartitionNotFound => "PartitionNotFound",
            ErrorCode::WrongShard => "WrongShard",
            ErrorCode::OffsetOutOfRange => "OffsetOutOfRange",
            ErrorCode::NotLeader => "NotLeader",
            ErrorCode::NotEnoughReplicas => "NotEnoughReplicas",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::InvalidBatch => "InvalidBatch",
            ErrorCode::DiskFull => "DiskFull",
            ErrorCode::PartitionFailed => "PartitionFailed",
            ErrorCode::LimitExceeded => "LimitExceeded",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::ShuttingDown => "ShuttingDown",
            ErrorCode::FencedLeaderEpoch => "FencedLeaderEpoch",
            ErrorCode::UnknownLeaderEpoch => "UnknownLeaderEpoch",
            ErrorCode::NotReplica => "NotReplica",
        }
    }

    /// Whether the same request may succeed if retried (possibly after a
    /// Metadata refresh or a reconnect to `right_port`). A retried publish
    /// may be stored twice (acks are at-least-once).
    pub const fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::WrongShard
                | ErrorCode::NotLeader
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::DiskFull
                | ErrorCode::PartitionFailed
                | ErrorCode::LimitExceeded
                | ErrorCode::Timeout
                | ErrorCode::ShuttingDown
                | ErrorCode::UnknownLeaderEpoch
        )
    }
}

/// A wire value that is not a known [`ErrorCode`] (0 included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown wire error code {code}")]
pub struct UnknownErrorCode {
    pub code: u16,
}

impl TryFrom<u16> for ErrorCode {
    type Error = UnknownErrorCode;

    fn try_from(code: u16) -> Result<Self, Self::Error> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|known| known.code() == code)
            .ok_or(UnknownErrorCode { code })
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.code()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_dense_ordered_and_round_trips() {
        for (index, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(usize::from(code.code()), index + 1, "{code}");
            assert_eq!(ErrorCode::try_from(code.code()), Ok(*code));
            assert_eq!(ErrorCode::from_wire(code.code()), Some(*code));
        }
    }

    /// Pins the published numbers: changing one breaks every deployed client.
    #[test]
    fn numbers_are_stable() {
        assert_eq!(ErrorCode::Unknown.code(), 1);
        assert_eq!(ErrorCode::WrongShard.code(), 12);
        assert_eq!(ErrorCode::OffsetOutOfRange.code(), 13);
        assert_eq!(ErrorCode::NotEnoughReplicas.code(), 15);
        assert_eq!(ErrorCode::DiskFull.code(), 18);
        assert_eq!(ErrorCode::ShuttingDown.code(), 22);
        assert_eq!(ErrorCode::FencedLeaderEpoch.code(), 23);
        assert_eq!(ErrorCode::NotReplica.code(), 25);
    }

    #[test]
    fn zero_is_success_and_unknown_numbers_are_kept_or_mapped() {
        assert_eq!(ErrorCode::from_wire(NO_ERROR), None);
        assert_eq!(
            ErrorCode::try_from(0),
            Err(UnknownErrorCode { code: NO_ERROR })
        );
        assert_eq!(
            ErrorCode::try_from(999),
            Err(UnknownErrorCode { code: 999 })
        );
        assert_eq!(ErrorCode::from_wire(999), Some(ErrorCode::Unknown));
    }
}
