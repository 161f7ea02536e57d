//! Reading a slice of a partition: the start position, then whole
//! committed batches (a consumer) or batches up to the log end (a
//! follower), long-polling at the head of the log. The slice is handed
//! back as a file range for the caller to `sendfile`.

use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use shards::error::LogError;
use shards::log::{PartitionLog, ReadSlice};
use shards::types::{LeaderEpoch, Offset};

use super::partition::log_error;
use super::ServiceError;
use crate::limits::LimitKind;
use crate::model::NodeId;
use crate::protocol::fetch::FetchStart;
use crate::shard_server::limits::exceeded;
use crate::shard_server::{replication, LocalPartition, Shard};

/// A follower reading as a replica: its node id and the leader epoch it
/// believes current (`None`: it named none, which the leader fences).
#[derive(Clone, Copy, Debug)]
pub struct ReplicaClaim {
    pub node: NodeId,
    pub epoch: Option<LeaderEpoch>,
}

/// One read of a partition.
#[derive(Clone, Copy, Debug)]
pub struct ReadRequest {
    pub start: FetchStart,
    /// Soft cap on the bytes returned (at least one whole batch when one is
    /// there); further capped by the connection's in-flight limit.
    pub max_bytes: u32,
    /// Long poll at the head of the log.
    pub max_wait: Duration,
    /// Set for a follower's fetch (reads past the high watermark, moves
    /// the ISR and the high watermark).
    pub replica: Option<ReplicaClaim>,
}

/// What a read found.
pub enum ReadOutcome {
    /// Whole batches from the start position, `None` when nothing came
    /// within the wait.
    Batches(Option<ReadSlice>),
    /// The start position is outside the log: the answer carries the
    /// watermarks so the reader can pick a new one.
    OutOfRange,
}

/// Reads `request` from `local`'s log. A follower's fetch is admitted first
/// (`replication::admit_replica_fetch`: leader, epoch, replica); a slice
/// whose first batch alone exceeds `limits.fetch_inflight_bytes_max` is
/// refused (`LimitExceeded`): sending it would break the limit, skipping
/// it would stall the reader.
pub async fn read(
    shard: &Rc<Shard>,
    local: &Rc<LocalPartition>,
    request: ReadRequest,
) -> Result<ReadOutcome, ServiceError> {
    let inflight_max = shard.settings.limits.fetch_inflight_bytes_max;
    let max_bytes = u64::from(request.max_bytes.min(inflight_max));
    let log = &local.log;
    let start = resolve_start(log, request.start).await?;
    if let Some(claim) = request.replica {
        replication::admit_replica_fetch(
            shard,
            local,
            claim.node,
            claim.epoch.unwrap_or(LeaderEpoch::NONE).0,
            start,
        )?;
    }
    let read = match request.replica {
        Some(_) => replication::read_for_replica(log, start, max_bytes, request.max_wait).await,
        None => read_with_wait(log, start, max_bytes, request.max_wait).await,
    };
    let slice = match read {
        Ok(slice) => slice,
        Err(LogError::OffsetOutOfRange { .. }) => return Ok(ReadOutcome::OutOfRange),
        Err(err) => return Err(log_error(&err)),
    };
    let byte_count = slice.as_ref().map_or(0, |s| s.len);
    if byte_count > u64::from(inflight_max) {
        return Err(exceeded(
            &shard.settings.gate.counters,
            LimitKind::FetchInflightBytes,
            &format!(
                "the batch at offset {} is {byte_count} bytes, above this server's {inflight_max}-byte fetch limit",
                start.0
            ),
        ));
    }
    Ok(ReadOutcome::Batches(slice))
}

/// The offset a read starts at.
pub async fn resolve_start(log: &PartitionLog, start: FetchStart) -> Result<Offset, ServiceError> {
    match start {
        FetchStart::Earliest => Ok(log.log_start_offset()),
        FetchStart::Latest => Ok(log.high_watermark()),
        FetchStart::Timestamp(at) => {
            let found = log
                .offset_for_timestamp(at)
                .await
                .map_err(|e| log_error(&e))?;
            Ok(found.unwrap_or_else(|| log.high_watermark()))
        }
        FetchStart::Offset(offset) => Ok(offset),
    }
}

/// Reads committed batches at `start`; at the head of the log, waits up to
/// `max_wait` for the high watermark to move (long poll).
pub async fn read_with_wait(
    log: &PartitionLog,
    start: Offset,
    max_bytes: u64,
    max_wait: Duration,
) -> Result<Option<ReadSlice>, LogError> {
    if let Some(slice) = log.read(start, max_bytes)? {
        return Ok(Some(slice));
    }
    if max_wait.is_zero() {
        return Ok(None);
    }
    let timer = glommio::timer::sleep(max_wait).fuse();
    let woken = log.wait_for_data(start).fuse();
    futures::pin_mut!(timer, woken);
    futures::select! {
        _ = woken => {},
        _ = timer => {},
    }
    log.read(start, max_bytes)
}
