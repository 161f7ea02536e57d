//! Offset lookups: the log start, the high watermark, the first record at
//! or after a timestamp, and where a leader epoch ended (KIP-101).

use shards::log::PartitionLog;
use shards::types::{LeaderEpoch, Offset, TimestampMs};

use super::partition::{check_leader_epoch, log_error};
use super::ServiceError;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::list_offsets::OffsetQuery;
use crate::shard_server::{LocalPartition, Shard};

/// The offset `query` names in `log`, and for a timestamp query the
/// timestamp of the record found there (`None` when no record is that
/// recent: then the offset is the high watermark).
pub async fn list_offset(
    log: &PartitionLog,
    query: OffsetQuery,
) -> Result<(Offset, Option<TimestampMs>), ServiceError> {
    match query {
        OffsetQuery::Earliest => Ok((log.log_start_offset(), None)),
        OffsetQuery::Latest => Ok((log.high_watermark(), None)),
        OffsetQuery::Timestamp(target) => {
            let found = log
                .record_at_or_after(target)
                .await
                .map_err(|e| log_error(&e))?;
            Ok(match found {
                Some((offset, timestamp)) => (offset, Some(timestamp)),
                None => (log.high_watermark(), None),
            })
        }
    }
}

/// Where `epoch` ended in this leader's log: the largest epoch ≤ it that
/// the log knows and that epoch's end offset (`None`: undefined). Only the
/// partition leader answers, and only a sender that knows the current
/// epoch (`current`; `None` = unchecked): an older one is fenced, a newer
/// one is told this node's metadata lags.
pub fn end_offset_for_epoch(
    shard: &Shard,
    local: &LocalPartition,
    epoch: LeaderEpoch,
    current: Option<LeaderEpoch>,
) -> Result<Option<(LeaderEpoch, Offset)>, ErrorCode> {
    let entry = shard
        .entry(&local.stream, local.partition)
        .ok_or(ErrorCode::PartitionNotFound)?;
    check_leader_epoch(
        entry.leader == shard.local_node(),
        entry.leader_epoch,
        current,
    )?;
    Ok(local.log.end_offset_for_epoch(epoch))
}
