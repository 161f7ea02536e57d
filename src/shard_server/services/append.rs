//! Appending a batch a client published: the batch limits and the record
//! walk that validates it, then the leader append and its commit wait.

use shards::types::Offset;

use super::ServiceError;
use crate::cores::CommitLevel;
use crate::shard_server::limits::{admit_publish_batch, exceeded};
use crate::shard_server::{append_committed, LocalPartition, Shard};

/// Where a published batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
}

/// Checks `batch` against the batch limits in the one walk that validates
/// it, appends it as the partition leader and waits until it is committed
/// at `level`. A limit trips `LimitExceeded` before anything is appended; a
/// malformed batch is refused (`InvalidBatch`) only once the append is
/// admitted, so a follower answers `NotLeader` first. Counts the append in
/// the shard's stats.
pub async fn append_batch(
    shard: &Shard,
    local: &LocalPartition,
    batch: Vec<u8>,
    level: CommitLevel,
) -> Result<Appended, ServiceError> {
    let batch = admit_publish_batch(&shard.settings.limits, batch)
        .map_err(|(kind, detail)| exceeded(&shard.settings.gate.counters, kind, &detail))?;
    let bytes = batch.as_ref().map_or(0, |b| b.as_bytes().len()) as u64;
    let appended = match append_committed(shard, local, batch, level).await {
        Ok(appended) => appended,
        Err(failure) => {
            shard.stats.borrow_mut().append_errors += 1;
            return Err(failure.into());
        }
    };
    let mut stats = shard.stats.borrow_mut();
    stats.appends += 1;
    stats.append_records += appended.last_offset.0 - appended.base_offset.0 + 1;
    stats.append_bytes += bytes;
    Ok(Appended {
        base_offset: appended.base_offset,
        last_offset: appended.last_offset,
    })
}
