//! The partition a request names: is it served by this shard, may this
//! node answer for it, and what an engine error means to a client.

use std::rc::Rc;

use shards::error::LogError;
use shards::types::LeaderEpoch;

use super::ServiceError;
use crate::protocol::error_code::ErrorCode;
use crate::shard_server::{LocalPartition, Lookup, Shard};

/// The partition `stream`/`partition` when this shard serves it; otherwise
/// where to go (`WrongShard` + port, `NotLeader` + the leader as far as
/// known) or why not (`StreamNotFound`, `PartitionNotFound`, an open
/// failure).
pub fn local(
    shard: &Shard,
    stream: &str,
    partition: u32,
) -> Result<Rc<LocalPartition>, ServiceError> {
    match shard.lookup(stream, partition) {
        Lookup::Local(local) => Ok(local),
        Lookup::Unavailable(failure) => Err(ServiceError::new(failure.code, failure.message)),
        Lookup::OtherShard { port } => Err(ServiceError {
            code: ErrorCode::WrongShard,
            message: format!("partition {partition} of {stream} is served on port {port}"),
            right_port: Some(port),
        }),
        Lookup::OtherNode => Err(ServiceError::new(
            ErrorCode::NotLeader,
            format!(
                "this node holds no replica of partition {partition} of {stream}: {}",
                shard.leader_hint(stream, partition)
            ),
        )),
        Lookup::PartitionNotFound => Err(ServiceError::new(
            ErrorCode::PartitionNotFound,
            format!("stream {stream} has no partition {partition}"),
        )),
        Lookup::StreamNotFound => Err(ServiceError::new(
            ErrorCode::StreamNotFound,
            format!("no stream named {stream:?}"),
        )),
    }
}

/// Whether this node may answer for the partition's current epoch: it must
/// lead it, and a sender that names an epoch (`current`; `None` =
/// unchecked) must name the current one.
pub fn check_leader_epoch(
    is_leader: bool,
    epoch: u32,
    current: Option<LeaderEpoch>,
) -> Result<(), ErrorCode> {
    if !is_leader {
        return Err(ErrorCode::NotLeader);
    }
    let Some(current) = current else {
        return Ok(());
    };
    match current.cmp(&LeaderEpoch::from_metadata(epoch)) {
        std::cmp::Ordering::Less => Err(ErrorCode::FencedLeaderEpoch),
        std::cmp::Ordering::Greater => Err(ErrorCode::UnknownLeaderEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Maps an engine error to the code a client can act on.
pub fn log_error_code(err: &LogError) -> ErrorCode {
    match err {
        LogError::InvalidBatch(_)
        | LogError::BatchTooLarge { .. }
        | LogError::NonContiguous { .. } => ErrorCode::InvalidBatch,
        // This node's log already holds a newer epoch than the writer's.
        LogError::EpochRegression { .. } => ErrorCode::FencedLeaderEpoch,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::NoSpace { .. } => ErrorCode::DiskFull,
        LogError::FailStopped { .. } => ErrorCode::PartitionFailed,
        LogError::Closed => ErrorCode::ShuttingDown,
        _ => ErrorCode::Unknown,
    }
}

/// An engine error as a service error.
pub fn log_error(err: &LogError) -> ServiceError {
    ServiceError::new(log_error_code(err), err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_leader_at_the_current_epoch_answers() {
        let epoch = |e| Some(LeaderEpoch(e));
        assert_eq!(
            check_leader_epoch(false, 3, epoch(3)),
            Err(ErrorCode::NotLeader)
        );
        assert_eq!(
            check_leader_epoch(false, 3, None),
            Err(ErrorCode::NotLeader)
        );
        assert_eq!(check_leader_epoch(true, 3, epoch(3)), Ok(()));
        assert_eq!(check_leader_epoch(true, 3, None), Ok(()));
        assert_eq!(
            check_leader_epoch(true, 3, epoch(2)),
            Err(ErrorCode::FencedLeaderEpoch)
        );
        assert_eq!(
            check_leader_epoch(true, 3, epoch(4)),
            Err(ErrorCode::UnknownLeaderEpoch)
        );
    }
}
