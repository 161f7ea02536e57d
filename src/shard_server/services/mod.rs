//! What a shard does for a client request, whatever wire protocol carried
//! it: find the partition and check this node may answer for it, read a
//! slice of its log (with the long poll), append a validated batch, look up
//! offsets, describe the metadata. The native protocol's handlers
//! (`super::native`) call these; a second wire protocol (Kafka: its own
//! listener per shard, session loop and codec in a module tree beside
//! `native/`) calls the same functions and maps [`ServiceError`]'s codes to
//! its own.
//!
//! Nothing here knows frames or flatbuffers. Values crossing this boundary
//! are engine types (`Offset`, `LeaderEpoch`, `ReadSlice`, `ValidBatch`)
//! and the plain start/query enums of the protocol module, which carry no
//! wire encoding.
//!
//! - [`partition`]: the partition a request names, served here or not
//!   (`WrongShard` with the right port, `NotLeader` with a hint, ...);
//!   leader and epoch checks; engine errors → error codes.
//! - [`read`]: resolving a start position and reading committed batches,
//!   or up to the log end for a follower, with the long poll.
//! - [`append`]: a published batch through the limits, the append and its
//!   commit wait.
//! - [`offsets`]: log start, high watermark, timestamp lookups, and the
//!   end offset of a leader epoch (KIP-101).
//! - [`metadata`]: the control core's metadata view and the ports
//!   clients reach partition leaders at.
//!
//! Cursors (`super::cursors`) and stream/ACL administration
//! (`Shard::admin`) are services too; they live where their state does.

pub mod append;
pub mod metadata;
pub mod offsets;
pub mod partition;
pub mod read;

use crate::cores::AppendFailure;
use crate::protocol::error_code::ErrorCode;

/// Why a service refused or failed a request: a stable error code (the
/// native protocol's table, `docs/protocol.md`; another protocol maps it)
/// and a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    /// For [`ErrorCode::WrongShard`]: the port of the shard that owns the
    /// partition.
    pub right_port: Option<u16>,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ServiceError {
        ServiceError {
            code,
            message: message.into(),
            right_port: None,
        }
    }
}

impl From<AppendFailure> for ServiceError {
    fn from(failure: AppendFailure) -> ServiceError {
        ServiceError::new(failure.code, failure.message)
    }
}
